"""Fixtures for the data tests: tiny image folders, broken files and IDX files, built in tmp_path."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.data import fashion_mnist


@pytest.fixture(autouse=True)
def _isolated_fashion_mnist_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep tests away from the user's Fashion-MNIST settings and download cache."""
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "cache"))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny IDAT: costs no memory to build."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def noise_bytes(fmt: str, seed: int = 0) -> bytes:
    """An encoded 32x32 noise image (noise keeps the compressed data long enough to cut in half)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """write_image(path, color=(r, g, b), size=(w, h)) saves a solid image; format from the suffix."""

    def write(path: Path, color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (8, 8)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path)
        return path

    return write


@pytest.fixture
def make_folder(tmp_path: Path, write_image: Callable[..., Path]) -> Callable[..., Path]:
    """make_folder({"cat": 10, ...}, root=None) builds root/<class>/<class><i>.png with distinct images."""

    def make(counts: dict[str, int], root: Path | None = None) -> Path:
        root = root or tmp_path / "images"
        for c, (name, count) in enumerate(counts.items()):
            for i in range(count):
                write_image(root / name / f"{name}{i}.png", color=(c * 40, i % 256, i // 256))
        root.mkdir(parents=True, exist_ok=True)
        return root

    return make


@pytest.fixture
def bad_files() -> Callable[[Path], dict[str, str]]:
    """bad_files(folder) writes one broken file per kind into folder; returns {file name: expected reason}."""

    def write(folder: Path) -> dict[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        png, jpeg = noise_bytes("PNG"), noise_bytes("JPEG")
        contents = {
            "empty.png": (b"", "zero-byte file"),
            "text.png": (b"this is not an image\n", "not an image"),
            "cut.png": (png[: len(png) // 2], "truncated or corrupt"),
            "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
            "bomb.png": (bomb_png(30000, 30000), "exceeds Pillow's decompression-bomb limit"),
        }
        for name, (data, _) in contents.items():
            (folder / name).write_bytes(data)
        return {name: reason for name, (_, reason) in contents.items()}

    return write


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8 or big-endian int32) as an IDX file, gzip-compressed if the name ends in .gz."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def fake_fashion_mnist(tmp_path: Path) -> Path:
    """Folder with the four IDX .gz files of a mini Fashion-MNIST: 4 train, 2 test images per class."""
    folder = tmp_path / "fake-fmnist"
    for kind, per_class in (("train", 4), ("t10k", 2)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = np.random.default_rng(per_class).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        write_idx(folder / f"{kind}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{kind}-labels-idx1-ubyte.gz", labels)
    return folder
