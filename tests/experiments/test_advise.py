"""advise: from data to a decision within a budget, on each modality; the budget kept on a fake clock; resumed
after kill -9 without training a finished trial again; two workers on one study; fit --config reproduces it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_hostile import TABLE_OPTS, write_table
from transferlab import api
from transferlab.errors import UserError

QUICK = dict(min_steps=5, patience=1, max_steps=20, progress=False)  # tiny trials: what is tested is the plumbing


def _data(base_run: Path) -> str:
    return json.loads((base_run / "model.json").read_text())["data"]


def _check_advice(advice: dict, out: Path) -> None:
    assert advice["schema"] == "transferlab.advise/1" and (out / "advice.json").is_file()
    assert (out / "report.html").is_file() and not (out / "INCOMPLETE").exists()
    assert advice["trials"] and advice["recommendation"]["kind"] in ("transfer", "scratch", "logreg")
    ev = advice["evidence"]
    assert "logreg" in ev["data_efficiency"] and ev["baseline"] in ev["data_efficiency"]
    assert advice["recommendation"]["arm"] in ev["data_efficiency"]  # its test accuracy is in the evidence
    for arm, per_size in ev["data_efficiency"].items():
        v = per_size[advice["size"]]
        assert 0 <= v["mean"] <= 1, arm
    assert advice["seconds"] <= advice["budget_seconds"] * 1.1 + 15  # start-up in a test process aside


def test_advise_on_images_end_to_end_and_fit_config_reproduces_it(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "advice"
    advice = api.advise(_data(base_run), out=out, budget="5m", candidates=str(base_run), trials=3, **QUICK)
    _check_advice(advice, out)
    ended = [t for t in advice["trials"] if t["state"] in ("complete", "pruned")]
    assert len(ended) == 3 and advice["timings"]["search"] < 0.35 * 300  # --trials ended the search, not the clock
    assert advice["shortlist"] == [str(base_run)]
    folds = {json.loads(p.read_text())["config"]["fold"] for p in (out / "confirm" / "cells").rglob("config.json")}
    assert folds == {"0/3", "1/3", "2/3"}  # seed i on fold i; the choice weighs every train and val example once
    sizes = json.loads((base_run / "config.json").read_text())["resolved"]["sizes"]
    assert {o["versus_default"]["n"] for o in advice["selection"] if o["versus_default"]} == {
        sizes["train"] + sizes["val"]}
    if advice["config"] is not None:  # fit --config runs exactly the recommended configuration
        run = api.fit(_data(base_run), out=tmp_path / "again", config=out / "advice.json", progress=False)
        recorded = json.loads((run.out / "config.json").read_text())["config"]
        for key, value in advice["config"].items():
            if key not in ("max_time",):
                assert recorded[key] == value, key
    from transferlab.report.html import advise_lines

    lines = advise_lines(advice, out)
    assert len(lines) == 3 and ("Use " in lines[0] or "logistic regression" in lines[0])


def test_advise_on_texts_and_tables(text_csv: Path, tmp_path: Path) -> None:
    words = tmp_path / "words"
    api.fit(str(text_csv), out=words, source="words:16", strategy="scratch", text_column="sentence",
            label_column="topic", epochs=2, progress=False)
    advice = api.advise(str(text_csv), out=tmp_path / "t", budget="5m", candidates=str(words), trials=2,
                        text_column="sentence", label_column="topic", **QUICK)
    _check_advice(advice, tmp_path / "t")
    table = write_table(tmp_path / "rows.csv")
    developed = tmp_path / "mlp"
    api.pretrain(str(table), arch="mlp_tiny", out=developed, **TABLE_OPTS)
    advice = api.advise(str(table), out=tmp_path / "tab", budget="5m", candidates=str(developed), trials=2,
                        **QUICK)
    _check_advice(advice, tmp_path / "tab")
    alone = api.advise(str(table), out=tmp_path / "none", budget="5m", **QUICK)  # no source of tables here
    assert (tmp_path / "none" / "advice.json").is_file() and not (tmp_path / "none" / "INCOMPLETE").exists()
    assert alone["shortlist"] == [] and set(alone["evidence"]["data_efficiency"]) == {"logreg", "scratch"}
    from transferlab.report.html import advise_lines

    assert advise_lines(alone, tmp_path / "none")[0].startswith("No source for this data here")


def test_the_budget_is_kept_on_a_fake_clock(base_run: Path, tmp_path: Path) -> None:
    """Each reading of the clock is 5 s later: the search's share runs out after a few readings, so no trial
    starts after it (those queued stay 'not started'), and the cells of each fold of the confirmation are capped
    at an equal share of what is left of the confirmation's when the fold starts (one reading each)."""
    from transferlab.experiments.advise import advise
    from transferlab.experiments.plan import plan_advise

    now = [0.0]

    def clock() -> float:
        now[0] += 5.0
        return now[0]

    plan = plan_advise(_data(base_run), "60s", str(base_run), 3, 1, None,
                       {k: v for k, v in QUICK.items() if k != "progress"})
    out = tmp_path / "fake"
    out.mkdir()
    advice = advise(plan, out=out, progress=False, clock=clock, started=0.0)
    started = [t for t in advice["trials"] if t["state"] != "not started"]
    assert len(started) < len(advice["trials"])  # the clock ran out with trials still queued
    assert advice["timings"]["search"] <= 0.35 * 60 + 5 * 4  # the search's share, a few clock readings late
    order = [c["run_dir"] for c in json.loads((out / "confirm" / "results.json").read_text())["cells"]]
    caps = [json.loads((out / "confirm" / d / "config.json").read_text())["config"]["max_time"] for d in order]
    seconds = 0.5 * (60 - advice["timings"]["start_up_and_shortlist"])  # the confirmation's share
    arms = sum(arm != "logreg" for arm in advice["evidence"]["data_efficiency"])  # frozen's included
    n = len(order)
    assert n == 3 * arms
    for k, cap in enumerate(caps):  # a fold's cells: an equal share of what is left when it starts (a reading later)
        r = k // arms
        assert cap == pytest.approx(max(1.0, min(seconds / n, (seconds - 5 * (r + 1)) / (n - r * arms)))), k


def test_a_killed_advise_resumes_without_training_a_finished_trial_again(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "transferlab", "-q", "advise", _data(base_run), "--out", str(out), "--budget",
            "5m", "--trials", "2", "--candidates", str(base_run), "--min-steps", "5", "--patience", "1",
            "--max-steps", "20"]
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finished() -> list[tuple[int, str]]:
        if not (out / "study.db").is_file():  # (connecting would create it, and a folder the run has not locked)
            return []
        try:
            db = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)
            try:
                return db.execute("select t.number, a.value_json from trials t join trial_user_attributes a on "
                                  "a.trial_id = t.trial_id where t.state = 'COMPLETE' and a.key = 'run_dir'").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            return []

    deadline = time.monotonic() + 120
    while not finished() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished()
    assert done, f"no trial finished before the kill: {proc.stderr.read()[-2000:]}"
    stamps = {run: (out / json.loads(run) / "model.safetensors").stat().st_mtime_ns for _, run in done}
    advice = api.advise(_data(base_run), out=out, budget="5m", trials=2, candidates=str(base_run), resume=True,
                        **QUICK)  # resumed in this process
    for run, stamp in stamps.items():  # not trained again
        assert (out / json.loads(run) / "model.safetensors").stat().st_mtime_ns == stamp
    runs = [t["run_dir"] for t in advice["trials"] if t["state"] == "complete"]
    assert len(runs) == len(set(runs))  # no configuration finished twice
    assert sum(t["state"] in ("complete", "pruned") for t in advice["trials"]) == 2  # --trials, both runs


def test_two_workers_share_one_study(base_run: Path, tmp_path: Path) -> None:
    advice = api.advise(_data(base_run), out=tmp_path / "two", budget="2m", candidates=str(base_run), workers=2,
                        trials=3, **QUICK)
    from optuna import load_study

    study = load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'two' / 'study.db'}")
    joined = {int(k.split(":")[1]) for k in study.user_attrs if k.startswith("worker:")}
    pids = {t.user_attrs.get("pid") for t in study.trials if "pid" in t.user_attrs}
    assert len(joined) == 2 and pids <= joined, (joined, pids)  # two processes on one study, trials from them only
    # (whether the second, spawned late on a loaded machine, gets one of the 3 trials depends on the load)
    assert len(advice["trials"]) == len(study.trials)


def test_bad_advise_options_are_one_sentence_before_anything_loads(base_run: Path, tmp_path: Path) -> None:
    for options, sentence in [({"budget": "soon"}, "give a duration"), ({"seeds": 2}, "at least 3 seeds"),
                              ({"metric": "f1"}, "--metric must be one of accuracy, balanced"),
                              ({"lr": 0.1}, "searches the learning"),
                              ({"candidates": "nosuch"}, "unknown source")]:
        with pytest.raises(UserError, match=sentence):
            api.advise(_data(base_run), out=tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()


def test_the_recommended_arm_is_the_confirmations_own() -> None:
    """A scratch pick at a searched rate is confirmed as the baseline arm ``scratch:lr=X`` (the advice once showed
    'test ?' for it), a transfer pick as its arm spec, the regression as ``logreg``."""
    from transferlab.experiments.advise import arm_spec, recommended_arm

    confirmed = {"baseline": "scratch:lr=0.00694", "data_efficiency": {
        "logreg": {}, "scratch:lr=0.00694": {}, "finetune:source=s,lr=0.003": {}, "frozen:source=s": {}}}
    scratch = {"kind": "scratch", "source": "s", "strategy": "scratch", "lr": 0.00694}
    transfer = {"kind": "transfer", "source": "s", "strategy": "finetune", "lr": 0.003}
    assert recommended_arm(scratch, confirmed) == "scratch:lr=0.00694"
    assert recommended_arm(transfer, confirmed) == arm_spec(transfer) == "finetune:source=s,lr=0.003"
    assert arm_spec({**transfer, "lr": None}) == "finetune:source=s"  # the default rate
    assert recommended_arm({"kind": "logreg"}, confirmed) == "logreg"


def test_the_confirmation_weighs_the_best_the_default_frozen_and_scratch_each_once() -> None:
    """What a user would run without advise (the default strategy at the default rate) always stands beside the
    search's best, with frozen and scratch; the same configuration once (the enqueued default trial at the
    default rate is the default). When the regression wins the search, frozen and the default still stand beside
    it (an advise on Fashion-MNIST once stopped after 5 minutes because its confirmation had no transfer arm);
    with no source, the baselines only, scratch of a from-scratch architecture of the data's kind."""
    from transferlab import modality
    from transferlab.experiments.advise import confirm_arms, contenders

    image = modality.get("image")
    logreg = {"kind": "logreg"}
    options = contenders(logreg, ["efficientnet_lite0"], image)
    assert [(o["kind"], o["strategy"], o["lr"]) for o in options] == [
        ("transfer", "finetune", None), ("transfer", "frozen", None), ("scratch", "scratch", None)]
    assert confirm_arms(options) == (
        "efficientnet_lite0", ["logreg", "finetune:source=efficientnet_lite0", "frozen:source=efficientnet_lite0"])
    assert confirm_arms(contenders(logreg, [], modality.get("tabular"))) == (
        "mlp_tiny", ["logreg"])
    scratch = {"kind": "scratch", "source": "s", "strategy": "scratch", "lr": 0.01}
    assert confirm_arms(contenders(scratch, ["s"], image)) == (
        "s", ["logreg", "finetune:source=s", "frozen:source=s", "scratch:lr=0.01"])
    default_trial = {"kind": "transfer", "source": "s", "strategy": "finetune", "reuse": None, "lr": 1e-3,
                     "trial": 1}
    options = contenders(default_trial, ["s"], image)
    assert options[0] == {**default_trial, "default": True} and len(options) == 3  # the enqueued trial is it
    lpft = {**default_trial, "strategy": "lpft", "lr": 3.6e-4, "trial": 31}
    assert confirm_arms(contenders(lpft, ["s", "t"], image))[1] == [
        "logreg", "lpft:source=s,lr=0.00036", "finetune:source=s", "frozen:source=s"]


def test_the_default_stands_unless_a_contender_is_clearly_better_on_validation(tmp_path: Path) -> None:
    """Each cell's validation predictions are read from its run directory, seed i's on fold i (here the thirds of
    400 examples), and pooled. The search's best (LP-FT, 0.949 on one seed) and a frozen arm with a higher score
    but errors elsewhere do not displace the default; a contender right where the default errs does, and so does
    the regression; never by the test split. A cell whose examples are not its fold's is refused."""
    import numpy as np
    import torch

    from transferlab.experiments.advise import choose
    from transferlab.train.fit import write_predictions

    y = np.array([0, 1] * 200)
    names = np.array(["a", "b"])
    folds = np.array_split(np.arange(400), 3)

    def wrong_on(lo: int, hi: int) -> np.ndarray:
        return np.where((np.arange(400) >= lo) & (np.arange(400) < hi), 1 - y, y)

    def cells(arm: str, pred: np.ndarray, secs: float) -> list[dict]:
        out = []
        for seed, fold in enumerate(folds):
            run = tmp_path / f"{arm.replace(':', '_')}-{seed}"
            run.mkdir(exist_ok=True)
            write_predictions(run, ["a", "b"], {"val": (y[fold], torch.nn.functional.one_hot(
                torch.as_tensor(pred[fold]), 2))})
            out.append({"arm": arm, "per_class": "100", "seed": seed, "run_dir": run.name,
                        "val_score": float((pred[fold] == y[fold]).mean()),
                        "test_score": 0.99 if arm.startswith("lpft") else 0.5, "train_wall_seconds": secs})
        return out

    lpft = {"kind": "transfer", "source": "s", "strategy": "lpft", "reuse": None, "lr": 3.6e-4, "trial": 7,
            "validation": 0.949}
    default = {"kind": "transfer", "source": "s", "strategy": "finetune", "reuse": None, "lr": None, "trial": None,
               "default": True}
    frozen = {**default, "strategy": "frozen", "default": False}
    scratch = {"kind": "scratch", "source": "s", "strategy": "scratch", "reuse": None, "lr": None, "trial": None}
    options = [lpft, default, frozen, scratch]

    def confirmed(frozen_pred: np.ndarray) -> dict:
        return {"largest_size": "100", "baseline": "scratch", "cells": [
            *cells("lpft:source=s,lr=0.00036", wrong_on(20, 56), 20.0),
            *cells("finetune:source=s", wrong_on(0, 40), 15.0), *cells("frozen:source=s", frozen_pred, 1.0),
            *cells("scratch", wrong_on(0, 120), 30.0)], "data_efficiency": dict.fromkeys(
                ["lpft:source=s,lr=0.00036", "finetune:source=s", "frozen:source=s", "scratch"], {})}

    def regression(pred: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(names[y[fold]], names[pred[fold]]) for fold in folds]

    chosen, scored = choose(options, confirmed(wrong_on(10, 46)), tmp_path, regression(wrong_on(0, 100)), "accuracy")
    assert chosen["arm"] == "finetune:source=s" and chosen["versus_default"] is None  # 0.91 > 0.90, not clearly
    assert [o["arm"] for o in scored][:3] == ["frozen:source=s", "lpft:source=s,lr=0.00036", "finetune:source=s"]
    lp = next(o for o in scored if o["arm"].startswith("lpft"))
    assert lp["search_validation"] == 0.949 and lp["validation"] == pytest.approx(0.91)
    assert lp["validation_per_seed"] == pytest.approx([98 / 134, 1.0, 1.0])  # its errors all in the first fold
    assert lp["versus_default"]["ci_low"] < 0 < lp["versus_default"]["ci_high"]
    chosen, _ = choose(options, confirmed(wrong_on(100, 116)), tmp_path, regression(wrong_on(0, 100)), "accuracy")
    assert chosen["arm"] == "frozen:source=s" and chosen["versus_default"]["ci_low"] > 0  # right where it errs
    assert choose(options, confirmed(wrong_on(10, 46)), tmp_path, regression(y), "accuracy")[0]["kind"] == "logreg"
    with pytest.raises(UserError, match="not its fold's"):
        choose(options, confirmed(wrong_on(10, 46)), tmp_path, regression(y)[::-1], "accuracy")


def test_the_confirmation_vetoes_a_pick_the_regression_clearly_beats() -> None:
    """Only towards the simpler model: "no" against the regression on the test split turns the pick into the
    regression (and the first line says why); "inconclusive" keeps it."""
    from transferlab.experiments.advise import veto
    from transferlab.report.html import advise_lines

    pick = {"kind": "transfer", "source": "s", "strategy": "lpft", "lr": 0.016, "reuse": None, "validation": 0.81}
    arm = "lpft:source=s,lr=0.016"
    lower = {"mean": -0.016, "ci_low": -0.025, "ci_high": -0.006, "verdict": "no"}
    confirmed = {"largest_size": "all", "versus_logreg": {"all": {arm: lower}}}
    kept = veto(pick, arm, {**confirmed, "versus_logreg": {"all": {arm: {**lower, "verdict": "inconclusive"}}}},
                0.8)
    assert kept == (pick, arm)
    vetoed, to = veto(pick, arm, confirmed, 0.8)
    assert to == "logreg" and vetoed["kind"] == "logreg" and vetoed["vetoed"]["strategy"] == "lpft"
    advice = {"recommendation": {**vetoed, "arm": to}, "size": "all", "shortlist": ["s"], "trials": [],
              "seconds": 60.0, "budget_seconds": 600.0, "train_seconds": {},
              "evidence": {"baseline": "scratch", "logreg": {"all": {"test_score": 0.82}}, "versus_logreg": {},
                           "data_efficiency": {"scratch": {"all": {"mean": 0.81, "ci_low": 0.77, "ci_high": 0.84}},
                                               arm: {"all": {"mean": 0.804, "ci_low": 0.79, "ci_high": 0.81}},
                                               "logreg": {"all": {"mean": 0.82}}}}}
    first = advise_lines(advice, Path("out"))[0]
    assert first.startswith("Use a logistic regression on the raw inputs (test 0.820): the best confirmed")
    assert "lpft of s at lr 0.016, scored lower on the test split (0.804" in first
