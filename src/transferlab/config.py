"""Frozen dataclasses for every option. Unknown keys are errors; the resolved config is saved with each run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from transferlab.errors import UserError, did_you_mean

# Measured on the built-in tasks: a head on L2-normalised sentence embeddings or on averaged word vectors learns
# about 10x too slowly at the image default, and a transformer wants its weights moved ~10x less than a CNN.
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
# Where and how fast a run trains, not what it trains: a run may be resumed with other values (other devices).
RUNTIME_OPTIONS = ("num_workers", "pin_memory", "channels_last", "compile", "accelerator", "devices", "num_nodes",
                   "distributed", "precision", "deterministic")
DISTRIBUTED = ("auto", "ddp", "ddp_find_unused_parameters_true")  # replicated models, launched as subprocesses
DEFAULT_LR = {"image": (1e-3, 0.1), "text": (1e-2, 0.01)}


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines one training run (``transferlab fit``)."""

    data: str = "fashion-mnist:classes=5-9"
    source: str = "efficientnet_lite0"
    strategy: str = "finetune"
    reuse: int | None = None  # first N blocks of the source; None = all
    epochs: int = 5
    batch_size: int = 32
    lr: float | None = None  # None: 1e-3 for image sources, 1e-2 for text sources (DEFAULT_LR)
    backbone_lr_mult: float | None = None  # None: 0.1 for image sources, 0.01 for text sources
    freeze_bn: bool = True  # finetune: reused BatchNorm layers keep the source's statistics
    weight_decay: float = 1e-4
    image_size: int | None = None  # None = the source's own input size
    seed: int = 0
    split_seed: int | None = None  # seed of the train/val/test split; None = seed
    per_class: int | None = None
    eval_per_class: int | None = None  # cap on val and test images per class
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    weights: str | None = None
    strict: bool = False
    cache: bool = True  # frozen: train the head on cached features
    num_workers: int = 0
    pin_memory: bool | None = None  # None: on when training on a GPU
    channels_last: bool = True  # image batches and the model in channels_last memory layout
    compile: bool = False  # torch.compile the trained network
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-identical reruns, ~12% slower training
    # distributed training: passed to Lightning's Trainer
    accelerator: str = "auto"  # auto: a GPU when there is one
    devices: str = "1"  # a count, "auto", or a list such as "0,1"
    num_nodes: int = 1
    distributed: str = "auto"  # Lightning's strategy: auto, ddp or ddp_find_unused_parameters_true
    precision: str = "32"  # 32, bf16-mixed or 16-mixed; never mixed by default (9-20x slower on CPUs without bf16)
    curve: bool = False  # evaluate on the test split within the first epoch and after every epoch (curve.csv)
    # text
    text_model: str = "bag"  # word-vector sources: "bag" (mean + MLP) or "cnn" (1-D convolutions)
    max_vectors: int | None = None  # read at most this many word vectors from a vectors file
    text_column: str = "text"
    label_column: str = "label"
    encoding_errors: str = "strict"  # "replace" accepts invalid UTF-8
    # tables
    impute: str = "none"  # "none": a missing cell is an error; "mean": filled with the training split's column mean

    def __post_init__(self) -> None:
        for name in ("lr", "backbone_lr_mult", "weight_decay", "val_fraction", "test_fraction"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UserError(f"--{name.replace('_', '-')} must be a finite number, not {value}")
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (self.backbone_lr_mult is None or self.backbone_lr_mult >= 0, "--backbone-lr-mult must not be negative"),
            (self.weight_decay >= 0, "--weight-decay must not be negative"),
            (self.reuse is None or self.reuse >= 1, "--reuse must be 'all' or a block count of at least 1"),
            (self.image_size is None or self.image_size >= 16, "--image-size must be at least 16"),
            (self.per_class is None or self.per_class >= 1, "--per-class must be at least 1"),
            (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1, "split fractions must lie in (0, 1)"),
            (self.text_model in ("bag", "cnn"), f"--text-model must be bag or cnn, not {self.text_model!r}"),
            (self.max_vectors is None or self.max_vectors >= 1, "--max-vectors must be at least 1"),
            (self.encoding_errors in ("strict", "replace"), "--encoding-errors must be strict or replace"),
            (self.impute in ("none", "mean"), f"--impute must be none or mean, not {self.impute!r}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, "
             f"not {self.precision!r}"),
            (self.num_nodes >= 1, "--num-nodes must be at least 1"),
            (self.distributed in DISTRIBUTED, f"--distributed {self.distributed!r}: transferlab supports "
             f"{', '.join(DISTRIBUTED)} (strategies that shard the model, such as fsdp, are not supported: rank 0 "
             "evaluates and saves the whole model)"),
            (not (self.accelerator == "cpu" and self.precision == "16-mixed"),
             "--precision 16-mixed needs a GPU; on the CPU use bf16-mixed (or the default 32)"),
            (self.devices == "auto" or all(p.strip().isdigit() for p in str(self.devices).split(",") if p.strip()),
             f"--devices must be a count, 'auto' or a list such as 0,1, not {self.devices!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def learning_rates(self, modality: str) -> tuple[float, float]:
        """(lr, backbone_lr_mult), filling unset ones with the modality's defaults."""
        lr, mult = DEFAULT_LR[modality]
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
