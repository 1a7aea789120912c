"""Frozen dataclasses for every option. Unknown keys are errors; the resolved config is saved with each run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from transferlab.errors import UserError, did_you_mean


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines one training run (``transferlab fit``)."""

    data: str = "fashion-mnist:classes=5-9"
    source: str = "efficientnet_lite0"
    strategy: str = "finetune"
    reuse: int | None = None  # first N blocks of the source; None = all
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
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
    curve: bool = False  # evaluate on the test split within the first epoch and after every epoch (curve.csv)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.backbone_lr_mult >= 0, "--backbone-lr-mult must not be negative"),
            (self.reuse is None or self.reuse >= 1, "--reuse must be 'all' or a block count of at least 1"),
            (self.image_size is None or self.image_size >= 16, "--image-size must be at least 16"),
            (self.per_class is None or self.per_class >= 1, "--per-class must be at least 1"),
            (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1, "split fractions must lie in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

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
