"""``compare``: every arm x seed x labelled size through ``fit``, then the benefits of transfer over scratch.

A cell is one ``fit`` run directory under ``OUT/cells/<size>/<arm>/seed<k>``. All cells share the split (the
first seed's), the budget and the optimiser; an arm changes only what its spec says. Finished cells are reused by
``--resume``, so a killed comparison ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from transferlab import preflight
from transferlab.config import RUNTIME_OPTIONS, FitConfig
from transferlab.errors import UserError, did_you_mean
from transferlab.evaluate.curves import Curve, asymptote, benefits, interval, still_rising
from transferlab.files import (
    LOCK,
    DirLock,
    atomic_write,
    check_overwritable,
    clear_output,
    is_global_zero,
    lock_folder,
    mark,
    write_json,
)
from transferlab.report import write_csv
from transferlab.strategies import STRATEGIES

log = logging.getLogger(__name__)
SCHEMA = "transferlab.compare/1"
SET_BY_COMPARE = ("data", "source", "strategy", "per_class", "curve", "split_seed")  # not options of **options
ARM_OPTIONS = ("source", "reuse", "lr", "backbone_lr_mult", "weight_decay", "cache", "freeze_bn", "text_model")


@dataclass(frozen=True)
class Arm:
    """``strategy[:key=value,...]``, e.g. ``finetune:reuse=2`` or ``frozen:source=minilm``; the spec is the
    arm's name. ``source=`` gives the arm its own source (default: ``--source``)."""

    name: str
    strategy: str
    options: dict[str, Any]

    @classmethod
    def parse(cls, spec: str) -> Arm:
        strategy, _, rest = spec.strip().partition(":")
        STRATEGIES.get(strategy)  # unknown strategy: a clear error with suggestions
        options: dict[str, Any] = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in ARM_OPTIONS:
                raise UserError(
                    f"arm {spec!r}: unknown option {key!r}{did_you_mean(key, ARM_OPTIONS)}; "
                    f"arm options are {', '.join(ARM_OPTIONS)}"
                )
            options[key] = _parse_value(spec, key, value)
        return cls(spec.strip(), strategy, options)


def _parse_value(spec: str, key: str, value: str) -> Any:
    if key == "reuse":
        return None if value == "all" else _number(spec, key, value, int)
    if key in ("cache", "freeze_bn"):
        return value.lower() in ("1", "true", "yes")
    if key in ("source", "text_model"):
        return value
    return _number(spec, key, value, float)


def _number(spec: str, key: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise UserError(f"arm {spec!r}: {key}={value!r} is not a number") from None


def parse_sizes(text: str | None) -> list[int | None]:
    """``10,30,all`` -> [10, 30, None]; None means every training image."""
    if not text:
        return [None]
    sizes: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            sizes.append(None)
            continue
        try:
            n = int(item)
        except ValueError:
            raise UserError(f"--per-class takes numbers or 'all', not {item!r}") from None
        if n < 1:
            raise UserError(f"--per-class {n}: need at least 1 image per class")
        sizes.append(n)
    return sorted(set(sizes), key=lambda s: math.inf if s is None else s)


def size_key(size: int | None) -> str:
    return "all" if size is None else str(size)


def read_curve(run_dir: Path) -> Curve:
    with open(run_dir / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    return Curve.of(
        [float(r["examples"]) for r in rows],
        [float(r["test_accuracy"]) for r in rows],
        wall=[float(r["wall_seconds"]) for r in rows],
        epoch_end=[r["epoch_end"] == "1" for r in rows],
    )


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
    """Run the comparison and write ``results.json``, ``curves.csv`` and ``report.html`` to ``out``."""
    arm_specs = arms.split(",") if isinstance(arms, str) else list(arms)
    parsed = [Arm.parse(a) for a in arm_specs if a.strip()]
    if len({a.name for a in parsed}) != len(parsed):
        raise UserError("--arms lists the same arm twice")
    if not any(a.strategy == "scratch" for a in parsed):
        parsed.insert(0, Arm("scratch", "scratch", {}))
        log.info("added the scratch arm: every benefit is measured against it")
    if len(parsed) < 2:
        raise UserError("--arms needs at least one transfer arm besides scratch")
    if seeds < 2:
        raise UserError(f"--seeds {seeds}: confidence intervals need at least 2 seeds")
    if not 0 < threshold <= 1:
        raise UserError("--threshold must lie in (0, 1]")
    names = {f.name for f in fields(FitConfig)} - set(SET_BY_COMPARE)
    for key in options:
        if key not in names:
            raise UserError(f"unknown option {key!r}{did_you_mean(key, names)}")
    arm_sources = list(dict.fromkeys(a.options.get("source", source) for a in parsed))
    for spec in arm_sources:
        preflight.check_source(spec, "--source" if spec == source else "an arm's source=")
    preflight.check_modalities(data, arm_sources)
    base = FitConfig(data=data, source=source, curve=True, **options)
    for arm in parsed:  # an arm's bad option (lr=inf, reuse=0) is found now, not after other cells have trained
        try:
            base.replace(strategy=arm.strategy, **arm.options)
        except UserError as e:
            raise UserError(f"arm {arm.name!r}: {e}") from None
    sizes = parse_sizes(per_class)
    out = Path(out)
    config = {
        "data": data, "source": source, "arms": [a.name for a in parsed], "seeds": seeds,
        "per_class": [size_key(s) for s in sizes], "threshold": threshold,
        "base": {k: v for k, v in base.to_dict().items() if k not in RUNTIME_OPTIONS},
    }
    from transferlab.report.html import write_compare_report  # slow imports (torch, Lightning) after the checks
    from transferlab.train.engine import runs_on_cpu
    from transferlab.train.run import (
        adapt_source,
        check_input_size,
        cpu_input_size,
        data_for,
        fit,
        open_source,
        resolve_reuse,
        seconds_per_step,
        versions,
    )

    loaded: dict[tuple[str, bool], Any] = {}  # every source once, pretrained or fresh, before training anything
    for arm in parsed:
        spec, pretrained = arm.options.get("source", source), STRATEGIES.get(arm.strategy).pretrained
        if (spec, pretrained) not in loaded:
            loaded[spec, pretrained] = open_source(base.replace(source=spec), pretrained)
    modalities = {s.modality for s in loaded.values()}
    if len(modalities) > 1:
        raise UserError("--arms mix image and text sources; compare sources of one modality")
    modality = modalities.pop()
    data_by_size = {size: data_for(base.replace(split_seed=base.seed, per_class=size), modality)
                    for size in sizes}  # every size checked before training anything
    scratch_arm = next(a for a in parsed if a.strategy == "scratch")
    first = loaded[scratch_arm.options.get("source", source), False]  # the baseline's architecture
    input_size = base.image_size
    if input_size is None and modality == "image":
        own = first.preprocessing.input_size
        input_size = cpu_input_size(first, data_by_size[sizes[-1]]) if runs_on_cpu(base) else own
    for arm in parsed:  # --reuse beyond a source's blocks, an input size it cannot take: before the first cell
        src = loaded[arm.options.get("source", source), STRATEGIES.get(arm.strategy).pretrained]
        if src.adapt is None:
            try:
                resolve_reuse(base.replace(**{k: v for k, v in arm.options.items() if k != "source"}), src)
            except UserError as e:
                raise UserError(f"arm {arm.name!r}: {e}") from None
        if modality == "image":
            check_input_size(src, input_size)
    zero = is_global_zero()  # under DDP every process runs the cells together; rank 0 writes
    estimate = None
    if zero and not resume:
        largest, steps = data_by_size[sizes[-1]], {}
        for arm in parsed:  # one timed step per source: arms of other sources can cost 100x more (MiniLM vs words)
            spec = arm.options.get("source", source)
            if spec not in steps:
                src = loaded[spec, STRATEGIES.get(arm.strategy).pretrained]
                steps[spec] = seconds_per_step(adapt_source(src, largest, base), largest, base, input_size)
        estimate = estimate_seconds({a.name: steps[a.options.get("source", source)] for a in parsed}, parsed, seeds,
                                    base, list(data_by_size.values()))
        log.info("%d cells (%d size%s x %d arms x %d seeds)%s: about %s on this machine, estimated from one timed "
                 "training step per source", len(sizes) * len(parsed) * seeds, len(sizes),
                 "s" if len(sizes) > 1 else "", len(parsed), seeds, f" at {input_size} px" if input_size else "",
                 _duration(estimate))
    lock = prepare_experiment(out, config, resume, overwrite=overwrite) if zero else None  # inputs checked
    try:
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
                    cfg = base.replace(  # every cell at the one input size chosen above
                        strategy=arm.strategy, seed=seed, split_seed=base.seed, per_class=size, image_size=input_size,
                        **arm.options,
                    )
                    log.info("cell %d/%d: %s, %s per class, seed %d", done, total, arm.name, key, seed)
                    finished = (cell_dir / "model.json").is_file() and not (cell_dir / "INCOMPLETE").exists()
                    src = loaded[arm.options.get("source", source), STRATEGIES.get(arm.strategy).pretrained]
                    result = fit(cfg, cell_dir, resume=True, progress=progress, data=data_by_size[size], source=src)
                    if not zero:
                        continue
                    curves[key][arm.name][seed] = read_curve(cell_dir)
                    cells.append({
                        "arm": arm.name, "per_class": key, "seed": seed, "run_dir": str(cell_dir.relative_to(out)),
                        "test_accuracy": result.test_accuracy, "train_wall_seconds": result.wall_seconds,
                        "reused": finished,
                    })

        if not zero:
            return {}
        results = summarise(curves, parsed, sizes, threshold,
                            {size_key(s): len(d.test) for s, d in data_by_size.items()})
        lr, mult = base.learning_rates(modality)
        results.update({
            "schema": SCHEMA, "config": config, "versions": versions(), "cells": cells, "modality": modality,
            "resolved": {"lr": lr, "backbone_lr_mult": mult},
            "test_size": {size_key(s): len(d.test) for s, d in data_by_size.items()},
            "input_size": input_size, "estimated_seconds": estimate,
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
    finally:
        if lock is not None:
            lock.release()


def finish_experiment(out: Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` atomically, then drop the INCOMPLETE marker: the experiment is complete."""
    write_json(out / "results.json", results)
    (out / "INCOMPLETE").unlink(missing_ok=True)


def summarise(
    curves: dict[str, dict[str, dict[int, Curve]]], arms: list[Arm], sizes: list[int | None], threshold: float,
    test_sizes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Benefits per size and arm, data efficiency, whether each curve had levelled off, what happened to the
    asymptote benefit across sizes, and negative transfer. ``test_sizes[size]``: examples behind each curve point."""
    scratch = next(a.name for a in arms if a.strategy == "scratch")
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
    mode: measured on the bundled demo), and a frozen arm's feature extraction once per size (later seeds read the
    cache)."""
    total = 0.0
    for d in data:
        train, val, test = len(d.train), len(d.val), len(d.test)
        batches = math.ceil(train / cfg.batch_size)
        within = len({max(1, round(f * batches)) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2)} - {batches}) + 1
        evaluated = cfg.epochs * val + within * min(test, 500) + (cfg.epochs + 1) * test
        for arm in arms:
            step = steps[arm.name]
            if STRATEGIES.get(arm.strategy).frozen_prefix:
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


EXPERIMENTS = {"compare": "comparison", "layers": "layer sweep", "rank": "ranking"}


def prepare_experiment(out: Path, config: dict[str, Any], resume: bool, kind: str = "compare",
                       overwrite: bool = False) -> DirLock:
    """Create and lock ``out`` for an experiment (``kind``: compare, layers or rank), or accept it for ``--resume``
    when it holds the same one; ``--overwrite`` empties it only when it is wholly a transferlab ``kind`` folder.
    The caller releases the returned lock when the experiment ends."""
    what, path = EXPERIMENTS[kind], out / f"{kind}.json"
    lock = lock_folder(out, f"the {what} folder")
    try:
        if any(p.name != LOCK for p in out.iterdir()):
            if overwrite:
                check_overwritable(out, kind)
                clear_output(out)
            elif not path.is_file():
                raise UserError(f"--out {out} holds files that are not a transferlab {what}; choose another --out")
            else:
                try:
                    old = json.loads(path.read_text())
                except ValueError:
                    raise UserError(f"{path} is not valid JSON: --overwrite starts the {what} over") from None
                if old != config:
                    diff = next((k for k in config if old.get(k) != config[k]), "configuration")
                    raise UserError(
                        f"--out {out} holds another experiment (its {diff} is {old.get(diff)!r}, now "
                        f"{config.get(diff)!r}); choose another --out or pass --overwrite"
                    )
                if not resume:
                    raise UserError(f"--out {out} already holds this {what}: pass --resume to continue or reuse "
                                    "it, or --overwrite to start over")
        mark(out, kind)
        if not (out / "results.json").is_file():
            atomic_write(out / "INCOMPLETE", f"this {what} has not finished; `--resume` continues it\n")
        write_json(path, config)
    except BaseException:
        lock.release()
        raise
    return lock


def _write_curves_csv(path: Path, curves: dict[str, dict[str, dict[int, Curve]]]) -> None:
    write_csv(path, ["per_class", "arm", "seed", "examples", "wall_seconds", "test_accuracy", "epoch_end"], [
        [key, arm, seed, int(c.examples[i]), f"{c.wall[i]:.4f}", f"{c.skill[i]:.6f}", int(c.epoch_end[i])]
        for key, per_arm in curves.items() for arm, per_seed in per_arm.items()
        for seed, c in sorted(per_seed.items()) for i in range(len(c.examples))
    ])
