"""Tabular datasets: a ``.csv`` (comma) or ``.tsv`` (tab) file with a header, numeric feature columns and a label.

One row is one example. The header names the columns: ``label_column`` holds the class (any string; the class
names are the sorted distinct labels), an optional ``split`` column says train / val / test (case-insensitive,
empty: not split), and every other column is a numeric feature. Splits, ``per_class`` and evaluation caps follow
the rules every modality shares (:func:`transferlab.data.splits.build_data`).

Missing cells (empty, ``nan``, ``NA``, ``N/A``, ``null``, any case) are an error naming the first one, unless
``impute="mean"``: then they stay NaN while reading and, once the data is split, are filled with the column's mean
over the training split (so nothing from val / test leaks into the fill). ``inf`` and numbers too large for 32-bit
floats are always errors. Every problem is one :class:`UserError` sentence naming the file, line and column.

Only numpy and the standard library here: no torch, no pandas.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.folders import DELIMITERS, image_kind
from transferlab.data.splits import SPLITS, Data, build_data
from transferlab.errors import Unusable, UserError, did_you_mean
from transferlab.files import is_regular, read_bounded

IMPUTE = ("none", "mean")
MISSING = frozenset({"", "nan", "-nan", "+nan", "na", "n/a", "null"})  # compared lower-cased and stripped
FLOAT32_MAX = float(np.finfo(np.float32).max)
SPLIT_COLUMN = "split"


@dataclass
class TableSplit:
    """One split of a table: ``features`` (float32, rows x columns; NaN only for cells still to be imputed) and
    integer ``labels``."""

    features: np.ndarray
    labels: np.ndarray
    columns: tuple[str, ...] = ()  # the feature columns' names

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.features.ndim != 2:
            raise ValueError(f"TableSplit features must be 2-D (rows, columns), got shape {self.features.shape}")
        if self.labels.shape != (len(self.features),):
            raise ValueError(
                f"TableSplit has {len(self.features)} rows but labels of shape {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.features)

    def load(self, i: int) -> np.ndarray:
        """Row ``i``: a float32 vector of the feature columns."""
        return self.features[i]

    def subset(self, idx: np.ndarray) -> TableSplit:
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        return TableSplit(self.features[idx], self.labels[idx], self.columns)

    def join(self, other: TableSplit) -> TableSplit:
        return TableSplit(np.concatenate([self.features, other.features]),
                          np.concatenate([self.labels, other.labels]), self.columns)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"table\0")
        digest.update(f"{self.features.shape}\0".encode())
        digest.update(np.ascontiguousarray(self.features, dtype="<f4").tobytes())
        digest.update(b"labels\0" + self.labels.astype("<i8").tobytes())
        return digest.hexdigest()


# --- reading ------------------------------------------------------------------------------------------------


def _delimiter(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in DELIMITERS:
        raise UserError(f"tabular dataset {path} is a {suffix or 'suffix-less'} file; give a .csv (comma-separated) "
                        "or .tsv (tab-separated) file with a header")
    return DELIMITERS[suffix]


def _read_content(path: Path) -> str:
    raw = read_bounded(path, "tabular dataset")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        image = image_kind(raw)
        if image:
            raise UserError(f"{path} is a {image} image, not a table; give a .csv or .tsv file of numbers, or use "
                            "an image source") from None
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as "
                        "UTF-8") from None


def _header(path: Path, reader: csv.Reader, label_column: str) -> list[str]:
    header = [h.strip() for h in next(reader, [])]
    if not any(header):
        raise UserError(f"{path} is empty; give a header line (feature columns and {label_column!r}) and rows")
    for number, name in enumerate(header, 1):
        if not name:
            raise UserError(f"{path} line 1: column {number} has no name; name every column in the header")
        if header.index(name) != number - 1:
            raise UserError(f"{path} line 1: column {name!r} appears twice; give every column its own name")
    if label_column not in header:
        shown = ", ".join(header[:10]) + (f", ... ({len(header)} in all)" if len(header) > 10 else "")
        raise UserError(f"{path} has no column {label_column!r}{did_you_mean(label_column, header)} (its columns: "
                        f"{shown}); name it with --label-column")
    return header


def _data_rows(path: Path, reader: Any, header: list[str]) -> Iterator[tuple[str, list[str]]]:
    """``(FILE line N, cells)`` for every non-blank row, each with as many fields as the header."""
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {reader.line_num}"
        if len(row) != len(header):
            raise UserError(f"{where}: expected {len(header)} fields ({', '.join(header)}), found {len(row)}")
        yield where, row


def _split_of(where: str, value: str) -> str | None:
    value = value.strip().lower()
    if not value:
        return None
    if value not in SPLITS:
        raise UserError(f"{where}: split {value!r} is not one of train, val, test{did_you_mean(value, SPLITS)}")
    return value


def _cell(where: str, column: str, text: str) -> float:
    """One feature cell: a float, NaN when missing; anything else is an error."""
    try:
        return float(text)
    except ValueError:
        if text.strip().lower() in MISSING:
            return float("nan")
        raise UserError(f"{where}, column {column!r}: {text.strip()[:40]!r} is not a number") from None


def read_table(
    path: str | Path, label_column: str = "label", impute: str = "none"
) -> tuple[str, dict[str | None, TableSplit], list[str], list[str]]:
    """Read a table: ``(name, splits as given, class names, feature column names)``.

    ``splits as given`` maps ``None`` to all rows when there is no ``split`` column (or it is empty everywhere),
    else ``"train"`` / ``"val"`` / ``"test"`` to the rows that name it. With ``impute="mean"`` missing cells are
    NaN in the arrays (fill them with :func:`impute_means` once the training split is known); with ``"none"`` the
    first missing cell is an error.
    """
    if impute not in IMPUTE:
        raise UserError(f"--impute must be one of {', '.join(IMPUTE)}, not {impute!r}")
    path = Path(path).expanduser()
    delimiter = _delimiter(path)
    kind = "TSV" if delimiter == "\t" else "CSV"
    content = _read_content(path)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = _header(path, reader, label_column)
    except csv.Error as e:
        raise UserError(f"{path} line 1: malformed {kind} header ({e})") from None
    li = header.index(label_column)
    si = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header and label_column != SPLIT_COLUMN else None
    fi = [i for i in range(len(header)) if i not in (li, si)]
    columns = [header[i] for i in fi]
    if not columns:
        raise UserError(f"{path} has no feature columns, only {', '.join(repr(h) for h in header)}; every column "
                        f"besides {label_column!r} and 'split' is a numeric feature: add some")
    rows: list[list[float]] = []
    labels: list[str] = []
    splits: list[str | None] = []
    lines: list[int] = []
    try:
        for where, row in _data_rows(path, reader, header):
            label = row[li].strip()
            if not label:
                raise UserError(f"{where}, column {label_column!r}: the label is empty; fill it in or remove the row")
            try:
                values = [float(row[i]) for i in fi]
            except ValueError:  # the slow path finds the bad cell
                values = [_cell(where, header[i], row[i]) for i in fi]
            rows.append(values)
            labels.append(label)
            splits.append(_split_of(where, row[si]) if si is not None else None)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num}: malformed {kind} ({e})") from None
    if not rows:
        raise UserError(f"{path} has a header but no rows; add one row per example")
    features = np.asarray(rows, dtype=np.float64)

    def first_bad(mask: np.ndarray) -> tuple[str, float]:
        r, c = np.argwhere(mask)[0]
        return f"{path} line {lines[r]}, column {columns[c]!r}", rows[r][c]

    infinite = np.isinf(features) | (np.abs(np.nan_to_num(features)) > FLOAT32_MAX)
    if infinite.any():
        where, value = first_bad(infinite)
        raise UserError(f"{where}: {str(value)!r} is not a finite 32-bit number; give a finite value (or leave "
                        "the cell empty and pass --impute mean)")
    missing = np.isnan(features)
    if impute == "none" and missing.any():
        where, _ = first_bad(missing)
        raise UserError(f"{where}: the cell is missing; fill it in, or pass --impute mean to fill missing cells "
                        "with the training split's column mean")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserError(f"{path} has only one class ({classes[0]!r}); a classifier needs at least 2 classes")
    named = [s is not None for s in splits]
    if any(named) and not all(named):
        odd = named.index(not named[0])
        what = f"has no split but line {lines[0]} names one" if named[0] else \
            f"names split {splits[odd]!r} but line {lines[0]} has none"
        raise UserError(f"{path} line {lines[odd]}: the row {what}; give every row a split (train, val or test) "
                        "or none")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] for lab in labels], dtype=np.int64)
    given: dict[str | None, TableSplit] = {}
    keys = np.array([s or "" for s in splits])
    for split in dict.fromkeys(splits):
        mask = keys == (split or "")
        given[split] = TableSplit(features[mask], y[mask], tuple(columns))
    return str(path), given, classes, columns


def column_scale(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each column of a training split, ignoring NaN cells, in float64.
    A constant column gets std 1.0, so it maps to 0: constant is a std below 1e-30, or below a millionth of the
    mean (values that far apart are float32 rounding: a column of 0 and 1e-39 is constant, not a scale of 5e-40
    that overflows what it divides; scikit-learn's StandardScaler treats near-zero scales the same way). A column
    with no values gets mean 0 and std 1."""
    x = np.asarray(features, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
        std = np.nanstd(x, axis=0) if len(x) else np.ones(x.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    constant = ~np.isfinite(std) | (std <= 1e-30) | (std <= 1e-6 * np.abs(mean))
    return mean, np.where(constant, 1.0, std)


def standardized(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(features - mean) / std`` in float64, a missing (NaN) cell at 0: the training mean."""
    return np.nan_to_num((np.asarray(features, dtype=np.float64) - mean) / std, nan=0.0)


def impute_means(data: Data, columns: list[str]) -> Data:
    """Fill the NaN cells of all three splits with each column's mean over the training split (in place)."""
    train = data.train.features
    empty = np.isnan(train).all(axis=0) if len(train) else np.zeros(train.shape[1], dtype=bool)
    if empty.any():
        column = columns[int(np.flatnonzero(empty)[0])]
        raise UserError(f"{data.name}: column {column!r} has no values in the training split, so --impute mean "
                        "cannot fill it; give it some training values or remove the column")
    with np.errstate(all="ignore"):
        means = np.nanmean(train.astype(np.float64), axis=0) if len(train) else np.zeros(train.shape[1])
    means = means.astype(np.float32)
    for name, split in data.splits().items():
        filled = np.where(np.isnan(split.features), means, split.features)
        setattr(data, name, TableSplit(filled, split.labels, split.columns))
    return data


def load_table(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    per_class: int | None = None,
    eval_per_class: int | None = None,
    label_column: str = "label",
    impute: str = "none",
) -> Data:
    """Read a ``.csv`` / ``.tsv`` table (see :func:`read_table`) and split it three ways (stratified, seeded;
    ``per_class`` caps the training rows per class; see :func:`~transferlab.data.splits.build_data`).

    With ``impute="mean"`` the missing cells of every split are filled with the training split's column means,
    after splitting and after ``per_class`` (the means come from exactly the rows the model trains on)."""
    name, given, classes, columns = read_table(spec, label_column=label_column, impute=impute)
    data = build_data(name, given, classes, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      per_class=per_class, eval_per_class=eval_per_class, word="rows")
    return impute_means(data, columns) if impute == "mean" else data


def read_rows(path: Path, columns: tuple[str, ...], impute: str, bad: list[tuple[str, str]],
              label_column: str = "label") -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Rows to classify (``predict``), read as ``fit`` read them: by column name, in the run's ``columns`` order,
    whatever their order in the file. A missing column is refused naming it; other columns (a label, an id) are
    ignored and returned, to be named once. A row that cannot be used (a cell that is not a number or not a finite
    32-bit float; a missing cell when the run was trained with ``impute="none"``) goes to ``bad`` as
    ``(FILE line N, reason)``; with ``impute="mean"`` a missing cell stays NaN, which standardises to the
    training split's mean. Returns ``(FILE line N, row)`` per usable row and the ignored columns."""
    try:
        content = _read_content(path)  # unreadable (not UTF-8, an image, a FIFO, too large): skipped and listed
    except UserError as e:
        raise Unusable(str(e)) from None
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=_delimiter(path))
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise UserError(f"{path} is empty; give a header line naming the columns ({_shown(columns)}) and rows")
        missing = [c for c in columns if c not in header]
        if missing:
            raise UserError(f"{path} has no column {missing[0]!r}{did_you_mean(missing[0], header)}: the run was "
                            f"trained on the columns {_shown(columns)}; name them in the header (in any order)")
        where_is = [header.index(c) for c in columns]
        ignored = [h for h in header if h not in columns]
        rows = []
        for where, row in _data_rows(path, reader, header):
            try:
                values = np.array([_predict_cell(where, c, row[i], impute) for c, i in zip(columns, where_is,
                                                                                          strict=True)],
                                  dtype=np.float64)
            except Unusable as e:
                bad.append((where, str(e)))
                continue
            rows.append((where, values))
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num}: malformed table ({e})") from None
    return rows, [h for h in ignored if h]


def _predict_cell(where: str, column: str, text: str, impute: str) -> float:
    try:
        value = float(text)
    except ValueError:
        if text.strip().lower() not in MISSING:
            raise Unusable(f"column {column!r}: {text.strip()[:40]!r} is not a number") from None
        value = float("nan")
    if math.isnan(value):
        if impute != "mean":
            raise Unusable(f"column {column!r}: the cell is missing, and the run was trained with --impute none")
        return value
    if not abs(value) <= FLOAT32_MAX:
        raise Unusable(f"column {column!r}: {text.strip()[:40]!r} is not a finite 32-bit number")
    return value


def _shown(columns: tuple[str, ...] | list[str]) -> str:
    return ", ".join(columns[:10]) + (f", ... ({len(columns)} in all)" if len(columns) > 10 else "")


def looks_tabular(path: Path, label_column: str = "label") -> bool:
    """Whether a ``.csv`` / ``.tsv`` file looks like a table: it reads only the header and the first data row, and
    says yes when that row has a cell under every header column and each cell besides ``label_column`` and
    ``split`` parses as a number (or is missing). An image CSV (``path,label``) or a text CSV (``text,label``)
    says no. Never raises: an unreadable file is not tabular."""
    path = Path(path)
    delimiter = DELIMITERS.get(path.suffix.lower())
    if delimiter is None or not is_regular(path):  # a FIFO would block the first read
        return False
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = [h.strip() for h in next(reader, [])]
            row = next((r for r in reader if any(c.strip() for c in r)), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if label_column not in header or row is None or len(row) != len(header):
        return False
    cells = [c for h, c in zip(header, row, strict=True) if h not in (label_column, SPLIT_COLUMN)]
    if not cells:
        return False
    for cell in cells:
        try:
            float(cell)
        except ValueError:
            if cell.strip().lower() not in MISSING:
                return False
    return True
