"""Images decoded once: every image of a split is decoded and resized to the input size a single time, into a uint8
store (memory-mapped, in the cache, keyed and checksummed like the feature cache), so that no epoch runs PIL.

Evaluation reads the store as today's transform would have made it (resize, centre crop: the same ops on the same
uint8 tensor, so the same values). Training draws each example's crop and flip from (seed, epoch, index), as
:class:`~transferlab.train.samplers.EpochSeeded` seeds it, and :func:`augment_batch` applies them to the whole batch
at once on the training device, after the transfer: the loader only copies bytes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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


def _read(path: Path, meta_path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A store whose shape and checksum match its record, or None (rebuilt, with a warning if it was damaged)."""
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = read_json(meta_path, "decoded-image record")
        images = np.load(path, mmap_mode="r")
        problem = ("it holds another shape" if tuple(images.shape) != shape or images.dtype != np.uint8 else
                   "its checksum does not match its contents" if meta.get("sha256") != _digest(images) else None)
    except Exception as e:  # a damaged store is rebuilt, never trusted
        problem = f"it is unreadable: {(str(e).splitlines() or [type(e).__name__])[0][:120]}"
    if problem is None:
        return images
    log.warning("decoding the images again into %s: %s", path, problem)
    return None


def decoded(split: Any, pre: Any, crop_pct: float) -> Path | None:
    """The store of ``split``'s images at ``pre.input_size`` (centre crop ``crop_pct``): built on first use, then
    read; None when the cache's disk has no room for it (the caller decodes every epoch instead, as before)."""
    n, size = len(split), pre.input_size
    shape = (n, 3, size, size)
    folder = cache_dir("decoded")
    key = store_key(split, pre, crop_pct)
    path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if _read(path, meta_path, shape) is not None:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < n * 3 * size * size + MIN_FREE:
        log.info("not storing %d decoded images in %s: its disk lacks room; every epoch decodes them", n, folder)
        return None
    view = pre.view(crop_pct)
    log.info("decoding %d images once at %d px into %s", n, size, path)

    def fill(tmp: Path) -> None:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

        def one(i: int) -> None:
            images[i] = view(split.load(i)).numpy()

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(one, range(n)))
        images.flush()
        digest[0] = _digest(images)

    digest = [""]
    try:
        atomic_write(path, fill)
        atomic_write(meta_path, json.dumps({"format": STORE_FORMAT, "shape": list(shape), "sha256": digest[0]}))
    except OSError as e:
        if not is_disk_full(e):
            raise
        log.info("not storing decoded images in %s: the disk filled up; every epoch decodes them", folder)
        return None
    return path


class DecodedDataset:
    """A split read from its store. Evaluation items are today's normalised tensors; training items are the uint8
    image with its crop and flip ``(top, left, height, width, flip)``, drawn from the generators that
    :class:`~transferlab.train.samplers.EpochSeeded` seeded for this (seed, epoch, index)."""

    def __init__(self, path: Path, labels: np.ndarray, pre: Any, augment: bool) -> None:
        self.path, self.labels, self.pre, self.augment = path, labels, pre, augment
        self._images: np.ndarray | None = None  # opened in each process that reads it (DataLoader workers too)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as F

        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        x = torch.from_numpy(np.array(self._images[i]))
        label = int(self.labels[i])
        if not self.augment:
            return F.normalize(F.to_dtype(x, torch.float32, scale=True), self.pre.mean, self.pre.std), label
        top, left, h, w = RandomResizedCrop.get_params(x, list(SCALE), list(RATIO))
        flip = float(torch.rand(1).item() < 0.5)  # as v2.RandomHorizontalFlip draws it
        return (x, torch.tensor([top, left, h, w, flip], dtype=torch.float32)), label


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


def decoded_dataset(split: Any, pre: Any, augment: bool) -> DecodedDataset | None:
    """``split`` through its store (training crops come from the whole image, centre-cropped to a square), or None
    when it cannot be stored (empty, or no room): then the caller decodes every epoch."""
    if not len(split):
        return None
    path = decoded(split, pre, 1.0 if augment else pre.crop_pct)
    return None if path is None else DecodedDataset(path, np.asarray(split.labels), pre, augment)
