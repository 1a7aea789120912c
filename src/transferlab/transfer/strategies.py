"""Strategies: how much of the source is reused, what trains, at which rate, and how that changes over epochs.

A strategy is a Lightning callback in the shape of ``BaseFinetuning`` (Lightning's own fine-tuning callbacks):
``__init__`` stores its hyper-parameters, :meth:`Strategy.attach` freezes what it keeps fixed and returns the
optimiser's parameter groups, ``finetune_function`` is its per-epoch schedule and :meth:`Strategy.penalty` an extra
loss term. Its state, including any parameter groups a schedule added, is saved in the checkpoint, so a schedule
survives ``--resume``. Unlike ``BaseFinetuning.freeze``, frozen blocks keep BatchNorm in eval mode (see
:class:`TransferModel`). ``scratch`` is just another strategy: the baseline runs through the same code as every
transfer arm. A spec such as ``finetune:decay=0.7,reg=l2sp`` gives a strategy its options; their types, ranges
and defaults are declared once, in :mod:`transferlab.catalogue` (so that a bad spec is one sentence before torch
loads), and ``__init__`` stores them resolved, as attributes of the same names.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from transferlab import catalogue
from transferlab.errors import UserError
from transferlab.transfer import penalties
from transferlab.transfer.model import TransferModel, run_inference

log = logging.getLogger(__name__)


class Strategy(BaseFinetuning):
    name: ClassVar[str]  # its catalogue entry: options, whether it starts from the source's weights, ...
    augment: ClassVar[bool] = True  # light augmentation of training images
    wants_features: ClassVar[bool] = False  # penalty() needs the batch's features (the pooled vector)

    def __init__(self, **options: Any) -> None:
        """Store every option the catalogue declares for this strategy: ``options`` (checked) over the defaults."""
        super().__init__()
        self._options = catalogue.strategy(self.name).resolve(options)
        for key, value in self._options.items():
            setattr(self, key, value)

    @property
    def pretrained(self) -> bool:  # start from the source's weights (False: the no-transfer baseline)
        return catalogue.strategy(self.name).pretrained

    @property
    def frozen_prefix(self) -> bool:  # the reused blocks never train, so their outputs can be cached
        return catalogue.strategy(self.name).frozen_prefix

    def attach(self, model: TransferModel, reuse: int, lr: float, world: int = 1) -> list[dict[str, Any]]:
        """Freeze what this strategy keeps fixed in ``model`` (whose first ``reuse`` blocks come from the source)
        and return the optimiser's parameter groups with their learning rates (``lr``: the head's). ``world`` is
        the number of training processes (DDP)."""
        self.model_, self.reuse_, self.lr_, self.world_ = model, reuse, lr, world
        self.freeze_model(model, reuse)
        return [g for g in self.param_groups(model, reuse, lr) if g["params"]]

    def check(self, blocks: list[nn.Module]) -> None:
        """Refuse, in one sentence, reused ``blocks`` this strategy cannot work with (before any file is written)."""

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        raise NotImplementedError

    def param_groups(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        return [{"params": trainable([model]), "lr": lr}]

    def penalty(self, pl_module: L.LightningModule, features: torch.Tensor | None) -> torch.Tensor | None:
        """A term added to the training loss (regularised fine-tuning); None: nothing."""
        return None

    def before_test(self, model: TransferModel) -> None:
        """The trained weights' last change, after the best validation's are restored and before the test (WiSE-FT
        averages them with the starting point)."""

    def finalize(self, model: TransferModel) -> None:
        """Make ``model`` a plain TransferModel of the source's architecture before it is saved (LoRA merges)."""

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """Done by :meth:`attach`, before the frozen prefix's features are extracted."""

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """The per-epoch schedule (none by default), called at the start of every epoch. It must set the state
        that ``epoch`` calls for, not only change it when ``epoch`` is reached: after ``--resume`` the optimiser's
        parameter groups come back from the checkpoint, but what is frozen is set again here. Add parameters to
        the optimiser with :meth:`train_also` (it skips those the optimiser already has)."""

    @staticmethod
    def train_also(pl_module: L.LightningModule, modules: list[nn.Module], optimizer: Optimizer, lr: float) -> None:
        """Add the parameters of ``modules`` that the optimiser does not have yet as a group at ``lr``, scaled as
        the learning-rate schedule has scaled the first group so far (after a plateau drop, 10x less). Any
        gradient they gathered while outside the optimiser is dropped."""
        have = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for m in modules for p in m.parameters() if id(p) not in have]
        if not params:
            return
        for p in params:
            p.grad = None
        first = optimizer.param_groups[0]
        scale = first["lr"] / first["initial_lr"] if first.get("initial_lr") else 1.0
        optimizer.add_param_group({"params": params, "lr": lr * scale, "initial_lr": lr})

    def params(self) -> dict[str, Any]:
        """The hyper-parameters ``__init__`` stored (what the run's config records)."""
        return dict(self._options)


def trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def two_rates(model: TransferModel, reuse: int, lr: float, mult: float) -> list[dict[str, Any]]:
    """The reused blocks' trainable weights at ``lr * mult``, the new blocks and the head at ``lr``."""
    blocks = list(model.blocks)
    return [{"params": trainable(blocks[:reuse]), "lr": lr * mult},
            {"params": trainable([*blocks[reuse:], model.pool, model.head]), "lr": lr}]


class Scratch(Strategy):
    """The same architecture with random weights, all trained: the no-transfer baseline."""

    name = "scratch"

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(0)


class Frozen(Strategy):
    """Feature extraction: the first ``reuse`` blocks are fixed; the rest and the head are trained."""

    name = "frozen"
    augment = False

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(reuse)


class Finetune(Strategy):
    """Everything trains; the reused blocks at the head's learning rate times ``backbone_lr_mult``.

    With ``freeze_bn`` (the default) the reused blocks' BatchNorm layers keep the source's running statistics
    (inference mode) while their weights train, as the Keras fine-tuning guide recommends: in train mode a few
    small batches of target data would replace statistics learned on the source, and the slow running averages
    would then disagree with what the head was trained on.

    ``decay`` gives layer-wise learning rates instead (Howard & Ruder 2018's discriminative fine-tuning; BEiT's
    layer decay): block i counted from the top (the last block is 1, the head 0) trains at ``lr * decay**i``.
    ``reg`` adds a penalty: ``l2sp`` (Li et al. 2018: ``alpha/2 ||w - w0||^2`` on the reused weights, ``beta/2
    ||w||^2`` on the new ones) or ``bss`` (Chen et al. 2019: ``eta`` times the ``k`` smallest squared singular
    values of the batch's features).
    """

    name = "finetune"
    reg: str

    @property
    def wants_features(self) -> bool:  # type: ignore[override]
        return self.reg == "bss"

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(0, bn=reuse if self.freeze_bn else 0)

    def rates(self, model: TransferModel, reuse: int, lr: float) -> list[float]:
        """The learning rate of every block, from the first."""
        n = len(model.blocks)
        if self.decay is not None:
            return [lr * self.decay ** (n - i) for i in range(n)]
        return [lr * self.backbone_lr_mult if i < reuse else lr for i in range(n)]

    def param_groups(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        if self.decay is None:  # two groups, as before layer-wise rates existed (the same numbers, bit for bit)
            return two_rates(model, reuse, lr, self.backbone_lr_mult)
        rates = self.rates(model, reuse, lr)
        return [*({"params": trainable([b]), "lr": r} for b, r in zip(model.blocks, rates, strict=True)),
                {"params": trainable([model.pool, model.head]), "lr": lr}]

    def attach(self, model: TransferModel, reuse: int, lr: float, world: int = 1) -> list[dict[str, Any]]:
        groups = super().attach(model, reuse, lr, world)
        if self.reg == "l2sp":  # the source's weights, whatever a resumed checkpoint later loads into the model
            self.reused_ = [p for b in list(model.blocks)[:reuse] for p in b.parameters()]
            self.new_ = [p for b in list(model.blocks)[reuse:] for p in b.parameters()] + list(model.head.parameters())
            self.start_ = penalties.StartingPoint(self.reused_, persistent=False)
        return groups

    def penalty(self, pl_module: L.LightningModule, features: torch.Tensor | None) -> torch.Tensor | None:
        if self.reg == "l2sp":
            self.start_.to(pl_module.device)
            return penalties.l2sp(self.start_.pairs(self.reused_), self.new_, self.alpha, self.beta)
        if self.reg == "bss" and features is not None:
            return self.eta * penalties.bss(features.float(), self.k)
        return None


class Gradual(Finetune):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018): the head and new blocks train first, then every ``every``
    epochs one more reused block joins them, from the top, at its own rate (``decay``, else ``lr x
    backbone_lr_mult``). Which blocks are open follows from the epoch alone, so a resumed run continues the
    schedule where it was.

    In one process a closed block takes no gradient. Under DDP every reused block keeps ``requires_grad`` from the
    start and a closed one is only left out of the optimiser: DDP synchronises exactly the parameters that required
    gradients when it wrapped the model, so a block switched on later would train apart on every process (the
    cost: closed blocks are back-propagated through, as in ``finetune``)."""

    name = "gradual"

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(reuse if self.world_ == 1 else 0, bn=reuse if self.freeze_bn else 0)

    def param_groups(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        """The new blocks and the head; reused blocks join as they open (:meth:`finetune_function`)."""
        blocks, rates = list(model.blocks), self.rates(model, reuse, lr)
        return [*({"params": trainable([b]), "lr": r} for b, r in zip(blocks[reuse:], rates[reuse:], strict=True)),
                {"params": trainable([model.pool, model.head]), "lr": lr}]

    def open_blocks(self, epoch: int) -> int:
        """Reused blocks training in ``epoch`` (counted from 0), from the top."""
        return min(self.reuse_, epoch // self.every)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        n_open = self.open_blocks(epoch)
        first = self.reuse_ - n_open
        self.model_.freeze(first if self.world_ == 1 else 0, bn=self.reuse_ if self.freeze_bn else 0)
        rates = self.rates(self.model_, self.reuse_, self.lr_)
        for i in range(self.reuse_ - 1, first - 1, -1):  # top first: the order the groups were added in
            self.train_also(pl_module, [self.model_.blocks[i]], optimizer, rates[i])


class L2SP(Finetune):
    """``finetune`` with the L2-SP penalty (Li, Grandvalet & Davoine 2018): the reused weights are pulled towards
    the source's, the new ones towards zero. Defaults alpha=0.1, beta=0.01 from the authors' script."""

    name = "l2sp"
    reg = "l2sp"


class BSS(Finetune):
    """``finetune`` with Batch Spectral Shrinkage (Chen et al. 2019): the ``k`` smallest singular values of each
    batch's features are shrunk, which keeps the features the source learned but the target cannot support from
    being amplified. Defaults k=1, eta=0.001 from the paper."""

    name = "bss"
    reg = "bss"


class LPFT(Finetune):
    """LP-FT (Kumar et al., ICLR 2022): a linear probe first, the head fitted to convergence on the source's frozen
    features of the training split (a logistic regression with C by cross-validation, as the ``logreg`` arm's; no
    augmentation), then ``finetune`` of everything from there. A head that starts right distorts the reused
    features less while it learns (the paper: +1% in distribution, +10% out of distribution over plain
    fine-tuning). ``wise`` < 1 then averages the weights (WiSE-FT, Wortsman et al., CVPR 2022): ``(1 - wise) x``
    the probe's starting point ``+ wise x`` the fine-tuned, before the test (no cost at inference); 1, the default,
    keeps the fine-tuned weights. A resumed run keeps its probe (and the starting point) from the checkpoint; under
    DDP every process probes the whole split and takes the first process's head."""

    name = "lpft"
    reg = "none"
    wise: float

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed = self._restarting  # set by load_state_dict: the probed head comes back from the checkpoint
        super().on_fit_start(trainer, pl_module)
        if resumed:
            return
        from transferlab.evaluate.logreg import linear_head

        model, was_training = self.model_, self.model_.training
        loader = trainer.datamodule.loader("train")
        feats = run_inference(model.prefix(len(model.blocks)), loader,
                              channels_last=pl_module.channels_last).double().numpy()
        labels = np.asarray(trainer.datamodule.splits["train"].labels)
        weight, bias, c = linear_head(feats, labels, model.head.out_features, seed=int(torch.initial_seed()) % 2**32)
        weight, bias = trainer.strategy.broadcast((weight, bias), src=0)  # one head on every process
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(weight, dtype=model.head.weight.dtype))
            model.head.bias.copy_(torch.as_tensor(bias, dtype=model.head.bias.dtype))
        model.train(was_training)
        if self.wise < 1:
            self.start_ = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        log.info("linear probe: C %.3g, training accuracy %.4f", c,
                 float(((feats @ weight.T + bias).argmax(1) == labels).mean()))

    def before_test(self, model: TransferModel) -> None:
        """WiSE-FT: the weights averaged with the probe's starting point (floating-point tensors only)."""
        start = getattr(self, "start_", None)
        if self.wise >= 1 or start is None:
            return
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if value.is_floating_point():
                    value.copy_(start[key].to(value.device, value.dtype).lerp(value, self.wise))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if getattr(self, "start_", None) is not None:
            state["wise_start"] = self.start_
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.start_ = state.pop("wise_start", None)
        super().load_state_dict(state)


LORA_TARGETS = ("query", "key", "value", "qkv", "q_proj", "k_proj", "v_proj")


class LoRA(Strategy):
    """Low-rank adapters (Hu et al. 2021) through Hugging Face PEFT on the attention projections of the reused
    blocks (``query``/``key``/``value`` of sentence-transformers encoders, ``qkv`` of timm ViTs): the reused
    weights stay fixed, ``r``-rank updates scaled by ``alpha / r`` train, with the head and any new blocks. The
    run directory stores the merged weights, so ``predict`` and reusing the run as a source are unchanged.

    The adapters are reused-block parameters and train at the reused blocks' rate, ``lr * backbone_lr_mult`` (1e-4
    by default for text and images; the LoRA paper tuned 2e-4 to 5e-4 on RoBERTa-base and GPT-2). At the head's
    rate (text: 1e-2) the training loss on WordNet rose again after 3 epochs and accuracy fell to half."""

    name = "lora"
    r: int
    alpha: float
    dropout: float
    backbone_lr_mult: float

    @staticmethod
    def targets(blocks: list[nn.Module]) -> list[str]:
        """The names of the attention projections in ``blocks`` that get adapters."""
        return sorted({name.rsplit(".", 1)[-1] for name, m in nn.ModuleList(blocks).named_modules()
                       if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS})

    def check(self, blocks: list[nn.Module]) -> None:
        if not self.targets(blocks):
            raise UserError("lora adapts the attention projections (linear layers named "
                            f"{', '.join(LORA_TARGETS)}) of the reused blocks, and this source has none: use it with "
                            "a sentence-transformers encoder or a timm ViT, or use finetune")

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        model.freeze(reuse)
        reused = nn.ModuleList(list(model.blocks)[:reuse])
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=self.targets(list(reused)))
        inject_adapter_in_model(config, reused)
        for name, p in reused.named_parameters():
            p.requires_grad_("lora_" in name)
        # the reused blocks stay in eval mode (their own dropout off), the adapters' dropout follows the model's mode
        model.trains_in_frozen = [m for name, m in reused.named_modules() if name.endswith("lora_dropout")]
        model.train(model.training)

    def param_groups(self, model: TransferModel, reuse: int, lr: float) -> list[dict[str, Any]]:
        return two_rates(model, reuse, lr, self.backbone_lr_mult)  # the reused blocks' trainable weights: adapters

    def finalize(self, model: TransferModel) -> None:
        """Merge every adapter into its base layer and put the base layer back (PEFT's merge_and_unload)."""
        from peft.tuners.lora import LoraLayer

        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, LoraLayer):
                    child.merge()
                    setattr(parent, child_name, child.get_base_layer())
        model.trains_in_frozen = []  # the adapters' dropout went with them


def make_strategy(spec: str, **defaults: Any) -> Strategy:
    """The strategy a spec names (``finetune:decay=0.7``), with ``defaults`` (run options such as
    ``backbone_lr_mult``) for the options it declares and the spec does not set."""
    name, options = catalogue.parse_strategy(spec)
    kind = catalogue.strategy(name)
    return kind.cls()(**{k: v for k, v in {**defaults, **dict(options)}.items() if k in kind.options})
