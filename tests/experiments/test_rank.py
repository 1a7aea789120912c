"""``rank``: scores per candidate through the feature cache, validation against fine-tuning, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import assert_user_error, run
from transferlab import api
from transferlab.errors import UserError


def test_a_trained_source_outranks_random_weights_and_validation_runs(base_run: Path, image_folder: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "rank"
    results = api.rank(str(image_folder), sources=f"{base_run},scratch:cnn_tiny", out=out, validate=True, seeds=2,
                       epochs=1, progress=False)
    for score in ("logme", "hscore", "knn", "linear"):
        assert results["ranking"][score][0] == str(base_run), score
    assert set(results["scores"][str(base_run)]) == {"logme", "leep", "nce", "hscore", "knn", "linear"}
    assert results["not_applicable"]["scratch:cnn_tiny"] == ["leep", "nce"]  # the built-in has no source head
    assert results["scores"][str(base_run)]["leep"] <= 0
    for score in ("logme", "hscore", "knn", "linear"):
        v = results["validation"][score]
        assert v["sources"] == 2
        for tau in (v["kendall_tau"], v["weighted_tau"]):  # None (undefined) only when a side is all ties
            assert -1 <= tau <= 1 if tau is not None else len(set(results["finetune_accuracy"].values())) == 1 or (
                results["scores"][str(base_run)][score] == results["scores"]["scratch:cnn_tiny"][score])
    assert results["validation"]["leep"]["sources"] == 1 and results["validation"]["leep"]["kendall_tau"] is None
    assert results["validation"]["leep"]["top_is_best"] is None  # one source picks nothing: n/a, not "no"
    assert all(isinstance(results["validation"][s]["top_is_best"], bool) for s in ("logme", "hscore", "knn"))
    assert results["speedup"] > 0 and set(results["finetune_seconds"]) == set(results["sources"])
    saved = json.loads((out / "results.json").read_text())
    assert isinstance(saved["scores"][str(base_run)]["logme"], float)
    assert "kendall_tau" in saved["validation"]["logme"] and "weighted_tau" in saved["validation"]["logme"]
    assert (out / "report.html").is_file() and (out / "rank.png").is_file() and not (out / "INCOMPLETE").exists()
    assert "<td class=l>LEEP</td><td>n/a</td><td>n/a</td><td>n/a</td>" in (out / "report.html").read_text()


def test_features_come_through_the_frozen_cache(base_run: Path, image_folder: Path, tmp_path: Path) -> None:
    from transferlab.train import features

    api.rank(str(image_folder), sources=f"{base_run},scratch:cnn_tiny", out=tmp_path / "a", progress=False)
    calls = []
    original = features.run_inference
    features.run_inference = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        again = api.rank(str(image_folder), sources=f"{base_run},scratch:cnn_tiny", out=tmp_path / "b", progress=False)
    finally:
        features.run_inference = original
    assert calls == [] and again["seconds"][str(base_run)]["features"] > 0  # cached, and its cost remembered


def test_text_sources_rank(tmp_path: Path) -> None:
    from tests.conftest import TOPICS, make_texts

    data = tmp_path / "t.csv"
    data.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in make_texts(12)))
    vectors = tmp_path / "v.txt"
    lines = []
    for i, vocab in enumerate(TOPICS.values()):
        lines += [f"{w} " + " ".join("1.0" if j == i else "0.0" for j in range(4)) for w in vocab]
    vectors.write_text("\n".join(lines) + "\n")
    results = api.rank(str(data), sources=f"{vectors},scratch:{vectors}", out=tmp_path / "r", progress=False)
    assert results["ranking"]["logme"][0] == str(vectors)
    assert results["not_applicable"][str(vectors)] == ["leep", "nce"]


@pytest.mark.parametrize(
    ("sources", "extra", "fragment"),
    [
        ("cnn_tiny", {}, "at least two candidates"),
        ("cnn_tiny,cnn_tiny", {}, "twice"),
        ("scratch:cnn_tiny,cnn_tny", {}, "did you mean 'cnn_tiny'"),
        ("scratch:cnn_tiny,scratch:cnn_small", {"scores": "logme,leap"}, "did you mean 'leep'"),
        ("scratch:cnn_tiny,scratch:cnn_small", {"scores": "leep"}, "needs the source's own classifier head"),
    ],
)
def test_bad_rank_requests_are_one_clear_sentence(image_folder: Path, tmp_path: Path, sources: str, extra: dict,
                                                  fragment: str) -> None:
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        api.rank(str(image_folder), sources=sources, out=tmp_path / "o", progress=False, **extra)
    assert not (tmp_path / "o").exists()


def test_rank_command_skips_missing_only_when_asked(base_run: Path, image_folder: Path, tmp_path: Path) -> None:
    args = ["rank", str(image_folder), "--sources", f"{base_run},scratch:cnn_tiny,efficientnet_lite1", "--out"]
    assert_user_error(run(*args, str(tmp_path / "a")), "efficientnet_lite1", "--skip-missing")
    proc = run(*args, str(tmp_path / "b"), "--skip-missing")
    assert proc.exit_code == 0, proc.stderr
    assert "LogME" in proc.stdout and "skipped efficientnet_lite1" in proc.stderr
    assert json.loads((tmp_path / "b" / "results.json").read_text())["sources"] == [str(base_run), "scratch:cnn_tiny"]


def test_equal_scores_share_a_rank(base_run: Path, image_folder: Path, tmp_path: Path) -> None:
    import shutil

    from transferlab.experiments.rank import competition_ranks

    assert competition_ranks({"a": 0.5, "b": 0.5, "c": 0.1}) == {"a": 1, "b": 1, "c": 3}
    twin = tmp_path / "twin"
    shutil.copytree(base_run, twin)  # the same weights: every score ties
    results = api.rank(str(image_folder), sources=f"{base_run},{twin},scratch:cnn_tiny", out=tmp_path / "r",
                       scores="logme,knn", progress=False)
    for score in ("logme", "knn"):
        assert results["ranks"][score][str(base_run)] == results["ranks"][score][str(twin)] == 1
    assert results["ranks"]["logme"]["scratch:cnn_tiny"] == 3
