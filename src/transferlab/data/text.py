"""Text datasets: CSV / TSV / JSONL files, folders of ``.txt`` files, and the built-in WordNet task.

The same split rules as images (stratified, seeded, ``per_class`` nested across sizes, optional ``split``
column or ``train/ val/ test/`` folders). Every problem names the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data.folders import DELIMITERS, IMAGE_SUFFIXES, class_folders, files_under, image_kind
from transferlab.data.splits import SPLITS, Data, build_data
from transferlab.data.wordnet import SPEC_NAME, load_wordnet_rows, parse_wordnet_spec
from transferlab.errors import UserError, did_you_mean
from transferlab.files import read_bounded

ENCODING_ERRORS = ("strict", "replace")


@dataclass
class TextSplit:
    """One split of a text dataset: the texts and their integer labels."""

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.texts),):
            raise ValueError(f"TextSplit has {len(self.texts)} texts but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.texts)

    def load(self, i: int) -> str:
        return self.texts[i]

    def subset(self, idx: np.ndarray) -> TextSplit:
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        return TextSplit([self.texts[i] for i in idx], self.labels[idx])

    def join(self, other: TextSplit) -> TextSplit:
        return TextSplit([*self.texts, *other.texts], np.concatenate([self.labels, other.labels]))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"texts\0")
        for text in self.texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(b"labels\0" + self.labels.astype("<i8").tobytes())
        return digest.hexdigest()


def decoded(raw: bytes, errors: str = "strict") -> tuple[str, str | None]:
    """(text, None), or ("", why it is not text): an image, or invalid UTF-8 at a line."""
    image = image_kind(raw)
    if image:
        return "", f"a {image} image, not text"
    try:
        return raw.decode("utf-8-sig", errors=errors), None
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return "", f"line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x})"


def decode_text(path: Path, raw: bytes, errors: str) -> str:
    text, why = decoded(raw, errors)
    if why is None:
        return text
    if why.startswith("a "):
        raise UserError(f"{path} is {why}; give text files, or use an image source")
    raise UserError(f"{path} {why}; save it as UTF-8 or pass --encoding-errors replace to accept it")


def _read_text_file(path: Path, errors: str) -> str:
    return decode_text(path, read_bounded(path, "text file"), errors)


Rows = list[tuple[str | None, str, str, str]]  # (split or None, label, text, where)


def _check_row(where: str, text: str, label: str) -> None:
    if not text.strip():
        raise UserError(f"{where}: the text is empty; remove the row or fill it in")
    if not label.strip():
        raise UserError(f"{where}: the label is empty")


def _split_of(where: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: split must be train, val or test, not {value!r}")
    value = value.strip().lower()
    if value not in SPLITS:
        raise UserError(f"{where}: split {value!r} is not one of train, val, test{did_you_mean(value, SPLITS)}")
    return value


def _read_table(path: Path, text_column: str, label_column: str, errors: str) -> Rows:
    content = _read_text_file(path, errors)
    delimiter = DELIMITERS[path.suffix.lower()]
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as e:
        raise UserError(f"{path} line 1: malformed header ({e})") from None
    for column, option in ((text_column, "--text-column"), (label_column, "--label-column")):
        if column not in header:
            raise UserError(
                f"{path} has no column {column!r}{did_you_mean(column, header)} (its columns: {', '.join(header)}); "
                f"name the right one with {option}"
            )
    ti, li = header.index(text_column), header.index(label_column)
    si = header.index("split") if "split" in header else None
    rows: Rows = []
    try:
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise UserError(f"{where}: expected {len(header)} fields ({', '.join(header)}), found {len(row)}")
            _check_row(where, row[ti], row[li])
            rows.append((_split_of(where, row[si] if si is not None else None), row[li].strip(), row[ti], where))
    except csv.Error as e:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise UserError(f"{path} line {reader.line_num}: malformed {kind} ({e})") from None
    return rows


def _read_jsonl(path: Path, text_column: str, label_column: str, errors: str) -> Rows:
    rows: Rows = []
    for number, line in enumerate(_read_text_file(path, errors).split("\n"), 1):  # JSON strings may hold U+2028
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where} is not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object with {text_column!r} and {label_column!r}")
        for key, option in ((text_column, "--text-column"), (label_column, "--label-column")):
            if key not in obj:
                hint = did_you_mean(key, obj)
                raise UserError(f"{where} has no field {key!r}{hint}; name the right one with {option}")
        text, label = obj[text_column], obj[label_column]
        if not isinstance(text, str):
            raise UserError(f"{where}: field {text_column!r} must be a string")
        label = str(label) if isinstance(label, (str, int)) and not isinstance(label, bool) else None
        if label is None:
            raise UserError(f"{where}: field {label_column!r} must be a string or an integer")
        _check_row(where, text, label)
        rows.append((_split_of(where, obj.get("split")), label.strip(), text, where))
    return rows


def read_column(path: Path, column: str) -> list[str]:
    """The non-empty texts of one column of a CSV, TSV or JSONL file (``predict``), read as ``fit`` reads them:
    a missing column is one sentence naming it; rows without a label are welcome."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        texts = []
        for number, line in enumerate(_read_text_file(path, "strict").split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {number} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(column), str):
                raise UserError(f"{path} line {number} has no text field {column!r}; name it with --text-column")
            texts.append(obj[column])
        return [t for t in texts if t.strip()]
    reader = csv.reader(io.StringIO(_read_text_file(path, "strict"), newline=""),
                        delimiter=DELIMITERS[path.suffix.lower()])
    try:
        header = [h.strip() for h in next(reader, [])]
        if column not in header:
            raise UserError(f"{path} has no column {column!r}{did_you_mean(column, header)} (its columns: "
                            f"{', '.join(header)}); name the text column with --text-column")
        i = header.index(column)
        return [row[i] for row in reader if len(row) > i and row[i].strip()]
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num}: malformed file ({e})") from None


def _read_folder(root: Path, errors: str) -> Rows:
    layout = {s: class_folders(root / s, "texts") for s in SPLITS if (root / s).is_dir()} if (root / "train").is_dir() \
        else {None: class_folders(root, "texts")}
    rows: Rows = []
    for split, classes in layout.items():
        for label, folder in classes.items():
            files = [f for f in files_under(folder) if f.suffix.lower() == ".txt"]
            if not files:
                images = any(f.suffix.lower() in IMAGE_SUFFIXES for f in files_under(folder))
                raise UserError(f"{folder} holds images, not texts, but the source takes text: use an image source "
                                "or give texts" if images else
                                f"{folder} holds no .txt files; put one text per .txt file in each class folder")
            for f in files:
                text = _read_text_file(f, errors)
                _check_row(str(f), text, label)
                rows.append((split, label, text.strip(), str(f)))
    return rows


def _read_rows(spec: str, text_column: str, label_column: str, errors: str) -> tuple[str, Rows]:
    wordnet = parse_wordnet_spec(spec)
    if wordnet is not None:
        return spec, [(None, label, text, f"wordnet {offset}") for offset, label, text in load_wordnet_rows(wordnet)]
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path), _read_folder(path, errors)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv", ".tab"):
            return str(path), _read_table(path, text_column, label_column, errors)
        if suffix in (".jsonl", ".ndjson"):
            return str(path), _read_jsonl(path, text_column, label_column, errors)
        raise UserError(f"text dataset {spec!r} is a {suffix or 'suffix-less'} file; give a .csv, .tsv or .jsonl "
                        "file, a folder of class folders holding .txt files, or 'wordnet'")
    hint = did_you_mean(spec.partition(":")[0], [SPEC_NAME])
    raise UserError(f"text dataset {spec!r} does not exist{hint}; give a .csv, .tsv or .jsonl file, a folder, or "
                    "'wordnet'")


def load_texts(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    per_class: int | None = None,
    eval_per_class: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    encoding_errors: str = "strict",
) -> Data:
    """Load a text classification dataset and split it into train / val / test (see :func:`load_images`).

    ``spec`` is ``wordnet[:classes=animal+food,per_class=N,set=bundled|full,dir=PATH]`` (built in), a ``.csv``
    or ``.tsv`` file with a header (``text_column``, ``label_column``, optional ``split``), a ``.jsonl`` file of
    objects with those keys, or a folder with one subfolder of ``.txt`` files per class (optionally inside
    ``train/ val/ test/``). Invalid UTF-8 is an error naming the line unless ``encoding_errors="replace"``.
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise UserError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}, not {encoding_errors!r}")
    wordnet = parse_wordnet_spec(spec)
    if wordnet is not None and per_class is None:
        per_class = wordnet.per_class
    name, rows = _read_rows(spec, text_column, label_column, encoding_errors)
    if not rows:
        raise UserError(f"{name} holds no texts")
    classes = sorted({label for _, label, _, _ in rows})
    if len(classes) < 2:
        raise UserError(f"{name} has only one class ({classes[0]!r}); a classifier needs at least 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    given: dict[str | None, TextSplit] = {}
    for split in dict.fromkeys(s for s, _, _, _ in rows):
        part = [(t, index[lab]) for s, lab, t, _ in rows if s == split]
        given[split] = TextSplit([t for t, _ in part], np.array([y for _, y in part]))
    return build_data(name, given, classes, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      per_class=per_class, eval_per_class=eval_per_class, word="texts",
                      corpus=[t for _, _, t, _ in rows])
