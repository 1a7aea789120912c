"""Imbalanced data: every run records balanced accuracy, macro-F1, per-class recall and the confusion matrix;
--class-weight balanced and --sampler balanced lift the rare class; --metric decides what compare judges by."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from transferlab import api
from transferlab.train.samplers import EpochSampler

OPTS = {"epochs": 20, "min_steps": 0, "progress": False, "lr": 0.01}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two overlapping classes, 19 rows of 'common' to 1 of 'rare' (rare's centre one standard deviation away)."""
    path = tmp_path_factory.mktemp("skewed") / "t.csv"
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x1", "x2", "label"])
        for i in range(400):
            rare = i % 20 == 0
            x = rng.normal(size=2) + (1.0 if rare else 0.0)
            w.writerow([f"{v:.4f}" for v in x] + ["rare" if rare else "common"])
    return path


@pytest.fixture(scope="module")
def plain(skewed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    api.fit(str(skewed), out=out, source="mlp_tiny", strategy="scratch", **OPTS)
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())["metrics"]


def test_the_rare_class_shows_in_balanced_accuracy_and_macro_f1_and_weights_lift_it(skewed: Path, plain: Path,
                                                                                   tmp_path: Path) -> None:
    m = _metrics(plain)
    assert m["test_recall"]["rare"] == 0.0 and m["test_recall"]["common"] == 1.0  # never predicts the rare class
    assert m["test_accuracy"] == pytest.approx(0.95, abs=0.02)  # accuracy hides it ...
    assert m["test_balanced_accuracy"] == pytest.approx(0.5) and m["test_macro_f1"] < 0.5  # ... these do not
    assert np.asarray(m["test_confusion"])[:, 1].sum() == 0  # nothing in the rare column
    assert m["learned"] is False  # it is the naive model: always the commonest class
    for option in ({"class_weight": "balanced"}, {"sampler": "balanced"}):
        run = tmp_path / next(iter(option.values())) / next(iter(option))
        api.fit(str(skewed), out=run, source="mlp_tiny", strategy="scratch", **OPTS, **option)
        lifted = _metrics(run)
        assert lifted["test_recall"]["rare"] >= 0.5, option
        assert lifted["test_balanced_accuracy"] > m["test_balanced_accuracy"] + 0.1, option


def test_balanced_sampling_draws_every_class_equally_and_is_fixed_per_epoch() -> None:
    labels = [0] * 95 + [1] * 5
    sampler = EpochSampler(len(labels), seed=3, labels=labels)
    sampler.set_epoch(2)
    first = [i for i, _ in sampler]
    sampler.set_epoch(2)
    assert [i for i, _ in sampler] == first  # the same epoch draws the same examples: resume holds
    drawn = np.asarray(labels)[first]
    assert len(first) == 100 and 35 <= drawn.sum() <= 65  # about half rare, where shuffling gives 5 of 100


def test_compare_judges_by_the_chosen_metric(skewed: Path, plain: Path, tmp_path: Path) -> None:
    results = api.compare(str(skewed), out=tmp_path / "c", source=str(plain), arms="logreg,scratch,frozen",
                          seeds=2, epochs=3, min_steps=0, metric="balanced_accuracy", progress=False)
    assert results["metric"] == "balanced_accuracy"
    curve = results["curves"]["all"]["scratch"]["0"]
    assert "test_balanced_accuracy" in curve and "test_accuracy" not in curve
    cell = next(c for c in results["cells"] if c["arm"] == "scratch")
    assert cell["test_score"] == pytest.approx(_metrics(tmp_path / "c" / cell["run_dir"])["test_balanced_accuracy"])
    assert results["logreg"]["all"]["metric"] == "balanced_accuracy"
    assert "test balanced accuracy" in (tmp_path / "c" / "report.html").read_text()
    assert "test_balanced_accuracy" in (tmp_path / "c" / "curves.csv").read_text().splitlines()[0]
