"""Build the Fashion-MNIST subset that ships inside transferlab.

Writes ``src/transferlab/data/bundled/fashion_mnist_subset.npz``: for each of the 10 classes, 500 images
of the official train set and 100 of the official test set (uint8, 28x28), stored with
``np.savez_compressed`` under the keys ``train_images``, ``train_labels``, ``test_images``,
``test_labels``, plus ``train_index`` / ``test_index``: each image's position in the official file.

Selection is reproducible: class ``c`` draws its images without replacement with
``numpy.random.default_rng([seed, c])`` (default seed 0); images are stored in official-file order. The
decompressed IDX files are checked against the official MD5 sums first, so any source of the official
files gives the same arrays (the zip container's timestamps differ between runs; the arrays do not).

Source of the IDX files (plain or .gz): ``--source DIR``, else the places ``load_images`` searches:
``TRANSFERLAB_FASHION_MNIST_DIR``, Debian's ``dataset-fashion-mnist`` package
(``apt-get install dataset-fashion-mnist``, files in /usr/share/datasets/fashion-mnist), the download cache.

Usage (from the repository root)::

    PYTHONPATH=src python scripts/make_fashion_mnist_subset.py [--source DIR] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

from transferlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    find_fashion_mnist_dir,
    read_idx,
)
from transferlab.errors import UserError

TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/transferlab/data/bundled/fashion_mnist_subset.npz"


def idx_file(directory: Path, name: str) -> Path:
    """The IDX file ``name`` in ``directory``, plain or .gz, after checking its MD5."""
    for path in (directory / name, directory / f"{name}.gz"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            digest = hashlib.md5(data).hexdigest()
            if digest != IDX_FILES[name][1]:
                sys.exit(f"{path}: content MD5 {digest} is not the official one")
            return path
    sys.exit(f"{directory} has no {name} (plain or .gz)")


def sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Official-file positions of ``per_class`` seeded random images of every class."""
    chosen = [
        np.random.default_rng([seed, c]).choice(np.flatnonzero(labels == c), per_class, replace=False)
        for c in range(len(FASHION_MNIST_CLASSES))
    ]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="folder with the four official IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    try:
        source = find_fashion_mnist_dir(args.source)
    except UserError as exc:
        sys.exit(str(exc))
    if source is None:
        sys.exit(
            "no Fashion-MNIST IDX files found: apt-get install dataset-fashion-mnist, or pass --source DIR"
        )
    arrays: dict[str, np.ndarray] = {}
    for kind, part, per_class in (
        ("train", "train", TRAIN_PER_CLASS),
        ("t10k", "test", TEST_PER_CLASS),
    ):
        images = read_idx(idx_file(source, f"{kind}-images-idx3-ubyte"))
        labels = read_idx(idx_file(source, f"{kind}-labels-idx1-ubyte"))
        index = sample(labels, per_class, args.seed)
        arrays[f"{part}_images"] = images[index]
        arrays[f"{part}_labels"] = labels[index]
        arrays[f"{part}_index"] = index.astype(np.uint16)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    content = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays)))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) from {source}")
    print(f"array content sha256: {content.hexdigest()}")


if __name__ == "__main__":
    main()
