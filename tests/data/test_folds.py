"""fold_data: a cross-validation over the training and validation splits, for every kind of split."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.config import FitConfig
from transferlab.data.images import ImageSplit
from transferlab.data.splits import Data, fold_data
from transferlab.data.tabular import TableSplit
from transferlab.data.text import TextSplit
from transferlab.errors import UserError


def _data(kind: str, train_labels: list[int], val_labels: list[int]) -> Data:
    """Every example's content is its own number (train first, then val), so the folds can be traced."""
    def split(labels: list[int], start: int):
        ids = np.arange(start, start + len(labels))
        if kind == "table":
            return TableSplit(ids[:, None].astype(np.float32), np.array(labels))
        if kind == "text":
            return TextSplit([str(i) for i in ids], np.array(labels))
        return ImageSplit(np.array(labels), arrays=(ids % 256).astype(np.uint8)[:, None, None].repeat(2, 1)
                          .repeat(2, 2))

    test = split([0, 1], 200)
    return Data(["a", "b", "c"], split(train_labels, 0), split(val_labels, len(train_labels)), test, [], "d")


def _ids(split) -> list[int]:
    if isinstance(split, TableSplit):
        return [int(v) for v in split.features[:, 0]]
    if isinstance(split, TextSplit):
        return [int(t) for t in split.texts]
    return [int(a[0, 0]) for a in split.arrays]


@pytest.mark.parametrize("kind", ["table", "text", "image"])
def test_every_training_and_validation_example_is_validated_once_and_the_test_split_never(kind: str) -> None:
    train = [0] * 20 + [1] * 12 + [2] * 1  # class c: one example only, so it stays in training
    val = [0] * 7 + [1] * 4
    data = _data(kind, train, val)
    folds = [fold_data(data, f"{i}/3", seed=5) for i in range(3)]
    held = [_ids(f.val) for f in folds]
    assert sorted(sum(held, [])) == [i for i in range(len(train) + len(val)) if i != 32]  # all but class c's
    for f in folds:
        assert not set(_ids(f.train)) & set(_ids(f.val))
        assert _ids(f.test) == [200, 201] and f.classes == data.classes
        counts = np.bincount(f.train.labels, minlength=3)
        assert counts[0] <= 20 and counts[1] <= 12 and counts[2] == 1  # never more per class than training had
        assert 8 <= np.bincount(f.val.labels, minlength=3)[0] <= 10  # 27 of class a in 3 stratified parts
        for part in (f.train, f.val):  # each example keeps its own label
            assert np.asarray(part.labels).tolist() == [(train + val)[i] for i in _ids(part)]
    assert [_ids(f.val) for f in (fold_data(data, f"{i}/3", seed=5) for i in range(3))] == held  # seeded
    assert [_ids(f.val) for f in (fold_data(data, f"{i}/3", seed=6) for i in range(3))] != held


def test_a_fold_trains_on_at_most_the_training_splits_size_per_class() -> None:
    data = _data("table", [0] * 4 + [1] * 4, [0] * 20 + [1] * 20)  # a large validation split
    fold = fold_data(data, "1/2", seed=0)
    assert np.bincount(fold.train.labels).tolist() == [4, 4] and len(fold.val) == 24


@pytest.mark.parametrize("fold", ["3/3", "0/1", "a/b", "1/3/5", "-1/3"])
def test_a_bad_fold_is_one_sentence(fold: str) -> None:
    with pytest.raises(UserError, match="fold must be i/k"):
        FitConfig(data="d", fold=fold)


def test_the_folds_of_a_frozen_run_share_one_extraction_of_their_pool(base_run, tmp_path, monkeypatch) -> None:
    """Three frozen folds extract their pool's features once (one cache entry); a fold's training and validation
    features gathered from it are those its own splits give when extracted by themselves."""
    import dataclasses
    import json

    import torch
    from safetensors.torch import load_file

    from transferlab import api, modality
    from transferlab.train import fit as training

    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "c"))
    spec = json.loads((base_run / "model.json").read_text())["data"]
    opts = dict(source=str(base_run), strategy="frozen", max_steps=5, progress=False)
    for i in range(3):
        api.fit(spec, out=tmp_path / f"fold{i}", fold=f"{i}/3", **opts)
    (pooled,) = (tmp_path / "c" / "features").glob("*.safetensors")
    real = training.fold_data
    monkeypatch.setattr(training, "fold_data", lambda *a: dataclasses.replace(real(*a), fold_of=None))
    api.fit(spec, out=tmp_path / "alone", fold="1/3", **opts)  # the same fold, its splits extracted as they are
    (alone,) = set((tmp_path / "c" / "features").glob("*.safetensors")) - {pooled}
    pool, own = load_file(str(pooled)), load_file(str(alone))
    assert set(pool) == {"pool", "test"} and set(own) == {"train", "val", "test"}
    fold = real(modality.get("image").load(FitConfig(data=spec)), "1/3", 0)
    _, train, val = fold.fold_of
    for name, idx in (("train", train), ("val", val)):
        torch.testing.assert_close(pool["pool"][torch.as_tensor(idx)], own[name], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pool["test"], own["test"], atol=1e-5, rtol=1e-4)
    gathered, extracted = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("fold1", "alone"))
    for k in gathered:  # and the head trained on the gathered features is the one trained on its own
        torch.testing.assert_close(gathered[k], extracted[k], atol=1e-4, rtol=1e-3)
