"""The third modality end to end: a table, an MLP developed on a related table, and every command unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from transferlab import api, preflight
from transferlab import modality as modalities
from transferlab.config import FitConfig
from transferlab.errors import UserError
from transferlab.sources import load_source

OPTS = dict(epochs=8, batch_size=16, progress=False)


def write_blobs(path: Path, seed: int, n: int = 240, centers: np.ndarray | None = None) -> Path:
    x, y = make_blobs(n_samples=n, centers=centers if centers is not None else 3, n_features=2, cluster_std=1.0,
                      random_state=seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x1", "x2", "label"])
        w.writerows([[f"{a:.5f}", f"{b:.5f}", f"c{label}"] for (a, b), label in zip(x, y, strict=True)])
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blobs")
    centers = make_blobs(n_samples=3, centers=3, n_features=2, random_state=1)[0] * 0 + np.array(
        [[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    return write_blobs(root / "p1.csv", 1, centers=centers), write_blobs(root / "p2.csv", 2, centers=centers)


@pytest.fixture(scope="module")
def developed(tables: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dev") / "mlp"
    result, check = api.pretrain(str(tables[0]), arch="mlp_tiny", out=out, **OPTS)
    assert check["clearly_better_than_naive"], check
    return out


def test_a_table_is_told_from_image_and_text_csvs(tables: tuple[Path, Path], tmp_path: Path) -> None:
    assert preflight.resolve_modality(str(tables[0]), ["mlp_small"]) == "tabular"
    images = tmp_path / "images.csv"
    images.write_text("path,label\na.png,x\n")
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\nhello there,x\n")
    assert preflight.resolve_modality(str(images), []) == "image"
    assert preflight.resolve_modality(str(texts), []) == "text"
    tsv = tmp_path / "table.tsv"
    tsv.write_text(tables[0].read_text().replace(",", "\t"))
    assert preflight.resolve_modality(str(tsv), ["mlp_small"]) == "tabular"  # a .tsv is not text by its suffix
    words = tmp_path / "words.tsv"
    words.write_text("text\tlabel\nhello there\tx\n")
    assert preflight.resolve_modality(str(words), []) == "text"
    with pytest.raises(UserError, match="holds rows but the source efficientnet_lite0 takes images"):
        preflight.resolve_modality(str(tables[0]), ["efficientnet_lite0"])


def test_developed_mlp_is_a_source_with_the_scaling_it_learned(developed: Path, tables: tuple[Path, Path]) -> None:
    card = json.loads((developed / "model.json").read_text())
    assert card["modality"] == "tabular" and card["architecture"] == "mlp_tiny"
    assert card["preprocessing"]["kind"] == "standardize" and card["preprocessing"]["columns"] == ["x1", "x2"]
    assert card["block_names"] == ["hidden1", "hidden2"]
    source = load_source(str(developed))
    assert source.modality == "tabular" and list(source.blocks) == ["hidden1", "hidden2"]
    # reused on problem 2 it keeps problem 1's standardisation: its features mean what they meant
    run = api.fit(str(tables[1]), source=str(developed), strategy="frozen", out=developed.parent / "frozen", **OPTS)
    reused = json.loads((run.out / "model.json").read_text())["preprocessing"]
    assert reused == card["preprocessing"]
    assert run.test_accuracy > 0.8  # the same centres: a head on the developed features separates problem 2


def test_scratch_fits_its_standardisation_on_the_training_split(tables: tuple[Path, Path], tmp_path: Path) -> None:
    run = api.fit(str(tables[1]), source="mlp_small", strategy="scratch", out=tmp_path / "s", reuse=None, **OPTS)
    pre = json.loads((run.out / "model.json").read_text())["preprocessing"]
    x = np.loadtxt(tables[1], delimiter=",", skiprows=1, usecols=(0, 1))
    assert abs(pre["mean"][0] - x[:, 0].mean()) < 0.5 and pre["std"][0] > 0  # fitted on ~70% of the rows


def test_a_developed_architecture_from_random_weights_scales_on_the_target(developed: Path, tmp_path: Path) -> None:
    """Random weights know nothing of the source's data, its scale included: scratch standardises as the target's
    training split is, while a reused source keeps its own standardisation."""
    centers = np.array([[6.0, -6.0], [14.0, -6.0], [10.0, -1.0]])  # problem 1's centres moved by (10, -6)
    target = write_blobs(tmp_path / "moved.csv", 3, centers=centers)
    source = json.loads((developed / "model.json").read_text())["preprocessing"]
    run = api.fit(str(target), source=str(developed), strategy="scratch", out=tmp_path / "s", **OPTS)
    pre = json.loads((run.out / "model.json").read_text())["preprocessing"]
    x = np.loadtxt(target, delimiter=",", skiprows=1, usecols=(0, 1))
    assert abs(pre["mean"][0] - x[:, 0].mean()) < 0.5 and abs(pre["mean"][1] - x[:, 1].mean()) < 0.5
    assert abs(source["mean"][0] - x[:, 0].mean()) > 5  # what the source would have shifted the columns by
    assert pre["columns"] == source["columns"]
    assert api.fit(str(target), source=str(developed), strategy="scratch", out=tmp_path / "s", resume=True,
                   **OPTS).test_accuracy == run.test_accuracy  # reused
    record = json.loads((run.out / "config.json").read_text())
    record["resolved"]["preprocessing"] = {**record["resolved"]["preprocessing"], **source}  # as before the fix
    (run.out / "config.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="earlier transferlab that scaled the table's columns as its source"):
        api.fit(str(target), source=str(developed), strategy="scratch", out=tmp_path / "s", resume=True, **OPTS)
    cfg = FitConfig(data=str(target), source=f"scratch:{developed}")  # what rank scores as a scratch candidate
    data = modalities.get("tabular").load(cfg)
    bound = modalities.get("tabular").bind(load_source(f"scratch:{developed}"), data, cfg)
    assert list(bound.preprocessing.mean) == pytest.approx(pre["mean"], abs=0.5)


def test_compare_layers_rank_and_predict_work_unchanged(developed: Path, tables: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    results = api.compare(str(tables[1]), out=tmp_path / "cmp", source=str(developed),
                          arms="scratch:source=mlp_tiny,frozen,finetune", seeds=2, **OPTS)
    assert results["modality"] == "tabular" and set(results["benefits"]) == {"frozen", "finetune"}
    assert "image_size" not in json.dumps(results["resolved"])
    sweep = api.layers(str(tables[1]), out=tmp_path / "layers", source=str(developed), seeds=2, **OPTS)
    assert set(sweep["series"]) == {"AnB", "AnB+"} and set(sweep["series"]["AnB"]) == {"1", "2"}
    card = json.loads((developed / "model.json").read_text())["preprocessing"]
    scratch = json.loads((tmp_path / "layers" / "cells" / "scratch" / "all" / "seed0" / "model.json").read_text())
    frozen = json.loads((tmp_path / "layers" / "cells" / "AnB" / "n1" / "seed0" / "model.json").read_text())
    assert frozen["preprocessing"]["mean"] == card["mean"] != scratch["preprocessing"]["mean"]  # its own rows' scale
    ranked = api.rank(str(tables[1]), sources=f"{developed},scratch:{developed}", out=tmp_path / "rank",
                      scores="logme,knn", progress=False)
    assert set(ranked["ranking"]["knn"]) == {str(developed), f"scratch:{developed}"}
    new = tmp_path / "new.csv"
    new.write_text("x1,x2\n-4,0\n4,0\n0,5\n")
    rows = api.predict(developed, [new])
    assert [label for _, label, _ in rows] == ["c0", "c1", "c2"]
    assert rows[0][0] == f"{new} line 2"


def test_a_source_for_other_columns_is_one_sentence(developed: Path, tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b,c,label\n" + "".join(f"{i},{i % 3},{i % 5},{'xy'[i % 2]}\n" for i in range(40)))
    with pytest.raises(UserError, match=r"takes the feature columns x1, x2 but .*wide.csv has no column 'x1'.*order"):
        api.fit(str(wide), source=str(developed), strategy="frozen", out=tmp_path / "w", **OPTS)
    assert not (tmp_path / "w").exists()  # refused before the run directory was made
