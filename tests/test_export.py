"""export: the exported file's outputs are predict's probabilities (ONNX through onnxruntime, TorchScript loaded
back), on inputs other than those it was traced with; the sidecar says what goes in; bad requests are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_hostile import TABLE_OPTS, write_table
from transferlab import api
from transferlab.errors import UserError

onnxruntime = pytest.importorskip("onnxruntime")  # the export extra, installed by `make test`


def _inputs(run: Path, raw: list) -> torch.Tensor:
    """``raw`` inputs through the run's recorded preprocessing, batched: what the exported file takes."""
    from transferlab import modality

    card = api.run_card(run)
    pre = modality.get(card["modality"]).preprocessing_from_dict(card["preprocessing"])
    collate = pre.collate or torch.utils.data.default_collate  # (input, label) pairs -> batches
    return collate([(pre.transform()(r), 0) for r in raw])[0]


def _probabilities(exported: Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        return torch.jit.load(str(exported))(x).numpy()


def _predicted(rows: list[tuple[str, str, float]], classes: list[str]) -> np.ndarray:
    """predict's rows with top = every class, as one probability row per input in class order."""
    by_input: dict[str, dict[str, float]] = {}
    for shown, label, p in rows:
        by_input.setdefault(shown, {})[label] = p
    return np.array([[probs[c] for c in classes] for probs in by_input.values()])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_image_run_gives_predicts_probabilities(base_run: Path, image_folder: Path, tmp_path: Path,
                                                            fmt: str) -> None:
    from PIL import Image

    out = tmp_path / f"model.{fmt}"
    sidecar = api.export(base_run, out, fmt)
    card = api.run_card(base_run)
    assert json.loads(Path(f"{out}.json").read_text()) == sidecar
    assert sidecar["output"]["classes"] == card["classes"] and sidecar["preprocessing"] == card["preprocessing"]
    assert sidecar["check"]["max_abs_difference"] <= 1e-4 and sidecar["input"]["shape"][0] == "batch"
    images = sorted(image_folder.rglob("*.png"))[::7][:5]  # five files, three classes, a batch size never traced
    x = _inputs(base_run, [Image.open(p).convert("RGB") for p in images])
    got = _probabilities(out, fmt, x)
    want = _predicted(api.predict(base_run, images, top=len(card["classes"])), card["classes"])
    assert got.shape == want.shape == (5, 3)
    assert np.abs(got - want).max() <= 1e-4
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left


def test_table_and_text_runs_export_with_their_own_input_shapes(text_csv: Path, tmp_path: Path) -> None:
    table = write_table(tmp_path / "rows.csv")
    api.fit(str(table), out=tmp_path / "tab", source="mlp_tiny", strategy="scratch", **TABLE_OPTS)
    rows = [[0.1, 4.2, 7.9], [8.0, 8.1, 7.7]]
    api.export(tmp_path / "tab", tmp_path / "tab.onnx")
    got = _probabilities(tmp_path / "tab.onnx", "onnx", _inputs(tmp_path / "tab", rows))
    with (tmp_path / "new.csv").open("w") as f:  # the columns in another order: predict reads them by name
        f.write("x3,x1,x2\n" + "\n".join(f"{r[2]},{r[0]},{r[1]}" for r in rows) + "\n")
    classes = api.run_card(tmp_path / "tab")["classes"]
    want = _predicted(api.predict(tmp_path / "tab", [tmp_path / "new.csv"], top=3), classes)
    assert np.abs(got - want).max() <= 1e-4

    api.fit(str(text_csv), out=tmp_path / "words", source="words:16", strategy="scratch", text_column="sentence",
            label_column="topic", epochs=2, progress=False)
    sidecar = api.export(tmp_path / "words", tmp_path / "words.onnx")
    assert sidecar["input"]["shape"] == ["batch", "length"] and sidecar["input"]["dtype"] == "int64"
    texts = ["a short one", "a much longer text than any of the examples the model was traced with, by far"]
    got = _probabilities(tmp_path / "words.onnx", "onnx", _inputs(tmp_path / "words", texts))
    classes = api.run_card(tmp_path / "words")["classes"]
    want = _predicted(api.predict(tmp_path / "words", [], texts=texts, top=len(classes)), classes)
    assert np.abs(got - want).max() <= 1e-4


def test_bad_exports_are_one_sentence_and_write_nothing(base_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine.onnx"
    mine.write_text("a user's file")
    for args, sentence in [((base_run, tmp_path / "m.onnx", "tflite"), "choose one of onnx, torchscript"),
                           ((tmp_path, tmp_path / "m.onnx", "onnx"), "not a finished run directory"),
                           ((base_run, mine, "onnx"), "is not an earlier export"),
                           ((base_run, tmp_path, "onnx"), "is a folder")]:
        with pytest.raises(UserError, match=sentence):
            api.export(*args)
    assert mine.read_text() == "a user's file" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.onnx"]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else
                        real(name, *a))
    with pytest.raises(UserError, match=r"needs the package onnxscript: pip install 'transferlab\[export\]'"):
        api.export(base_run, tmp_path / "m.onnx")
    monkeypatch.undo()
    from tests.test_cli import run

    for _ in range(2):  # the second replaces the first: an earlier export is transferlab's own
        result = run("export", str(base_run), "--out", str(tmp_path / "again.pt"), "--format", "torchscript")
        assert result.exit_code == 0, result.stderr
        assert "wrote" in result.stdout and "within" in result.stdout
    result = run("export", str(base_run), "--out", str(mine))
    assert result.exit_code == 2 and "is not an earlier export" in result.stderr
