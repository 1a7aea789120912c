"""The image modality's input-size rules for sources that fix their input size (ViTs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from transferlab.errors import UserError
from transferlab.modality.image import check_input_size, cpu_input_size
from transferlab.sources import load_source


def test_a_vit_keeps_its_own_size_on_a_cpu_and_a_wrong_size_names_it() -> None:
    vit = load_source("timm:vit_tiny_patch16_224", pretrained=False)
    assert list(vit.blocks)[:2] == ["patch_embed", "block1"]
    data = SimpleNamespace(train=SimpleNamespace(native_size=lambda: 28))
    assert cpu_input_size(vit, data) == 224  # 64 px would not run: position embeddings fix the size
    with pytest.raises(UserError, match="takes only its own input size, 224 px"):
        check_input_size(vit, 64)
