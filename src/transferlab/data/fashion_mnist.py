"""Fashion-MNIST: the IDX reader, the bundled subset, and finding or downloading the full set."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import shutil
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from transferlab import files
from transferlab.errors import UserError, did_you_mean
from transferlab.files import read_bounded

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

SPEC_NAME = "fashion-mnist"
ENV_VAR = "TRANSFERLAB_FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""Official Zalando download location of the four ``.gz`` files."""

IDX_FILES: dict[str, tuple[str, str]] = {
    # name: (MD5 of the official .gz download, MD5 of its decompressed content)
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}

OPTIONS = ("classes", "per_class", "set", "dir")
_OPTION_EXAMPLES = {
    "classes": "classes=0-2+7",
    "per_class": "per_class=50",
    "set": "set=full",
    "dir": "dir=/data/fmnist",
}
_SETS = ("bundled", "full")
_BUNDLED_NAME = "fashion_mnist_subset.npz"
_BUNDLED_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class FashionMNISTSpec:
    """A parsed ``fashion-mnist[:opt=val,...]`` dataset spec."""

    classes: tuple[int, ...] = tuple(range(len(FASHION_MNIST_CLASSES)))
    per_class: int | None = None
    full: bool = False
    dir: str | None = None


@dataclass(frozen=True)
class FashionMNISTArrays:
    """All ten classes of one Fashion-MNIST source: uint8 images (N, 28, 28), original labels 0-9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def parse_fashion_mnist_spec(spec: str) -> FashionMNISTSpec | None:
    """Parse ``fashion-mnist[:opt=val,...]``; return None when ``spec`` names something else."""
    name, _, rest = spec.partition(":")
    if name != SPEC_NAME:
        return None
    options: dict[str, str] = {}
    for item in rest.split(","):
        if not item.strip():
            continue
        key, has_value, value = (part.strip() for part in item.partition("="))
        if key not in OPTIONS:
            raise UserError(
                f"unknown option {key!r} in dataset spec {spec!r}{did_you_mean(key, OPTIONS)}; "
                f"valid options are {', '.join(OPTIONS)}"
            )
        if not has_value or not value:
            raise UserError(
                f"option {key!r} in dataset spec {spec!r} needs a value, e.g. {_OPTION_EXAMPLES[key]}"
            )
        if key in options:
            raise UserError(f"option {key!r} is given twice in dataset spec {spec!r}; give it once")
        options[key] = value

    classes = _parse_classes(options["classes"], spec) if "classes" in options else FashionMNISTSpec.classes
    per_class = None
    if "per_class" in options:
        text = options["per_class"]
        if not text.isdigit() or int(text) < 1:
            raise UserError(
                f"per_class={text} in dataset spec {spec!r} must be a positive whole number, "
                f"e.g. per_class=50"
            )
        per_class = int(text)
    chosen_set = options.get("set", "full" if "dir" in options else "bundled")
    if chosen_set not in _SETS:
        raise UserError(
            f"set={chosen_set} in dataset spec {spec!r} is not valid{did_you_mean(chosen_set, _SETS)}; "
            f"use set=bundled or set=full"
        )
    if chosen_set == "bundled" and "dir" in options:
        raise UserError(
            f"dataset spec {spec!r} combines set=bundled with dir=, which reads the full set; "
            f"drop one of them"
        )
    return FashionMNISTSpec(
        classes=classes, per_class=per_class, full=chosen_set == "full", dir=options.get("dir")
    )


def _parse_classes(text: str, spec: str) -> tuple[int, ...]:
    """Parse ``0-2+7`` into (0, 1, 2, 7), keeping the given order."""
    last = len(FASHION_MNIST_CLASSES) - 1
    chosen: list[int] = []
    for part in text.split("+"):
        low, dash, high = part.partition("-")
        try:
            start = int(low)
            stop = int(high) if dash else start
        except ValueError:
            raise UserError(
                f"classes={text} in dataset spec {spec!r} is not valid: join class indices and ranges "
                f"with '+', e.g. classes=0-2+7"
            ) from None
        if not 0 <= start <= stop <= last:
            raise UserError(
                f"classes={text} in dataset spec {spec!r}: {part!r} is not a class index or range "
                f"within 0-{last}"
            )
        chosen.extend(range(start, stop + 1))
    repeated = sorted({c for c in chosen if chosen.count(c) > 1})
    if repeated:
        raise UserError(
            f"classes={text} in dataset spec {spec!r} names class {repeated[0]} more than once; "
            f"list each class once"
        )
    if len(chosen) < 2:
        raise UserError(
            f"classes={text} in dataset spec {spec!r} selects one class; a classifier needs at least 2"
        )
    return tuple(chosen)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a native-endian array; UserError on a bad file."""
    path = Path(path)
    data = read_bounded(path, "IDX file", 1 << 30)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(
                f"IDX file {path} is a damaged gzip file ({exc}); delete it and fetch it again"
            ) from exc
    if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_TYPES or data[3] == 0:
        raise UserError(
            f"{path} is not an IDX file (bad magic number 0x{data[:4].hex()}); "
            f"check that it is an MNIST-style IDX file"
        )
    ndim = data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise UserError(f"IDX file {path} is truncated inside its header; delete it and fetch it again")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    dtype = _IDX_TYPES[data[2]]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - start != expected:
        raise UserError(
            f"IDX file {path} is truncated or corrupt: its header promises {expected} data bytes "
            f"for shape {shape} but it holds {len(data) - start}; delete it and fetch it again"
        )
    return np.frombuffer(data, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def cache_dir() -> Path:
    """Folder that downloads go to: ``fashion-mnist`` in transferlab's cache (see :func:`files.cache_dir`)."""
    return files.cache_dir("fashion-mnist")


def _idx_path(directory: Path, name: str) -> Path | None:
    """The IDX file ``name`` in ``directory``, plain or ``.gz``; None if absent."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _require_idx(directory: Path, name: str) -> Path:
    path = _idx_path(directory, name)
    if path is None:
        raise UserError(
            f"{directory} has no {name} (plain or .gz); put the four official Fashion-MNIST IDX files there"
        )
    return path


def _missing(directory: Path) -> list[str]:
    return [name for name in IDX_FILES if _idx_path(directory, name) is None]


def find_fashion_mnist_dir(explicit: str | None) -> Path | None:
    """Return the first folder holding all four IDX files, or None.

    Searched in order: ``explicit`` (the ``dir=`` option), the ``TRANSFERLAB_FASHION_MNIST_DIR`` environment
    variable, Debian's ``dataset-fashion-mnist`` location, and the download cache. A folder named by
    ``explicit`` or the environment variable must have the files, else UserError.
    """
    for given, origin in ((explicit, "dir="), (os.environ.get(ENV_VAR), f"{ENV_VAR}=")):
        if given:
            directory = Path(given).expanduser()
            missing = _missing(directory)
            if missing:
                raise UserError(
                    f"{origin}{directory} lacks the Fashion-MNIST file(s) {', '.join(missing)} "
                    f"(plain or .gz); put the four official IDX files there"
                )
            return directory
    for directory in (DEBIAN_DIR, cache_dir()):
        if not _missing(directory):
            return directory
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_fashion_mnist(directory: Path) -> Path:
    """Download the four official ``.gz`` files into ``directory``, checking their MD5; return it."""
    advice = (
        f"put {', '.join(f'{name}.gz' for name in IDX_FILES)} in {directory} "
        f"or set {ENV_VAR} to a folder that has them, or use the bundled subset (set=bundled)"
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the Fashion-MNIST download folder {directory} ({exc.strerror or exc}); {advice}"
        ) from exc
    for name, (gz_md5, _) in IDX_FILES.items():
        target = directory / f"{name}.gz"
        if target.is_file() and _md5(target) == gz_md5:
            continue
        url = URL + target.name
        partial = target.with_name(target.name + ".part")
        logger.info("downloading %s to %s", url, target)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, http.client.HTTPException) as exc:
            partial.unlink(missing_ok=True)
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise UserError(f"could not download Fashion-MNIST from {url} ({reason}); {advice}") from exc
        digest = _md5(partial)
        if digest != gz_md5:
            partial.unlink()
            raise UserError(
                f"the download of {url} is corrupt (MD5 {digest}, expected {gz_md5}); retry, or {advice}"
            )
        partial.replace(target)
    return directory


def _load_idx_dir(directory: Path) -> FashionMNISTArrays:
    """Read and sanity-check the four IDX files in ``directory``."""
    arrays = []
    for kind in ("train", "t10k"):
        images_path = _require_idx(directory, f"{kind}-images-idx3-ubyte")
        labels_path = _require_idx(directory, f"{kind}-labels-idx1-ubyte")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise UserError(
                f"{images_path} does not hold 28x28 uint8 images (shape {images.shape}); "
                f"use the official file"
            )
        if (
            labels.dtype != np.uint8
            or labels.shape != images.shape[:1]
            or labels.max(initial=0) >= len(FASHION_MNIST_CLASSES)
        ):
            raise UserError(
                f"{labels_path} does not hold one label 0-9 for each of the {len(images)} images "
                f"in {images_path}; use the official files"
            )
        arrays += [images, labels]
    return FashionMNISTArrays(*arrays)


def _load_bundled() -> FashionMNISTArrays:
    """The subset that ships inside the package (500 train + 100 test images per class)."""
    resource = resources.files(__package__) / "bundled" / _BUNDLED_NAME
    try:
        with resource.open("rb") as f, np.load(f) as npz:
            return FashionMNISTArrays(*(npz[key] for key in _BUNDLED_KEYS))
    except FileNotFoundError as exc:
        raise UserError(
            f"the bundled Fashion-MNIST subset ({_BUNDLED_NAME}) is missing from this installation; "
            f"reinstall transferlab or use the full set (set=full)"
        ) from exc


def load_fashion_mnist_arrays(spec: FashionMNISTSpec) -> FashionMNISTArrays:
    """All ten classes of the bundled subset or the full set (found locally or downloaded)."""
    if not spec.full:
        return _load_bundled()
    directory = find_fashion_mnist_dir(spec.dir)
    if directory is None:
        directory = download_fashion_mnist(cache_dir())
    logger.info("reading Fashion-MNIST from %s", directory)
    return _load_idx_dir(directory)
