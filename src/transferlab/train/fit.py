"""One run: data -> source -> strategy -> train -> evaluate -> run directory. Every arm of every experiment, in
every modality, goes through :func:`fit`; what differs lives in the modality, the source and the strategy."""

from __future__ import annotations

import contextlib
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

from transferlab import catalogue, files, preflight
from transferlab import modality as modalities
from transferlab._version import __version__
from transferlab.config import ABSENT, RUNTIME_OPTIONS, FitConfig, first_difference
from transferlab.data.splits import Data, SplitDataset, fold_data
from transferlab.errors import UserError
from transferlab.evaluate import METRICS, classification_report, score
from transferlab.files import (
    LOCK,
    atomic_write,
    check_overwritable,
    clear_output,
    disk_full,
    is_disk_full,
    is_global_zero,
    mark,
    marker_kind,
    read_json,
)
from transferlab.modality import Modality
from transferlab.report import plot_confusion, write_csv
from transferlab.sources import Source, load_source
from transferlab.train.budget import Budget, outcome
from transferlab.train.callbacks import Interrupted, MetricsCSV, StopFlag, StopOnNonFinite, TestCurve, read_rows
from transferlab.train.datamodule import RunData, extracted, feature_key
from transferlab.train.module import LitClassifier
from transferlab.train.trainer import make_trainer, quiet_lightning, read_checkpoint, runs_on_cpu
from transferlab.transfer.model import build_model, run_inference
from transferlab.transfer.rundir import CARD, card_metrics, read_card, write_card, write_model
from transferlab.transfer.strategies import make_strategy

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
    training: dict[str, Any] = field(default_factory=dict)  # the budget and where the best validation was
    metric: str = "accuracy"  # what test_score and naive_score measure (--metric)
    test_score: float = float("nan")  # the test split by --metric (accuracy: test_accuracy)
    naive_score: float = float("nan")  # the same of always predicting the commonest training class
    calibration: dict[str, Any] = field(default_factory=dict)  # the temperature and the test ECE before/after it
    val_score: float | None = None  # the kept model's validation split by --metric (None: no validation split)


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


def read_config(out: Path) -> dict[str, Any] | None:
    """A run directory's ``config.json`` as written by :func:`fit` (None: there is none), its shape checked."""
    path = out / "config.json"
    if not path.exists():
        return None
    recorded = read_json(path, "run configuration")
    if not (isinstance(recorded, dict) and isinstance(recorded.get("config"), dict)
            and isinstance(recorded.get("resolved"), dict)):
        raise UserError(f"{path} is not a transferlab run configuration (was it edited?); --overwrite starts the run "
                        "over")
    return recorded


def check_run_dir(out: Path, resume: bool, overwrite: bool, config: dict[str, Any]) -> bool:
    """Check the (locked) run directory before anything is loaded. Returns True when a finished run with this
    config is already there. Nothing is deleted here: ``--overwrite`` empties the directory (only when it is
    wholly a transferlab run) once the new run is ready to start."""
    if not any(p.name != LOCK for p in out.iterdir()):
        return False
    if resume:
        recorded = read_config(out)
        if recorded is None:  # stopped before its configuration was written (a full disk): nothing to resume
            if marker_kind(out) == "run" and not (out / "model.json").exists():
                check_overwritable(out, "run")
                return False
            raise UserError(f"--resume: {out} holds no transferlab run (no config.json)")
        what = [{k: v for k, v in c.items() if k not in RUNTIME_OPTIONS} for c in (recorded["config"], config)]
        diff = first_difference(*what)
        if diff is not None:
            key, was, now = diff
            option = "--" + key.split(".")[0].replace("_", "-")
            raise UserError(f"--resume: {out} was run with a different {option} ({was!r}, now {now!r})"
                            + ("; it was trained by an earlier transferlab without that option, --overwrite trains "
                               "it again" if was is ABSENT else ""))
        check_strategy_record(out, recorded["resolved"].get("strategy"), config["strategy"])
        check_scaling_record(out, recorded["resolved"], config)
        mark(out, "run")  # a run directory written before markers existed
        return not (out / "INCOMPLETE").exists()
    if not overwrite:
        raise UserError(f"--out {out} already holds files: pass --resume to continue that run or --overwrite")
    check_overwritable(out, "run")
    return False


def check_strategy_record(out: Path, recorded: Any, spec: str) -> None:
    """A run whose recorded strategy lacks an option the strategy declares now was trained by an earlier
    transferlab that did without it (LoRA's adapters trained at the head's rate before ``backbone_lr_mult``): its
    numbers are not this version's, so resuming or reusing it is refused."""
    name = catalogue.parse_strategy(spec)[0]
    if isinstance(recorded, dict) and recorded.get("name") == name:
        missing = [o for o in catalogue.strategy(name).options if o not in recorded]
        if missing:
            raise UserError(f"--resume: {out} was trained by an earlier transferlab whose {name} had no {missing[0]} "
                            "option and trained otherwise; --overwrite trains it again")


def check_scaling_record(out: Path, resolved: dict[str, Any], config: dict[str, Any]) -> None:
    """A table run from random weights on a developed source scales on its own training split; one trained before
    that (its recorded scaling the source's) is refused like any run of an earlier behaviour. Scratch on the very
    table and split the source was developed on is refused too (the two scalings are then one): --overwrite."""
    spec = str(config["source"])
    random = spec.startswith("scratch:") or not catalogue.starts_pretrained(config["strategy"])
    card = Path(spec.removeprefix("scratch:")) / CARD
    if resolved.get("modality") != "tabular" or not random or not card.is_file():  # built-in MLPs always did
        return
    found = read_json(card, "source card")
    ran, source = resolved.get("preprocessing"), found.get("preprocessing") if isinstance(found, dict) else None
    if isinstance(ran, dict) and isinstance(source, dict) and all(ran.get(k) == source.get(k) for k in ("mean", "std")):
        raise UserError(f"--resume: {out} was trained by an earlier transferlab that scaled the table's columns as its "
                        f"source {spec.removeprefix('scratch:')} did, although its weights were random; --overwrite "
                        "trains it again, scaled on its own training split")


def resolve_reuse(cfg: FitConfig, source: Source) -> int:
    """``--reuse``, or by default every block that carries the source's knowledge; beyond them is an error."""
    n_blocks, known = len(source.blocks), source.default_reuse
    if cfg.reuse is not None and cfg.reuse > known:
        what = f"the {n_blocks} blocks" if known == n_blocks else f"the {known} pretrained block(s)"
        raise UserError(
            f"--reuse {cfg.reuse} exceeds {what} of {source.name} (see: transferlab sources --blocks {source.name})"
        )
    return known if cfg.reuse is None else cfg.reuse


def open_source(cfg: FitConfig, pretrained: bool) -> Source:
    return load_source(cfg.source, pretrained=pretrained, weights=cfg.weights, max_vectors=cfg.max_vectors,
                       encoding_errors=cfg.encoding_errors)


def bind_source(modality: Modality, source: Source, data: Data, cfg: FitConfig) -> Source:
    """``source`` ready for ``data``: of the data's modality, and bound to it as the modality says."""
    if source.modality != modality.name:
        takes = modalities.get(source.modality).word
        raise UserError(f"source {source.name} takes {takes} but {data.name} holds {modality.word}")
    return modality.bind(source, data, cfg)


def seconds_per_step(source: Source, data: Data, cfg: FitConfig, pre: Any, channels_last: bool = False) -> float:
    """Wall seconds of one training step (forward, backward, optimiser) of the whole model on one batch of
    ``data`` (images in the channels_last layout when asked): the median of three after a warm-up step. What
    ``compare`` estimates its duration from."""
    model = build_model(source, len(data.classes), None, pretrained=False).train()
    n = min(cfg.batch_size, len(data.train))
    ds = SplitDataset(data.train, pre.transform(False))
    x, y = (pre.collate or torch.utils.data.default_collate)([ds[i] for i in range(n)])
    if channels_last:  # as the training loop runs it
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
    recorded = read_config(out)
    pre = None if recorded is None else recorded["resolved"].get("preprocessing")
    return pre if isinstance(pre, dict) else None


@dataclass
class Prepared:
    """Everything one run needs, decided (and checked) before its run directory is written."""

    cfg: FitConfig
    out: Path
    data: Data
    source: Source
    modality: Modality
    strategy: Any
    reuse: int
    pre: Any
    lr: float
    world: int
    budget: Budget
    resolved: dict[str, Any]


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
    locked: bool = False,
    callbacks: tuple[L.Callback, ...] = (),
) -> RunResult:
    """Train one model as ``cfg`` says and write a run directory at ``out``.

    The run directory is locked first (``locked``: the caller holds its lock already), then the data are read and
    checked, then the source loads. ``data``, ``source`` and ``modality`` may be passed in already loaded
    (``compare`` loads them once for many runs); a source passed in is bound to the data here. ``callbacks``:
    more Lightning callbacks for the trainer (``advise`` reports each validation to its study).
    """
    quiet_lightning()
    out = Path(out)
    zero = is_global_zero()  # under DDP every process runs this; only rank 0 locks and writes the run directory
    with contextlib.nullcontext() if locked else files.locked(out):
        if zero and check_run_dir(out, resume, overwrite, cfg.to_dict()):
            log.info("%s is already complete; nothing to resume", out)
            return load_result(out)
        if not zero and resume and (out / "model.json").is_file() and not (out / "INCOMPLETE").exists():
            return load_result(out)
        run = prepare(cfg, out, resume, data, source, modality)
        try:
            return _train(run, resume, overwrite, progress, zero, callbacks)
        except OSError as e:
            if is_disk_full(e):
                raise disk_full(e.filename or out) from None
            raise


def prepare(cfg: FitConfig, out: Path, resume: bool, data: Data | None, source: Source | None,
            modality: Modality | None) -> Prepared:
    """Data, source, strategy, preprocessing and budget of a run: every error a run can meet before it trains."""
    world = make_trainer(out, None, False, [], cfg).world_size  # an unusable accelerator, device count...: now
    pretrained = catalogue.starts_pretrained(cfg.strategy)
    if source is not None and source.pretrained and not pretrained:
        source = source.fresh()  # random weights, and a source that says so (a table then scales on its own rows)
    modality = modality or preflight.decide_modality(cfg.data, [cfg.source])
    if modality is None:  # neither the data nor the source's name tell: the loaded source does
        source = source or open_source(cfg, pretrained)
        modality = preflight.decide_modality(cfg.data, [], {cfg.source: source.modality})
    data = data if data is not None else modality.load(cfg)
    if cfg.fold is not None:
        data = fold_data(data, cfg.fold, cfg.data_seed)
    if len(data.test) == 0:
        raise UserError(f"the test split of {data.name} is empty: transferlab measures every run on held-out data; "
                        "raise --test-fraction or give a test split")
    if len(data.val) == 0 and cfg.epochs is None and cfg.max_steps is None:
        raise UserError(f"the validation split of {data.name} is empty, so transferlab cannot tell when training has "
                        "converged: give more examples, raise --val-fraction, or fix the budget with --epochs")
    source = bind_source(modality, source or open_source(cfg, pretrained), data, cfg)
    lr, backbone_lr_mult = cfg.learning_rates(modality.default_lr)
    strategy = make_strategy(cfg.strategy, backbone_lr_mult=backbone_lr_mult, freeze_bn=cfg.freeze_bn)
    reuse = resolve_reuse(cfg, source)
    strategy.check(list(source.blocks.values())[:reuse])  # e.g. lora on a CNN: refused before the run directory
    pre = modality.preprocessing(source, data, cfg, runs_on_cpu(cfg), recorded_preprocessing(out) if resume else None)
    budget = Budget.of(cfg, len(data.train), world, has_val=len(data.val) > 0)
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
            "budget": {"rule": budget.rule(), **budget.to_dict()},
        },
        "versions": versions(),
    }
    return Prepared(cfg, out, data, source, modality, strategy, reuse, pre, lr, world, budget, resolved)


def _train(run: Prepared, resume: bool, overwrite: bool, progress: bool, zero: bool,
           extra: tuple[L.Callback, ...] = ()) -> RunResult:
    """The part of :func:`fit` that writes the (locked) run directory: train, restore the best validation's
    weights, test, save."""
    cfg, out, data, source, strategy, reuse, pre, budget = (run.cfg, run.out, run.data, run.source, run.strategy,
                                                             run.reuse, run.pre, run.budget)
    if zero:
        if overwrite and any(p.name != LOCK for p in out.iterdir()):
            clear_output(out)  # checked by check_run_dir; nothing else writes here while the lock is held
        mark(out, "run")
        atomic_write(out / "INCOMPLETE", "this run has not finished; `--resume` continues it\n")
        atomic_write(out / "config.json", json.dumps(run.resolved, indent=2))
        if data.skipped:
            write_csv(out / "skipped_files.csv", ["path", "reason"], data.skipped)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(source, len(data.classes), reuse, pretrained=strategy.pretrained)
    groups = strategy.attach(model, reuse, run.lr, run.world)
    splits = data.splits()
    images = cfg.channels_last and run.modality.channels_last  # the memory layout is the modality's to ask for
    if strategy.frozen_prefix and cfg.cache and (reuse == len(source.blocks) or source.cache_partial):
        prefix = model.prefix(reuse)
        key = feature_key(prefix, source, reuse, extracted(splits, data.fold_of), pre)
        dm = RunData(splits, pre, cfg, False, progress, prefix, key, channels_last=images, fold_of=data.fold_of)
        net = model.tail(reuse)
        maps = reuse < len(source.blocks)  # a partial prefix's cached outputs are feature maps, a whole one's vectors
    else:
        dm = RunData(splits, pre, cfg, strategy.augment, progress)
        net, maps = model, True

    lit = LitClassifier(net, groups, cfg.weight_decay, channels_last=images and maps,
                        compile=cfg.compile, seed=cfg.seed, penalty=strategy.penalty,
                        wants_features=strategy.wants_features,
                        plateau=budget.val_every if budget.early_stopping else None,
                        class_weights=balanced_weights(data.train.labels, len(data.classes))
                        if cfg.class_weight == "balanced" else None)
    metrics = MetricsCSV(out / "metrics.csv")
    callbacks: list[L.Callback] = [strategy, StopOnNonFinite(run.lr), metrics, StopFlag(), *extra]
    if cfg.curve:
        callbacks.append(TestCurve(out / "curve.csv", dm, torch.as_tensor(data.test.labels), CURVE_POINT_CAP,
                                   cfg.metric))
    trainer = make_trainer(out, budget, progress, callbacks, cfg)
    last = out / "checkpoints" / "last.ckpt"
    ckpt = str(last) if resume and last.is_file() else None
    if ckpt is not None:  # a damaged or foreign checkpoint is one sentence now, before any data is touched
        epoch = trainer.strategy.checkpoint_io.check(last, lit.state_dict())
        log.info("resuming %s after epoch %d of %d", out, epoch + 1, budget.max_epochs)
    try:
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1): the directory stays marked INCOMPLETE
        raise Interrupted(trainer.current_epoch + 1) from None
    if trainer.interrupted:
        raise Interrupted(trainer.current_epoch + 1)
    cache_hit, feature_seconds = dm.cache_hit, dm.feature_seconds
    if not trainer.is_global_zero:
        return RunResult(out, float("nan"), float("nan"), 0.0, cache_hit, data.classes, metrics.rows)

    training = restore_best(trainer, lit, budget, metrics.rows)
    strategy.before_test(model)  # e.g. WiSE-FT's weight average
    if dm.feats is None and dm.prefix is not None:  # resumed after the last epoch: setup never ran
        dm.setup()
    net.to(trainer.strategy.root_device)  # Lightning hands the model back on the CPU: test where it trained
    logits = run_inference(net, dm.loader("test"), "test", progress, lit.channels_last)
    y = np.asarray(data.test.labels)
    pred = logits.argmax(1).numpy()
    val_y = np.asarray(data.val.labels)
    val_logits = run_inference(net, dm.loader("val"), channels_last=lit.channels_last) if len(val_y) else None
    calibration = calibrate(val_logits, val_y, logits, y)
    val_score = None if val_logits is None else score(cfg.metric, val_y, val_logits.argmax(1).numpy())
    test_loss = float(F.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long)))
    if not (torch.isfinite(logits).all() and np.isfinite(test_loss)):
        raise UserError(f"training diverged: the model's test outputs are NaN or infinite; lower --lr (now "
                        f"{run.lr:g}) and start over with --overwrite")
    report = classification_report(y, pred, data.classes)
    test_acc, naive_pred = report["accuracy"], np.full_like(y, data.majority_class())  # the commonest before balancing
    majority, naive_score = score("accuracy", y, naive_pred), score(cfg.metric, y, naive_pred)
    plot_confusion(np.asarray(report["confusion"]), data.classes, out / "confusion_matrix.png")
    write_predictions(out, data.classes, {"val": (val_y, val_logits), "test": (y, logits)})
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
        "modality": run.modality.name,
        "preprocessing": pre.to_dict(),
        "source": source.name,
        **source.info,
        "source_weights": run.resolved["resolved"]["source_weights"],
        "strategy": strategy.name,
        "blocks_reused": list(source.blocks)[:reuse] if strategy.pretrained else [],
        "parameters": parameters,
        "metrics": {
            "test_accuracy": test_acc, "test_loss": test_loss, "train_wall_seconds": wall,
            "majority_baseline": majority, "chance": 1 / len(data.classes), "test_size": len(y),
            **{f"test_{m}": report[m] for m in METRICS if m != "accuracy"},
            "test_recall": report["recall"], "test_confusion": report["confusion"],
            "metric": cfg.metric, "test_score": report[cfg.metric], "naive_score": naive_score,
            "learned": learned(report[cfg.metric], naive_score, len(y)),
            "val_score": val_score,  # what advise chooses by: the validation split, never the test split
        },
        "training": training,
        "calibration": calibration,
        "feature_cache_hit": cache_hit,
        "feature_seconds": feature_seconds,
        "data": cfg.data,
    }
    write_model(out, model, card)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only an unfinished run needs them
    (out / "INCOMPLETE").unlink()
    return RunResult(out, test_acc, test_loss, wall, cache_hit, data.classes, metrics.rows, majority, len(y),
                     parameters, training, cfg.metric, report[cfg.metric], naive_score, calibration, val_score)


def restore_best(trainer: L.Trainer, lit: LitClassifier, budget: Budget, rows: list[dict[str, float]],
                 ) -> dict[str, Any]:
    """Load the best validation's weights into ``lit`` (when the budget kept them) and say where they were."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    steps, epochs = int(trainer.global_step), int(rows[-1]["epoch"]) if rows else 0
    best = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor == "val_loss"), None)
    stop = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if best is None or not best.best_model_path:
        return outcome(budget, steps, epochs, None, None, None, 0)
    ckpt = read_checkpoint(Path(best.best_model_path), lit.state_dict())
    lit.load_state_dict(ckpt["state_dict"])
    return outcome(budget, steps, epochs, int(ckpt["global_step"]), int(ckpt["epoch"]) + 1,
                   float(best.best_model_score), int(stop.wait_count) if stop is not None else 0)


PREDICTIONS = "predictions.csv"


def write_predictions(out: Path, classes: list[str], splits: dict[str, tuple[np.ndarray, torch.Tensor | None]],
                      ) -> None:
    """``predictions.csv``: each validation and test example's label and the kept model's prediction (what
    ``advise`` compares configurations by, example by example; what an error analysis starts from)."""
    rows = [(split, i, classes[label], classes[pred]) for split, (y, logits) in splits.items() if logits is not None
            for i, (label, pred) in enumerate(zip(y.tolist(), logits.argmax(1).tolist(), strict=True))]
    write_csv(out / PREDICTIONS, ("split", "index", "label", "prediction"), rows)


def read_predictions(run_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A finished run's labels and predictions on ``split`` (class names), from its ``predictions.csv``; an edited
    file is one sentence naming it."""
    import csv
    import io

    path = run_dir / PREDICTIONS
    reader = csv.reader(io.StringIO(files.read_bounded(path, "predictions file").decode("utf-8", "replace")))
    if next(reader, None) != ["split", "index", "label", "prediction"]:
        raise UserError(f"{path} line 1: expected the header split,index,label,prediction (was it edited?)")
    rows = [row for row in reader if row[:1] == [split]]
    if any(len(row) != 4 for row in rows):
        raise UserError(f"{path}: a {split} row without its 4 fields (was it edited?)")
    return np.asarray([r[2] for r in rows]), np.asarray([r[3] for r in rows])


def calibrate(val_logits: torch.Tensor | None, val_y: np.ndarray, test_logits: torch.Tensor, y: np.ndarray,
              ) -> dict[str, Any]:
    """Temperature scaling (:mod:`transferlab.evaluate.calibration`) fitted on the validation split, and the test
    split's expected calibration error before and after it. Without a validation split the temperature stays 1."""
    from transferlab.evaluate.calibration import ECE_BINS, ece, fit_temperature, softmax

    t = 1.0 if val_logits is None else fit_temperature(val_logits.numpy(), val_y)
    logits = test_logits.numpy()
    return {"method": "temperature scaling", "temperature": t, "fitted_on": None if val_logits is None else
            "validation", "test_ece": ece(softmax(logits), y), "test_ece_calibrated": ece(softmax(logits, t), y),
            "bins": ECE_BINS}


def balanced_weights(labels: Any, num_classes: int) -> torch.Tensor:
    """scikit-learn's ``class_weight="balanced"``: n / (classes x count) per class, from the training labels."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    return torch.as_tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def learned(accuracy: float, majority: float, n: int) -> bool:
    """Whether a test accuracy is clearly above the naive model's: by more than two binomial standard errors of
    the naive model's accuracy on ``n`` test examples (what ``pretrain``'s source check asks too)."""
    return bool(accuracy > majority + naive_margin(majority, n))


def naive_margin(majority: float, n: int) -> float:
    """Two binomial standard errors of the naive model's accuracy ``majority`` on ``n`` test examples."""
    return 2 * math.sqrt(max(majority * (1 - majority), 1e-12) / max(n, 1))


def load_result(out: Path) -> RunResult:
    """The result of a finished run directory, read back from its files (each checked: a reused compare cell may
    have been edited)."""
    card = read_card(out)
    m = card_metrics(card, out / "model.json")
    rows = read_rows(out / "metrics.csv", MetricsCSV.columns) if (out / "metrics.csv").exists() else []
    training = card.get("training") if isinstance(card.get("training"), dict) else {}
    parameters = card.get("parameters") if isinstance(card.get("parameters"), dict) else {}
    metric = m.get("metric", "accuracy")  # cards written before --metric: accuracy
    return RunResult(out, m["test_accuracy"], m["test_loss"], m["train_wall_seconds"], card.get("feature_cache_hit"),
                     card["classes"], rows, m["majority_baseline"], m["test_size"], parameters, training, metric,
                     m.get("test_score", m["test_accuracy"]), m.get("naive_score", m["majority_baseline"]),
                     card.get("calibration", {}), m.get("val_score"))


def pretrain(cfg: FitConfig, out: Path, *, locked: bool = False, **kwargs: Any) -> tuple[RunResult, dict[str, Any]]:
    """The develop model approach: train ``cfg.source`` from scratch on a source task and check that it learned.

    The run directory is a source for every command. Its card gains ``source_check``: test accuracy next to the
    majority-class baseline and chance, and whether the model is clearly better than the baseline (beyond two
    binomial standard errors); a source that learned nothing transfers nothing."""
    out = Path(out)
    with contextlib.nullcontext() if locked else files.locked(out):
        result = fit(cfg.replace(strategy="scratch"), out, locked=True, **kwargs)
        if not is_global_zero():  # under DDP rank 0 checks and writes
            return result, {}
        base = result.majority_baseline
        check = {
            "test_accuracy": result.test_accuracy,
            "majority_baseline": base,
            "chance": 1 / len(result.classes),
            "clearly_better_than_naive": learned(result.test_accuracy, base, result.test_size),
            "margin": naive_margin(base, result.test_size),
        }
        card = read_card(out)
        card["source_check"] = check
        write_card(out, card)
    if not check["clearly_better_than_naive"]:
        log.warning("the pretrained source is not clearly better than always predicting the commonest class")
    return result, check
