"""Write the two related blobs problems of Jason Brownlee's tutorial "How to Improve Performance With Transfer
Learning for Deep Learning Neural Networks" (machinelearningmastery.com) as CSV tables for transferlab.

Usage: ``python scripts/make_blobs.py OUTDIR`` writes ``OUTDIR/problem1.csv``, ``OUTDIR/problem2.csv`` and
``OUTDIR/problem2-same-centres.csv``.

Faithful to the tutorial's ``samples_for_seed(seed)``: each problem is
``make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=seed)`` with seed 1 for problem 1
and seed 2 for problem 2. Because ``centers=3`` draws the blob centres from the same seed, the two problems have
the same form (3 classes, 2 features, the same spread) but their centres lie in different places: problem 2 is a
related task, not the same one. That is what the tutorial does (it fits an MLP on problem 1, then reuses its hidden
layers on problem 2).

``problem2-same-centres.csv`` is the closer relative the transferlab issue asked for: problem 1's three centres
(the same layout), with the samples drawn from seed 2. Transfer from problem 1 should help there; on the tutorial's
problem 2 it need not.

Each file has 1000 rows and the columns ``x1,x2,label`` (labels ``0``, ``1``, ``2``, about 333 rows each), in
make_blobs's shuffled order, with no ``split`` column: transferlab makes its own stratified, seeded splits. The
tutorial itself trains on the first 500 rows and tests on the last 500 of each problem. Deterministic: the same
files on every run (scikit-learn's generator is seeded; floats are written with ``repr``, exactly).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from sklearn.datasets import make_blobs

SEEDS = {"problem1": 1, "problem2": 2}
N_SAMPLES = 1000


def write_problem(path: Path, seed: int, centers: object = 3) -> None:
    X, y = make_blobs(n_samples=N_SAMPLES, centers=centers, n_features=2, cluster_std=2, random_state=seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["x1", "x2", "label"])
        for (a, b), label in zip(X.tolist(), y.tolist(), strict=True):
            writer.writerow([repr(a), repr(b), str(label)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder to write problem1.csv and problem2.csv into")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name, seed in SEEDS.items():
        write_problem(args.outdir / f"{name}.csv", seed)
        print(f"wrote {args.outdir / name}.csv ({N_SAMPLES} rows, make_blobs random_state={seed})")
    _, _, centres = make_blobs(n_samples=N_SAMPLES, centers=3, n_features=2, cluster_std=2,
                               random_state=SEEDS["problem1"], return_centers=True)
    write_problem(args.outdir / "problem2-same-centres.csv", SEEDS["problem2"], centres)
    print(f"wrote {args.outdir / 'problem2-same-centres.csv'} ({N_SAMPLES} rows, problem 1's centres, random_state=2)")


if __name__ == "__main__":
    main()
