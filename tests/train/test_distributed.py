"""DDP on the CPU (gloo): two processes through Lightning's launcher, one run directory, exact validation."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import make_folder

DDP = ["--accelerator", "cpu", "--devices", "2", "--distributed", "ddp"]


def run(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", "TRANSFERLAB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "transferlab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("ddp") / "data", n_per_class=21)  # val and test: 9 each (odd)


def metrics(run_dir: Path) -> list[dict[str, float]]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    return [dict(zip(lines[0].split(","), map(float, line.split(",")), strict=True)) for line in lines[1:]]


def test_two_processes_write_one_run_validate_every_example_once_and_share_the_features(
        folder: Path, base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen DDP run against the same run in one process (this one): one run directory, the test printed once,
    every validation example counted once (an odd split, so the distributed sampler pads), features extracted in
    shards equal to one process's."""
    frozen = {"source": str(base_run), "strategy": "frozen", "epochs": 15, "lr": 1e-2, "seed": 1}
    two = run("-v", "fit", str(folder), *(f"--{k}={v}" for k, v in frozen.items()), *DDP, "--out", "two",
              cache=tmp_path / "c2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test accuracy") == 1  # printed by rank 0 only
    assert "features (train, rank 1)" in two.stderr  # each process extracted its share
    from transferlab import api

    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "c1"))
    api.fit(str(folder), out=tmp_path / "one", progress=False, **frozen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1", "c2", "one", "two"]  # nothing else written
    sizes = json.loads((tmp_path / "two" / "config.json").read_text())["resolved"]["sizes"]
    assert sizes["val"] % 2 == 1  # so that the distributed split needs padding
    for name in ("one", "two"):
        run_dir = tmp_path / name
        assert not (run_dir / "INCOMPLETE").exists() and not (run_dir / "checkpoints").exists()
        validated = [row for row in metrics(run_dir) if not math.isnan(row["val_count"])]  # the epochs validated
        assert validated and all(row["val_count"] == sizes["val"] for row in validated)
        card = json.loads((run_dir / "model.json").read_text())
        assert card["metrics"]["test_accuracy"] > 0.5  # a valid model either way (chance is 1/3)
    (a,), (b,) = (list((tmp_path / c / "features").glob("*.safetensors")) for c in ("c2", "c1"))
    assert a.name == b.name  # the same cache key
    fa, fb = load_file(str(a)), load_file(str(b))
    assert set(fa) == {"train", "val", "test"}
    for split in fa:
        assert fa[split].shape == fb[split].shape and (fa[split] - fb[split]).abs().max() < 1e-5


def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = make_folder(tmp_path / "data", n_per_class=60)  # epochs long enough to interrupt one on any machine
    args = ["fit", str(big), "--source", "cnn_tiny", "--strategy", "scratch", "--epochs", "5", "--patience", "5",
            "--image-size", "64", "--out", "run"]
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", "TRANSFERLAB_CACHE_DIR": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "transferlab", *args, *DDP], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # a SIGINT ignored by the test process (an earlier in-process run can leave it so) is
                            # inherited, and Python then never raises KeyboardInterrupt: restore the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    def epochs_done() -> int:
        try:
            return len(metrics(tmp_path / "run"))
        except (OSError, ValueError):  # not written yet, or caught mid-write
            return 0

    while not (ckpt.is_file() and epochs_done() >= 2) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user would
    proc.wait(timeout=120)
    assert proc.returncode != 0, "the run finished before it could be interrupted"
    assert (tmp_path / "run" / "INCOMPLETE").exists() and ckpt.is_file()
    done = len(metrics(tmp_path / "run"))
    from transferlab import api

    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "c"))
    api.fit(str(big), out=tmp_path / "run", source="cnn_tiny", strategy="scratch", epochs=5, patience=5,
            image_size=64, resume=True, progress=False)  # in one process now: this one
    rows = metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == list(range(1, 6)) and done < 5
    assert not (tmp_path / "run" / "INCOMPLETE").exists()


RANKS = """
import json
import sys
import torch
import transferlab.train.module as module

from transferlab import api


def on_train_end(self):  # every process saves its own copy: under DDP they must be equal
    state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
    torch.save(state, f"{sys.argv[1]}/{sys.argv[4]}-rank{self.global_rank}.pt")


module.LitClassifier.on_train_end = on_train_end
for i, strategy in enumerate(json.loads(sys.argv[3])):  # one launch, one process group, several runs
    sys.argv[4] = str(i)
    api.fit(sys.argv[2], out=f"{sys.argv[1]}/run{i}", source=sys.argv[5], strategy=strategy, epochs=3,
            progress=False, accelerator="cpu", devices="2", distributed="ddp",
            **{k: int(v) if v.isdigit() else v for k, v in (a.split("=", 1) for a in sys.argv[6:])})
"""


def two_processes(tmp_path: Path, data: Path, source: str, strategies: list[str], *extra: str) -> list[dict]:
    """Each strategy's weights at the end of its DDP run, after checking that both processes ended with the same
    (the script above saves each process's; the runs share one launch, as start-up is most of their time)."""
    import torch

    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    env = {**os.environ, "TRANSFERLAB_ALLOCATOR": "system", "TRANSFERLAB_CACHE_DIR": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(data), json.dumps(strategies), "0",
                           source, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = []
    for i, strategy in enumerate(strategies):
        zero, one = (torch.load(tmp_path / f"{i}-rank{r}.pt", weights_only=True) for r in (0, 1))
        assert zero.keys() == one.keys(), strategy
        assert all(torch.equal(zero[k], one[k]) for k in zero), (
            strategy, [k for k in zero if not torch.equal(zero[k], one[k])])
        weights.append(zero)
    return weights


def test_gradual_and_lpft_train_the_same_weights_on_every_process(folder: Path, base_run: Path,
                                                                  tmp_path: Path) -> None:
    """Blocks that gradual opens mid-run are synchronised like the rest (DDP wraps the model before they open);
    LP-FT's head is probed by rank 0 and broadcast, so every process fine-tunes from the same start."""
    import torch

    gradual, lpft = two_processes(tmp_path, folder, str(base_run), ["gradual:every=1", "lpft:wise=0.5"])
    source = load_file(str(base_run / "model.safetensors"))
    assert not torch.equal(gradual["blocks.conv3.0.weight"], source["blocks.conv3.0.weight"])  # opened in epoch 2
    assert torch.equal(gradual["blocks.conv1.0.weight"], source["blocks.conv1.0.weight"])  # never opened
    assert any(k.startswith("head.") for k in lpft)


def test_lora_trains_the_same_adapters_on_every_process(text_csv: Path, tmp_path: Path) -> None:
    (lora,) = two_processes(tmp_path, text_csv, "minilm", ["lora:r=2"], "text_column=sentence",
                            "label_column=topic", "per_class=4", "eval_per_class=2", "batch_size=4")
    assert any("lora_A" in k for k in lora)
