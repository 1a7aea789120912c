"""Scanning folders of class subfolders (images, texts): one rule for hidden files, order and loose files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transferlab.errors import UserError
from transferlab.files import is_regular

logger = logging.getLogger(__name__)
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}  # delimited tables of texts or features
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def files_under(folder: Path) -> list[Path]:
    """Non-hidden files below ``folder``, recursively, in a stable order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not hidden(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not hidden(f))
    return found


def class_folders(folder: Path, word: str = "images") -> dict[str, Path]:
    """The class subfolders of ``folder`` by name, sorted; warns about loose files."""
    entries = [e for e in sorted(folder.iterdir()) if not hidden(e.name)]
    loose = [e for e in entries if not e.is_dir()]
    if loose:
        logger.warning(
            "ignoring %d file(s) directly in %s (e.g. %s): %s must be inside class folders",
            len(loose),
            folder,
            loose[0].name,
            word,
        )
    classes = {e.name: e for e in entries if e.is_dir()}
    if not classes:
        raise UserError(
            f"{folder} has no class folders; put the {word} of each class in its own subfolder, "
            f"e.g. {folder / 'cat'}"
        )
    return classes


def csv_header(path: Path, delimiter: str = ",") -> list[str] | None:
    """The lower-cased header of a delimited file, or None when it cannot be read (what a data spec claims)."""
    if not is_regular(path):  # a FIFO would block the read; the reader itself names what it is
        return None
    try:
        with path.open(encoding="utf-8-sig") as f:
            return [c.strip().lower() for c in f.readline().split(delimiter)]
    except (OSError, UnicodeDecodeError):
        return None


def holds_files(folder: Path, suffixes: tuple[str, ...], look: int = 200) -> bool:
    """Whether one of the first ``look`` files below ``folder`` ends with one of ``suffixes``."""
    for i, f in enumerate(p for p in folder.rglob("*") if p.is_file()):
        if f.suffix.lower() in suffixes:
            return True
        if i >= look:
            break
    return False


# The first bytes of the image formats people mistake for data files (a PNG given as a table or text file)
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def image_kind(raw: bytes) -> str | None:
    """The image format ``raw`` starts with (a file's first bytes), or None."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in IMAGE_MAGIC.items() if raw.startswith(magic)), None)
