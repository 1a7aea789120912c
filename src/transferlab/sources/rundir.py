"""A finished transferlab run directory is itself a source (the develop model approach's reuse step)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.sources.base import Source, preprocessing_from_dict
from transferlab.sources.weights import load_checked, read_state_dict

MODEL_FORMAT = "transferlab.model/1"


def write_model(run_dir: Path, model: Any, card: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and the ``model.json`` card (the card last: it marks the model complete)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run_dir / "model.safetensors"))
    write_card(run_dir, {"format": MODEL_FORMAT, **card})


def write_card(run_dir: Path, card: dict[str, Any]) -> None:
    """Write ``model.json`` atomically."""
    tmp = run_dir / "model.json.tmp"
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(run_dir / "model.json")


def read_card(run_dir: Path) -> dict[str, Any]:
    card_path = run_dir / "model.json"
    if not (run_dir / "config.json").is_file() and not card_path.is_file():
        raise UserError(f"{run_dir} is not a transferlab run directory (no model.json)")
    if (run_dir / "INCOMPLETE").exists() or not card_path.is_file():
        raise UserError(f"run directory {run_dir} is incomplete (interrupted?): resume it with --resume first")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{card_path} is not valid JSON (line {e.lineno})") from None
    if card.get("format") != MODEL_FORMAT:
        raise UserError(f"{card_path} is not a transferlab model card (format {card.get('format')!r})")
    return card


def skeleton(card: dict[str, Any]) -> Source:
    """A randomly initialised source of the card's architecture (word models: over the card's vocabulary)."""
    from transferlab.sources import load_source

    source = load_source(card["architecture"], pretrained=False)
    if source.adapt is not None:
        source = source.adapt(card["preprocessing"]["vocab"][2:])  # without <pad> and <unk>
    return source


def load_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The trained TransferModel of a finished run directory and its card."""
    from transferlab.model import build_model

    card = read_card(run_dir)
    skeleton_source = skeleton(card)
    model = build_model(skeleton_source, len(card["classes"]), reuse=None, pretrained=False)
    load_checked(model, read_state_dict(run_dir / "model.safetensors"), f"{run_dir / 'model.safetensors'}")
    model.eval()
    return model, card


def run_source(run_dir: Path) -> Source:
    """A run directory as a source: its blocks, pool and trained head (the new source head)."""
    model, card = load_run(run_dir)
    architecture = card["architecture"]
    modality = card.get("modality", "image")
    return Source(
        name=str(run_dir),
        architecture=architecture,
        blocks=OrderedDict(zip(card["block_names"], model.blocks, strict=True)),
        pool=model.pool,
        num_features=model.head.in_features,
        preprocessing=preprocessing_from_dict(card["preprocessing"]),
        pretrained=True,
        weights_origin=f"run directory {run_dir}",
        rebuild=lambda: skeleton(card),
        classifier=model.head,
        source_classes=list(card["classes"]),
        modality=modality,
        cache_partial=modality == "image",
    )
