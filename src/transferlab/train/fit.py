"""One run: data -> source -> strategy -> train -> evaluate -> run directory. Every arm of every experiment, in
every modality, goes through :func:`fit`; what differs lives in the modality, the source and the strategy."""

from __future__ import annotations

import json
import logging
import math
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

from transferlab import modality as modalities
from transferlab import preflight
from transferlab._version import __version__
from transferlab.config import RUNTIME_OPTIONS, FitConfig, parse_strategy
from transferlab.data.splits import Data, SplitDataset
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
from transferlab.modality import Modality
from transferlab.report import plot_confusion, write_csv
from transferlab.sources import Source, load_source
from transferlab.sources.rundir import read_card, write_card, write_model
from transferlab.train.callbacks import MetricsCSV, StopOnNonFinite, TestCurve
from transferlab.train.datamodule import RunData, feature_key
from transferlab.train.features import run_inference
from transferlab.train.module import LitClassifier
from transferlab.train.trainer import make_trainer, quiet_lightning, runs_on_cpu
from transferlab.transfer.model import build_model
from transferlab.transfer.strategies import STRATEGIES, make_strategy

log = logging.getLogger(__name__)
CURVE_POINT_CAP = 500  # test examples behind each learning-curve point before an epoch's end (its end: all)


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
    parameters: dict[str, int] = field(default_factory=dict)  # trained and total parameter counts


def versions() -> dict[str, str]:
    import timm
    import torchvision

    return {
        "transferlab": __version__,
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
    """``--reuse``, or by default every block that carries the source's knowledge; beyond them is an error."""
    n_blocks, known = len(source.blocks), source.default_reuse
    if cfg.reuse is not None and cfg.reuse > known:
        what = f"the {n_blocks} blocks" if known == n_blocks else f"the {known} pretrained block(s)"
        raise UserError(
            f"--reuse {cfg.reuse} exceeds {what} of {source.name} (see: transferlab sources --blocks {source.name})"
        )
    return known if cfg.reuse is None else cfg.reuse


def modality_of(cfg: FitConfig, sources: list[str] | None = None) -> Modality | None:
    """The modality the data and sources name without loading anything (None: only the loaded source can tell)."""
    name = preflight.resolve_modality(cfg.data, sources or [cfg.source])
    return None if name is None else modalities.get(name)


def open_source(cfg: FitConfig, pretrained: bool) -> Source:
    return load_source(cfg.source, pretrained=pretrained, weights=cfg.weights, max_vectors=cfg.max_vectors,
                       encoding_errors=cfg.encoding_errors)


def bind_source(modality: Modality, source: Source, data: Data, cfg: FitConfig) -> Source:
    """``source`` ready for ``data``: of the data's modality, and bound to it as the modality says."""
    if source.modality != modality.name:
        takes = modalities.get(source.modality).word
        raise UserError(f"source {source.name} takes {takes} but {data.name} holds {modality.word}")
    return modality.bind(source, data, cfg)


def seconds_per_step(source: Source, data: Data, cfg: FitConfig, pre: Any) -> float:
    """Wall seconds of one training step (forward, backward, optimiser) of the whole model on one batch of
    ``data``: the median of three after a warm-up step. What ``compare`` estimates its duration from."""
    model = build_model(source, len(data.classes), None, pretrained=False).train()
    n = min(cfg.batch_size, len(data.train))
    ds = SplitDataset(data.train, pre.transform(False))
    x, y = (pre.collate or torch.utils.data.default_collate)([ds[i] for i in range(n)])
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


def recorded_preprocessing(out: Path) -> dict[str, Any] | None:
    """The preprocessing a run's config.json says it used (a resumed run keeps it), or None."""
    try:
        return json.loads((out / "config.json").read_text())["resolved"]["preprocessing"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fit(
    cfg: FitConfig,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: Data | None = None,
    source: Source | None = None,
    modality: Modality | None = None,
) -> RunResult:
    """Train one model as ``cfg`` says and write a run directory at ``out``.

    The data are read and checked before any model loads. ``data``, ``source`` and ``modality`` may be passed in
    already loaded (``compare`` loads them once for many runs); a source passed in is bound to the data here.
    """
    quiet_lightning()
    out = Path(out)
    world = make_trainer(out, cfg.epochs, False, [], cfg).world_size  # an unusable accelerator...: fail now
    pretrained = STRATEGIES.get(parse_strategy(cfg.strategy)[0]).pretrained
    modality = modality or modality_of(cfg)
    if modality is None:  # neither the data nor the source's name tell: the loaded source does
        source = source or open_source(cfg, pretrained)
        modality = modalities.get(source.modality)
    data = data if data is not None else modality.load(cfg)
    if len(data.test) == 0:
        raise UserError(f"the test split of {data.name} is empty: transferlab measures every run on held-out data; "
                        "raise --test-fraction or give a test split")
    source = bind_source(modality, source or open_source(cfg, pretrained), data, cfg)
    lr, backbone_lr_mult = cfg.learning_rates(modality.default_lr)
    strategy = make_strategy(cfg.strategy, backbone_lr_mult=backbone_lr_mult, freeze_bn=cfg.freeze_bn)
    reuse = resolve_reuse(cfg, source)
    strategy.check(list(source.blocks.values())[:reuse])  # e.g. lora on a CNN: refused before the run directory
    pre = modality.preprocessing(source, data, cfg, runs_on_cpu(cfg), recorded_preprocessing(out) if resume else None)
    resolved = {
        "config": cfg.to_dict(),
        "resolved": {
            "modality": modality.name,
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
        return _train(cfg, out, resume, overwrite, progress, data, source, modality, strategy, reuse, pre, lr,
                      resolved, zero, world)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(e.filename or out) from None
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: FitConfig, out: Path, resume: bool, overwrite: bool, progress: bool, data: Data, source: Source,
           modality: Modality, strategy: Any, reuse: int, pre: Any, lr: float, resolved: dict[str, Any],
           zero: bool, world: int) -> RunResult:
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
    groups = strategy.attach(model, reuse, lr, world)
    splits = data.splits()
    if strategy.frozen_prefix and cfg.cache and (reuse == len(source.blocks) or source.cache_partial):
        prefix = model.prefix(reuse)
        dm = RunData(splits, pre, cfg, False, progress, prefix, feature_key(prefix, source, reuse, splits, pre))
        net = model.tail(reuse)
    else:
        dm = RunData(splits, pre, cfg, strategy.augment, progress)
        net = model

    lit = LitClassifier(net, groups, cfg.weight_decay, channels_last=cfg.channels_last and modality.channels_last,
                        compile=cfg.compile, seed=cfg.seed, penalty=strategy.penalty,
                        wants_features=strategy.wants_features)
    metrics = MetricsCSV(out / "metrics.csv")
    callbacks: list[L.Callback] = [strategy, StopOnNonFinite(lr), metrics]
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
    parameters = {"trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "total": sum(p.numel() for p in model.parameters())}
    strategy.finalize(model)  # e.g. LoRA adapters merged: the saved model is the source's architecture
    card = {
        "complete": True,
        "architecture": source.architecture,
        "block_names": list(source.blocks),
        "num_features": source.num_features,
        "classes": data.classes,
        "modality": modality.name,
        "preprocessing": pre.to_dict(),
        "source": source.name,
        **source.info,
        "source_weights": resolved["resolved"]["source_weights"],
        "strategy": strategy.name,
        "blocks_reused": list(source.blocks)[:reuse] if strategy.pretrained else [],
        "parameters": parameters,
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
    return RunResult(out, test_acc, test_loss, wall, cache_hit, data.classes, metrics.rows, majority, len(y),
                     parameters)


def load_result(out: Path) -> RunResult:
    """The result of a finished run directory, read back from its files."""
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
        card["classes"], rows, m["majority_baseline"], m["test_size"], card.get("parameters", {}),
    )


def pretrain(cfg: FitConfig, out: Path, **kwargs: Any) -> tuple[RunResult, dict[str, Any]]:
    """The develop model approach: train ``cfg.source`` from scratch on a source task and check that it learned.

    The run directory is a source for every command. Its card gains ``source_check``: test accuracy next to the
    majority-class baseline and chance, and whether the model is clearly better than the baseline (beyond two
    binomial standard errors); a source that learned nothing transfers nothing."""
    result = fit(cfg.replace(strategy="scratch"), out, **kwargs)
    if not is_global_zero():  # under DDP rank 0 checks and writes
        return result, {}
    base = result.majority_baseline
    margin = 2 * math.sqrt(max(base * (1 - base), 1e-12) / max(result.test_size, 1))
    check = {
        "test_accuracy": result.test_accuracy,
        "majority_baseline": base,
        "chance": 1 / len(result.classes),
        "clearly_better_than_naive": result.test_accuracy > base + margin,
        "margin": margin,
    }
    card = read_card(Path(out))
    card["source_check"] = check
    write_card(Path(out), card)
    if not check["clearly_better_than_naive"]:
        log.warning("the pretrained source is not clearly better than always predicting the commonest class")
    return result, check
