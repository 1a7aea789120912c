"""Errors a user can cause. The CLI prints their message as one sentence and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input or an impossible request: the message says what is wrong and what to do."""


class Unusable(Exception):
    """One input (a file, a line) cannot be used; the message is the short reason. Skipped and listed, or refused
    under ``--strict``, by whoever reads many inputs."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X or Y?)' for close matches of ``name`` among ``choices``, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
