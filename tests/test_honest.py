"""Numbers that must not mislead: the naive baseline, and errors that come before any slow work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.api import fit
from transferlab.errors import UserError


def test_the_majority_baseline_is_the_commonest_class_before_balancing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate([("a", 20), ("b", 20), ("c", 80)]):  # c is 2/3 of the data
        (tmp_path / "imb" / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 90, size=(12, 12, 3), dtype=np.uint8)
            arr[..., c] = 220
            Image.fromarray(arr).save(tmp_path / "imb" / name / f"{i}.png")
    result = fit(str(tmp_path / "imb"), out=tmp_path / "run", source="cnn_tiny", strategy="scratch", per_class=10,
                 epochs=1, image_size=16, progress=False)
    # balanced training (10 of each) must not make "a" (the first class) the naive model's answer
    assert result.majority_baseline > 1 / 3
    assert result.majority_baseline == 12 / 18  # the test split holds 3 + 3 + 12 images


# --- errors before work ---------------------------------------------------------------------------------------


PROBE = ("import sys, atexit; atexit.register(lambda: print('heavy:' + ','.join(m for m in ('torch', 'lightning', "
         "'timm') if m in sys.modules), file=sys.stderr)); sys.argv = ['transferlab'] + sys.argv[1:]; "
         "from transferlab.cli import main; main()")


def _cli_without_torch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system"}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("args, fragment", [
    (["fit", "/nonexistent", "--out", "{tmp}/o"], "DATA /nonexistent does not exist"),
    (["fit", "fashion-mnist", "--image-size", "8", "--out", "{tmp}/o"], "--image-size must be a whole number from 16"),
    (["fit", "fashion-mnist", "--source", "efficientnet_lite", "--out", "{tmp}/o"],
     "did you mean 'efficientnet_lite0'"),
    (["fit", "fashion-mnist", "--strategy", "frozn", "--out", "{tmp}/o"], "did you mean 'frozen'"),
    (["fit", "fashion-mnist", "--lr", "inf", "--out", "{tmp}/o"], "--lr must be a finite number"),
    (["fit", "wordnet", "--source", "efficientnet_lite0", "--out", "{tmp}/o"],
     "wordnet holds texts but the source efficientnet_lite0 takes images"),
    (["fit", "fashion-mnist:classes=0-1", "--source", "all-MiniLM-L6-v2", "--out", "{tmp}/o"],
     "holds images but the source all-MiniLM-L6-v2 takes texts"),
    (["fit", "fashion-mnist:set=nope", "--out", "{tmp}/o"], "set=nope"),
    (["compare", "fashion-mnist", "--arms", "scratch,finetune:lr=inf", "--out", "{tmp}/o"],
     "arm 'finetune:lr=inf'"),
    (["compare", "fashion-mnist", "--arms", "scratch,finetune:rouse=2", "--out", "{tmp}/o"], "unknown option 'rouse'"),
    (["rank", "fashion-mnist", "--sources", "efficientnet_lite0,nosuch", "--out", "{tmp}/o"], "unknown source"),
    (["layers", "--target-data", "/nope", "--source-data", "fashion-mnist", "--out", "{tmp}/o"], "/nope does not"),
])
def test_input_errors_come_before_any_slow_import(args, fragment, tmp_path: Path) -> None:
    result = _cli_without_torch(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert "heavy:\n" in result.stderr or result.stderr.rstrip().endswith("heavy:"), result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["fit", "--help"], ["compare", "--help"]])
def test_help_and_version_import_no_torch(args) -> None:
    result = _cli_without_torch(*args)
    assert result.returncode == 0 and result.stderr.rstrip().endswith("heavy:"), result.stderr


def test_an_occupied_output_folder_is_refused_before_any_slow_import(tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("x")
    result = _cli_without_torch("fit", "fashion-mnist", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "already holds files" in result.stderr
    result = _cli_without_torch("fit", "fashion-mnist", "--out", str(tmp_path / "o"), "--overwrite")
    assert result.returncode == 2 and "o was not written by transferlab (no .transferlab marker)" in result.stderr
    assert result.stderr.rstrip().endswith("heavy:")


def test_help_says_what_every_option_does_and_its_modality_defaults() -> None:
    from typer.testing import CliRunner

    from transferlab.cli import app

    for command in ("fit", "compare", "pretrain", "layers", "rank", "predict", "sources", "demo",
                    "pretrain-vectors"):
        page = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        for line in page.splitlines():
            if line.lstrip("│ ").startswith("--") and "--help" not in line:
                words = [w for w in line.split("  ") if w.strip(" │")]
                assert len(words) >= 3, f"{command}: an option without help: {line.strip()}"
        assert not re.search(r" \.(\s|$)", page), f"{command}: a dangling ' .' in the help"
    fit_page = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "200"}).output
    assert "Default: 1e-3 for images, 1e-2 for text and tables" in fit_page


def test_too_small_an_input_names_the_smallest_that_works() -> None:
    from torch import nn

    from transferlab.modality.image import check_input_size
    from transferlab.sources.base import GlobalPool, ImagePreprocessing, Source

    blocks = OrderedDict(stem=nn.Conv2d(3, 4, kernel_size=21), body=nn.Conv2d(4, 4, kernel_size=7, stride=2))
    source = Source("needs-27px", "x", blocks, GlobalPool(), 4, ImagePreprocessing(64), False, "random", lambda: source)
    check_input_size(source, 27)  # 27 - 20 = 7 px reach the 7-px kernel: fine
    with pytest.raises(UserError, match="--image-size 16 is too small for needs-27px: the smallest input it can "
                                        "process is 27 px"):
        check_input_size(source, 16)


def test_known_names_of_the_packaged_encoder_resolve_offline() -> None:
    from transferlab.catalogue import canonical
    from transferlab.preflight import check_source

    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"):
        assert canonical(name) == "minilm"
        check_source(name)
    with pytest.raises(UserError, match="did you mean 'minilm'"):  # the name, not one of its spellings
        check_source("all-MiniLM-L6")


def test_rank_table_fits_80_columns_and_keeps_every_source_name(base_run: Path, tmp_path: Path) -> None:
    from rich.console import Console

    import transferlab.cli as cli

    long_name = tmp_path / "a-source-with-a-rather-long-directory-name"
    import shutil

    shutil.copytree(base_run, long_name)
    data = json.loads((base_run / "model.json").read_text())["data"]
    cli.console = Console(width=80, record=True, force_terminal=False)
    try:
        cli.rank(data, sources=f"{long_name},scratch:cnn_tiny", out=tmp_path / "r", scores=None, validate=False,
                 skip_missing=False, per_class=None, image_size=None, seeds=2, epochs=1, eval_per_class=None,
                 text_model="bag", max_vectors=None, text_column="text", label_column="label",
                 encoding_errors="strict", resume=False, overwrite=False)
        text = cli.console.export_text()
    finally:
        cli.console = Console()
    assert max(len(line) for line in text.splitlines()) <= 80
    table = text.split("report:")[0]
    assert "…" not in table  # nothing cut, the source's full path included (wrapped)
    cells = "".join(line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│"))
    assert str(long_name) in cells


def test_fit_counts_epochs_from_one_and_reports_each_epoch(base_run: Path, tmp_path: Path, capsys, caplog) -> None:
    data = json.loads((base_run / "model.json").read_text())["data"]
    with caplog.at_level("INFO", logger="transferlab"):
        fit(data, out=tmp_path / "r", source="cnn_tiny", strategy="scratch", epochs=2, progress=True)
    captured = capsys.readouterr()
    bar = captured.out + captured.err  # Lightning's bars write to stdout
    assert "Epoch 1/2" in bar and "Epoch 2/2" in bar and "Epoch 0/" not in bar
    assert "train_loss" in bar and "val_accuracy" in bar
    # one log line per validated epoch (here the last: two short epochs validate once), counted from one
    assert "epoch 2/2: training loss" in caplog.text and "epoch 0/" not in caplog.text
    assert "validation loss" in caplog.text


def test_a_resumed_run_says_from_which_epoch(base_run: Path, tmp_path: Path, caplog) -> None:
    from tests.test_trust import _interrupted

    out = tmp_path / "r"
    _interrupted(base_run, out)
    data = json.loads((base_run / "model.json").read_text())["data"]
    with caplog.at_level("INFO", logger="transferlab"):
        fit(data, out=out, source="cnn_tiny", strategy="scratch", epochs=2, resume=True, progress=False)
    assert "after epoch 1 of 2" in caplog.text


def test_a_cpu_run_without_image_size_trains_near_the_datas_own_resolution(tmp_path: Path, caplog) -> None:
    from transferlab.data import load_images
    from transferlab.modality.image import cpu_input_size
    from transferlab.sources import load_source

    data = load_images("fashion-mnist:classes=0-1,per_class=5")
    assert data.train.native_size() == 28
    lite = load_source("scratch:efficientnet_lite0")
    assert cpu_input_size(lite, data) == 64  # 28 px rounded up to 32, at least 64, below the source's 224
    assert cpu_input_size(load_source("scratch:cnn_tiny"), data) == 32  # never above the source's own size
