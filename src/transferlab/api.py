"""The public entry points. The CLI calls these and nothing else."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transferlab.config import FitConfig
from transferlab.errors import UserError
from transferlab.train.run import RunResult  # noqa: F401  (re-exported for type hints)

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

    cfg = FitConfig.from_dict({"data": data, **options})  # unknown options: a clear error with suggestions
    return run_fit(cfg, Path(out), resume=resume, overwrite=overwrite, progress=progress)


def pretrain(data: str, *, arch: str, out: str | Path, **options: Any) -> tuple[RunResult, dict[str, Any]]:
    """The develop model approach: train ``arch`` from scratch on a source task and check that it learned.

    The run directory is a source for every command (``--source DIR``). Its card gains ``source_check``: test
    accuracy next to the majority-class baseline and chance, and whether the model is clearly better than the
    baseline (beyond two binomial standard errors); a source that learned nothing transfers nothing.
    """
    import math

    from transferlab.sources.rundir import read_card, write_card

    if options.get("strategy", "scratch") != "scratch":
        raise UserError("pretrain always trains from scratch; use fit for other strategies")
    options.pop("strategy", None)
    result = fit(data, out=out, source=arch, strategy="scratch", **options)
    base = result.majority_baseline
    margin = 2 * math.sqrt(max(base * (1 - base), 1e-12) / max(result.test_size, 1))
    check = {
        "test_accuracy": result.test_accuracy,
        "majority_baseline": base,
        "chance": 1 / len(result.classes),
        "clearly_better_than_naive": result.test_accuracy > base + margin,
        "margin": margin,
    }
    card = read_card(Path(out))
    card["source_check"] = check
    write_card(Path(out), card)
    if not check["clearly_better_than_naive"]:
        log.warning("the pretrained source is not clearly better than always predicting the commonest class")
    return result, check


def layers(target_data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """The layer-transfer sweep of Yosinski et al. 2014: AnB, AnB+, BnB, BnB+ for every cut n (see
    :mod:`transferlab.layers`). Writes ``results.json`` and ``report.html`` to ``out``."""
    from transferlab.layers import layers as run_layers

    return run_layers(target_data, out=out, **options)


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


def compare(data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """Every arm x seed x labelled size through :func:`fit`, then the benefits of transfer over scratch.

    Writes ``results.json``, ``curves.csv`` and ``report.html`` to ``out`` and returns the results.

    >>> compare("fashion-mnist:classes=5-9", source="efficientnet_lite0", arms="scratch,frozen,finetune",
    ...         seeds=3, epochs=4, per_class="10,100", image_size=64, out="runs/cmp")  # doctest: +SKIP
    """
    from transferlab.compare import compare as run_compare

    return run_compare(data, out=out, **options)


def demo(out: str | Path = "transferlab-demo", quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """The main job on the built-in default: does ImageNet EfficientNet-Lite0 help on the bundled Fashion-MNIST
    classes 5-9? A small :func:`compare` of scratch, frozen and finetune; rerunning it reuses finished cells."""
    out = Path(out) / ("quick" if quick else "full")
    settings = DEMO_QUICK if quick else DEMO_FULL
    resume = (out / "compare.json").is_file()
    return compare(DEMO_DATA, out=out, source=DEMO_SOURCE, arms=",".join(DEMO_ARMS), image_size=64,
                   progress=progress, resume=resume, **settings)


DEMO_QUICK = {"per_class": "30", "seeds": 2, "epochs": 3}
DEMO_FULL = {"per_class": "10,100", "seeds": 3, "epochs": 4}
