"""Checking a run card (``model.json``) field by field: it is untrusted input, and a bad field is one sentence
naming the card and the field. The modalities check their own preprocessing fields with these."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transferlab.errors import UserError


def card_error(card_path: Path, field: str, problem: str) -> UserError:
    return UserError(f"{card_path} is not a usable model card: field {field} {problem} (was it edited? restore it "
                     "or train again)")


def show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def int_field(card_path: Path, field: str, v: Any, low: int, high: int) -> None:
    if not is_int(v) or not low <= v <= high:
        raise card_error(card_path, field, f"must be a whole number from {low} to {high}, not {show(v)}")


def strings(card_path: Path, field: str, v: Any, unique: bool = True) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
        raise card_error(card_path, field, "must be a non-empty list of non-empty strings")
    if unique and len(set(v)) != len(v):
        raise card_error(card_path, field, "must not repeat a name")
    return v
