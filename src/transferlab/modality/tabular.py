"""Tables: CSV/TSV files of numeric feature columns and a label column (the develop model approach in its simplest
form). Built-in MLPs are bound to the table's feature count with a standardisation fitted on its training split; a
developed source keeps the standardisation it was trained with, so its features mean what they meant."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferlab.cardcheck import card_error, show
from transferlab.data.folders import DELIMITERS
from transferlab.data.tabular import load_table, looks_tabular, read_rows
from transferlab.errors import UserError
from transferlab.modality import MODALITIES, Modality

if TYPE_CHECKING:
    from transferlab.config import FitConfig
    from transferlab.data.splits import Data
    from transferlab.sources.base import Source


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
        source must take as many columns as the table has."""
        columns = list(data.train.columns)
        if source.adapt is not None:
            from transferlab.sources.mlp import fit_standardize

            return source.adapt(len(columns), fit_standardize(data.train.features, columns))
        takes = source.preprocessing.columns
        if len(takes) != len(columns):
            raise UserError(f"the source {source.name} takes {len(takes)} feature columns ({_names(takes)}) but "
                            f"{data.name} has {len(columns)} ({_names(columns)})")
        return source

    def example(self, source: Source) -> Source:
        return source if source.adapt is None else source.adapt(2)  # blocks for two feature columns

    def bind_card(self, source: Source, preprocessing: dict[str, Any]) -> Source:
        if source.adapt is None:
            return source
        return source.adapt(len(preprocessing["columns"]), self.preprocessing_from_dict(preprocessing))

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

    def predict_inputs(self, paths: list[Path], texts: list[str], bad: list[tuple[str, str]],
                       ) -> tuple[list[tuple[str, Any]], int]:
        """Every row of each table (its label column, if any, is ignored), shown as ``FILE:LINE``."""
        if texts:
            raise UserError("--text needs a text run; this run classifies table rows")
        items: list[tuple[str, Any]] = []
        for f in paths:
            if f.is_dir():
                raise UserError(f"{f} is a folder; give .csv or .tsv tables")
            items += read_rows(f)
        return items, len(paths)


def is_number32(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _names(columns: Any) -> str:
    shown = ", ".join(list(columns)[:5])
    return shown + (", ..." if len(columns) > 5 else "")


MODALITIES.register("tabular")(TabularModality())
