"""Strategies: how much of the source is reused and what is frozen. ``scratch`` is just another strategy.

A strategy stores its hyper-parameters in ``__init__`` and does its work in ``prepare(model, reuse, lr)``, which
freezes what it keeps fixed and returns the optimiser's parameter groups; ``on_epoch_start`` is its per-epoch hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from transferlab.registry import Registry

if TYPE_CHECKING:  # no torch import here: the CLI checks strategy names before any slow import
    from torch import nn

    from transferlab.model import TransferModel

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


class Strategy:
    name: ClassVar[str]
    pretrained: ClassVar[bool] = True  # start from the source's weights (False: the no-transfer baseline)
    augment: ClassVar[bool] = True  # light augmentation of training images
    frozen_prefix: ClassVar[bool] = False  # the reused blocks are fixed, so their outputs can be cached

    def prepare(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        raise NotImplementedError

    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        """Per-epoch hook for strategies that schedule (for example gradual unfreezing)."""

    def params(self) -> dict[str, Any]:
        return dict(vars(self))


def _trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


@STRATEGIES.register("scratch")
class Scratch(Strategy):
    """The same architecture with random weights, all trained: the no-transfer baseline."""

    name = "scratch"
    pretrained = False

    def prepare(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        model.freeze(0)
        return [{"params": _trainable([model]), "lr": lr}]


@STRATEGIES.register("frozen")
class Frozen(Strategy):
    """Feature extraction: the first ``reuse`` blocks are fixed; the rest and the head are trained."""

    name = "frozen"
    augment = False
    frozen_prefix = True

    def prepare(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        model.freeze(reuse)
        return [{"params": _trainable([model]), "lr": lr}]


@STRATEGIES.register("finetune")
class Finetune(Strategy):
    """Everything trains; the reused blocks at the head's learning rate times ``backbone_lr_mult``.

    With ``freeze_bn`` (the default) the reused blocks' BatchNorm layers keep the source's running statistics
    (inference mode) while their weights train, as the Keras fine-tuning guide recommends: in train mode a few
    small batches of target data would replace statistics learned on the source, and the slow running averages
    would then disagree with what the head was trained on.
    """

    name = "finetune"

    def __init__(self, backbone_lr_mult: float = 0.1, freeze_bn: bool = True) -> None:
        self.backbone_lr_mult = backbone_lr_mult
        self.freeze_bn = freeze_bn

    def prepare(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        model.freeze(0, bn=reuse if self.freeze_bn else 0)
        blocks = list(model.blocks)
        return [
            {"params": _trainable(blocks[:reuse]), "lr": lr * self.backbone_lr_mult},
            {"params": _trainable([*blocks[reuse:], model.pool, model.head]), "lr": lr},
        ]


def make_strategy(name: str, **params: Any) -> Strategy:
    """Instantiate a registered strategy, passing only the parameters its ``__init__`` accepts."""
    import inspect

    cls = STRATEGIES.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in params.items() if k in accepted})
