"""The command line: end to end in a subprocess, and bad input as one sentence with exit code 2."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_folder


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "transferlab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") or "Usage" in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in " ".join(proc.stderr.split()), proc.stderr


def test_fit_then_predict_end_to_end_on_bundled_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("fit", "fashion-mnist:classes=5-9,per_class=8", "--source", "efficientnet_lite0", "--strategy",
               "frozen", "--epochs", "2", "--image-size", "32", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    assert (out / "model.json").is_file() and not (out / "INCOMPLETE").exists()
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("L", (28, 28), 200).save(images / "a.png")
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "b.jpg")
    pred = run("predict", str(out), str(images))
    assert pred.returncode == 0, pred.stderr
    rows = list(csv.DictReader(io.StringIO(pred.stdout)))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg"]
    assert all(r["label"] in {"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"} for r in rows)
    target = tmp_path / "pred.csv"
    assert run("predict", str(out), str(images / "a.png"), "--output", str(target)).returncode == 0
    assert target.read_text().startswith("path,label,probability\n")


def test_sources_lists_offline_availability_and_blocks() -> None:
    proc = run("sources")
    assert proc.returncode == 0, proc.stderr
    assert "efficientnet_lite0" in proc.stdout and "torchvision:vgg16" in proc.stdout
    assert "allocator" in proc.stdout
    blocks = run("sources", "--blocks", "efficientnet_lite0")
    assert blocks.returncode == 0
    for name in ("stem", "blocks_6", "head_conv", "classifier"):
        assert name in blocks.stdout


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_folder(tmp_path_factory.mktemp("bad") / "data", n_per_class=8)
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "green" / "notes.png").write_text("not an image")
    return root


def test_bad_files_are_skipped_and_listed(bad_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("fit", str(bad_folder), "--source", "scratch:cnn_tiny", "--strategy", "scratch", "--epochs", "1",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    listed = (out / "skipped_files.csv").read_text()
    assert "empty.png" in listed and "notes.png" in listed


def test_strict_fails_before_training_with_the_list(bad_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("fit", str(bad_folder), "--source", "scratch:cnn_tiny", "--strict", "--out", str(out))
    assert_user_error(proc, "empty.png", "notes.png")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["fit", "/nonexistent/data", "--out", "{tmp}/o"], ["/nonexistent/data", "does not exist"]),
        (["fit", "fashion-mnist:classes=5-9", "--source", "efficientnet_lit0", "--out", "{tmp}/o"],
         ["did you mean 'efficientnet_lite0'"]),
        (["fit", "fashion-mnist:classes=5-9", "--strategy", "frozn", "--out", "{tmp}/o"], ["did you mean 'frozen'"]),
        (["fit", "fashion-mnist:classes=5-9", "--reuse", "some", "--out", "{tmp}/o"], ["--reuse"]),
        (["fit", "fashion-mnist:classes=5-9", "--reuse", "99", "--out", "{tmp}/o"], ["exceeds the 9 blocks"]),
        (["fit", "fashion-mnist:classes=5-9,per_class=9999", "--out", "{tmp}/o"], ["9999"]),
        (["fit", "fashion-mnist:classes=5-9", "--source", "timm:resnet18", "--out", "{tmp}/o"], ["--weights FILE"]),
        (["fit", "fashion-mnist:classes=5-9", "--epochs", "0", "--out", "{tmp}/o"], ["--epochs"]),
        (["fit", "fashion-mnist:classes=5-9", "--distributed", "dddp", "--out", "{tmp}/o"], ["--distributed"]),
        (["fit", "fashion-mnist:classes=5-9", "--accelerator", "cpu", "--precision", "16-mixed", "--out", "{tmp}/o"],
         ["16-mixed needs a GPU"]),
        (["fit", "fashion-mnist:classes=5-9", "--precision", "8", "--out", "{tmp}/o"], ["--precision must be one of"]),
        (["fit", "fashion-mnist:classes=5-9", "--distributed", "fsdp", "--out", "{tmp}/o"], ["not supported"]),
        (["predict", "{tmp}", "{tmp}"], ["not a transferlab run directory"]),
        (["predict", "/nonexistent/run", "x.png"], ["/nonexistent/run"]),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    proc = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_user_error(proc, *[f.replace("{tmp}", str(tmp_path)) for f in fragments])
    assert not (tmp_path / "o").exists()


def test_occupied_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "other.txt").write_text("someone else's experiment")
    proc = run("fit", "fashion-mnist:classes=5-9,per_class=5", "--out", str(tmp_path / "o"))
    assert_user_error(proc, "already holds files")
    assert run("fit", "fashion-mnist:classes=5-9,per_class=5", "--out", str(tmp_path / "o"),
               "--overwrite").returncode == 2
    assert (tmp_path / "o" / "other.txt").exists()


def test_mismatched_weights_file_names_the_key(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    proc = run("fit", "fashion-mnist:classes=5-9", "--weights", str(path), "--out", str(tmp_path / "o"))
    assert_user_error(proc, "conv_stem.weight", "(8, 3, 3, 3)")


def test_demo_runs_a_small_comparison_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from transferlab import api, cli

    monkeypatch.setitem(api.DEMO_QUICK, "per_class", "4")
    monkeypatch.setitem(api.DEMO_QUICK, "epochs", 1)
    monkeypatch.setitem(api.DEMO_QUICK, "seeds", 2)
    monkeypatch.setattr(sys, "argv", ["transferlab", "demo", "--quick", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    shown = capsys.readouterr().out
    assert "did transfer help?" in shown and "report:" in shown
    results = json.loads((tmp_path / "quick" / "results.json").read_text())
    assert set(results["benefits"]) == {"frozen", "finetune"}
    assert (tmp_path / "quick" / "report.html").is_file()


def test_compare_command_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "fashion-mnist:classes=5-9,per_class=4", "--arms", "scratch,frozen", "--seeds", "2",
            "--epochs", "1", "--image-size", "32", "--eval-per-class", "10", "--out", str(out)]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "did transfer help?" in proc.stdout and "jumpstart" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["base"]["eval_per_class"] == 10 and len(results["cells"]) == 4
    assert_user_error(run(*args), "--resume")
    assert run(*args, "--resume").returncode == 0  # every cell reused
    assert_user_error(run(*args[:-2], "--seeds", "1", "--out", str(tmp_path / "x")), "at least 2 seeds")


def test_text_fit_predict_and_bad_text_input(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("review,stars\n" + "".join(f"{w} good fine,pos\n{w} bad awful,neg\n" for w in "abcdefghij"))
    vectors = tmp_path / "v.txt"
    vectors.write_text("good 1 0\nfine 0.9 0.1\nbad 0 1\nawful 0.1 0.9\n")
    out = tmp_path / "run"
    proc = run("fit", str(data), "--source", str(vectors), "--strategy", "frozen", "--text-column", "review",
               "--label-column", "stars", "--epochs", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "vectors cover" in proc.stdout
    proc = run("predict", str(out), "--text", "x good fine")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "text,label,probability"
    bad_vectors = tmp_path / "bad.txt"
    bad_vectors.write_text("good 1 0\nbad 0 1 1\n")
    common = ["--text-column", "review", "--label-column", "stars", "--out", str(tmp_path / "o")]
    assert_user_error(run("fit", str(data), "--source", str(bad_vectors), *common), f"{bad_vectors} line 2")
    assert_user_error(run("fit", str(data), "--source", "words", "--text-model", "rnn", *common), "--text-model")
    assert_user_error(run("fit", str(data), "--source", "words", "--out", str(tmp_path / "o")),
                      "no column 'text'", "--text-column")
    assert_user_error(run("pretrain-vectors", str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "o")),
                      "does not exist")
    lines = tmp_path / "lines.txt"
    lines.write_text("x good fine\n\ny bad awful\n")
    proc = run("predict", str(out), str(lines), "--text", "z fine")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 4, proc.stderr  # header, --text, two lines
    assert not (tmp_path / "o").exists()


def test_text_demo_runs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from transferlab import api, cli

    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "per_class", "3")
    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "epochs", 1)
    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "seeds", 2)
    monkeypatch.setattr(sys, "argv", ["transferlab", "demo", "--text", "--quick", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    assert "did transfer help?" in capsys.readouterr().out
    results = json.loads((tmp_path / "text-quick" / "results.json").read_text())
    assert set(results["benefits"]) == {"frozen", "finetune"} and results["baseline"] == "scratch:source=words"
