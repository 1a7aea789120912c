"""Transferability scores against known answers, degenerate inputs and a brute-force evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferlab.evaluate.transferability import (
    _evidence,
    hscore,
    knn_accuracy,
    leep,
    linear_accuracy,
    logme,
    nce,
    weighted_tau,
)


def separable_and_noise(n_per_class: int = 20, classes: int = 3, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(0, 4, (classes, dim))
    separable = centres[labels] + rng.normal(0, 0.5, (len(labels), dim))
    noise = rng.normal(0, 1, (len(labels), dim))
    return separable, noise, labels


def source_head(labels: np.ndarray, informative: bool, seed: int = 0) -> np.ndarray:
    """Soft predictions over 6 source classes: each target class maps to two of them, or none at all."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(labels), 6))
    if informative:
        logits[np.arange(len(labels)), 2 * labels + rng.integers(0, 2, len(labels))] += 5
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, linear_accuracy])
def test_feature_scores_rank_separable_features_first(score) -> None:
    separable, noise, labels = separable_and_noise()
    assert score(separable, labels) > score(noise, labels)


def test_source_head_scores_rank_the_informative_head_first() -> None:
    _, _, labels = separable_and_noise()
    good, bad = source_head(labels, True), source_head(labels, False)
    assert leep(good, labels) > leep(bad, labels)
    assert nce(good.argmax(1), labels) > nce(bad.argmax(1), labels)
    assert leep(good, labels) <= 0 and nce(good.argmax(1), labels) <= 0


def test_nce_conditions_target_labels_on_source_labels() -> None:
    # Z determines Y exactly (two source labels per target label): H(Y|Z) = 0; the reverse, H(Z|Y) = log 2.
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    z = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert nce(z, y) == pytest.approx(0.0)
    assert nce(y, z) == pytest.approx(-math.log(2))


def test_leep_of_a_perfect_one_to_one_head_is_zero() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    theta = np.eye(3)[y]
    assert leep(theta, y) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "features",
    [
        np.ones((12, 5)),  # constant features
        np.zeros((12, 5)),
        np.random.default_rng(0).normal(size=(12, 40)),  # more dimensions than samples
    ],
)
def test_logme_is_finite_on_degenerate_inputs(features: np.ndarray) -> None:
    labels = np.arange(12) % 3
    assert math.isfinite(logme(features, labels))


def test_logme_with_one_sample_per_class() -> None:
    features = np.random.default_rng(1).normal(size=(4, 8))
    assert math.isfinite(logme(features, np.arange(4)))


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, linear_accuracy])
def test_scores_do_not_depend_on_sample_order(score) -> None:
    separable, _, labels = separable_and_noise(n_per_class=10)
    perm = np.random.default_rng(3).permutation(len(labels))
    if score in (knn_accuracy, linear_accuracy):  # folds are drawn per sample: compare the probe, not the split
        assert abs(score(separable, labels) - score(separable[perm], labels[perm])) <= 0.1
    else:
        assert score(separable, labels) == pytest.approx(score(separable[perm], labels[perm]), rel=1e-9)
    theta = source_head(labels, True)
    assert leep(theta, labels) == pytest.approx(leep(theta[perm], labels[perm]))
    assert nce(theta.argmax(1), labels) == pytest.approx(nce(theta[perm].argmax(1), labels[perm]))


def direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y | 0, I / beta + F F^T / alpha) / N, computed without any of LogME's algebra."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y))) / n


def test_logme_matches_brute_force_evidence_maximisation() -> None:
    rng = np.random.default_rng(4)
    f = rng.normal(size=(15, 3))
    labels = (f[:, 0] + 0.5 * rng.normal(size=15) > 0).astype(int)
    grid = np.exp(np.linspace(-6, 6, 241))
    best = []
    for c in (0, 1):
        y = (labels == c).astype(float)
        brute = max(direct_evidence(f, y, a, b) for a in grid for b in grid)
        s, v = np.linalg.eigh(f.T @ f)
        fixed_point = _evidence(y, f, s, v)
        assert fixed_point == pytest.approx(brute, abs=2e-3)
        best.append(brute)
    assert logme(f, labels) == pytest.approx(np.mean(best), abs=2e-3)


@pytest.mark.parametrize(
    ("x", "y", "tau"),
    [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], 1.0),
        ([5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], -1.0),
        # one swap at the bottom of both rankings: pair weights 1/r_i + 1/r_j (ranks from 1) give (5/6 + 4/3 -
        # 3/2) / (5/6 + 4/3 + 3/2) = 2/11 either way round
        ([1, 2, 3], [1, 3, 2], 2 / 11),
        # the same pairs weighted by x's ranking give -2/11, by y's (-8 - 9 + 5) / 22 = -6/11: the mean, -4/11
        ([1, 2, 3], [3, 1, 2], -4 / 11),
        # items 0 and 1 tied in both take consecutive ranks (Vigna's and scipy's convention, not a shared rank):
        # by x, (16 + 10 - 15 - 9 - 7) / 57 = -5/57; by y, (9 + 7 - 18 - 16 - 15) / 65 = -33/65
        ([2, 2, 1, 0], [1, 1, 0, 2], (-5 / 57 - 33 / 65) / 2),
        ([1, 1, 1], [1, 2, 3], math.nan),  # a constant side
        ([1.0, math.nan, 3.0], [1, 2, 3], math.nan),
        ([1.0], [2.0], math.nan),
    ],
)
def test_weighted_tau_known_values(x: list[float], y: list[float], tau: float) -> None:
    assert weighted_tau(np.array(x), np.array(y)) == pytest.approx(tau, abs=1e-12, nan_ok=True)


def test_hscore_does_not_saturate_when_dimensions_outnumber_samples() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 10)
    noise = rng.normal(size=(30, 60))
    centres = rng.normal(size=(3, 60))
    # with a pseudo-inverse of the sample covariance every one of these would score exactly 2 (classes - 1)
    scores = [hscore(noise + k * centres[labels], labels) for k in (0.0, 0.3, 1.0, 3.0)]
    assert scores == sorted(scores) and scores[-1] - scores[0] > 1
    assert math.isfinite(hscore(np.ones((30, 5)), labels))
