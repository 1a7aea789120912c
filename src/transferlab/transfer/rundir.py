"""A finished transferlab run directory is itself a source (the develop model approach's reuse step).

The card (``model.json``) is read as untrusted input: :func:`read_card` checks its schema, and :func:`load_run`
rebuilds only what a card may name (a built-in, ``timm:<arch>``, ``torchvision:<arch>``, ``words:...``, or a
sentence-transformers folder) with random weights, then loads ``model.safetensors`` over it. A card never names a
run directory or a weights file to load, never makes the tool download anything (a hub model must already be in
the local Hugging Face cache), and a relative folder in it is resolved against the run directory. Anything wrong
is one sentence naming the card and the field.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from transferlab import catalogue
from transferlab import modality as modalities
from transferlab.cardcheck import card_error, int_field, is_number, show, strings
from transferlab.catalogue import Request
from transferlab.config import METRICS
from transferlab.errors import UserError
from transferlab.evaluate.calibration import T_RANGE
from transferlab.files import atomic_write, read_json
from transferlab.modality import MODALITY_NAMES
from transferlab.sources.base import Source
from transferlab.sources.text import (
    BUILTIN_ENCODER,
    builtin_encoder_path,
)
from transferlab.sources.weights import load_checked, read_state_dict
from transferlab.transfer.model import build_model

MODEL_FORMAT = "transferlab.model/1"
CARD = "model.json"
WEIGHTS = "model.safetensors"
def architectures() -> str:
    """What a card's architecture may be: the catalogue's kinds that cards may name."""
    return "one of " + ", ".join(f"{k.name}<...>" if k.is_prefix else k.name for k in catalogue.source_kinds()
                                 if k.in_cards)
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def write_model(run_dir: Path, model: Any, card: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and the ``model.json`` card (the card last: it marks the model complete)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    write_card(run_dir, {"format": MODEL_FORMAT, **card})


def write_card(run_dir: Path, card: dict[str, Any]) -> None:
    """Write ``model.json`` atomically."""
    atomic_write(run_dir / CARD, json.dumps(card, indent=2))


# --- reading and checking a card ------------------------------------------------------------------------------


def architecture_kind(arch: str) -> str | None:
    """The catalogue's kind of an architecture spec in a card, when a card may name it (a built-in, ``timm:``,
    ``torchvision:``, ``words:...``, ``sentence-transformers:``); None for anything else (a run directory, a
    weights or vectors file, ``scratch:...``): a card cannot name those."""
    kind = catalogue.in_cards(arch)
    return None if kind is None else kind.name


def check_card(card: Any, card_path: Path) -> dict[str, Any]:
    """The card if its schema is sound, else one sentence naming ``card_path`` and the field at fault."""
    if not isinstance(card, dict):
        raise UserError(f"{card_path} is not a transferlab model card (not a JSON object)")
    if card.get("format") != MODEL_FORMAT:
        raise UserError(f"{card_path} is not a transferlab model card (format {show(card.get('format'))})")
    arch = card.get("architecture")
    if not isinstance(arch, str) or architecture_kind(arch) is None:
        raise card_error(card_path, "architecture", f"must be {architectures()}, not {show(arch)}")
    strings(card_path, "block_names", card.get("block_names"))
    strings(card_path, "classes", card.get("classes"))
    modality = card.get("modality", "image")
    if modality not in MODALITY_NAMES:
        raise card_error(card_path, "modality", f"must be one of {', '.join(MODALITY_NAMES)}, not {show(modality)}")
    if "num_features" in card:
        int_field(card_path, "num_features", card["num_features"], 1, 10_000_000)
    pre = card.get("preprocessing")
    if not isinstance(pre, dict):
        raise card_error(card_path, "preprocessing", "must be an object saying how inputs are prepared, not "
                                                       f"{show(pre)}")
    modalities.get(modality).check_card(card_path, pre)
    calibration = card.get("calibration", {})  # cards written before calibration: none (a temperature of 1)
    if not isinstance(calibration, dict):
        raise card_error(card_path, "calibration", f"must be an object, not {show(calibration)}")
    temperature = calibration.get("temperature", 1.0)
    if not (is_number(temperature) and T_RANGE[0] <= temperature <= T_RANGE[1]):
        raise card_error(card_path, "calibration.temperature", f"must be a number from {T_RANGE[0]} to {T_RANGE[1]}, "
                                                               f"not {show(temperature)}")
    return card


def read_card(run_dir: Path) -> dict[str, Any]:
    """The ``model.json`` card of a finished run directory, its schema checked (see :func:`check_card`)."""
    run_dir = Path(run_dir)
    card_path = run_dir / CARD
    if not (run_dir / "config.json").is_file() and not card_path.is_file():
        raise UserError(f"{run_dir} is not a transferlab run directory (no model.json)")
    if (run_dir / "INCOMPLETE").exists() or not card_path.is_file():
        raise UserError(f"run directory {run_dir} is incomplete (interrupted?): resume it with --resume first")
    try:
        card = read_json(card_path, "model card")
    except UserError as e:
        raise UserError(f"{e}; it is not a transferlab model card") from None
    return check_card(card, card_path)


def card_metrics(card: dict[str, Any], card_path: Path) -> dict[str, Any]:
    """A finished run's test metrics, each checked (a reused ``compare`` cell's card may have been edited)."""
    m = card.get("metrics")
    if not isinstance(m, dict):
        raise card_error(card_path, "metrics", f"must be the run's test metrics, not {show(m)}")
    for key, low, high in (("test_accuracy", 0, 1), ("majority_baseline", 0, 1), ("test_loss", 0, math.inf),
                           ("train_wall_seconds", 0, math.inf)):
        if not is_number(m.get(key)) or not low <= m[key] <= high:
            raise card_error(card_path, f"metrics.{key}", f"must be a number from {low} to {high}, not "
                                                           f"{show(m.get(key))}")
    int_field(card_path, "metrics.test_size", m.get("test_size"), 1, 10**12)
    if m.get("metric", "accuracy") not in METRICS:
        raise card_error(card_path, "metrics.metric", f"must be one of {', '.join(METRICS)}, not "
                                                       f"{show(m.get('metric'))}")
    for key in ("test_score", "naive_score", "val_score"):  # val_score: null without a validation split
        if key in m and not (is_number(m[key]) and 0 <= m[key] <= 1) and not (key == "val_score" and m[key] is None):
            raise card_error(card_path, f"metrics.{key}", f"must be a number from 0 to 1, not {show(m[key])}")
    return m


# --- resolving what a card names ------------------------------------------------------------------------------


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's copy of ``repo_id``, never downloading; None when it is not there."""
    from huggingface_hub import snapshot_download

    for candidate in (repo_id, f"sentence-transformers/{repo_id}") if "/" not in repo_id else (repo_id,):
        try:
            return Path(snapshot_download(candidate, local_files_only=True))
        except Exception:  # not cached (LocalEntryNotFoundError), or an id the hub library rejects
            continue
    return None


def encoder_folder(spec: str, run_dir: Path, field: str) -> Path:
    """The local folder a card's sentence encoder or tokenizer lives in: an absolute folder, a folder relative to
    the run directory, or a hub model already in the local cache (never downloaded)."""
    card_path = run_dir / CARD
    path = Path(spec)
    if path.is_absolute():  # an encoder is not copied into every run: the card names where it lives
        folder = path
    else:
        if ".." in path.parts:
            raise card_error(card_path, field, f"names {spec!r}, outside the run directory: a relative folder must "
                                                 "lie inside it")
        folder = run_dir / path
        if not folder.is_dir() and ".." not in path.parts and _HUB_ID.fullmatch(spec):
            cached = _hub_snapshot(spec)
            if cached is None:
                raise UserError(
                    f"{card_path}: field {field} names {spec!r}, which is neither a folder in the run directory "
                    "nor a model in the local Hugging Face cache (a run card never downloads): fetch it once, e.g. "
                    "by training with that source, or restore the folder"
                )
            folder = cached
    if not folder.is_dir():
        raise UserError(f"{card_path}: field {field} names the folder {folder}, which does not exist (moved or "
                        "deleted?): restore it or train again")
    if (folder / CARD).exists():
        raise card_error(card_path, field, f"names a transferlab run directory ({folder}), not a sentence-transformers "
                                     "folder")
    return folder.resolve()


def resolve_card(card: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A copy of a checked card whose sentence-encoder and tokenizer locations are absolute local folders."""
    card = copy.deepcopy(card)
    arch = card["architecture"]
    if arch.startswith("sentence-transformers:"):
        folder = encoder_folder(arch.removeprefix("sentence-transformers:"), run_dir, "architecture")
        card["architecture"] = f"sentence-transformers:{folder}"
    pre = card["preprocessing"]
    if pre.get("kind") == "tokenizer":
        if arch == BUILTIN_ENCODER:  # the packaged encoder's own tokenizer, wherever the package is now
            pre["path"] = str(builtin_encoder_path())
        else:
            pre["path"] = str(encoder_folder(pre["path"], run_dir, "preprocessing.path"))
    return card


def skeleton(card: dict[str, Any], run_dir: Path) -> Source:
    """A randomly initialised source of a resolved card's architecture (word models: over the card's vocabulary).

    Only the kinds :func:`architecture_kind` accepts are built, without weights and without network access."""
    card_path = run_dir / CARD
    arch = card["architecture"]
    try:
        found = catalogue.find_source(arch) if catalogue.in_cards(arch) is not None else None
        if found is None:
            raise card_error(card_path, "architecture", f"must be {architectures()}, not {show(arch)}")
        kind, rest = found
        source = kind.load(catalogue.Request(spec=arch, rest=rest or kind.name, pretrained=False, from_card=True))
        source = modalities.get(card.get("modality", "image")).bind_card(source, card["preprocessing"])
    except UserError as e:
        if str(card_path) in str(e):
            raise
        raise card_error(card_path, "architecture", f"{arch!r} cannot be rebuilt ({e})") from None
    if source.modality != card.get("modality", "image"):
        raise card_error(card_path, "modality", f"{card.get('modality', 'image')!r} does not match the architecture "
                                          f"{arch!r} ({source.modality})")
    kind_here = getattr(source.preprocessing, "kind", None)
    if kind_here != card["preprocessing"].get("kind"):
        raise card_error(card_path, "preprocessing.kind", f"{card['preprocessing'].get('kind')!r} does not match the "
                                                    f"architecture {arch!r} ({kind_here!r})")
    names = list(source.blocks)
    if card["block_names"] != names:
        raise card_error(card_path, "block_names",
                   f"{show(card['block_names'])} does not match the blocks of {arch!r} ({names})")
    if card.get("num_features", source.num_features) != source.num_features:
        raise card_error(card_path, "num_features", f"{card['num_features']} does not match {arch!r} "
                                              f"({source.num_features})")
    return source


def load_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The trained TransferModel of a finished run directory and its card (checked, locations resolved)."""
    model, card, _ = _load(run_dir)
    return model, card


def _load(run_dir: Path) -> tuple[Any, dict[str, Any], Source]:
    """The trained model, the checked card, and the architecture it was rebuilt from."""
    run_dir = Path(run_dir)
    card_path, weights_path = run_dir / CARD, run_dir / WEIGHTS
    card = resolve_card(read_card(run_dir), run_dir)
    if weights_path.is_symlink():
        raise UserError(f"{weights_path} is a link: a run directory's weights must be a file inside it (copy the "
                        "run directory instead of linking its files)")
    source = skeleton(card, run_dir)
    # the skeleton already has random weights: copy its blocks rather than build a second random copy
    model = build_model(source, len(card["classes"]), reuse=None, pretrained=True)
    state = read_state_dict(weights_path)
    head = state.get("head.weight")
    if head is not None and head.dim() == 2 and head.shape[0] != len(card["classes"]):
        raise card_error(card_path, "classes", f"lists {len(card['classes'])} classes but the head in "
                                               f"{weights_path} has {head.shape[0]} outputs")
    try:
        load_checked(model, state, str(weights_path))
    except UserError as e:
        raise UserError(f"{card_path} does not describe the weights beside it ({e}): check its architecture, "
                        "block_names and preprocessing, or train again") from None
    model.eval()
    return model, card, source


def run_source(run_dir: Path) -> Source:
    """A run directory as a source: its blocks, pool and trained head (the new source head)."""
    model, card, rebuilt = _load(run_dir)
    architecture = card["architecture"]
    modality = modalities.get(card.get("modality", "image"))
    return Source(
        name=str(run_dir),
        architecture=architecture,
        blocks=OrderedDict(zip(card["block_names"], model.blocks, strict=True)),
        pool=model.pool,
        num_features=model.head.in_features,
        preprocessing=modality.preprocessing_from_dict(card["preprocessing"]),
        pretrained=True,
        weights_origin=f"run directory {run_dir}",
        rebuild=lambda: skeleton(card, Path(run_dir)),
        classifier=model.head,
        source_classes=list(card["classes"]),
        modality=modality.name,
        cache_partial=rebuilt.cache_partial,
        prefix_pool=rebuilt.prefix_pool,
    )


def load(r: Request) -> Source:
    """The catalogue's loader of run directories (``pretrained=False``: the same architecture, random weights)."""
    if r.weights is not None:
        raise UserError("--weights cannot be combined with a run directory source (it has its own weights)")
    source = run_source(Path(r.rest))
    return source if r.pretrained else source.fresh()
