"""Tables: CSV/TSV files of numeric feature columns and a label column (the develop model approach in its simplest
form). Built-in MLPs are bound to the table's feature count with a standardisation fitted on its training split; a
developed source keeps the standardisation it was trained with, so its features mean what they meant; its
architecture from random weights (``scratch``) knows nothing of the source's data, its scale included, and is
standardised as the target's training split is."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab.cardcheck import card_error, show
from transferlab.data.folders import DELIMITERS
from transferlab.data.tabular import TableSplit, column_scale, load_table, looks_tabular, read_rows, standardized
from transferlab.errors import Unusable, UserError
from transferlab.modality import MODALITIES, Modality

if TYPE_CHECKING:
    from transferlab.config import FitConfig
    from transferlab.data.splits import Data
    from transferlab.sources.base import Source


log = logging.getLogger(__name__)
MAX_COLUMNS = 100_000
FLOAT32_MAX = 3.4028234663852886e38


class TabularModality(Modality):
    name = "tabular"
    word = "rows"
    # Measured on the same-centres blobs (README, Tables): at 5 rows per class and 20 epochs a small MLP from
    # scratch reached 0.864 at 1e-3 and 0.899 at 1e-2, a head on a developed MLP 0.520 and 0.923; with every row,
    # scratch 0.928 and 0.927 (10 seeds each).
    default_lr = (1e-2, 0.1)
    options = ("impute",)
    predict_column = "row"

    def claims(self, spec: str) -> bool | None:
        path = Path(spec).expanduser()
        if not path.is_file() or path.suffix.lower() not in DELIMITERS:
            return False
        return looks_tabular(path) or None  # a --label-column other than "label" is told by the source

    def load(self, cfg: FitConfig) -> Data:
        return load_table(cfg.data, seed=cfg.data_seed,
                          val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, per_class=cfg.per_class,
                          eval_per_class=cfg.eval_per_class, label_column=cfg.label_column, impute=cfg.impute)

    def bind(self, source: Source, data: Data, cfg: FitConfig) -> Source:
        """A built-in MLP is built for the table's columns, standardised as its training split is; a developed
        source takes its columns by name, in its own order (a missing or renamed column is refused), and keeps its
        standardisation, unless its weights are random (``scratch:<source>``, the ``scratch`` strategy). Either way
        the run records its own ``--impute``."""
        columns = list(data.train.columns)
        if source.adapt is not None:
            from transferlab.sources.mlp import fit_standardize

            return source.adapt(len(columns), fit_standardize(data.train.features, columns, cfg.impute))
        takes = list(source.preprocessing.columns)
        missing = [c for c in takes if c not in columns]
        if missing or len(takes) != len(columns):
            what = f"no column {missing[0]!r}" if missing else f"{len(columns)} feature columns ({_names(columns)})"
            raise UserError(f"the source {source.name} takes the feature columns {_names(takes)} but {data.name} has "
                            f"{what}; give the table the source's columns (their order does not matter)")
        if takes != columns:  # the same columns in another order: read them in the source's order
            order = np.array([columns.index(c) for c in takes])
            for name, split in data.splits().items():
                setattr(data, name, TableSplit(split.features[:, order], split.labels, tuple(takes)))
        if not source.pretrained:
            # the source's scale would shift and squeeze the target's columns: problem 1's on problem 2 of the
            # README's blobs held the layers sweep's scratch arm at 0.771, against 0.810 scaled on its own rows
            from transferlab.sources.mlp import fit_standardize

            return dataclasses.replace(source, preprocessing=fit_standardize(data.train.features, takes, cfg.impute))
        return dataclasses.replace(source, preprocessing=dataclasses.replace(source.preprocessing,
                                                                             impute=cfg.impute))

    def preprocessing(self, source: Source, data: Data, cfg: FitConfig, on_cpu: bool,
                      recorded: dict[str, Any] | None = None) -> Any:
        """The source's standardisation, after checking that every value of every split stays a finite float32
        once standardised (a value near the float32 limit far from the training mean does not)."""
        pre = source.preprocessing
        for name, split in data.splits().items():
            at = pre.transform().too_large(split.features)
            if at is not None:
                raise UserError(f"{data.name}: the {name} split's row {at[0] + 1}, column {pre.columns[at[1]]!r} "
                                f"({split.features[at]:g}) is too far from the training mean "
                                f"({pre.mean[at[1]]:g}, standard deviation {pre.std[at[1]]:g}) to standardise in "
                                "32-bit floats; rescale that column")
        return pre

    def example(self, source: Source) -> Source:
        return source if source.adapt is None else source.adapt(2)  # blocks for two feature columns

    def bind_card(self, source: Source, preprocessing: dict[str, Any]) -> Source:
        if source.adapt is None:
            return source
        return source.adapt(len(preprocessing["columns"]), self.preprocessing_from_dict(preprocessing))

    def raw_features(self, splits: list[Any]) -> list[Any]:
        """Standardised columns (scaled on the training split), a missing cell at the training mean."""
        mean, std = column_scale(splits[0].features)
        return [standardized(s.features, mean, std) for s in splits]

    def preprocessing_from_dict(self, d: dict[str, Any]) -> Any:
        from transferlab.sources.mlp import Standardize

        return Standardize.from_dict(d)

    def check_card(self, card_path: Path, d: dict[str, Any]) -> None:
        """One sentence naming ``card_path`` and the field at fault unless ``d`` is a sound standardisation."""
        if d.get("kind") != "standardize":
            raise card_error(card_path, "preprocessing.kind",
                             f"must be 'standardize' for a tabular run, not {show(d.get('kind'))}")
        columns = d.get("columns")
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) and c for c in columns):
            raise card_error(card_path, "preprocessing.columns", "must be a non-empty list of non-empty strings")
        if len(columns) > MAX_COLUMNS:
            raise card_error(card_path, "preprocessing.columns",
                             f"must name at most {MAX_COLUMNS} columns, not {len(columns)}")
        if len(set(columns)) != len(columns):
            raise card_error(card_path, "preprocessing.columns", "must not repeat a name")
        for name in ("mean", "std"):
            v = d.get(name)
            if not isinstance(v, list) or len(v) != len(columns) or not all(is_number32(x) for x in v):
                raise card_error(card_path, f"preprocessing.{name}",
                                 f"must be a list of {len(columns)} finite numbers (one per column), not {show(v)}")
        if not all(x > 1e-38 for x in d["std"]):  # positive as a 32-bit float too
            raise card_error(card_path, "preprocessing.std",
                             f"must be positive (it divides every feature), not {show(d['std'])}")
        if d.get("impute", "none") not in ("none", "mean"):
            raise card_error(card_path, "preprocessing.impute", f"must be 'none' or 'mean', not {show(d['impute'])}")

    def export_examples(self, pre: Any) -> tuple[list[Any], dict[int, str]]:
        mean, std = np.asarray(pre.mean), np.asarray(pre.std)
        return [mean - std, mean + 2 * std], {0: "batch"}  # rows in the table's own units

    def predict_inputs(self, paths: list[Path], texts: list[str], bad: list[tuple[str, str]], pre: Any,
                       options: dict[str, Any]) -> tuple[list[tuple[str, Any]], int]:
        """Every usable row of each table, its columns read by name (see :func:`read_rows`), shown as
        ``FILE line N``; unusable rows and unreadable tables go to ``bad``."""
        if texts:
            raise UserError("--text needs a text run; this run classifies table rows")
        items: list[tuple[str, Any]] = []
        for f in paths:
            if f.is_dir():
                raise UserError(f"{f} is a folder; give .csv or .tsv tables")
            try:
                rows, ignored = read_rows(f, pre.columns, pre.impute, bad, options.get("label_column", "label"))
            except Unusable as e:
                bad.append((str(f), str(e)))
                continue
            if ignored:
                log.warning("%s: ignoring %s (not feature columns of this run)", f, ", ".join(map(repr, ignored)))
            filled = sum(int(np.isnan(r).sum()) for _, r in rows)
            if filled:
                log.warning("%s: filled %d missing cells with the training split's column means (the run was trained "
                            "with --impute mean)", f, filled)
            items += rows
        return items, len(paths)


def is_number32(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _names(columns: Any) -> str:
    shown = ", ".join(list(columns)[:5])
    return shown + (", ..." if len(columns) > 5 else "")


MODALITIES.register("tabular")(TabularModality())
