"""The layer-transfer sweep on tiny tasks: every series and cut, the schema, and bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import make_folder
from transferlab.api import layers
from transferlab.errors import UserError
from transferlab.report.html import write_layers_report
from transferlab.report.tables import layers_tables


def test_sweep_on_tiny_tasks(image_folder: Path, tmp_path: Path) -> None:
    target = make_folder(tmp_path / "b", n_per_class=12, seed=5)
    out = tmp_path / "sweep"
    results = layers(str(target), out=out, source_data=str(image_folder), source=None, arch="cnn_tiny", seeds=2,
                     epochs=1, lr=3e-3, progress=False)  # source=None: what the command line passes
    assert results["schema"] == "transferlab.layers/3"
    assert results["blocks"] == ["conv1", "conv2", "conv3"]
    for name in ("AnB", "AnB+", "BnB", "BnB+"):
        for n in ("1", "2", "3"):
            cell = results["series"][name][n]
            assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"] and len(cell["values"]) == 2
    assert len(results["base"]["values"]) == 2
    refs = results["references"]  # the cells train on every target row, as base B did: base B is the scratch arm
    assert refs["scratch"] == results["base"] and not (out / "cells" / "scratch").exists()
    assert 0 <= refs["logreg"] <= 1 and refs["per_class"] is None
    vs = results["series"]["AnB"]["3"]["vs_scratch"]  # paired by seed; 2 seeds decide nothing
    diffs = [v - r for v, r in zip(results["series"]["AnB"]["3"]["values"], refs["scratch"]["values"], strict=True)]
    assert vs["mean"] == pytest.approx(sum(diffs) / 2) and vs["verdict"] == "too few seeds"
    assert -1 <= vs["ci_low"] <= vs["mean"] <= vs["ci_high"] <= 1
    shown = copy.deepcopy(results)
    shown["series"]["AnB"]["3"]["vs_scratch"]["verdict"] = "no"  # as 3 seeds all below scratch would say
    text = _shown(layers_tables(shown, out))
    assert text.count("▼") == 2 and text.count("▲") == 1 and "paired by seed" in text  # the cell and the legend
    assert "2 seeds mark no cell" in text and "from scratch base B" in text
    assert "learned from every target row" not in text  # base B and the cells trained on the same rows
    for per_n in shown["series"].values():  # results written before vs_scratch still render
        for c in per_n.values():
            del c["vs_scratch"]
    assert "▼" not in _shown(layers_tables(shown, out)).replace("▲ / ▼", "")
    (tmp_path / "old").mkdir()
    write_layers_report(tmp_path / "old" / "report.html", shown)
    assert "<td>n/a</td>" in (tmp_path / "old" / "report.html").read_text()
    assert (out / "report.html").is_file() and (out / "layers.png").is_file()
    assert json.loads((out / "results.json").read_text())["series"] == results["series"]
    (out / "cells" / "scratch").mkdir(parents=True)  # as a sweep from before base B's reuse left it
    again = layers(str(target), out=out, source_data=str(image_folder), arch="cnn_tiny", seeds=2, epochs=1,
                   lr=3e-3, progress=False, resume=True)  # every cell reused: the same numbers
    assert again["series"] == results["series"]
    assert (out / "cells" / "scratch" / "all" / "seed1" / "model.json").is_file()  # such a sweep keeps its own arm
    assert again["references"]["scratch"]["values"] == results["base"]["values"]  # on a CPU, base B bit for bit


def test_cells_on_fewer_rows_than_base_b_get_their_own_scratch_arm(image_folder: Path, tmp_path: Path) -> None:
    target = make_folder(tmp_path / "b", n_per_class=12, seed=5)
    out = tmp_path / "sweep"
    results = layers(str(target), out=out, source_data=str(image_folder), arch="cnn_tiny", seeds=2, epochs=1,
                     lr=3e-3, per_class=4, progress=False)
    refs = results["references"]
    assert refs["per_class"] == 4 and refs["rows"] == 3 * 4  # three classes; base B trained on every row
    assert sorted(p.name for p in (out / "cells" / "scratch" / "all").iterdir()) == ["seed0", "seed1"]
    assert len(refs["scratch"]["values"]) == 2
    caveat = "BnB and BnB+ start from base B, which learned from every target row"  # and the cells from 4 per class
    assert caveat in _shown(layers_tables(results, out)) and caveat in (out / "report.html").read_text()


def _shown(parts: tuple[list, list]) -> str:
    """What the terminal shows of a command's output (standard output, then standard error)."""
    console = Console(record=True, width=240)
    for part in [*parts[0], *parts[1]]:
        console.print(part)
    return console.export_text()


def test_bad_input(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="exactly one of"):
        layers(str(image_folder), out=tmp_path / "x")
    with pytest.raises(UserError, match="at least 2 seeds"):
        layers(str(image_folder), out=tmp_path / "x", source_data=str(image_folder), seeds=1)
    assert not (tmp_path / "x").exists()


def test_sweep_over_a_ready_source(base_run: Path, tmp_path: Path) -> None:
    data = json.loads((base_run / "model.json").read_text())["data"]
    results = layers(data, out=tmp_path / "s", source=str(base_run), seeds=2, epochs=1, progress=False)
    assert set(results["series"]) == {"AnB", "AnB+"} and results["base"] is None
    assert set(results["series"]["AnB"]) == {"1", "2", "3"}
    assert len(results["references"]["scratch"]["values"]) == 2 and (tmp_path / "s" / "cells" / "scratch").is_dir()
