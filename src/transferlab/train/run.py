"""One run: data -> source -> strategy -> train -> evaluate -> run directory. Every arm goes through here."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from transferlab.config import RUNTIME_OPTIONS, FitConfig
from transferlab.data import ImageData, SplitDataset, TextData, load_data
from transferlab.errors import UserError
from transferlab.evaluate import accuracy, confusion_matrix
from transferlab.files import (
    LOCK,
    atomic_write,
    check_overwritable,
    clear_output,
    disk_full,
    is_disk_full,
    is_global_zero,
    lock_folder,
    mark,
)
from transferlab.model import build_model
from transferlab.report import plot_confusion, write_csv
from transferlab.sources import Source
from transferlab.sources.base import state_fingerprint
from transferlab.sources.rundir import write_model
from transferlab.strategies import STRATEGIES, make_strategy
from transferlab.train.engine import (
    EpochSampler,
    EpochSeeded,
    LitClassifier,
    MetricsCSV,
    Padded,
    StopOnNonFinite,
    TestCurve,
    cache_key,
    cached_features,
    make_trainer,
    quiet_lightning,
    run_inference,
    runs_on_cpu,
)

log = logging.getLogger(__name__)
INFERENCE_BATCH = 64
CURVE_POINT_CAP = 500  # test examples behind each learning-curve point before an epoch's end (its end: all)
CPU_AUTO_MIN_SIZE = 64  # px: the smallest input size chosen automatically on a CPU


@dataclass
class RunResult:
    """What a finished run reports. The run directory holds the same and more."""

    out: Path
    test_accuracy: float
    test_loss: float
    wall_seconds: float
    cache_hit: bool | None
    classes: list[str]
    epochs: list[dict[str, float]] = field(default_factory=list)
    majority_baseline: float = float("nan")  # test accuracy of always predicting the commonest training class
    test_size: int = 0


def versions() -> dict[str, str]:
    import timm
    import torchvision

    import transferlab

    return {
        "transferlab": transferlab.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }


def prepare_out(out: Path, resume: bool, overwrite: bool, config: dict[str, Any]) -> bool:
    """Check the (locked) run directory and make it ready. Returns True when a finished run with this config is
    already there. ``--overwrite`` empties only a directory that is wholly a transferlab run."""
    config_path = out / "config.json"
    if any(p.name != LOCK for p in out.iterdir()):
        if resume:
            try:
                old = json.loads(config_path.read_text())["config"]
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"--resume: {out} holds no transferlab run (no readable config.json)") from None
            diff = [k for k in config if old.get(k) != config[k] and k not in RUNTIME_OPTIONS]
            if diff:
                raise UserError(
                    f"--resume: {out} was run with a different --{diff[0].replace('_', '-')} "
                    f"({old.get(diff[0])!r}, now {config[diff[0]]!r})"
                )
            mark(out, "run")  # a run directory written before markers existed
            return not (out / "INCOMPLETE").exists()
        if not overwrite:
            raise UserError(f"--out {out} already holds files: pass --resume to continue that run or --overwrite")
        check_overwritable(out, "run")
        clear_output(out)
    mark(out, "run")
    return False


def resolve_reuse(cfg: FitConfig, source: Source) -> int:
    n_blocks = len(source.blocks)
    known = n_blocks if source.reusable is None else source.reusable
    if cfg.reuse is not None and cfg.reuse > known:
        what = f"the {n_blocks} blocks" if known == n_blocks else f"the {known} pretrained block(s)"
        raise UserError(
            f"--reuse {cfg.reuse} exceeds {what} of {source.name} (see: transferlab sources --blocks {source.name})"
        )
    return known if cfg.reuse is None else cfg.reuse


def _runs_at(source: Source, size: int) -> bool:
    x = torch.zeros(1, 3, size, size)
    try:
        with torch.inference_mode():
            for block in source.blocks.values():
                x = block.eval()(x)
            source.pool(x)
    except (RuntimeError, ValueError):
        return False
    return True


def cpu_input_size(source: Source, data: ImageData, config: Path | None = None) -> int:
    """The input size when ``--image-size`` is not given and training runs on a CPU: the data's own resolution
    rounded up to a multiple of 32 px, at least :data:`CPU_AUTO_MIN_SIZE`, and never above the source's own size.
    Fashion-MNIST's 28 px images train EfficientNet-Lite0 at 64 px instead of 224 (about 12x less work per image;
    the accuracy cost is measured in the README). A resumed run keeps the size it started with (``config``)."""
    if config is not None and config.is_file():
        try:
            return int(json.loads(config.read_text())["resolved"]["preprocessing"]["input_size"])
        except (ValueError, KeyError, TypeError):
            pass
    own, native = source.preprocessing.input_size, data.train.native_size()
    size = min(own, max(CPU_AUTO_MIN_SIZE, -(-native // 32) * 32))
    if size < own:
        log.info("input size %d px (the data are %d px, %s's own is %d px; on a CPU transferlab picks the smaller: "
                 "--image-size %d for the source's own)", size, native, source.name, own, own)
    return size


def seconds_per_step(source: Source, data: ImageData, cfg: FitConfig, size: int | None) -> float:
    """Wall seconds of one training step (forward, backward, optimiser) of the whole model on one batch of
    ``data``: the median of three after a warm-up step. What ``compare`` estimates its duration from."""
    pre = source.preprocessing.resized(size)
    model = build_model(source, len(data.classes), None, pretrained=False).train()
    n = min(cfg.batch_size, len(data.train))
    ds = SplitDataset(data.train, pre.transform(False))
    batch = (pre.collate or torch.utils.data.default_collate)([ds[i] for i in range(n)])
    x, y = batch
    if cfg.channels_last and x.dim() == 4:  # as the training loop runs it
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seconds = []
    for _ in range(4):
        tick = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        seconds.append(time.perf_counter() - tick)
    return float(np.median(seconds[1:])) * cfg.batch_size / n


def check_input_size(source: Source, size: int) -> None:
    """Refuse an input size the source's blocks cannot process (e.g. Inception v3 below 75 px), naming the
    smallest that works (found by dry forwards of one blank image: doubling the size, then bisecting), before the
    run directory exists."""
    if size >= source.preprocessing.input_size or _runs_at(source, size):
        return
    low, high = size, size * 2  # small failing forwards are cheap: double up from the size, then bisect
    while not _runs_at(source, high):
        low, high = high, high * 2
        if high > 4096:
            raise UserError(f"--image-size {size}: {source.name} does not run on square images of any size up to "
                            "4096 px")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if _runs_at(source, mid) else (mid, high)
    raise UserError(f"--image-size {size} is too small for {source.name}: the smallest input it can process is "
                    f"{high} px")


def data_for(cfg: FitConfig, modality: str = "image") -> ImageData:
    """The dataset ``cfg`` names, loaded as the source's modality asks (split by ``split_seed``)."""
    return load_data(
        cfg.data, modality, seed=cfg.seed if cfg.split_seed is None else cfg.split_seed,
        val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, per_class=cfg.per_class, strict=cfg.strict,
        eval_per_class=cfg.eval_per_class, text_column=cfg.text_column, label_column=cfg.label_column,
        encoding_errors=cfg.encoding_errors,
    )


def open_source(cfg: FitConfig, pretrained: bool) -> Source:
    from transferlab.sources import load_source

    return load_source(cfg.source, pretrained=pretrained, weights=cfg.weights, max_vectors=cfg.max_vectors,
                       encoding_errors=cfg.encoding_errors)


def adapt_source(source: Source, data: ImageData, cfg: FitConfig) -> Source:
    """Check that source and data are of one modality; build a word-vector source for the data's vocabulary."""
    is_text = isinstance(data, TextData)
    if is_text != (source.modality == "text"):
        raise UserError(f"source {source.name} takes {source.modality} data but {data.name} is "
                        f"{'text' if is_text else 'images'}")
    if source.adapt is None:
        return source
    from transferlab.sources.text import build_vocab

    vocab, counts = build_vocab(data.corpus)
    return source.adapt(vocab, counts, cfg.text_model)


def make_loader(
    ds: torch.utils.data.Dataset, cfg: FitConfig, shuffle: bool, collate: Any = None, rank: int = 0, world: int = 1,
    pin_memory: bool = False, augment: bool = False,
) -> DataLoader:
    """Training batches at --batch-size in a seeded per-epoch order (this process's share of it under DDP), each
    example's augmentation seeded by (seed, epoch, index); inference at least 64 at a time (benchmarks/overhead.py:
    extraction is up to 9% faster at 64 than at 32 on 2 cores), under DDP every ``world``-th example of the split
    padded as :class:`Padded` says."""
    if shuffle:
        sampler, size = EpochSampler(len(ds), cfg.seed, rank, world), cfg.batch_size
        ds = EpochSeeded(ds, cfg.seed, reseed=augment)
    else:
        size = max(cfg.batch_size, INFERENCE_BATCH)
        sampler = None
        if world > 1:
            ds = Padded(ds, world)
            sampler = list(range(rank, len(ds), world))
    return DataLoader(ds, sampler=sampler, batch_size=size, num_workers=cfg.num_workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=cfg.num_workers > 0)


def plain_loaders(splits: dict[str, Any], pre: Any, cfg: FitConfig) -> dict[str, DataLoader]:
    """Every split, unaugmented and in order: what a frozen prefix's features are computed from."""
    return {s: make_loader(SplitDataset(d, pre.transform(False)), cfg, False, pre.collate) for s, d in splits.items()}


class RunData(L.LightningDataModule):
    """The run's loaders, built once Lightning knows this process's rank and world size. A frozen run's features
    are extracted here (shard by shard under DDP, through the cache) and the loaders then serve them."""

    def __init__(self, splits: dict[str, Any], pre: Any, cfg: FitConfig, augment: bool, progress: bool,
                 prefix: torch.nn.Module | None = None, key: str | None = None) -> None:
        super().__init__()
        self.splits, self.pre, self.cfg, self.augment, self.progress = splits, pre, cfg, augment, progress
        self.prefix, self.key = prefix, key
        self.feats: dict[str, torch.Tensor] | None = None
        self.cache_hit: bool | None = None
        self.feature_seconds = 0.0

    def _where(self) -> tuple[int, int, bool]:
        t = self.trainer
        if t is None:
            return 0, 1, False
        pin = self.cfg.pin_memory if self.cfg.pin_memory is not None else t.strategy.root_device.type == "cuda"
        return t.global_rank, t.world_size, pin

    def setup(self, stage: str | None = None) -> None:
        if self.prefix is not None and self.feats is None:
            rank, world, _ = self._where()
            if self.trainer is not None:
                self.prefix.to(self.trainer.strategy.root_device)
            self.feats, self.cache_hit, self.feature_seconds = cached_features(
                self.key, self.prefix, plain_loaders(self.splits, self.pre, self.cfg), self.progress, rank, world)
            self.prefix.cpu()

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        if self.feats is not None:
            return TensorDataset(self.feats[split], torch.as_tensor(self.splits[split].labels))
        return SplitDataset(self.splits[split], self.pre.transform(augment))

    def _collate(self) -> Any:
        return None if self.feats is not None else self.pre.collate

    def train_dataloader(self) -> DataLoader:
        rank, world, pin = self._where()
        return make_loader(self.dataset("train", self.augment), self.cfg, True, self._collate(), rank, world, pin,
                           augment=self.augment and self.feats is None)

    def val_dataloader(self) -> DataLoader:
        rank, world, pin = self._where()
        return make_loader(self.dataset("val"), self.cfg, False, self._collate(), rank, world, pin)

    def loader(self, split: str, keep: np.ndarray | None = None) -> DataLoader:
        """The whole split (or the positions ``keep`` of it) in one process: test curves and the final test."""
        ds = self.dataset(split)
        return make_loader(ds if keep is None else Subset(ds, keep.tolist()), self.cfg, False, self._collate())


def feature_key(prefix: torch.nn.Module, source: Source, reuse: int | str, splits: dict[str, Any], pre: Any) -> str:
    """The feature cache's key: the exact prefix weights, the cut, the data and the preprocessing."""
    return cache_key(
        prefix=state_fingerprint(prefix),
        architecture=source.architecture,
        cut=reuse,
        data={s: d.fingerprint() for s, d in splits.items()},
        preprocessing=pre.to_dict(),
    )


def frozen_features(
    prefix: torch.nn.Module, source: Source, reuse: int | str, splits: dict[str, Any], pre: Any, cfg: FitConfig,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Outputs of a frozen ``prefix`` (the first ``reuse`` blocks) on ``splits`` through the on-disk cache, in one
    process (``rank`` uses this; ``fit`` goes through :class:`RunData`, which shards it under DDP)."""
    return cached_features(feature_key(prefix, source, reuse, splits, pre), prefix, plain_loaders(splits, pre, cfg),
                           progress)


def fit(
    cfg: FitConfig,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: ImageData | None = None,
    source: Source | None = None,
) -> RunResult:
    """Train one model as ``cfg`` says and write a run directory at ``out``.

    ``data`` and ``source`` may be passed in already loaded (``compare`` loads them once for many runs).
    """
    quiet_lightning()
    out = Path(out)
    make_trainer(out, cfg.epochs, False, [], cfg)  # an unusable accelerator, device count or strategy: fail now
    if source is None:
        source = open_source(cfg, STRATEGIES.get(cfg.strategy).pretrained)
    lr, backbone_lr_mult = cfg.learning_rates(source.modality)
    strategy = make_strategy(cfg.strategy, backbone_lr_mult=backbone_lr_mult, freeze_bn=cfg.freeze_bn)
    if data is None:
        data = data_for(cfg, source.modality)
    source = adapt_source(source, data, cfg)
    if len(data.test) == 0:
        raise UserError(f"the test split of {data.name} is empty: transferlab measures every run on held-out data; "
                        "raise --test-fraction or give a test split")
    reuse = resolve_reuse(cfg, source)
    size = cfg.image_size
    if size is None and source.modality == "image" and runs_on_cpu(cfg):
        size = cpu_input_size(source, data, out / "config.json" if resume else None)
    pre = source.preprocessing.resized(size)
    if source.modality == "image" and size is not None:
        check_input_size(source, pre.input_size)
    resolved = {
        "config": cfg.to_dict(),
        "resolved": {
            "reuse": reuse,
            "lr": lr,
            "blocks": list(source.blocks),
            "preprocessing": {k: v for k, v in pre.to_dict().items() if k != "vocab"},  # the card has the vocab
            **source.info,
            "source_weights": source.weights_origin if strategy.pretrained else "random init",
            "strategy": {"name": strategy.name, **strategy.params()},
            "classes": data.classes,
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "skipped_files": len(data.skipped),
        },
        "versions": versions(),
    }
    # under DDP every process runs this function; only rank 0 locks and writes the run directory (Lightning's own
    # rank is not set before fit, so it comes from the launcher's environment)
    zero = is_global_zero()
    lock = lock_folder(out) if zero else None
    try:
        return _train(cfg, out, resume, overwrite, progress, data, source, strategy, reuse, pre, lr, resolved, zero)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(e.filename or out) from None
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: FitConfig, out: Path, resume: bool, overwrite: bool, progress: bool, data: ImageData,
           source: Source, strategy: Any, reuse: int, pre: Any, lr: float, resolved: dict[str, Any],
           zero: bool) -> RunResult:
    """The part of :func:`fit` that runs with the run directory locked."""
    if zero:
        if prepare_out(out, resume, overwrite, resolved["config"]):
            log.info("%s is already complete; nothing to resume", out)
            return load_result(out)
        atomic_write(out / "INCOMPLETE", "this run has not finished; `--resume` continues it\n")
        atomic_write(out / "config.json", json.dumps(resolved, indent=2))
        if data.skipped:
            write_csv(out / "skipped_files.csv", ["path", "reason"], data.skipped)
    elif resume and (out / "model.json").is_file() and not (out / "INCOMPLETE").exists():
        return load_result(out)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(source, len(data.classes), reuse, pretrained=strategy.pretrained)
    groups = strategy.prepare(model, reuse, lr)
    splits = {"train": data.train, "val": data.val, "test": data.test}
    if strategy.frozen_prefix and cfg.cache and (reuse == len(source.blocks) or source.cache_partial):
        prefix = model.prefix(reuse)
        dm = RunData(splits, pre, cfg, False, progress, prefix, feature_key(prefix, source, reuse, splits, pre))
        net = model.tail(reuse)
    else:
        dm = RunData(splits, pre, cfg, strategy.augment, progress)
        net = model

    lit = LitClassifier(net, groups, cfg.weight_decay, lambda epoch: strategy.on_epoch_start(model, epoch),
                        channels_last=cfg.channels_last and pre.modality == "image", compile=cfg.compile,
                        seed=cfg.seed)
    metrics = MetricsCSV(out / "metrics.csv")
    callbacks: list[L.Callback] = [StopOnNonFinite(lr), metrics]
    if cfg.curve:
        callbacks.append(TestCurve(out / "curve.csv", dm, torch.as_tensor(data.test.labels), CURVE_POINT_CAP))
    trainer = make_trainer(out, cfg.epochs, progress, callbacks, cfg)
    last = out / "checkpoints" / "last.ckpt"
    ckpt = str(last) if resume and last.is_file() else None
    if ckpt is not None:  # a damaged checkpoint is one sentence now, before any data is touched
        epoch = trainer.strategy.checkpoint_io.check(last)
        log.info("resuming %s after epoch %d of %d", out, epoch + 1, cfg.epochs)
    try:
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1): the directory stays marked INCOMPLETE
        raise KeyboardInterrupt from None
    if trainer.interrupted:
        raise KeyboardInterrupt
    cache_hit, feature_seconds = dm.cache_hit, dm.feature_seconds
    if not trainer.is_global_zero:
        return RunResult(out, float("nan"), float("nan"), 0.0, cache_hit, data.classes, metrics.rows)

    if dm.feats is None and dm.prefix is not None:  # resumed after the last epoch: setup never ran
        dm.setup()
    net.to(trainer.strategy.root_device)  # Lightning hands the model back on the CPU: test where it trained
    logits = run_inference(net, dm.loader("test"), "test", progress)
    y = np.asarray(data.test.labels)
    pred = logits.argmax(1).numpy()
    test_loss = float(F.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long)))
    if not (torch.isfinite(logits).all() and np.isfinite(test_loss)):
        raise UserError(f"training diverged: the model's test outputs are NaN or infinite; lower --lr (now {lr:g}) "
                        "and start over with --overwrite")
    test_acc = accuracy(y, pred)
    majority = accuracy(y, np.full_like(y, data.majority_class()))  # the commonest class before balancing
    plot_confusion(confusion_matrix(y, pred, len(data.classes)), data.classes, out / "confusion_matrix.png")
    wall = metrics.rows[-1]["wall_seconds"] if metrics.rows else 0.0
    card = {
        "complete": True,
        "architecture": source.architecture,
        "block_names": list(source.blocks),
        "num_features": source.num_features,
        "classes": data.classes,
        "modality": source.modality,
        "preprocessing": pre.to_dict(),
        "source": source.name,
        **source.info,
        "source_weights": resolved["resolved"]["source_weights"],
        "strategy": strategy.name,
        "blocks_reused": list(source.blocks)[:reuse] if strategy.pretrained else [],
        "metrics": {
            "test_accuracy": test_acc, "test_loss": test_loss, "train_wall_seconds": wall,
            "majority_baseline": majority, "chance": 1 / len(data.classes), "test_size": len(y),
        },
        "feature_cache_hit": cache_hit,
        "feature_seconds": feature_seconds,
        "data": cfg.data,
    }
    write_model(out, model, card)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only an unfinished run needs them
    (out / "INCOMPLETE").unlink()
    return RunResult(out, test_acc, test_loss, wall, cache_hit, data.classes, metrics.rows, majority, len(y))


def load_result(out: Path) -> RunResult:
    """The result of a finished run directory, read back from its files."""
    from transferlab.sources.rundir import read_card

    card = read_card(out)
    rows = []
    metrics_path = out / "metrics.csv"
    if metrics_path.is_file():
        lines = metrics_path.read_text().splitlines()
        head = lines[0].split(",")
        rows = [dict(zip(head, map(float, line.split(",")), strict=True)) for line in lines[1:]]
    m = card["metrics"]
    return RunResult(
        out, m["test_accuracy"], m["test_loss"], m["train_wall_seconds"], card.get("feature_cache_hit"),
        card["classes"], rows, m["majority_baseline"], m["test_size"],
    )
