"""A finished transferlab run directory is itself a source (the develop model approach's reuse step)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.sources.base import Preprocessing, Source
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


def load_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The trained TransferModel of a finished run directory and its card."""
    from transferlab.model import build_model
    from transferlab.sources import load_source

    card = read_card(run_dir)
    skeleton = load_source(card["architecture"], pretrained=False)
    model = build_model(skeleton, len(card["classes"]), reuse=None, pretrained=False)
    load_checked(model, read_state_dict(run_dir / "model.safetensors"), f"{run_dir / 'model.safetensors'}")
    model.eval()
    return model, card


def run_source(run_dir: Path) -> Source:
    """A run directory as a source: its blocks, pool and trained head (the new source head)."""
    from transferlab.sources import load_source

    model, card = load_run(run_dir)
    architecture = card["architecture"]
    return Source(
        name=str(run_dir),
        architecture=architecture,
        blocks=OrderedDict(zip(card["block_names"], model.blocks, strict=True)),
        pool=model.pool,
        num_features=model.head.in_features,
        preprocessing=Preprocessing.from_dict(card["preprocessing"]),
        pretrained=True,
        weights_origin=f"run directory {run_dir}",
        rebuild=lambda: load_source(architecture, pretrained=False),
        classifier=model.head,
        source_classes=list(card["classes"]),
    )
