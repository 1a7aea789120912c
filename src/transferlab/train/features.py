"""The on-disk cache of a frozen prefix's features (the inference itself: ``transfer.model.run_inference``)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from transferlab.files import atomic_write, cache_dir
from transferlab.sources.base import tensors_digest
from transferlab.transfer.model import run_inference

CACHE_FORMAT = 2  # 2: the payload's sha256 is in the metadata
log = logging.getLogger(__name__)


def cache_key(**parts: Any) -> str:
    """A stable key over everything that determines cached features."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_features(
    key: str, prefix: nn.Module, loaders: Mapping[str, DataLoader], progress: bool, rank: int = 0, world: int = 1,
    channels_last: bool = False,
) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Outputs of the frozen ``prefix`` for every split: read from the cache, or computed once and stored.

    Under DDP (``world`` > 1, process group initialised) every process runs the prefix on its share of each split
    (every ``world``-th example), the shares are gathered, and rank 0 writes the cache: nothing is computed twice.
    Returns the features, whether they came from the cache, and the seconds their extraction took (recorded in
    the cache, so a cache hit still knows what the features cost).
    """
    path = cache_dir("features") / f"{key}.safetensors"
    hit = _read_cache(path, loaders)
    if world > 1:  # every process must take the same branch, or the gathering below waits forever
        import torch.distributed as dist

        hits: list[Any] = [None] * world
        dist.all_gather_object(hits, hit is not None)
        if not all(hits):
            hit = None
    if hit is not None:
        return hit
    tick = time.perf_counter()
    if channels_last:  # the modality's images in the layout convolutions run fastest on (see channels_last)
        prefix = prefix.to(memory_format=torch.channels_last)
    if world > 1:
        import torch.distributed as dist

        feats = {}
        for split, dl in loaders.items():
            n = len(dl.dataset)
            if n == 0:
                feats[split] = torch.zeros(0)
                continue
            share = DataLoader(torch.utils.data.Subset(dl.dataset, range(rank, n, world)), batch_size=dl.batch_size,
                               collate_fn=dl.collate_fn, num_workers=dl.num_workers)
            log.debug("features (%s, rank %d): %d of %d examples", split, rank, len(share.dataset), n)
            mine = run_inference(prefix, share, f"features ({split}, rank {rank})", progress,
                                 channels_last) if rank < n else None
            shares: list[Any] = [None] * world
            dist.all_gather_object(shares, mine)
            parts = [s for s in shares if s is not None]
            out = torch.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
            for r, s in enumerate(shares):
                if s is not None:
                    out[r::world] = s
            feats[split] = out
    else:
        feats = {split: run_inference(prefix, dl, f"features ({split})", progress, channels_last)
                 for split, dl in loaders.items()}
    seconds = time.perf_counter() - tick
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"seconds": f"{seconds:.4f}", "sha256": _cache_digest(feats)}
        atomic_write(path, lambda tmp: save_file(feats, str(tmp), metadata=meta))
    return feats, False, seconds


def _cache_digest(feats: dict[str, torch.Tensor]) -> str:
    """The checksum a cache entry records: by split name, whatever order the file gives them back in."""
    return tensors_digest(dict(sorted(feats.items())))


def _read_cache(path: Path, loaders: Mapping[str, DataLoader]) -> tuple[dict[str, torch.Tensor], bool, float] | None:
    """A cache entry whose payload matches its recorded checksum, or None (then it is recomputed, with a warning
    when the file was there but damaged)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        feats = load_file(str(path))
        problem = ("it holds other splits" if set(feats) != set(loaders) else
                   "its checksum does not match its contents" if meta.get("sha256") != _cache_digest(feats) else None)
    except Exception as e:  # a damaged cache file is recomputed, never trusted
        problem = f"it is unreadable: {(str(e).splitlines() or [type(e).__name__])[0][:120]}"
    if problem is not None:
        log.warning("recomputing the cached features in %s: %s", path, problem)
        return None
    log.info("features loaded from cache %s", path)
    return feats, True, float(meta.get("seconds", "nan"))
