"""A source and a strategy added from one file outside the package (tests/plugins/toy.py) work in every command:
the README's "How to add", kept true."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tests.plugins.toy  # noqa: F401  (registers toy_cnn and toy_top)
from transferlab import api
from transferlab.errors import UserError


def test_a_plugin_source_and_strategy_run_through_fit_and_compare(image_folder: Path, tmp_path: Path) -> None:
    result = api.fit(str(image_folder), out=tmp_path / "run", source="toy_cnn", strategy="toy_top:open=1",
                     epochs=2, min_steps=0, progress=False)
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    fixed = tests.plugins.toy.toy_cnn(tests.plugins.toy.catalogue.Request("toy_cnn", "toy_cnn"))
    assert torch.equal(weights["blocks.conv1.0.weight"], fixed.blocks["conv1"][0].weight)  # frozen: the source's
    assert not torch.equal(weights["blocks.conv2.0.weight"], fixed.blocks["conv2"][0].weight)  # open: trained
    assert result.test_accuracy >= 0 and api.run_card(tmp_path / "run")["strategy"] == "toy_top"
    results = api.compare(str(image_folder), out=tmp_path / "cmp", source="toy_cnn",
                          arms="scratch,toy_top,toy_top:open=0", seeds=2, epochs=1, min_steps=0, progress=False)
    assert set(results["benefits"]) == {"toy_top", "toy_top:open=0"}
    assert "toy_cnn" in {row["source"] for row in api.list_sources()}


def test_a_plugin_strategys_options_are_checked_before_anything_loads(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"open must lie in \[0, 100\], not 200"):
        api.fit(str(image_folder), out=tmp_path / "r", source="toy_cnn", strategy="toy_top:open=200")
    with pytest.raises(UserError, match="unknown option 'shut'"):
        api.compare(str(image_folder), out=tmp_path / "c", source="toy_cnn", arms="scratch,toy_top:shut=1")
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()
