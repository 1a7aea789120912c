"""Modalities: one object per kind of data (image, text, tabular) owning everything that differs between them.

Shared code (training, the experiments, run directories, ``predict``, the CLI) asks the data's modality and
holds no modality branch. Importing this package imports no torch: preflight checks use :meth:`Modality.claims`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from transferlab.registry import Registry

if TYPE_CHECKING:
    from pathlib import Path

    from transferlab.config import FitConfig
    from transferlab.data.splits import Data
    from transferlab.sources.base import Source

MODALITIES: Registry[Modality] = Registry("modality")
MODALITY_NAMES = ("image", "text", "tabular")  # each a module here that registers one Modality


class Modality:
    """What a kind of data needs from the shared pipeline. Subclasses set the class variables and override what
    differs; the defaults suit data that needs no binding and no resizing."""

    name: ClassVar[str]
    word: ClassVar[str]  # the examples in messages: images, texts, rows
    default_lr: ClassVar[tuple[float, float]]  # (lr of the head and new blocks, backbone_lr_mult) when not given
    options: ClassVar[tuple[str, ...]] = ()  # FitConfig fields only this modality uses (reports show no others)
    channels_last: ClassVar[bool] = False  # batches are 4-D images worth the channels_last layout
    predict_column: ClassVar[str] = "input"  # the first column of predict's CSV

    # --- before any slow import (preflight): no torch ---------------------------------------------------------
    def claims(self, spec: str) -> bool | None:
        """Whether the data spec is this modality's (True), not (False) or cannot be told without reading it."""
        return None

    # --- data ----------------------------------------------------------------------------------------------
    def load(self, cfg: FitConfig) -> Data:
        """The dataset ``cfg.data`` names, split as ``cfg`` says (``split_seed``, fractions, per-class caps)."""
        raise NotImplementedError

    # --- binding a source to the data -----------------------------------------------------------------------
    def bind(self, source: Source, data: Data, cfg: FitConfig) -> Source:
        """The source ready for ``data`` (word vectors: over its vocabulary; an MLP: for its feature count)."""
        return source

    def example(self, source: Source) -> Source:
        """The source bound to a small made-up dataset, to show its blocks (``transferlab sources --blocks``)."""
        return source

    def bind_card(self, source: Source, preprocessing: dict[str, Any]) -> Source:
        """A rebuilt architecture bound as the run card's preprocessing says (see :meth:`bind`)."""
        return source

    def preprocessing(self, source: Source, data: Data, cfg: FitConfig, on_cpu: bool,
                      recorded: dict[str, Any] | None = None) -> Any:
        """The preprocessing the run uses (``recorded``: what a resumed run's config.json says it used)."""
        return source.preprocessing

    def shared_options(self, source: Source, data: Data, cfg: FitConfig, on_cpu: bool) -> dict[str, Any]:
        """Options that give every cell of an experiment the same preprocessing as ``source`` on ``data`` would
        get (images: one input size). Nothing by default."""
        return {}

    def preprocessing_from_dict(self, d: dict[str, Any]) -> Any:
        raise NotImplementedError

    def check_card(self, card_path: Path, preprocessing: dict[str, Any]) -> None:
        """Refuse a run card's preprocessing that is malformed for this modality (one sentence naming the field)."""

    def raw_features(self, splits: list[Any]) -> list[Any]:
        """Each split's raw inputs as a matrix for the simple baseline (:mod:`transferlab.evaluate.logreg`),
        any scaling fitted on the first split (the training split)."""
        raise NotImplementedError

    # --- predict and export ----------------------------------------------------------------------------------
    def export_examples(self, pre: Any) -> tuple[list[Any], dict[int, str]]:
        """Two made-up raw inputs (as ``predict`` reads them) that ``export`` traces the model with and checks the
        exported file on, and the names of the input's dimensions that may vary (the batch, a text's length)."""
        raise NotImplementedError

    def predict_inputs(self, paths: list[Path], texts: list[str], bad: list[tuple[str, str]], pre: Any,
                       options: dict[str, Any]) -> tuple[list[tuple[str, Any]], int]:
        """What ``predict`` classifies, and from how many files: ``(shown, raw)`` per input, where ``raw`` is the
        example itself or a callable that reads it (raising :class:`transferlab.errors.Unusable` with the reason).
        Inputs that cannot be used, found here, go to ``bad`` as ``(where, why)``. ``pre`` is the run's
        preprocessing; ``options`` the run's reading options (``text_column``, ``label_column``), as ``predict``
        was told or the run recorded them."""
        raise NotImplementedError


def get(name: str) -> Modality:
    """The registered modality called ``name`` (its module is imported on first use)."""
    if name not in MODALITIES and name in MODALITY_NAMES:
        importlib.import_module(f"transferlab.modality.{name}")
    return MODALITIES.get(name)


def all_modalities() -> list[Modality]:
    return [get(name) for name in MODALITY_NAMES]


def of_data(spec: str) -> Modality | None:
    """The modality a data spec claims without reading it, or None when it cannot be told."""
    for m in all_modalities():
        if m.claims(spec):
            return m
    return None


