"""``compare``: every arm x seed x labelled size through ``fit``, then the benefits of transfer over scratch, and
every arm against a strong simple model.

A cell is one ``fit`` run directory under ``OUT/cells/<size>/<arm>/seed<k>``. All cells share the split (the
first seed's), the optimiser and the rule that decides how long they train (to convergence, see
:mod:`transferlab.train.budget`); an arm changes only what its spec says. Beside the arms stands ``logreg``, a
logistic regression on the raw inputs (:mod:`transferlab.evaluate.logreg`): "did transfer help?" is asked against
scratch and against it. Finished cells are reused by ``--resume``, so a killed comparison ends with the same
numbers as an uninterrupted one.

The recipe, one function per phase: :func:`~transferlab.experiments.plan.plan` (every option, no torch),
:func:`load_sizes` (the data at every size), :func:`check_arms` (every arm's source and preprocessing),
:func:`announce` (the estimate), :func:`simple_baseline`, :func:`run_cells`, :func:`summarise`,
:func:`write_outputs`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from transferlab import files, preflight
from transferlab import modality as modalities
from transferlab.config import (
    DEFAULT_ARMS,
    LOGREG,
    Arm,
    FitConfig,
    size_key,
)
from transferlab.data.splits import Data
from transferlab.errors import UserError
from transferlab.evaluate import METRIC_NAMES, score
from transferlab.evaluate.curves import Curve, accuracy_interval, asymptote, benefits, interval, paired
from transferlab.evaluate.logreg import fit_logreg
from transferlab.experiments.common import (
    clean_json,
    experiment_folder,
    finish_experiment,
    other_options,
    run_cell,
)
from transferlab.experiments.plan import Plan, is_baseline, plan
from transferlab.modality import Modality
from transferlab.report import write_csv
from transferlab.report.html import write_compare_report
from transferlab.sources import Source
from transferlab.train.budget import Budget
from transferlab.train.callbacks import curve_epoch
from transferlab.train.fit import (
    RunResult,
    bind_source,
    fit,
    learned,
    naive_margin,
    open_source,
    resolve_reuse,
    seconds_per_step,
    versions,
)
from transferlab.train.trainer import runs_on_cpu
from transferlab.transfer.strategies import make_strategy

log = logging.getLogger(__name__)
SCHEMA = "transferlab.compare/2"  # 2: arms trained to convergence, the asymptote their final test accuracy, logreg
# What a cell costs besides its steps (the trainer, checkpoints, curve points, files): measured on 2 cores as 0.7 s
# a cell where the steps are nearly free (the blobs comparison in the README: 90 cells of a small MLP in 77 s)
CELL_OVERHEAD_SECONDS = 0.7
TRAINING_RULE = ("every cell trains until its validation loss stops improving (early stopping with a patience, the "
                 "best validation's weights restored), never fewer than its minimum optimiser steps; its asymptote "
                 "is that model's test accuracy")


def compare(
    data: str,
    *,
    out: str | Path,
    source: str = FitConfig.source,
    arms: list[str] | str = DEFAULT_ARMS,
    seeds: int = 3,
    per_class: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    threshold: float = 0.9,
    data_by_size: dict[int | None, Data] | None = None,
    modality: Modality | None = None,
    locked: bool = False,
    planned: Plan | None = None,
    workers: int = 1,
    folds: bool = False,
    cap: Callable[[int], float] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the comparison and write ``results.json``, ``curves.csv`` and ``report.html`` to ``out``.

    The folder is locked first, then everything is checked before the first cell trains: the data at every size
    (``data_by_size``: already read, with their ``modality``, by the caller that holds the lock, ``locked``), every
    arm's options, source,
    ``--reuse`` and input size. ``planned``: the options already checked by :func:`plan` (the other arguments are
    then ignored). ``folds``: seed i of k trains and validates on fold i of a cross-validation over the training
    and validation splits (:func:`~transferlab.data.splits.fold_data`; ``advise``'s confirmation). ``cap``: the
    ``--max-time`` of every cell of a seed, given how many cells are left to train, asked when the seed's first
    cell starts (``advise`` shares what is left of its budget this way; in one process only)."""
    p = planned or plan(data, source, arms, seeds, per_class, threshold, options)
    out = Path(out)
    with contextlib.nullcontext() if locked else files.locked(out, "the comparison folder"):
        modality, data_by_size = load_sizes(p, data_by_size, modality)
        sources, p = check_arms(p, modality, data_by_size)
        with experiment_folder(out, p.config, resume, "compare", overwrite, locked=True) as zero:
            estimate = announce(p, modality, sources, data_by_size) if zero and not resume else None
            simple = simple_baseline(p, modality, data_by_size) if zero and p.logreg else {}
            cells, curves, results = run_cells(p, out, sources, modality, data_by_size, progress, zero, workers,
                                               folds, cap)
            if not zero:
                return {}
            summary = summarise(curves, p.arms, p.sizes, p.threshold, results, simple, data_by_size, p.base.metric)
            test_sizes = {size_key(s): len(d.test) for s, d in data_by_size.items()}
            return write_outputs(out, p, modality, summary, cells, curves, estimate, test_sizes)


def load_sizes(p: Plan, given: dict[int | None, Data] | None, modality: Modality | None,
               ) -> tuple[Modality, dict[int | None, Data]]:
    """The data at every labelled size, read and checked before any model loads (one split, the first seed's),
    and their modality (decided by the caller, else here: from the names, else from the first arm's source)."""
    modality = modality or preflight.decide_modality(p.data, p.arm_sources()) or \
        modalities.get(open_source(p.base, p.arms[0].kind.pretrained).modality)
    if given is None:
        given = {size: modality.load(p.base.replace(split_seed=p.base.seed, per_class=size)) for size in p.sizes}
    return modality, given


def check_arms(p: Plan, modality: Modality, data_by_size: dict[int | None, Data],
               ) -> tuple[dict[str, Source], Plan]:
    """Every arm's source, loaded once (pretrained or fresh) and checked on the largest size: ``--reuse`` within
    its blocks, a strategy that fits it, an input size it can take. Returns the sources by arm and the plan with
    the options that give every cell the same preprocessing (images: one input size, the baseline's)."""
    largest = data_by_size[p.sizes[-1]]
    loaded: dict[tuple[str, bool], Source] = {}
    for arm in p.arms:
        key = arm.source(p.source), arm.kind.pretrained
        if key not in loaded:
            loaded[key] = open_source(p.base.replace(source=key[0]), key[1])
    sources = {a.name: loaded[a.source(p.source), a.kind.pretrained] for a in p.arms}
    bound = {a.name: bind_source(modality, sources[a.name], largest, p.base) for a in p.arms}
    pinned = modality.shared_options(bound[p.baseline.name], largest, p.base, runs_on_cpu(p.base))
    p = dataclasses.replace(p, base=p.base.replace(**pinned), pinned=tuple(pinned.items()))
    for arm in p.arms:
        try:
            reuse = resolve_reuse(arm.config(p.base), bound[arm.name])
            make_strategy(arm.strategy).check(list(bound[arm.name].blocks.values())[:reuse])
            modality.preprocessing(bound[arm.name], largest, arm.config(p.base), runs_on_cpu(p.base))
        except UserError as e:
            raise UserError(f"arm {arm.name!r}: {e}") from None
    return sources, p


def announce(p: Plan, modality: Modality, sources: dict[str, Source], data_by_size: dict[int | None, Data]) -> float:
    """Log how many cells and about how long, from one timed training step per source; returns the estimate."""
    largest = data_by_size[p.sizes[-1]]
    steps: dict[str, float] = {}
    for arm in p.arms:  # one timed step per source: arms of other sources can cost 100x more
        spec = arm.source(p.source)
        if spec not in steps:
            bound = bind_source(modality, sources[arm.name], largest, p.base)
            pre = modality.preprocessing(bound, largest, arm.config(p.base), runs_on_cpu(p.base))
            steps[spec] = seconds_per_step(bound, largest, p.base, pre, p.base.channels_last and modality.channels_last)
    estimate = estimate_seconds({a.name: steps[a.source(p.source)] for a in p.arms}, p.arms, p.seeds, p.base,
                                list(data_by_size.values()))
    pinned = "".join(f", {k.replace('_', ' ')} {v}" for k, v in p.pinned)
    log.info("%d cells (%d size%s x %d arms x %d seeds%s), each trained to convergence: about %s on this machine, "
             "estimated from one timed training step per source", len(p.sizes) * len(p.arms) * p.seeds, len(p.sizes),
             "s" if len(p.sizes) > 1 else "", len(p.arms), p.seeds, pinned, _duration(estimate))
    return estimate


def simple_baseline(p: Plan, modality: Modality, data_by_size: dict[int | None, Data]) -> dict[str, dict[str, Any]]:
    """The logistic regression at every size (one fit each: the split is every seed's; C by cross-validation)."""
    found = {}
    for size, data in data_by_size.items():
        r = fit_logreg(data, modality, p.base.seed, p.base.metric, p.base.class_weight)
        log.info("logreg, %s per class: test %s %.4f (C %.3g chosen by %d-fold cross-validation) in %.1f s",
                 size_key(size), METRIC_NAMES[p.base.metric], r["test_score"], r["C"], r["folds"], r["seconds"])
        found[size_key(size)] = {k: v for k, v in r.items() if k != "predictions"}
    return found


class _Job(NamedTuple):
    size: int | None
    seed: int
    arm: Arm
    cell_dir: Path
    finished: bool  # trained before this call (reused, not trained again)
    cfg: FitConfig


def run_cells(p: Plan, out: Path, sources: dict[str, Source], modality: Modality,
              data_by_size: dict[int | None, Data], progress: bool, zero: bool, workers: int = 1,
              folds: bool = False, cap: Callable[[int], float] | None = None,
              ) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[int, Curve]]], dict[str, dict[str, dict]]]:
    """Train every cell (or reuse it): the cells' records, their curves and their results, by size and arm. With
    ``workers`` > 1 the cells (independent: each its own seed, run directory and lock) train in that many
    processes at once, each with its share of the cores; the numbers are the same as in one process."""
    jobs = []
    for size in p.sizes:
        for seed in range(p.base.seed, p.base.seed + p.seeds):
            for arm in p.arms:
                cell_dir = out / "cells" / size_key(size) / re.sub(r"[^\w.=+-]+", "_", arm.name) / f"seed{seed}"
                finished = (cell_dir / "model.json").is_file() and not (cell_dir / "INCOMPLETE").exists()
                fold = f"{seed - p.base.seed}/{p.seeds}" if folds else None
                jobs.append(_Job(size, seed, arm, cell_dir, finished,
                                 arm.config(p.base, seed=seed, split_seed=p.base.seed, per_class=size, fold=fold)))
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_threads,
                                 initargs=(max(1, (os.cpu_count() or 1) // workers),)) as pool:
            futures = [pool.submit(_cell, job.cfg, job.cell_dir, data_by_size[job.size], modality.name,
                                   job.arm.kind.pretrained) for job in jobs]
            ran = [f.result() for f in futures]
    else:
        ran = []
        round_cap = {}  # a seed's cells share one cap: every arm of a fold (or seed) gets the same time
        for i, job in enumerate(jobs, 1):
            cfg, key = job.cfg, (job.size, job.seed)
            if cap is not None:
                if key not in round_cap:
                    round_cap[key] = cap(max(1, sum(not later.finished for later in jobs[i - 1:])))
                cfg = cfg.replace(max_time=round_cap[key])
            ran.append(run_cell(f"cell {i}/{len(jobs)}: {job.arm.name}, {size_key(job.size)} per class, seed "
                                f"{job.seed}", fit, cfg, job.cell_dir, resume=True, progress=progress,
                                data=data_by_size[job.size], source=sources[job.arm.name], modality=modality))
    curves: dict[str, dict[str, dict[int, Curve]]] = {size_key(s): {a.name: {} for a in p.arms} for s in p.sizes}
    results: dict[str, dict[str, dict[int, RunResult]]] = {k: {a.name: {} for a in p.arms} for k in curves}
    cells = []
    for (size, seed, arm, cell_dir, finished, _), result in zip(jobs, ran, strict=True):
        if not zero:
            continue
        key, training = size_key(size), result.training
        curves[key][arm.name][seed] = read_curve(cell_dir, result.test_score)
        results[key][arm.name][seed] = result
        cells.append({
            "arm": arm.name, "per_class": key, "seed": seed, "run_dir": str(cell_dir.relative_to(out)),
            "test_accuracy": result.test_accuracy, "test_score": result.test_score, "val_score": result.val_score,
            "train_wall_seconds": result.wall_seconds,
            "reused": finished, "parameters": result.parameters, "calibration": result.calibration,
            "converged": training.get("converged"), "best_step": training.get("best_step"),
            "steps": training.get("steps"),
        })
    return cells, curves, results


_LOADED: dict[tuple[str, bool], Source] = {}  # a worker process's sources, loaded once each


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _cell(cfg: FitConfig, cell_dir: Path, data: Data, modality_name: str, pretrained: bool) -> RunResult:
    """One cell in a worker process: the source loaded there (once per process), the run as in one process."""
    key = (cfg.source, pretrained)
    if key not in _LOADED:
        _LOADED[key] = open_source(cfg, pretrained)
    return run_cell(f"cell {cell_dir}", fit, cfg, cell_dir, resume=True, progress=False, data=data,
                    source=_LOADED[key], modality=modalities.get(modality_name))


def read_curve(run_dir: Path, final: float) -> Curve:
    """A cell's learning curve (``curve.csv``, read as untrusted: a reused cell may have been edited) by the run's
    metric (``test_score``; curves written before --metric have only accuracy), its converged skill ``final``."""
    path = run_dir / "curve.csv"
    text = files.read_bounded(path, "learning curve", files.MAX_JSON_BYTES).decode("utf-8", "replace")
    try:
        rows = list(csv.DictReader(text.splitlines()))
        return Curve.of([float(r["examples"]) for r in rows], [float(r.get("test_score", r["test_accuracy"]))
                                                                for r in rows],
                        wall=[float(r["wall_seconds"]) for r in rows], epoch_end=[r["epoch_end"] == "1" for r in rows],
                        final=final)
    except (KeyError, ValueError, TypeError):
        raise UserError(f"{path} is not a learning curve transferlab wrote (was it edited?); delete the cell's folder "
                        "to train it again") from None


def summarise(
    curves: dict[str, dict[str, dict[int, Curve]]], arms: list[Arm], sizes: list[int | None], threshold: float,
    results: dict[str, dict[str, dict[int, Any]]] | None = None, simple: dict[str, dict[str, Any]] | None = None,
    data_by_size: dict[int | None, Data] | None = None, metric: str = "accuracy",
) -> dict[str, Any]:
    """Benefits per size and arm, each arm's converged test ``metric`` (data efficiency) and whether it converged
    and learned anything, each arm against the logistic regression, what happened to the asymptote benefit across
    sizes, and negative transfer. ``results[size][arm][seed]``: the cells' :class:`RunResult`; ``simple[size]``:
    the logistic regression's result."""
    scratch = next(a.name for a in arms if is_baseline(a))
    results, simple = results or {}, simple or {}
    by_size: dict[str, dict[str, Any]] = {}
    efficiency: dict[str, dict[str, Any]] = {}
    versus: dict[str, dict[str, Any]] = {}
    for size in sizes:
        key = size_key(size)
        by_size[key] = {a.name: benefits(curves[key][a.name], curves[key][scratch], threshold_fraction=threshold)
                        for a in arms if a.name != scratch}
        for a in arms:
            runs = results.get(key, {}).get(a.name, {})
            efficiency.setdefault(a.name, {})[key] = arm_accuracy(curves[key][a.name], runs)
        if key in simple:
            versus[key] = {a.name: against_logreg(curves[key][a.name], simple[key]["test_score"])
                           for a in arms}
            efficiency.setdefault(LOGREG, {})[key] = _fixed(simple[key]["test_score"])
    if data_by_size is not None:
        for size, data in data_by_size.items():
            y = np.asarray(data.test.labels)
            naive = score(metric, y, np.full_like(y, data.majority_class()))
            for per_size in efficiency.values():
                v = per_size.get(size_key(size))
                if v is not None and v.get("mean") is not None:
                    v["learned"] = learned(v["mean"], naive, len(data.test))
                    v["naive"] = naive
                    v["naive_margin"] = naive_margin(naive, len(data.test))
    largest = size_key(sizes[-1])
    stops, paying, negative = {}, {}, []
    for a in arms:
        if a.name == scratch:
            continue
        verdicts = {size_key(s): by_size[size_key(s)][a.name]["asymptote"]["verdict"] for s in sizes}
        paying[a.name] = {"verdicts": verdicts, "summary": paying_summary(verdicts)}
        keys = list(verdicts)
        first_not = next((i for i, k in enumerate(keys) if verdicts[k] != "yes"), None)
        stops[a.name] = keys[first_not] if first_not else None  # only after it paid at a smaller size
        for key, per_arm in by_size.items():
            for measure, b in per_arm[a.name].items():
                if b["verdict"] == "no":
                    negative.append({"arm": a.name, "per_class": key, "measure": measure})
    summary = {
        "baseline": scratch,
        "largest_size": largest,
        "interval_method": next((b["interval_method"] for per_arm in by_size[largest].values()
                                 for b in per_arm.values()), None),  # None: scratch beside the regression only
        "benefits": by_size[largest],
        "benefits_by_size": by_size,
        "data_efficiency": efficiency,
        "versus_logreg": versus,
        "logreg": simple,  # per size: its test accuracy, the C chosen, the folds, the seconds it took
        "asymptote_by_size": paying,
        "transfer_stops_paying": stops,
        "negative_transfer": negative,
    }
    summary["metric"] = metric
    summary["notes"] = notes(summary, scratch)
    return summary


def arm_accuracy(curves: dict[int, Curve], runs: dict[int, Any]) -> dict[str, Any]:
    """An arm's converged test accuracy over seeds (an interval inside [0, 1]) and how many seeds converged."""
    test_size = next((r.test_size for r in runs.values()), 0)
    iv = accuracy_interval([asymptote(c) for c in curves.values()], test_size) if test_size else \
        interval([asymptote(c) for c in curves.values()], bounds=(0.0, 1.0))
    converged = [bool(r.training.get("converged")) for r in runs.values() if r.training]
    return {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "interval_method": iv.method,
            "converged": sum(converged), "seeds": len(curves), "all_converged": all(converged) if converged else None}


def against_logreg(curves: dict[int, Curve], logreg: float) -> dict[str, Any]:
    """An arm's converged accuracy minus the logistic regression's, paired by seed (the regression is one number:
    the split is every seed's), with its interval and verdict: yes, it beats it; no, it loses to it."""
    return {**paired([asymptote(c) - logreg for c in curves.values()]), "logreg": logreg}


def _fixed(value: float) -> dict[str, Any]:
    return {"mean": value, "ci_low": None, "ci_high": None, "interval_method": "one fit (no seeds to vary)"}


def notes(summary: dict[str, Any], scratch: str) -> list[str]:
    """What the numbers alone do not say, one sentence each: arms that did not learn (and benefits measured
    against a baseline that did not), arms that did not converge, arms that do not beat the logistic regression."""
    said, name = [], METRIC_NAMES[summary.get("metric", "accuracy")]
    for arm, per_size in summary["data_efficiency"].items():
        for size, v in per_size.items():
            if v.get("learned") is False:
                said.append(f"{arm} did not learn at {size} per class: its test {name} {v['mean']:.3f} is within "
                            f"two standard errors of always guessing the commonest class ({v['naive']:.3f})"
                            + (": the benefits at this size say only that the other arms learned" if arm == scratch
                               else ""))
            if v.get("all_converged") is False:
                said.append(f"{arm} at {size} per class did not converge in {v['seeds'] - v['converged']} of "
                            f"{v['seeds']} seeds (stopped at its cap while the validation loss was still improving): "
                            "its asymptote is a lower bound")
    for size, per_arm in summary.get("versus_logreg", {}).items():
        for arm, v in per_arm.items():
            if v["verdict"] in ("no", "inconclusive"):
                beaten = "does not beat" if v["verdict"] == "no" else "is not clearly better than"
                acc = summary["data_efficiency"][arm][size]
                said.append(f"at {size} per class {arm} {acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}] "
                            f"{beaten} a logistic regression on the raw inputs ({v['logreg']:.3f})")
    return said


def write_outputs(out: Path, p: Plan, modality: Modality, summary: dict[str, Any], cells: list[dict[str, Any]],
                  curves: dict[str, dict[str, dict[int, Curve]]], estimate: float | None, test_sizes: dict[str, int],
                  ) -> dict[str, Any]:
    """``results.json``, ``curves.csv`` and ``report.html``; the folder is then complete."""
    lr, mult = p.base.learning_rates(modality.default_lr)
    results = {**summary, "test_size": test_sizes,
               "schema": SCHEMA, "config": p.config, "versions": versions(), "cells": cells, "modality": modality.name,
               "resolved": {"lr": lr, "backbone_lr_mult": mult, **dict(p.pinned)},
               "training_rule": TRAINING_RULE,
               "input_size": dict(p.pinned).get("image_size"), "estimated_seconds": estimate,
               "other_modalities_options": other_options(modality),
               "arms": [{"name": a.name, "strategy": a.strategy, "options": a.options} for a in p.arms],
               "curves": {k: {a: {str(s): {"examples": c.examples.tolist(), "wall_seconds": c.wall.tolist(),
                                           f"test_{p.base.metric}": c.skill.tolist(),
                                           "epoch_end": c.epoch_end.tolist(),
                                           "final": c.final}
                                  for s, c in per_seed.items()} for a, per_seed in per_arm.items()}
                          for k, per_arm in curves.items()}}
    results = clean_json(results)
    _write_curves_csv(out / "curves.csv", curves, p.base.metric)
    write_compare_report(out / "report.html", results)
    finish_experiment(out, results)
    return results


def estimate_seconds(steps: dict[str, float], arms: list[Arm], seeds: int, cfg: FitConfig, data: list[Any]) -> float:
    """A comparison's wall time from each arm's training step (``steps[arm name]``, seconds). Trained to
    convergence, a cell's length is not known in advance: it is taken as its minimum steps, or 8 epochs when
    that is more, plus one patience of validations (what a run that converges soon after its minimum takes).
    Evaluation passes (validations, curve points, the final test) cost a sixth of a step per batch (no gradients,
    eval mode: measured on the bundled demo), a frozen arm's feature extraction once per size (later seeds read
    the cache), and :data:`CELL_OVERHEAD_SECONDS` per cell."""
    total = len(data) * len(arms) * seeds * CELL_OVERHEAD_SECONDS
    for d in data:
        train, val, test = len(d.train), len(d.val), len(d.test)
        b = Budget.of(cfg, train)
        epochs = min(b.max_epochs, max(math.ceil(b.min_steps / b.steps_per_epoch), 8) + b.patience * b.val_every)
        points = sum(curve_epoch(e) for e in range(1, epochs + 1)) + 5
        evaluated = epochs / b.val_every * val + points * min(test, 500) + test
        for arm in arms:
            step = steps[arm.name]
            if arm.kind.frozen_prefix:
                total += (train + val + test) / cfg.batch_size * step / 6
            else:
                total += seeds * (b.steps_per_epoch * epochs * step + evaluated / cfg.batch_size * step / 6)
    return total


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def paying_summary(verdicts: dict[str, str]) -> str:
    """What the asymptote benefit did across labelled sizes (ascending), in words: never paid, paid at every
    size, paid until N, negative from N."""
    keys = list(verdicts)
    yes = [k for k in keys if verdicts[k] == "yes"]
    no = [k for k in keys if verdicts[k] == "no"]
    if all(v == "too few seeds" for v in verdicts.values()):
        return "too few seeds to tell at any size"
    if len(yes) == len(keys):
        return "paid at every size measured" + (f" ({keys[0]} to {keys[-1]} per class)" if len(keys) > 1 else "")
    parts = []
    if not yes:
        parts.append("never clearly paid")
    elif keys[: len(yes)] == yes:
        parts.append(f"paid up to {yes[-1]} per class, not at {keys[len(yes)]} ({verdicts[keys[len(yes)]]})")
    else:
        parts.append("paid at " + ", ".join(yes) + " per class only")
    if no:
        parts.append(f"negative from {no[0]} per class" if keys[keys.index(no[0]):] == no else
                     "negative at " + ", ".join(no) + " per class")
    return "; ".join(parts)


def _write_curves_csv(path: Path, curves: dict[str, dict[str, dict[int, Curve]]], metric: str) -> None:
    write_csv(path, ["per_class", "arm", "seed", "examples", "wall_seconds", f"test_{metric}", "epoch_end"], [
        [key, arm, seed, int(c.examples[i]), f"{c.wall[i]:.4f}", f"{c.skill[i]:.6f}", int(c.epoch_end[i])]
        for key, per_arm in curves.items() for arm, per_seed in per_arm.items()
        for seed, c in sorted(per_seed.items()) for i in range(len(c.examples))
    ])
