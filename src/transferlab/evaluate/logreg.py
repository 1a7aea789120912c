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
               class_weight: str = "none") -> dict[str, Any]:
    """Train on ``data.train`` (C by cross-validation there, judged by ``metric``; ``class_weight="balanced"``
    weights the classes as the networks' loss then does) and score ``data.test``: ``test_score`` by ``metric``,
    every metric's ``test_<metric>``, the predictions, the chosen C, the folds and the seconds it took."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from transferlab.evaluate import METRICS, score

    tick = time.perf_counter()
    x_train, x_test = modality.raw_features([data.train, data.test])
    y_train, y_test = np.asarray(data.train.labels), np.asarray(data.test.labels)
    folds = min(MAX_FOLDS, int(np.bincount(y_train).min()) if len(y_train) else 0)
    weight = "balanced" if class_weight == "balanced" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the extreme C values of the grid may not converge
        if folds >= 2:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            model = LogisticRegressionCV(Cs=C_GRID, cv=cv, max_iter=MAX_ITER, l1_ratios=(0.0,),
                                         scoring="f1_macro" if metric == "macro_f1" else metric,
                                         class_weight=weight, use_legacy_attributes=False)
        else:
            model = LogisticRegression(C=1.0, max_iter=MAX_ITER, class_weight=weight)
        model.fit(x_train, y_train)
    pred = model.predict(x_test)
    c = float(model.C_) if folds >= 2 else 1.0
    scores = {f"test_{m}": score(m, y_test, pred) for m in METRICS}
    return {**scores, "test_score": scores[f"test_{metric}"], "metric": metric, "predictions": pred, "C": c,
            "folds": folds, "seconds": time.perf_counter() - tick, "features": int(x_train.shape[1])}
