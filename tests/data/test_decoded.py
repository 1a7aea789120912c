"""Images decoded once: the store gives evaluation exactly today's tensors, is read rather than rebuilt, is rebuilt
when damaged, steps aside when the disk has no room, and training crops are seeded per example and applied on the
batch as torchvision would."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data import decoded as dec
from transferlab.data.images import ImageSplit
from transferlab.data.splits import SplitDataset, split_dataset
from transferlab.sources.base import ImagePreprocessing
from transferlab.train.samplers import EpochSeeded


@pytest.fixture
def photos(tmp_path: Path) -> ImageSplit:
    """Six non-square photos of different sizes: the resize and the centre crop both matter."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(40, 30), (30, 52), (64, 64), (25, 25), (90, 33), (33, 90)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return ImageSplit(np.arange(6) % 2, paths=paths)


PRE = ImagePreprocessing(32, crop_pct=0.875, interpolation="bicubic")


def test_evaluation_reads_the_store_exactly_as_the_transform_made_it(photos: ImageSplit) -> None:
    ds = split_dataset(photos, PRE)
    assert isinstance(ds, dec.DecodedDataset)
    old = SplitDataset(photos, PRE.transform(False))
    for i in range(len(photos)):
        assert torch.equal(ds[i][0], old[i][0]) and ds[i][1] == old[i][1]


def test_a_store_is_read_not_rebuilt_and_rebuilt_when_damaged(photos: ImageSplit, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = dec.decoded(photos, PRE, 1.0)
    expected = np.load(path).copy()
    with monkeypatch.context() as m:  # a second run decodes nothing
        m.setattr(ImageSplit, "load", lambda self, i: pytest.fail("decoded a stored image again"))
        assert dec.decoded(photos, PRE, 1.0) == path
    with open(path, "r+b") as f:  # one byte of the pixels changed
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING):
        assert dec.decoded(photos, PRE, 1.0) == path
    assert "checksum does not match" in caplog.text
    assert np.array_equal(np.load(path), expected)


def test_no_room_on_the_disk_decodes_every_read_into_the_same_items(photos: ImageSplit, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    stored = EpochSeeded(split_dataset(photos, PRE, augment=True), seed=1, reseed=True)
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "full"))
    monkeypatch.setattr(dec.shutil, "disk_usage", lambda p: type("U", (), {"free": dec.MIN_FREE})())
    unstored = EpochSeeded(split_dataset(photos, PRE, augment=True), seed=1, reseed=True)
    assert unstored.dataset.path is None and not list((tmp_path / "full").rglob("*.npy"))
    for i in range(len(photos)):  # the same images and crops: a resume does not depend on the cache
        (x, crop), y = stored[(i, 4)]
        (x2, crop2), y2 = unstored[(i, 4)]
        assert torch.equal(x, x2) and torch.equal(crop, crop2) and y == y2


def test_a_disk_that_fills_while_the_store_is_written_leaves_nothing(photos: ImageSplit, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "c"))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dec.os, "posix_fallocate", full)
    assert dec.decoded(photos, PRE, 1.0) is None
    assert [p.name for p in (tmp_path / "c" / "decoded").iterdir() if not p.name.endswith(".lock")] == []
    (tmp_path / "c" / "decoded" / ".abc.npy.999999999.tmp").write_bytes(b"x")  # a builder killed with -9
    monkeypatch.undo()
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "c"))
    assert dec.decoded(photos, PRE, 1.0) is not None
    assert not list((tmp_path / "c" / "decoded").glob("*.tmp"))


def test_training_crops_depend_on_seed_epoch_and_index_only(photos: ImageSplit) -> None:
    ds = EpochSeeded(split_dataset(photos, PRE, augment=True), seed=3, reseed=True)
    forward = [ds[(i, 2)][0][1] for i in range(6)]
    backward = [ds[(i, 2)][0][1] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    assert not all(torch.equal(a, ds[(i, 3)][0][1]) for i, a in enumerate(forward))  # another epoch, other crops
    for top, left, h, w, flip in forward:  # inside the image, area and aspect in the stated ranges (or the whole)
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32 and flip in (0.0, 1.0)
        assert (h, w) == (32, 32) or (dec.SCALE[0] * 32**2 <= h * w and 0.8 <= w / h <= 1.2)  # the ratio after rounding


def test_the_batch_is_augmented_as_torchvision_crops_resizes_and_flips() -> None:
    from torchvision.transforms.v2 import functional as F

    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8)
    crops = torch.tensor([[2, 3, 20, 19, 0], [0, 0, 24, 24, 1], [5, 1, 17, 18, 1]], dtype=torch.float32)
    out = dec.augment_batch(images, crops, PRE.mean, PRE.std)
    for x, (top, left, h, w, flip), got in zip(images, crops.int().tolist(), out, strict=True):
        ref = F.resized_crop(x.float(), top, left, h, w, [24, 24], antialias=False)
        ref = F.normalize((ref.flip(-1) if flip else ref) / 255, PRE.mean, PRE.std)
        assert torch.allclose(got[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-4)  # the border reads past the crop
    assert torch.allclose(out[1], F.normalize(images[1].float().flip(-1) / 255, PRE.mean, PRE.std), atol=1e-5)


def test_two_builders_of_one_store_decode_each_image_once(photos: ImageSplit, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two readers at once (DDP ranks, compare's worker processes): one builds under the lock, the other waits and
    reads what it built. Two threads open the lock file separately, so flock keeps them apart as it does two
    processes."""
    import threading
    import time

    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "shared"))
    loads, real = [], ImageSplit.load

    def slow(self: ImageSplit, i: int) -> Image.Image:
        loads.append(i)
        time.sleep(0.02)
        return real(self, i)

    monkeypatch.setattr(ImageSplit, "load", slow)
    paths: list[Path | None] = []
    workers = [threading.Thread(target=lambda: paths.append(dec.decoded(photos, PRE, 1.0))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(paths) == 2 and paths[0] == paths[1] is not None
    assert sorted(loads) == list(range(len(photos)))


def test_resident_items_carry_their_index_and_the_same_crops(photos: ImageSplit) -> None:
    """With the store on the device, an item is its index and its crop, drawn from the same generators as the
    item with the image; the device's copy at that index is the image."""
    plain = EpochSeeded(split_dataset(photos, PRE, augment=True), seed=3, reseed=True)
    ds = split_dataset(photos, PRE, augment=True)
    assert dec.resident_images(ds, torch.device("cpu")) is None  # not on a CPU unless forced
    images = dec.resident_images(ds, torch.device("cpu"), force=True)
    resident = EpochSeeded(ds, seed=3, reseed=True)
    for i in range(6):
        ((index, crop), label), ((image, want), label_) = resident[(i, 2)], plain[(i, 2)]
        assert int(index) == i and label == label_ and torch.equal(crop, want) and torch.equal(images[index], image)
