"""Reports: plots (matplotlib, no display needed) and small writers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from transferlab.files import atomic_write


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> None:
    """Save a confusion matrix (rows: true class, columns: predicted) as a PNG with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * k, 1.0 + 0.55 * k), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"test accuracy {np.trace(cm) / max(cm.sum(), 1):.3f}")
    high = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > high else "black")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV file atomically."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())
