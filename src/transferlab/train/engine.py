"""The one training loop (a LightningModule), inference, and the on-disk feature cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


class LitClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with AdamW over the strategy's parameter groups and a cosine schedule."""

    def __init__(self, net: nn.Module, param_groups: list[dict[str, Any]], weight_decay: float, on_epoch_start=None):
        super().__init__()
        self.net = net
        self.param_groups = [g for g in param_groups if g["params"]]
        self.weight_decay = weight_decay
        self.on_epoch_start = on_epoch_start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.param_groups, weight_decay=self.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles with ``seed + epoch``: the order of every epoch is fixed, so a resumed run sees the same batches.

    Lightning calls ``set_epoch`` before each epoch.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


class MetricsCSV(L.Callback):
    """One row per epoch in ``metrics.csv``; its rows live in the checkpoint, so a resumed run keeps them."""

    columns = ("epoch", "train_loss", "val_loss", "val_accuracy", "wall_seconds")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        self._start = time.perf_counter()
        self._offset = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key in self.columns[1:4]:
            row[key] = float(m[key]) if key in m else float("nan")
        row["wall_seconds"] = round(self._offset + time.perf_counter() - self._start, 3)
        self.rows.append(row)
        lines = [",".join(self.columns)] + [",".join(f"{r[c]:.6g}" for c in self.columns) for r in self.rows]
        self.path.write_text("\n".join(lines) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self._offset = self.rows[-1]["wall_seconds"] if self.rows else 0.0


def make_trainer(out: Path, epochs: int, progress: bool, metrics: MetricsCSV) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0, enable_version_counter=False)
    return L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[metrics, ckpt],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter and hints that do not apply here off the terminal."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*module\(s\) in eval mode.*")  # frozen blocks, on purpose


@torch.inference_mode()
def run_inference(module: nn.Module, loader: DataLoader, desc: str = "", progress: bool = False) -> torch.Tensor:
    """Outputs of ``module`` over ``loader`` (eval mode, channels_last for image batches), concatenated."""
    module.eval()
    outs = []
    for x, _ in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append(module(x).float().contiguous())
    return torch.cat(outs)


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERLAB_CACHE_DIR", Path.home() / ".cache" / "transferlab"))


def cache_key(**parts: Any) -> str:
    """A stable key over everything that determines cached features."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_features(
    key: str, prefix: nn.Module, loaders: dict[str, DataLoader], progress: bool
) -> tuple[dict[str, torch.Tensor], bool]:
    """Outputs of the frozen ``prefix`` for every split: read from the cache, or computed once and stored.

    Returns the features and whether they came from the cache.
    """
    path = cache_dir() / "features" / f"{key}.safetensors"
    if path.is_file():
        try:
            feats = load_file(str(path))
            if set(feats) == set(loaders):
                log.info("features loaded from cache %s", path)
                return feats, True
        except Exception as e:  # a damaged cache file is recomputed, never trusted
            log.warning("ignoring unreadable feature cache %s (%s)", path, e)
    prefix = prefix.to(memory_format=torch.channels_last)
    feats = {split: run_inference(prefix, dl, f"features ({split})", progress) for split, dl in loaders.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(feats, str(tmp))
    tmp.replace(path)
    return feats, False
