"""Checks of a command's input that need no slow import (no torch, Lightning or timm).

Every command runs these first, so a wrong path, option, source name or occupied output folder is one sentence
within a fraction of a second instead of after the models have loaded (``benchmarks/error_latency.py``
measures it). What can only be checked with the model in hand (an input size too small for it, ``--reuse``
beyond its blocks) is checked later, still before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferlab import modality
from transferlab.data.fashion_mnist import parse_fashion_mnist_spec
from transferlab.data.wordnet import parse_wordnet_spec
from transferlab.errors import UserError, did_you_mean
from transferlab.files import LOCK, check_overwritable, is_global_zero

# The built-in sources and their modalities (sources/__init__.py registers exactly these), and names people already
# know them by.
BUILTIN_SOURCES = {"efficientnet_lite0": "image", "cnn_tiny": "image", "cnn_small": "image", "minilm": "text",
                   "mlp_tiny": "tabular", "mlp_small": "tabular"}
SOURCE_ALIASES = {
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "tf_efficientnet_lite0": "efficientnet_lite0",
    "efficientnet-lite0": "efficientnet_lite0",
}
KNOWN_SOURCES = ("torchvision:vgg16", "torchvision:inception_v3", "torchvision:resnet50", "timm:resnet50",
                 "timm:resnet18")
PREFIXES = ("timm:", "torchvision:", "sentence-transformers:", "vectors:")
VECTOR_SUFFIXES = (".txt", ".vec", ".bin")
DATA_SUFFIXES = (".csv", ".tsv", ".jsonl")
TEXT_SOURCES = ("sentence-transformers:", "vectors:", "words")


def canonical_source(spec: str) -> str:
    """A source name as the registry knows it: ``all-MiniLM-L6-v2`` is ``minilm``."""
    return SOURCE_ALIASES.get(spec.lower(), spec)


def check_source(spec: str, option: str = "--source") -> None:
    """A source that names a built-in, a known prefix, random word embeddings or an existing path."""
    name = canonical_source(spec.removeprefix("scratch:"))
    if not name:
        raise UserError(f"{option} is empty: name a source (see `transferlab sources`)")
    if name in BUILTIN_SOURCES or name.startswith(PREFIXES) or name == "words" or name.startswith("words:"):
        return
    if Path(name).expanduser().exists():
        return
    choices = [*BUILTIN_SOURCES, *KNOWN_SOURCES, *SOURCE_ALIASES]
    close = did_you_mean(name, choices) or did_you_mean(name.lower(), [c.lower() for c in choices])
    looks_like_path = "/" in name or name.endswith(VECTOR_SUFFIXES)
    raise UserError(
        f"{option} {spec!r}: " + (f"{name} does not exist" if looks_like_path else f"unknown source{close}")
        + f"; use a built-in ({', '.join(BUILTIN_SOURCES)}), timm:<arch>, torchvision:<arch>, "
        "sentence-transformers:<path>, a word-vectors file (.txt, .vec, .bin), words[:DIM], scratch:<source> or a "
        "transferlab run directory"
    )


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


def source_modality(spec: str) -> str | None:
    """The modality a source spec takes when its name or its run card says so (None: only loading it tells)."""
    name = canonical_source(spec.removeprefix("scratch:"))
    if name in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[name]
    if name.startswith(TEXT_SOURCES) or name.lower().endswith(VECTOR_SUFFIXES):
        return "text"
    if name.startswith(("timm:", "torchvision:")):
        return "image"
    try:
        return json.loads((Path(name).expanduser() / "model.json").read_text()).get("modality", "image")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_modality(data: str, sources: list[str]) -> str | None:
    """The modality of ``data`` and ``sources`` as far as their names, headers and cards tell (None: they do not).
    Images given to a text source (or any other mix) is one sentence naming both."""
    claimed = modality.of_data(data)
    kind = claimed.name if claimed is not None else None
    for spec in sources:
        takes = source_modality(spec)
        if kind is not None and takes is not None and kind != takes:
            have, want = modality.get(kind), modality.get(takes)
            raise UserError(f"{data} holds {have.word} but the source {spec} takes {want.word}: use a source for "
                            f"{have.word}, or {want.word} as data")
        kind = kind or takes
    return kind


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
