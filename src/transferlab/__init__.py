"""transferlab: reuse all or part of a source model, frozen or tuned, and measure whether transfer helped."""

from __future__ import annotations

from transferlab._version import __version__
from transferlab.errors import UserError

_API = {"fit", "compare", "pretrain", "layers", "predict", "export", "demo", "advise", "rank", "list_sources",
        "source_blocks"}
__all__ = ["UserError", "__version__", *sorted(_API)]


def __getattr__(name: str):  # lazy: importing transferlab does not import torch
    if name in _API:
        from transferlab import api

        return getattr(api, name)
    raise AttributeError(name)
