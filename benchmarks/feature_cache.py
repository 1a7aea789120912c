"""What does the feature cache buy? 10 head epochs of the ``frozen`` strategy with and without it.

``fit(FitConfig(strategy="frozen", cache=True))`` runs the frozen EfficientNet-Lite0 backbone once per image,
stores the features (``cached_features``) and trains the head on them; ``cache=False`` runs the backbone on
every training and validation image in every epoch. This script times three ``fit`` calls on the same data,
in this order:

* cold cache  -- ``TRANSFERLAB_CACHE_DIR`` is a fresh empty folder, so the one-off extraction is counted;
* warm cache  -- the same folder again: the features are read back from disk;
* no cache    -- ``cache=False``.

Data: Fashion-MNIST classes 5-9 at 96 px, 1,000 training images per class (5,000) from the full set
(Debian's dataset-fashion-mnist, or ``TRANSFERLAB_FASHION_MNIST_DIR``), plus 100 validation and 100 test
images per class; the bundled subset (2,125 training images) is used when the full set cannot be found.
The source and data are loaded once and passed to ``fit`` (as ``transferlab compare`` does), so the timings
are of ``fit`` itself. One untimed warm-up ``fit`` of each kind comes first. The script re-executes itself
under tcmalloc with THP_MEM_ALLOC_ENABLE=1, as the ``transferlab`` CLI does (``--allocator system``: don't).

    .venv/bin/python benchmarks/feature_cache.py          # writes benchmarks/results/feature_cache.json
    .venv/bin/python benchmarks/feature_cache.py --quick  # smoke run: 100 training images per class
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ForeignCPU,
    allocator_in_use,
    machine_info,
    reexec_like_cli,
    repo_state,
    table,
    wait_until_quiet,
    write_json,
)

NAME = "feature_cache"
FULL_SPEC = "fashion-mnist:classes=5-9,set=full,per_class={per_class}"
BUNDLED_SPEC = "fashion-mnist:classes=5-9"
PER_CLASS, QUICK_PER_CLASS = 1000, 100
HELD_OUT_PER_CLASS, QUICK_HELD_OUT_PER_CLASS = 100, 20
IMAGE_SIZE = 96
EPOCHS = 10
TARGET = 10.0


def take_per_class(split: Any, n: int) -> Any:
    """The first ``n`` images of each class of ``split`` (all of a class when it has fewer), in order."""
    import numpy as np

    labels = np.asarray(split.labels)
    idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]))
    return split.subset(idx)


def load_data(quick: bool) -> tuple[Any, str, str | None]:
    """(ImageData, the spec it came from, why the full set was not used or None)."""
    from transferlab.data import load_images
    from transferlab.errors import UserError

    per_class = QUICK_PER_CLASS if quick else PER_CLASS
    held_out = QUICK_HELD_OUT_PER_CLASS if quick else HELD_OUT_PER_CLASS
    spec = FULL_SPEC.format(per_class=per_class)
    fallback = None
    try:
        data = load_images(spec, seed=0)
        data.val = take_per_class(data.val, held_out)
        data.test = take_per_class(data.test, held_out)
    except UserError as e:
        fallback = f"full Fashion-MNIST not usable ({e}); used the bundled subset"
        spec = BUNDLED_SPEC + (f",per_class={per_class}" if quick else "")
        data = load_images(spec, seed=0)
    return data, spec, fallback


def main(args: argparse.Namespace) -> None:
    quiet = wait_until_quiet(args.wait)
    if not quiet["quiet"]:
        print(f"warning: the machine is busy ({quiet['busy_share']:.0%} CPU used by others)", file=sys.stderr)

    import transferlab.train.datamodule as datamodule
    import transferlab.train.fit as run_module
    from transferlab.config import FitConfig
    from transferlab.sources import load_source

    info = machine_info()
    foreign = ForeignCPU()
    data, spec, fallback = load_data(args.quick)
    if fallback:
        print(f"note: {fallback}", file=sys.stderr)
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    source = load_source("efficientnet_lite0")
    epochs = args.epochs

    # Instrumentation only: time the library's own phases by wrapping the names train/fit.py and datamodule.py call.
    phases: dict[str, float] = {}
    real_cached_features, real_run_inference = datamodule.cached_features, run_module.run_inference

    def timed_cached_features(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_cached_features(*a, **k)
        finally:
            phases["cached_features_s"] = phases.get("cached_features_s", 0.0) + time.perf_counter() - t0

    def timed_run_inference(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_run_inference(*a, **k)
        finally:
            phases["test_inference_s"] = phases.get("test_inference_s", 0.0) + time.perf_counter() - t0

    datamodule.cached_features = timed_cached_features
    run_module.run_inference = timed_run_inference

    work = Path(tempfile.mkdtemp(prefix="transferlab-bench-feature-cache-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # run directories and the feature cache

    def one_fit(label: str, cache: bool, cache_dir: Path, run_data: Any, run_epochs: int) -> dict[str, Any]:
        os.environ["TRANSFERLAB_CACHE_DIR"] = str(cache_dir)
        cfg = FitConfig(
            data=spec, source="efficientnet_lite0", strategy="frozen", epochs=run_epochs, image_size=IMAGE_SIZE,
            seed=0, cache=cache,
        )
        phases.clear()
        probe = ForeignCPU()
        t0 = time.perf_counter()
        result = run_module.fit(cfg, out=work / label, progress=False, data=run_data, source=source)
        wall = time.perf_counter() - t0
        row = {
            "fit_wall_s": round(wall, 3),
            "train_loop_s": result.wall_seconds,  # trainer.fit: first epoch start to last epoch end
            **{k: round(v, 3) for k, v in phases.items()},
            "cache_hit": result.cache_hit,
            "test_accuracy": round(result.test_accuracy, 4),
            "epoch_wall_s": [r["wall_seconds"] for r in result.epochs],
            "foreign_cpu_share": probe.report()["foreign_share_of_machine"],  # other processes' share of the CPUs
        }
        print(f"  {label}: {wall:.1f} s (cache_hit={result.cache_hit}, test accuracy {result.test_accuracy:.3f})",
              file=sys.stderr, flush=True)
        return row

    # Warm-up (untimed): imports, oneDNN kernels for these shapes, Lightning's first-run costs.
    tiny = type(data)(data.classes, take_per_class(data.train, 8), take_per_class(data.val, 4),
                      take_per_class(data.test, 4), [], data.name)
    print("warm-up", file=sys.stderr)
    warm_dir = work / "cache-warmup"
    one_fit("warmup-cache", True, warm_dir, tiny, 1)
    one_fit("warmup-nocache", False, warm_dir, tiny, 1)

    print(f"timed runs: {sizes} images, {epochs} epochs, {IMAGE_SIZE} px", file=sys.stderr)
    cache_dir = work / "cache"  # fresh and empty: the first cache=True run is cold
    runs = {
        "cache_cold": one_fit("cache_cold", True, cache_dir, data, epochs),
        "cache_warm": one_fit("cache_warm", True, cache_dir, data, epochs),
        "no_cache": one_fit("no_cache", False, cache_dir, data, epochs),
    }
    assert runs["cache_cold"]["cache_hit"] is False and runs["cache_warm"]["cache_hit"] is True
    datamodule.cached_features, run_module.run_inference = real_cached_features, real_run_inference

    nc, cold, warm = (runs[k]["fit_wall_s"] for k in ("no_cache", "cache_cold", "cache_warm"))
    ratios = {
        "no_cache_vs_cache_cold": round(nc / cold, 3),
        "no_cache_vs_cache_warm": round(nc / warm, 3),
        "train_loop_no_cache_vs_cache": round(runs["no_cache"]["train_loop_s"] / runs["cache_cold"]["train_loop_s"], 3),
    }
    # How far the ratio can go: the cached arm runs the backbone once per image; the uncached arm runs it on
    # every training and validation image in every epoch, and on the test images once.
    passes_cache = sizes["train"] + sizes["val"] + sizes["test"]
    passes_no_cache = epochs * (sizes["train"] + sizes["val"]) + sizes["test"]
    ratios["backbone_passes_no_cache_vs_cache"] = round(passes_no_cache / passes_cache, 3)
    per_image_ms = {
        "cold_extraction": round(1000 * runs["cache_cold"]["cached_features_s"] / passes_cache, 3),
        "no_cache_train_loop": round(
            1000 * runs["no_cache"]["train_loop_s"] / (epochs * (sizes["train"] + sizes["val"])), 3
        ),
    }
    features_mib = None
    feature_files = list((cache_dir / "features").glob("*.safetensors"))
    if feature_files:
        features_mib = round(sum(f.stat().st_size for f in feature_files) / 2**20, 1)
    payload = {
        "benchmark": NAME,
        "command": "python benchmarks/feature_cache.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": info,
        "library_state": repo_state(),
        "quiet_check": quiet,
        "foreign_cpu": foreign.report(),
        "settings": {
            "data": spec,
            "data_note": fallback or (
                f"full Fashion-MNIST; train capped at {QUICK_PER_CLASS if args.quick else PER_CLASS} per class, "
                f"val and test cut to the first {QUICK_HELD_OUT_PER_CLASS if args.quick else HELD_OUT_PER_CLASS} "
                "per class"
            ),
            "sizes": sizes,
            "image_size": IMAGE_SIZE,
            "epochs": epochs,
            "strategy": "frozen",
            "source": "efficientnet_lite0",
            "batch_size": FitConfig().batch_size,
            "num_workers": FitConfig().num_workers,
            "order": list(runs),
            "timing": "time.perf_counter around transferlab.train.fit.fit(...); data and source preloaded",
            "cache_file_mib": features_mib,
        },
        "runs": runs,
        "ratios": ratios,
        "backbone_image_passes": {"cache": passes_cache, "no_cache": passes_no_cache},
        "ms_per_backbone_image": per_image_ms,
        "target": {"no_cache_vs_cache_cold": TARGET},
        "meets_target": ratios["no_cache_vs_cache_cold"] >= TARGET,
    }
    path = write_json(NAME + ("_quick" if args.quick else ""), payload, args.out)

    rows = [
        [k, f"{r['fit_wall_s']:.1f}", f"{r['train_loop_s']:.1f}", f"{r.get('cached_features_s', 0):.1f}",
         f"{r.get('test_inference_s', 0):.1f}", str(r["cache_hit"]), f"{r['test_accuracy']:.3f}"]
        for k, r in runs.items()
    ]
    print(table(rows, ["run", "fit s", "train loop s", "extraction s", "test inference s", "cache hit", "test acc"]))
    print(f"\n{sizes['train']} train / {sizes['val']} val / {sizes['test']} test images, {epochs} epochs, "
          f"{IMAGE_SIZE} px, {allocator_in_use()['name']}, {info['cpu_count']} CPUs")
    print(f"no cache / cold cache: {ratios['no_cache_vs_cache_cold']:.1f}x (target >= {TARGET:.0f}x)")
    print(f"no cache / warm cache: {ratios['no_cache_vs_cache_warm']:.1f}x")
    print(f"backbone image passes: {passes_no_cache} without the cache vs {passes_cache} with it "
          f"({ratios['backbone_passes_no_cache_vs_cache']:.2f}x); ms per image: extraction "
          f"{per_image_ms['cold_extraction']}, uncached training loop {per_image_ms['no_cache_train_loop']}")
    print(f"wrote {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 training images per class")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"head epochs (default {EPOCHS})")
    parser.add_argument("--allocator", choices=("cli", "system"), default="cli",
                        help="cli: tcmalloc + THP like the transferlab CLI (default); system: as started")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for other processes to go quiet before starting (default 120)")
    parser.add_argument("--out", type=Path, help="JSON file to write (default benchmarks/results/feature_cache.json)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.allocator == "cli":
        reexec_like_cli(str(Path(__file__).resolve()), sys.argv[1:])
    main(arguments)
