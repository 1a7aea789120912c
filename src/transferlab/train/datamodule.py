"""The run's data as Lightning serves it: seeded loaders (sharded under DDP) and, for a frozen prefix, its cached
features in place of the inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from transferlab.config import FitConfig
from transferlab.data.decoded import DecodedDataset, augment_batch, resident_images
from transferlab.data.splits import split_dataset
from transferlab.sources.base import Source, state_fingerprint
from transferlab.train.features import cache_key, cached_features
from transferlab.train.samplers import EpochSampler, EpochSeeded, Padded

INFERENCE_BATCH = 64


def make_loader(
    ds: torch.utils.data.Dataset, cfg: FitConfig, shuffle: bool, collate: Any = None, rank: int = 0, world: int = 1,
    pin_memory: bool = False, augment: bool = False, labels: Any = None, on_gpu: bool = False,
) -> DataLoader:
    """Training batches at --batch-size in a seeded per-epoch order (this process's share of it under DDP), each
    example's augmentation seeded by (seed, epoch, index); inference at least 64 at a time (benchmarks/overhead.py:
    extraction is up to 9% faster at 64 than at 32 on 2 cores), under DDP every ``world``-th example of the split
    padded as :class:`Padded` says. ``labels``: the training labels, which ``--sampler balanced`` draws by.
    Workers (``--num-workers``, auto by ``on_gpu``) stay alive from one epoch to the next."""
    if shuffle:
        by = labels if cfg.sampler == "balanced" else None
        sampler, size = EpochSampler(len(ds), cfg.seed, rank, world, by), cfg.batch_size
        ds = EpochSeeded(ds, cfg.seed, reseed=augment)
    else:
        size = max(cfg.batch_size, INFERENCE_BATCH)
        sampler = None
        if world > 1:
            ds = Padded(ds, world)
            sampler = list(range(rank, len(ds), world))
    workers = cfg.workers(on_gpu)
    return DataLoader(ds, sampler=sampler, batch_size=size, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=workers > 0)


class PlainLoaders(Mapping[str, DataLoader]):
    """Every split, unaugmented and in order: what a frozen prefix's features are computed from. Each loader is
    built when first read, so a feature-cache hit never decodes an image."""

    def __init__(self, splits: dict[str, Any], pre: Any, cfg: FitConfig, on_gpu: bool = False) -> None:
        self.splits, self.pre, self.cfg, self.on_gpu = splits, pre, cfg, on_gpu
        self.built: dict[str, DataLoader] = {}

    def __getitem__(self, split: str) -> DataLoader:
        if split not in self.built:
            self.built[split] = make_loader(split_dataset(self.splits[split], self.pre), self.cfg, False,
                                            self.pre.collate, on_gpu=self.on_gpu)
        return self.built[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)


class RunData(L.LightningDataModule):
    """The run's loaders, built once Lightning knows this process's rank and world size. A frozen run's features
    are extracted here (shard by shard under DDP, through the cache) and the loaders then serve them."""

    def __init__(self, splits: dict[str, Any], pre: Any, cfg: FitConfig, augment: bool, progress: bool,
                 prefix: torch.nn.Module | None = None, key: str | None = None, channels_last: bool = False,
                 fold_of: tuple[Any, np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.splits, self.pre, self.cfg, self.augment, self.progress = splits, pre, cfg, augment, progress
        self.prefix, self.key, self.channels_last, self.fold_of = prefix, key, channels_last, fold_of
        self.feats: dict[str, torch.Tensor] | None = None
        self.cache_hit: bool | None = None
        self.feature_seconds = 0.0
        self.on_device = False  # training batches augmented on the device (see on_after_batch_transfer)
        self.images: torch.Tensor | None = None  # a small training split's images on the device, read once

    def _where(self) -> tuple[int, int, bool]:
        t = self.trainer
        if t is None:
            return 0, 1, False
        pin = self.cfg.pin_memory if self.cfg.pin_memory is not None else self._on_gpu()
        return t.global_rank, t.world_size, pin

    def _on_gpu(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def setup(self, stage: str | None = None) -> None:
        if self.prefix is not None and self.feats is None:
            rank, world, _ = self._where()
            if self.trainer is not None:
                self.prefix.to(self.trainer.strategy.root_device)
            self.feats, self.cache_hit, self.feature_seconds = cached_features(
                self.key, self.prefix, PlainLoaders(extracted(self.splits, self.fold_of), self.pre, self.cfg,
                                                    self._on_gpu()), self.progress, rank, world, self.channels_last)
            self.prefix.cpu()
            if self.fold_of is not None:  # a fold's examples, gathered from its pool's
                _, train, val = self.fold_of
                pool = self.feats.pop("pool")
                self.feats.update(train=pool[torch.as_tensor(train)], val=pool[torch.as_tensor(val)])

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        if self.feats is not None:
            return TensorDataset(self.feats[split], torch.as_tensor(self.splits[split].labels))
        return split_dataset(self.splits[split], self.pre, augment)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training images decoded once arrive as uint8 with their crops (or, living on the device already, as their
        indices): augmented here, on the training device."""
        x, y = batch
        if self.on_device and isinstance(x, list | tuple):
            images, crops = x
            x = augment_batch(images if self.images is None else self.images[images], crops, self.pre.mean,
                              self.pre.std)
        return x, y

    def _collate(self) -> Any:
        return None if self.feats is not None else self.pre.collate

    def train_dataloader(self) -> DataLoader:
        rank, world, pin = self._where()
        ds = self.dataset("train", self.augment)
        self.on_device = isinstance(ds, DecodedDataset) and ds.augment
        if self.on_device and self.trainer is not None:
            self.images = resident_images(ds, self.trainer.strategy.root_device)
        return make_loader(ds, self.cfg, True, self._collate(), rank, world, pin,
                           augment=self.augment and self.feats is None, labels=self.splits["train"].labels,
                           on_gpu=self._on_gpu())

    def val_dataloader(self) -> DataLoader:
        rank, world, pin = self._where()
        return make_loader(self.dataset("val"), self.cfg, False, self._collate(), rank, world, pin,
                           on_gpu=self._on_gpu())

    def loader(self, split: str, keep: np.ndarray | None = None) -> DataLoader:
        """The whole split (or the positions ``keep`` of it) in one process: test curves and the final test."""
        ds = self.dataset(split)
        return make_loader(ds if keep is None else Subset(ds, keep.tolist()), self.cfg, False, self._collate())


def extracted(splits: dict[str, Any], fold_of: tuple[Any, np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """The splits whose features a frozen run extracts: its own, or for a fold (``fold_of``, see
    :func:`~transferlab.data.splits.fold_data`) the pool it was cut from and the test split, shared by every fold."""
    return splits if fold_of is None else {"pool": fold_of[0], "test": splits["test"]}


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
    progress: bool, channels_last: bool = False,
) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Outputs of a frozen ``prefix`` (the first ``reuse`` blocks) on ``splits`` through the on-disk cache, in one
    process (``rank`` uses this; ``fit`` goes through :class:`RunData`, which shards it under DDP)."""
    return cached_features(feature_key(prefix, source, reuse, splits, pre), prefix, PlainLoaders(splits, pre, cfg),
                           progress, channels_last=channels_last)
