"""The learning-curve measures: hand-made curves with known answers, and properties that must always hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab.evaluate.curves import (
    Curve,
    accuracy_interval,
    area,
    asymptote,
    benefits,
    bootstrap,
    early_slope,
    interval,
    paired_difference,
    resampled_scores,
    start,
    t_interval,
    time_to_threshold,
    verdict,
)

EX = [0, 100, 200, 400, 800, 1200]
END = [False, False, False, True, True, True]


def curve(skill, examples=EX, epoch_end=END) -> Curve:
    return Curve.of(examples, skill, wall=[e / 100 for e in examples], epoch_end=epoch_end)


def test_hand_made_curves_have_known_measures() -> None:
    c = curve([0.2, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert start(c) == 0.5
    assert asymptote(c, last=2) == pytest.approx(0.85)
    assert early_slope(c) == pytest.approx((0.7 - 0.2) / 400 * 1000)
    assert time_to_threshold(c, 0.75) == 800
    assert time_to_threshold(c, 0.75, axis="wall") == 8
    assert time_to_threshold(c, 0.95) is None
    flat = curve([0.5] * 6)
    assert area(flat) == pytest.approx(0.5)


def test_known_benefits_of_a_better_arm() -> None:
    scratch = {s: curve([0.2, 0.3, 0.4, 0.5, 0.6, 0.6]) for s in range(3)}
    arm = {s: curve([0.2, 0.7, 0.8, 0.85, 0.9, 0.9]) for s in range(3)}
    b = benefits(arm, scratch)
    assert b["jumpstart"]["mean"] == pytest.approx(0.4) and b["jumpstart"]["verdict"] == "yes"
    assert b["asymptote"]["mean"] == pytest.approx(0.88333 - 0.56667, abs=1e-4)
    assert b["transfer_ratio"]["mean"] > 1 and b["transfer_ratio"]["verdict"] == "yes"
    # threshold = 0.9 * 0.5667 = 0.51: the arm reaches it at 100 examples, scratch at 800
    assert b["time_to_threshold"]["mean"] == pytest.approx(700)
    assert b["time_to_threshold"]["never"] == 0


def test_negative_transfer_is_a_no() -> None:
    scratch = {s: curve([0.2, 0.6 + s / 100, 0.7, 0.8, 0.9, 0.9]) for s in range(4)}
    arm = {s: curve([0.2, 0.3 + s / 100, 0.4, 0.5, 0.5, 0.5]) for s in range(4)}
    b = benefits(arm, scratch)
    assert b["asymptote"]["verdict"] == "no" and b["jumpstart"]["verdict"] == "no"
    assert b["time_to_threshold"]["never"] == 4


skills = st.lists(st.floats(0, 1, allow_nan=False), min_size=6, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(skills, min_size=2, max_size=5))
def test_identical_curves_give_zero_benefit_everywhere(runs) -> None:
    curves = {s: curve(r) for s, r in enumerate(runs)}
    b = benefits(curves, curves)
    for name in ("jumpstart", "early_slope", "asymptote", "time_to_threshold"):
        expected = "inconclusive" if len(runs) >= 3 else "too few seeds"
        assert b[name]["mean"] == pytest.approx(0) and b[name]["verdict"] == expected
    if all(area(c) > 0 for c in curves.values()):
        assert b["transfer_ratio"]["mean"] == pytest.approx(1)


@settings(max_examples=60, deadline=None)
@given(skills, st.lists(st.floats(0, 0.5, allow_nan=False), min_size=6, max_size=6))
def test_a_pointwise_better_curve_never_loses_area(base, gain) -> None:
    better = np.minimum(np.asarray(base) + np.asarray(gain), 1.0)
    assert area(curve(better)) >= area(curve(base)) - 1e-12


@settings(max_examples=40, deadline=None)
@given(st.lists(skills, min_size=2, max_size=5), st.randoms())
def test_results_do_not_depend_on_seed_order(runs, rnd) -> None:
    scratch = {s: curve(r) for s, r in enumerate(runs)}
    arm = {s: curve(np.clip(np.asarray(r) + 0.1, 0, 1)) for s, r in enumerate(runs)}
    keys = list(arm)
    rnd.shuffle(keys)
    shuffled_arm = {k: arm[k] for k in keys}
    a, b = benefits(arm, scratch), benefits(shuffled_arm, scratch)
    for name in a:
        assert (a[name]["mean"], a[name]["ci_low"], a[name]["ci_high"]) == pytest.approx(
            (b[name]["mean"], b[name]["ci_low"], b[name]["ci_high"]), nan_ok=True
        )


def test_bootstrap_interval_contains_the_mean_and_verdicts() -> None:
    iv = bootstrap([0.1, 0.2, 0.3, 0.4])
    assert iv.ci_low <= iv.mean <= iv.ci_high and iv.mean == pytest.approx(0.25) and iv.n == 4
    assert verdict(iv) == "yes" and verdict(iv, null=0.5) == "no" and verdict(iv, null=0.25) == "inconclusive"
    assert bootstrap([0.3]).ci_low == bootstrap([0.3]).ci_high == 0.3


def test_bad_curves_are_rejected() -> None:
    with pytest.raises(ValueError):
        Curve.of([0], [0.5])
    with pytest.raises(ValueError):
        Curve.of([0, 10, 5], [0.1, 0.2, 0.3])


def test_student_t_interval_has_known_answers_at_few_seeds() -> None:
    iv = t_interval([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.302653
    assert (iv.mean, iv.ci_low, iv.ci_high) == pytest.approx((2.0, 2 - 4.302653 / 3**0.5, 2 + 4.302653 / 3**0.5))
    two = t_interval([0.1, 0.3])  # sd 0.141421, t(0.975, 1) = 12.706205: far wider than the seeds' min and max
    assert (two.ci_low, two.ci_high) == pytest.approx((0.2 - 1.2706205, 0.2 + 1.2706205))
    assert bootstrap([0.1, 0.3]).ci_low == pytest.approx(0.1)  # what a bootstrap over 2 seeds would have said
    assert verdict(two) == "too few seeds" and verdict(t_interval([0.5, 0.6])) == "too few seeds"
    assert verdict(t_interval([0.5, 0.6, 0.55])) == "yes"
    assert interval([0.1] * 5).method == "student t" and interval(list(np.linspace(0, 1, 12))).method == (
        "percentile bootstrap")


def test_every_benefit_names_its_interval_and_two_seeds_get_no_verdict() -> None:
    scratch = {s: curve([0.2, 0.3, 0.4, 0.5, 0.6, 0.6 + s / 100]) for s in range(2)}
    arm = {s: curve([0.2, 0.7, 0.8, 0.85, 0.9, 0.9]) for s in range(2)}
    for b in benefits(arm, scratch).values():
        assert b["interval_method"] == "student t" and b["verdict"] == "too few seeds"


def test_an_accuracy_interval_never_leaves_zero_to_one() -> None:
    perfect = accuracy_interval([1.0, 1.0, 1.0], test_size=100)
    assert perfect.mean == 1.0 and 0.98 < perfect.ci_low <= perfect.ci_high == 1.0
    near = accuracy_interval([0.99, 1.0, 0.97], test_size=100)
    plain = interval([0.99, 1.0, 0.97])
    assert plain.ci_high > 1 and 0 <= near.ci_low < near.mean < near.ci_high <= 1  # Student t alone leaves [0, 1]
    low = accuracy_interval([0.0, 0.01, 0.03], test_size=100)
    assert 0 <= low.ci_low < low.mean and "logit" in low.method
    assert accuracy_interval([0.5, 0.6, 0.7] * 4, test_size=100).method.startswith("percentile bootstrap")


def test_a_difference_interval_is_clipped_to_what_the_difference_can_take() -> None:
    iv = interval([0.9, 1.0, 0.2], bounds=(-1.0, 1.0))
    assert iv.ci_high == 1.0 and interval([0.9, 1.0, 0.2]).ci_high > 1.0


def test_curves_of_different_lengths_are_compared_over_the_same_budget() -> None:
    short = Curve.of([0, 100], [0.2, 0.8], final=0.8)  # converged early, held at 0.8 after
    assert area(short) == pytest.approx(0.5)
    assert area(short, until=300) == pytest.approx((0.5 * 100 + 0.8 * 200) / 300)
    long = Curve.of([0, 100, 300], [0.2, 0.5, 0.8])
    b = benefits({0: short, 1: short, 2: short}, {0: long, 1: long, 2: long})
    assert b["transfer_ratio"]["mean"] == pytest.approx(area(short, 300) / area(long))
    assert b["asymptote"]["mean"] == pytest.approx(0.8 - asymptote(long))  # the converged skill, not the tail


def test_a_paired_difference_of_two_classifiers_on_the_same_examples_has_its_binomial_interval() -> None:
    """b wrong on the first 40 of 400 examples, a on none: the difference is 0.1 and, the per-example differences
    being 0/1 with p = 0.1, its standard error sqrt(0.1 x 0.9 / 400) = 0.015, so about [0.071, 0.129]. Errors on
    different examples at equal counts: 0, an interval about it. Equal predictions: exactly 0. Other metrics: the
    same resamples, scored whole."""
    y = np.array([0, 1] * 200)
    right = y.copy()
    wrong = np.where(np.arange(400) < 40, 1 - y, y)
    d = paired_difference(y, [right], [wrong])
    assert d.mean == pytest.approx(0.1) and d.n == 400
    assert d.ci_low == pytest.approx(0.1 - 1.96 * 0.015, abs=0.006) and d.ci_high == pytest.approx(0.129, abs=0.006)
    elsewhere = np.where((np.arange(400) >= 40) & (np.arange(400) < 80), 1 - y, y)
    swap = paired_difference(y, [elsewhere, elsewhere], [wrong, wrong])
    assert swap.mean == 0 and swap.ci_low < -0.03 and swap.ci_high > 0.03
    same = paired_difference(y, [wrong], [wrong], "macro_f1")
    assert (same.mean, same.ci_low, same.ci_high) == (0, 0, 0)
    assert paired_difference(y, [right], [wrong], "balanced_accuracy").ci_low > 0.05


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "macro_f1"])
def test_resampled_scores_are_the_metrics_own_definitions(metric: str) -> None:
    """Each resample's score from its confusion matrix equals scikit-learn's on the same examples, a class absent
    from a resample included."""
    from transferlab.evaluate import score

    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    draws = rng.integers(0, 60, (50, 60))
    draws[0] = np.flatnonzero(y != 3)[rng.integers(0, (y != 3).sum(), 60)]  # class 3 never true here
    got = resampled_scores(y, pred, draws, 4, metric)
    assert got == pytest.approx([score(metric, y[d], pred[d]) for d in draws])
