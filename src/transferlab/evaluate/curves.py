"""Did transfer help? Learning-curve measures of the three benefits, with intervals over seeds.

Torrey & Shavlik (2009) name three benefits: a higher start, a higher slope and a higher asymptote. Taylor & Stone
(2009) make them measurable: jumpstart, time to threshold, asymptotic performance and the transfer ratio (area
under the learning curve with transfer over the area without). Skill here is test accuracy; areas are taken over
examples seen with accuracy's own zero, so the transfer ratio compares mean accuracy over the training budget.

Every function is pure. A curve is a pair of arrays: examples seen and skill at each evaluation, the first
evaluation at step 0 (before any training), and the *converged* skill: the test accuracy of the model training
ended with (the best validation's weights, see :mod:`transferlab.train.budget`), its asymptote. Arms trained to
convergence train for different numbers of examples; areas are compared over the longer of the two, each curve
held at its last value after it ended (a converged curve stays where it converged).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Skill at each evaluation point; ``examples[0] == 0`` is the untrained model."""

    examples: np.ndarray
    skill: np.ndarray
    wall: np.ndarray | None = None
    epoch_end: np.ndarray | None = None  # True where the evaluation closed an epoch
    final: float | None = None  # the converged model's test accuracy (None: the last epoch ends' mean stands in)

    @classmethod
    def of(cls, examples: Sequence[float], skill: Sequence[float], wall=None, epoch_end=None,
           final: float | None = None) -> Curve:
        ex, sk = np.asarray(examples, dtype=float), np.asarray(skill, dtype=float)
        if ex.shape != sk.shape or ex.ndim != 1 or len(ex) < 2:
            raise ValueError("a curve needs at least two points with matching examples and skill")
        if np.any(np.diff(ex) < 0):
            raise ValueError("examples seen must not decrease along a curve")
        return cls(ex, sk, None if wall is None else np.asarray(wall, float),
                   None if epoch_end is None else np.asarray(epoch_end, bool), final)


def start(c: Curve) -> float:
    """Skill at the first evaluation after training begins (the "higher start")."""
    return float(c.skill[1])


def asymptote(c: Curve, last: int = 3) -> float:
    """The converged skill: ``c.final`` when the curve has it, else the mean skill over the last ``last``
    epoch-end evaluations (all points when epochs are not marked)."""
    if c.final is not None:
        return float(c.final)
    pts = c.skill[c.epoch_end] if c.epoch_end is not None and c.epoch_end.any() else c.skill
    return float(np.mean(pts[-last:]))


def area(c: Curve, until: float | None = None) -> float:
    """Area under the curve over examples seen, divided by the examples seen: mean skill over the budget. With
    ``until`` (beyond the curve's last point) the curve is held at its last value up to there, so that curves of
    different lengths are compared over the same budget."""
    ex, sk = c.examples, c.skill
    if until is not None and until > ex[-1]:
        ex, sk = np.append(ex, until), np.append(sk, sk[-1])
    span = ex[-1] - ex[0]
    if span <= 0:
        return float(np.mean(sk))
    return float(np.sum((sk[1:] + sk[:-1]) / 2 * np.diff(ex)) / span)


def early_slope(c: Curve) -> float:
    """Skill gained per 1,000 examples over the first epoch (or the first half of the curve)."""
    if c.epoch_end is not None and c.epoch_end.any():
        end = int(np.argmax(c.epoch_end))
    else:
        end = max(1, len(c.skill) // 2)
    gained_examples = c.examples[end] - c.examples[0]
    return float((c.skill[end] - c.skill[0]) / gained_examples * 1000) if gained_examples > 0 else 0.0


def time_to_threshold(c: Curve, threshold: float, axis: str = "examples") -> float | None:
    """Examples seen (or wall seconds) until skill first reaches ``threshold``; None when it never does."""
    hit = np.flatnonzero(c.skill >= threshold)
    if hit.size == 0:
        return None
    values = c.examples if axis == "examples" else c.wall
    return float(values[hit[0]])


@dataclass(frozen=True)
class Interval:
    mean: float
    ci_low: float
    ci_high: float
    method: str = "percentile bootstrap"
    n: int = 0


MIN_VERDICT_SEEDS = 3  # below this no interval is worth a verdict
MIN_BOOTSTRAP_SEEDS = 10  # below this a percentile bootstrap is far too narrow: Student's t instead
T_METHOD, BOOTSTRAP_METHOD = "student t", "percentile bootstrap"


def bootstrap(values: Sequence[float], n_resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean with a percentile bootstrap interval. Values are sorted first, so their order does not matter.

    Over n values it can only return means of resamples of those n values: over 2 it is their min and max, and
    below about 10 it is too narrow (Efron & Tibshirani 1993, ch. 13). :func:`interval` chooses for you."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        raise ValueError("bootstrap needs at least one value")
    if np.isnan(v).any():
        return Interval(float("nan"), float("nan"), float("nan"), BOOTSTRAP_METHOD, int(v.size))
    if v.size == 1:
        return Interval(float(v[0]), float(v[0]), float(v[0]), BOOTSTRAP_METHOD, 1)
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_resamples, v.size))
    means = v[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(v.mean()), float(lo), float(hi), BOOTSTRAP_METHOD, int(v.size))


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean +- t_{(1+level)/2, n-1} * sd / sqrt(n): Student's interval for a mean over few paired seeds. Over one
    value it is undefined (NaN bounds)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("an interval needs at least one value")
    mean = float(v.mean())
    if v.size < 2 or np.isnan(v).any():
        return Interval(mean, float("nan"), float("nan"), T_METHOD, int(v.size))
    half = float(stats.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return Interval(mean, mean - half, mean + half, T_METHOD, int(v.size))


def interval(values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None) -> Interval:
    """The interval that is honest at this many seeds: Student's t below :data:`MIN_BOOTSTRAP_SEEDS` values, the
    percentile bootstrap from there on; ``bounds`` clip it to what the quantity can take (a difference of two
    accuracies lies in [-1, 1])."""
    n = len(values)
    iv = t_interval(values, level) if n < MIN_BOOTSTRAP_SEEDS else bootstrap(values, level=level)
    if bounds is None or not np.isfinite(iv.ci_low):
        return iv
    return Interval(iv.mean, max(iv.ci_low, bounds[0]), min(iv.ci_high, bounds[1]), iv.method, iv.n)


def accuracy_interval(values: Sequence[float], test_size: int, level: float = 0.95) -> Interval:
    """Mean of test accuracies over seeds with an interval inside [0, 1]: :func:`interval` on the logit scale,
    each accuracy first moved half an example off 0 and 1 (``(k + 0.5) / (n + 1)`` for k of n correct, the usual
    continuity correction), its bounds mapped back. The bounds are widened to take in the plain mean when the
    back-transformed interval (around the mean of the logits) misses it. At 10 seeds or more the bootstrap."""
    from scipy.special import expit, logit

    v = np.asarray(values, dtype=float)
    n = max(int(test_size), 1)
    iv = interval(logit((v * n + 0.5) / (n + 1)), level)
    mean = float(v.mean()) if v.size else float("nan")
    if not (np.isfinite(iv.ci_low) and np.isfinite(iv.ci_high)):
        return Interval(mean, float("nan"), float("nan"), iv.method, iv.n)
    return Interval(mean, min(float(expit(iv.ci_low)), mean), max(float(expit(iv.ci_high)), mean),
                    f"{iv.method}, logit scale", iv.n)


def verdict(iv: Interval, null: float = 0.0, higher_is_better: bool = True) -> str:
    """'yes' when the interval lies on the good side of ``null``, 'no' when it lies on the bad side (negative
    transfer for a benefit measure), 'inconclusive' when it contains it, and 'too few seeds' below
    :data:`MIN_VERDICT_SEEDS` values (an interval over 2 seeds decides nothing)."""
    if iv.n < MIN_VERDICT_SEEDS or not (np.isfinite(iv.ci_low) and np.isfinite(iv.ci_high)):
        return "too few seeds"
    above, below = iv.ci_low > null, iv.ci_high < null
    if not higher_is_better:
        above, below = below, above
    return "yes" if above else "no" if below else "inconclusive"


def paired(values: Sequence[float], null: float = 0.0, bounds: tuple[float, float] = (-1.0, 1.0)) -> dict[str, Any]:
    """A difference measured seed by seed, as results record it: its mean, :func:`interval` (inside ``bounds``)
    and :func:`verdict`."""
    iv = interval(values, bounds=bounds)
    return {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "verdict": verdict(iv, null),
            "interval_method": iv.method}


def benefits(
    arm: Mapping[int, Curve], scratch: Mapping[int, Curve], threshold_fraction: float = 0.9, last: int = 3
) -> dict[str, dict]:
    """Each benefit of ``arm`` over ``scratch``, paired by seed: mean, 95% interval (:func:`interval`) and verdict.

    - jumpstart: start(arm) - start(scratch)
    - early_slope: early_slope(arm) - early_slope(scratch)
    - asymptote: asymptote(arm) - asymptote(scratch)
    - transfer_ratio: area(arm) / area(scratch) (1 = no benefit)
    - time_to_threshold: examples seen to reach ``threshold_fraction`` of scratch's mean asymptote, as the
      reduction scratch - arm per seed; an arm that never reaches it counts as taking its whole budget, and the
      number of such seeds is reported in ``never``.
    """
    seeds = sorted(set(arm) & set(scratch))
    if not seeds:
        raise ValueError("no seed has both an arm curve and a scratch curve")
    out: dict[str, dict] = {}

    def record(name: str, values: list[float], null: float = 0.0, bounds=(-1.0, 1.0), **extra) -> None:
        out[name] = {**paired(values, null, bounds), "per_seed": dict(zip(seeds, values, strict=True)), **extra}

    record("jumpstart", [start(arm[s]) - start(scratch[s]) for s in seeds])
    record("early_slope", [early_slope(arm[s]) - early_slope(scratch[s]) for s in seeds], bounds=(-math.inf, math.inf))
    record("asymptote", [asymptote(arm[s], last) - asymptote(scratch[s], last) for s in seeds])
    ratios = []
    for s in seeds:  # over the same budget: the longer run's, the shorter curve held at its end
        until = max(arm[s].examples[-1], scratch[s].examples[-1])
        base = area(scratch[s], until)
        ratios.append(area(arm[s], until) / base if base > 0 else float("nan"))
    record("transfer_ratio", ratios, null=1.0, bounds=(0.0, math.inf))
    threshold = threshold_fraction * float(np.mean([asymptote(scratch[s], last) for s in seeds]))
    reductions, never = [], 0
    for s in seeds:
        a = time_to_threshold(arm[s], threshold)
        b = time_to_threshold(scratch[s], threshold)
        never += a is None
        budget = float(max(arm[s].examples[-1], scratch[s].examples[-1]))
        reductions.append((budget if b is None else b) - (budget if a is None else a))
    record("time_to_threshold", reductions, threshold=threshold, never=never, unit="examples",
           bounds=(-math.inf, math.inf))
    return out


def paired_difference(y: np.ndarray, a: Sequence[np.ndarray], b: Sequence[np.ndarray], metric: str = "accuracy",
                      n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """How much better predictions ``a`` score than ``b`` on the same examples ``y``: the mean ``metric`` over
    ``a``'s seeds (each an array of predictions) minus ``b``'s, with a percentile bootstrap interval over the
    *examples*, paired (each resample scores both on the same examples). Seeds averaged over one evaluation split
    leave that split's sampling noise whole; this interval holds it (the bootstrap as in Efron & Tibshirani 1993,
    ch. 13, on n examples, where it is well-behaved, not on a handful of seeds)."""
    y = np.asarray(y)
    classes, codes = np.unique(np.concatenate([y, *map(np.asarray, a), *map(np.asarray, b)]), return_inverse=True)
    k, n = len(classes), len(y)
    truth, preds = codes[:n], codes[n:].reshape(-1, n)
    rows = np.random.default_rng(seed).integers(0, n, (n_resamples + 1, n))
    rows[0] = np.arange(n)  # the first row: the examples themselves, the point estimate
    scores = np.array([resampled_scores(truth, p, rows, k, metric) for p in preds])  # (seeds of a and b, rows)
    diffs = scores[: len(a)].mean(0) - scores[len(a):].mean(0)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs[1:], [alpha, 1 - alpha])
    return Interval(float(diffs[0]), max(float(lo), -1.0), min(float(hi), 1.0), "paired bootstrap over examples", n)


def resampled_scores(y: np.ndarray, pred: np.ndarray, draws: np.ndarray, k: int, metric: str) -> np.ndarray:
    """``metric`` of ``pred`` against ``y`` (class codes below ``k``) on each row of example indices ``draws``,
    from one confusion matrix per row, all at once; :func:`~transferlab.evaluate.score`'s definitions (a test
    checks them against it)."""
    rows = len(draws)
    cells = (np.arange(rows)[:, None] * k * k + y[draws] * k + pred[draws]).ravel()
    cm = np.bincount(cells, minlength=rows * k * k).reshape(rows, k, k).astype(float)
    tp, true, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(2), cm.sum(1)
    if metric == "accuracy":
        return tp.sum(1) / draws.shape[1]
    if metric == "balanced_accuracy":  # mean recall over the classes present
        present = true > 0
        return np.where(present, tp / np.maximum(true, 1), 0).sum(1) / present.sum(1)
    if metric == "macro_f1":  # mean F1 over the classes in the truth or the predictions
        seen = (true + predicted) > 0
        return np.where(seen, 2 * tp / np.maximum(true + predicted, 1), 0).sum(1) / seen.sum(1)
    raise ValueError(f"unknown metric {metric!r}")
