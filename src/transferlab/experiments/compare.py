"""``compare``: every arm x seed x labelled size through ``fit``, then the benefits of transfer over scratch.

A cell is one ``fit`` run directory under ``OUT/cells/<size>/<arm>/seed<k>``. All cells share the split (the
first seed's), the budget and the optimiser; an arm changes only what its spec says. Finished cells are reused by
``--resume``, so a killed comparison ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from transferlab import modality as modalities
from transferlab import preflight
from transferlab.config import SET_BY_COMPARE, Arm, FitConfig, parse_sizes, parse_strategy, size_key, split_arms
from transferlab.errors import UserError, did_you_mean
from transferlab.evaluate.curves import Curve, asymptote, benefits, interval, still_rising
from transferlab.experiments.common import (
    clean_json,
    experiment_folder,
    finish_experiment,
    other_options,
    recorded_base,
)
from transferlab.report import write_csv
from transferlab.report.html import write_compare_report
from transferlab.sources import Source
from transferlab.train.fit import bind_source, fit, open_source, resolve_reuse, seconds_per_step, versions
from transferlab.train.trainer import runs_on_cpu
from transferlab.transfer.strategies import STRATEGIES, make_strategy

log = logging.getLogger(__name__)
SCHEMA = "transferlab.compare/1"
# What a cell costs besides its steps (the trainer, checkpoints, curve points, files): measured on 2 cores as 0.7 s
# a cell where the steps are nearly free (the blobs comparison in the README: 90 cells of a small MLP in 77 s)
CELL_OVERHEAD_SECONDS = 0.7


def read_curve(run_dir: Path) -> Curve:
    with open(run_dir / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    return Curve.of(
        [float(r["examples"]) for r in rows],
        [float(r["test_accuracy"]) for r in rows],
        wall=[float(r["wall_seconds"]) for r in rows],
        epoch_end=[r["epoch_end"] == "1" for r in rows],
    )


def parse_arms(arms: list[str] | str) -> list[Arm]:
    """The arms asked for, with the scratch baseline added when missing: every benefit is measured against it."""
    parsed = [Arm.parse(a) for a in split_arms(arms)]
    if len({a.name for a in parsed}) != len(parsed):
        raise UserError("--arms lists the same arm twice")
    if not any(is_baseline(a) for a in parsed):
        parsed.insert(0, Arm("scratch", "scratch", {}))
        log.info("added the scratch arm: every benefit is measured against it")
    if len(parsed) < 2:
        raise UserError("--arms needs at least one transfer arm besides scratch")
    return parsed


def is_baseline(arm: Arm) -> bool:
    """The no-transfer arm: a strategy that starts from random weights."""
    return not strategy_class(arm).pretrained


def strategy_class(arm: Arm) -> type:
    return STRATEGIES.get(parse_strategy(arm.strategy)[0])


def compare(
    data: str,
    *,
    out: str | Path,
    source: str = "efficientnet_lite0",
    arms: list[str] | str = ("scratch", "frozen", "finetune"),
    seeds: int = 3,
    per_class: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    threshold: float = 0.9,
    **options: Any,
) -> dict[str, Any]:
    """Run the comparison and write ``results.json``, ``curves.csv`` and ``report.html`` to ``out``.

    Everything is checked before the first cell trains: the data at every size, every arm's options, source,
    ``--reuse`` and input size."""
    parsed = parse_arms(arms)
    if seeds < 2:
        raise UserError(f"--seeds {seeds}: confidence intervals need at least 2 seeds")
    if not 0 < threshold <= 1:
        raise UserError("--threshold must lie in (0, 1]")
    names = {f.name for f in fields(FitConfig)} - set(SET_BY_COMPARE)
    for key in options:
        if key not in names:
            raise UserError(f"unknown option {key!r}{did_you_mean(key, names)}")
    arm_sources = list(dict.fromkeys(a.source(source) for a in parsed))
    for spec in arm_sources:
        preflight.check_source(spec, "--source" if spec == source else "an arm's source=")
    base = FitConfig(data=data, source=source, curve=True, **options)
    for arm in parsed:  # an arm's bad option (lr=inf, reuse=0) is found now, not after other cells have trained
        arm.config(base)
    sizes = parse_sizes(per_class)
    out = Path(out)
    config = {
        "data": data, "source": source, "arms": [a.name for a in parsed], "seeds": seeds,
        "per_class": [size_key(s) for s in sizes], "threshold": threshold, "base": recorded_base(base),
    }
    loaded: dict[tuple[str, bool], Source] = {}  # every source once, pretrained or fresh, before training anything

    def source_of(arm: Arm) -> Source:
        key = arm.source(source), strategy_class(arm).pretrained
        if key not in loaded:
            loaded[key] = open_source(base.replace(source=key[0]), key[1])
        return loaded[key]

    name = preflight.resolve_modality(data, arm_sources)
    modality = modalities.get(name) if name is not None else modalities.get(source_of(parsed[0]).modality)
    data_by_size = {size: modality.load(base.replace(split_seed=base.seed, per_class=size))
                    for size in sizes}  # every size read and checked before any model loads
    largest = data_by_size[sizes[-1]]
    bound = {a.name: bind_source(modality, source_of(a), largest, base) for a in parsed}
    on_cpu = runs_on_cpu(base)
    baseline = next(a for a in parsed if is_baseline(a))
    # options that give every cell the same preprocessing (images: one input size, chosen for the baseline)
    pinned = modality.shared_options(bound[baseline.name], largest, base, on_cpu)
    base = base.replace(**pinned)
    pre = {}
    for arm in parsed:  # --reuse beyond a source's blocks, an input size it cannot take: before the first cell
        try:
            reuse = resolve_reuse(arm.config(base), bound[arm.name])
            make_strategy(arm.strategy).check(list(bound[arm.name].blocks.values())[:reuse])
            pre[arm.name] = modality.preprocessing(bound[arm.name], largest, arm.config(base), on_cpu)
        except UserError as e:
            raise UserError(f"arm {arm.name!r}: {e}") from None
    estimate = None
    with experiment_folder(out, config, resume, "compare", overwrite) as zero:
        if zero and not resume:
            steps: dict[str, float] = {}
            for arm in parsed:  # one timed step per source: arms of other sources can cost 100x more
                spec = arm.source(source)
                if spec not in steps:
                    steps[spec] = seconds_per_step(bound[arm.name], largest, base, pre[arm.name])
            estimate = estimate_seconds({a.name: steps[a.source(source)] for a in parsed}, parsed, seeds, base,
                                        list(data_by_size.values()))
            shown = "".join(f", {k.replace('_', ' ')} {v}" for k, v in pinned.items())
            log.info("%d cells (%d size%s x %d arms x %d seeds%s): about %s on this machine, estimated from one "
                     "timed training step per source", len(sizes) * len(parsed) * seeds, len(sizes),
                     "s" if len(sizes) > 1 else "", len(parsed), seeds, shown, _duration(estimate))
        curves: dict[str, dict[str, dict[int, Curve]]] = {}
        cells = []
        total = len(sizes) * len(parsed) * seeds
        done = 0
        for size in sizes:
            key = size_key(size)
            curves[key] = {a.name: {} for a in parsed}
            for seed in range(base.seed, base.seed + seeds):
                for arm in parsed:
                    done += 1
                    cell_dir = out / "cells" / key / re.sub(r"[^\w.=+-]+", "_", arm.name) / f"seed{seed}"
                    cfg = arm.config(base, seed=seed, split_seed=base.seed, per_class=size)
                    log.info("cell %d/%d: %s, %s per class, seed %d", done, total, arm.name, key, seed)
                    finished = (cell_dir / "model.json").is_file() and not (cell_dir / "INCOMPLETE").exists()
                    result = fit(cfg, cell_dir, resume=True, progress=progress, data=data_by_size[size],
                                 source=source_of(arm), modality=modality)
                    if not zero:
                        continue
                    curves[key][arm.name][seed] = read_curve(cell_dir)
                    cells.append({
                        "arm": arm.name, "per_class": key, "seed": seed, "run_dir": str(cell_dir.relative_to(out)),
                        "test_accuracy": result.test_accuracy, "train_wall_seconds": result.wall_seconds,
                        "reused": finished, "parameters": result.parameters,
                    })

        if not zero:
            return {}
        test_sizes = {size_key(s): len(d.test) for s, d in data_by_size.items()}
        results = summarise(curves, parsed, sizes, threshold, test_sizes)
        lr, mult = base.learning_rates(modality.default_lr)
        results.update({
            "schema": SCHEMA, "config": config, "versions": versions(), "cells": cells, "modality": modality.name,
            "resolved": {"lr": lr, "backbone_lr_mult": mult, **pinned}, "test_size": test_sizes,
            "input_size": pinned.get("image_size"), "estimated_seconds": estimate,
            "other_modalities_options": other_options(modality),
            "arms": [{"name": a.name, "strategy": a.strategy, "options": a.options} for a in parsed],
            "curves": {k: {a: {str(s): {"examples": c.examples.tolist(), "wall_seconds": c.wall.tolist(),
                                         "test_accuracy": c.skill.tolist(), "epoch_end": c.epoch_end.tolist()}
                               for s, c in per_seed.items()} for a, per_seed in per_arm.items()}
                       for k, per_arm in curves.items()},
        })
        results = clean_json(results)
        _write_curves_csv(out / "curves.csv", curves)
        write_compare_report(out / "report.html", results)
        finish_experiment(out, results)
        return results


def summarise(
    curves: dict[str, dict[str, dict[int, Curve]]], arms: list[Arm], sizes: list[int | None], threshold: float,
    test_sizes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Benefits per size and arm, data efficiency, whether each curve had levelled off, what happened to the
    asymptote benefit across sizes, and negative transfer. ``test_sizes[size]``: examples behind each curve point."""
    scratch = next(a.name for a in arms if is_baseline(a))
    by_size: dict[str, dict[str, Any]] = {}
    efficiency: dict[str, dict[str, Any]] = {}
    for size in sizes:
        key = size_key(size)
        by_size[key] = {
            a.name: benefits(curves[key][a.name], curves[key][scratch], threshold_fraction=threshold)
            for a in arms if a.name != scratch
        }
        for a in arms:
            runs = list(curves[key][a.name].values())
            iv = interval([asymptote(c) for c in runs])
            efficiency.setdefault(a.name, {})[key] = {
                "mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "interval_method": iv.method,
                "plateau": not still_rising(runs, (test_sizes or {}).get(key, 0)),
            }
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
    return {
        "baseline": scratch,
        "largest_size": largest,
        "interval_method": next(iter(next(iter(by_size[largest].values())).values()))["interval_method"],
        "benefits": by_size[largest],
        "benefits_by_size": by_size,
        "data_efficiency": efficiency,
        "asymptote_by_size": paying,
        "transfer_stops_paying": stops,
        "negative_transfer": negative,
    }


def estimate_seconds(steps: dict[str, float], arms: list[Arm], seeds: int, cfg: FitConfig, data: list[Any]) -> float:
    """A comparison's wall time from each arm's training step (``steps[arm name]``, seconds): training steps of
    every tuned cell, evaluation passes
    (validation each epoch, the curve points, the final test) at a sixth of a step per batch (no gradients, eval
    mode: measured on the bundled demo), a frozen arm's feature extraction once per size (later seeds read the
    cache), and :data:`CELL_OVERHEAD_SECONDS` per cell."""
    total = len(data) * len(arms) * seeds * CELL_OVERHEAD_SECONDS
    for d in data:
        train, val, test = len(d.train), len(d.val), len(d.test)
        batches = math.ceil(train / cfg.batch_size)
        within = len({max(1, round(f * batches)) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2)} - {batches}) + 1
        evaluated = cfg.epochs * val + within * min(test, 500) + (cfg.epochs + 1) * test
        for arm in arms:
            step = steps[arm.name]
            if strategy_class(arm).frozen_prefix:
                total += (train + val + test) / cfg.batch_size * step / 6
            else:
                total += seeds * (batches * cfg.epochs * step + evaluated / cfg.batch_size * step / 6)
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


def _write_curves_csv(path: Path, curves: dict[str, dict[str, dict[int, Curve]]]) -> None:
    write_csv(path, ["per_class", "arm", "seed", "examples", "wall_seconds", "test_accuracy", "epoch_end"], [
        [key, arm, seed, int(c.examples[i]), f"{c.wall[i]:.4f}", f"{c.skill[i]:.6f}", int(c.epoch_end[i])]
        for key, per_arm in curves.items() for arm, per_seed in per_arm.items()
        for seed, c in sorted(per_seed.items()) for i in range(len(c.examples))
    ])
