"""Reports: plots (matplotlib, no display needed) and small writers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from transferlab.files import atomic_write

ANNOTATED_CLASSES = 30  # up to this many classes the matrix shows every count
MATRIX_CLASSES = 100  # up to this many, the matrix without counts; beyond, the most confused pairs only
CONFUSED_PAIRS = 20


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> None:
    """Save a confusion matrix (rows: true class, columns: predicted) as a PNG of bounded size: with counts in the
    cells up to :data:`ANNOTATED_CLASSES` classes, as a heat map up to :data:`MATRIX_CLASSES`, and beyond that as
    the :data:`CONFUSED_PAIRS` most confused (true, predicted) pairs, which a figure of 1,000 x 1,000 cells could
    not show anyway (drawn whole it took 21 GB). The figure is at most 12 x 12 inches whatever the class count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    k = len(classes)
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    if k > MATRIX_CLASSES:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        top = np.argsort(off, axis=None)[::-1][:CONFUSED_PAIRS]
        pairs = [(int(i // k), int(i % k)) for i in top if off.flat[i] > 0]
        fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * max(len(pairs), 1)), dpi=110)
        ax.barh(range(len(pairs)), [off[t, p] for t, p in pairs], color="C0")
        ax.set_yticks(range(len(pairs)), [f"{classes[t][:30]} → {classes[p][:30]}" for t, p in pairs], fontsize=8)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("test examples")
        ax.set_title(title or f"test accuracy {accuracy:.3f}: the {len(pairs)} most confused of {k} classes "
                     "(true → predicted)")
    else:
        side = min(12.0, 1.2 + 0.6 * k)
        fig, ax = plt.subplots(figsize=(side, side * 0.92), dpi=110)
        ax.imshow(cm, cmap="Blues")
        if k <= ANNOTATED_CLASSES:
            ax.set_xticks(range(k), classes, rotation=45, ha="right")
            ax.set_yticks(range(k), classes)
            high = cm.max() / 2 if cm.size else 0
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                            color="white" if cm[i, j] > high else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or f"test accuracy {accuracy:.3f}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (``\\n`` line ends)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV file atomically."""
    atomic_write(path, csv_text(header, rows))
