"""Write 1,300 of scikit-learn's 8x8 grey digits as PNGs in class folders: the small-image dataset of the README's
"compare that fits a coffee break" figure.

    python scripts/make_digits_folder.py runs/digits
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(out: str, n: int = 1300) -> None:
    digits = load_digits()
    for i in np.random.default_rng(0).permutation(len(digits.target))[:n]:
        folder = Path(out) / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    print(f"{n} images in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
