"""How much better run A scored than run B on the same examples: the difference in accuracy with ``advise``'s
paired bootstrap interval over the examples (each run's ``predictions.csv``).

Usage: ``python scripts/paired_runs.py RUN_A RUN_B [test|val]``: what the README's 64 vs 224 px table reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from transferlab.evaluate.curves import paired_difference
from transferlab.train.fit import read_predictions


def main(a: str, b: str, split: str = "test") -> None:
    y, pred_a = read_predictions(Path(a), split)
    y_b, pred_b = read_predictions(Path(b), split)
    if not np.array_equal(y, y_b):
        sys.exit(f"{a} and {b} were not scored on the same {split} examples")
    d = paired_difference(y, [pred_a], [pred_b])
    print(f"{a} - {b} on {d.n} {split} examples: {d.mean:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}] ({d.method})")


if __name__ == "__main__":
    main(*sys.argv[1:])
