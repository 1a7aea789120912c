"""Image datasets: robust decoding, folder / CSV / built-in specs, validation, stratified splits."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
from transferlab.data.folders import class_folders, files_under, hidden
from transferlab.data.splits import (
    SPLITS,
    Data,
    build_data,
    cap_evaluation,
    cap_per_class,
    check_settings,
    stratified_split,
    warn_if_empty,
)
from transferlab.errors import Unusable, UserError, did_you_mean
from transferlab.files import read_bounded

logger = logging.getLogger(__name__)

_PROGRESS_THRESHOLD = 2000  # show a progress bar when checking more files than this
_LISTED = 5  # bad files named in messages
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


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
        raise Unusable(f"unsupported pixel mode {mode}") from exc


def decode(path: Path) -> Image.Image:
    """Fully decode ``path`` to 8-bit RGB, or raise Unusable with the reason."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise Unusable("file does not exist") from None
    except OSError as exc:
        raise Unusable(f"unreadable ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the decoder; a device never ends
        raise Unusable("not a regular file")
    size = st.st_size
    if size == 0:
        raise Unusable("zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb(img)
    except Unusable:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Unusable("exceeds Pillow's decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise Unusable("not an image") from None
    except PermissionError as exc:
        raise Unusable(f"unreadable ({exc.strerror})") from None
    except Exception:  # Pillow reports damaged data with many exception types
        raise Unusable("truncated or corrupt") from None


def check_image(path: str | Path) -> str | None:
    """Return None if ``path`` decodes to a usable image, else a short reason such as "zero-byte file"."""
    try:
        decode(Path(path))
    except Unusable as exc:
        return str(exc)
    return None


def open_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an EXIF-oriented 8-bit RGB image; UserError naming the file if it is not usable."""
    try:
        return decode(Path(path))
    except Unusable as exc:
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

    def join(self, other: ImageSplit) -> ImageSplit:
        labels = np.concatenate([self.labels, other.labels])
        if self.paths is not None and other.paths is not None:
            return ImageSplit(labels, paths=[*self.paths, *other.paths])
        return ImageSplit(labels, arrays=np.concatenate([self.arrays, other.arrays]))

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


def _scan_folder(root: Path) -> _Source:
    """Candidate files of an image folder, with or without train/val/test split folders."""
    if (root / "train").is_dir():
        others = [
            e.name
            for e in sorted(root.iterdir())
            if e.is_dir() and not hidden(e.name) and e.name not in SPLITS
        ]
        if others:
            logger.warning(
                "ignoring folder(s) %s in %s: next to train/, only train/, val/ and test/ are read",
                ", ".join(others),
                root,
            )
        layout: dict[str | None, dict[str, Path]] = {
            split: class_folders(root / split) for split in SPLITS if (root / split).is_dir()
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
        layout = {None: class_folders(root)}
    groups = {
        (split, name): _Group(str(folder), files_under(folder))
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
    raw = read_bounded(csv_path, "image list")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{csv_path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    with io.StringIO(text, newline="") as f:
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


def _build(
    name: str,
    source: _Source,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    per_class: int | None,
    eval_per_class: int | None,
    strict: bool,
) -> Data:
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
    return build_data(name, given, classes, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      per_class=per_class, eval_per_class=eval_per_class, word="images", skipped=skipped)


def _load_fashion_mnist(
    name: str, spec: FashionMNISTSpec, *, seed: int, val_fraction: float, per_class: int | None
) -> Data:
    """Fashion-MNIST classes ``spec.classes``: official test set, val held out of the official train set."""
    arrays = load_fashion_mnist_arrays(spec)
    chosen = np.array(spec.classes)
    relabel = np.full(len(FASHION_MNIST_CLASSES), -1, dtype=np.int64)
    relabel[chosen] = np.arange(len(chosen))

    pool = np.flatnonzero(np.isin(arrays.train_labels, chosen))
    pool_labels = arrays.train_labels[pool]
    train_idx, val_idx, _ = stratified_split(pool_labels, val_fraction, 0.0, seed)
    counts = np.bincount(relabel[pool_labels[train_idx]], minlength=len(chosen)).tolist()
    if per_class is not None:
        hint = "" if spec.full else ", or use the full set (set=full)"
        train_idx = train_idx[
            cap_per_class(pool_labels[train_idx], per_class, seed, FASHION_MNIST_CLASSES, hint)
        ]
    test = np.flatnonzero(np.isin(arrays.test_labels, chosen))

    def split(images: np.ndarray, original: np.ndarray, idx: np.ndarray) -> ImageSplit:
        return ImageSplit(relabel[original[idx]], arrays=images[idx])

    data = Data(
        train_counts=counts,
        classes=[FASHION_MNIST_CLASSES[c] for c in spec.classes],
        train=split(arrays.train_images, arrays.train_labels, pool[train_idx]),
        val=split(arrays.train_images, arrays.train_labels, pool[val_idx]),
        test=split(arrays.test_images, arrays.test_labels, test),
        skipped=[],
        name=name,
    )
    warn_if_empty(data, val_fraction, 0.0, "images")
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
) -> Data:
    """Load an image classification dataset and split it into train / val / test.

    ``spec`` is ``fashion-mnist[:classes=0-2+7,per_class=N,set=bundled|full,dir=PATH]`` (built in; use
    ``./fashion-mnist`` for a folder of that name), an image folder (one subfolder per class, optionally
    inside ``train/``, ``val/``, ``test/``), or a ``.csv`` file with columns ``path,label[,split]``.
    Splits are stratified and seeded by ``seed``; ``per_class`` caps the training images per class (nested
    across sizes). ``eval_per_class`` caps the val and test images per class (a fixed, seeded choice), which keeps
    frequent evaluation affordable on large test sets. Unusable image files are skipped and listed in
    ``skipped``, or raise with ``strict``.
    """
    check_settings(seed, val_fraction, test_fraction, per_class)
    fashion = parse_fashion_mnist_spec(spec)
    if fashion is not None:
        cap = per_class if per_class is not None else fashion.per_class
        data = _load_fashion_mnist(spec, fashion, seed=seed, val_fraction=val_fraction, per_class=cap)
        return cap_evaluation(data, eval_per_class, seed)
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
    return _build(spec, source, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                  per_class=per_class, eval_per_class=eval_per_class, strict=strict)
