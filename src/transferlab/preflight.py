"""Checks of a command's input that need no slow import (no torch, Lightning or timm).

Every command runs these first, so a wrong path, option, source name or occupied output folder is one sentence
within a fraction of a second instead of after the models have loaded (``benchmarks/error_latency.py``
measures it). What can only be checked with the model in hand (an input size too small for it, ``--reuse``
beyond its blocks) is checked later, still before anything is written.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transferlab import catalogue, modality
from transferlab.catalogue import canonical
from transferlab.data.fashion_mnist import parse_fashion_mnist_spec
from transferlab.data.wordnet import parse_wordnet_spec
from transferlab.errors import UserError
from transferlab.files import LOCK, check_overwritable, is_global_zero, read_json

DATA_SUFFIXES = (".csv", ".tsv", ".jsonl")
EXPORT_SCHEMA = "transferlab.export/1"
EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch's ONNX exporter imports


def check_source(spec: str, option: str = "--source") -> None:
    """A source the catalogue knows: a built-in, a known prefix, random word embeddings or an existing path of a
    kind it declares (a run directory, a word-vectors file or store)."""
    if not canonical(spec.removeprefix("scratch:")):
        raise UserError(f"{option} is empty: name a source (see `transferlab sources`)")
    if catalogue.find_source(spec) is None:
        raise catalogue.unknown_source(spec, option)


def check_data(spec: str, option: str = "DATA") -> None:
    """A built-in task with valid options, or a path that exists (a folder, or a .csv/.tsv/.jsonl file)."""
    if parse_fashion_mnist_spec(spec) is not None or parse_wordnet_spec(spec) is not None:
        return  # a bad option of a built-in task has raised by now
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"{option} {spec} does not exist: give a folder of class subfolders, a .csv/.tsv/.jsonl "
                        "file (images, texts or a table), or a built-in task (fashion-mnist[:options], "
                        "wordnet[:options])")
    if path.is_file() and path.suffix.lower() not in DATA_SUFFIXES:
        raise UserError(f"{option} {spec} is a {path.suffix or 'suffix-less'} file; give a folder of class "
                        "subfolders or a .csv, .tsv or .jsonl file")


def resolve_modality(data: str, sources: list[str]) -> str | None:
    """The modality of ``data`` and ``sources`` as far as their names, headers and cards tell (None: they do not).
    Images given to a text source (or any other mix) is one sentence naming both."""
    claimed = modality.of_data(data)
    kind = claimed.name if claimed is not None else None
    for spec in sources:
        takes = catalogue.source_modality(spec)
        if kind is not None and takes is not None and kind != takes:
            have, want = modality.get(kind), modality.get(takes)
            raise UserError(f"{data} holds {have.word} but the source {spec} takes {want.word}: use a source for "
                            f"{have.word}, or {want.word} as data")
        kind = kind or takes
    return kind


def decide_modality(data: str, specs: list[str], loaded: dict[str, str] | None = None) -> modality.Modality | None:
    """The one modality of ``data`` and every source, decided once per command: from the names, headers and cards
    (:func:`resolve_modality`), then from sources already loaded (``loaded``: spec -> the modality it takes). A
    mix is one sentence naming the odd source out; None when nothing tells yet (load a source and ask again)."""
    name = resolve_modality(data, specs)
    for spec, takes in (loaded or {}).items():
        if name is not None and takes != name:
            have, want = modality.get(name), modality.get(takes)
            raise UserError(f"the source {spec} takes {want.word} but the data and the other sources are "
                            f"{have.word}; use sources of one modality")
        name = name or takes
    return None if name is None else modality.get(name)


def check_out(out: Path, resume: bool, overwrite: bool, kind: str = "run") -> None:
    """The output folder can be written as asked (the same checks run again, locked, before writing)."""
    out = Path(out)
    if not is_global_zero():  # under DDP rank 0 owns the folder (the others start once it has written there)
        return
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: continue the run, or start it over")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if not out.is_dir() or not any(p.name != LOCK for p in out.iterdir()) or resume:
        return
    if overwrite:
        check_overwritable(out, kind)
    else:
        what = "that run" if kind == "run" else "it"
        raise UserError(f"--out {out} already holds files: pass --resume to continue {what} or --overwrite to start "
                        "over")


def check_fit(data: str, source: str, out: Path, resume: bool, overwrite: bool) -> None:
    check_data(data)
    check_source(source)
    resolve_modality(data, [source])
    check_out(out, resume, overwrite)


def check_export(out: Path, fmt: str) -> None:
    """``export``: a known format whose packages are installed (one sentence naming the extra), and an ``out``
    that is new or an earlier export (its sidecar says so): never replace a file transferlab did not write."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None] if fmt == "onnx" else []
    if missing:
        raise UserError(f"--format onnx needs the package{'s' * (len(missing) > 1)} {' and '.join(missing)}: "
                        "pip install 'transferlab[export]'")
    sidecar = Path(f"{out}.json")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give the file to write, such as {out / 'model.onnx'}")
    if out.exists() or out.is_symlink():
        try:
            ours = read_json(sidecar, "export sidecar").get("schema") == EXPORT_SCHEMA
        except (UserError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"--out {out} exists and is not an earlier export (no {sidecar.name} beside it): "
                            "choose another file, or remove it yourself")
