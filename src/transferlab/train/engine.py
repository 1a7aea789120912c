"""The one training loop (a LightningModule), inference, and the on-disk feature cache."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferlab.errors import UserError
from transferlab.files import atomic_write
from transferlab.report import write_csv
from transferlab.sources.base import tensors_digest

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # 2: the payload's sha256 is in the metadata


class LitClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with AdamW over the strategy's parameter groups and a cosine schedule."""

    def __init__(
        self, net: nn.Module, param_groups: list[dict[str, Any]], weight_decay: float, on_epoch_start=None,
        channels_last: bool = False, compile: bool = False, seed: int = 0,
    ):
        super().__init__()
        self.net = net
        self.seed = seed
        self.first_nonfinite: torch.Tensor | None = None  # global step of the first non-finite loss, on the device
        self.param_groups = [g for g in param_groups if g["params"]]
        self.weight_decay = weight_decay
        self.on_epoch_start = on_epoch_start
        self.channels_last = channels_last
        if channels_last:
            net.to(memory_format=torch.channels_last)
        # kept outside the module tree: the compiled wrapper shares net's parameters, and the state dict stays net's
        object.__setattr__(self, "_forward", torch.compile(net) if compile else net)
        self._val = torch.zeros(3, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward(x)

    def on_train_epoch_start(self) -> None:
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # dropout and other randomness of the step depend on (seed, epoch, batch) only: a resumed run draws the same
        torch.manual_seed(mix_seed(self.seed, self.current_epoch, batch_idx, 1))
        x, y = batch
        loss = F.cross_entropy(self(x), y)
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
        self._val = torch.zeros(3, dtype=torch.float64)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Sums of loss, correct predictions and examples; padding (label -1, see :class:`Padded`) is left out."""
        x, y = batch
        logits = self(x).float()
        keep = y >= 0
        if keep.any():
            loss = F.cross_entropy(logits[keep], y[keep], reduction="sum")
            correct = (logits[keep].argmax(1) == y[keep]).sum()
            self._val += torch.stack([loss.detach(), correct, keep.sum()]).double().cpu()

    def on_validation_epoch_end(self) -> None:
        """Validation metrics over the whole split: the sums of every process, added up."""
        total = self.trainer.strategy.reduce(self._val.to(self.device), reduce_op="sum").cpu()
        loss, correct, count = total.tolist()
        count = max(count, 1.0)
        self.log("val_loss", loss / count)
        self.log("val_accuracy", correct / count, prog_bar=True)
        self.log("val_count", float(total[2]))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.param_groups, weight_decay=self.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, item, ...): independent streams that do not depend on history."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class EpochSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Shuffles with ``seed + epoch``: the order of every epoch is fixed, so a resumed run sees the same batches.

    It yields ``(index, epoch)``: :class:`EpochSeeded` seeds each example's augmentation from the pair, so that a
    resumed run (or another number of workers) draws the same crops and flips as an uninterrupted one.
    Under DDP each of ``world`` processes takes every ``world``-th index of that order, padded by wrapping round to
    a multiple of ``world`` (every process must take the same number of steps). Lightning calls ``set_epoch``
    before each epoch.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        if self.world > 1:
            order = (order * self.world)[: len(self) * self.world][self.rank :: self.world]
        return iter([(i, self.epoch) for i in order])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


class EpochSeeded(torch.utils.data.Dataset):
    """Training examples keyed by ``(index, epoch)`` (see :class:`EpochSampler`). With ``reseed``, the torch,
    NumPy and Python generators are seeded from (seed, epoch, index) before the example is transformed: its
    augmentation is then the same whichever process, worker or resumed run loads it."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int, reseed: bool) -> None:
        self.dataset, self.seed, self.reseed = dataset, seed, reseed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        i, epoch = key
        if self.reseed:
            s = mix_seed(self.seed, epoch, i)
            torch.random.default_generator.manual_seed(s)
            random.seed(s)
            np.random.seed(s % 2**32)
        return self.dataset[i]


class Padded(torch.utils.data.Dataset):
    """``dataset`` padded to a multiple of ``world`` with copies of item 0 labelled -1, which the metrics leave out:
    every process gets the same number of evaluation batches and every example counts exactly once."""

    def __init__(self, dataset: torch.utils.data.Dataset, world: int) -> None:
        self.dataset, self.n = dataset, len(dataset)
        self.total = math.ceil(self.n / world) * world if self.n else 0

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if i < self.n:
            return self.dataset[i]
        x, y = self.dataset[0]
        return x, torch.full_like(y, -1) if torch.is_tensor(y) else -1


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict[str, float]]) -> None:
    """Rewrite a callback's CSV with every row so far (numbers to 6 significant digits)."""
    write_csv(path, columns, [[f"{r[c]:.6g}" for c in columns] for r in rows])


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


def fixed_subset(n: int, cap: int | None) -> np.ndarray | None:
    """Positions of at most ``cap`` of ``n`` examples, the same every time (None: all of them)."""
    if cap is None or n <= cap:
        return None
    return np.sort(np.random.default_rng(0).permutation(n)[:cap])


class TestCurve(L.Callback):
    """Evaluates on the held-out test split at step 0, at a few points within the first epoch, then after every
    epoch, and writes ``curve.csv``. Points before an epoch's end use at most ``within_epoch_cap`` test examples
    (a fixed subset, so they do not dominate a short run's time); every epoch's end uses the whole split.
    ``wall_seconds`` counts training time only (evaluation pauses the clock) plus ``offset`` (for example the
    one-off feature extraction of a frozen arm). Rows live in the checkpoint."""

    columns = ("step", "epoch", "examples", "wall_seconds", "test_accuracy", "test_loss", "epoch_end", "test_count")
    fractions = (1 / 16, 1 / 8, 1 / 4, 1 / 2)

    def __init__(self, path: Path, data: Any, labels: torch.Tensor, within_epoch_cap: int | None = None) -> None:
        self.path, self.data, self.labels = path, data, labels  # data: the run's datamodule (loader, feature_seconds)
        self.cap = within_epoch_cap  # points before an epoch's end use at most this many test examples
        self.rows: list[dict[str, float]] = []
        self.examples, self.train_seconds, self.offset = 0, 0.0, 0.0
        self._tick = time.perf_counter()

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch_end: bool) -> None:
        self.train_seconds += time.perf_counter() - self._tick
        if not trainer.is_global_zero:  # rank 0 evaluates the whole test split; the others train on
            self._tick = time.perf_counter()
            return
        keep = None if epoch_end else fixed_subset(len(self.labels), self.cap)
        logits = run_inference(pl_module.net, self.data.loader("test", keep))
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
        self._evaluate(trainer, pl_module, epoch_end=True)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "examples": self.examples, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.examples, self.train_seconds = int(state_dict["examples"]), float(state_dict["train_seconds"])


class EpochBar(TQDMProgressBar):
    """Lightning's bar with epochs counted from 1 (``Epoch 1/3``), the epoch's training loss and validation
    accuracy beside it, and one log line per finished epoch (what stays on the terminal)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        m = trainer.callback_metrics
        if trainer.is_global_zero and "train_loss" in m and "val_accuracy" in m:
            log.info("epoch %d/%d: training loss %.4f, validation accuracy %.4f", trainer.current_epoch + 1,
                     trainer.max_epochs, float(m["train_loss"]), float(m["val_accuracy"]))


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically in their own folder (temporary file, fsync, rename: a full disk or a kill
    never leaves a truncated ``last.ckpt``) and read only with ``weights_only=True``; an unreadable one is one
    sentence. :meth:`check` reads a checkpoint before training starts and hands it to Lightning, so it is read
    once."""

    def __init__(self) -> None:
        super().__init__()
        self._read: tuple[str, dict[str, Any]] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def check(self, path: Path) -> int:
        """Read and check ``path`` now; returns the epoch (counted from 0) the checkpoint closed."""
        self._read = (str(path), read_checkpoint(path))
        return int(self._read[1]["epoch"])

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self._read is not None and self._read[0] == str(path):
            ckpt, self._read = self._read[1], None
            return ckpt
        return read_checkpoint(Path(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True``, or one sentence saying why it cannot be resumed."""
    hint = "delete it to restart from scratch, or start over with --overwrite"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a zip, a refused pickle: all mean "cannot resume from this"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} is not a readable checkpoint (truncated, corrupt or not a checkpoint: {first}); "
                        f"{hint}") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "epoch", "global_step"} <= set(ckpt):
        raise UserError(f"{path} is not a transferlab training checkpoint; {hint}")
    return ckpt


def trainer_devices(devices: str) -> int | str | list[int]:
    """``--devices`` as Lightning takes it: a count, "auto", or a list of device indices."""
    if devices == "auto":
        return devices
    parts = [int(p) for p in str(devices).split(",") if p.strip()]
    return parts[0] if len(parts) == 1 and "," not in str(devices) else parts


def runs_on_cpu(cfg: Any) -> bool:
    """Whether training will run on the CPU (``--accelerator cpu``, or no GPU to be had)."""
    return getattr(cfg, "accelerator", "auto") == "cpu" or not torch.cuda.is_available()


def make_trainer(out: Path, epochs: int, progress: bool, callbacks: list[L.Callback], cfg: Any = None) -> L.Trainer:
    """Lightning's Trainer with transferlab's checkpointing; ``cfg`` gives accelerator, devices, nodes, the
    distributed strategy and precision. Samplers are transferlab's own (``use_distributed_sampler=False``): the
    training order is sharded by :class:`EpochSampler` and evaluation is padded by :class:`Padded`, so that no
    example is dropped or counted twice."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    accelerator = getattr(cfg, "accelerator", "auto")
    on_cpu = runs_on_cpu(cfg)
    # the --distributed name and 16-mixed with --accelerator cpu were checked by FitConfig before any slow import;
    # 16-mixed with --accelerator auto on a machine without a GPU needs torch to tell
    if on_cpu and getattr(cfg, "precision", "32") == "16-mixed":
        raise UserError("--precision 16-mixed needs a GPU; on the CPU use bf16-mixed (or the default 32)")
    try:
        return _trainer(out, epochs, progress, callbacks, cfg, accelerator, on_cpu)
    except (MisconfigurationException, ValueError) as e:  # an accelerator, device count or strategy not available
        raise UserError(f"--accelerator/--devices/--num-nodes/--distributed: {str(e).splitlines()[0]}") from None


def _trainer(out: Path, epochs: int, progress: bool, callbacks: list[L.Callback], cfg: Any, accelerator: str,
             on_cpu: bool) -> L.Trainer:
    """Its ``checkpoint_io`` is an :class:`AtomicCheckpointIO`."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(  # checkpoints/last.ckpt after every epoch, once the epoch's rows are recorded
        dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=trainer_devices(getattr(cfg, "devices", "1")),
        num_nodes=getattr(cfg, "num_nodes", 1),
        strategy=getattr(cfg, "distributed", "auto"),
        precision=getattr(cfg, "precision", "32"),
        use_distributed_sampler=False,
        logger=False,
        callbacks=[*callbacks, ckpt, *([EpochBar()] if progress else [])],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
        deterministic=(True if on_cpu else "warn") if getattr(cfg, "deterministic", False) else None,
    )


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter and hints that do not apply here off the terminal."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # resume
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # frozen blocks, on purpose
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # validation sums are reduced by hand


@torch.inference_mode()
def run_inference(module: nn.Module, loader: DataLoader, desc: str = "", progress: bool = False) -> torch.Tensor:
    """Outputs of ``module`` over ``loader`` (eval mode, channels_last for image batches), concatenated."""
    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    outs = []
    for x, _ in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        x = x.to(device)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append(module(x).float().cpu().contiguous())
    return torch.cat(outs) if outs else torch.zeros(0)


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERLAB_CACHE_DIR", Path.home() / ".cache" / "transferlab"))


def cache_key(**parts: Any) -> str:
    """A stable key over everything that determines cached features."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_features(
    key: str, prefix: nn.Module, loaders: dict[str, DataLoader], progress: bool, rank: int = 0, world: int = 1
) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Outputs of the frozen ``prefix`` for every split: read from the cache, or computed once and stored.

    Under DDP (``world`` > 1, process group initialised) every process runs the prefix on its share of each split
    (every ``world``-th example), the shares are gathered, and rank 0 writes the cache: nothing is computed twice.
    Returns the features, whether they came from the cache, and the seconds their extraction took (recorded in
    the cache, so a cache hit still knows what the features cost).
    """
    path = cache_dir() / "features" / f"{key}.safetensors"
    hit = _read_cache(path, loaders)
    if world > 1:  # every process must take the same branch, or the gathering below waits forever
        import torch.distributed as dist

        hits: list[Any] = [None] * world
        dist.all_gather_object(hits, hit is not None)
        if not all(hits):
            hit = None
    if hit is not None:
        return hit
    tick = time.perf_counter()
    prefix = prefix.to(memory_format=torch.channels_last)
    if world > 1:
        import torch.distributed as dist

        feats = {}
        for split, dl in loaders.items():
            n = len(dl.dataset)
            if n == 0:
                feats[split] = torch.zeros(0)
                continue
            share = DataLoader(torch.utils.data.Subset(dl.dataset, range(rank, n, world)), batch_size=dl.batch_size,
                               collate_fn=dl.collate_fn, num_workers=dl.num_workers)
            mine = run_inference(prefix, share, f"features ({split}, rank {rank})", progress) if rank < n else None
            shares: list[Any] = [None] * world
            dist.all_gather_object(shares, mine)
            parts = [s for s in shares if s is not None]
            out = torch.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
            for r, s in enumerate(shares):
                if s is not None:
                    out[r::world] = s
            feats[split] = out
    else:
        feats = {split: run_inference(prefix, dl, f"features ({split})", progress) for split, dl in loaders.items()}
    seconds = time.perf_counter() - tick
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"seconds": f"{seconds:.4f}", "sha256": _cache_digest(feats)}
        atomic_write(path, lambda tmp: save_file(feats, str(tmp), metadata=meta))
    return feats, False, seconds


def _cache_digest(feats: dict[str, torch.Tensor]) -> str:
    """The checksum a cache entry records: by split name, whatever order the file gives them back in."""
    return tensors_digest(dict(sorted(feats.items())))


def _read_cache(path: Path, loaders: dict[str, DataLoader]) -> tuple[dict[str, torch.Tensor], bool, float] | None:
    """A cache entry whose payload matches its recorded checksum, or None (then it is recomputed, with a warning
    when the file was there but damaged)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        feats = load_file(str(path))
        problem = ("it holds other splits" if set(feats) != set(loaders) else
                   "its checksum does not match its contents" if meta.get("sha256") != _cache_digest(feats) else None)
    except Exception as e:  # a damaged cache file is recomputed, never trusted
        problem = f"it is unreadable: {(str(e).splitlines() or [type(e).__name__])[0][:120]}"
    if problem is not None:
        log.warning("recomputing the cached features in %s: %s", path, problem)
        return None
    log.info("features loaded from cache %s", path)
    return feats, True, float(meta.get("seconds", "nan"))
