"""Image datasets: robust decoding, folder / CSV / built-in specs, validation, stratified splits."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import track

from transferlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    SPEC_NAME,
    FashionMNISTSpec,
    load_fashion_mnist_arrays,
    parse_fashion_mnist_spec,
)
from transferlab.errors import UserError, did_you_mean

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_PROGRESS_THRESHOLD = 2000  # show a progress bar when checking more files than this
_LISTED = 5  # bad files named in messages
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


class _Unusable(Exception):
    """A file is not a usable image; the message is the short reason."""


def _rgb_from_gray(values: np.ndarray) -> Image.Image:
    """8-bit RGB image from a 2-D array of gray levels in [0, 255]."""
    gray = np.rint(values).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any Pillow mode to 8-bit RGB."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF: keep the stored orientation rather than reject good pixels
        logger.debug("ignoring unreadable EXIF data in %s", getattr(img, "filename", "an image"))
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT_MODES:  # scale the 16-bit range down; convert("L") would clip at 255
        return _rgb_from_gray(np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257)
    if mode == "F":  # floats: [0, 1] is scaled to [0, 255], anything else is clipped to [0, 255]
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return _rgb_from_gray(np.clip(values * scale, 0, 255))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise _Unusable(f"unsupported pixel mode {mode}") from exc


def _decode(path: Path) -> Image.Image:
    """Fully decode ``path`` to 8-bit RGB, or raise _Unusable with the reason."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _Unusable("file does not exist") from None
    except OSError as exc:
        raise _Unusable(f"unreadable ({exc.strerror or exc})") from None
    if size == 0:
        raise _Unusable("zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb(img)
    except _Unusable:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Unusable("exceeds Pillow's decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise _Unusable("not an image") from None
    except PermissionError as exc:
        raise _Unusable(f"unreadable ({exc.strerror})") from None
    except Exception:  # Pillow reports damaged data with many exception types
        raise _Unusable("truncated or corrupt") from None


def check_image(path: str | Path) -> str | None:
    """Return None if ``path`` decodes to a usable image, else a short reason such as "zero-byte file"."""
    try:
        _decode(Path(path))
    except _Unusable as exc:
        return str(exc)
    return None


def open_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an EXIF-oriented 8-bit RGB image; UserError naming the file if it is not usable."""
    try:
        return _decode(Path(path))
    except _Unusable as exc:
        raise UserError(f"image file {path} is not usable ({exc}); replace or remove it") from None


def _check_all(paths: Sequence[Path]) -> list[str | None]:
    """check_image for many files, in threads, with a progress bar for large datasets."""
    with warnings.catch_warnings():
        # check_image sets this filter too; setting it here keeps it in force while worker threads
        # enter and leave their own catch_warnings blocks (the filter list is process-global).
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = pool.map(check_image, paths)
            if len(paths) > _PROGRESS_THRESHOLD:
                console = Console(stderr=True)
                results = track(results, total=len(paths), description="checking images", console=console)
            return list(results)


@dataclass
class ImageSplit:
    """One split: images given either as file paths or as an in-memory uint8 array."""

    labels: np.ndarray
    paths: list[Path] | None = None
    arrays: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if (self.paths is None) == (self.arrays is None):
            raise ValueError("ImageSplit needs exactly one of paths and arrays")
        if self.paths is not None:
            self.paths = [Path(p) for p in self.paths]
            count = len(self.paths)
        else:
            arrays = np.asarray(self.arrays)
            if arrays.dtype != np.uint8 or not (
                arrays.ndim == 3 or (arrays.ndim == 4 and arrays.shape[3] == 3)
            ):
                raise ValueError(
                    f"ImageSplit arrays must be uint8 (N,H,W) or (N,H,W,3), got {arrays.dtype} {arrays.shape}"
                )
            self.arrays = arrays
            count = len(arrays)
        if self.labels.shape != (count,):
            raise ValueError(f"ImageSplit has {count} images but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> Image.Image:
        """Image ``i`` as 8-bit RGB."""
        if self.paths is not None:
            return open_image(self.paths[i])
        image = self.arrays[i]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(image))

    def native_size(self, sample: int = 32) -> int:
        """The side of the split's images (the larger side; the median over up to ``sample`` of them)."""
        if self.arrays is not None:
            return int(max(self.arrays.shape[1:3]))
        sides = []
        for path in self.paths[:: max(1, len(self.paths) // sample)][:sample]:
            try:
                with Image.open(path) as im:  # reads the header only
                    sides.append(max(im.size))
            except (OSError, ValueError):
                continue
        return int(np.median(sides)) if sides else 0

    def subset(self, idx: np.ndarray) -> ImageSplit:
        """The images at integer positions ``idx`` (in that order) or where boolean mask ``idx`` is true."""
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        if self.paths is not None:
            return ImageSplit(self.labels[idx], paths=[self.paths[i] for i in idx])
        return ImageSplit(self.labels[idx], arrays=self.arrays[idx])

    def fingerprint(self) -> str:
        """SHA-256 of the split's content identity (file path, size and mtime, or array bytes) and labels."""
        digest = hashlib.sha256()
        if self.paths is not None:
            digest.update(b"paths\0")
            for path in self.paths:
                try:
                    stat = path.stat()
                except OSError as exc:
                    raise UserError(
                        f"image file {path} can no longer be read ({exc.strerror}); load the dataset again"
                    ) from exc
                digest.update(
                    os.fsencode(path.resolve()) + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
        else:
            digest.update(f"arrays\0{self.arrays.shape}\0".encode())
            digest.update(np.ascontiguousarray(self.arrays).data)
        digest.update(b"labels\0" + self.labels.astype("<i8").tobytes())
        return digest.hexdigest()


@dataclass
class ImageData:
    """A classification dataset split three ways, with the files that were left out."""

    classes: list[str]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    skipped: list[tuple[str, str]]
    name: str
    # examples per class in the training split before --per-class balanced it: what a naive model learns from
    train_counts: list[int] = field(default_factory=list)

    def majority_class(self) -> int:
        """The commonest training class as the data came (before balancing): the naive model's prediction."""
        counts = self.train_counts or np.bincount(self.train.labels, minlength=len(self.classes)).tolist()
        return int(np.argmax(counts))

    def fingerprint(self) -> str:
        """SHA-256 over the class names and the three split fingerprints."""
        digest = hashlib.sha256(json.dumps(self.classes).encode())
        for split in (self.train, self.val, self.test):
            digest.update(split.fingerprint().encode())
        return digest.hexdigest()


class ImageDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Torch dataset over an image or text split: item ``i`` is ``(transform(split.load(i)), label)``."""

    def __init__(self, split: ImageSplit, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.load(i)), int(self.split.labels[i])


# --- splitting -------------------------------------------------------------------------------------


def _allocate(counts: np.ndarray, fraction: float, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-class sizes summing to ``fraction`` of all items, proportional to ``counts``, at most ``room``."""
    total = int(counts.sum())
    target = min(int(fraction * total + 0.5), int(room.sum()))
    ideal = counts * target / total
    sizes = np.minimum(np.floor(ideal).astype(np.int64), room)
    short = target - int(sizes.sum())
    if short:
        # largest remainders first, ties broken at random
        order = np.lexsort((rng.random(len(counts)), sizes - ideal))
        while short:
            for i in order:
                if short and sizes[i] < room[i]:
                    sizes[i] += 1
                    short -= 1
    return sizes


def _stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (sorted) of train / val / test, stratified by label; every class keeps a train item.

    Each class is shuffled with its own generator seeded by ``(seed, label)``, so the images a class holds
    out do not depend on the other classes (only their number can shift by one through rounding).
    """
    keys, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    room = counts - 1
    n_val = _allocate(counts, val_fraction, room, rng)
    n_test = _allocate(counts, test_fraction, room - n_val, rng)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for key, v, t in zip(keys, n_val, n_test, strict=True):
        members = np.random.default_rng([seed, int(key)]).permutation(np.flatnonzero(labels == key))
        parts[1].append(members[:v])
        parts[2].append(members[v : v + t])
        parts[0].append(members[v + t :])
    train, val, test = (np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)
    return train, val, test


def _cap_per_class(
    labels: np.ndarray, per_class: int, seed: int, names: Sequence[str], hint: str = "", word: str = "images"
) -> np.ndarray:
    """Positions (sorted) of the first ``per_class`` items of each class in a seeded permutation.

    The permutation does not depend on ``per_class``, so smaller caps select subsets of larger ones. A cap larger
    than the smallest class names that class and the largest cap every class can meet.
    """
    keys, counts = np.unique(labels, return_counts=True)
    if per_class > counts.min():
        small = int(keys[np.argmin(counts)])
        raise UserError(
            f"--per-class {per_class} is more than the {counts.min()} training {word} of class {names[small]!r}, "
            f"the smallest class; use --per-class {counts.min()} or less{hint}"
        )
    chosen = []
    for key in keys:
        members = np.flatnonzero(labels == key)
        chosen.append(np.random.default_rng([seed, int(key), 1]).permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def _warn_if_empty(data: ImageData, val_fraction: float, test_fraction: float) -> None:
    """Warn when a split that was asked for (fraction > 0) came out empty."""
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and len(getattr(data, name)) == 0:
            logger.warning(
                "the %s split of %s is empty: too few images per class to hold out %s=%s of them",
                name,
                data.name,
                f"{name}_fraction",
                fraction,
            )


# --- sources -----------------------------------------------------------------------------------


@dataclass
class _Group:
    """Candidate files of one class in one split (split None: not yet split)."""

    description: str  # names the group in messages, e.g. the class folder
    files: list[Path]


@dataclass
class _Source:
    location: str  # the folder or CSV, for messages
    groups: dict[tuple[str | None, str], _Group]


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _files_under(folder: Path) -> list[Path]:
    """Non-hidden files below ``folder``, recursively, in a stable order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not _hidden(f))
    return found


def _class_folders(folder: Path) -> dict[str, Path]:
    """The class subfolders of ``folder`` by name, sorted; warns about loose files."""
    entries = [e for e in sorted(folder.iterdir()) if not _hidden(e.name)]
    loose = [e for e in entries if not e.is_dir()]
    if loose:
        logger.warning(
            "ignoring %d file(s) directly in %s (e.g. %s): images must be inside class folders",
            len(loose),
            folder,
            loose[0].name,
        )
    classes = {e.name: e for e in entries if e.is_dir()}
    if not classes:
        raise UserError(
            f"{folder} has no class folders; put the images of each class in its own subfolder, "
            f"e.g. {folder / 'cat'}"
        )
    return classes


def _scan_folder(root: Path) -> _Source:
    """Candidate files of an image folder, with or without train/val/test split folders."""
    if (root / "train").is_dir():
        others = [
            e.name
            for e in sorted(root.iterdir())
            if e.is_dir() and not _hidden(e.name) and e.name not in SPLITS
        ]
        if others:
            logger.warning(
                "ignoring folder(s) %s in %s: next to train/, only train/, val/ and test/ are read",
                ", ".join(others),
                root,
            )
        layout: dict[str | None, dict[str, Path]] = {
            split: _class_folders(root / split) for split in SPLITS if (root / split).is_dir()
        }
        expected = set(layout["train"])
        for split, classes in layout.items():
            missing, extra = sorted(expected - set(classes)), sorted(set(classes) - expected)
            if missing or extra:
                problem = (
                    f"lacks class folder(s) {missing}"
                    if missing
                    else f"has class folder(s) {extra} that train/ lacks"
                )
                raise UserError(
                    f"{root / str(split)} {problem}; every split folder needs the same class folders"
                )
    else:
        layout = {None: _class_folders(root)}
    groups = {
        (split, name): _Group(str(folder), _files_under(folder))
        for split, classes in layout.items()
        for name, folder in classes.items()
    }
    return _Source(str(root), groups)


def _csv_error(csv_path: Path, line: int, problem: str) -> UserError:
    return UserError(f"{csv_path} line {line}: {problem}")


def _read_csv(csv_path: Path) -> _Source:
    """Candidate files listed in a ``path,label[,split]`` CSV; paths are relative to its folder."""
    groups: dict[tuple[str | None, str], _Group] = {}
    seen: dict[str, int] = {}
    base = csv_path.parent.absolute()
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [column.strip().lower() for column in next(reader, [])]
            if not header:
                raise _csv_error(csv_path, 1, "expected the header path,label or path,label,split")
            for column in header:
                if column not in ("path", "label", "split"):
                    hint = did_you_mean(column, ("path", "label", "split"))
                    raise _csv_error(
                        csv_path,
                        1,
                        f"unknown column {column!r}{hint}; the header must be path,label or path,label,split",
                    )
                if header.count(column) > 1:
                    raise _csv_error(
                        csv_path,
                        1,
                        f"column {column!r} appears twice; the header must be path,label or path,label,split",
                    )
            for required in ("path", "label"):
                if required not in header:
                    raise _csv_error(
                        csv_path,
                        1,
                        f"missing column {required!r}; the header must be path,label or path,label,split",
                    )
            has_split = "split" in header
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise _csv_error(
                        csv_path,
                        line,
                        f"expected {len(header)} fields ({','.join(header)}), found {len(row)}",
                    )
                fields = dict(zip(header, (cell.strip() for cell in row), strict=True))
                for column in header:
                    if not fields[column]:
                        raise _csv_error(csv_path, line, f"the {column} field is empty")
                split = fields["split"].lower() if has_split else None
                if split is not None and split not in SPLITS:
                    hint = did_you_mean(split, SPLITS)
                    raise _csv_error(
                        csv_path, line, f"split {fields['split']!r} is not one of train, val, test{hint}"
                    )
                path = base / Path(fields["path"]).expanduser()
                if not path.is_file():
                    raise _csv_error(
                        csv_path,
                        line,
                        f"image file {fields['path']!r} does not exist (looked for {path}); "
                        f"paths are relative to the CSV's folder",
                    )
                key = os.path.normpath(path)
                if key in seen:
                    raise _csv_error(
                        csv_path,
                        line,
                        f"{fields['path']!r} repeats the file of line {seen[key]}; list each image once",
                    )
                seen[key] = line
                label = fields["label"]
                where = f"class {label!r} in {csv_path}" + (f" ({split} rows)" if split else "")
                groups.setdefault((split, label), _Group(where, [])).files.append(path)
        except UnicodeDecodeError as exc:
            raise UserError(f"{csv_path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
        except csv.Error as exc:
            raise _csv_error(csv_path, reader.line_num, f"malformed CSV ({exc})") from exc
    if not groups:
        raise UserError(f"{csv_path} has a header but no rows; add one line path,label per image")
    if has_split:
        train_classes = {label for split, label in groups if split == "train"}
        if not train_classes:
            raise UserError(
                f"{csv_path} has a split column but no train rows; mark at least one image per class as train"
            )
        for split, label in groups:
            if label not in train_classes:
                raise UserError(
                    f"{csv_path}: class {label!r} has {split} rows but no train rows; "
                    f"every class needs training images"
                )
    return _Source(str(csv_path), groups)


# --- loading -----------------------------------------------------------------------------------


def _check_settings(seed: int, val_fraction: float, test_fraction: float, per_class: int | None) -> None:
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UserError(f"{name} must be at least 0 and below 1, got {value}")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"val_fraction + test_fraction must be below 1 to leave training images, "
            f"got {val_fraction + test_fraction}"
        )
    if per_class is not None and per_class < 1:
        raise UserError(f"per_class must be at least 1, got {per_class}")


def _build(
    name: str,
    source: _Source,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    per_class: int | None,
    strict: bool,
) -> ImageData:
    """Validate a source's files, drop the bad ones, and split the rest."""
    files = [path for group in source.groups.values() for path in group.files]
    reasons = _check_all(files)
    skipped = [(str(path), reason) for path, reason in zip(files, reasons, strict=True) if reason is not None]
    if skipped:
        listing = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_LISTED])
        if len(skipped) > _LISTED:
            listing += f"; and {len(skipped) - _LISTED} more"
        if strict:
            raise UserError(
                f"{len(skipped)} of {len(files)} files in {source.location} are not usable images "
                f"({listing}); fix or remove them, or load without strict to skip them"
            )
        logger.warning(
            "skipping %d of %d files in %s that are not usable images (%s); skipped_files.csv in the run directory "
            "lists them all",
            len(skipped),
            len(files),
            source.location,
            listing,
        )

    classes = sorted({label for _, label in source.groups})
    if len(classes) < 2:
        raise UserError(
            f"{source.location} has only one class ({classes[0]!r}); a classifier needs at least 2 classes"
        )
    index = {label: i for i, label in enumerate(classes)}
    paths: dict[str | None, list[Path]] = {}
    labels: dict[str | None, list[int]] = {}
    position = 0
    for (split, label), group in source.groups.items():
        checked = reasons[position : position + len(group.files)]
        position += len(group.files)
        usable = [path for path, reason in zip(group.files, checked, strict=True) if reason is None]
        if not usable:
            detail = f" (all {len(group.files)} of its files were skipped)" if group.files else ""
            raise UserError(f"{group.description} has no usable images{detail}; add images or remove it")
        paths.setdefault(split, []).extend(usable)
        labels.setdefault(split, []).extend([index[label]] * len(usable))
    given = {split: ImageSplit(np.array(labels[split]), paths=paths[split]) for split in paths}

    pool = given["train"] if "train" in given else given[None]
    carve_val = 0.0 if "val" in given else val_fraction
    carve_test = 0.0 if "test" in given else test_fraction
    train_idx, val_idx, test_idx = _stratified_split(pool.labels, carve_val, carve_test, seed)
    train = pool.subset(train_idx)
    counts = np.bincount(train.labels, minlength=len(classes)).tolist()
    if per_class is not None:
        train = train.subset(_cap_per_class(train.labels, per_class, seed, classes))
    data = ImageData(
        train_counts=counts,
        classes=classes,
        train=train,
        val=given["val"] if "val" in given else pool.subset(val_idx),
        test=given["test"] if "test" in given else pool.subset(test_idx),
        skipped=skipped,
        name=name,
    )
    _warn_if_empty(data, carve_val, carve_test)
    return data


def _load_fashion_mnist(
    name: str, spec: FashionMNISTSpec, *, seed: int, val_fraction: float, per_class: int | None
) -> ImageData:
    """Fashion-MNIST classes ``spec.classes``: official test set, val held out of the official train set."""
    arrays = load_fashion_mnist_arrays(spec)
    chosen = np.array(spec.classes)
    relabel = np.full(len(FASHION_MNIST_CLASSES), -1, dtype=np.int64)
    relabel[chosen] = np.arange(len(chosen))

    pool = np.flatnonzero(np.isin(arrays.train_labels, chosen))
    pool_labels = arrays.train_labels[pool]
    train_idx, val_idx, _ = _stratified_split(pool_labels, val_fraction, 0.0, seed)
    counts = np.bincount(relabel[pool_labels[train_idx]], minlength=len(chosen)).tolist()
    if per_class is not None:
        hint = "" if spec.full else ", or use the full set (set=full)"
        train_idx = train_idx[
            _cap_per_class(pool_labels[train_idx], per_class, seed, FASHION_MNIST_CLASSES, hint)
        ]
    test = np.flatnonzero(np.isin(arrays.test_labels, chosen))

    def split(images: np.ndarray, original: np.ndarray, idx: np.ndarray) -> ImageSplit:
        return ImageSplit(relabel[original[idx]], arrays=images[idx])

    data = ImageData(
        train_counts=counts,
        classes=[FASHION_MNIST_CLASSES[c] for c in spec.classes],
        train=split(arrays.train_images, arrays.train_labels, pool[train_idx]),
        val=split(arrays.train_images, arrays.train_labels, pool[val_idx]),
        test=split(arrays.test_images, arrays.test_labels, test),
        skipped=[],
        name=name,
    )
    _warn_if_empty(data, val_fraction, 0.0)
    return data


def load_images(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    per_class: int | None = None,
    strict: bool = False,
    eval_per_class: int | None = None,
) -> ImageData:
    """Load an image classification dataset and split it into train / val / test.

    ``spec`` is ``fashion-mnist[:classes=0-2+7,per_class=N,set=bundled|full,dir=PATH]`` (built in; use
    ``./fashion-mnist`` for a folder of that name), an image folder (one subfolder per class, optionally
    inside ``train/``, ``val/``, ``test/``), or a ``.csv`` file with columns ``path,label[,split]``.
    Splits are stratified and seeded by ``seed``; ``per_class`` caps the training images per class (nested
    across sizes). ``eval_per_class`` caps the val and test images per class (a fixed, seeded choice), which keeps
    frequent evaluation affordable on large test sets. Unusable image files are skipped and listed in
    ``skipped``, or raise with ``strict``.
    """
    data = _load_images(spec, seed, val_fraction, test_fraction, per_class, strict)
    if eval_per_class is not None:
        if eval_per_class < 1:
            raise UserError(f"eval_per_class must be at least 1, got {eval_per_class}")
        data.val = data.val.subset(_first_per_class(data.val.labels, eval_per_class, seed))
        data.test = data.test.subset(_first_per_class(data.test.labels, eval_per_class, seed))
    return data


def _first_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``n`` items per class, chosen by a seeded permutation."""
    rng = np.random.default_rng([seed, 2])
    keep = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _load_images(
    spec: str, seed: int, val_fraction: float, test_fraction: float, per_class: int | None, strict: bool
) -> ImageData:
    _check_settings(seed, val_fraction, test_fraction, per_class)
    fashion = parse_fashion_mnist_spec(spec)
    if fashion is not None:
        cap = per_class if per_class is not None else fashion.per_class
        return _load_fashion_mnist(spec, fashion, seed=seed, val_fraction=val_fraction, per_class=cap)
    path = Path(spec).expanduser().absolute()
    if path.is_dir():
        source = _scan_folder(path)
    elif path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(
                f"dataset {spec!r} is a file but not a .csv; give an image folder, "
                f"a .csv file with columns path,label, or {SPEC_NAME!r}"
            )
        source = _read_csv(path)
    else:
        hint = did_you_mean(spec.partition(":")[0], [SPEC_NAME])
        raise UserError(
            f"dataset {spec!r} does not exist{hint}; give an image folder, a .csv file, or {SPEC_NAME!r}"
        )
    return _build(
        spec,
        source,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        per_class=per_class,
        strict=strict,
    )


def load_data(
    spec: str,
    modality: str = "image",
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    per_class: int | None = None,
    strict: bool = False,
    eval_per_class: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    encoding_errors: str = "strict",
) -> ImageData:
    """Load ``spec`` as the source's modality asks: :func:`load_images` or :func:`load_texts`."""
    common = dict(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, per_class=per_class,
                  eval_per_class=eval_per_class)
    if modality == "text":
        from transferlab.data.text import load_texts

        return load_texts(spec, text_column=text_column, label_column=label_column, encoding_errors=encoding_errors,
                          **common)
    return load_images(spec, strict=strict, **common)
