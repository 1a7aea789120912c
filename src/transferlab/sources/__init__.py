"""Sources: where the knowledge comes from. ``load_source(spec)`` accepts every kind of source the catalogue
declares (:mod:`transferlab.catalogue`): a built-in name, a prefix such as ``timm:``, a word-vectors file or store,
a run directory, and ``scratch:<any of these>``."""

from __future__ import annotations

from pathlib import Path

import torch

from transferlab import catalogue
from transferlab.sources.base import ImagePreprocessing, Source

__all__ = ["ImagePreprocessing", "Source", "load_source", "known_sources"]

SOURCE_SEED = 0  # the seed of any random weights a source is loaded with (see load_source)


def load_source(
    spec: str,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    max_vectors: int | None = None,
    encoding_errors: str = "strict",
) -> Source:
    """The source a spec names (see :mod:`transferlab.catalogue`); ``scratch:<spec>`` or ``pretrained=False``: the
    same architecture with random weights.

    Random weights drawn while loading (``scratch:<source>``, the new parts of an unbound source) come from a
    generator seeded by :data:`SOURCE_SEED` alone, whatever ran before: the same source spec is the same source in
    ``fit``, in every ``compare`` cell and in ``rank``. The global generator is left as it was."""
    found = catalogue.find_source(spec)
    if found is None:
        raise catalogue.unknown_source(spec)
    kind, rest = found
    scratch = spec.startswith("scratch:")
    request = catalogue.Request(
        spec=catalogue.canonical(spec.removeprefix("scratch:")), rest=rest or kind.name,
        pretrained=pretrained and not scratch, weights=None if scratch or weights is None else Path(weights),
        max_vectors=max_vectors, encoding_errors=encoding_errors)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SOURCE_SEED)
        return kind.load(request)


def known_sources() -> list[dict[str, str]]:
    """Every kind of source in the catalogue, well-known ones by name, with whether their weights are available
    offline right now."""
    rows = []
    for kind in (k for k in catalogue.source_kinds() if k.listed):
        for spec in kind.examples or (kind.name,):
            offline = catalogue._resolve(kind.offline)(spec) if kind.offline else \
                "if cached" if kind.weights.startswith(("--weights", "the folder")) else "yes"
            rows.append({"source": spec if not kind.by_path else kind.summary, "weights": kind.weights,
                         "offline": offline, "modality": kind.modality or "its card's"})
    return rows
