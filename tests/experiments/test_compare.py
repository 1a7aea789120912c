"""compare: a loop of fit cells, results with the documented schema, resume and bad input."""

from __future__ import annotations

import html
import json
import logging
import shutil
from pathlib import Path

import pytest

from transferlab.api import compare
from transferlab.errors import UserError

MEASURES = ("jumpstart", "asymptote", "transfer_ratio", "time_to_threshold")


@pytest.fixture(scope="module")
def comparison(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("cmp") / "out"
    data = json.loads((base_run / "model.json").read_text())["data"]
    opts = dict(source=str(base_run), arms="logreg,scratch,frozen,finetune:reuse=2", seeds=2, epochs=2,
                per_class="4,all", lr=3e-3, progress=False)
    results = compare(data, out=out, **opts)
    return out, results, {"data": data, **opts}


def test_results_schema(comparison) -> None:
    out, results, _ = comparison
    assert results["schema"] == "transferlab.compare/2"
    for arm in ("frozen", "finetune:reuse=2"):
        for measure in MEASURES:
            b = results["benefits"][arm][measure]
            assert {"mean", "ci_low", "ci_high", "verdict"} <= set(b)
            assert b["verdict"] == "too few seeds" and b["interval_method"] == "student t"  # 2 seeds decide nothing
        for size in ("4", "all"):
            assert set(MEASURES) <= set(results["benefits_by_size"][size][arm])
    assert "scratch" not in results["benefits"]
    assert len(results["cells"]) == 2 * 3 * 2
    curve = results["curves"]["all"]["frozen"]["0"]
    assert curve["examples"][0] == 0 and curve["epoch_end"][-1] is True
    assert len(curve["examples"]) >= 4  # step 0, within the first epoch, every epoch
    assert set(results["data_efficiency"]["frozen"]) == {"4", "all"}
    for v in results["data_efficiency"]["frozen"].values():  # --epochs 2 caps them: not converged, and said so
        assert v["converged"] == 0 and v["all_converged"] is False and 0 <= v["ci_low"] <= v["ci_high"] <= 1
    assert any("frozen at all per class did not converge in 2 of 2 seeds" in n for n in results["notes"])
    assert results["config"]["arms"][0] == "logreg" and set(results["data_efficiency"]["logreg"]) == {"4", "all"}
    assert set(results["versus_logreg"]["all"]) == {"scratch", "frozen", "finetune:reuse=2"}
    assert results["asymptote_by_size"]["frozen"]["summary"] == "too few seeds to tell at any size"
    for name in ("results.json", "curves.csv", "report.html", "curves_all.png", "data_efficiency.png"):
        assert (out / name).is_file()
    assert not (out / "INCOMPLETE").exists()


def test_report_is_self_contained(comparison) -> None:
    out, results, _ = comparison
    page = (out / "report.html").read_text()
    shown = html.unescape(page)
    assert '"backbone_lr_mult": null' not in shown and '"backbone_lr_mult": 0.1' in shown  # the value used
    assert '"text_model"' not in shown and '"test_size"' in shown  # only the image options; the test-set size
    assert page.count("<h2>Benefits at all labelled") == 1 and "Test accuracy per arm" in page
    assert page.count("data:image/png;base64,") >= 3  # two curve plots and the data-efficiency plot
    assert "http://" not in page and "https://" not in page and "<script" not in page
    verdicts = [b["verdict"] for per_arm in results["benefits"].values() for b in per_arm.values()]
    assert "higher asymptote" in page and all(f"<b>{v}</b>" in page for v in verdicts)


def test_resume_reuses_finished_cells_and_gives_the_same_numbers(comparison, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    out, results, shared = comparison
    opts = dict(shared)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "results.json").unlink()
    (copy / "INCOMPLETE").write_text("killed")
    shutil.rmtree(copy / "cells" / "all" / "frozen" / "seed1")  # a cell that had not started
    record = json.loads((copy / "compare.json").read_text())
    del record["base"]["fold"]  # written before transferlab had --fold: an option added since, off, is no difference
    (copy / "compare.json").write_text(json.dumps(record))
    data = opts.pop("data")
    with pytest.raises(UserError, match="--resume"):
        compare(data, out=copy, **opts)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        again = compare(data, out=copy, resume=True, **opts)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum(m.startswith("cell ") for m in lines) == len(again["cells"])  # a log file: one line per cell,
    assert not any(m.startswith("epoch ") for m in lines)  # the retrained cell's epochs only with --verbose
    reused = {(c["arm"], c["per_class"], c["seed"]) for c in again["cells"] if c["reused"]}
    assert ("frozen", "all", 1) not in reused and len(reused) == len(again["cells"]) - 1
    assert again["benefits"] == results["benefits"]
    assert again["data_efficiency"] == results["data_efficiency"]


def test_a_changed_option_is_named_where_it_lies() -> None:
    from transferlab.config import ABSENT, first_difference

    old = {"arms": ["scratch"], "base": {"lr": 0.01, "seed": 0}}
    assert first_difference(old, {**old, "base": {"lr": 0.01, "seed": 0, "fold": None}}) is None  # added since
    assert first_difference(old, {**old, "base": {"lr": 0.01, "seed": 0, "fold": "1/3"}}) == (
        "base.fold", ABSENT, "1/3")
    assert repr(ABSENT) == "not set"  # in the sentence: "its base.fold is not set, now '1/3'"
    assert first_difference(old, {**old, "base": {"lr": 0.01, "seed": 0, "cap": None}}) == ("base.cap", ABSENT, None)
    assert first_difference(old, {**old, "base": {"lr": 0.001, "seed": 0}}) == ("base.lr", 0.01, 0.001)
    assert first_difference(old, {"arms": ["scratch"]}) == ("base", old["base"], ABSENT)  # a key gone differs


def test_bad_input(comparison, tmp_path: Path) -> None:
    out, _, opts = comparison
    data = opts["data"]
    src = opts["source"]
    with pytest.raises(UserError, match="did you mean 'frozen'"):
        compare(data, out=tmp_path / "a", source=src, arms="scratch,frozn")
    with pytest.raises(UserError, match="at least 2 seeds"):
        compare(data, out=tmp_path / "a", source=src, seeds=1)
    with pytest.raises(UserError, match="9999"):
        compare(data, out=tmp_path / "a", source=src, per_class="10,9999", seeds=2)
    with pytest.raises(UserError, match="another experiment"):
        compare(data, out=out, source=src, arms="scratch,frozen", seeds=2, resume=True)
    with pytest.raises(UserError, match="unknown option 'rouse'"):
        compare(data, out=tmp_path / "a", source=src, arms="finetune:rouse=2")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("verdicts, sentence", [
    ({"10": "yes", "50": "yes"}, "paid at every size measured (10 to 50 per class)"),
    ({"10": "inconclusive", "all": "no"}, "never clearly paid; negative from all per class"),
    ({"10": "yes", "50": "inconclusive", "200": "no"}, "paid up to 10 per class, not at 50 (inconclusive); "
     "negative from 200 per class"),
    ({"10": "no", "50": "yes"}, "paid at 50 per class only; negative at 10 per class"),
    ({"10": "too few seeds", "50": "too few seeds"}, "too few seeds to tell at any size"),
])
def test_what_the_asymptote_benefit_did_across_sizes_is_stated_as_it_happened(verdicts, sentence) -> None:
    from transferlab.experiments.compare import paying_summary

    assert paying_summary(verdicts) == sentence


def test_a_bad_arm_fails_before_the_first_cell_trains(comparison, tmp_path: Path) -> None:
    _, _, opts = comparison
    with pytest.raises(UserError, match=r"arm 'finetune:reuse=99': --reuse 99 exceeds"):
        compare(opts["data"], out=tmp_path / "c", source=opts["source"], arms="scratch,finetune:reuse=99", seeds=2,
                epochs=1, progress=False)
    assert not (tmp_path / "c").exists()


def test_examples_print_as_whole_numbers() -> None:
    from transferlab.report.html import fmt_interval

    assert fmt_interval({"mean": 16.0, "ci_low": 0.0, "ci_high": 32.0, "unit": "examples"}) == "16 [0, 32]"
    assert fmt_interval({"mean": -336.0, "ci_low": -672.5, "ci_high": 0.0, "unit": "examples"}) == "-336 [-672, 0]"
    assert fmt_interval({"mean": 0.1234, "ci_low": 0.1, "ci_high": 0.2}) == "0.123 [0.100, 0.200]"


def test_cells_in_two_worker_processes_give_the_same_numbers(comparison, tmp_path: Path) -> None:
    _, results, opts = comparison
    opts = dict(opts)
    data = opts.pop("data")
    two = compare(data, out=tmp_path / "two", workers=2, **opts)
    assert [c["test_accuracy"] for c in two["cells"]] == [c["test_accuracy"] for c in results["cells"]]
    assert two["benefits"] == results["benefits"]
