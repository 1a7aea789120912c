"""Word vectors in the formats people download, read once into a memory-mapped store.

Formats: GloVe text (no header), word2vec / fastText ``.vec`` text (a ``count dim`` header) and word2vec binary.
The first read of a file parses it (capped at ``max_vectors``) and stores ``vectors.safetensors`` + ``words.json``
in the cache; every later read memory-maps that store, so a multi-GB file costs its size on disk, not in RAM.
``pretrain-vectors`` writes the same store. Parsing rules:

- tokens may contain spaces (GloVe 840B): a row is the token, then exactly ``dim`` numbers at its end;
- a duplicate word keeps its first vector (counted and reported);
- a row with too few fields, a non-number or a non-finite value, or a row whose extra leading fields are all
  numbers (a longer vector than the other rows) is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from transferlab.errors import UserError
from transferlab.files import cache_dir, check_file

log = logging.getLogger(__name__)
STORE_FORMAT = 1
WORDS, MATRIX = "words.json", "vectors.safetensors"


class VectorsError(UserError):
    """A vectors file that cannot be read; the message names the file and, for text files, the line."""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _header(line: bytes) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _looks_binary(path: Path, start: int, dim: int) -> bool:
    """After a ``count dim`` header: binary unless the first entry reads as a text row (a word, then ``dim``
    numbers), whatever the file's suffix or the encoding of its words."""
    with open(path, "rb") as f:
        f.seek(start)
        line = f.read(65536).split(b"\n", 1)[0]
    parts = line.decode("latin-1").rstrip("\r ").split(" ")
    return not (len(parts) >= dim + 1 and all(map(_is_number, parts[len(parts) - dim :])))


class _Collected:
    """Words and their vectors in file order; a repeated word keeps its first vector (and is counted)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.rows: list[np.ndarray] = []
        self.seen: set[str] = set()
        self.duplicates = 0

    def add(self, word: str, vector: np.ndarray) -> None:
        if word in self.seen:
            self.duplicates += 1
            return
        self.seen.add(word)
        self.words.append(word)
        self.rows.append(vector)

    def result(self, path: Path, dim: int) -> tuple[list[str], np.ndarray]:
        if self.duplicates:
            log.warning("%s repeats %d word(s); each keeps its first vector", path, self.duplicates)
        return self.words, np.stack(self.rows) if self.rows else np.zeros((0, dim), np.float32)


def read_vectors(
    path: str | Path, *, max_vectors: int | None = None, encoding_errors: str = "strict"
) -> tuple[list[str], np.ndarray]:
    """Parse a word-vectors file: (words, float32 matrix of shape (len(words), dim)). Raises VectorsError."""
    path = Path(path)
    try:
        check_file(path, "vectors file")  # a FIFO would block the first read
    except UserError as e:
        raise VectorsError(str(e)) from None
    if max_vectors is not None and max_vectors < 1:
        raise VectorsError("--max-vectors must be at least 1")
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise VectorsError(f"{path} line 1 is empty: not a word-vectors file")
    header = _header(first)
    if header is not None and header[1] < 1:
        raise VectorsError(f"{path} line 1: the header gives dimension {header[1]}; it must be at least 1")
    if header is not None and _looks_binary(path, len(first), header[1]):
        words, matrix = _read_binary(path, header, max_vectors, encoding_errors)
    else:
        words, matrix = _read_text(path, header, max_vectors, encoding_errors)
    if not words:
        raise VectorsError(f"{path} holds no vectors")
    return words, matrix


def _read_text(
    path: Path, header: tuple[int, int] | None, max_vectors: int | None, errors: str
) -> tuple[list[str], np.ndarray]:
    dim = header[1] if header else None
    got = _Collected()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and header:
                continue
            try:
                line = raw.decode("utf-8", errors=errors).rstrip("\r\n").rstrip(" ")
            except UnicodeDecodeError:
                raise VectorsError(f"{path} line {number} is not valid UTF-8; pass --encoding-errors replace "
                                   "to accept it") from None
            if not line.strip():
                continue
            parts = line.split(" ")
            if dim is None:  # GloVe: the first row fixes the dimension
                dim = len(parts) - 1
                if dim < 1 or not all(map(_is_number, parts[1:])):
                    raise VectorsError(f"{path} line 1 is neither a 'count dim' header nor a word followed by "
                                       "numbers: not a GloVe, word2vec or fastText vectors file")
            if len(parts) < dim + 1:
                raise VectorsError(f"{path} line {number} has {len(parts) - 1} numbers after the word, expected "
                                   f"{dim} (the dimension differs between rows)")
            token_parts, numbers = parts[: len(parts) - dim], parts[len(parts) - dim :]
            if len(token_parts) > 1 and all(map(_is_number, token_parts[1:])):
                raise VectorsError(f"{path} line {number} has {len(parts) - 1} numbers after the word, expected "
                                   f"{dim} (the dimension differs between rows)")
            try:
                with np.errstate(over="ignore"):  # beyond float32: inf, reported just below
                    vector = np.array([float(n) for n in numbers], dtype=np.float32)
            except ValueError:
                bad = next(n for n in numbers if not _is_number(n))
                raise VectorsError(f"{path} line {number}: {bad[:40]!r} is not a number") from None
            if not np.isfinite(vector).all():
                raise VectorsError(f"{path} line {number} holds a non-finite value (nan or inf)")
            word = " ".join(token_parts)
            if not word:
                raise VectorsError(f"{path} line {number} has an empty word")
            got.add(word, vector)
            if max_vectors is not None and len(got.words) >= max_vectors:
                break
    held = len(got.words) + got.duplicates
    if header and max_vectors is None and held != header[0]:
        raise VectorsError(f"{path}: its header promises {header[0]} vectors but the file holds {held}; the file "
                           "is truncated or its header is wrong")
    return got.result(path, dim or 0)


def _read_binary(
    path: Path, header: tuple[int, int], max_vectors: int | None, errors: str
) -> tuple[list[str], np.ndarray]:
    count, dim = header
    want = count if max_vectors is None else min(count, max_vectors)
    got = _Collected()
    width = 4 * dim
    with open(path, "rb") as f:
        f.readline()
        for i in range(count):
            if len(got.words) >= want:
                break
            token = bytearray()
            while True:
                ch = f.read(1)
                if not ch:
                    raise VectorsError(f"{path} ends inside entry {i + 1} of the {count} its header promises "
                                       "(a truncated word2vec binary file)")
                if ch == b" ":
                    break
                if ch != b"\n" or token:
                    token += ch
                if len(token) > 10_000:
                    raise VectorsError(f"{path}: entry {i + 1} has no space after its word: not word2vec binary")
            blob = f.read(width)
            if len(blob) < width:
                raise VectorsError(f"{path} ends inside vector {i + 1} of {count} (a truncated word2vec binary file)")
            try:
                word = token.decode("utf-8", errors=errors)
            except UnicodeDecodeError:
                raise VectorsError(f"{path}: the word of entry {i + 1} is not valid UTF-8; pass --encoding-errors "
                                   "replace to accept it") from None
            if not word:
                raise VectorsError(f"{path}: entry {i + 1} has an empty word")
            with np.errstate(over="ignore", invalid="ignore"):
                vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            if not np.isfinite(vector).all():
                raise VectorsError(f"{path}: vector {i + 1} ({word!r}) holds a non-finite value")
            got.add(word, vector)
    return got.result(path, dim)


def save_store(folder: Path, words: list[str], matrix: np.ndarray, info: dict | None = None) -> None:
    """Write the memory-mappable store (``words.json`` + ``vectors.safetensors``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"vectors": np.ascontiguousarray(matrix, dtype=np.float32)}, str(folder / MATRIX),
              metadata={"format": str(STORE_FORMAT)})
    (folder / WORDS).write_text(json.dumps({"words": words, **(info or {})}))


def is_store(folder: Path) -> bool:
    return (folder / WORDS).is_file() and (folder / MATRIX).is_file()


def open_store(folder: Path):
    """The store at ``folder`` as gensim ``KeyedVectors`` whose matrix is a read-only memory map."""
    from gensim.models import KeyedVectors

    path = folder / MATRIX
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            entry = json.loads(f.read(length))["vectors"]
        words = json.loads((folder / WORDS).read_text())["words"]
    except (OSError, ValueError, KeyError, struct.error) as e:
        raise VectorsError(f"{folder} is not a readable word-vectors store ({e}); delete it and recreate it") from None
    if entry["dtype"] != "F32" or len(entry["shape"]) != 2 or entry["shape"][0] != len(words):
        raise VectorsError(f"{folder}: vectors.safetensors does not match words.json; recreate the store")
    n, dim = entry["shape"]
    matrix = np.memmap(path, dtype="<f4", mode="r", offset=8 + length + entry["data_offsets"][0], shape=(n, dim))
    kv = KeyedVectors(vector_size=dim, count=0)
    kv.index_to_key = list(words)
    kv.key_to_index = {w: i for i, w in enumerate(words)}
    kv.vectors = matrix
    return kv


def load_vectors(path: str | Path, *, max_vectors: int | None = None, encoding_errors: str = "strict"):
    """Word vectors from a file or a store folder as gensim ``KeyedVectors`` (memory-mapped).

    A file is parsed once per (file, size, mtime, ``max_vectors``) and kept as a store in the transferlab cache.
    """

    path = Path(path).expanduser()
    if path.is_dir():
        if not is_store(path):
            raise VectorsError(f"{path} is a folder without words.json and vectors.safetensors: not a vectors store")
        return open_store(path)
    if not path.is_file():
        raise VectorsError(f"vectors file {path} does not exist")
    stat = path.stat()
    key = hashlib.sha256(json.dumps([STORE_FORMAT, str(path.resolve()), stat.st_size, stat.st_mtime_ns,
                                     max_vectors, encoding_errors]).encode()).hexdigest()[:32]
    store = cache_dir("vectors") / key
    if not is_store(store):
        words, matrix = read_vectors(path, max_vectors=max_vectors, encoding_errors=encoding_errors)
        tmp = store.with_name(f"{key}.{os.getpid()}.tmp")
        save_store(tmp, words, matrix, {"file": str(path.resolve())})
        if not is_store(store):
            tmp.replace(store)
        else:  # another process stored it meanwhile
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        log.info("parsed %d vectors of dimension %d from %s", len(words), matrix.shape[1], path)
    return open_store(store)


def vectors_scale(matrix: np.ndarray) -> float:
    """The standard deviation of the vectors' components (from up to 10,000 rows): the scale at which words
    that the vectors lack are initialised."""
    sample = np.asarray(matrix[: min(len(matrix), 10_000)], dtype=np.float64)
    std = float(sample.std()) if sample.size else 1.0
    return std if math.isfinite(std) and std > 0 else 1.0
