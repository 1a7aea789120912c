"""The strong simple baseline every comparison stands beside: logistic regression on the raw inputs.

A transfer arm that beats scratch has beaten a model trained the same way from random weights; that says nothing
if a linear model on the pixels, the words or the columns does better still (on 8x8 digits, 50 labelled images:
0.95 for logistic regression against 0.60 for EfficientNet-Lite0 frozen or fine-tuned). So ``compare`` and
``layers`` put one beside every arm, and say whether each arm beats it.

The inputs are each modality's :meth:`~transferlab.modality.Modality.raw_features` (standardised columns for
tables, TF-IDF for texts, images resized to at most 32x32 and flattened); the model is scikit-learn's
``LogisticRegressionCV``: the inverse regularisation strength C chosen among 10 values on a log scale from 1e-4 to
1e4 by stratified k-fold cross-validation on the training split only (k = 5, fewer when a class has fewer
examples; no search below 2 per class, where C = 1), then refitted on the whole training split. No torch.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from transferlab.data.splits import Data

MAX_FOLDS = 5
C_GRID = np.logspace(-4, 4, 10)  # LogisticRegressionCV's own default grid (Cs=10)
MAX_ITER = 2000


def fit_logreg(data: Data, modality: Any, seed: int = 0, metric: str = "accuracy",
               class_weight: str = "none", c: float | None = None) -> dict[str, Any]:
    """Train on ``data.train`` (C by cross-validation there, judged by ``metric``, unless ``c`` is given;
    ``class_weight="balanced"`` weights the classes as the networks' loss then does) and score ``data.test``:
    ``test_score`` by ``metric``, every metric's ``test_<metric>``, the predictions, the C, the folds and the seconds
    it took."""
    from transferlab.evaluate import METRICS, score

    tick = time.perf_counter()
    x_train, x_test = modality.raw_features([data.train, data.test])
    y_test = np.asarray(data.test.labels)
    model, c, folds = fit_linear(x_train, np.asarray(data.train.labels), seed, metric, class_weight, c)
    pred = model.predict(x_test)
    scores = {f"test_{m}": score(m, y_test, pred) for m in METRICS}
    return {**scores, "test_score": scores[f"test_{metric}"], "metric": metric, "predictions": pred, "C": c,
            "folds": folds, "seconds": time.perf_counter() - tick, "features": int(x_train.shape[1])}


def fit_linear(x: Any, y: np.ndarray, seed: int = 0, metric: str = "accuracy",
               class_weight: str = "none", c: float | None = None) -> tuple[Any, float, int]:
    """A multinomial logistic regression fitted on ``(x, y)``, C chosen by stratified cross-validation there (see
    the module docstring) unless given as ``c``; returns it, its C and the number of folds (0: C was given). Also
    LP-FT's linear probe."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    folds = 0 if c is not None else min(MAX_FOLDS, int(np.bincount(y).min()) if len(y) else 0)
    weight = "balanced" if class_weight == "balanced" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the extreme C values of the grid may not converge
        if folds >= 2:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            model = LogisticRegressionCV(Cs=C_GRID, cv=cv, max_iter=MAX_ITER, l1_ratios=(0.0,),
                                         scoring="f1_macro" if metric == "macro_f1" else metric,
                                         class_weight=weight, use_legacy_attributes=False)
        else:
            model = LogisticRegression(C=1.0 if c is None else c, max_iter=MAX_ITER, class_weight=weight)
        model.fit(x, y)
    return model, float(model.C_) if folds >= 2 else model.C, folds


def linear_head(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0,
                class_weight: str = "none") -> tuple[np.ndarray, np.ndarray, float]:
    """LP-FT's linear probe: :func:`fit_linear` on the standardised features ``x``, returned as the weight
    (classes x features) and bias of a linear layer on ``x`` itself, the standardisation folded in (the same
    logits), and its C. Two classes: scikit-learn's one logit ``z`` becomes ``(-z/2, z/2)`` (the same softmax); a
    class absent from ``y`` gets a zero row and a bias 10 below the others'."""
    from transferlab.data.tabular import column_scale

    x = np.asarray(x, dtype=np.float64)
    mean, std = column_scale(x)
    # A feature that varies less than float32 rounding of the vector it belongs to is constant (MiniLM's sentence
    # embeddings of 80 glosses had columns at std 1e-33 and 5e-9, values near 0): divided by, it made weights of
    # 1e6 that dropout turned into a first fine-tuning loss of 84. Unlike a table's columns, features share a scale.
    std = np.where(std <= 1e-6 * np.abs(x).max(initial=0.0), 1.0, std)
    model, c, _ = fit_linear((x - mean) / std, np.asarray(y), seed, "accuracy", class_weight)
    coef, intercept = np.asarray(model.coef_, np.float64), np.asarray(model.intercept_, np.float64)
    if coef.shape[0] == 1:  # binary
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    folded = intercept - (coef / std) @ mean
    weight, bias = np.zeros((num_classes, x.shape[1])), np.full(num_classes, folded.min() - 10.0)
    weight[model.classes_], bias[model.classes_] = coef / std, folded
    return weight, bias, c
