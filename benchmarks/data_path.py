"""The data path: how close `fit` comes to the same model trained on tensors already decoded and in memory.

Fine-tuning EfficientNet-Lite0 (ImageNet weights, transferlab's `finetune`: light augmentation, channels_last,
fixed BatchNorm statistics, AdamW, batch 32) on the bundled Fashion-MNIST classes 5-9, at 64 and at 224 px:

* ``fit``: ``api.fit`` with its defaults: images decoded once into the cache (data/decoded.py), crops and flips
  drawn per example and applied to the batch on the device;
* ``fit_decode_every_epoch``: the same with the store switched off, as before it existed (PIL in every epoch);
* ``model_ceiling``: the same model, optimiser, batch size and validation pass in a bare loop over the training
  images decoded, resized and normalised beforehand (no augmentation, no loader): the most any data path can give.

Throughput is training images per second over whole epochs, validation included, from the second epoch on (the
first pays for warm-up and for building the store). Each variant runs in its own process; ratios come from one run
of this script. ``fit_over_model_ceiling`` is the target's ratio (issue: at least 0.85 at 64 px on the CPU).

    .venv/bin/python benchmarks/data_path.py            # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/data_path.py --quick    # smoke run
    # on a GPU (benchmarks/gpu_check.sh runs this): ViT-B/16 from scratch in bf16, with its MFU
    python benchmarks/data_path.py --device gpu --source scratch:timm:vit_base_patch16_224 --strategy scratch \
        --sizes 224 --batch 128 --precision bf16-mixed --peak-tflops 989

Writes ``benchmarks/results/data_path_{cpu,gpu}.json`` (or ``--out``). ``first_over_steady_epoch`` is the first
epoch's wall time (building the store included, on a cold cache) over a later one's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ForeignCPU,
    epoch_throughput,
    machine_info,
    reexec_like_cli,
    repo_state,
    run_json_child,
    table,
    wait_until_quiet,
    write_json,
)

DATA = "fashion-mnist:classes=5-9"
BATCH = 32
TARGET = 0.85


def child_fit(per_class: int | None, epochs: int, size: int, accelerator: str, store: bool, source: str,
              strategy: str, batch: int, precision: str, cudnn_benchmark: bool) -> dict[str, Any]:
    import torch

    from transferlab import api
    from transferlab.sources.base import ImagePreprocessing

    torch.backends.cudnn.benchmark = cudnn_benchmark  # Lightning's Trainer leaves it as set (benchmark=None)
    if not store:  # the path before the store: every epoch decodes and resizes with PIL
        ImagePreprocessing.dataset = lambda self, split, augment=False: None
    out = Path(tempfile.mkdtemp()) / "run"
    try:
        result = api.fit(DATA, out=out, source=source, strategy=strategy, epochs=epochs, min_steps=0,
                         batch_size=batch, image_size=size, per_class=per_class, eval_per_class=20, progress=False,
                         accelerator=accelerator, precision=precision)
        walls = [row["wall_seconds"] for row in result.epochs]
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return {"epoch_wall_s": walls, "train_images": _sizes(per_class)[0]}


def _sizes(per_class: int | None) -> tuple[int, int]:
    from transferlab.data import load_images

    data = load_images(DATA, seed=0, per_class=per_class, eval_per_class=20)
    return len(data.train), len(data.val)


def child_ceiling(per_class: int | None, epochs: int, size: int, accelerator: str, source: str, strategy: str,
                  batch: int, precision: str, cudnn_benchmark: bool) -> dict[str, Any]:
    """The model's own speed: fit's network, freezing, layout and autocast over tensors already on the device."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from transferlab.data import SplitDataset, load_images
    from transferlab.sources import load_source
    from transferlab.transfer.model import build_model

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    data = load_images(DATA, seed=0, per_class=per_class, eval_per_class=20)
    src = load_source(source)
    pre = src.preprocessing.resized(size)

    def tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        ds = SplitDataset(split, pre.transform(False))
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return torch.stack(xs).to(device), torch.tensor(ys, device=device)

    (xt, yt), (xv, _) = tensors(data.train), tensors(data.val)
    model = build_model(src, len(data.classes), None, pretrained=strategy != "scratch")
    if strategy != "scratch":
        model.freeze(0, bn=len(model.blocks))  # finetune keeps the reused BatchNorm statistics
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    with FlopCounterMode(display=False) as flops, torch.no_grad(), autocast():
        model.eval()(xt[:1].contiguous(memory_format=torch.channels_last))
    walls, tick = [], time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), device=device).split(batch):
            opt.zero_grad()
            with autocast():
                loss = F.cross_entropy(model(xt[idx].contiguous(memory_format=torch.channels_last)), yt[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), autocast():
            for x in xv.split(max(batch, 64)):
                model(x.contiguous(memory_format=torch.channels_last)).argmax(1).cpu()
        walls.append(time.perf_counter() - tick)
    return {"epoch_wall_s": walls, "train_images": len(xt), "forward_flop_per_image": flops.get_total_flops()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--source", default="efficientnet_lite0")
    parser.add_argument("--strategy", default="finetune")
    parser.add_argument("--sizes", default="64,224", help="input sizes in px (per class: all at 64, else 100)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak at --precision: adds the MFU")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark on (a kernel "
                        "search per new input shape: the partial last batch, the first evaluation batch)")
    parser.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/data_path_<device>.json)")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        kind = spec.pop("kind")
        print(json.dumps(child_ceiling(**spec) if kind == "ceiling" else child_fit(**spec, store=kind == "fit")))
        return
    reexec_like_cli(__file__, sys.argv[1:])
    gpu = args.device == "gpu" or (args.device == "auto" and shutil.which("nvidia-smi") is not None)
    accelerator = "gpu" if gpu else "cpu"
    epochs = 2 if args.quick else 3
    sizes = {int(s): 4 if args.quick else None if int(s) <= 64 else 100 for s in args.sizes.split(",")}
    quiet = wait_until_quiet(0 if args.quick else 120)
    foreign = ForeignCPU()
    results: dict[str, dict[str, Any]] = {}
    common = {"epochs": epochs, "accelerator": accelerator, "source": args.source, "strategy": args.strategy,
              "batch": args.batch, "precision": args.precision, "cudnn_benchmark": args.cudnn_benchmark}
    with tempfile.TemporaryDirectory() as cache:  # a cold cache: the first epoch builds the store
        for size, per_class in sizes.items():
            for kind in ("fit", "fit_decode_every_epoch", "model_ceiling"):
                name = f"{kind}_{size}px"
                print(f"{name} ...", file=sys.stderr, flush=True)
                spec = {"kind": kind.removeprefix("model_"), "per_class": per_class, "size": size, **common}
                results[name] = run_json_child(__file__, name, spec, {"TRANSFERLAB_CACHE_DIR": cache})
                results[name]["images_per_s"] = epoch_throughput(results[name])
                shutil.rmtree(Path(cache) / "decoded", ignore_errors=True)
    ratios: dict[str, float] = {}
    for size in sizes:
        fit, ceiling = results[f"fit_{size}px"], results[f"model_ceiling_{size}px"]
        ratios[f"fit_over_model_ceiling_{size}px"] = fit["images_per_s"] / ceiling["images_per_s"]
        ratios[f"decode_every_epoch_over_model_ceiling_{size}px"] = (
            results[f"fit_decode_every_epoch_{size}px"]["images_per_s"] / ceiling["images_per_s"])
        steady = (fit["epoch_wall_s"][-1] - fit["epoch_wall_s"][0]) / (epochs - 1)
        ratios[f"first_over_steady_epoch_{size}px"] = fit["epoch_wall_s"][0] / steady
        if args.peak_tflops:  # a training step taken as three forward passes
            flop = 3 * ceiling["forward_flop_per_image"]
            ratios[f"fit_mfu_{size}px"] = fit["images_per_s"] * flop / (args.peak_tflops * 1e12)
            ratios[f"model_ceiling_mfu_{size}px"] = ceiling["images_per_s"] * flop / (args.peak_tflops * 1e12)
    first = min(sizes)
    payload = {
        "what": f"{args.strategy} of {args.source}, batch {args.batch}, precision {args.precision}: training "
                "images/s (validation included) from the second epoch on, fit against the same model on tensors "
                "decoded beforehand",
        "accelerator": accelerator, "epochs": epochs, "per_class": {str(k): v for k, v in sizes.items()},
        "cudnn_benchmark": args.cudnn_benchmark,
        "fit_over_model_ceiling": ratios[f"fit_over_model_ceiling_{first}px"], "at_px": first, "target": TARGET,
        "met": ratios[f"fit_over_model_ceiling_{first}px"] >= TARGET, "ratios": ratios, "variants": results,
        "machine": machine_info(), "repo": repo_state(), "quiet_start": quiet, "foreign_cpu": foreign.report(),
        "quick": args.quick, "command": " ".join(["python", "benchmarks/data_path.py", *sys.argv[1:]]),
    }
    name = f"data_path_{'gpu' if gpu else 'cpu'}" + ("_quick" if args.quick else "")
    path = write_json(name, payload, args.out)
    print(table([[n, f"{r['images_per_s']:.1f}"] for n, r in results.items()], ["variant", "train images/s"]))
    print(table([[k, f"{v:.3f}"] for k, v in ratios.items()], ["ratio", "value"]))
    print(f"fit / model ceiling at {first} px: {payload['fit_over_model_ceiling']:.3f} (target {TARGET}); "
          f"written to {path}")


if __name__ == "__main__":
    main()
