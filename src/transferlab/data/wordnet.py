"""WordNet noun glosses labelled with their lexicographer file: the built-in text task.

``wordnet[:classes=animal+food,per_class=N,set=bundled|full,dir=PATH]``. The bundled set (inside the package,
with WordNet's licence) holds 500 glosses for each of the eight default categories; ``set=full`` reads every
noun gloss from a WordNet database folder (the standard ``data.noun`` file): ``dir=PATH``, the environment
variable ``TRANSFERLAB_WORDNET_DIR``, or Debian's ``wordnet-base`` at ``/usr/share/wordnet``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transferlab.errors import UserError, did_you_mean
from transferlab.files import check_file

SPEC_NAME = "wordnet"
ENV_VAR = "TRANSFERLAB_WORDNET_DIR"
DEBIAN_DIR = Path("/usr/share/wordnet")
BUNDLED = "wordnet_nouns.tsv.gz"
OPTIONS = ("classes", "per_class", "set", "dir")
DEFAULT_CLASSES = ("animal", "artifact", "body", "food", "location", "person", "plant", "substance")
# lexnames(5WN): the lexicographer file numbers of the noun categories (3 = noun.Tops ... 28 = noun.time)
NOUN_LEXNAMES = (
    "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication", "event", "feeling",
    "food", "group", "location", "motive", "object", "person", "phenomenon", "plant", "possession", "process",
    "quantity", "relation", "shape", "state", "substance", "time",
)
FIRST_NOUN_FILE = 3


@dataclass(frozen=True)
class WordNetSpec:
    classes: tuple[str, ...] = DEFAULT_CLASSES
    per_class: int | None = None
    full: bool = False
    dir: Path | None = None


def parse_wordnet_spec(spec: str) -> WordNetSpec | None:
    """The parsed spec, or None when ``spec`` does not name the built-in WordNet task."""
    name, colon, rest = spec.partition(":")
    if name != SPEC_NAME:
        return None
    values: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in OPTIONS:
            raise UserError(f"dataset {spec!r}: unknown option {key!r}{did_you_mean(key, OPTIONS)}; "
                            f"options are {', '.join(OPTIONS)}, e.g. wordnet:classes=animal+plant,set=full")
        values[key] = value
    classes = tuple(values["classes"].split("+")) if "classes" in values else DEFAULT_CLASSES
    for c in classes:
        if c not in NOUN_LEXNAMES:
            raise UserError(f"dataset {spec!r}: {c!r} is not a WordNet noun category{did_you_mean(c, NOUN_LEXNAMES)}")
    if len(set(classes)) < 2:
        raise UserError(f"dataset {spec!r}: a classifier needs at least 2 different classes")
    per_class = None
    if "per_class" in values:
        try:
            per_class = int(values["per_class"])
        except ValueError:
            raise UserError(f"dataset {spec!r}: per_class={values['per_class']!r} is not a whole number") from None
    if values.get("set", "bundled") not in ("bundled", "full"):
        raise UserError(f"dataset {spec!r}: set must be 'bundled' or 'full'")
    full = values.get("set") == "full" or "dir" in values
    return WordNetSpec(classes, per_class, full, Path(values["dir"]).expanduser() if "dir" in values else None)


def find_wordnet_dir(given: Path | None = None) -> Path:
    """The WordNet database folder holding ``data.noun``."""
    candidates = [given] if given else [Path(p) for p in [os.environ.get(ENV_VAR)] if p] + [DEBIAN_DIR]
    for folder in candidates:
        if (folder / "data.noun").is_file():
            return folder
    where = given or f"${ENV_VAR} or {DEBIAN_DIR}"
    raise UserError(f"no WordNet database (data.noun) found in {where}; pass dir=PATH to a WordNet 3.x 'dict' "
                    "folder, or use the bundled set")


def read_data_file(path: Path) -> Iterator[tuple[str, int, str, str]]:
    """(synset offset, lexicographer file number, lemmas joined by spaces, definition) for every synset line of
    a WordNet ``data.*`` file. The definition is the gloss up to its first quoted example."""
    check_file(path, "WordNet file")
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  "):  # the licence header
                continue
            head, bar, gloss = line.partition(" | ")
            fields = head.split()
            try:
                count = int(fields[3], 16)
                lemmas = " ".join(fields[4 + 2 * i].replace("_", " ") for i in range(count))
                lexfile = int(fields[1])
            except (IndexError, ValueError):
                raise UserError(f"{path} line {number} is not a WordNet synset line") from None
            definition = gloss.split('; "')[0].strip().rstrip(";").strip()
            if bar and definition:
                yield fields[0], lexfile, lemmas, definition


def noun_glosses(folder: Path, classes: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(offset, category, definition) for every noun synset in ``classes``, in file order."""
    wanted = {NOUN_LEXNAMES.index(c) + FIRST_NOUN_FILE: c for c in classes}
    return [(o, wanted[lex], d) for o, lex, _, d in read_data_file(folder / "data.noun") if lex in wanted]


def bundled_rows() -> list[tuple[str, str, str]]:
    """(offset, category, definition) of the bundled subset."""
    blob = resources.files("transferlab.data").joinpath("bundled", BUNDLED).read_bytes()
    reader = csv.reader(io.StringIO(gzip.decompress(blob).decode("utf-8")), delimiter="\t")
    return [(o, c, d) for o, c, d in reader]


def load_wordnet_rows(spec: WordNetSpec) -> list[tuple[str, str, str]]:
    if spec.full:
        return noun_glosses(find_wordnet_dir(spec.dir), spec.classes)
    rows = bundled_rows()
    have = {c for _, c, _ in rows}
    missing = [c for c in spec.classes if c not in have]
    if missing:
        raise UserError(f"the bundled WordNet set holds {', '.join(sorted(have))}; {missing[0]!r} needs set=full")
    return [r for r in rows if r[1] in spec.classes]


def corpus(folder: Path, exclude: set[str] = frozenset()) -> Iterator[str]:
    """Every gloss and lemma line of a WordNet database (all parts of speech), skipping noun synsets whose
    offset is in ``exclude``: an unlabelled corpus for ``pretrain-vectors``."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = folder / f"data.{pos}"
        check_file(path, "WordNet file")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition(" | ")
                if pos == "noun" and head.split(" ", 1)[0] in exclude:
                    continue
                yield gloss.replace('"', " ").strip()
