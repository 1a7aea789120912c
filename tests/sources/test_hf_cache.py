"""Names users already know, offline: timm's pretrained tags and Hugging Face ids resolve from the local Hugging Face
cache; a model that is not there is one sentence saying how to fetch it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.sources import load_source


def cache_entry(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> Path:
    """A Hugging Face cache entry as huggingface_hub writes it: refs/main naming a snapshot holding ``files``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copytree(content, snapshot, dirs_exist_ok=True) if content.is_dir() else \
                shutil.copy(content, snapshot / name)
        else:
            (snapshot / name).write_bytes(content)
    return snapshot


def test_timm_tags_and_hf_hub_ids_load_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    import timm

    weights = {k: torch.randn_like(v) if v.is_floating_point() else v
               for k, v in timm.create_model("resnet18").state_dict().items()}
    save_file(weights, str(tmp_path / "model.safetensors"))
    cache_entry(tmp_path / "hub", "timm/resnet18.a1_in1k", {"model.safetensors": tmp_path / "model.safetensors"})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("timm:resnet18.a1_in1k", "hf-hub:timm/resnet18.a1_in1k", "timm:timm/resnet18.a1_in1k"):
        source = load_source(spec)
        assert "hub cache" in source.weights_origin, spec
        first = next(next(iter(source.blocks.values())).parameters())  # conv1's weight: the cached file's
        assert torch.equal(first, weights["conv1.weight"]), spec
    with pytest.raises(UserError, match=r"resnet18.a2_in1k are available offline .*`hf download timm/resnet18.a2_"):
        load_source("timm:resnet18.a2_in1k")  # a tag timm knows, not cached here
    with pytest.raises(UserError, match="timm has no pretrained weights 'resnet18.nosuch'"):
        load_source("timm:resnet18.nosuch")


def test_a_sentence_transformers_id_loads_from_the_cache_and_says_when_it_is_not_there(tmp_path: Path) -> None:
    """In a fresh process (transformers reads the cache's location when it is imported)."""
    from transferlab.sources.text import builtin_encoder_path

    cache_entry(tmp_path / "hub", "sentence-transformers/all-MiniLM-L6-v2", {"": builtin_encoder_path()})
    script = ("import sys; from transferlab.sources import load_source; from transferlab.errors import UserError\n"
              "s = load_source('sentence-transformers:sentence-transformers/all-MiniLM-L6-v2'); print(len(s.blocks))\n"
              "try:\n    load_source('sentence-transformers:sentence-transformers/all-mpnet-base-v2')\n"
              "except UserError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks, message = proc.stdout.strip().splitlines()[-2:]
    assert int(blocks) == 7  # embeddings and 6 layers: MiniLM-L6, found in the cache
    assert "all-mpnet-base-v2 is not in the local Hugging Face cache" in message
    assert "`hf download sentence-transformers/all-mpnet-base-v2`" in message
