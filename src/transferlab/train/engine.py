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
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferlab.report import write_csv

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


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict[str, float]]) -> None:
    """Rewrite a callback's CSV with every row so far (numbers to 6 significant digits)."""
    write_csv(path, columns, [[f"{r[c]:.6g}" for c in columns] for r in rows])


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
        write_rows(self.path, self.columns, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self._offset = self.rows[-1]["wall_seconds"] if self.rows else 0.0


class TestCurve(L.Callback):
    """Evaluates on the held-out test split at step 0, at a few points within the first epoch, then after every
    epoch, and writes ``curve.csv``. ``wall_seconds`` counts training time only (evaluation pauses the clock) plus
    ``offset`` (for example the one-off feature extraction of a frozen arm). Rows live in the checkpoint."""

    columns = ("step", "epoch", "examples", "wall_seconds", "test_accuracy", "test_loss", "epoch_end")
    fractions = (1 / 16, 1 / 8, 1 / 4, 1 / 2)

    def __init__(self, path: Path, test_loader: DataLoader, labels: torch.Tensor, offset: float = 0.0) -> None:
        self.path, self.loader, self.labels = path, test_loader, labels
        self.rows: list[dict[str, float]] = []
        self.examples, self.train_seconds, self.offset = 0, 0.0, offset
        self._tick = time.perf_counter()

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch_end: bool) -> None:
        self.train_seconds += time.perf_counter() - self._tick
        logits, labels = run_inference(pl_module.net, self.loader), self.labels
        pl_module.net.train()
        self.rows.append({
            "step": trainer.global_step,
            "epoch": trainer.current_epoch + (1 if epoch_end else 0),
            "examples": self.examples,
            "wall_seconds": round(self.offset + self.train_seconds, 4),
            "test_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "test_loss": float(F.cross_entropy(logits, labels)),
            "epoch_end": int(epoch_end),
        })
        write_rows(self.path, self.columns, self.rows)
        self._tick = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows:
            self._evaluate(trainer, pl_module, epoch_end=False)
        self._tick = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.examples += len(batch[1])
        n = int(trainer.num_training_batches)
        points = {max(1, round(f * n)) for f in self.fractions} - {n}
        if trainer.current_epoch == 0 and batch_idx + 1 in points:
            self._evaluate(trainer, pl_module, epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate(trainer, pl_module, epoch_end=True)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "examples": self.examples, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.examples, self.train_seconds = int(state_dict["examples"]), float(state_dict["train_seconds"])


def make_trainer(out: Path, epochs: int, progress: bool, callbacks: list[L.Callback]) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(  # checkpoints/last.ckpt after every epoch, once the epoch's rows are recorded
        dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[*callbacks, ckpt],
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
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # resume
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
) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Outputs of the frozen ``prefix`` for every split: read from the cache, or computed once and stored.

    Returns the features, whether they came from the cache, and the seconds their extraction took (recorded in
    the cache, so a cache hit still knows what the features cost).
    """
    path = cache_dir() / "features" / f"{key}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                seconds = float((f.metadata() or {}).get("seconds", "nan"))
            feats = load_file(str(path))
            if set(feats) == set(loaders):
                log.info("features loaded from cache %s", path)
                return feats, True, seconds
        except Exception as e:  # a damaged cache file is recomputed, never trusted
            log.warning("ignoring unreadable feature cache %s (%s)", path, e)
    tick = time.perf_counter()
    prefix = prefix.to(memory_format=torch.channels_last)
    feats = {split: run_inference(prefix, dl, f"features ({split})", progress) for split, dl in loaders.items()}
    seconds = time.perf_counter() - tick
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(feats, str(tmp), metadata={"seconds": f"{seconds:.4f}"})
    tmp.replace(path)
    return feats, False, seconds
