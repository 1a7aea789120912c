"""The command line, in process through typer's CliRunner (exit codes as `transferlab` gives them), once in a
subprocess, and bad input as one sentence with exit code 2."""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from tests.conftest import make_folder
from transferlab import options
from transferlab.cli import app


@pytest.fixture(autouse=True)
def _as_main_sets_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() switches on PyTorch's huge pages before any command; without them the text demo ran 2-3x slower."""
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")


def run(*args: str) -> Result:
    """``transferlab ARGS`` in this process: a user error gives exit code 2 here too (the app converts it)."""
    return CliRunner().invoke(app, list(args))


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.stderr, result.exc_info)


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.stderr, result.exc_info)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") or "Usage" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in " ".join(result.stderr.split()), result.stderr


def test_the_installed_entry_point_turns_a_user_error_into_one_sentence_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "transferlab", "fit", "/nonexistent/data", "--out", str(tmp_path / "o")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: DATA /nonexistent/data does not exist") and "Traceback" not in proc.stderr


TRAINING = {  # every command that trains on data, with its required arguments
    "fit": ["d", "--out", "o"],
    "pretrain": ["d", "--out", "o"],
    "layers": ["--target-data", "d", "--out", "o"],
    "compare": ["d", "--out", "o"],
    "rank": ["d", "--sources", "s", "--out", "o"],
}


def test_a_shared_option_is_one_declaration_and_every_command_takes_its_whole_group() -> None:
    commands = {c.callback.__name__: c.callback for c in app.registered_commands}
    assert set(TRAINING) <= set(commands)
    for name in TRAINING:
        params = inspect.signature(commands[name]).parameters
        own = inspect.signature(commands[name].__wrapped__).parameters  # what the command itself declares
        for group in options.TRAINING:
            for p in group.parameters:
                assert params[p.name] == p, (name, p.name)  # the group's alias (its help) and default
                assert p.name not in own, f"{name} declares --{p.name} of {group.__name__} again"


@pytest.mark.parametrize("command", TRAINING)
def test_hardware_and_impute_reach_the_api(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab import api
    from transferlab.config import FitConfig
    from transferlab.errors import UserError

    seen: list[dict] = []

    def fake(*args, **kwargs):
        seen.append(kwargs)
        raise UserError("stopped before any work")

    monkeypatch.setattr(api, command, fake)
    assert_user_error(run(command, *TRAINING[command]), "stopped before any work")
    assert_user_error(run(command, *TRAINING[command], "--accelerator", "cpu", "--devices", "0,1", "--num-nodes", "2",
                          "--distributed", "ddp", "--precision", "bf16-mixed", "--compile", "--no-channels-last",
                          "--pin-memory", "--deterministic", "--num-workers", "1", "--impute", "mean"))
    default, given = seen
    names = [*options.HARDWARE.options, "impute"]
    assert {n: default[n] for n in names} == {n: getattr(FitConfig(), n) for n in names}
    assert {n: given[n] for n in names} == dict(
        accelerator="cpu", devices="0,1", num_nodes=2, distributed="ddp", precision="bf16-mixed", compile=True,
        channels_last=False, pin_memory=True, deterministic=True, num_workers="1", impute="mean")


def test_fit_then_predict_end_to_end_on_bundled_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("fit", "fashion-mnist:classes=5-9,per_class=8", "--source", "efficientnet_lite0", "--strategy",
               "frozen", "--epochs", "2", "--image-size", "32", "--out", str(out))
    assert_ok(proc)
    assert "test accuracy" in proc.stdout
    assert (out / "model.json").is_file() and not (out / "INCOMPLETE").exists()
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("L", (28, 28), 200).save(images / "a.png")
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "b.jpg")
    pred = run("predict", str(out), str(images))
    assert_ok(pred)
    rows = list(csv.DictReader(io.StringIO(pred.stdout)))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg"]
    assert all(r["label"] in {"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"} for r in rows)
    target = tmp_path / "pred.csv"
    assert_ok(run("predict", str(out), str(images / "a.png"), "--output", str(target)))
    assert target.read_text().startswith("path,label,probability\n")


def test_sources_lists_offline_availability_and_blocks() -> None:
    proc = run("sources")
    assert_ok(proc)
    assert "efficientnet_lite0" in proc.stdout and "torchvision:vgg16" in proc.stdout
    assert "allocator" in proc.stdout
    blocks = run("sources", "--blocks", "efficientnet_lite0")
    assert_ok(blocks)
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
    assert_ok(proc)
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
        (["fit", "fashion-mnist:classes=5-9", "--impute", "median", "--out", "{tmp}/o"], ["--impute", "median"]),
        (["fit", "fashion-mnist:classes=5-9", "--num-workers", "many", "--out", "{tmp}/o"],
         ["--num-workers must be a count from 0 to 1,024 or auto, not 'many'"]),
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
               "--overwrite").exit_code == 2
    assert (tmp_path / "o" / "other.txt").exists()


def test_mismatched_weights_file_names_the_key(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    proc = run("fit", "fashion-mnist:classes=5-9", "--weights", str(path), "--out", str(tmp_path / "o"))
    assert_user_error(proc, "conv_stem.weight", "(8, 3, 3, 3)")


def test_demo_runs_a_small_comparison_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab import api

    monkeypatch.setitem(api.DEMO_QUICK, "per_class", "4")
    monkeypatch.setitem(api.DEMO_QUICK, "epochs", 1)
    monkeypatch.setitem(api.DEMO_QUICK, "seeds", 2)
    monkeypatch.setitem(api.DEMO_QUICK, "eval_per_class", 10)
    result = run("demo", "--quick", "--out", str(tmp_path))
    assert_ok(result)
    assert "did transfer help?" in result.stdout and "report:" in result.stdout
    results = json.loads((tmp_path / "quick" / "results.json").read_text())
    assert set(results["benefits"]) == {"frozen", "finetune"}
    assert (tmp_path / "quick" / "report.html").is_file()


def test_compare_command_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "fashion-mnist:classes=5-9,per_class=4", "--arms", "scratch,frozen", "--seeds", "2",
            "--epochs", "1", "--image-size", "32", "--eval-per-class", "10", "--out", str(out)]
    proc = run(*args)
    assert_ok(proc)
    assert "did transfer help?" in proc.stdout and "jumpstart" in proc.stdout
    assert "\r" not in proc.stdout + proc.stderr  # not a terminal: no progress bar redrawn into a log file
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["base"]["eval_per_class"] == 10 and len(results["cells"]) == 4
    assert_user_error(run(*args), "--resume")
    assert_ok(run(*args, "--resume"))  # every cell reused
    assert_user_error(run(*args[:-2], "--seeds", "1", "--out", str(tmp_path / "x")), "at least 2 seeds")


def test_text_fit_predict_and_bad_text_input(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("review,stars\n" + "".join(f"{w} good fine,pos\n{w} bad awful,neg\n" for w in "abcdefghij"))
    vectors = tmp_path / "v.txt"
    vectors.write_text("good 1 0\nfine 0.9 0.1\nbad 0 1\nawful 0.1 0.9\n")
    out = tmp_path / "run"
    proc = run("fit", str(data), "--source", str(vectors), "--strategy", "frozen", "--text-column", "review",
               "--label-column", "stars", "--epochs", "3", "--out", str(out))
    assert_ok(proc)
    assert "vectors cover" in proc.stdout
    proc = run("predict", str(out), "--text", "x good fine")
    assert_ok(proc)
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
    assert_ok(proc)
    assert len(proc.stdout.splitlines()) == 4  # header, --text, two lines
    assert not (tmp_path / "o").exists()


def test_text_demo_runs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab import api

    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "per_class", "2")
    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "epochs", 1)
    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "seeds", 2)
    monkeypatch.setitem(api.DEMO_TEXT_QUICK, "eval_per_class", 4)
    result = run("demo", "--text", "--quick", "--out", str(tmp_path))
    assert_ok(result)
    assert "did transfer help?" in result.stdout
    results = json.loads((tmp_path / "text-quick" / "results.json").read_text())
    assert set(results["benefits"]) == {"frozen", "finetune"} and results["baseline"] == "scratch:source=words"
