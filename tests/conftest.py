"""Tiny synthetic fixtures. Tests run on the CPU, offline, with their own feature cache."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["TRANSFERLAB_ALLOCATOR"] = "system"  # never re-exec the test process
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per test process: two workers on two cores, not four threads
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread, as every test has under xdist: a forked child (``tests/test_trust.py::_kill_9``) runs on
    one, and a run it is compared with bit for bit must sum in the same order."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_folder(root: Path, n_per_class: int = 16, size: int = 24, seed: int = 0) -> Path:
    """Three easily separable classes: mostly-red, mostly-green and mostly-blue noisy squares."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            arr[..., c] = rng.integers(160, 256, size=(size, size), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("colors") / "data")


@pytest.fixture(scope="session")
def base_run(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cnn_tiny trained from scratch on the colour task: a develop-model-approach source."""
    from transferlab.api import fit

    out = tmp_path_factory.mktemp("runs") / "base"
    fit(str(image_folder), out=out, source="cnn_tiny", strategy="scratch", epochs=2, lr=3e-3, progress=False)
    return out


@contextlib.contextmanager
def stopped_at_epoch_end(epoch: int, each: Callable | None = None) -> Iterator[None]:
    """Inside the block, training raises KeyboardInterrupt (as Ctrl-C does) at the end of ``epoch`` (counted from
    1), after its metrics and before its checkpoint; ``each(trainer, module)`` sees every epoch end first."""
    from transferlab.train import callbacks

    real = callbacks.MetricsCSV.on_train_epoch_end

    def end(self, trainer, module) -> None:
        if each is not None:
            each(trainer, module)
        real(self, trainer, module)
        if trainer.current_epoch + 1 == epoch:
            raise KeyboardInterrupt

    callbacks.MetricsCSV.on_train_epoch_end = end
    try:
        yield
    finally:
        callbacks.MetricsCSV.on_train_epoch_end = real


TOPICS = {
    "animal": ["dog", "cat", "horse", "bird", "fish", "cow", "sheep", "wolf"],
    "food": ["bread", "cheese", "apple", "soup", "rice", "cake", "meat", "salad"],
    "tool": ["hammer", "saw", "drill", "wrench", "screw", "nail", "chisel", "pliers"],
}
FILLER = ["a", "the", "of", "with", "some", "kind", "small", "large", "used", "often"]


def make_texts(n_per_class: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """Short sentences: filler words plus two or three words of the label's topic."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, vocab in TOPICS.items():
        for _ in range(n_per_class):
            tokens = list(rng.choice(FILLER, 4)) + list(rng.choice(vocab, int(rng.integers(2, 4))))
            rng.shuffle(tokens)
            rows.append((" ".join(tokens), label))
    return rows


@pytest.fixture(scope="session")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "topics.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "topic"])
        w.writerows(make_texts())
    return path
