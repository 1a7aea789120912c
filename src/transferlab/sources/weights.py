"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``; shapes checked key by key."""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from transferlab.errors import UserError
from transferlab.files import check_file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a pickle-based checkpoint, never executing code."""
    path = Path(path)
    check_file(path, "weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"weights file {path} is not a valid safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"weights file {path} cannot be loaded safely (only tensors are accepted, with "
            f"torch.load(weights_only=True)): {first}"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"weights file {path} does not hold a state dict of tensors")
    return dict(obj)


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``model`` after asserting that every key exists and every shape matches."""
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in state:
            raise UserError(f"{origin} does not fit the architecture: key {key!r} is missing")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{origin} does not fit the architecture: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise UserError(f"{origin} does not fit the architecture: unexpected key {extra[0]!r}")
    model.load_state_dict(state, strict=True)


def online(host: str) -> bool:
    """Whether ``host`` resolves (a cheap offline check; HF_HUB_OFFLINE=1 forces offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("TRANSFERLAB_OFFLINE"):
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True

def hf_cache_dir() -> Path:
    """Where Hugging Face keeps downloaded models (``HF_HUB_CACHE``, ``HF_HOME``/hub, or ~/.cache/huggingface/hub)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def hf_cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of the model ``repo_id`` (``org/name``)."""
    if repo_id.count("/") != 1:
        return False
    snapshots = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())
