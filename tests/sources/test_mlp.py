"""Built-in MLP sources for tables and their Standardize preprocessing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from transferlab import modality
from transferlab.errors import UserError
from transferlab.sources.mlp import (
    MLP_WIDTHS,
    Standardize,
    fit_standardize,
    mlp_source,
)

TABULAR = modality.get("tabular")

CARD = Path("run/model.json")


def forward(source, x: torch.Tensor) -> torch.Tensor:
    for block in source.blocks.values():
        x = block(x)
    return source.pool(x)


def test_unbound_source_adapts_to_the_feature_count() -> None:
    unbound = mlp_source("mlp_small", pretrained=False)
    assert unbound.modality == "tabular" and unbound.architecture == "mlp_small"
    assert len(unbound.blocks) == 0 and unbound.num_features == 0
    assert unbound.preprocessing == Standardize((), (), ()) and unbound.weights_origin == "random init"
    assert unbound.fresh().adapt is not None
    bound = unbound.adapt(5)
    assert list(bound.blocks) == ["hidden1", "hidden2", "hidden3"] and bound.adapt is None
    assert bound.num_features == 64 and bound.modality == "tabular" and not bound.pretrained
    first = bound.blocks["hidden1"]
    assert isinstance(first[0], nn.Linear) and first[0].in_features == 5 and isinstance(first[1], nn.ReLU)
    assert isinstance(bound.pool, nn.Identity)
    assert bound.preprocessing.columns == ("x1", "x2", "x3", "x4", "x5")  # identity placeholder
    out = forward(bound, torch.randn(4, 5))
    assert out.shape == (4, 64) and (out >= 0).all()
    tiny = mlp_source("mlp_tiny", False, n_features=2)
    assert [b[0].out_features for b in tiny.blocks.values()] == list(MLP_WIDTHS["mlp_tiny"])


def test_adapt_keeps_the_fitted_preprocessing_and_fresh_is_the_same_architecture() -> None:
    pre = Standardize(("a", "b", "c"), (1.0, 2.0, 3.0), (1.0, 0.5, 2.0))
    source = mlp_source("mlp_tiny", pretrained=False).adapt(3, pre)
    assert source.preprocessing is pre
    fresh = source.fresh()
    assert fresh.preprocessing == pre and fresh.architecture == source.architecture
    own, other = source.blocks, fresh.blocks
    assert list(own) == list(other)
    shapes = {k: v.shape for k, v in nn.Sequential(own).state_dict().items()}
    assert shapes == {k: v.shape for k, v in nn.Sequential(other).state_dict().items()}
    assert not torch.equal(own["hidden1"][0].weight, other["hidden1"][0].weight)
    with pytest.raises(UserError, match=r"prepared for 3 feature columns \(a, b, c\) but the data has 4"):
        mlp_source("mlp_tiny", pretrained=False).adapt(4, pre)
    with pytest.raises(UserError, match="from 1 to 100000 feature columns, not 0"):
        mlp_source("mlp_tiny", pretrained=False).adapt(0)


def test_weights_load_when_bound_or_when_adapted(tmp_path: Path) -> None:
    trained = mlp_source("mlp_tiny", False, n_features=3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in nn.Sequential(trained.blocks).state_dict().items()}, str(path))
    x = torch.randn(2, 3)
    for source in (mlp_source("mlp_tiny", weights=path, n_features=3), mlp_source("mlp_tiny", weights=path).adapt(3)):
        assert source.pretrained and source.weights_origin == f"file {path}"
        assert torch.equal(forward(source, x), forward(trained, x))
        assert not torch.equal(forward(source.fresh(), x), forward(trained, x))
        assert not source.fresh().pretrained
    unbound = mlp_source("mlp_tiny", weights=path)
    assert unbound.pretrained and len(unbound.blocks) == 0  # the file is read only when adapted
    with pytest.raises(UserError, match=r"was trained on 3 feature columns but the data has 4"):
        unbound.adapt(4)
    with pytest.raises(UserError, match=r"does not fit the architecture"):
        mlp_source("mlp_small", weights=path, n_features=3)


def test_pretrained_without_weights_and_unknown_names_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"mlp_small has no pretrained weights: train it first \(transferlab pretrain "
                                        r"DATA --arch mlp_small --out DIR\).*scratch:mlp_small"):
        mlp_source("mlp_small")
    with pytest.raises(UserError, match=r"has no pretrained weights"):
        mlp_source("mlp_tiny", n_features=2)
    with pytest.raises(UserError, match=r"unknown MLP 'mlp_smal' \(did you mean 'mlp_small'"):
        mlp_source("mlp_smal", False)


def test_standardize_transform_and_round_trip() -> None:
    pre = Standardize(("x1", "x2"), (1.0, -2.0), (2.0, 0.5))
    assert pre.modality == "tabular" and pre.collate is None and pre.num_features == 2 and pre.resized(64) is pre
    transform = pre.transform(augment=True)
    out = transform(np.array([3.0, -1.0], dtype=np.float32))
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 2.0]
    assert transform(np.array([np.nan, -2.0])).tolist() == [0.0, 0.0]  # missing -> the training mean
    assert pickle.loads(pickle.dumps(transform))(np.array([1.0, -2.0])).tolist() == [0.0, 0.0]
    with pytest.raises(UserError, match=r"a row has 3 features but the source takes 2 \(x1, x2\)"):
        transform(np.zeros(3))
    d = pre.to_dict()
    assert d == {"columns": ["x1", "x2"], "mean": [1.0, -2.0], "std": [2.0, 0.5], "kind": "standardize",
                 "impute": "none"}
    TABULAR.check_card(CARD, d)
    assert Standardize.from_dict(d) == pre
    assert Standardize.identity(["a"]) == Standardize(("a",), (0.0,), (1.0,))


def test_fit_standardize_on_a_training_split() -> None:
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, np.nan], [5.0, 5.0, 2.0]], dtype=np.float32)
    pre = fit_standardize(x, ["a", "b", "c"])
    assert pre.columns == ("a", "b", "c")
    np.testing.assert_allclose(pre.mean, [3.0, 5.0, 1.0])
    np.testing.assert_allclose(pre.std, [np.sqrt(8 / 3), 1.0, 1.0])  # constant column: std 1.0
    z = torch.stack([pre.transform()(row) for row in x])
    np.testing.assert_allclose(z[:, 0].mean().item(), 0.0, atol=1e-6)
    assert z[:, 1].tolist() == [0.0, 0.0, 0.0]
    TABULAR.check_card(CARD, pre.to_dict())
    with pytest.raises(ValueError, match="do not match 2 columns"):
        fit_standardize(x, ["a", "b"])


GOOD = {"kind": "standardize", "columns": ["a", "b"], "mean": [0.0, 1.0], "std": [1.0, 2.0]}
BAD = [
    ({"kind": "words"}, "preprocessing.kind"),
    ({"columns": []}, "preprocessing.columns"),
    ({"columns": ["a", 3]}, "preprocessing.columns"),
    ({"columns": ["a", "a"]}, "preprocessing.columns"),
    ({"columns": [f"c{i}" for i in range(100_001)]}, "preprocessing.columns"),
    ({"mean": [0.0]}, "preprocessing.mean"),
    ({"mean": [0.0, float("nan")]}, "preprocessing.mean"),
    ({"mean": [0.0, True]}, "preprocessing.mean"),
    ({"std": "1"}, "preprocessing.std"),
    ({"std": [1.0, 1e39]}, "preprocessing.std"),
    ({"std": [1.0, 0.0]}, "preprocessing.std"),
    ({"std": [1.0, -1.0]}, "preprocessing.std"),
    ({"std": [1.0, 1e-50]}, "preprocessing.std"),  # zero in float32
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_check_standardize_dict_names_the_card_and_field(change: dict, field: str) -> None:
    TABULAR.check_card(CARD, GOOD)
    with pytest.raises(UserError, match=rf"^run/model\.json is not a usable model card: field {field} "):
        TABULAR.check_card(CARD, {**GOOD, **change})


@pytest.mark.usefixtures("one_thread")
def test_a_standardized_mlp_learns_separable_blobs() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0]])  # far apart and far from the origin's scale
    x = np.concatenate([rng.normal(c, 5.0, size=(30, 2)) for c in centres]).astype(np.float32)
    y = torch.arange(3).repeat_interleave(30)
    source = mlp_source("mlp_tiny", False).adapt(2, fit_standardize(x, ["x1", "x2"]))
    transform = source.preprocessing.transform()
    inputs = torch.stack([transform(row) for row in x])
    torch.manual_seed(0)
    model = nn.Sequential(*source.blocks.values(), source.pool, nn.Linear(source.num_features, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), y).backward()
        optimizer.step()
    assert (model(inputs).argmax(1) == y).float().mean() > 0.95
