"""Per-epoch seeded order and augmentation (exact resume), and DDP padding of evaluation splits."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import torch

from transferlab.train.module import mix_seed

log = logging.getLogger(__name__)


class EpochSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Shuffles with ``seed + epoch``: the order of every epoch is fixed, so a resumed run sees the same batches.

    It yields ``(index, epoch)``: :class:`EpochSeeded` seeds each example's augmentation from the pair, so that a
    resumed run (or another number of workers) draws the same crops and flips as an uninterrupted one.
    Under DDP each of ``world`` processes takes every ``world``-th index of that order, padded by wrapping round to
    a multiple of ``world`` (every process must take the same number of steps). Lightning calls ``set_epoch``
    before each epoch. With ``labels`` (``--sampler balanced``) an epoch is ``n`` draws with replacement, each
    class equally likely (every example weighted by one over its class's count), from the same seeded generator.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, labels: Any = None) -> None:
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world
        self.weights = None
        if labels is not None:
            labels = np.asarray(labels)
            self.weights = torch.as_tensor(1.0 / np.bincount(labels)[labels], dtype=torch.float64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = (torch.randperm(self.n, generator=g) if self.weights is None else
                 torch.multinomial(self.weights, self.n, replacement=True, generator=g)).tolist()
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
