"""Transferability scores: how well a source will do on the target, from one forward pass over the target data.

Each score is a pure function of arrays: ``features`` (N, D) from the frozen source, ``labels`` (N,) integer
target classes, or ``source_probs`` (N, Z) from the source's own head. Higher is better for every score.
"""

from __future__ import annotations

import math

import numpy as np

SCORES = ("logme", "leep", "nce", "hscore", "knn", "linear")
NEEDS_SOURCE_HEAD = ("leep", "nce")


def _evidence(y: np.ndarray, f: np.ndarray, s: np.ndarray, v: np.ndarray, steps: int = 100) -> float:
    """Per-sample log evidence of Bayesian linear regression y ~ N(f w, 1/beta), w ~ N(0, 1/alpha), at the alpha
    and beta that maximise it (MacKay's fixed-point iteration). ``s``/``v``: eigenvalues/vectors of f.T f."""
    n, d = f.shape
    proj = v.T @ (f.T @ y)  # f^T y in the eigenbasis
    alpha, beta = 1.0, 1.0
    for _ in range(steps):
        gamma = float((beta * s / (alpha + beta * s)).sum())
        m_eig = beta * proj / (alpha + beta * s)  # posterior mean in the eigenbasis
        alpha_de = float((m_eig**2).sum())
        residual = y - f @ (v @ m_eig)
        beta_de = float((residual**2).sum())
        new_alpha = min(max(gamma / (alpha_de + 1e-10), 1e-10), 1e10)
        new_beta = min(max((n - gamma) / (beta_de + 1e-10), 1e-10), 1e10)
        converged = abs(new_alpha / new_beta - alpha / beta) <= 1e-4 * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    m_eig = beta * proj / (alpha + beta * s)
    alpha_de = float((m_eig**2).sum())
    beta_de = float(((y - f @ (v @ m_eig)) ** 2).sum())
    evidence = (
        d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * float(np.log(alpha + beta * s).sum())
        - beta / 2 * beta_de - alpha / 2 * alpha_de - n / 2 * math.log(2 * math.pi)
    )
    return evidence / n


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021).

    The log marginal evidence of a Bayesian linear model from the features to each class's one-vs-rest
    indicator, maximised over the prior precision alpha and noise precision beta by the fixed-point iteration on
    the eigen-decomposition of F^T F, averaged over classes and divided by N.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    s, v = np.linalg.eigh(f.T @ f)
    s = np.clip(s, 0, None)
    return float(np.mean([_evidence((y == c).astype(np.float64), f, s, v) for c in np.unique(y)]))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned Representations", ICML
    2020): the average log-likelihood of the target labels under the "expected empirical predictor"
    P(y | x) = sum_z P(y | z) theta(x)_z, where theta are the source head's soft predictions over its own labels
    z and P(y | z) is their empirical conditional on the target data."""
    theta = np.asarray(source_probs, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    joint = np.stack([theta[y == c].sum(0) for c in classes]) / len(y)  # P(y, z): (classes, Z)
    cond = joint / np.clip(joint.sum(0, keepdims=True), 1e-300, None)  # P(y | z)
    eep = theta @ cond.T  # (N, classes)
    index = np.searchsorted(classes, y)
    return float(np.mean(np.log(np.clip(eep[np.arange(len(y)), index], 1e-300, None))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE (Tran et al., "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019): the
    negative conditional entropy -H(Y | Z) of the target labels Y given the source head's hard predictions Z on
    the same inputs (the source's labels condition the target's)."""
    z = np.asarray(source_labels)
    y = np.asarray(labels)
    _, zi = np.unique(z, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((zi.max() + 1, yi.max() + 1))
    np.add.at(joint, (zi, yi), 1.0)
    joint /= len(y)
    pz = joint.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / pz), 0.0)
    return float(terms.sum())


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer Learning",
    ICIP 2019): tr(cov(f)^-1 cov(E[f | y])), how much of the features' variance lies between the classes.

    As Ibrahim et al. ("Newer is not always better: Rethinking transferability metrics, their peculiarities,
    stability and performance", ECML-PKDD 2022) propose, cov(f) is the Ledoit-Wolf shrinkage estimate
    (1 - d) S + d s I and the between-class covariance is scaled by the same (1 - d): with the plain sample
    covariance and a pseudo-inverse, any features with at least as many dimensions as samples score the maximum,
    the number of classes minus one.
    """
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if len(f) < 2:
        return 0.0
    f = f - f.mean(0, keepdims=True)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    cov_g = g.T @ g / (len(f) - 1)
    lw = LedoitWolf(assume_centered=True).fit(f)
    cov_f = lw.covariance_ + 1e-12 * np.eye(f.shape[1])  # constant features: a zero covariance
    return float((1 - lw.shrinkage_) * np.trace(np.linalg.solve(cov_f, cov_g)))


def _cross_validated(model, features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
    k = min(folds, smallest)
    if k < 2:
        return float("nan")  # every class needs two examples to be both trained and tested on
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pipe = make_pipeline(StandardScaler(), model)
    return float(cross_val_score(pipe, np.asarray(features, dtype=np.float64), y, cv=cv).mean())


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """k-nearest-neighbour accuracy on standardised features under stratified k-fold cross-validation: a cheap
    empirical baseline (nan when a class has fewer than two examples)."""
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(labels)
    neighbours = max(1, min(k, len(y) - len(y) // min(folds, len(y)) - 1))
    return _cross_validated(KNeighborsClassifier(n_neighbors=neighbours), features, y, folds, seed)


def linear_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Linear-probe (L2 logistic regression) accuracy on standardised features under stratified k-fold
    cross-validation: the cheapest stand-in for training a head (nan when a class has fewer than two examples)."""
    from sklearn.linear_model import LogisticRegression

    return _cross_validated(LogisticRegression(max_iter=2000), features, labels, folds, seed)


def weighted_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Vigna's weighted Kendall tau with the additive hyperbolic weigher: ``scipy.stats.weightedtau`` with its
    defaults (rank by decreasing x and by decreasing y, each breaking ties by the other, items tied in both taking
    consecutive ranks, and average). Swaps near the top of a ranking weigh more than swaps near the bottom. nan
    when either side is constant or holds a nan (scipy would rank a nan last) or there are fewer than two items."""
    from scipy.stats import weightedtau

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return float(weightedtau(x, y).statistic)
