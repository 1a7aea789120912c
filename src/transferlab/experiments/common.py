"""What every experiment shares: its locked output folder (created, resumed or started over), the atomic results
file that marks it complete, JSON-safe results, and the modality its data and sources share."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transferlab import modality as modalities
from transferlab.config import RUNTIME_OPTIONS, FitConfig, first_difference
from transferlab.errors import UserError
from transferlab.files import (
    LOCK,
    atomic_write,
    check_overwritable,
    clear_output,
    is_global_zero,
    mark,
    read_json,
    write_json,
)
from transferlab.files import locked as locked_folder
from transferlab.modality import Modality

log = logging.getLogger(__name__)

EXPERIMENTS = {"compare": "comparison", "layers": "layer sweep", "rank": "ranking", "advise": "advice"}
RESULTS = {"advise": "advice.json"}  # the file that marks an experiment complete (default: results.json)


@contextlib.contextmanager
def experiment_folder(out: Path, config: dict[str, Any], resume: bool, kind: str, overwrite: bool = False,
                      locked: bool = False) -> Iterator[bool]:
    """Lock ``out`` for an experiment (``kind``: compare, layers or rank) for the ``with`` block (``locked``: the
    caller holds the lock already, taken before any data or model loaded) and make it ready: a new folder, or for
    ``--resume`` one that holds the same experiment; ``--overwrite`` empties it only when it is wholly a
    transferlab ``kind`` folder. Under DDP only rank 0 touches the folder; the block gets whether this process is
    rank 0 (the one that writes results)."""
    out = Path(out)
    zero = is_global_zero()
    with contextlib.nullcontext() if locked or not zero else locked_folder(out, f"the {EXPERIMENTS[kind]} folder"):
        if zero:
            _prepare(out, config, resume, kind, overwrite)
        yield zero


def _prepare(out: Path, config: dict[str, Any], resume: bool, kind: str, overwrite: bool) -> None:
    what, path = EXPERIMENTS[kind], out / f"{kind}.json"
    if any(p.name != LOCK for p in out.iterdir()):
        if overwrite:
            check_overwritable(out, kind)
            clear_output(out)
        elif not path.is_file():
            raise UserError(f"--out {out} holds files that are not a transferlab {what}; choose another --out")
        else:
            old = read_json(path, f"the {what}'s record")
            if not isinstance(old, dict):
                raise UserError(f"{path} is not a transferlab {what} record (was it edited?): --overwrite starts the "
                                f"{what} over")
            diff = first_difference(old, config)
            if diff is not None:
                key, was, now = diff
                raise UserError(f"--out {out} holds another experiment (its {key} is {was!r}, now {now!r}); choose "
                                "another --out or pass --overwrite")
            if not resume:
                raise UserError(f"--out {out} already holds this {what}: pass --resume to continue or reuse "
                                "it, or --overwrite to start over")
    mark(out, kind)
    if not (out / RESULTS.get(kind, "results.json")).is_file():
        atomic_write(out / "INCOMPLETE", f"this {what} has not finished; `--resume` continues it\n")
    write_json(path, config)


def finish_experiment(out: Path, results: dict[str, Any], name: str = "results.json") -> None:
    """Write the results (``results.json``) atomically, then drop the INCOMPLETE marker: the experiment is
    complete."""
    write_json(out / name, results)
    (out / "INCOMPLETE").unlink(missing_ok=True)


def clean_json(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers, tuple keys strings."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def recorded_base(base: FitConfig) -> dict[str, Any]:
    """The options an experiment's folder records (runtime options may change on ``--resume``)."""
    return {k: v for k, v in base.to_dict().items() if k not in RUNTIME_OPTIONS}


def other_options(modality: Modality) -> list[str]:
    """The options only other modalities use: reports leave them out."""
    mine = set(modality.options)
    return sorted({o for m in modalities.all_modalities() if m is not modality for o in m.options} - mine)


def run_cell(label: str, train: Callable[..., Any], *args: Any, score: str = "test accuracy", **kwargs: Any) -> Any:
    """One trained cell of an experiment, ``train(*args, **kwargs)`` (``fit``, or ``pretrain`` with its check):
    its epoch lines at DEBUG, then the one line a log file keeps of it, ``label: ...`` (see :func:`cell_line`)."""
    from transferlab.train.callbacks import cell_logging

    with cell_logging():
        ran = train(*args, **kwargs)
    log.info("%s: %s", label, cell_line(ran[0] if isinstance(ran, tuple) else ran, score))
    return ran


def cell_line(result: Any, score: str = "test accuracy") -> str:
    """A finished cell in a few words: the one line a log file keeps of it (``score`` names its accuracy: an advise
    trial's "test" split is the search's validation split)."""
    t = result.training
    how = (f"best validation at step {t['best_step']} of {t['steps']}" if t.get("converged") else
           "NOT converged" if t.get("converged") is False else "")
    return ", ".join(filter(None, [f"{score} {result.test_accuracy:.4f}", how,
                                   f"{result.wall_seconds:.1f} s"]))
