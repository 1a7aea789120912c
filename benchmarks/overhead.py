"""How much does transferlab's feature-extraction path cost over a bare timm forward loop?

Measures, on the same pre-transformed 96 px Fashion-MNIST tensors (bundled subset, classes 5-9):

* transferlab: the frozen prefix of ``build_model(load_source("efficientnet_lite0"))`` run by
  ``cached_features`` (cold cache, so it computes and writes the features) and by ``run_inference`` alone,
  over ``DataLoader(TensorDataset(x, y), batch_size=B)`` -- B being the batch size ``fit`` extracts with,
  ``max(FitConfig.batch_size, INFERENCE_BATCH)``;
* bare timm: ``timm.create_model("tf_efficientnet_lite0")`` with the same weights, computing what the prefix
  computes (``forward_features``, plus ``forward_head(pre_logits=True)`` when the prefix ends in the global
  pool) in ``torch.inference_mode()`` over slices of one tensor, channels_last and default layout, batch
  sizes 16, 32 and 64.

Every measurement runs in a child process (this script re-invoked with ``--child``), once per allocator
configuration: glibc malloc, tcmalloc (``LD_PRELOAD``, from the system's packages) or mimalloc (``LD_PRELOAD``,
from PyPI's ``cmeel-mimalloc`` wheel), each with ``THP_MEM_ALLOC_ENABLE`` unset or 1; those not installed are
left out. The full set runs under tcmalloc + THP (what the ``transferlab`` CLI uses); every configuration runs the
channels_last bare loop at batch 64, ``run_inference`` and ``train_bs32`` (fine-tuning steps of the whole
model, batch 32, AdamW), which the allocator ratios compare: inference and training.
Each variant is warmed up, then timed ``--reps`` times (interleaved with the other variants) with
``time.perf_counter``; the best time counts.

    .venv/bin/python benchmarks/overhead.py            # ~2,000 images, writes benchmarks/results/overhead.json
    .venv/bin/python benchmarks/overhead.py --quick    # smoke run (256 images, 1 rep)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
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
    preload_path,
    repo_state,
    table,
    wait_until_quiet,
    write_json,
)

NAME = "overhead"
DATA = "fashion-mnist:classes=5-9"  # the bundled subset: 2,125 training images
IMAGES = 2048  # divisible by 16, 32 and 64: no ragged last batch whose new shape would need its own warm-up
QUICK_IMAGES = 256
IMAGE_SIZE = 96
BARE_BATCH_SIZES = (16, 32, 64)
TARGET = 0.9
BREAKDOWN = ["tl_loader_only", "tl_loader_channels_last", "tl_save_features"]  # timed pieces, not throughputs
TL_BATCH = 64  # what fit extracts with: max(FitConfig.batch_size, datamodule.INFERENCE_BATCH), checked below
ALLOC_BARE = f"bare_channels_last_bs{TL_BATCH}"  # allocator runs: the bare loop at transferlab's own batch size
HEADLINE = "tcmalloc+THP"
CONFIGS: dict[str, tuple[str | None, bool]] = {  # name: (allocator preloaded, THP_MEM_ALLOC_ENABLE=1)
    "glibc": (None, False),
    "glibc+THP": (None, True),
    "tcmalloc": ("tcmalloc", False),
    "tcmalloc+THP": ("tcmalloc", True),
    "mimalloc": ("mimalloc", False),
    "mimalloc+THP": ("mimalloc", True),
}
TRAIN_BATCH = 32  # the training steps the allocators are compared on: fit's default batch


# --- child: the measurements ------------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import copy
    import gc

    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader, TensorDataset

    from transferlab.config import FitConfig
    from transferlab.data import load_images
    from transferlab.sources import load_source
    from transferlab.train.features import cache_key, cached_features, run_inference
    from transferlab.transfer.model import build_model
    from transferlab.transfer.strategies import make_strategy

    started = time.perf_counter()
    info = machine_info()
    from transferlab.train.datamodule import INFERENCE_BATCH

    n, reps, tl_batch = spec["images"], spec["reps"], max(FitConfig().batch_size, INFERENCE_BATCH)
    assert tl_batch == TL_BATCH, f"fit now extracts at batch {tl_batch}: update TL_BATCH"

    # The same pre-transformed tensors for every variant (transferlab's eval transform at 96 px).
    data = load_images(DATA)
    if len(data.train) < n:
        raise SystemExit(f"{DATA} has only {len(data.train)} training images, {n} asked for")
    source = load_source("efficientnet_lite0")
    pre = source.preprocessing.resized(IMAGE_SIZE)
    tf = pre.transform(augment=False)
    x = torch.stack([tf(data.train.load(i)) for i in range(n)])
    y = torch.as_tensor(np.asarray(data.train.labels[:n]), dtype=torch.long)

    # transferlab: the model `fit` builds for the frozen strategy, and its frozen prefix.
    reuse = len(source.blocks)
    model = build_model(source, len(data.classes), reuse, pretrained=True)
    make_strategy("frozen").attach(model, reuse, 1e-3)
    prefix = model.prefix(reuse)

    # bare timm: the same weights, copied in order (the source's blocks are timm's modules, minus the head).
    bare = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    body = [(k, v) for k, v in bare.state_dict().items() if not k.startswith("classifier.")]
    ours = list(prefix.state_dict().items())
    assert len(body) == len(ours), (len(body), len(ours))
    state = {k: t.clone() for (k, _), (_, t) in zip(body, ours, strict=True)}
    state.update({k: v for k, v in bare.state_dict().items() if k.startswith("classifier.")})
    bare.load_state_dict(state)
    bare.eval()
    bare_nchw = bare
    bare_cl = copy.deepcopy(bare).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    cache_root = Path(tempfile.mkdtemp(prefix="transferlab-bench-cache-"))
    atexit.register(shutil.rmtree, cache_root, ignore_errors=True)
    os.environ["TRANSFERLAB_CACHE_DIR"] = str(cache_root)
    calls = {"n": 0}

    def loader(count: int, batch_size: int = tl_batch) -> DataLoader:
        ds = TensorDataset(x[:count], y[:count])
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)

    def tl_cached_features(count: int) -> None:
        calls["n"] += 1
        key = cache_key(benchmark=NAME, call=calls["n"], images=count)  # a new key: always the cold path
        feats, hit = cached_features(key, prefix, {"train": loader(count)}, False)[:2]  # (feats, hit[, seconds])
        assert not hit and feats["train"].shape[0] == count

    def tl_run_inference(count: int, batch_size: int = tl_batch) -> None:
        out = run_inference(prefix, loader(count, batch_size))
        assert out.shape[0] == count

    # Pieces of the transferlab path, for the breakdown: the batching alone (TensorDataset indexing and
    # default_collate's torch.stack), plus run_inference's per-batch channels_last copy, and the cache write.
    def tl_loader_only(count: int) -> None:
        for _ in loader(count):
            pass

    def tl_loader_channels_last(count: int) -> None:
        for xb, _ in loader(count):
            xb.contiguous(memory_format=torch.channels_last)

    def tl_save_features(count: int) -> None:
        save_file({"train": feats_for_save[:count].contiguous()}, str(cache_root / "save-probe.safetensors"))

    # The bare loop computes what the prefix computes: every block, plus global pooling when the library's
    # prefix includes it (a feature vector per image) -- checked on a few images before anything is timed.
    prefix.to(memory_format=torch.channels_last)  # as cached_features does; run_inference relies on it
    with torch.inference_mode():
        prefix.eval()
        got = prefix(x_cl[:8])
    pooled = got.dim() == 2

    def bare_forward(net: torch.nn.Module, xb: torch.Tensor) -> torch.Tensor:
        feats = net.forward_features(xb)
        return net.forward_head(feats, pre_logits=True) if pooled else feats

    def bare_loop(net: torch.nn.Module, xs: torch.Tensor, bs: int):
        def run(count: int) -> None:
            with torch.inference_mode():
                for i in range(0, count, bs):
                    bare_forward(net, xs[i : i + bs])

        return run

    tuned = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
    tuned.requires_grad_(True)  # every layer trains (the frozen strategy above froze the prefix)
    opt = torch.optim.AdamW(tuned.parameters(), lr=1e-4)

    def train_steps(count: int) -> None:
        for i in range(0, count, TRAIN_BATCH):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(tuned(x_cl[i : i + TRAIN_BATCH]), y[i : i + TRAIN_BATCH]).backward()
            opt.step()

    variants: dict[str, Any] = {
        "train_bs32": train_steps,
        "tl_cached_features": tl_cached_features,
        "tl_run_inference": tl_run_inference,
        "tl_run_inference_bs64": lambda count: tl_run_inference(count, 64),
        "tl_loader_only": tl_loader_only,
        "tl_loader_channels_last": tl_loader_channels_last,
        "tl_save_features": tl_save_features,
    }
    for bs in BARE_BATCH_SIZES:
        variants[f"bare_channels_last_bs{bs}"] = bare_loop(bare_cl, x_cl, bs)
        variants[f"bare_default_layout_bs{bs}"] = bare_loop(bare_nchw, x, bs)
    chosen = {k: variants[k] for k in spec["variants"]}

    with torch.inference_mode():
        ref = bare_forward(bare_cl, x_cl[:8])
    assert ref.shape == got.shape, (tuple(ref.shape), tuple(got.shape))
    feats_for_save = torch.zeros((n, *got.shape[1:]))
    max_abs_diff = float((ref - got).abs().max())
    assert max_abs_diff < 1e-3, max_abs_diff

    for fn in chosen.values():  # warm-up: every variant, at its own batch shape, twice
        for _ in range(2):
            fn(min(n, 128))
    times: dict[str, list[float]] = {k: [] for k in chosen}
    foreign_share: dict[str, list[float]] = {k: [] for k in chosen}  # other processes' CPU share, per pass
    foreign = ForeignCPU()
    for rep in range(reps):
        for name, fn in chosen.items():
            gc.collect()
            probe = ForeignCPU()
            t0 = time.perf_counter()
            fn(n)
            times[name].append(time.perf_counter() - t0)
            foreign_share[name].append(probe.report()["foreign_share_of_machine"])
            if name == "tl_cached_features":
                for f in (cache_root / "features").glob("*.safetensors"):
                    f.unlink()
        print(f"  [{spec['config']}] rep {rep + 1}/{reps}: "
              + ", ".join(f"{k} {n / v[-1]:.0f}/s" for k, v in times.items()), file=sys.stderr, flush=True)
    return {
        "machine": info,
        "allocator": allocator_in_use(),
        "images": n,
        "transferlab_batch_size": tl_batch,
        "feature_shape": list(got.shape[1:]),
        "prefix_includes_pooling": pooled,
        "max_abs_diff_vs_bare": max_abs_diff,
        "times_s": times,
        "images_per_s": {k: n / min(v) for k, v in times.items()},
        "foreign_cpu_share_per_pass": foreign_share,
        "foreign_cpu_share_of_best_pass": {k: foreign_share[k][v.index(min(v))] for k, v in times.items()},
        "foreign_cpu_during_timing": foreign.report(),
        "child_wall_s": time.perf_counter() - started,
    }


# --- parent: one child per allocator configuration --------------------------------------------------------


def child_env(allocator: str | None, thp: bool) -> dict[str, str]:
    env = dict(os.environ)
    preload = [p for p in env.pop("LD_PRELOAD", "").split() if "tcmalloc" not in p and "mimalloc" not in p]
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    env["TRANSFERLAB_ALLOCATOR"] = "system"  # nothing re-execs the child under another one
    if allocator:
        preload.insert(0, preload_path(allocator) or "")
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    if thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    return env


def run_child(config: str, variants: list[str], images: int, reps: int) -> dict[str, Any]:
    allocator, thp = CONFIGS[config]
    spec = {"config": config, "variants": variants, "images": images, "reps": reps}
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec), "--child-out", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=child_env(allocator, thp))
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.is_file():
            return {"error": f"child exited with status {proc.returncode}", "wall_s": wall}
        result = json.loads(out.read_text())
    result["env"] = {"LD_PRELOAD": allocator, "THP_MEM_ALLOC_ENABLE": "1" if thp else None}
    result["wall_s"] = wall
    if result["allocator"]["loaded"] != allocator or result["allocator"]["THP_MEM_ALLOC_ENABLE"] != thp:
        result["error"] = f"child ran with {result['allocator']['name']}, not {config}"
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def main(args: argparse.Namespace) -> None:
    images = args.images or (QUICK_IMAGES if args.quick else IMAGES)
    reps = args.reps or (1 if args.quick else 3)
    quiet = wait_until_quiet(args.wait)
    if not quiet["quiet"]:
        print(f"warning: the machine is busy ({quiet['busy_share']:.0%} CPU used by others)", file=sys.stderr)
    foreign = ForeignCPU()
    configs = [c for c in CONFIGS if CONFIGS[c][0] is None or preload_path(CONFIGS[c][0])]
    headline = HEADLINE if HEADLINE in configs else "glibc+THP"

    full = ["tl_cached_features", "tl_run_inference", "tl_run_inference_bs64", "train_bs32"]
    full += [f"bare_{lay}_bs{bs}" for lay in ("channels_last", "default_layout") for bs in BARE_BATCH_SIZES]
    full += BREAKDOWN
    print(f"[{headline}] full set: {images} images at {IMAGE_SIZE} px, best of {reps}", file=sys.stderr)
    results = {headline: run_child(headline, full, images, reps)}
    head = results[headline]
    if "error" in head:
        raise SystemExit(f"{headline}: {head['error']}")
    ips = head["images_per_s"]
    best_cl = max(BARE_BATCH_SIZES, key=lambda bs: ips[f"bare_channels_last_bs{bs}"])
    best_nchw = max(BARE_BATCH_SIZES, key=lambda bs: ips[f"bare_default_layout_bs{bs}"])
    best_bare = f"bare_channels_last_bs{best_cl}"
    for config in configs:
        if config == headline:
            continue
        print(f"[{config}] {ALLOC_BARE}, tl_run_inference and train_bs32", file=sys.stderr)
        results[config] = run_child(config, [ALLOC_BARE, "tl_run_inference", "train_bs32"], images, reps)

    def get(config: str, variant: str) -> float | None:
        return results.get(config, {}).get("images_per_s", {}).get(variant)

    tl = ips["tl_cached_features"]
    ratios: dict[str, Any] = {
        "transferlab_cached_features_vs_best_bare": ratio(tl, ips[best_bare]),
        "transferlab_run_inference_vs_best_bare": ratio(ips["tl_run_inference"], ips[best_bare]),
        "transferlab_cached_features_vs_bare_same_batch": ratio(tl, ips[ALLOC_BARE]),
        "transferlab_run_inference_bs64_vs_best_bare": ratio(ips["tl_run_inference_bs64"], ips[best_bare]),
        "transferlab_run_inference_vs_bare_same_batch": ratio(ips["tl_run_inference"], ips[ALLOC_BARE]),
        "bare_channels_last_vs_default_layout_best": ratio(ips[best_bare], ips[f"bare_default_layout_bs{best_nchw}"]),
        "bare_channels_last_vs_default_layout_per_batch": {
            str(bs): ratio(ips[f"bare_channels_last_bs{bs}"], ips[f"bare_default_layout_bs{bs}"])
            for bs in BARE_BATCH_SIZES
        },
        "allocator_vs_glibc": {
            config: {
                "bare": ratio(get(config, ALLOC_BARE), get("glibc", ALLOC_BARE)),
                "transferlab_run_inference": ratio(get(config, "tl_run_inference"), get("glibc", "tl_run_inference")),
                "train": ratio(get(config, "train_bs32"), get("glibc", "train_bs32")),
            }
            for config in configs
        },
        "transferlab_run_inference_vs_bare_same_batch_per_allocator": {
            config: ratio(get(config, "tl_run_inference"), get(config, ALLOC_BARE)) for config in configs
        },
    }
    headline_ratio = ratios["transferlab_cached_features_vs_best_bare"]
    best_s = {k: min(v) for k, v in head["times_s"].items()}
    breakdown = {
        "seconds_per_pass_of_images": {k: round(v, 4) for k, v in best_s.items()},
        "share_of_tl_cached_features": {
            "transferlab_batch_vs_best_bare": round((best_s[ALLOC_BARE] - best_s[best_bare])
                                                / best_s["tl_cached_features"], 4),
            "dataloader_collate": round(best_s["tl_loader_only"] / best_s["tl_cached_features"], 4),
            "per_batch_channels_last_copy": round(
                (best_s["tl_loader_channels_last"] - best_s["tl_loader_only"]) / best_s["tl_cached_features"], 4),
            "safetensors_write": round(best_s["tl_save_features"] / best_s["tl_cached_features"], 4),
        },
    }
    machine = dict(head["machine"])
    machine.pop("allocator", None)
    payload = {
        "benchmark": NAME,
        "command": "python benchmarks/overhead.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": machine,
        "library_state": repo_state(),
        "quiet_check": quiet,
        "settings": {
            "data": f"{DATA} (training split, first {images} images, eval transform)",
            "image_size": IMAGE_SIZE,
            "images": images,
            "reps": reps,
            "timing": "best of reps, time.perf_counter, after 2 warm-up calls per variant; variants interleaved",
            "source": "efficientnet_lite0 (timm tf_efficientnet_lite0, packaged ImageNet weights)",
            "transferlab_batch_size": head["transferlab_batch_size"],
            "bare_batch_sizes": list(BARE_BATCH_SIZES),
            "bare_computation": (
                "forward_features + forward_head(pre_logits=True): blocks and global pooling, as the prefix"
                if head["prefix_includes_pooling"]
                else "forward_features: every block, no pooling, as the prefix"
            ),
            "feature_shape": head["feature_shape"],
            "headline_allocator": headline,
            "best_bare": best_bare,
            "allocator_comparison": f"{ALLOC_BARE}, tl_run_inference (both batch {TL_BATCH}) and train_bs32 in every "
                                    "configuration",
        },
        "configs": results,
        "ratios": ratios,
        "transferlab_path_breakdown": breakdown,
        "target": {"transferlab_cached_features_vs_best_bare": TARGET},
        "meets_target": headline_ratio is not None and headline_ratio >= TARGET,
        "foreign_cpu": foreign.report(),
    }
    contaminated = [
        f"{config}/{variant} ({share:.0%})"
        for config, res in results.items()
        for variant, share in res.get("foreign_cpu_share_of_best_pass", {}).items()
        if share > 0.05 and variant not in BREAKDOWN  # those passes last milliseconds: too short to judge
    ]
    payload["contaminated_best_passes"] = contaminated
    path = write_json(NAME + ("_quick" if args.quick else ""), payload, args.out)

    rows = []
    for config, res in results.items():
        if "error" in res:
            rows.append([config, "ERROR: " + res["error"], "", ""])
            continue
        for variant, value in res["images_per_s"].items():
            times = ", ".join(f"{t:.3f}" for t in res["times_s"][variant])
            rows.append([config, variant, "-" if variant in BREAKDOWN else f"{value:.0f}", times])
    print(table(rows, ["allocator", "variant", "images/s", "times (s)"]))
    print()
    flat = [
        ["transferlab cached_features / best bare", headline_ratio, f">= {TARGET}"],
        ["transferlab run_inference / best bare", ratios["transferlab_run_inference_vs_best_bare"], ""],
        [f"transferlab run_inference / bare, both batch {TL_BATCH}",
         ratios["transferlab_run_inference_vs_bare_same_batch"], ""],
        ["transferlab run_inference at batch 64 / best bare",
         ratios["transferlab_run_inference_bs64_vs_best_bare"], ""],
        ["bare channels_last / default layout (best vs best)", ratios["bare_channels_last_vs_default_layout_best"], ""],
    ]
    for config, r in ratios["allocator_vs_glibc"].items():
        flat.append([f"{config} / glibc: bare, transferlab, training",
                     f"{r['bare']}, {r['transferlab_run_inference']}, {r['train']}", ""])
    header = [f"ratio ({headline}; best bare = {best_bare})", "value", "target"]
    print(table([[a, str(b), c] for a, b, c in flat], header))
    if contaminated:
        print(f"\nwarning: other processes used >5% of the CPUs during these best passes: {', '.join(contaminated)}")
    print(f"\nwrote {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 images, 1 rep")
    parser.add_argument("--images", type=int, help=f"images per timed pass (default {IMAGES})")
    parser.add_argument("--reps", type=int, help="timed repetitions per variant (default 3)")
    parser.add_argument("--out", type=Path, help="JSON file to write (default benchmarks/results/overhead.json)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for other processes to go quiet before starting (default 120)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        result = child(json.loads(arguments.child))
        arguments.child_out.write_text(json.dumps(result))
    else:
        main(arguments)
