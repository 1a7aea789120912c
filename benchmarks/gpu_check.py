"""The GPU check: run every GPU path once and measure, in one run of under 8 minutes on one H100.

Stages, most valuable first. Each runs in its own process group with its own time cap (a hang costs only that
stage, and what it measured before the cap is kept); the JSON is rewritten after every stage:

1. ``tests``: the tests marked ``gpu`` (tests/train/test_gpu.py), with the GPU visible;
2. ``train``: ``fit --strategy finetune`` of EfficientNet-Lite0 at 224 px in ``32``, ``16-mixed`` and
   ``bf16-mixed``, each against the bare PyTorch loop of ``train_throughput.py`` with the same model, data,
   transforms, batch size, workers and precision, one after the other in one process; then ``bf16-mixed`` at
   batch 256, and the bare model without a data loader at 256 and 512 (its own ceiling). Images/s
   (whole epochs from the second on, validation included), peak GPU memory, and the fraction of the card's
   dense bf16 peak from a FLOP count of one training step (``torch.utils.flop_counter``);
3. ``extract``: feature extraction images/s: transferlab's ``cached_features`` / ``run_inference`` against a
   bare timm loop on the same 224 px tensors, and ``fit``'s own extraction path (PIL decoding and transforms);
4. ``compare``: ``transferlab demo`` (``compare`` on the bundled data as the demo runs it), with its wall time;
5. ``suite``: with the time left, the rest of the test suite with the GPU visible.

Without a CUDA GPU it says so and makes a dry run at tiny sizes on the CPU: that checks the script, it measures
nothing. ``benchmarks/gpu_check.sh`` runs this and keeps the log next to the JSON.

    benchmarks/gpu_check.sh                                   # writes benchmarks/results/gpu_check_<gpu>.json|.log
    .venv/bin/python benchmarks/gpu_check.py --stages train   # one stage
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import RESULTS, machine_info, repo_state, table, write_json  # noqa: E402

STAGES = ("tests", "train", "extract", "compare", "suite")
# seconds, at most; from the H200 runs of benchmarks/results/gpu_check_nvidia_h200*.json: the gpu tests ~155 s in
# one process (the DDP test alone 53 s), the train stage ~170 s for 7 of its 10 runs, extract 33 s, the demo 130 s
CAPS = {"tests": 100, "train": 190, "extract": 45, "compare": 150, "suite": 120}
DRY_CAPS = {"tests": 60, "train": 150, "extract": 60, "compare": 120}
BUDGET_S = 470  # the whole run, under the 8 minutes
TARGET_RATIO = 0.9
TARGET_PEAK_FRACTION = 0.30
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets (the "with sparsity" figures halved).
DENSE_BF16_TFLOPS = (
    ("H100 PCIe", 756.0, "NVIDIA H100 data sheet, PCIe: 1,513 TFLOP/s bf16 with sparsity"),
    ("H100 NVL", 835.0, "NVIDIA H100 data sheet, NVL: 1,671 TFLOP/s bf16 with sparsity"),
    ("H100", 989.4, "NVIDIA H100 data sheet, SXM: 1,979 TFLOP/s bf16 with sparsity"),
    ("H200", 989.4, "NVIDIA H200 data sheet, SXM: 1,979 TFLOP/s bf16 with sparsity"),
    ("A100", 312.0, "NVIDIA A100 data sheet: 312 TFLOP/s bf16 dense"),
)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- stage: train ---------------------------------------------------------------------------------------------


def dense_peak(name: str) -> tuple[float | None, str]:
    for key, tflops, source in DENSE_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops, source
    return None, "unknown card: no data-sheet peak"


def measured_matmul_peak() -> float:
    """bf16 TFLOP/s of an 8192^3 matrix product (mean of 10 after 3 warm-ups): what the card really reaches."""
    import torch

    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def lite0_model(classes: int, device: str):
    """EfficientNet-Lite0 as the bare loop builds it (ImageNet weights, BatchNorm statistics fixed)."""
    from transferlab.sources import load_source
    from transferlab.transfer.model import build_model

    model = build_model(load_source("efficientnet_lite0"), classes, None, pretrained=True)
    model.freeze(0, bn=len(model.blocks))
    return model.to(device)


def flop_count(image_size: int, device: str) -> dict[str, float]:
    """FLOPs per image of a forward pass, counted by PyTorch; a training step counts as 3 forward passes.

    (``FlopCounterMode`` also counts a whole step, kept for the record, but it overcounts the backward pass of
    depthwise convolutions by their channel count: 76.7 MFLOP instead of 2.4 for a 64-channel 3x3 depthwise
    convolution at 32x32, so its step count is ~40x the forward pass instead of ~3x.)
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    model = lite0_model(5, device).train()
    x = torch.randn(2, 3, image_size, image_size, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model(x)
    with FlopCounterMode(display=False) as step:
        F.cross_entropy(model(x), y).backward()
    forward = fwd.get_total_flops() / 2 / 1e9
    return {"forward_gflop_per_image": forward, "train_step_gflop_per_image": 3 * forward,
            "flop_counter_train_step_gflop_per_image": step.get_total_flops() / 2 / 1e9}


def synthetic_loop(batch: int, image_size: int, steps: int, precision: str) -> dict[str, float]:
    """The bare model's own training speed: random tensors already on the GPU, no data loader, channels_last."""
    import torch
    import torch.nn.functional as F

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = lite0_model(5, "cuda").to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (batch,), device="cuda")
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"images_per_s": batch * steps / wall, "batch_size": batch, "steps": steps,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def instrument_fit() -> list[tuple[str, int, float]]:
    """Timestamps inside transferlab's fit (seconds from on_fit_start) and checkpoint-save durations: where a
    fit's time goes, without changing what it does (wrappers around MetricsCSV's hooks and Trainer.save_checkpoint)."""
    import lightning.pytorch as pl

    import transferlab.train.callbacks as engine

    events: list[tuple[str, int, float]] = []
    t0 = [time.perf_counter()]

    def mark(name: str, epoch: int) -> None:
        events.append((name, epoch, round(time.perf_counter() - t0[0], 4)))

    real_save = pl.Trainer.save_checkpoint

    def save_checkpoint(self, *a, **k):
        start = time.perf_counter()
        try:
            return real_save(self, *a, **k)
        finally:
            events.append(("checkpoint_save_s", self.current_epoch, round(time.perf_counter() - start, 4)))

    pl.Trainer.save_checkpoint = save_checkpoint
    cls = engine.MetricsCSV
    real_fit_start, real_epoch_end = cls.on_fit_start, cls.on_train_epoch_end

    def on_fit_start(self, trainer, module):
        t0[0] = time.perf_counter()
        real_fit_start(self, trainer, module)

    def on_train_epoch_end(self, trainer, module):
        mark("train_epoch_end", trainer.current_epoch)
        real_epoch_end(self, trainer, module)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx < 3:
            mark(f"batch{batch_idx}_start", trainer.current_epoch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx < 3:
            mark(f"batch{batch_idx}_end", trainer.current_epoch)

    cls.on_fit_start, cls.on_train_epoch_end = on_fit_start, on_train_epoch_end
    cls.on_train_batch_start, cls.on_train_batch_end = on_train_batch_start, on_train_batch_end
    cls.on_train_epoch_start = lambda self, trainer, module: mark("train_epoch_start", trainer.current_epoch)
    cls.on_validation_start = lambda self, trainer, module: mark("validation_start", trainer.current_epoch)
    cls.on_validation_end = lambda self, trainer, module: mark("validation_end", trainer.current_epoch)
    return events


def stage_train(spec: dict[str, Any], result: dict[str, Any], save) -> None:
    import torch
    import train_throughput as tt

    gpu, size, epochs, per_class = spec["gpu"], spec["image_size"], spec["epochs"], spec["per_class"]
    accelerator = "gpu" if gpu else "cpu"
    workers, small, large = spec["num_workers"], spec["batch"], spec["large_batch"]
    result["settings"] = {
        "model": "efficientnet_lite0 (ImageNet), fit --strategy finetune, BatchNorm statistics fixed",
        "data": f"{tt.DATA} (bundled), per_class={per_class}, 20 val images per class",
        "image_size": size, "epochs": epochs, "num_workers": workers, "pin_memory": gpu,
        "throughput": "training images/s over whole epochs from the second on, validation included",
        "bare_loop": "train_throughput.child_bare: same model, transforms, parameter groups, AdamW, cosine "
                     "schedule, batch size, workers, channels_last and autocast (+ GradScaler for 16-mixed)",
    }
    if gpu:
        name = torch.cuda.get_device_name(0)
        peak, source = dense_peak(name)
        result["peak"] = {"device": name, "dense_bf16_tflops_datasheet": peak, "datasheet_source": source,
                          "measured_bf16_matmul_tflops": round(measured_matmul_peak(), 1),
                          "measured_how": "8192x8192x8192 bf16 torch.matmul, mean of 10 after 3 warm-ups"}
        log(f"bf16 peak: data sheet {peak} TFLOP/s, measured matmul {result['peak']['measured_bf16_matmul_tflops']}")
    flops = flop_count(size, "cuda" if gpu else "cpu")
    result["flops"] = {**flops, "how": "torch.utils.flop_counter.FlopCounterMode over a forward pass at batch 2, "
                       "halved (a multiply-add counts as 2 FLOPs); a training step = 3 forward passes (the "
                       "counter's own step count overcounts depthwise backward passes, see flop_count)"}
    log(f"FLOPs: forward {flops['forward_gflop_per_image']:.3f} GFLOP/image, "
        f"training step {flops['train_step_gflop_per_image']:.3f} GFLOP/image")
    save()
    options = {"num_workers": workers}
    plan = []
    for precision in ("32", "16-mixed", "bf16-mixed"):
        if precision == "16-mixed" and not gpu:
            continue  # refused on the CPU
        plan += [(f"transferlab_{precision}_b{small}", "tl", precision, small),
                 (f"bare_{precision}_b{small}", "bare", precision, small)]
    plan += [(f"transferlab_bf16-mixed_b{large}", "tl", "bf16-mixed", large),
             (f"bare_bf16-mixed_b{large}", "bare", "bf16-mixed", large)]
    if gpu:
        plan += [(f"synthetic_bf16-mixed_b{b}", "synthetic", "bf16-mixed", b) for b in (large, 2 * large)]
    if spec.get("only"):  # a subset, in the order given
        by_name = {p[0]: p for p in plan}
        plan = [by_name[n] for n in spec["only"]]
    probe = instrument_fit()
    runs: dict[str, Any] = result.setdefault("runs", {})
    for name, kind, precision, batch in plan:
        log(f"train: {name} ...")
        t0 = time.perf_counter()
        probe.clear()
        if kind == "tl":
            r = tt.child_transferlab(per_class, epochs, accelerator, {**options, "precision": precision},
                                     image_size=size, batch_size=batch)
        elif kind == "bare":
            r = tt.child_bare(per_class, epochs, accelerator, True, image_size=size, batch_size=batch,
                              precision=precision, num_workers=workers, pin_memory=gpu)
        else:
            r = synthetic_loop(batch, size, spec["synthetic_steps"], precision)
        if kind != "synthetic":
            r["images_per_s"] = tt.throughput(r)
        if probe:
            r["fit_events"] = list(probe)
            r["checkpoint_s"] = [round(sec, 3) for name, _, sec in probe if name == "checkpoint_save_s"]
        if "process_wall_s" in r:  # data and source loading, model building, the final test pass, the files
            r["outside_epochs_s"] = r["process_wall_s"] - r["epoch_wall_s"][-1]
        r.update(precision=precision, batch_size=batch, wall_s=round(time.perf_counter() - t0, 2))
        r["tflops"] = r["images_per_s"] * flops["train_step_gflop_per_image"] / 1e3
        if gpu and result["peak"]["dense_bf16_tflops_datasheet"]:
            r["fraction_of_dense_bf16_peak"] = r["tflops"] / result["peak"]["dense_bf16_tflops_datasheet"]
            r["fraction_of_measured_matmul_peak"] = r["tflops"] / result["peak"]["measured_bf16_matmul_tflops"]
        runs[name] = r
        mem = f", peak {r['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in r else ""
        log(f"train: {name}: {r['images_per_s']:.0f} images/s, {r['tflops']:.2f} TFLOP/s{mem} ({r['wall_s']} s)")
        ratios = {}
        for precision_b in {(p, b) for _, _, p, b in plan}:
            tl, bare = (runs.get(f"{k}_{precision_b[0]}_b{precision_b[1]}") for k in ("transferlab", "bare"))
            if tl and bare:
                ratios[f"{precision_b[0]}_b{precision_b[1]}"] = tl["images_per_s"] / bare["images_per_s"]
        result["transferlab_over_bare"] = ratios
        result["target_ratio"] = TARGET_RATIO
        result["ratio_target_met"] = bool(ratios) and all(v >= TARGET_RATIO for v in ratios.values())
        save()


# --- stage: extract -------------------------------------------------------------------------------------------


def stage_extract(spec: dict[str, Any], result: dict[str, Any], save) -> None:
    import numpy as np
    import timm
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from transferlab.config import FitConfig
    from transferlab.data import load_images
    from transferlab.sources import load_source
    from transferlab.train.datamodule import INFERENCE_BATCH, PlainLoaders
    from transferlab.train.features import cache_key, cached_features, run_inference
    from transferlab.transfer.model import build_model
    from transferlab.transfer.strategies import make_strategy

    gpu, n, size, reps = spec["gpu"], spec["images"], spec["image_size"], spec["reps"]
    device = "cuda" if gpu else "cpu"
    tl_batch = max(FitConfig().batch_size, INFERENCE_BATCH)
    data = load_images("fashion-mnist:classes=5-9")
    n = min(n, len(data.train))
    source = load_source("efficientnet_lite0")
    pre = source.preprocessing.resized(size)
    tf = pre.transform(augment=False)
    t0 = time.perf_counter()
    x = torch.stack([tf(data.train.load(i)) for i in range(n)])
    y = torch.as_tensor(np.asarray(data.train.labels[:n]), dtype=torch.long)
    log(f"extract: {n} images at {size} px transformed in {time.perf_counter() - t0:.1f} s")
    reuse = len(source.blocks)
    model = build_model(source, len(data.classes), reuse, pretrained=True)
    make_strategy("frozen").attach(model, reuse, 1e-3)
    prefix = model.prefix(reuse).to(device).to(memory_format=torch.channels_last).eval()
    bare = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    body = [k for k in bare.state_dict() if not k.startswith("classifier.")]
    ours = list(prefix.state_dict().values())
    assert len(body) == len(ours)
    bare.load_state_dict({**bare.state_dict(), **dict(zip(body, ours, strict=True))})
    bare = bare.to(device).to(memory_format=torch.channels_last).eval()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_dev = x_cl.to(device)
    cache_root = Path(tempfile.mkdtemp(prefix="gpu-check-cache-"))
    os.environ["TRANSFERLAB_CACHE_DIR"] = str(cache_root)
    calls = [0]

    def loader(batch: int = tl_batch) -> DataLoader:
        return DataLoader(TensorDataset(x, y), batch_size=batch)

    def tl_cached_features() -> None:  # cold: a new key every time, so it computes and writes
        calls[0] += 1
        feats, hit, _ = cached_features(cache_key(gpu_check=calls[0]), prefix, {"train": loader()}, False)
        assert not hit and len(feats["train"]) == n

    def bare_loop(xs: torch.Tensor, batch: int):
        def run() -> None:
            outs = []
            with torch.inference_mode():
                for i in range(0, n, batch):
                    xb = xs[i : i + batch].to(device)
                    outs.append(bare.forward_head(bare.forward_features(xb), pre_logits=True).float().cpu())
            assert sum(len(o) for o in outs) == n

        return run

    def fit_path(workers: int):
        cfg = FitConfig(num_workers=workers)
        split = {"train": data.train.subset(np.arange(n))}

        def run() -> None:
            calls[0] += 1
            loaders = PlainLoaders(split, pre, cfg)
            cached_features(cache_key(gpu_check=calls[0]), prefix, loaders, False)

        return run

    variants = {
        f"transferlab_cached_features_b{tl_batch}": tl_cached_features,
        f"transferlab_run_inference_b{tl_batch}": lambda: run_inference(prefix, loader()),
        f"bare_b{tl_batch}": bare_loop(x_cl, tl_batch),
        "bare_b256": bare_loop(x_cl, 256),
        "bare_gpu_resident_b256": bare_loop(x_dev, 256),
    }
    with torch.inference_mode():
        ref = bare.forward_head(bare.forward_features(x_dev[:8]), pre_logits=True)
        got = prefix(x_dev[:8])
    result["max_abs_diff_vs_bare"] = float((ref - got).abs().max())
    result["settings"] = {"images": n, "image_size": size, "reps": reps, "transferlab_batch": tl_batch,
                          "precision": "32 (extraction is never autocast)",
                          "inputs": "eval-transformed tensors in CPU memory, as a TensorDataset; bare: slices of "
                                    "one channels_last tensor moved to the device per batch; gpu_resident: "
                                    "already on the device",
                          "fit_path": "cached_features over PlainLoaders (images decoded once into the store): "
                                      "decoding and transforms included, as fit extracts"}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(reps):
        for name, fn in variants.items():
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if gpu:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
        log(f"extract: rep {rep + 1}/{reps}: " + ", ".join(f"{k} {n / v[-1]:.0f}/s" for k, v in times.items()))
    result["images_per_s"] = {k: n / min(v) for k, v in times.items()}
    save()
    for workers in (0, spec["fit_path_workers"]):
        t0 = time.perf_counter()
        fit_path(workers)()
        result["images_per_s"][f"transferlab_fit_path_workers{workers}"] = n / (time.perf_counter() - t0)
        log(f"extract: fit path, {workers} workers: {n / (time.perf_counter() - t0):.0f}/s")
        save()
    ips = result["images_per_s"]
    best_bare = max(ips[f"bare_b{tl_batch}"], ips["bare_b256"])
    result["ratios"] = {
        "cached_features_over_best_bare": ips[f"transferlab_cached_features_b{tl_batch}"] / best_bare,
        "run_inference_over_best_bare": ips[f"transferlab_run_inference_b{tl_batch}"] / best_bare,
        "best_bare_over_gpu_resident": best_bare / ips["bare_gpu_resident_b256"],
    }
    result["target_ratio"] = TARGET_RATIO
    result["ratio_target_met"] = result["ratios"]["cached_features_over_best_bare"] >= TARGET_RATIO
    shutil.rmtree(cache_root, ignore_errors=True)
    save()


# --- stages that run other programs ---------------------------------------------------------------------------


def gpu_env() -> dict[str, str]:
    """The environment with the GPU visible (tests/conftest.py hides GPUs unless CUDA_VISIBLE_DEVICES is set)."""
    env = dict(os.environ)
    if not env.get("CUDA_VISIBLE_DEVICES"):
        env["CUDA_VISIBLE_DEVICES"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]))
    return env


def junit_summary(path: Path) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return {"junit": "missing"}
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            counts["failed"] += 1
            failures.append({"test": name, "message": (bad.get("message") or "")[:600]})
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def run_program(cmd: list[str], cap: float, env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``cmd`` in its own process group, its output to ours; killed (group and all) after ``cap`` seconds."""
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)
    try:
        rc = proc.wait(timeout=max(cap, 1))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc, timed_out = proc.wait(), True
    return {"returncode": rc, "timed_out": timed_out, "wall_s": round(time.perf_counter() - t0, 2)}


def stage_tests(spec: dict[str, Any], result: dict[str, Any], save, cap: float) -> None:
    junit = Path(tempfile.mkdtemp()) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/train/test_gpu.py", "-p", "no:cacheprovider", "-rfEs",
           "--durations=5", f"--junitxml={junit}"] + (["-k", spec["k"]] if spec.get("k") else [])
    if spec.get("workers", 0) > 1:  # independent tests, one GPU: ~155 s in one process, so spread them
        try:
            import xdist  # noqa: F401

            cmd += ["-n", str(spec["workers"])]
        except ImportError:
            pass
    env = {**gpu_env(), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # as `fit --deterministic` sets it, before cuBLAS starts
    result.update(run_program(cmd, cap, env), **junit_summary(junit))


def stage_suite(spec: dict[str, Any], result: dict[str, Any], save, cap: float) -> None:
    """The suite that passes on the CPU, now with the GPU visible (DDP-on-gloo and text tests left out)."""
    junit = Path(tempfile.mkdtemp()) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "tests", "-m", "not gpu", "--ignore=tests/train/test_distributed.py",
           "--ignore=tests/modality/test_text.py", "-k", "not text", "-p", "no:cacheprovider", "-rfE", "-q",
           f"--junitxml={junit}"]
    try:
        import xdist  # noqa: F401

        cmd += ["-n", str(min(8, os.cpu_count() or 1))]
    except ImportError:
        pass
    result.update(run_program(cmd, cap, gpu_env()), **junit_summary(junit))
    result["note"] = ("test_distributed.py (DDP on gloo, --accelerator cpu) and the text tests (their packages "
                      "may be missing on a GPU machine) are left out")


def stage_compare(spec: dict[str, Any], result: dict[str, Any], save, cap: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="gpu-check-demo-"))
    env = {**gpu_env(), "TRANSFERLAB_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    if spec["dry"]:  # the demo's code path at tiny sizes
        args = ["compare", "fashion-mnist:classes=5-9", "--out", str(work / "cmp"), "--arms",
                "scratch,frozen,finetune", "--seeds", "2", "--epochs", "1", "--per-class", "4", "--image-size",
                "32", "--eval-per-class", "4"]
        result["command"] = "transferlab " + " ".join(args)
    else:
        args = ["demo", "--out", str(work / "demo")]
        result["command"] = "transferlab demo (compare fashion-mnist:classes=5-9, arms scratch,frozen,finetune, " \
                            "per_class 10,100, 3 seeds, 4 epochs, 64 px), cold feature cache"
    result.update(run_program([sys.executable, "-m", "transferlab", *args], cap, env))
    found = sorted(work.rglob("results.json"))
    if found:
        res = json.loads(found[0].read_text())
        result["results_keys"] = sorted(res)[:20]
    shutil.rmtree(work, ignore_errors=True)


# --- parent ---------------------------------------------------------------------------------------------------


def gpu_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count, device_count=torch.cuda.device_count(),
                    cudnn=torch.backends.cudnn.version())
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = q.stdout.strip()
    import lightning

    info["lightning"] = lightning.__version__
    return info


def stage_specs(gpu: bool) -> dict[str, dict[str, Any]]:
    if gpu:
        return {
            "train": {"gpu": True, "image_size": 224, "epochs": 4, "per_class": None, "num_workers": 8,
                      "batch": 32, "large_batch": 256, "synthetic_steps": 20},
            "extract": {"gpu": True, "images": 2048, "image_size": 224, "reps": 3, "fit_path_workers": 8},
            "compare": {"dry": False}, "tests": {"workers": 4}, "suite": {},
        }
    return {  # dry run: the same code at sizes a 2-core CPU gets through in seconds
        "train": {"gpu": False, "image_size": 32, "epochs": 2, "per_class": 4, "num_workers": 0, "batch": 8,
                  "large_batch": 16, "synthetic_steps": 2},
        "extract": {"gpu": False, "images": 32, "image_size": 32, "reps": 1, "fit_path_workers": 0},
        "compare": {"dry": True}, "tests": {}, "suite": {},
    }


def run_stage_child(stage: str, spec: dict[str, Any], result_path: Path, cap: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--stage", stage, "--spec", json.dumps(spec), "--result", str(result_path)]
    status = run_program(cmd, cap, gpu_env())
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return {**result, **status}


def summary(payload: dict[str, Any]) -> None:
    st = payload["stages"]
    rows = []
    for name, r in st.items():
        what = r.get("status", "")
        if "passed" in r:
            what += f": {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"
        rows.append([name, what, str(r.get("wall_s", ""))])
    print(table(rows, ["stage", "status", "wall s"]))
    train = st.get("train", {})
    if train.get("runs"):
        print(table([[k, f"{v['images_per_s']:.0f}", f"{v.get('peak_memory_gib', float('nan')):.2f}",
                      f"{v['tflops']:.2f}", f"{100 * v.get('fraction_of_dense_bf16_peak', float('nan')):.2f}%"]
                     for k, v in train["runs"].items()],
                    ["train run", "images/s", "peak GiB", "TFLOP/s", "of dense bf16 peak"]))
        print(table([[k, f"{v:.3f}"] for k, v in train.get("transferlab_over_bare", {}).items()],
                    ["transferlab / bare", "ratio"]))
    ext = st.get("extract", {})
    if ext.get("images_per_s"):
        print(table([[k, f"{v:.0f}"] for k, v in ext["images_per_s"].items()], ["extraction", "images/s"]))
        for k, v in ext.get("ratios", {}).items():
            print(f"  {k}: {v:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in this order: " +
                        ",".join(STAGES))
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole run's time limit")
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/results (a dry run: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, even on a GPU")
    parser.add_argument("--caps", default="", help="stage time caps, e.g. tests=70,compare=170 (seconds)")
    parser.add_argument("--train-runs", default="", help="only these train runs, in this order (names as in "
                        "the JSON, e.g. bare_bf16-mixed_b256,transferlab_bf16-mixed_b256)")
    parser.add_argument("--pytest-k", default="", help="the tests stage: only tests matching this -k expression")
    parser.add_argument("--pytest-workers", type=int, help="the tests stage: pytest-xdist processes (GPU default 4)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # child: one in-process stage; the result file is rewritten as it goes
        result: dict[str, Any] = {}
        fn = {"train": stage_train, "extract": stage_extract}[args.stage]
        fn(json.loads(args.spec), result, lambda: write_json("", result, args.result))
        return

    start = time.monotonic()
    deadline = start + args.budget_s
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    if not torch.cuda.is_available():
        why = "nvidia-smi not found" if shutil.which("nvidia-smi") is None else "torch.cuda.is_available() is False"
        log(f"NO CUDA GPU FOUND ({why}): this is a DRY RUN on the CPU at tiny sizes. It checks the script; its "
            "figures are not measurements.")
    name = slug(torch.cuda.get_device_name(0)) if gpu else "cpu_dryrun"
    out_dir = args.out_dir or (RESULTS if gpu else Path(tempfile.mkdtemp(prefix="gpu-check-")))
    path = out_dir / f"gpu_check_{name}.json"
    specs = stage_specs(gpu)
    caps = {**(CAPS if gpu else DRY_CAPS)}
    caps.update({k: float(v) for k, v in (c.split("=") for c in args.caps.split(",") if c)})
    if args.train_runs:
        specs["train"]["only"] = args.train_runs.split(",")
    specs["tests"]["k"] = args.pytest_k
    if args.pytest_workers is not None:
        specs["tests"]["workers"] = args.pytest_workers
    payload: dict[str, Any] = {
        "what": "benchmarks/gpu_check.py: the GPU paths once, and the figures (see the script's docstring)",
        "gpu": gpu, "dry_run": not gpu, "budget_s": args.budget_s,
        "machine": machine_info(), "gpu_info": gpu_info(),
        "repo": {**repo_state(), "snapshot_commit": os.environ.get("GPU_CHECK_COMMIT")}, "stages": {},
    }
    write_json("", payload, path)
    log(f"device: {payload['gpu_info'].get('name', 'CPU only')}; writing {path}")
    stages = [s for s in STAGES if s in args.stages.split(",")]
    for stage in stages:
        left = deadline - time.monotonic()
        cap = min(caps.get(stage, left), left - 3)
        if stage == "suite" and not gpu:
            payload["stages"][stage] = {"status": "skipped", "why": "dry run: `make test` is the suite on the CPU"}
            continue
        if cap < 20:
            payload["stages"][stage] = {"status": "skipped", "why": f"only {left:.0f} s of the budget left"}
            write_json("", payload, path)
            log(f"{stage}: skipped, {left:.0f} s left")
            continue
        log(f"stage {stage}: up to {cap:.0f} s")
        t0 = time.perf_counter()
        try:
            if stage in ("train", "extract"):
                r = run_stage_child(stage, specs[stage], out_dir / f".gpu_check_{stage}.tmp.json", cap)
                (out_dir / f".gpu_check_{stage}.tmp.json").unlink(missing_ok=True)
            else:
                r = {}
                {"tests": stage_tests, "suite": stage_suite, "compare": stage_compare}[stage](
                    specs[stage], r, None, cap)
            ok = r.get("returncode") == 0 and not r.get("timed_out")
            r["status"] = "ok" if ok else ("timed out" if r.get("timed_out") else f"failed (exit {r['returncode']})")
        except Exception as e:  # the next stages still run
            r = {"status": f"error: {type(e).__name__}: {e}"}
        r["wall_s"] = round(time.perf_counter() - t0, 2)
        r["cap_s"] = round(cap)
        payload["stages"][stage] = r
        payload["wall_s"] = round(time.monotonic() - start, 1)
        write_json("", payload, path)
        log(f"stage {stage}: {r['status']} in {r['wall_s']} s")
    summary(payload)
    log(f"done in {time.monotonic() - start:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
