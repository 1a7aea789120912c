"""Evaluation: classification metrics (learning-curve measures come with `compare`)."""

from __future__ import annotations

import numpy as np

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
