from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.sources import load_source
from transferlab.sources.base import check_decomposition
from transferlab.sources.weights import load_checked, read_state_dict
from transferlab.sources.zoo import _torchvision_blocks


def _top1(source, image: Image.Image) -> int:
    x = source.preprocessing.transform()(image)[None]
    with torch.no_grad():
        feats = x
        for block in source.blocks.values():
            block.eval()
            feats = block(feats)
        source.classifier.eval()
        return int(source.classifier(source.pool(feats)).argmax())


def test_efficientnet_lite0_weights_are_real_imagenet_weights() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    source = load_source("efficientnet_lite0")
    assert len(source.blocks) == 9 and source.num_features == 1280
    assert 281 <= _top1(source, Image.fromarray(skimage_data.chelsea())) <= 285  # a cat
    assert _top1(source, Image.fromarray(skimage_data.coffee())) == 967  # espresso


def test_scratch_is_same_architecture_with_other_weights() -> None:
    pre = load_source("efficientnet_lite0")
    scratch = load_source("scratch:efficientnet_lite0")
    assert list(pre.blocks) == list(scratch.blocks)
    pairs = zip(pre.blocks["stem"].state_dict().items(), scratch.blocks["stem"].state_dict().items(), strict=True)
    for (k1, a), (k2, b) in pairs:
        assert k1 == k2 and a.shape == b.shape
    assert not torch.equal(pre.blocks["stem"][0].weight, scratch.blocks["stem"][0].weight)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "mobilenet_v3_small", "inception_v3"])
def test_torchvision_blocks_reproduce_the_model(arch: str) -> None:
    import torchvision

    kwargs = {"aux_logits": True, "init_weights": False, "transform_input": True} if arch == "inception_v3" else {}
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    blocks, pool, classifier, _ = _torchvision_blocks(arch, model)
    assert len(blocks) >= 5
    assert check_decomposition(model, blocks, pool, classifier, 96)


def test_torchvision_classics_build_without_weights() -> None:
    vgg = load_source("scratch:torchvision:vgg16")
    assert list(vgg.blocks) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert vgg.num_features == 4096
    assert load_source("scratch:torchvision:inception_v3").preprocessing.input_size == 299


def test_timm_model_is_split_into_stages() -> None:
    src = load_source("scratch:timm:resnet18")
    assert list(src.blocks) == ["stem", "layer1", "layer2", "layer3", "layer4"]


def test_offline_without_weights_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="--weights FILE"):
        load_source("timm:resnet18")
    with pytest.raises(UserError, match="--weights FILE"):
        load_source("torchvision:resnet50")


def test_unknown_source_suggests_close_match() -> None:
    with pytest.raises(UserError, match="did you mean 'efficientnet_lite0'"):
        load_source("efficientnet_lit0")
    with pytest.raises(UserError, match="resnet50"):
        load_source("timm:resnet5O")


def test_weights_file_shape_mismatch_names_first_key(tmp_path: Path) -> None:
    import timm

    state = timm.create_model("resnet18").state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(1, 2, 3, 3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(UserError, match=r"'layer2\.0\.conv1\.weight' has shape \(1, 2, 3, 3\)"):
        load_source("timm:resnet18", weights=path)


def test_weights_file_that_fits_is_loaded(tmp_path: Path) -> None:
    import timm

    state = timm.create_model("resnet18").state_dict()
    path = tmp_path / "w.pth"
    torch.save(state, path)
    src = load_source("timm:resnet18", weights=path)
    assert torch.equal(src.blocks["stem"][0].weight, state["conv1.weight"])
    assert src.weights_origin == f"file {path}"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)
    torch.save({"conv.weight": torch.zeros(1), "x": _Payload(marker)}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(UserError, match="cannot be loaded safely"):
            read_state_dict(p)
    assert not marker.exists()


def test_load_checked_rejects_missing_and_extra_keys() -> None:
    model = torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(2, 2)))
    with pytest.raises(UserError, match="'fc.bias' is missing"):
        load_checked(model, {"fc.weight": torch.zeros(2, 2)}, "w")
    extra = {**model.state_dict(), "other": torch.zeros(1)}
    with pytest.raises(UserError, match="unexpected key 'other'"):
        load_checked(model, extra, "w")


def test_builtin_cnn_needs_training_first() -> None:
    with pytest.raises(UserError, match="no pretrained weights"):
        load_source("cnn_tiny")
    src = load_source("scratch:cnn_tiny")
    assert list(src.blocks) == ["conv1", "conv2", "conv3"]
    x = torch.from_numpy(np.zeros((1, 3, 32, 32), dtype=np.float32))
    assert src.pool(src.blocks["conv3"](src.blocks["conv2"](src.blocks["conv1"](x)))).shape == (1, 32)
