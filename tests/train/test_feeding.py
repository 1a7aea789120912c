"""Feeding the device: loader workers chosen by where training runs, and the allocator found where pip put it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transferlab import allocator
from transferlab.config import FitConfig
from transferlab.errors import UserError


def test_num_workers_auto_is_none_on_a_cpu_and_some_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    cfg = FitConfig()
    assert cfg.num_workers == "auto" and cfg.workers(on_gpu=False) == 0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))  # the cores this process may use
    assert cfg.workers(on_gpu=True) == 7  # 16 cores for 2 GPUs: 8 each, one of them left to the training process
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert cfg.workers(on_gpu=True) == 8
    assert FitConfig(num_workers=3).workers(on_gpu=True) == 3  # a count from a JSON file (a config, an old run)
    for bad in ("-1", "²", "2.5", 2.5):
        with pytest.raises(UserError, match="--num-workers must be a count"):
            FitConfig(num_workers=bad)


def test_the_allocator_from_the_mimalloc_wheel_is_found_where_pip_put_it(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.setattr(allocator.sysconfig, "get_paths", lambda: {"purelib": str(tmp_path), "platlib": str(tmp_path)})
    assert allocator.library("mimalloc") is None
    lib = tmp_path / "cmeel.prefix" / "lib"
    lib.mkdir(parents=True)
    for name in ("libmimalloc.so.3.4", "libmimalloc.so.3", "libmimalloc.so"):
        (lib / name).touch()
    assert allocator.library("mimalloc") == str(lib / "libmimalloc.so")
    assert allocator.library("jemalloc") is None


@pytest.mark.parametrize(("asked", "says"), [
    ("mimalloc", "mimalloc is not installed (pip install 'transferlab[mimalloc]')"),
    ("jemalloc", "is not auto, system, tcmalloc or mimalloc"),
])
def test_an_allocator_asked_for_but_missing_is_one_warning(asked: str, says: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRANSFERLAB_ALLOCATOR", asked)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(allocator, "library", lambda name: None)  # nothing installed: no re-exec
    allocator.use_fast()
    assert says in capsys.readouterr().err


def test_a_run_whose_images_live_on_the_device_trains_the_same_weights(image_folder: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The training split read once onto the device (forced here on the CPU: a GPU does it when the store takes at
    most a quarter of its free memory) ends bit-identical to the run whose loader carries the images."""
    from tests.test_trust import _same_weights
    from transferlab import api
    from transferlab.data import decoded
    from transferlab.train import datamodule

    options = dict(source="cnn_tiny", strategy="scratch", epochs=2, image_size=32, progress=False)
    api.fit(str(image_folder), out=tmp_path / "loader", **options)
    moved = []

    def forced(ds, device):  # noqa: ANN001, ANN202
        moved.append(decoded.resident_images(ds, device, force=True))
        return moved[-1]

    monkeypatch.setattr(datamodule, "resident_images", forced)
    api.fit(str(image_folder), out=tmp_path / "resident", **options)
    assert moved and moved[0] is not None and moved[0].dtype == torch.uint8
    _same_weights(tmp_path / "loader", tmp_path / "resident")
