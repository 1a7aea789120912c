"""The one training loop: a LightningModule for cross-entropy training of any modality's network."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class LitClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with AdamW over the strategy's parameter groups. With ``plateau`` (the
    epochs between validations) the learning rates drop 10x when the validation loss stalls (see
    :mod:`transferlab.train.budget`); without it they stay constant. What trains and when is the strategy's
    business (a callback); this module only runs the steps."""

    def __init__(
        self, net: nn.Module, param_groups: list[dict[str, Any]], weight_decay: float, channels_last: bool = False,
        compile: bool = False, seed: int = 0, penalty: Callable[..., torch.Tensor | None] | None = None,
        wants_features: bool = False, plateau: int | None = None, class_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        self.net = net
        self.seed = seed
        self.plateau = plateau
        self.first_nonfinite: torch.Tensor | None = None  # global step of the first non-finite loss, on the device
        self.param_groups = [g for g in param_groups if g["params"]]
        self.weight_decay = weight_decay
        self.channels_last = channels_last
        if channels_last:
            net.to(memory_format=torch.channels_last)
        # kept outside the module tree: the compiled wrapper shares net's parameters, and the state dict stays net's
        object.__setattr__(self, "_forward", torch.compile(net) if compile else net)
        self._val = torch.zeros(4, dtype=torch.float64)
        # --class-weight balanced: each class's loss weighted (training and validation loss alike); a buffer, so it
        # moves with the module and is in the checkpoint
        self.register_buffer("class_weights", class_weights, persistent=False)
        # the strategy's extra loss term, given (this module, the batch's pooled features or None)
        object.__setattr__(self, "penalty", penalty)
        self.wants_features = wants_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:  # batches of images or feature maps (the run decides: see fit)
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # dropout and other randomness of the step depend on (seed, epoch, batch) only: a resumed run draws the same
        torch.manual_seed(mix_seed(self.seed, self.current_epoch, batch_idx, 1))
        x, y = batch
        features = None
        if self.wants_features:  # the pooled vector the head sees, for a penalty on the features (BSS)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features = self.net.forward_features(x)
            logits = self.net.head(features)
        else:
            logits = self(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        extra = self.penalty(self, features) if self.penalty is not None else None
        if extra is not None:
            self.log("penalty", extra.detach(), on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
            loss = loss + extra
        self._watch(loss.detach())
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True, prog_bar=True)
        return loss

    def _watch(self, loss: torch.Tensor) -> None:
        """Remember the first step whose loss is not finite, without a host sync (checked once per epoch)."""
        if self.first_nonfinite is None or self.first_nonfinite.device != loss.device:
            self.first_nonfinite = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss) & (self.first_nonfinite < 0)
        self.first_nonfinite = torch.where(bad, self.global_step, self.first_nonfinite)

    def on_validation_epoch_start(self) -> None:
        self._val = torch.zeros(4, dtype=torch.float64)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Sums of (weighted) loss, correct predictions, examples and their weights; padding (label -1, see
        :class:`Padded`) is left out."""
        x, y = batch
        logits = self(x).float()
        keep = y >= 0
        if keep.any():
            loss = F.cross_entropy(logits[keep], y[keep], weight=self.class_weights, reduction="sum")
            correct = (logits[keep].argmax(1) == y[keep]).sum()
            weight = keep.sum() if self.class_weights is None else self.class_weights[y[keep]].sum()
            self._val += torch.stack([loss.detach(), correct, keep.sum(), weight]).double().cpu()

    def on_validation_epoch_end(self) -> None:
        """Validation metrics over the whole split: the sums of every process, added up."""
        total = self.trainer.strategy.reduce(self._val.to(self.device), reduce_op="sum").cpu()
        loss, correct, count, weight = total.tolist()
        count = max(count, 1.0)
        self.log("val_loss", loss / max(weight, 1e-12))  # cross_entropy's own weighted mean
        self.log("val_accuracy", correct / count, prog_bar=True)
        self.log("val_count", float(total[2]))

    def configure_optimizers(self) -> Any:
        from transferlab.train.budget import PLATEAU_FACTOR, PLATEAU_PATIENCE

        groups = [{**g, "initial_lr": g["lr"]} for g in self.param_groups]  # what a group added later scales from
        opt = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        if self.plateau is None:
            return opt
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=PLATEAU_FACTOR,
                                                           patience=PLATEAU_PATIENCE)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch",
                                                   "frequency": self.plateau}}


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, item, ...): independent streams that do not depend on history."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1
