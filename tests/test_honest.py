"""Numbers that must not mislead: the naive baseline, and errors that come before any slow work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.api import fit


def test_the_majority_baseline_is_the_commonest_class_before_balancing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate([("a", 20), ("b", 20), ("c", 80)]):  # c is 2/3 of the data
        (tmp_path / "imb" / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 90, size=(12, 12, 3), dtype=np.uint8)
            arr[..., c] = 220
            Image.fromarray(arr).save(tmp_path / "imb" / name / f"{i}.png")
    result = fit(str(tmp_path / "imb"), out=tmp_path / "run", source="cnn_tiny", strategy="scratch", per_class=10,
                 epochs=1, image_size=16, progress=False)
    # balanced training (10 of each) must not make "a" (the first class) the naive model's answer
    assert result.majority_baseline > 1 / 3
    assert result.majority_baseline == 12 / 18  # the test split holds 3 + 3 + 12 images
