"""Fashion-MNIST: IDX reader, the bundled subset, spec options, finding and downloading the full set."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from transferlab.data import FASHION_MNIST_CLASSES, find_fashion_mnist_dir, load_images, read_idx
from transferlab.data import fashion_mnist as fm
from transferlab.errors import UserError

from .conftest import write_idx

DEBIAN_COMPLETE = all(
    (fm.DEBIAN_DIR / f"{name}.gz").is_file() or (fm.DEBIAN_DIR / name).is_file() for name in fm.IDX_FILES
)
needs_debian_files = pytest.mark.skipif(
    not DEBIAN_COMPLETE, reason="official IDX files not installed (apt-get install dataset-fashion-mnist)"
)


def image_keys(arrays: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in arrays}


# --- IDX reader ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-idx3-ubyte", "tiny-idx3-ubyte.gz"])
def test_read_idx_plain_and_gz(tmp_path: Path, name: str) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    result = read_idx(write_idx(tmp_path / name, array))
    assert result.dtype == np.uint8 and np.array_equal(result, array)
    result[0, 0, 0] = 9  # a writable copy


def test_read_idx_big_endian_ints(tmp_path: Path) -> None:
    array = np.array([1, -2, 70000], dtype=">i4")
    result = read_idx(write_idx(tmp_path / "ints-idx1", array))
    assert result.dtype == np.int32 and result.dtype.isnative and result.tolist() == [1, -2, 70000]


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good", np.zeros((3, 4), np.uint8)).read_bytes()
    cases = {
        "truncated": (good[:-2], r"truncated or corrupt: its header promises 12 data bytes"),
        "magic": (b"\x01\x02" + good[2:], r"is not an IDX file \(bad magic number 0x0102"),
        "header": (good[:6], r"truncated inside its header"),
        "gz": (gzip.compress(good)[:-8], r"damaged gzip file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=message) as error:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(error.value)
    with pytest.raises(UserError, match=r"IDX file .*absent does not exist"):
        read_idx(tmp_path / "absent")


# --- bundled subset --------------------------------------------------------------------------------


def test_bundled_file_contents() -> None:
    resource = resources.files("transferlab.data") / "bundled" / "fashion_mnist_subset.npz"
    with resource.open("rb") as f, np.load(f) as npz:
        assert npz["train_images"].shape == (5000, 28, 28) and npz["train_images"].dtype == np.uint8
        assert npz["test_images"].shape == (1000, 28, 28)
        assert np.bincount(npz["train_labels"]).tolist() == [500] * 10
        assert np.bincount(npz["test_labels"]).tolist() == [100] * 10


def test_bundled_all_classes() -> None:
    data = load_images("fashion-mnist")
    assert data.classes == list(FASHION_MNIST_CLASSES) and data.name == "fashion-mnist"
    assert (len(data.train), len(data.val), len(data.test)) == (4250, 750, 1000)
    assert np.bincount(data.val.labels).tolist() == [75] * 10
    img = data.train.load(0)
    assert img.mode == "RGB" and img.size == (28, 28)


def test_classes_option_selects_and_relabels() -> None:
    data = load_images("fashion-mnist:classes=5-9")
    assert data.classes == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert np.bincount(data.train.labels).tolist() == [425] * 5
    assert np.bincount(data.test.labels).tolist() == [100] * 5

    mixed = load_images("fashion-mnist:classes=7+0-1")
    assert mixed.classes == ["Sneaker", "T-shirt/top", "Trouser"]
    sneakers = mixed.test.arrays[mixed.test.labels == 0]
    assert image_keys(sneakers) == image_keys(data.test.arrays[data.test.labels == 2])
    # a class splits the same way whichever other classes are chosen
    assert image_keys(mixed.val.arrays[mixed.val.labels == 0]) == image_keys(
        data.val.arrays[data.val.labels == 2]
    )


def test_per_class_nests_and_leaves_val_and_test_alone() -> None:
    small = load_images("fashion-mnist:classes=0-2,per_class=10")
    large = load_images("fashion-mnist:classes=0-2,per_class=50")
    full = load_images("fashion-mnist:classes=0-2")
    assert np.bincount(small.train.labels).tolist() == [10] * 3
    for label in range(3):
        assert image_keys(small.train.arrays[small.train.labels == label]) <= image_keys(
            large.train.arrays[large.train.labels == label]
        )
    for split in ("val", "test"):
        assert getattr(small, split).fingerprint() == getattr(large, split).fingerprint()
        assert getattr(small, split).fingerprint() == getattr(full, split).fingerprint()


def test_per_class_keyword_wins() -> None:
    data = load_images("fashion-mnist:classes=0+1,per_class=50", per_class=7)
    assert len(data.train) == 14


def test_seed_changes_the_split() -> None:
    a, b = load_images("fashion-mnist:classes=0+1"), load_images("fashion-mnist:classes=0+1", seed=3)
    assert a.val.fingerprint() != b.val.fingerprint()
    assert a.test.fingerprint() == b.test.fingerprint()  # the official test set


def test_per_class_too_large() -> None:
    with pytest.raises(
        UserError, match=r"--per-class 426 is more than the 425 training images of class 'Coat', the smallest class; "
        r"use --per-class 425 or less.*set=full"
    ):
        load_images("fashion-mnist:classes=4+5,per_class=426")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "fashion-mnist:per-class=5",
            r"unknown option 'per-class'.*did you mean 'per_class'.*classes, per_class, set, dir",
        ),
        ("fashion-mnist:classes", r"option 'classes' .* needs a value"),
        ("fashion-mnist:classes=0-10", r"'0-10' is not a class index or range within 0-9"),
        ("fashion-mnist:classes=3-1", r"'3-1' is not a class index or range"),
        ("fashion-mnist:classes=a+b", r"classes=a\+b .* is not valid"),
        ("fashion-mnist:classes=1+0-2", r"names class 1 more than once"),
        ("fashion-mnist:classes=4", r"selects one class"),
        ("fashion-mnist:per_class=0", r"per_class=0 .* must be a positive whole number"),
        ("fashion-mnist:set=ful", r"set=ful .* is not valid \(did you mean 'full'\?\)"),
        ("fashion-mnist:set=bundled,dir=/x", r"combines set=bundled with dir="),
        ("fashion-mnist:set=full,set=full", r"option 'set' is given twice"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_images(spec)


# --- full set: finding, reading, downloading -------------------------------------------------------


@needs_debian_files
def test_full_set_from_debian() -> None:
    data = load_images("fashion-mnist:set=full,classes=0+9")
    assert data.classes == ["T-shirt/top", "Ankle boot"]
    assert (len(data.train), len(data.val), len(data.test)) == (10200, 1800, 2000)
    assert np.bincount(data.val.labels).tolist() == [900, 900]


@needs_debian_files
def test_bundled_subset_is_official_data() -> None:
    resource = resources.files("transferlab.data") / "bundled" / "fashion_mnist_subset.npz"
    with resource.open("rb") as f, np.load(f) as npz:
        for kind, part in (("train", "train"), ("t10k", "test")):
            images = read_idx(fm.DEBIAN_DIR / f"{kind}-images-idx3-ubyte.gz")
            labels = read_idx(fm.DEBIAN_DIR / f"{kind}-labels-idx1-ubyte.gz")
            index = npz[f"{part}_index"].astype(np.int64)
            assert np.array_equal(images[index], npz[f"{part}_images"])
            assert np.array_equal(labels[index], npz[f"{part}_labels"])


def test_find_dir_order(tmp_path: Path, fake_fashion_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    assert find_fashion_mnist_dir(None) is None
    assert find_fashion_mnist_dir(str(fake_fashion_mnist)) == fake_fashion_mnist
    monkeypatch.setenv(fm.ENV_VAR, str(fake_fashion_mnist))
    assert find_fashion_mnist_dir(None) == fake_fashion_mnist
    with pytest.raises(
        UserError, match=r"dir=.*empty lacks the Fashion-MNIST file\(s\) train-images-idx3-ubyte"
    ):
        find_fashion_mnist_dir(str(tmp_path / "empty"))
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(UserError, match=rf"{fm.ENV_VAR}=.*empty lacks"):
        find_fashion_mnist_dir(None)


def test_dir_option_reads_the_full_set(fake_fashion_mnist: Path) -> None:
    data = load_images(f"fashion-mnist:dir={fake_fashion_mnist},classes=0-4")
    assert len(data.train) + len(data.val) == 20 and len(data.val) == 3
    assert set(data.train.labels.tolist()) == set(range(5))
    assert len(data.test) == 10


def serve(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the downloader at ``fake`` (file:// URLs) with matching MD5 sums; no Debian files."""
    monkeypatch.setattr(fm, "URL", fake.as_uri() + "/")
    monkeypatch.setattr(fm, "DEBIAN_DIR", fake.parent / "no-debian")
    sums = {name: hashlib.md5((fake / f"{name}.gz").read_bytes()).hexdigest() for name in fm.IDX_FILES}
    monkeypatch.setattr(fm, "IDX_FILES", {name: (sums[name], "") for name in fm.IDX_FILES})


def test_download_into_cache(fake_fashion_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(fake_fashion_mnist, monkeypatch)
    data = load_images("fashion-mnist:set=full")
    assert (len(data.train), len(data.val), len(data.test)) == (34, 6, 20)
    cache = fm.cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{name}.gz" for name in fm.IDX_FILES)
    assert find_fashion_mnist_dir(None) == cache


def test_download_with_wrong_md5(fake_fashion_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(fake_fashion_mnist, monkeypatch)
    monkeypatch.setitem(fm.IDX_FILES, "t10k-images-idx3-ubyte", ("0" * 32, ""))
    with pytest.raises(
        UserError, match=r"t10k-images-idx3-ubyte\.gz is corrupt \(MD5 [0-9a-f]{32}, expected 0{32}\)"
    ):
        load_images("fashion-mnist:set=full")
    assert not list(fm.cache_dir().glob("*.part"))


def test_offline_download_says_where_to_put_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "URL", (tmp_path / "offline").as_uri() + "/")
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(
        UserError, match=rf"could not download Fashion-MNIST .* in {fm.cache_dir()} or set {fm.ENV_VAR}"
    ):
        load_images("fashion-mnist:set=full")
