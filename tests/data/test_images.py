"""Image folders, CSV files, validation, splits, decoding and fingerprints."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data import Data, ImageSplit, SplitDataset, check_image, load_images, open_image
from transferlab.data import images as images_module
from transferlab.errors import UserError

from .conftest import bomb_png, noise_bytes

MakeFolder = Callable[..., Path]


def per_class(split: ImageSplit) -> dict[int, int]:
    return dict(Counter(split.labels.tolist()))


def split_names(data: Data) -> list[set[str]]:
    return [{p.name for p in split.paths} for split in (data.train, data.val, data.test)]


# --- folders ---------------------------------------------------------------------------------------


def test_folder_is_split_stratified(make_folder: MakeFolder) -> None:
    root = make_folder({"dog": 20, "cat": 20, "eel": 20})
    data = load_images(str(root))
    assert data.classes == ["cat", "dog", "eel"]
    assert data.name == str(root)
    assert data.skipped == []
    assert per_class(data.train) == {0: 14, 1: 14, 2: 14}
    assert per_class(data.val) == {0: 3, 1: 3, 2: 3}
    assert per_class(data.test) == {0: 3, 1: 3, 2: 3}
    train, val, test = split_names(data)
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 60
    for split in (data.train, data.val, data.test):  # labels match the class folder of each file
        assert [data.classes[label] for label in split.labels] == [p.parent.name for p in split.paths]


def test_split_depends_on_seed_only(make_folder: MakeFolder) -> None:
    root = make_folder({"a": 20, "b": 20})
    first, again, other = load_images(str(root)), load_images(str(root)), load_images(str(root), seed=1)
    assert split_names(first) == split_names(again)
    assert first.fingerprint() == again.fingerprint()
    assert split_names(first) != split_names(other)
    assert first.fingerprint() != other.fingerprint()


def test_fractions_are_respected(make_folder: MakeFolder) -> None:
    data = load_images(str(make_folder({"a": 50, "b": 50})), val_fraction=0.2, test_fraction=0.1)
    assert (len(data.train), len(data.val), len(data.test)) == (70, 20, 10)


def test_split_folders_are_used_as_given(make_folder: MakeFolder, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_folder({"a": 6, "b": 5}, root / "train")
    make_folder({"a": 2, "b": 2}, root / "val")
    make_folder({"a": 3, "b": 1}, root / "test")
    data = load_images(str(root))
    assert data.classes == ["a", "b"]
    assert (len(data.train), len(data.val), len(data.test)) == (11, 4, 4)
    for name in ("train", "val", "test"):
        assert all(p.parent.parent.name == name for p in getattr(data, name).paths)


def test_missing_split_folders_are_carved_from_train(make_folder: MakeFolder, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_folder({"a": 20, "b": 20}, root / "train")
    data = load_images(str(root))
    assert per_class(data.val) == {0: 3, 1: 3} and per_class(data.test) == {0: 3, 1: 3}
    assert len(data.train) == 28

    make_folder({"a": 2, "b": 2}, root / "test")
    data = load_images(str(root))
    assert per_class(data.val) == {0: 3, 1: 3}
    assert len(data.train) == 34 and len(data.test) == 4


def test_split_folders_need_the_same_classes(make_folder: MakeFolder, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_folder({"a": 4, "b": 4}, root / "train")
    make_folder({"a": 2, "b": 2, "bird": 1}, root / "val")
    with pytest.raises(UserError, match=r"val has class folder\(s\) \['bird'\] that train/ lacks"):
        load_images(str(root))


def test_nested_files_are_found_and_hidden_ones_ignored(
    make_folder: MakeFolder, write_image: Callable[..., Path]
) -> None:
    root = make_folder({"a": 3, "b": 3})
    write_image(root / "a" / "deeper" / "nested.png")
    write_image(root / "a" / ".hidden.png")
    write_image(root / "b" / ".cache" / "x.png")
    write_image(root / ".thumbs" / "x.png")
    data = load_images(str(root))
    names = set.union(*split_names(data))
    assert "nested.png" in names and ".hidden.png" not in names and "x.png" not in names
    assert data.classes == ["a", "b"] and data.skipped == []


def test_tiny_classes_still_split(
    make_folder: MakeFolder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = load_images(str(make_folder({"a": 1, "b": 2, "c": 3})))
    assert set(data.train.labels.tolist()) == {0, 1, 2}  # every class keeps a training image
    assert len(data.train) + len(data.val) + len(data.test) == 6
    with caplog.at_level(logging.WARNING, logger="transferlab.data.splits"):
        data = load_images(str(make_folder({"a": 1, "b": 1}, tmp_path / "two")), val_fraction=0.0)
    assert len(data.train) == 2 and len(data.val) == len(data.test) == 0
    assert "test split of" in caplog.text and "val split of" not in caplog.text


def test_per_class_caps_train_and_nests(make_folder: MakeFolder) -> None:
    root = make_folder({"a": 20, "b": 30})
    small, large = load_images(str(root), per_class=3), load_images(str(root), per_class=10)
    assert per_class(small.train) == {0: 3, 1: 3}
    assert set(small.train.paths) <= set(large.train.paths)
    assert small.val.fingerprint() == large.val.fingerprint()
    with pytest.raises(UserError, match=r"--per-class 15 is more than the 14 training images of class 'a', "
                       r"the smallest class; use --per-class 14"):
        load_images(str(root), per_class=15)


def test_progress_bar_path(make_folder: MakeFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "_PROGRESS_THRESHOLD", 2)
    assert len(load_images(str(make_folder({"a": 3, "b": 3}))).train) == 4


# --- CSV -------------------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_relative_paths(make_folder: MakeFolder, tmp_path: Path) -> None:
    make_folder({"cat": 10, "dog": 10}, tmp_path / "pics")
    rows = [f"pics/{c}/{c}{i}.png,{c}" for c in ("cat", "dog") for i in range(10)]
    csv_path = write_csv(tmp_path / "list.csv", "path,label\n" + "\n".join(rows) + "\n")
    data = load_images(str(csv_path))
    assert data.classes == ["cat", "dog"]
    assert (len(data.train), len(data.val), len(data.test)) == (14, 3, 3)
    assert all(p.is_file() for p in data.train.paths)


def test_csv_split_column(make_folder: MakeFolder, tmp_path: Path) -> None:
    make_folder({"cat": 10, "dog": 10}, tmp_path / "pics")
    rows = [
        f"pics/{c}/{c}{i}.png,{c},{'train' if i < 6 else 'val' if i < 8 else 'test'}"
        for c in ("cat", "dog")
        for i in range(10)
    ]
    csv_path = write_csv(tmp_path / "list.csv", "path,label,split\n" + "\n".join(rows) + "\n")
    data = load_images(str(csv_path))
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 4)
    assert {p.name for p in data.val.paths} == {"cat6.png", "cat7.png", "dog6.png", "dog7.png"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\nx.png,a\n", r"list\.csv line 1: unknown column 'file'"),
        ("path\nx.png\n", r"list\.csv line 1: missing column 'label'"),
        ("", r"list\.csv line 1: expected the header"),
        (
            "path,label\npics/a/a0.png,a\n\npics/none.png,b\n",
            r"list\.csv line 4: image file 'pics/none\.png' does not",
        ),
        ("path,label\npics/a/a0.png\n", r"list\.csv line 2: expected 2 fields"),
        (
            "path,label,split\npics/a/a0.png,a,trian\n",
            r"list\.csv line 2: split 'trian'.*did you mean 'train'",
        ),
        (
            "path,label\npics/a/a0.png,a\npics/a/a0.png,b\n",
            r"list\.csv line 3: .* repeats the file of line 2",
        ),
        (
            "path,label,split\npics/a/a0.png,a,val\npics/b/b0.png,b,train\n",
            r"class 'a' has val rows but no train",
        ),
    ],
)
def test_csv_errors_name_file_and_line(
    make_folder: MakeFolder, tmp_path: Path, text: str, message: str
) -> None:
    make_folder({"a": 2, "b": 2}, tmp_path / "pics")
    with pytest.raises(UserError, match=message):
        load_images(str(write_csv(tmp_path / "list.csv", text)))


# --- validation ------------------------------------------------------------------------------------


def test_bad_files_are_skipped_and_listed(
    make_folder: MakeFolder, bad_files: Callable[[Path], dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder({"a": 5, "b": 5})
    expected = bad_files(root / "b")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.images"):
        data = load_images(str(root))
    assert {Path(path).name: reason for path, reason in data.skipped} == expected
    assert "skipping 5 of 15 files" in caplog.text
    assert len(data.train) + len(data.val) + len(data.test) == 10
    assert Image.MAX_IMAGE_PIXELS == 89478485  # never changed


def test_strict_raises_listing_bad_files(
    make_folder: MakeFolder, bad_files: Callable[[Path], dict[str, str]]
) -> None:
    root = make_folder({"a": 5, "b": 5})
    bad_files(root / "a")
    with pytest.raises(
        UserError, match=r"5 of 15 files .* are not usable images \(.*empty\.png: zero-byte file"
    ):
        load_images(str(root), strict=True)


def test_check_image_reasons(tmp_path: Path, bad_files: Callable[[Path], dict[str, str]]) -> None:
    for name, reason in bad_files(tmp_path).items():
        assert check_image(tmp_path / name) == reason, name
    (tmp_path / "good.png").write_bytes(noise_bytes("PNG"))
    assert check_image(tmp_path / "good.png") is None
    assert check_image(tmp_path / "absent.png") == "file does not exist"


def test_warning_level_decompression_bomb_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(10000, 10000))  # over MAX_IMAGE_PIXELS, under twice it: Pillow only warns
    assert check_image(path) == "exceeds Pillow's decompression-bomb limit"
    with pytest.raises(
        UserError, match=r"big\.png is not usable \(exceeds Pillow's decompression-bomb limit\)"
    ):
        open_image(path)


def test_open_image_names_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(UserError, match=r"image file .*text\.png is not usable \(not an image\)"):
        open_image(tmp_path / "text.png")


# --- dataset errors --------------------------------------------------------------------------------


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no class folders"):
        load_images(str(tmp_path))


def test_class_folder_without_images_is_named(make_folder: MakeFolder) -> None:
    root = make_folder({"a": 3, "b": 3})
    (root / "empty_class").mkdir()
    with pytest.raises(UserError, match=r"empty_class has no usable images"):
        load_images(str(root))


def test_class_folder_with_only_bad_files_is_named(
    make_folder: MakeFolder, bad_files: Callable[[Path], dict[str, str]]
) -> None:
    root = make_folder({"a": 3, "b": 3})
    bad_files(root / "broken")
    with pytest.raises(UserError, match=r"broken has no usable images \(all 5 of its files were skipped\)"):
        load_images(str(root))


def test_one_class_is_not_enough(make_folder: MakeFolder) -> None:
    with pytest.raises(UserError, match=r"only one class \('a'\).*at least 2"):
        load_images(str(make_folder({"a": 5})))


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not exist; give an image folder"):
        load_images(str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"'fashion_mnist' does not exist \(did you mean 'fashion-mnist'\?\)"):
        load_images("fashion_mnist")


def test_file_that_is_not_csv(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("path,label\n")
    with pytest.raises(UserError, match=r"is a file but not a \.csv"):
        load_images(str(tmp_path / "list.txt"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be"),
        ({"val_fraction": 1.0}, "val_fraction must be"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
        ({"per_class": 0}, "per_class must be at least 1"),
    ],
)
def test_bad_settings(make_folder: MakeFolder, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_images(str(make_folder({"a": 2, "b": 2})), **kwargs)


# --- decoding --------------------------------------------------------------------------------------


def pixel(path: Path, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    img = open_image(path)
    assert img.mode == "RGB"
    return img.getpixel(xy)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (20, 10), (255, 0, 0))
    stored.paste((0, 0, 255), (10, 0, 20, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    img = open_image(path)
    assert img.size == (10, 20)
    top, bottom = np.asarray(img)[:8].mean(axis=(0, 1)), np.asarray(img)[12:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50  # the stored left column is now the top row
    assert bottom[2] > 200 and bottom[0] < 50


def test_palette_with_transparency_is_white(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0])
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png", transparency=1)
    assert pixel(tmp_path / "p.png", (0, 0)) == (255, 0, 0)
    assert pixel(tmp_path / "p.png", (1, 0)) == (255, 255, 255)


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (3, 1))
    img.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    img.save(tmp_path / "rgba.png")
    assert pixel(tmp_path / "rgba.png", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / "rgba.png", (1, 0)) == (0, 0, 255)
    assert pixel(tmp_path / "rgba.png", (2, 0)) == (127, 127, 127)
    Image.new("LA", (1, 1), (0, 0)).save(tmp_path / "la.png")
    assert pixel(tmp_path / "la.png") == (255, 255, 255)


def test_cmyk(tmp_path: Path) -> None:
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    assert pixel(tmp_path / "cmyk.tif") == (255, 0, 0)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (32768, 128), (65535, 255), (257 * 7, 7)])
def test_16_bit_is_scaled_not_clipped(tmp_path: Path, value: int, expected: int) -> None:
    Image.fromarray(np.full((2, 2), value, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    assert pixel(tmp_path / "deep.png") == (expected,) * 3


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.new("I;16B", (2, 2), 32768), 128),
        (Image.new("I", (2, 2), 32768), 128),
        (Image.new("F", (2, 2), 0.5), 128),
        (Image.new("F", (2, 2), 200.0), 200),
        (Image.new("1", (2, 2), 1), 255),
        (Image.new("L", (2, 2), 77), 77),
    ],
)
def test_other_modes_become_8_bit_rgb(img: Image.Image, expected: int) -> None:
    rgb = images_module._to_rgb(img)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (expected,) * 3


def test_one_bit_file(tmp_path: Path) -> None:
    Image.new("1", (2, 2), 1).save(tmp_path / "bw.png")
    assert pixel(tmp_path / "bw.png") == (255, 255, 255)


# --- splits, datasets, fingerprints ----------------------------------------------------------------


def test_array_split_loads_grayscale_as_rgb() -> None:
    arrays = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    split = ImageSplit(np.array([1, 0]), arrays=arrays)
    img = split.load(1)
    assert img.mode == "RGB" and img.size == (4, 3)
    assert np.array_equal(np.asarray(img), np.repeat(arrays[1][..., None], 3, axis=2))
    sub = split.subset(np.array([1]))
    assert sub.labels.tolist() == [0] and np.array_equal(sub.arrays, arrays[1:])
    assert split.subset(np.array([False, True])).fingerprint() == sub.fingerprint()


def test_split_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ImageSplit(np.array([0]))
    with pytest.raises(ValueError, match="exactly one"):
        ImageSplit(np.array([0]), paths=[Path("x.png")], arrays=np.zeros((1, 2, 2), np.uint8))


def test_image_dataset(make_folder: MakeFolder) -> None:
    data = load_images(str(make_folder({"a": 4, "b": 4})))
    dataset = SplitDataset(data.train, lambda img: torch.from_numpy(np.asarray(img).copy()))
    image, label = dataset[0]
    assert len(dataset) == len(data.train)
    assert image.shape == (8, 8, 3) and image.dtype == torch.uint8
    assert isinstance(label, int) and label == data.train.labels[0]


def test_fingerprint_follows_file_changes(make_folder: MakeFolder, write_image: Callable[..., Path]) -> None:
    root = make_folder({"a": 4, "b": 4})
    data = load_images(str(root))
    before = data.train.fingerprint()
    assert load_images(str(root)).train.fingerprint() == before
    target = data.train.paths[0]
    write_image(target, color=(1, 2, 3), size=(9, 9))
    changed = data.train.fingerprint()
    assert changed != before
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same bytes, new mtime
    assert data.train.fingerprint() != changed


def test_array_fingerprint_follows_bytes_and_labels() -> None:
    arrays = np.zeros((2, 3, 3), np.uint8)
    base = ImageSplit(np.array([0, 1]), arrays=arrays).fingerprint()
    assert ImageSplit(np.array([0, 1]), arrays=arrays.copy()).fingerprint() == base
    assert ImageSplit(np.array([1, 0]), arrays=arrays).fingerprint() != base
    arrays[1, 2, 2] = 1
    assert ImageSplit(np.array([0, 1]), arrays=arrays).fingerprint() != base
