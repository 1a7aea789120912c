"""--logger: TensorBoard gets the same epoch metrics as metrics.csv, inside the run directory (so --overwrite
clears it); an unknown logger or a missing package is one sentence naming the pip extra."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import pytest

from transferlab.api import fit
from transferlab.config import FitConfig
from transferlab.errors import UserError

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")  # in the dev extra


def scalars(events: Path) -> dict[str, list[float]]:
    """Every scalar of a TensorBoard event file by tag, in order (TFRecord framing: length, its CRC, data, CRC)."""
    data, found, i = events.read_bytes(), {}, 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        for v in event.summary.value:
            found.setdefault(v.tag, []).append(v.simple_value)
        i += 12 + n + 4
    return found


def test_tensorboard_logs_what_metrics_csv_records(image_folder: Path, tmp_path: Path) -> None:
    opts = dict(source="cnn_tiny", strategy="scratch", epochs=3, min_steps=0, patience=10, progress=False,
                logger="tensorboard")
    fit(str(image_folder), out=tmp_path / "run", **opts)
    (events,) = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
    logged = scalars(events)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    for tag in ("val_loss", "val_accuracy", "train_loss"):
        expected = [float(r[tag]) for r in rows if r[tag] and not math.isnan(float(r[tag]))]
        assert logged[tag] == pytest.approx(expected, rel=1e-5), (tag, logged[tag], expected)
    assert "strategy: scratch" in (tmp_path / "run" / "tensorboard" / "hparams.yaml").read_text()  # its options
    fit(str(image_folder), out=tmp_path / "run", overwrite=True, **{**opts, "logger": "csv"})  # transferlab's own
    assert not (tmp_path / "run" / "tensorboard").exists() or not any((tmp_path / "run" / "tensorboard").iterdir())


def test_a_bad_or_missing_logger_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="--logger must be one of csv, tensorboard, mlflow, not 'wandb'"):
        FitConfig(logger="wandb")
    import importlib.util

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"--logger mlflow needs the mlflow package: pip install 'transferlab\[mlfl"):
        FitConfig(logger="mlflow")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # installed, but nowhere to log
    with pytest.raises(UserError, match="MLFLOW_TRACKING_URI, which is not set"):
        FitConfig(logger="mlflow")
