"""The split rules every modality shares: stratified train / val / test, ``--per-class`` and evaluation caps.

A *split* is any object with ``labels`` (int64 array), ``len()``, ``load(i)`` (one raw example: an image, a text,
a row), ``subset(idx)``, ``join(other)`` (its examples, then the other's) and ``fingerprint()``; :class:`Data`
holds three of them. Readers (images, texts, tables) turn a data spec into splits as given (``None``: not split
yet, or the ``train``/``val``/``test`` the data name) and hand them to :func:`build_data`, which applies the rules
below once for every modality; :func:`fold_data` re-splits training and validation for cross-validation. No torch here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from transferlab.errors import UserError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class Split(Protocol):
    labels: np.ndarray

    def __len__(self) -> int: ...
    def load(self, i: int) -> Any: ...
    def subset(self, idx: np.ndarray) -> Split: ...
    def join(self, other: Any) -> Split: ...
    def fingerprint(self) -> str: ...


@dataclass
class Data:
    """A classification dataset split three ways, with the inputs that were left out (``skipped``: (where, why)).

    ``train_counts`` are the examples per class of the training split before ``--per-class`` balanced it: what a
    naive model learns from. ``corpus`` holds every raw text a text dataset loaded (all splits, before
    ``per_class``; no labels): word-vector sources build their vocabulary from it."""

    classes: list[str]
    train: Any
    val: Any
    test: Any
    skipped: list[tuple[str, str]]
    name: str
    train_counts: list[int] = field(default_factory=list)
    corpus: list[str] = field(default_factory=list)
    fold_of: tuple[Any, np.ndarray, np.ndarray] | None = None  # a fold's pool, its train and val positions there

    def majority_class(self) -> int:
        """The commonest training class as the data came (before balancing): the naive model's prediction."""
        counts = self.train_counts or np.bincount(self.train.labels, minlength=len(self.classes)).tolist()
        return int(np.argmax(counts))

    def splits(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def fingerprint(self) -> str:
        """SHA-256 over the class names and the three split fingerprints."""
        digest = hashlib.sha256(json.dumps(self.classes).encode())
        for split in (self.train, self.val, self.test):
            digest.update(split.fingerprint().encode())
        return digest.hexdigest()


class SplitDataset:
    """A map-style dataset over a split (what a DataLoader reads): item ``i`` is ``(transform(split.load(i)),
    label)``."""

    def __init__(self, split: Any, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(self.split.load(i)), int(self.split.labels[i])


def split_dataset(split: Any, pre: Any, augment: bool = False) -> Any:
    """What a DataLoader reads for ``split``: the preprocessing's own dataset when it has one (images: decoded once,
    see :mod:`transferlab.data.decoded`), else :class:`SplitDataset` over its transform."""
    own = getattr(pre, "dataset", None)
    ds = own(split, augment) if own is not None else None
    return ds if ds is not None else SplitDataset(split, pre.transform(augment))


def check_settings(seed: int, val_fraction: float, test_fraction: float, per_class: int | None) -> None:
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UserError(f"{name} must be at least 0 and below 1, got {value}")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"val_fraction + test_fraction must be below 1 to leave training examples, "
            f"got {val_fraction + test_fraction}"
        )
    if per_class is not None and per_class < 1:
        raise UserError(f"per_class must be at least 1, got {per_class}")


def _allocate(counts: np.ndarray, fraction: float, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-class sizes summing to ``fraction`` of all items, proportional to ``counts``, at most ``room``."""
    total = int(counts.sum())
    target = min(int(fraction * total + 0.5), int(room.sum()))
    ideal = counts * target / total
    sizes = np.minimum(np.floor(ideal).astype(np.int64), room)
    short = target - int(sizes.sum())
    if short:
        # largest remainders first, ties broken at random
        order = np.lexsort((rng.random(len(counts)), sizes - ideal))
        while short:
            for i in order:
                if short and sizes[i] < room[i]:
                    sizes[i] += 1
                    short -= 1
    return sizes


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (sorted) of train / val / test, stratified by label; every class keeps a train item.

    Each class is shuffled with its own generator seeded by ``(seed, label)``, so the items a class holds
    out do not depend on the other classes (only their number can shift by one through rounding).
    """
    keys, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    room = counts - 1
    n_val = _allocate(counts, val_fraction, room, rng)
    n_test = _allocate(counts, test_fraction, room - n_val, rng)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for key, v, t in zip(keys, n_val, n_test, strict=True):
        members = np.random.default_rng([seed, int(key)]).permutation(np.flatnonzero(labels == key))
        parts[1].append(members[:v])
        parts[2].append(members[v : v + t])
        parts[0].append(members[v + t :])
    train, val, test = (np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)
    return train, val, test


def cap_per_class(
    labels: np.ndarray, per_class: int, seed: int, names: Sequence[str], hint: str = "", word: str = "images"
) -> np.ndarray:
    """Positions (sorted) of the first ``per_class`` items of each class in a seeded permutation.

    The permutation does not depend on ``per_class``, so smaller caps select subsets of larger ones. A cap larger
    than the smallest class names that class and the largest cap every class can meet.
    """
    keys, counts = np.unique(labels, return_counts=True)
    if per_class > counts.min():
        small = int(keys[np.argmin(counts)])
        raise UserError(
            f"--per-class {per_class} is more than the {counts.min()} training {word} of class {names[small]!r}, "
            f"the smallest class; use --per-class {counts.min()} or less{hint}"
        )
    chosen = []
    for key in keys:
        members = np.flatnonzero(labels == key)
        chosen.append(np.random.default_rng([seed, int(key), 1]).permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def first_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``n`` items per class, chosen by a seeded permutation."""
    rng = np.random.default_rng([seed, 2])
    keep = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def cap_evaluation(data: Data, eval_per_class: int | None, seed: int) -> Data:
    """At most ``eval_per_class`` val and test examples per class (a fixed, seeded choice): frequent evaluation
    stays affordable on large test sets."""
    if eval_per_class is not None:
        if eval_per_class < 1:
            raise UserError(f"eval_per_class must be at least 1, got {eval_per_class}")
        data.val = data.val.subset(first_per_class(data.val.labels, eval_per_class, seed))
        data.test = data.test.subset(first_per_class(data.test.labels, eval_per_class, seed))
    return data


def parse_fold(fold: str) -> tuple[int, int]:
    """``"i/k"`` (fold i of k, from 0) as ``(i, k)``; one sentence otherwise."""
    m = re.fullmatch(r"([0-9]{1,3})/([0-9]{1,3})", fold)
    if m is None or not 2 <= int(m[2]) <= 100 or int(m[1]) >= int(m[2]):
        raise UserError(f"fold must be i/k, fold i of k folds (0 <= i < k, 2 <= k <= 100), not {fold!r}")
    return int(m[1]), int(m[2])


def fold_data(data: Data, fold: str, seed: int) -> Data:
    """Fold ``i/k`` of a cross-validation over the training and validation splits together: the validation split
    is the i-th of k stratified parts of them, the training split the rest, at most as many per class as the
    training split had (so a fold never trains on more than the run it stands for); the test split is unchanged.
    Over i = 0..k-1 every training and validation example is validated once, which is what ``advise``'s
    confirmation pools. A class with fewer than two of them stays in training. Seeded by ``seed``. ``fold_of``
    keeps the pool and the positions, so that a frozen source's features are extracted once for every fold."""
    i, k = parse_fold(fold)
    pool = data.train.join(data.val)
    labels = np.asarray(pool.labels)
    cap = np.bincount(data.train.labels, minlength=len(data.classes))
    train, val = [], []
    for c in np.unique(labels):
        members = np.random.default_rng([seed, int(c), 3]).permutation(np.flatnonzero(labels == c))
        held = np.array_split(members, k)[i] if len(members) >= 2 else members[:0]
        rest = np.setdiff1d(members, held)  # sorted
        train.append(np.random.default_rng([seed, int(c), 4]).permutation(rest)[: max(int(cap[c]), 1)])
        val.append(held)
    train_idx, val_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    return dataclasses.replace(data, train=pool.subset(train_idx), val=pool.subset(val_idx),
                               fold_of=(pool, train_idx, val_idx))


def warn_if_empty(data: Data, val_fraction: float, test_fraction: float, word: str = "examples") -> None:
    """Warn when a split that was asked for (fraction > 0) came out empty."""
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and len(getattr(data, name)) == 0:
            log.warning("the %s split of %s is empty: too few %s per class to hold out %s_fraction=%s of them",
                        name, data.name, word, name, fraction)


def build_data(
    name: str,
    given: dict[str | None, Any],
    classes: list[str],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    per_class: int | None,
    eval_per_class: int | None = None,
    word: str = "examples",
    skipped: list[tuple[str, str]] | None = None,
    corpus: list[str] | None = None,
) -> Data:
    """Three splits from what a reader found: ``given[None]`` (one pool to split) or ``given["train"]`` with the
    ``val``/``test`` the data name (missing ones are carved out of train). Stratified and seeded by ``seed``;
    ``per_class`` caps the training examples per class (nested across sizes); ``word`` names the examples in
    messages (images, texts, rows)."""
    check_settings(seed, val_fraction, test_fraction, per_class)
    if None in given and len(given) > 1:
        raise UserError(f"{name}: some examples have a split and some do not; give every example a split or none")
    pool = given.get("train", given.get(None))
    if pool is None:
        raise UserError(f"{name} names val/test examples but no train examples")
    missing = sorted(set(range(len(classes))) - set(np.unique(pool.labels).tolist()))
    if missing:
        raise UserError(f"{name}: class {classes[missing[0]]!r} has no training {word}; every class needs some")
    carve_val = 0.0 if "val" in given else val_fraction
    carve_test = 0.0 if "test" in given else test_fraction
    train_idx, val_idx, test_idx = stratified_split(pool.labels, carve_val, carve_test, seed)
    train = pool.subset(train_idx)
    counts = np.bincount(train.labels, minlength=len(classes)).tolist()
    if per_class is not None:
        train = train.subset(cap_per_class(train.labels, per_class, seed, classes, word=word))
    data = Data(
        classes=classes, train=train,
        val=given["val"] if "val" in given else pool.subset(val_idx),
        test=given["test"] if "test" in given else pool.subset(test_idx),
        skipped=list(skipped or []), name=name, train_counts=counts, corpus=list(corpus or []),
    )
    warn_if_empty(data, carve_val, carve_test, word)
    return cap_evaluation(data, eval_per_class, seed)
