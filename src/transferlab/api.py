"""The public entry points. The CLI calls these and nothing else."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from transferlab.config import FitConfig
from transferlab.errors import UserError, did_you_mean
from transferlab.train.run import RunResult

log = logging.getLogger(__name__)

DEMO_DATA = "fashion-mnist:classes=5-9"
DEMO_SOURCE = "efficientnet_lite0"
DEMO_ARMS = ("scratch", "frozen", "finetune")


def fit(
    data: str,
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> RunResult:
    """Train a target model from a source and write a run directory (see :class:`FitConfig` for options).

    >>> fit("fashion-mnist:classes=5-9,per_class=50", source="efficientnet_lite0", strategy="frozen",
    ...     epochs=3, image_size=64, out="runs/frozen")  # doctest: +SKIP
    """
    from transferlab.train.run import fit as run_fit

    names = {f.name for f in fields(FitConfig)}
    for key in options:
        if key not in names:
            raise UserError(f"unknown option {key!r}{did_you_mean(key, names)}")
    return run_fit(FitConfig(data=data, **options), Path(out), resume=resume, overwrite=overwrite, progress=progress)


def predict(run_dir: str | Path, paths: list[str | Path], batch_size: int = 64) -> list[tuple[str, str, float]]:
    """Classify image files (folders are searched recursively) with a finished run: (path, label, probability)."""
    import torch
    from PIL import Image

    from transferlab.data import open_image
    from transferlab.sources import Preprocessing, load_run
    from transferlab.train.transforms import make_transform

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    model, card = load_run(run_dir)
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist")
    if not files:
        raise UserError("no image files found in " + ", ".join(map(str, paths)))
    tf = make_transform(Preprocessing.from_dict(card["preprocessing"]))
    rows = []
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            x = torch.stack([tf(open_image(f)) for f in chunk]).contiguous(memory_format=torch.channels_last)
            prob, idx = model(x).softmax(1).max(1)
            rows += [(str(f), card["classes"][i], float(p)) for f, i, p in zip(chunk, idx.tolist(), prob, strict=True)]
    return rows


def list_sources() -> list[dict[str, str]]:
    """Built-in and well-known sources, and whether their weights are available offline now."""
    from transferlab.sources import known_sources

    return known_sources()


def source_blocks(spec: str, weights: str | None = None) -> list[tuple[str, int]]:
    """The ordered blocks of a source (what ``--reuse N`` counts) with their parameter counts."""
    from transferlab.sources import load_source

    try:
        source = load_source(spec, weights=weights)
    except UserError:
        source = load_source(spec, pretrained=False)  # the architecture is known even without weights
    return source.block_table()


def demo(out: str | Path = "transferlab-demo", quick: bool = False, progress: bool = True) -> list[RunResult]:
    """The main job on the built-in default: scratch, frozen and finetune from ImageNet EfficientNet-Lite0 on
    the bundled Fashion-MNIST classes 5-9, each written as a run directory under ``out``."""
    out = Path(out)
    marker = out / "demo.json"
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise UserError(f"--out {out} already holds files that are not a transferlab demo; choose another --out")
    base = FitConfig(
        data=DEMO_DATA + (",per_class=100" if quick else ""),
        source=DEMO_SOURCE,
        image_size=64,
        epochs=3 if quick else 6,
    )
    results = []
    for arm in DEMO_ARMS:
        log.info("demo arm %s", arm)
        results.append(fit(base.data, out=out / arm, overwrite=True, progress=progress, **_options(base, arm)))
    summary = {
        "config": base.to_dict(),
        "arms": {arm: {"test_accuracy": r.test_accuracy, "wall_seconds": r.wall_seconds, "run_dir": str(r.out)}
                 for arm, r in zip(DEMO_ARMS, results, strict=True)},
    }
    marker.write_text(json.dumps(summary, indent=2))
    return results


def _options(base: FitConfig, strategy: str) -> dict[str, Any]:
    d = base.to_dict()
    d.pop("data")
    d["strategy"] = strategy
    return d
