"""Calibration: temperature scaling and the expected calibration error (Guo, Pleiss, Sun & Weinberger, "On
Calibration of Modern Neural Networks", ICML 2017).

A network's softmax confidence is often higher than its accuracy. Temperature scaling divides the logits by one
scalar T > 0 fitted on the validation split by minimising the negative log-likelihood; the predicted class never
changes (argmax is invariant), only the probabilities. The paper found it the best of the post-hoc methods it
compared on most data sets, with one parameter. Pure functions of NumPy arrays.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15  # the paper's M = 15 equal-width confidence bins
T_RANGE = (0.05, 20.0)  # the temperatures searched (log-uniformly bounded): beyond them a model is broken


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over ``bins`` equal-width bins of the top-class confidence, the bins' weighted
    mean of |accuracy - mean confidence| (Guo et al.'s eq. 3). 0 for a calibrated model; nan for no examples."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if not len(labels):
        return float("nan")
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bin b holds (b/M, (b+1)/M]
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() / len(labels) * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the validation NLL of ``softmax(logits / T)``, searched over :data:`T_RANGE` in log space
    (the NLL is smooth in log T; Brent's bounded method, deterministic). 1.0 for no examples."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    if not len(labels):
        return 1.0
    lo, hi = np.log(T_RANGE)
    found = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(lo, hi),
                            method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))
