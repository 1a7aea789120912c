"""Evaluation: classification metrics (learning-curve measures come with `compare`)."""

from __future__ import annotations

import numpy as np

from transferlab.config import METRIC_NAMES, METRICS

__all__ = ["METRICS", "METRIC_NAMES", "accuracy", "classification_report", "confusion_matrix", "score"]

# sklearn.metrics is imported where it is used: at the top it made `import transferlab.evaluate.curves` (and so
# report.html, which the CLI imports before a ranking's input checks) 0.1 s -> 0.8 s (python -X importtime).


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]``: (num_classes, num_classes) int64, all zero for no examples."""
    from sklearn.metrics import confusion_matrix as counts

    if not len(y_true):  # sklearn refuses empty input
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return counts(y_true, y_pred, labels=range(num_classes)).astype(np.int64, copy=False)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches; nan for no examples."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """One of :data:`METRICS` (scikit-learn's definitions): accuracy; balanced accuracy, the mean recall over the
    classes present in ``y_true`` (a class never predicted counts as 0 recall, where accuracy hides it); macro-F1,
    the mean F1 over the classes present in ``y_true`` or ``y_pred``. nan for no examples."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    if not len(y_true):
        return float("nan")
    if metric == "accuracy":
        return accuracy(y_true, y_pred)
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(y_true, y_pred))
    if metric == "macro_f1":
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    raise ValueError(f"unknown metric {metric!r}")


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, object]:
    """Every metric of :data:`METRICS`, each class's recall (None for a class absent from ``y_true``) and the
    confusion matrix (rows true, columns predicted): what a run's card records about its test split."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    support = cm.sum(1)
    return {**{m: score(m, y_true, y_pred) for m in METRICS},
            "recall": {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)},
            "confusion": cm.tolist()}
