"""Strategies: how much of the source is reused, what trains, at which rate, and how that changes over epochs.

A strategy is a Lightning callback in the shape of ``BaseFinetuning`` (Lightning's own fine-tuning callbacks):
``__init__`` stores its hyper-parameters, :meth:`Strategy.attach` freezes what it keeps fixed and returns the
optimiser's parameter groups, and ``finetune_function`` is its per-epoch schedule. Its state, including any
parameter groups a schedule added, is saved in the checkpoint, so a schedule survives ``--resume`` and DDP.
Unlike ``BaseFinetuning.freeze``, frozen blocks keep BatchNorm in eval mode (see :class:`TransferModel`).
``scratch`` is just another strategy: the baseline runs through the same code as every transfer arm.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from transferlab.config import STRATEGY_NAMES
from transferlab.registry import Registry
from transferlab.transfer.model import TransferModel

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


class Strategy(BaseFinetuning):
    name: ClassVar[str]
    pretrained: ClassVar[bool] = True  # start from the source's weights (False: the no-transfer baseline)
    augment: ClassVar[bool] = True  # light augmentation of training images
    frozen_prefix: ClassVar[bool] = False  # the reused blocks never train, so their outputs can be cached

    def attach(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        """Freeze what this strategy keeps fixed in ``model`` (whose first ``reuse`` blocks come from the source)
        and return the optimiser's parameter groups with their learning rates (``lr``: the head's)."""
        self.model_, self.reuse_, self.lr_ = model, reuse, lr
        self.freeze_model(model, reuse)
        return [g for g in self.param_groups(model, reuse, lr) if g["params"]]

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        raise NotImplementedError

    def param_groups(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        return [{"params": trainable([model]), "lr": lr}]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """Done by :meth:`attach`, before the frozen prefix's features are extracted."""

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """The per-epoch schedule (none by default), called at the start of every epoch. It must set the state
        that ``epoch`` calls for, not only change it when ``epoch`` is reached: after ``--resume`` the optimiser's
        parameter groups come back from the checkpoint, but what is frozen is set again here. Add parameters to
        the optimiser with :meth:`train_also` (it skips those the optimiser already has)."""

    @staticmethod
    def train_also(pl_module: L.LightningModule, modules: list[nn.Module], optimizer: Optimizer, lr: float) -> None:
        """Add the parameters of ``modules`` that the optimiser does not have yet as a group starting at ``lr`` and
        decaying with the learning-rate schedule from now on (the scheduler's base rates gain the group's)."""
        have = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for m in modules for p in m.parameters() if id(p) not in have]
        if not params:
            return
        optimizer.add_param_group({"params": params, "lr": lr, "initial_lr": lr})
        for config in pl_module.trainer.lr_scheduler_configs:
            if config.scheduler.optimizer is optimizer:
                config.scheduler.base_lrs.append(lr)

    def params(self) -> dict[str, Any]:
        """The hyper-parameters ``__init__`` stored (what the run's config records)."""
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}


def trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


@STRATEGIES.register("scratch")
class Scratch(Strategy):
    """The same architecture with random weights, all trained: the no-transfer baseline."""

    name = "scratch"
    pretrained = False

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(0)


@STRATEGIES.register("frozen")
class Frozen(Strategy):
    """Feature extraction: the first ``reuse`` blocks are fixed; the rest and the head are trained."""

    name = "frozen"
    augment = False
    frozen_prefix = True

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(reuse)


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
        super().__init__()
        self.backbone_lr_mult = backbone_lr_mult
        self.freeze_bn = freeze_bn

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(0, bn=reuse if self.freeze_bn else 0)

    def param_groups(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        blocks = list(model.blocks)
        return [
            {"params": trainable(blocks[:reuse]), "lr": lr * self.backbone_lr_mult},
            {"params": trainable([*blocks[reuse:], model.pool, model.head]), "lr": lr},
        ]


def make_strategy(name: str, **params: Any) -> Strategy:
    """Instantiate a registered strategy, passing only the parameters its ``__init__`` accepts."""
    cls = STRATEGIES.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in params.items() if k in accepted})


assert tuple(STRATEGIES) == STRATEGY_NAMES, "config.STRATEGY_NAMES must name exactly the registered strategies"
