"""What a comparison is asked to do, every option checked, with no torch import: the API checks a comparison with
:func:`plan` before anything slow loads, and ``experiments.compare`` runs the plan it gets."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from typing import Any

from transferlab import preflight
from transferlab.config import LOGREG, SET_BY_COMPARE, Arm, FitConfig, parse_sizes, size_key, split_arms
from transferlab.errors import UserError, did_you_mean
from transferlab.experiments.common import recorded_base

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A comparison as asked for, every option checked (no torch, no data read yet)."""

    data: str
    source: str
    arms: list[Arm]  # the trained arms, the scratch baseline among them
    logreg: bool  # whether the logistic-regression baseline stands beside them
    seeds: int
    sizes: list[int | None]
    threshold: float
    base: FitConfig
    pinned: tuple[tuple[str, Any], ...] = ()  # options that give every cell the same preprocessing (check_arms)

    @property
    def config(self) -> dict[str, Any]:
        """What the folder records (``compare.json``): a resumed comparison must ask for the same."""
        return {"data": self.data, "source": self.source,
                "arms": [LOGREG] * self.logreg + [a.name for a in self.arms], "seeds": self.seeds,
                "per_class": [size_key(s) for s in self.sizes], "threshold": self.threshold,
                "base": recorded_base(self.base)}

    @property
    def baseline(self) -> Arm:
        return next(a for a in self.arms if is_baseline(a))

    def arm_sources(self) -> list[str]:
        return list(dict.fromkeys(a.source(self.source) for a in self.arms))


def plan(data: str, source: str, arms: list[str] | str, seeds: int, per_class: str | None, threshold: float,
         options: dict[str, Any]) -> Plan:
    """Every option of a comparison, checked before anything is read or loaded."""
    specs = split_arms(arms)
    logreg = LOGREG in specs
    if any(s.startswith(LOGREG + ":") for s in specs):
        raise UserError(f"arm {LOGREG!r} takes no options: it is a logistic regression on the raw inputs, its "
                        "regularisation chosen by cross-validation")
    parsed = parse_arms([s for s in specs if s != LOGREG], logreg)
    if not 2 <= seeds <= 1000:
        raise UserError(f"--seeds {seeds}: confidence intervals need at least 2 seeds (and at most 1,000)")
    if not 0 < threshold <= 1:
        raise UserError("--threshold must lie in (0, 1]")
    names = {f.name for f in fields(FitConfig)} - set(SET_BY_COMPARE)
    for key in options:
        if key not in names:
            raise UserError(f"unknown option {key!r}{did_you_mean(key, names)}")
    base = FitConfig(data=data, source=source, curve=True, **options)
    if base.seed + seeds - 1 > 2**32 - 1:
        raise UserError(f"--seed {base.seed} with --seeds {seeds} runs past the largest seed, 4,294,967,295")
    for arm in parsed:  # an arm's bad option (lr=inf, reuse=0) is found now, not after other cells have trained
        arm.config(base)
    result = Plan(data, source, parsed, logreg, seeds, parse_sizes(per_class), threshold, base)
    for spec in result.arm_sources():
        preflight.check_source(spec, "--source" if spec == source else "an arm's source=")
    return result


def parse_arms(arms: list[str] | str, logreg: bool = False) -> list[Arm]:
    """The trained arms asked for, with the scratch baseline added when missing: every benefit is measured
    against it. Scratch alone is a comparison only beside the logistic regression (``logreg``)."""
    parsed = [Arm.parse(a) for a in split_arms(arms)]
    if len({a.name for a in parsed}) != len(parsed):
        raise UserError("--arms lists the same arm twice")
    if not any(is_baseline(a) for a in parsed):
        parsed.insert(0, Arm("scratch", "scratch", {}))
        log.info("added the scratch arm: every benefit is measured against it")
    if len(parsed) < 2 and not logreg:
        raise UserError("--arms needs at least one transfer arm besides scratch (or logreg)")
    return parsed


def is_baseline(arm: Arm) -> bool:
    """The no-transfer arm: a strategy that starts from random weights."""
    return not arm.kind.pretrained




# --- advise -------------------------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | float | int) -> float:
    """``30m``, ``90s``, ``1.5h`` or a number of seconds -> seconds (at least 1)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
        if match is None:
            raise UserError(f"--budget {text!r}: give a duration such as 30m, 90s, 1.5h or a number of seconds")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 1 <= seconds <= 30 * 24 * 3600:
        raise UserError(f"--budget {text!r}: give a duration from 1 s to 30 days")
    return seconds


@dataclass(frozen=True)
class AdvisePlan:
    """An ``advise`` as asked for, every option checked (no torch, no data read yet)."""

    data: str
    budget: float  # seconds, start-up included
    candidates: tuple[str, ...]  # given with --candidates (empty: every source of the data's modality offline)
    seeds: int
    workers: int
    storage: str | None  # an Optuna storage URL (default: sqlite in the output folder)
    base: FitConfig  # its metric is what the search maximises and the confirmation judges by
    trials: int | None = None  # the search stops after this many trials of all workers (None: at its deadline)

    @property
    def config(self) -> dict[str, Any]:
        """What the folder records (``advise.json``): a resumed advise must ask for the same."""
        return {"data": self.data, "budget_seconds": self.budget, "candidates": list(self.candidates),
                "seeds": self.seeds, "metric": self.base.metric, "trials": self.trials,
                "base": recorded_base(self.base)}


def plan_advise(data: str, budget: str | float, candidates: str | list[str] | None, seeds: int, workers: int,
                storage: str | None, options: dict[str, Any], trials: int | None = None) -> AdvisePlan:
    """Every option of ``advise``, checked before anything is read or loaded."""
    seconds = parse_duration(budget)
    specs = tuple(s.strip() for s in (candidates.split(",") if isinstance(candidates, str) else candidates or ())
                  if s.strip())
    for spec in specs:
        preflight.check_source(spec, "--candidates")
    if not 3 <= seeds <= 100:
        raise UserError(f"--seeds {seeds}: the confirmation needs at least 3 seeds for a verdict (and at most 100)")
    if not 1 <= workers <= 64:
        raise UserError(f"--workers {workers}: give from 1 to 64 processes")
    if trials is not None and not 1 <= trials <= 100_000:
        raise UserError(f"--trials {trials}: give from 1 to 100000 trials, or leave it out to search until the budget")
    if options.pop("lr", None) is not None:
        raise UserError("--lr: advise searches the learning rate (from a tenth to three times the default)")
    names = {f.name for f in fields(FitConfig)} - (set(SET_BY_COMPARE) - {"per_class"}) - {"reuse", "lr"}
    for key in options:
        if key not in names:
            raise UserError(f"unknown option {key!r}{did_you_mean(key, names)}")
    base = FitConfig(data=data, source=specs[0] if specs else FitConfig.source, **options)
    return AdvisePlan(data, seconds, specs, seeds, workers, storage, base, trials)
