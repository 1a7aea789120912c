"""Frozen dataclasses for every option. Unknown keys are errors; the resolved config is saved with each run."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from transferlab import catalogue
from transferlab.errors import UserError, did_you_mean

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")  # what --metric judges by; every run records all three
METRIC_NAMES = dict(zip(METRICS, ("accuracy", "balanced accuracy", "macro-F1"), strict=True))  # in sentences
# Where and how fast a run trains, not what it trains: a run may be resumed with other values (other devices).
RUNTIME_OPTIONS = ("num_workers", "pin_memory", "channels_last", "compile", "accelerator", "devices", "num_nodes",
                   "distributed", "precision", "deterministic", "max_time", "logger")
# Options added after experiment records were first written, with the value that means what a record without them
# did: resuming such a record (an upgrade) is no difference while the option holds that value.
ADDED_OPTIONS = {"fold": None}
LOGGERS = {"csv": None, "tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}  # and their packages
DISTRIBUTED = ("auto", "ddp", "ddp_find_unused_parameters_true")  # replicated models, launched as subprocesses
MAX_SEED = 2**32 - 1  # NumPy's and Lightning's seeds are 32-bit
MAX_EPOCHS = 100  # the training budget's cap when --epochs is not given: this many epochs or
CAP_STEPS = 2000  # this many optimiser steps, whichever is longer (small data gets more epochs, not fewer steps)
# Every numeric option's range, checked before any work: the bounds keep values a generator, an allocator or a
# float32 can take (a learning rate of 3.4e38 overflows; a seed of 2**32 is refused by NumPy after minutes of work)
RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, MAX_SEED), "split_seed": (0, MAX_SEED), "epochs": (1, 100_000), "max_steps": (1, 10**9),
    "min_steps": (0, 10**9),
    "max_time": (1.0, 1e8), "patience": (1, 10_000), "batch_size": (1, 1 << 20), "lr": (0.0, 10.0),
    "backbone_lr_mult": (0.0, 100.0), "weight_decay": (0.0, 10.0), "reuse": (1, 100_000), "image_size": (16, 4096),
    "per_class": (1, 10**9), "eval_per_class": (1, 10**9), "max_vectors": (1, 10**9),
    "num_nodes": (1, 100_000), "val_fraction": (0.0, 1.0), "test_fraction": (0.0, 1.0),
}


class _Absent:
    def __repr__(self) -> str:
        return "not set"


ABSENT = _Absent()  # a key one of two configurations lacks


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """Where a recorded configuration (a run's or an experiment's) and this one differ: ``(dotted key, old, new)``,
    or None. A key one side lacks differs (``ABSENT``), except an option added to transferlab since the record was
    written (``ADDED_OPTIONS``) while it holds the value that means what the record did, so an upgrade does not
    make finished runs unresumable, nor resume one whose missing option may have meant something else."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in {**old, **new}:
            if k not in old and k in ADDED_OPTIONS and new[k] == ADDED_OPTIONS[k]:
                continue
            diff = first_difference(old.get(k, ABSENT), new.get(k, ABSENT), f"{key}.{k}" if key else k)
            if diff is not None:
                return diff
        return None
    return None if old == new else (key or "configuration", old, new)


def check_range(option: str, value: Any, low: float, high: float) -> None:
    """One sentence unless ``value`` (None: unset) is a finite number within [low, high]."""
    if value is None:
        return
    whole = isinstance(low, int) and isinstance(high, int)
    if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
        raise UserError(f"{option} must be {'a whole number' if whole else 'a number'}, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{option} must be a finite number, not {value}")
    if not low <= value <= high:
        show = "{:,}".format if whole else "{:g}".format
        raise UserError(f"{option} must be {'a whole number ' if whole else ''}from {show(low)} to {show(high)}, "
                        f"not {show(value)}")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_memory(image_size: int, batch_size: int) -> None:
    """Refuse an input size whose batch of float32 images alone would take more than a quarter of the memory
    available (the network's activations take several times more): one sentence instead of an allocation failure
    after the data has loaded."""
    need, have = batch_size * 3 * image_size * image_size * 4, available_memory()
    if have is not None and need > have / 4:
        raise UserError(f"--image-size {image_size} with --batch-size {batch_size}: one batch of images alone takes "
                        f"{need / (1 << 30):.1f} GiB, more than a quarter of the {have / (1 << 30):.1f} GiB of memory "
                        "available; use a smaller --image-size or --batch-size")


def parse_strategy(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[:key=value,...]`` -> (name, the options the spec sets), each checked against the strategy's declared
    options (:mod:`transferlab.catalogue`)."""
    name, options = catalogue.parse_strategy(spec)
    return name, dict(options)


def opt(default: Any, help: str) -> Any:
    """A FitConfig field that is a command-line option, with its help: the CLI's option groups read both."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines one training run (``transferlab fit``)."""

    data: str = "fashion-mnist:classes=5-9"
    source: str = opt("efficientnet_lite0", "Source model (see `transferlab sources`).")
    strategy: str = opt("finetune", "scratch, frozen, finetune, gradual, l2sp, bss or lora, with options as "
                        "NAME:key=value,... (finetune:decay=0.7,reg=l2sp; gradual:every=2; lora:r=8,alpha=16).")
    reuse: int | None = None  # first N blocks of the source; None = all
    # The training budget (train/budget.py): until the validation loss stops improving, at least min_steps
    # optimiser steps, at most epochs passes and max_steps steps; the best validation's weights are kept
    epochs: int | None = opt(None, "At most this many passes over the training data (default: until converged, at most "
                             "100 epochs or 2,000 steps).")
    max_steps: int | None = opt(None, "At most this many optimiser steps.")
    max_time: float | None = opt(None, "At most this many seconds of training (a run stopped there has not "
                                 "converged; advise shares its budget this way).")
    min_steps: int = opt(100, "At least this many optimiser steps (small data gets more epochs, not fewer steps), "
                         "within --epochs/--max-steps.")
    patience: int = opt(5, "Stop after this many validations without a lower validation loss; the best "
                        "validation's weights are kept.")
    batch_size: int = opt(32, "Training examples per step.")
    lr: float | None = opt(None, "Learning rate of the head and new blocks. Default: 1e-3 for images, 1e-2 for text "
                           "and tables.")
    backbone_lr_mult: float | None = opt(None, "The reused blocks (lora: its adapters) train at lr x this. "
                                         "Default: 0.1 for images and tables, 0.01 for text.")
    freeze_bn: bool = True  # finetune: reused BatchNorm layers keep the source's statistics
    weight_decay: float = 1e-4
    image_size: int | None = opt(None, "Input size in px (default: the model's own).")
    seed: int = opt(0, "Random seed (weights, order, augmentation; also the split); with --seeds N, the first of N.")
    split_seed: int | None = None  # seed of the train/val/test split; None = seed
    fold: str | None = None  # "i/k": train and validate on fold i of k over train+val (advise's confirmation)
    per_class: int | None = opt(None, "Training examples per class.")
    eval_per_class: int | None = opt(None, "Cap on val and test examples per class.")
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    weights: str | None = opt(None, "Weights file for the source (.safetensors or .pth).")
    strict: bool = opt(False, "Refuse unreadable files (naming them) instead of skipping them.")
    cache: bool = opt(True, "frozen: train on cached features.")
    # where and how training runs (passed to Lightning's Trainer)
    num_workers: str = opt("auto", "DataLoader worker processes: a count, or auto (none when training on a CPU, "
                           "whose cores the model uses; with GPUs, up to 8 per GPU).")
    pin_memory: bool | None = opt(None, "Pinned host memory for batches. Default: on with a GPU.")
    channels_last: bool = opt(True, "Images in channels_last memory layout.")
    compile: bool = opt(False, "torch.compile the trained network.")
    deterministic: bool = opt(False, "Deterministic algorithms only (bit-identical reruns; measured 12% slower "
                              "fine-tuning on the CPU).")
    accelerator: str = opt("auto", "cpu, gpu, mps or auto (a GPU when there is one).")
    devices: str = opt("1", "Devices per node: a count, 'auto', or indices such as 0,1.")
    num_nodes: int = opt(1, "Machines (see the README on torchrun and SLURM).")
    distributed: str = opt("auto", "Lightning strategy: auto, ddp or ddp_find_unused_parameters_true.")
    precision: str = opt("32", "32, bf16-mixed or 16-mixed (never mixed by default: 9-20x slower on CPUs without "
                         "bf16).")
    curve: bool = False  # evaluate on the test split within the first epoch and after every epoch (curve.csv)
    # text
    text_model: str = opt("bag", "Word-vector sources: bag (mean + MLP) or cnn (1-D convolutions).")
    max_vectors: int | None = opt(None, "Read at most this many vectors from a vectors file.")
    text_column: str = opt("text", "CSV/TSV/JSONL column holding the text.")
    label_column: str = opt("label", "Column holding the label: in CSV/TSV/JSONL text and in tables.")
    encoding_errors: str = opt("strict", "strict: invalid UTF-8 is an error; replace: accept it.")
    # what is judged, and imbalanced data
    metric: str = opt("accuracy", "What compare, layers, rank --validate and advise judge by: accuracy, "
                      "balanced_accuracy or macro_f1 (every run records all three).")
    class_weight: str = opt("none", "balanced: weight the loss of each class by n / (classes x its training count).")
    sampler: str = opt("shuffle", "shuffle: every training example once per epoch; balanced: as many draws, every "
                       "class equally likely (with replacement).")
    logger: str = opt("csv", "Also log the metrics to tensorboard (RUN/tensorboard) or mlflow (at "
                      "MLFLOW_TRACKING_URI); RUN/metrics.csv is always written.")
    # tables
    impute: str = opt("none", "Tables: a missing cell is an error (none) or filled with the training split's column "
                      "mean (mean).")

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, int | float) and not isinstance(self.num_workers, bool):  # from a JSON file
            object.__setattr__(self, "num_workers", str(self.num_workers))
        for f in fields(self):  # values from a file (--config, a resumed config.json) may be of any JSON type
            kind, value = _KIND.get(str(f.type).replace(" | None", "")), getattr(self, f.name)
            if kind is not None and not (value is None and "None" in str(f.type)) and (
                    not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
                raise UserError(f"--{f.name.replace('_', '-')} must be {_KIND_WORD[kind]}, not {value!r}")
        parse_strategy(self.strategy)
        if self.fold is not None:
            from transferlab.data.splits import parse_fold

            parse_fold(self.fold)
        for name, (low, high) in RANGES.items():
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), low, high)
        checks = [
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1, "split fractions must lie in (0, 1)"),
            (self.text_model in ("bag", "cnn"), f"--text-model must be bag or cnn, not {self.text_model!r}"),
            (self.encoding_errors in ("strict", "replace"), "--encoding-errors must be strict or replace"),
            (self.impute in ("none", "mean"), f"--impute must be none or mean, not {self.impute!r}"),
            (self.metric in METRICS, f"--metric must be one of {', '.join(METRICS)}, not {self.metric!r}"),
            (self.class_weight in ("none", "balanced"), f"--class-weight must be none or balanced, not "
             f"{self.class_weight!r}"),
            (self.sampler in ("shuffle", "balanced"), f"--sampler must be shuffle or balanced, not {self.sampler!r}"),
            (self.logger in LOGGERS, f"--logger must be one of {', '.join(LOGGERS)}, not {self.logger!r}"),
            (not LOGGERS.get(self.logger) or any(importlib.util.find_spec(p) for p in LOGGERS[self.logger]),
             f"--logger {self.logger} needs the {self.logger} package: pip install 'transferlab[{self.logger}]'"),
            (self.logger != "mlflow" or bool(os.environ.get("MLFLOW_TRACKING_URI")),
             "--logger mlflow logs to the tracking server or database named by MLFLOW_TRACKING_URI, which is not set: "
             "set it (such as sqlite:///mlflow.db or http://host:5000)"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, "
             f"not {self.precision!r}"),
            (self.distributed in DISTRIBUTED, f"--distributed {self.distributed!r}: transferlab supports "
             f"{', '.join(DISTRIBUTED)} (strategies that shard the model, such as fsdp, are not supported: rank 0 "
             "evaluates and saves the whole model)"),
            (not (self.accelerator == "cpu" and self.precision == "16-mixed"),
             "--precision 16-mixed needs a GPU; on the CPU use bf16-mixed (or the default 32)"),
            (self.num_workers == "auto" or (re.fullmatch(r"[0-9]{1,4}", self.num_workers) is not None
                                            and int(self.num_workers) <= 1024),
             f"--num-workers must be a count from 0 to 1,024 or auto, not {self.num_workers!r}"),
            (self.devices == "auto" or all(p.strip().isdigit() for p in str(self.devices).split(",") if p.strip()),
             f"--devices must be a count, 'auto' or a list such as 0,1, not {self.devices!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.image_size is not None:
            check_batch_memory(self.image_size, self.batch_size)

    def workers(self, on_gpu: bool) -> int:
        """--num-workers as a count. auto: none when training on a CPU (the model's threads use every core, and a
        decoded image costs a copy), else up to 8 per GPU with a core per GPU left to its training process."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        if not on_gpu:
            return 0
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
        return max(1, min(8, cores // max(1, torch.cuda.device_count()) - 1))

    @property
    def data_seed(self) -> int:
        """The seed of the train/val/test split: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def learning_rates(self, defaults: tuple[float, float]) -> tuple[float, float]:
        """(lr, backbone_lr_mult), filling unset ones with the modality's ``defaults``."""
        lr, mult = defaults
        return (lr if self.lr is None else self.lr, mult if self.backbone_lr_mult is None else self.backbone_lr_mult)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        names = {f.name for f in fields(cls)}
        for key in d:
            if key not in names:
                raise UserError(f"unknown option {key!r}{did_you_mean(key, names)}")
        return cls(**d)

    def replace(self, **changes: Any) -> FitConfig:
        return dataclasses.replace(self, **changes)


_KIND: dict[str, type | tuple[type, ...]] = {"str": str, "bool": bool, "int": int, "float": (int, float)}
_KIND_WORD = {str: "a string", bool: "true or false", int: "a whole number", (int, float): "a number"}


# --- experiments --------------------------------------------------------------------------------------------------

SET_BY_COMPARE = ("data", "source", "strategy", "per_class", "curve", "split_seed", "fold")  # not options of **options
DEFAULT_ARCH = "cnn_small"  # pretrain and layers: the architecture trained from scratch
LOGREG = "logreg"  # compare's simple baseline: a logistic regression on the raw inputs (no source, no torch)
DEFAULT_ARMS = (LOGREG, "scratch", "frozen", "finetune")
ARM_OPTIONS = ("source", "reuse", "lr", "backbone_lr_mult", "weight_decay", "cache", "freeze_bn", "text_model")


@dataclass(frozen=True)
class Arm:
    """``strategy[:key=value,...]``, e.g. ``finetune:reuse=2`` or ``frozen:source=minilm``; the spec is the
    arm's name. ``source=`` gives the arm its own source (default: ``--source``)."""

    name: str
    strategy: str
    options: dict[str, Any]

    @classmethod
    def parse(cls, spec: str) -> Arm:
        """Options of the run (``ARM_OPTIONS``) and of the strategy (its declared options) may be mixed; the
        strategy's stay in its spec (``finetune:decay=0.7``)."""
        name, _, rest = spec.strip().partition(":")
        try:
            takes = catalogue.strategy(name).spec_options
        except UserError as e:
            raise UserError(f"arm {spec!r}: {e}") from None
        options: dict[str, Any] = {}
        own: list[str] = []
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if eq and key in takes:
                own.append(item)
            elif eq and key in ARM_OPTIONS:
                options[key] = _arm_value(spec, key, value)
            else:
                known = [*ARM_OPTIONS, *takes]
                raise UserError(f"arm {spec!r}: unknown option {key!r}{did_you_mean(key, known)}; arm options are "
                                f"{', '.join(known)}")
        strategy = name + (":" + ",".join(own) if own else "")
        try:
            parse_strategy(strategy)
        except UserError as e:
            raise UserError(f"arm {spec!r}: {e}") from None
        return cls(spec.strip(), strategy, options)

    def source(self, default: str) -> str:
        return self.options.get("source", default)

    @property
    def kind(self) -> catalogue.StrategyKind:
        """The arm's strategy as the catalogue declares it (whether it starts from the source's weights...)."""
        return catalogue.strategy(self.strategy.partition(":")[0])

    def config(self, base: FitConfig, **changes: Any) -> FitConfig:
        """``base`` with this arm's strategy and options (``changes`` on top); a bad value names the arm."""
        try:
            return base.replace(strategy=self.strategy, **{**self.options, **changes})
        except UserError as e:
            raise UserError(f"arm {self.name!r}: {e}") from None


def split_arms(arms: str | list[str] | tuple[str, ...]) -> list[str]:
    """``--arms`` as a list of arm specs. Arms and their options are both separated by commas: a piece of the form
    ``key=value`` belongs to the arm before it (``scratch,finetune:reuse=3,lr=1e-3`` is two arms)."""
    if not isinstance(arms, str):
        return [a.strip() for a in arms if a.strip()]
    specs: list[str] = []
    for piece in (p.strip() for p in arms.split(",")):
        if not piece:
            continue
        key, eq, _ = piece.partition("=")
        if eq and ":" not in key and specs:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def _arm_value(spec: str, key: str, value: str) -> Any:
    if key in ("cache", "freeze_bn"):
        return value.lower() in ("1", "true", "yes")
    if key in ("source", "text_model"):
        return value
    if key == "reuse" and value == "all":
        return None
    try:
        return int(value) if key == "reuse" else float(value)
    except ValueError:
        raise UserError(f"arm {spec!r}: {key}={value!r} is not a number") from None


def parse_sizes(text: str | None) -> list[int | None]:
    """``10,30,all`` -> [10, 30, None]; None means every training example."""
    if not text:
        return [None]
    sizes: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            sizes.append(None)
            continue
        try:
            n = int(item)
        except ValueError:
            raise UserError(f"--per-class takes numbers or 'all', not {item!r}") from None
        if n < 1:
            raise UserError(f"--per-class {n}: need at least 1 example per class")
        sizes.append(n)
    return sorted(set(sizes), key=lambda s: math.inf if s is None else s)


def size_key(size: int | None) -> str:
    return "all" if size is None else str(size)
