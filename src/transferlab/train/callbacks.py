"""What a run records while it trains: metrics.csv, the test learning curve, the epoch bar, the divergence stop."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar

from transferlab.errors import UserError
from transferlab.evaluate import score
from transferlab.files import MAX_JSON_BYTES, read_bounded
from transferlab.report import write_csv
from transferlab.transfer.model import run_inference

log = logging.getLogger(__name__)
EPOCH_LINES = contextvars.ContextVar("epoch_lines", default=logging.INFO)  # the level EpochLine logs at


@contextlib.contextmanager
def cell_logging() -> Iterator[None]:
    """Inside the block (the cells of compare, layers and advise) a run's epoch lines log at DEBUG, shown with
    ``--verbose``: a log file keeps one line per cell."""
    token = EPOCH_LINES.set(logging.DEBUG)
    try:
        yield
    finally:
        EPOCH_LINES.reset(token)


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict[str, float]]) -> None:
    """Rewrite a callback's CSV with every row so far (numbers to 6 significant digits)."""
    write_csv(path, columns, [[f"{r[c]:.6g}" for c in columns] for r in rows])


def read_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, float]]:
    """The rows :func:`write_rows` wrote, read back as numbers; anything else is one sentence naming the line."""
    lines = read_bounded(path, "metrics file", MAX_JSON_BYTES).decode("utf-8", "replace").splitlines()
    if not lines or tuple(lines[0].split(",")) != columns:
        raise UserError(f"{path} line 1: expected the header {','.join(columns)} (was it edited?)")
    rows = []
    for number, line in enumerate(lines[1:], 2):
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            values = []
        if len(values) != len(columns):
            raise UserError(f"{path} line {number}: expected {len(columns)} numbers (was it edited?)")
        rows.append(dict(zip(columns, values, strict=True)))
    return rows


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run directory stays INCOMPLETE and ``--resume`` continues it."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"interrupted during epoch {epoch}")
        self.epoch = epoch


class StopFlag(L.Callback):
    """Keeps in the checkpoint that early stopping ended training, so that a run killed after its last epoch (before
    its model was written) does not train on when resumed, and ends exactly as an uninterrupted run."""

    def __init__(self) -> None:
        self.stopped = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stopped = bool(trainer.should_stop)  # before the epoch's checkpoint (checkpoint callbacks run last)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopped = bool(state_dict.get("stopped", False))


class MetricsCSV(L.Callback):
    """One row per epoch in ``metrics.csv``; its rows live in the checkpoint, so a resumed run keeps them."""

    columns = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_count", "wall_seconds")

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
        for key in self.columns[1:5]:
            row[key] = float(m[key]) if key in m else float("nan")
        row["wall_seconds"] = round(self._offset + time.perf_counter() - self._start, 3)
        self.rows.append(row)
        if trainer.is_global_zero:  # one run directory, written by rank 0 only
            write_rows(self.path, self.columns, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self._offset = self.rows[-1]["wall_seconds"] if self.rows else 0.0


def curve_epoch(epoch: int) -> bool:
    """Whether the learning curve has a point at the end of ``epoch`` (from 1): epochs 1-4, then 2^k and 1.5 * 2^k
    (6, 8, 12, 16, 24, ...): dense where curves change fast, about 2 points per doubling after."""
    if epoch <= 4:
        return True
    high = 1 << (epoch.bit_length() - 1)
    return epoch == high or epoch == high + high // 2


def fixed_subset(n: int, cap: int | None) -> np.ndarray | None:
    """Positions of at most ``cap`` of ``n`` examples, the same every time (None: all of them)."""
    if cap is None or n <= cap:
        return None
    return np.sort(np.random.default_rng(0).permutation(n)[:cap])


class TestCurve(L.Callback):
    """Evaluates on the held-out test split at step 0, at a few points within the first epoch, then at the end of
    epochs 1-4, 6, 8, 12, 16, 24, ... (:func:`curve_epoch`) and of the last epoch, and writes ``curve.csv``. Every
    point uses the same fixed subset of at most ``within_epoch_cap`` test examples: the curve is the learning
    curve's shape; the run's final test accuracy (its converged skill) comes from the whole split. ``test_score``
    is the point by ``metric`` (--metric; accuracy: ``test_accuracy`` again). ``wall_seconds``
    counts training time only (evaluation pauses the clock) plus ``offset`` (for example the one-off feature
    extraction of a frozen arm). Rows live in the checkpoint."""

    columns = ("step", "epoch", "examples", "wall_seconds", "test_accuracy", "test_loss", "epoch_end", "test_count",
               "test_score")
    fractions = (1 / 16, 1 / 8, 1 / 4, 1 / 2)

    def __init__(self, path: Path, data: Any, labels: torch.Tensor, within_epoch_cap: int | None = None,
                 metric: str = "accuracy") -> None:
        self.path, self.data, self.labels = path, data, labels  # data: the run's datamodule (loader, feature_seconds)
        self.metric = metric
        self.cap = within_epoch_cap  # points before an epoch's end use at most this many test examples
        self.rows: list[dict[str, float]] = []
        self.examples, self.train_seconds, self.offset = 0, 0.0, 0.0
        self._tick = time.perf_counter()

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch_end: bool) -> None:
        self.train_seconds += time.perf_counter() - self._tick
        if not trainer.is_global_zero:  # rank 0 evaluates the whole test split; the others train on
            self._tick = time.perf_counter()
            return
        keep = fixed_subset(len(self.labels), self.cap)
        logits = run_inference(pl_module.net, self.data.loader("test", keep), channels_last=pl_module.channels_last)
        labels = self.labels if keep is None else self.labels[keep]
        pl_module.net.train()
        self.rows.append({
            "step": trainer.global_step,
            "epoch": trainer.current_epoch + (1 if epoch_end else 0),
            "examples": self.examples,
            "wall_seconds": round(self.offset + self.train_seconds, 4),
            "test_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "test_loss": float(F.cross_entropy(logits, labels)),
            "epoch_end": int(epoch_end),
            "test_count": len(labels),
            "test_score": score(self.metric, labels.numpy(), logits.argmax(1).numpy()),
        })
        write_rows(self.path, self.columns, self.rows)
        self._tick = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.offset = self.data.feature_seconds  # the one-off feature extraction of a frozen arm counts as time
        if not self.rows:
            self._evaluate(trainer, pl_module, epoch_end=False)
        self._tick = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.examples += len(batch[1]) * trainer.world_size
        n = int(trainer.num_training_batches)
        points = {max(1, round(f * n)) for f in self.fractions} - {n}
        if trainer.current_epoch == 0 and batch_idx + 1 in points:
            self._evaluate(trainer, pl_module, epoch_end=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._tick  # the validation pass is not training time either

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = epoch >= trainer.max_epochs or (0 < trainer.max_steps <= trainer.global_step) or (
            trainer.should_stop and trainer.global_step >= (trainer.fit_loop.min_steps or 0))
        if last or curve_epoch(epoch):
            self._evaluate(trainer, pl_module, epoch_end=True)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "examples": self.examples, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.examples, self.train_seconds = int(state_dict["examples"]), float(state_dict["train_seconds"])


class EpochBar(TQDMProgressBar):
    """Lightning's bar with epochs counted from 1 (``Epoch 1/3``), the epoch's training loss and validation
    accuracy beside it: on a terminal only (:class:`EpochLine` writes what stays)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class EpochLine(L.Callback):
    """One log line at every epoch that validated (about every 10 steps, see train/budget.py): what a log file
    keeps, with or without the bar (``--quiet`` silences it; in the cells of an experiment, at DEBUG)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m, epoch = trainer.callback_metrics, trainer.current_epoch + 1
        if not trainer.is_global_zero or "train_loss" not in m or "val_accuracy" not in m:
            return
        if epoch % (trainer.check_val_every_n_epoch or 1) == 0 or trainer.should_stop:
            log.log(EPOCH_LINES.get(), "epoch %d/%d: training loss %.4f, validation loss %.4f, accuracy %.4f",
                    epoch, trainer.max_epochs, float(m["train_loss"]), float(m.get("val_loss", float("nan"))),
                    float(m["val_accuracy"]))


class Diverged(UserError):
    """Training produced a non-finite loss: the run stops, its last good checkpoint kept."""


class StopOnNonFinite(L.Callback):
    """At the end of every epoch, before its checkpoint is written, stop the run if any step's loss was NaN or
    infinite (the module records the first such step on the device, so no step waits for the host)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        first = getattr(pl_module, "first_nonfinite", None)
        mine = torch.zeros(()) if first is None else (first >= 0).float()
        if float(trainer.strategy.reduce(mine.to(pl_module.device), reduce_op="sum")) > 0:  # every process stops
            where = f"step {int(first) + 1}" if float(mine) > 0 else "a step of another process"
            raise Diverged(f"training diverged: the loss became NaN or infinite at epoch {trainer.current_epoch + 1}, "
                           f"{where}; lower --lr (now {self.lr:g}) and start over with --overwrite")
