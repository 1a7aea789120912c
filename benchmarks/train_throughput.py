"""Training throughput: transferlab's `finetune` against a bare PyTorch loop, and the effect of its speed options.

Fine-tuning EfficientNet-Lite0 (ImageNet weights) on the bundled Fashion-MNIST classes 5-9 at 96 px, batch 32:

* ``transferlab``: ``api.fit(strategy="finetune")`` with its defaults (channels_last, fixed BatchNorm statistics,
  AdamW over two parameter groups, cosine schedule, light augmentation, a validation pass every epoch);
* ``bare``: the loop of the PyTorch fine-tuning tutorial written by hand over the same images, transforms, model,
  parameter groups, optimiser, schedule, batch size and validation pass, without Lightning (default memory
  layout, and again with channels_last);
* option variants of transferlab: ``--no-channels-last``, ``--compile``, ``--precision bf16-mixed``,
  ``--num-workers 2``, ``--deterministic`` and, on a GPU, ``--pin-memory`` and ``--precision 16-mixed``.

Throughput is training images per second over whole epochs, validation included, from the second epoch on
(the first one pays for warm-up and, with ``--compile``, for compilation, reported separately). Every variant runs
in its own process, under the allocator the ``transferlab`` CLI would use; the three main variants run ``--reps``
times interleaved and the best counts; ratios come from one run of this script.

    .venv/bin/python benchmarks/train_throughput.py              # CPU: ~10 minutes on 2 cores
    .venv/bin/python benchmarks/train_throughput.py --quick      # smoke run
    .venv/bin/python benchmarks/train_throughput.py --device gpu # on a GPU machine (auto: when nvidia-smi exists)

Writes ``benchmarks/results/train_throughput_{cpu,gpu}.json``.
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
IMAGE_SIZE = 96
BATCH = 32
TARGET = 0.9


def _data(per_class: int):
    from transferlab.data import load_images

    return load_images(DATA, seed=0, per_class=per_class, eval_per_class=20)


def child_transferlab(per_class: int | None, epochs: int, accelerator: str, options: dict[str, Any],
                      image_size: int = IMAGE_SIZE, batch_size: int = BATCH) -> dict[str, Any]:
    from transferlab import api

    out = Path(tempfile.mkdtemp()) / "run"
    _reset_peak_memory(accelerator)
    try:
        tick = time.perf_counter()
        result = api.fit(f"{DATA}", out=out, source="efficientnet_lite0", strategy="finetune", epochs=epochs,
                         batch_size=batch_size, image_size=image_size, per_class=per_class, eval_per_class=20,
                         progress=False, accelerator=accelerator, **options)
        total = time.perf_counter() - tick
        walls = [row["wall_seconds"] for row in result.epochs]
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return {"epoch_wall_s": walls, "process_wall_s": total, "train_images": len(_data(per_class).train),
            "val_accuracy": result.epochs[-1]["val_accuracy"], **_peak_memory(accelerator)}


def _reset_peak_memory(accelerator: str) -> None:
    if accelerator == "gpu":
        import gc

        import torch

        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(accelerator: str) -> dict[str, float]:
    """Peak GPU memory PyTorch allocated since the last reset, in GiB (nothing on the CPU)."""
    if accelerator != "gpu":
        return {}
    import torch

    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def child_bare(per_class: int | None, epochs: int, accelerator: str, channels_last: bool,
               image_size: int = IMAGE_SIZE, batch_size: int = BATCH, precision: str = "32", num_workers: int = 0,
               pin_memory: bool = False) -> dict[str, Any]:
    """The tutorial loop, by hand (with ``torch.autocast``, and a GradScaler for float16, in mixed precision)."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from transferlab.data import SplitDataset as ImageDataset
    from transferlab.sources import load_source
    from transferlab.transfer.model import build_model

    torch.manual_seed(0)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    data = _data(per_class)
    source = load_source("efficientnet_lite0")
    pre = source.preprocessing.resized(image_size)
    model = build_model(source, len(data.classes), None, pretrained=True)
    n_blocks = len(model.blocks)
    model.freeze(0, bn=n_blocks)  # the reused BatchNorm statistics stay fixed, as in transferlab's finetune
    _reset_peak_memory(accelerator)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    backbone = [p for b in model.blocks for p in b.parameters()]
    opt = torch.optim.AdamW([{"params": backbone, "lr": 1e-4}, {"params": model.head.parameters(), "lr": 1e-3}],
                            weight_decay=1e-4)
    workers = {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": num_workers > 0}
    train = DataLoader(ImageDataset(data.train, pre.transform(augment=True)), batch_size=batch_size, shuffle=True,
                       **workers)
    val = DataLoader(ImageDataset(data.val, pre.transform(augment=False)), batch_size=max(batch_size, 64), **workers)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train))
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    walls = []
    tick = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=pin_memory), y.to(device, non_blocking=pin_memory)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad()
            with autocast():
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
        model.eval()
        correct = 0
        with torch.no_grad(), autocast():
            for x, y in val:
                x = x.to(device, non_blocking=pin_memory)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                correct += int((model(x).argmax(1).cpu() == y).sum())
        walls.append(time.perf_counter() - tick)
    return {"epoch_wall_s": walls, "train_images": len(data.train), "val_accuracy": correct / len(data.val),
            **_peak_memory(accelerator)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=2, help="Interleaved repetitions of the three main variants.")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        fn = child_bare if spec.pop("kind") == "bare" else child_transferlab
        print(json.dumps(fn(**spec)))
        return
    reexec_like_cli(__file__, sys.argv[1:])
    gpu = args.device == "gpu" or (args.device == "auto" and shutil.which("nvidia-smi") is not None)
    accelerator = "gpu" if gpu else "cpu"
    per_class, option_per_class, epochs = (12, 8, 2) if args.quick else (100, 40, 3)
    quiet = wait_until_quiet(0 if args.quick else 120)
    foreign = ForeignCPU()
    variants: dict[str, dict[str, Any]] = {
        "transferlab": {"kind": "tl", "per_class": per_class, "epochs": epochs, "options": {}},
        "bare": {"kind": "bare", "per_class": per_class, "epochs": epochs, "channels_last": False},
        "bare_channels_last": {"kind": "bare", "per_class": per_class, "epochs": epochs, "channels_last": True},
    }
    options = {
        "default": {}, "no_channels_last": {"channels_last": False}, "compile": {"compile": True},
        "bf16_mixed": {"precision": "bf16-mixed"}, "workers_2": {"num_workers": 2},
        "deterministic": {"deterministic": True},
    }
    if gpu:
        options |= {"pin_memory": {"pin_memory": True}, "fp16_mixed": {"precision": "16-mixed"}}
    for name, opt in options.items():
        variants[f"option_{name}"] = {"kind": "tl", "per_class": option_per_class, "epochs": epochs, "options": opt}
    results: dict[str, dict[str, Any]] = {}
    main_variants = ["transferlab", "bare", "bare_channels_last"]
    order = main_variants * (1 if args.quick else args.reps) + [n for n in variants if n not in main_variants]
    for name in order:  # the main variants interleaved, the best repetition counts
        print(f"{name} ...", file=sys.stderr, flush=True)
        r = run_json_child(__file__, name, {**variants[name], "accelerator": accelerator})
        r["images_per_s"] = epoch_throughput(r)
        runs = results.get(name, {}).get("all_images_per_s", []) + [r["images_per_s"]]
        if name not in results or r["images_per_s"] > results[name]["images_per_s"]:
            results[name] = r
        results[name]["all_images_per_s"] = runs
    base = results["option_default"]["images_per_s"]
    ratios = {
        "transferlab_over_bare": results["transferlab"]["images_per_s"] / results["bare"]["images_per_s"],
        "transferlab_over_bare_channels_last": (
            results["transferlab"]["images_per_s"] / results["bare_channels_last"]["images_per_s"]),
        **{f"{name}_over_default": results[f"option_{name}"]["images_per_s"] / base
           for name in options if name != "default"},
    }
    compile_first = results["option_compile"]["epoch_wall_s"][0] - results["option_default"]["epoch_wall_s"][0]
    payload = {
        "what": "fine-tuning efficientnet_lite0 at 96 px, batch 32: training images/s (validation included), "
                "from the second epoch on",
        "accelerator": accelerator, "epochs": epochs, "per_class": per_class, "option_per_class": option_per_class,
        "target_transferlab_over_bare": TARGET, "met": ratios["transferlab_over_bare"] >= TARGET,
        "ratios": ratios, "compile_extra_first_epoch_s": compile_first, "variants": results,
        "machine": machine_info(), "repo": repo_state(), "quiet_start": quiet, "foreign_cpu": foreign.report(),
        "quick": args.quick,
    }
    path = write_json(f"train_throughput_{'gpu' if gpu else 'cpu'}" + ("_quick" if args.quick else ""), payload)
    rows = [[name, f"{r['images_per_s']:.1f}"] for name, r in results.items()]
    print(table(rows, ["variant", "train images/s"]))
    print(table([[k, f"{v:.3f}"] for k, v in ratios.items()], ["ratio", "value"]))
    print(f"transferlab / bare loop: {ratios['transferlab_over_bare']:.3f} (target {TARGET}); written to {path}")


if __name__ == "__main__":
    main()
