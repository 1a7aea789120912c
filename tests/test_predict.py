"""``predict`` skips what it cannot read, like ``fit``: a count on stderr, a path,reason list, ``--strict`` to
refuse; every file is opened once and every readable one is classified."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.test_cli import assert_ok, assert_user_error, run
from transferlab import api
from transferlab.errors import UserError

GOOD = ["a0.png", "c1.png", "e2.png", "g3.png", "h4.png", "i5.png"]
BAD = {"b_empty.png": "zero-byte file", "d_notes.png": "not an image", "f_cut.png": "truncated or corrupt"}


@pytest.fixture
def mixed_folder(image_folder: Path, tmp_path: Path) -> Path:
    """Six good images (two per class) with three unreadable files in between, in sorted order a0 .. i5, and
    hidden files that are not considered at all."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i, name in enumerate(GOOD):
        shutil.copy(image_folder / ["red", "green", "blue"][i % 3] / f"{i}.png", folder / name)
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "d_notes.png").write_text("not a picture\n")
    whole = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(whole, "PNG", compress_level=0)
    (folder / "f_cut.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (folder / "readme.txt").write_text("not an image extension: never considered\n")
    (folder / "._a0.png").write_bytes(b"\x00\x05\x16\x07")  # hidden (macOS metadata), ignored as fit does
    (folder / ".thumbs").mkdir()
    (folder / ".thumbs" / "a0.png").write_bytes(b"")
    return folder


def test_predict_skips_unreadable_images_reading_each_file_once(base_run: Path, mixed_folder: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab.transfer import model as features  # where predict's inference lives

    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(Path(fp).name)
        return real_open(fp, *args, **kwargs)

    batches: list[int] = []
    real_inference = features.run_inference

    def counting_inference(model, loader, *args, **kwargs):
        batches.extend(len(x) for x, _ in loader)
        return real_inference(model, loader, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(features, "run_inference", counting_inference)
    skipped: list[tuple[str, str]] = [("earlier", "kept")]
    rows = api.predict(base_run, [mixed_folder], batch_size=2, skipped=skipped)

    good = [mixed_folder / name for name in GOOD]
    assert [r[0] for r in rows] == [str(p) for p in good]  # every readable file, in order
    assert skipped == [("earlier", "kept"), *((str(mixed_folder / n), why) for n, why in BAD.items())]
    assert sorted(opened) == sorted([*GOOD, "d_notes.png", "f_cut.png"])  # hidden files were not even opened
    assert len(opened) == len(set(opened))  # no file opened twice (a zero-byte one not at all)
    assert sum(batches) == len(good) and max(batches) <= 2  # no batch thrown away, batches no larger than asked

    monkeypatch.undo()
    alone = api.predict(base_run, good)  # the same files without the bad ones, in one batch
    assert [r[:2] for r in alone] == [r[:2] for r in rows]
    assert [r[2] for r in alone] == pytest.approx([r[2] for r in rows], abs=1e-5)
    assert sum(label == ["red", "green", "blue"][i % 3] for i, (_, label, _) in enumerate(rows)) >= 4


def test_predict_strict_refuses_naming_the_first_file_and_the_count(base_run: Path, mixed_folder: Path) -> None:
    skipped: list[tuple[str, str]] = []
    with pytest.raises(UserError) as info:
        api.predict(base_run, [mixed_folder], strict=True, skipped=skipped)
    message = str(info.value)
    assert message.startswith(f"3 of 9 files cannot be read, the first {mixed_folder / 'b_empty.png'} "
                              "(zero-byte file)"), message
    assert "--strict" in message and "\n" not in message
    assert [Path(p).name for p, _ in skipped] == list(BAD)


def test_predict_with_nothing_readable_is_one_sentence(base_run: Path, mixed_folder: Path) -> None:
    bad = [mixed_folder / name for name in BAD]
    skipped: list[tuple[str, str]] = []
    with pytest.raises(UserError, match="none of the 3 files given could be read.*b_empty.png: zero-byte file"):
        api.predict(base_run, bad, skipped=skipped)
    assert len(skipped) == 3  # the caller still learns why


@pytest.fixture(scope="module")
def words_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("textrun")
    data = root / "t.csv"
    data.write_text("text,label\n" + "".join(f"{w} good fine nice,pos\n{w} bad awful poor,neg\n"
                                             for w in "abcdefghijklmn"))
    api.fit(str(data), out=root / "run", source="words:16", strategy="scratch", epochs=8, lr=3e-2, progress=False)
    return root / "run"


def test_text_predict_skips_files_that_are_not_utf8(words_run: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("x good fine nice\n\ny bad awful poor\n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"z good fine\nna\xefve bad\n")
    skipped: list[tuple[str, str]] = []
    rows = api.predict(words_run, [latin, good], texts=["q good nice"], skipped=skipped)
    assert [r[0] for r in rows] == ["q good nice", "x good fine nice", "y bad awful poor"]
    assert skipped == [(str(latin), "line 2 is not valid UTF-8 (byte 0xef)")]
    with pytest.raises(UserError, match=f"1 inputs? cannot be used, the first {latin} \\(line 2 is not valid"):
        api.predict(words_run, [latin, good], strict=True)
    with pytest.raises(UserError, match="none of the 1 files given could be read"):
        api.predict(words_run, [latin])


def test_cli_predict_lists_skipped_files_and_strict_refuses(base_run: Path, mixed_folder: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    proc = run("predict", str(base_run), str(mixed_folder), "--output", str(out))
    assert proc.exit_code == 0, proc.stderr
    assert "skipped 3 inputs that cannot be used" in proc.stderr and "Traceback" not in proc.stderr
    assert str(tmp_path / "pred.skipped.csv") in " ".join(proc.stderr.split())
    assert len(list(csv.DictReader(out.open()))) == 6
    listed = list(csv.DictReader((tmp_path / "pred.skipped.csv").open()))
    assert [(Path(r["path"]).name, r["reason"]) for r in listed] == list(BAD.items())

    custom = tmp_path / "unread.csv"
    proc = run("predict", str(base_run), str(mixed_folder), "--strict", "--skipped", str(custom))
    assert_user_error(proc, "3 of 9 files cannot be read", str(mixed_folder / "b_empty.png"), "--strict")
    assert proc.stdout == ""
    assert len(list(csv.DictReader(custom.open()))) == 3  # the refusal still lists them


# --- a source's own classifier, no training ------------------------------------------------------------------


def _photos(tmp_path: Path) -> Path:
    """Photographs that ship with the project's own dependencies (matplotlib's and scikit-learn's sample images):
    Grace Hopper in uniform, a Chinese palace, a daisy."""
    import matplotlib
    import sklearn

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", folder)
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(Path(sklearn.__file__).parent / "datasets" / "images" / name, folder)
    return folder


def test_a_pretrained_source_classifies_photos_with_imagenet_names(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    assert_ok(run("predict", "efficientnet_lite0", str(_photos(tmp_path)), "--top", "3", "--output", str(out)))
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "rank", "label", "probability"] and len(rows) == 9
    top3 = {Path(p).name: [r["label"] for r in rows if r["path"] == p] for p in {r["path"] for r in rows}}
    assert top3["china.jpg"][0] == "palace"  # ImageNet-1k's names, from timm's table
    assert top3["flower.jpg"][0] == "daisy"
    assert "military uniform" in top3["grace_hopper.jpg"]  # the picture torchvision's docs classify
    probabilities = [float(r["probability"]) for r in rows[:3]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1


@pytest.mark.parametrize("model, sentence", [
    ("minilm", "minilm has no classifier of its own with named classes"),
    ("cnn_small", "train one on your data with `transferlab fit DATA --source cnn_small`"),
    ("efficientnet_lite", "neither a run directory nor a source (did you mean 'efficientnet_lite0'?)"),
    ("runs/nothing", "run directory runs/nothing does not exist"),
])
def test_predict_with_a_source_that_cannot_classify_is_one_sentence(model: str, sentence: str) -> None:
    assert_user_error(run("predict", model, "x.png"), sentence)


def test_top_k_of_a_run_lists_k_labels_per_input_and_refuses_more_than_its_classes(base_run: Path,
                                                                                    mixed_folder: Path) -> None:
    rows = api.predict(base_run, [mixed_folder / "a0.png"], top=2)
    assert len(rows) == 2 and rows[0][1] != rows[1][1] and rows[0][2] >= rows[1][2]
    with pytest.raises(UserError, match="--top 4 asks for more labels than the 3 classes"):
        api.predict(base_run, [mixed_folder / "a0.png"], top=4)


def test_predict_gives_calibrated_probabilities_from_the_runs_temperature(base_run: Path, mixed_folder: Path,
                                                                          tmp_path: Path) -> None:
    import json

    card = json.loads((base_run / "model.json").read_text())
    cal = card["calibration"]
    assert cal["fitted_on"] == "validation" and 0.05 <= cal["temperature"] <= 20
    assert 0 <= cal["test_ece_calibrated"] <= 1 and 0 <= cal["test_ece"] <= 1
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    images = [mixed_folder / name for name in GOOD]
    by_temperature = {}
    for t in (1.0, 4.0):
        card["calibration"]["temperature"] = t
        (copy / "model.json").write_text(json.dumps(card))
        by_temperature[t] = api.predict(copy, images)
    assert [r[1] for r in by_temperature[1.0]] == [r[1] for r in by_temperature[4.0]]  # the same labels ...
    hot, cold = by_temperature[4.0], by_temperature[1.0]
    assert all(h[2] < c[2] for h, c in zip(hot, cold, strict=True))  # ... less sure
    card["calibration"]["temperature"] = -1
    (copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="field calibration.temperature must be a number from 0.05 to 20"):
        api.predict(copy, images)
