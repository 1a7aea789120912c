"""Small built-in MLPs for tables (the develop model approach in its simplest form), and their preprocessing.

``mlp_tiny`` / ``mlp_small`` are stacks of ``Linear + ReLU`` blocks (``hidden1`` .. ``hiddenK``). Their first layer
depends on the number of feature columns, so ``mlp_source(name)`` without ``n_features`` is *unbound* (no blocks):
``source.adapt(n_features, preprocessing)`` builds the model for the data, as word-vector sources are adapted to a
vocabulary. They have no pretrained weights: train one on a related table and use its run directory as the source.

The preprocessing is :class:`Standardize`: ``(row - mean) / std`` per column, with mean and std fitted on the
training split (:func:`fit_standardize`) and stored in the model card, so a source keeps the scaling it was trained
with. A missing (NaN) cell standardises to 0, the training mean: the same as ``--impute mean``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.catalogue import Request
from transferlab.data.tabular import column_scale
from transferlab.errors import UserError, did_you_mean
from transferlab.sources.base import Source
from transferlab.sources.weights import load_checked, read_state_dict

MLP_WIDTHS = {"mlp_tiny": (32, 32), "mlp_small": (64, 64, 64)}
MAX_COLUMNS = 100_000
FLOAT32_MAX = float(np.finfo(np.float32).max)


class _StandardizeRow:
    """row -> standardised float32 tensor; NaN -> 0 (the training mean). Computed in float64: a row near the float32
    limit minus a mean of the other sign overflows float32. A class, not a closure: DataLoader workers may pickle
    it."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, columns: tuple[str, ...]) -> None:
        self.mean, self.std, self.columns = mean, std, columns

    def __call__(self, row: Any) -> torch.Tensor:
        x = np.asarray(row, dtype=np.float64)
        if x.shape != self.mean.shape:
            raise UserError(f"a row has {x.size} features but the source takes {self.mean.size} "
                            f"({', '.join(self.columns[:5])}{', ...' if len(self.columns) > 5 else ''})")
        z = (x - self.mean) / self.std
        return torch.from_numpy(np.where(np.isnan(z), 0.0, z).astype(np.float32))

    def too_large(self, rows: np.ndarray) -> tuple[int, int] | None:
        """(row, column) of the first value whose standardised form is not a finite float32, or None."""
        with np.errstate(all="ignore"):
            z = (np.asarray(rows, dtype=np.float64) - self.mean) / self.std
        bad = np.abs(np.nan_to_num(z)) > FLOAT32_MAX
        return None if not bad.any() else tuple(int(i) for i in np.argwhere(bad)[0])  # type: ignore[return-value]


@dataclass(frozen=True)
class Standardize:
    """Per-column standardisation of a table's feature columns, fitted on a training split."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "standardize"
    impute: str = "none"  # the run's --impute: whether predict may fill a missing cell with the training mean
    modality = "tabular"
    collate = None  # the default collation stacks the row tensors

    @classmethod
    def identity(cls, columns: Sequence[str]) -> Standardize:
        """Mean 0, std 1: rows pass unchanged (a placeholder until the training split is known)."""
        return cls(tuple(columns), (0.0,) * len(columns), (1.0,) * len(columns))

    @property
    def num_features(self) -> int:
        return len(self.mean)

    def transform(self, augment: bool = False) -> _StandardizeRow:
        """row -> ``(row - mean) / std`` as a float32 tensor (tables have no augmentation; ``augment`` is ignored)."""
        return _StandardizeRow(np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64), self.columns)

    def resized(self, size: int | None) -> Standardize:
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardize:
        """From a card's ``preprocessing`` (check it first with :func:`check_standardize_dict`)."""
        return cls(tuple(str(c) for c in d["columns"]), tuple(float(x) for x in d["mean"]),
                   tuple(float(x) for x in d["std"]), impute=str(d.get("impute", "none")))


def fit_standardize(features: np.ndarray, columns: list[str], impute: str = "none") -> Standardize:
    """The standardisation of a training split's columns (:func:`~transferlab.data.tabular.column_scale`)."""
    if np.ndim(features) != 2 or np.shape(features)[1] != len(columns):
        raise ValueError(f"features of shape {np.shape(features)} do not match {len(columns)} columns")
    mean, std = column_scale(features)
    return Standardize(tuple(columns), tuple(float(m) for m in mean), tuple(float(s) for s in std), impute=impute)


# --- the sources ----------------------------------------------------------------------------------------------


def _adapt(name: str, weights: Path | None, default: Standardize | None, n_features: int,
           preprocessing: Standardize | None = None) -> Source:
    return mlp_source(name, False, weights, n_features=n_features, preprocessing=preprocessing or default)


def mlp_source(
    name: str,
    pretrained: bool = True,
    weights: Path | None = None,
    n_features: int | None = None,
    preprocessing: Standardize | None = None,
) -> Source:
    """``mlp_tiny`` / ``mlp_small``: ``Linear + ReLU`` blocks ``hidden1`` .. ``hiddenK``, no pooling.

    Without ``n_features`` the source is unbound (no blocks, ``num_features`` 0); ``source.adapt(n_features,
    preprocessing=None)`` returns the bound source (loading ``weights`` then). ``preprocessing`` defaults to the
    identity :class:`Standardize` over columns ``x1`` .. ``xN``; pass the one fitted on the training split (to
    ``adapt``, so that ``fresh()`` keeps it too)."""
    if name not in MLP_WIDTHS:
        raise UserError(f"unknown MLP {name!r}{did_you_mean(name, MLP_WIDTHS)}; choose one of {', '.join(MLP_WIDTHS)}")
    if weights is None and pretrained:
        raise UserError(
            f"{name} has no pretrained weights: train it first (transferlab pretrain DATA --arch {name} --out DIR) "
            f"and use DIR as the source, or use scratch:{name}"
        )
    origin = "random init" if weights is None else f"file {weights}"
    if n_features is None:
        return Source(
            name=name, architecture=name, blocks=OrderedDict(), pool=nn.Identity(), num_features=0,
            preprocessing=preprocessing or Standardize((), (), ()), pretrained=weights is not None,
            weights_origin=origin, rebuild=functools.partial(mlp_source, name, False, None, None, preprocessing),
            modality="tabular", adapt=functools.partial(_adapt, name, weights, preprocessing),
        )
    if not isinstance(n_features, int) or isinstance(n_features, bool) or not 1 <= n_features <= MAX_COLUMNS:
        raise UserError(f"{name} needs from 1 to {MAX_COLUMNS} feature columns, not {n_features!r}")
    pre = preprocessing or Standardize.identity([f"x{i + 1}" for i in range(n_features)])
    if pre.num_features != n_features:
        raise UserError(f"{name} was prepared for {pre.num_features} feature columns ({', '.join(pre.columns[:5])}"
                        f"{', ...' if pre.num_features > 5 else ''}) but the data has {n_features}")
    widths = MLP_WIDTHS[name]
    pairs = zip((n_features, *widths[:-1]), widths, strict=True)
    blocks = OrderedDict(
        (f"hidden{i + 1}", nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU())) for i, (n_in, n_out) in enumerate(pairs)
    )
    if weights is not None:
        state = read_state_dict(weights)
        first = state.get("hidden1.0.weight")
        if first is not None and first.ndim == 2 and first.shape[1] != n_features:
            raise UserError(f"weights file {weights} was trained on {first.shape[1]} feature columns but the data "
                            f"has {n_features}")
        load_checked(nn.Sequential(blocks), state, f"weights file {weights}")
    return Source(
        name=name,
        architecture=name,
        blocks=blocks,
        pool=nn.Identity(),
        num_features=widths[-1],
        preprocessing=pre,
        pretrained=weights is not None,
        weights_origin=origin,
        rebuild=functools.partial(mlp_source, name, False, None, n_features, pre),
        modality="tabular",
    )


def load(r: Request) -> Source:
    """The catalogue's loader of ``mlp_tiny`` and ``mlp_small``."""
    return mlp_source(r.rest, r.pretrained, r.weights)
