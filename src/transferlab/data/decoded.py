"""Images decoded once: every image of a split is decoded and resized to the input size a single time, into a uint8
store (memory-mapped, in the cache, keyed and checksummed like the feature cache), so that no epoch runs PIL.

Evaluation reads the store as today's transform would have made it (resize, centre crop: the same ops on the same
uint8 tensor, so the same values). Training draws each example's crop and flip from (seed, epoch, index), as
:class:`~transferlab.train.samplers.EpochSeeded` seeds it, and :func:`augment_batch` applies them to the whole batch
at once on the training device, after the transfer: the loader only copies bytes, and where a training split fits
on the GPU (:func:`resident_images`) not even those."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from transferlab.errors import UserError
from transferlab.files import atomic_write, cache_dir, is_disk_full, read_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
STORE_FORMAT = 1
MIN_FREE = 1 << 30  # bytes the cache's disk keeps free after a store is written; below that, decode every epoch
SCALE, RATIO = (0.7, 1.0), (0.9, 1.1)  # the training crop: a mild random resized crop (area and aspect ranges)


def _digest(images: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(images)).cast("B")).hexdigest()


def store_key(split: Any, pre: Any, crop_pct: float) -> str:
    """The store's key: the split's content identity and the view (size, crop, interpolation)."""
    blob = json.dumps([STORE_FORMAT, split.fingerprint(), pre.input_size, crop_pct, pre.interpolation])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_VERIFIED: dict[Path, tuple[int, int, int]] = {}  # stores this process checked: (inode, size, mtime_ns) then


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read(path: Path, meta_path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a store whose shape and checksum match its record (checked once per process and file
    version); a damaged one is rebuilt, with a warning."""
    if not (path.is_file() and meta_path.is_file()):
        return False
    try:
        if _VERIFIED.get(path) == _identity(path):
            return True
        meta = read_json(meta_path, "decoded-image record")
        images = np.load(path, mmap_mode="r")
        problem = ("it holds another shape" if tuple(images.shape) != shape or images.dtype != np.uint8 else
                   "its checksum does not match its contents" if meta.get("sha256") != _digest(images) else None)
    except Exception as e:  # a damaged store is rebuilt, never trusted
        problem = f"it is unreadable: {(str(e).splitlines() or [type(e).__name__])[0][:120]}"
    if problem is None:
        _VERIFIED[path] = _identity(path)
        return True
    log.warning("decoding the images again into %s: %s", path, problem)
    return False


def _sweep(folder: Path) -> None:
    """Remove the temporary stores of builders that died (``kill -9``): ``.<key>.npy.<pid>.tmp`` of a pid gone."""
    for tmp in folder.glob(".*.npy.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except OSError:  # alive, another user's: not ours to judge
                pass


def decoded(split: Any, pre: Any, crop_pct: float) -> Path | None:
    """The store of ``split``'s images at ``pre.input_size`` (centre crop ``crop_pct``): built on first use (one
    builder at a time per store; the others wait and read it), then read; None when the cache's disk has no room
    for it (the caller then decodes every epoch: the same images, see :class:`DecodedDataset`)."""
    n, size = len(split), pre.input_size
    shape = (n, 3, size, size)
    folder = cache_dir("decoded")
    key = store_key(split, pre, crop_pct)
    path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if _read(path, meta_path, shape):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building this store: wait for it, then read it
        if _read(path, meta_path, shape):
            return path
        _sweep(folder)
        if shutil.disk_usage(folder).free < n * 3 * size * size + MIN_FREE:
            log.info("not storing %d decoded images in %s: its disk lacks room; every epoch decodes them", n, folder)
            return None
        log.info("decoding %d images once at %d px into %s", n, size, path)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        try:
            _build(tmp, split, pre.view(crop_pct), shape)
            os.replace(tmp, path)
            atomic_write(meta_path, json.dumps({"format": STORE_FORMAT, "shape": list(shape),
                                                "sha256": _digest(np.load(path, mmap_mode="r"))}))
            _VERIFIED[path] = _identity(path)  # just written and hashed: the next read in this process trusts it
        except (OSError, UserError) as e:  # UserError: atomic_write's one sentence for a full disk
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and not is_disk_full(e):
                raise
            path.unlink(missing_ok=True)
            log.info("not storing decoded images in %s: the disk is full; every epoch decodes them", folder)
            return None
    return path


def _build(tmp: Path, split: Any, view: Any, shape: tuple[int, ...]) -> None:
    """Decode every image of ``split`` through ``view`` into a new .npy file ``tmp``, its blocks allocated first
    (a disk too small is then an ordinary error, not a SIGBUS in the middle of the mapping), in threads."""
    import torch

    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    allocate = getattr(os, "posix_fallocate", None)  # not on macOS
    if allocate is not None:
        with open(tmp, "r+b") as f:
            try:
                allocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as e:  # a file system without it allocates as the pages are written
                if is_disk_full(e):
                    raise

    def one(i: int) -> None:
        images[i] = view(split.load(i)).numpy()

    with warnings.catch_warnings():  # as images._check_all: the filter list is process-global, threads share it
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=max(1, min(8, torch.get_num_threads()))) as pool:
            list(pool.map(one, range(shape[0])))
    images.flush()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())


class DecodedDataset:
    """A split as the stored images (or, with no store, the same images decoded on each read). Evaluation items
    are today's normalised tensors; training items are the uint8 image with its crop and flip ``(top, left,
    height, width, flip)``, drawn from the generators that :class:`~transferlab.train.samplers.EpochSeeded` seeded
    for this (seed, epoch, index): whether the store exists changes nothing but the time."""

    def __init__(self, path: Path | None, split: Any, pre: Any, augment: bool) -> None:
        self.path, self.split, self.pre, self.augment = path, split, pre, augment
        self.labels = np.asarray(split.labels)
        self.view = pre.view(1.0 if augment else pre.crop_pct)
        self._images: np.ndarray | None = None  # opened in each process that reads it (DataLoader workers too)
        self.resident = False  # training items carry their index: the images already live on the device

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch
        from torchvision.transforms.v2 import functional as F

        label = int(self.labels[i])
        if self.resident:  # the crop drawn from the same generators on an image of the same size, the index kept
            size = self.pre.input_size
            return (torch.tensor(i), _crop(torch.empty(1).expand(3, size, size))), label
        if self.path is None:
            x = self.view(self.split.load(i)).as_subclass(torch.Tensor)
        else:
            if self._images is None:
                self._images = np.load(self.path, mmap_mode="r")
            x = torch.from_numpy(np.array(self._images[i]))
        if not self.augment:
            return F.normalize(F.to_dtype(x, torch.float32, scale=True), self.pre.mean, self.pre.std), label
        return (x, _crop(x)), label


def _crop(image: torch.Tensor) -> torch.Tensor:
    """A training crop and flip ``(top, left, height, width, flip)`` for an image of this size, from the generators
    :class:`~transferlab.train.samplers.EpochSeeded` seeded."""
    import torch
    from torchvision.transforms import RandomResizedCrop

    top, left, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
    flip = float(torch.rand(1).item() < 0.5)  # as v2.RandomHorizontalFlip draws it
    return torch.tensor([top, left, h, w, flip], dtype=torch.float32)


def augment_batch(images: torch.Tensor, crops: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """A uint8 batch (B, 3, S, S) cropped, resized back to S and flipped as each row of ``crops`` says, in one
    ``roi_align`` on whatever device the batch is on, then scaled to [0, 1] and normalised.

    One bilinear sample per output pixel at its centre is torchvision's bilinear resize of the crop (a crop is never
    larger than the image, so antialiasing changes nothing), except on the crop's outer rows and columns: there the
    sample reads the image's pixels just outside the crop where the resize would repeat the crop's edge."""
    import torch
    from torchvision.ops import roi_align

    size = images.shape[-1]
    top, left, h, w, flip = crops.to(torch.float32).unbind(1)
    index = torch.arange(len(images), device=images.device, dtype=torch.float32)
    boxes = torch.stack([index, left, top, left + w, top + h], 1)
    x = roi_align(images.float(), boxes, output_size=size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    x = torch.where(flip.bool()[:, None, None, None], x.flip(-1), x)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255
    return (x - mean_t) / std_t


RESIDENT_SHARE = 0.25  # of the device's free memory that a training split's stored images may take to live there


def resident_images(ds: DecodedDataset, device: torch.device, force: bool = False) -> torch.Tensor | None:
    """A small training split's whole store on the training ``device`` (a GPU: at most :data:`RESIDENT_SHARE` of
    its free memory), read once: each batch then moves its indices and crops, not its images, and the loader has
    nothing left to do. None elsewhere (a CPU's store is already in its page cache) unless ``force`` (the tests)."""
    import torch

    if ds.path is None or not ds.augment:
        return None
    if not force:
        if device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(device)
        if ds.path.stat().st_size > RESIDENT_SHARE * free:
            return None
    images = torch.from_numpy(np.load(ds.path)).to(device)
    ds.resident = True
    log.info("the %d training images live on %s (%.0f MB)", len(images), device, images.nbytes / 2**20)
    return images


def decoded_dataset(split: Any, pre: Any, augment: bool) -> DecodedDataset | None:
    """``split`` through its store (training crops come from the whole image, centre-cropped to a square), decoded
    on each read where the disk has no room for one; None for an empty split."""
    if not len(split):
        return None
    return DecodedDataset(decoded(split, pre, 1.0 if augment else pre.crop_pct), split, pre, augment)
