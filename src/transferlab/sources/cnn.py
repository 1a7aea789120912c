"""A small built-in CNN family with clearly separated blocks, for the develop model approach on a CPU.

These have no pretrained weights: train one (``transferlab fit ... --strategy scratch``) and use its run directory
as the source.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

from torch import nn

from transferlab.catalogue import Request
from transferlab.errors import UserError
from transferlab.sources.base import GlobalPool, ImagePreprocessing, Source
from transferlab.sources.weights import load_checked, read_state_dict

WIDTHS = {"cnn_tiny": (8, 16, 32), "cnn_small": (32, 64, 128, 256)}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def simple_cnn(name: str, pretrained: bool = True, weights: Path | None = None) -> Source:
    """``cnn_tiny`` / ``cnn_small``: conv-BN-ReLU-maxpool blocks, global average pooling."""
    widths = WIDTHS[name]
    pairs = zip((3, *widths[:-1]), widths, strict=True)
    blocks = OrderedDict((f"conv{i + 1}", _block(c_in, c_out)) for i, (c_in, c_out) in enumerate(pairs))
    origin = "random init"
    if weights is not None:
        holder = nn.Sequential(blocks)
        load_checked(holder, read_state_dict(weights), f"weights file {weights}")
        origin = f"file {weights}"
    elif pretrained:
        raise UserError(
            f"{name} has no pretrained weights: train it first (transferlab fit DATA --source {name} "
            "--strategy scratch --out DIR) and use DIR as the source, or use scratch:" + name
        )
    return Source(
        name=name,
        architecture=name,
        blocks=blocks,
        pool=GlobalPool(),
        num_features=widths[-1],
        preprocessing=ImagePreprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        pretrained=weights is not None,
        weights_origin=origin,
        rebuild=functools.partial(simple_cnn, name, False),
    )


def load(r: Request) -> Source:
    """The catalogue's loader of ``cnn_tiny`` and ``cnn_small``."""
    return simple_cnn(r.rest, r.pretrained, r.weights)
