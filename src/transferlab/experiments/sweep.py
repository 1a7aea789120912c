"""``layers``: how much of a source to reuse, after Yosinski et al. 2014 ("How transferable are features in deep
neural networks?").

With ``source_data`` (task A) and target data (task B): base A and base B are trained from scratch; for every cut
n = 1..L, AnB reuses the first n blocks of base A frozen (the rest re-initialised and trained on B), AnB+ the same
fine-tuned, and BnB / BnB+ are the selffer controls from base B. With a ready ``source`` instead, only AnB and AnB+
are swept. Base B trains on every training row of the target (as in the paper: the selffer network is the target
task learned in full); the cells on ``--per-class`` of them, so beside them stand two references trained on exactly
the cells' rows: the architecture from scratch (base B itself when the cells use every row) and a logistic
regression on the raw inputs. Each cell's difference from scratch is paired by seed (the same split and rows, the
same seed), which resolves far smaller differences than two intervals over seeds side by side. Every cell is a
``fit`` run directory trained to convergence, so the sweep is resumable like ``compare``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transferlab import modality as modalities
from transferlab import preflight
from transferlab.config import DEFAULT_ARCH, FitConfig
from transferlab.errors import UserError
from transferlab.evaluate.curves import accuracy_interval, paired
from transferlab.evaluate.logreg import fit_logreg
from transferlab.experiments.common import clean_json, experiment_folder, finish_experiment, recorded_base, run_cell
from transferlab.report.html import write_layers_report
from transferlab.sources import load_source
from transferlab.train.fit import bind_source, fit, open_source, pretrain, versions

log = logging.getLogger(__name__)
SCHEMA = "transferlab.layers/3"  # 2: cells trained to convergence, scratch and logreg at the cells' size; 3: vs_scratch
SERIES = {"AnB": ("A", "frozen"), "AnB+": ("A", "finetune"), "BnB": ("B", "frozen"), "BnB+": ("B", "finetune")}


def sweep(
    target_data: str,
    *,
    out: str | Path,
    source_data: str | None = None,
    arch: str = DEFAULT_ARCH,
    source: str | None = None,
    seeds: int = 3,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    locked: bool = False,
    dataset: Any = None,
    modality: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the layer-transfer sweep and write ``results.json`` and ``report.html`` to ``out``."""
    if (source_data is None) == (source is None):
        raise UserError("give exactly one of --source-data (train base A yourself) or --source (a ready source)")
    if seeds < 2:
        raise UserError(f"--seeds {seeds}: confidence intervals need at least 2 seeds")
    base = FitConfig(data=target_data, source=source or arch, **options)
    out = Path(out)
    config = {"target_data": target_data, "source_data": source_data, "arch": arch, "source": source,
              "seeds": seeds, "base": recorded_base(base)}
    modality = modality or preflight.decide_modality(base.data, [base.source])  # data read before any model
    data = dataset if dataset is not None else modality.load(base) if modality is not None else None
    ready = open_source(base, pretrained=True) if source is not None else None  # errors now, not after cells
    if modality is None:  # neither the data nor the names tell: the architecture does
        modality = modalities.get((ready or open_source(base, pretrained=False)).modality)
        data = modality.load(base)
    with experiment_folder(out, config, resume, "layers", overwrite, locked=locked) as zero:
        seed_range = range(base.seed, base.seed + seeds)
        base_b = []
        sources: dict[str, Any] = {}
        if source_data is not None:
            for task, task_data in (("A", source_data), ("B", target_data)):
                for seed in seed_range if task == "B" else [base.seed]:
                    run_dir = out / "base" / f"{task}_seed{seed}"
                    cfg = base.replace(data=task_data, source=arch, seed=seed, split_seed=base.seed, per_class=None,
                                       reuse=None)
                    result, _ = run_cell(f"base {task} seed {seed}", pretrain, cfg, run_dir, resume=True,
                                         progress=progress)
                    if task == "B":
                        base_b.append(result.test_score)
                sources[task] = load_source(str(out / "base" / f"{task}_seed{base.seed}"))
            series = list(SERIES)
        else:
            sources["A"] = bind_source(modality, ready, data, base)
            series = ["AnB", "AnB+"]
        n_blocks = sources["A"].default_reuse

        # the reference at the cells' size: the architecture from random weights, on the same rows; base B is that
        # reference when the cells train on every target row as it did (the same seeds, the same numbers), unless a
        # sweep from before this reuse trained scratch cells of its own (on a GPU they need not be base B bit for bit)
        own = (out / "cells" / "scratch").exists()
        scratch = list(base_b) if base_b and base.per_class is None and not own else []
        for seed in seed_range[len(scratch):]:
            cfg = base.replace(strategy="scratch", reuse=None, seed=seed, split_seed=base.seed,
                               source=str(sources["A"].name))
            scratch.append(run_cell(f"scratch seed {seed}", fit, cfg, out / "cells" / "scratch" / "all" / f"seed{seed}",
                                    resume=True, progress=progress, data=data, source=sources["A"],
                                    modality=modality).test_score)
        logreg = fit_logreg(data, modality, base.seed, base.metric, base.class_weight)["test_score"] if zero else None
        acc: dict[str, dict[int, list[float]]] = {name: {} for name in series}
        for name in series:
            task, strategy = SERIES[name]
            for n in range(1, n_blocks + 1):
                for seed in seed_range:
                    cfg = base.replace(strategy=strategy, reuse=n, seed=seed, split_seed=base.seed,
                                       source=str(sources[task].name), backbone_lr_mult=1.0)
                    cell = out / "cells" / name / f"n{n}" / f"seed{seed}"
                    result = run_cell(f"{name} n={n} seed {seed}", fit, cfg, cell, resume=True, progress=progress,
                                      data=data, source=sources[task], modality=modality)
                    acc[name].setdefault(n, []).append(result.test_score)

        if not zero:
            return {}

        def summary(values: list[float]) -> dict[str, Any]:
            iv = accuracy_interval(values, len(data.test))
            return {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "interval_method": iv.method,
                    "values": values}

        def cell(values: list[float]) -> dict[str, Any]:
            """With the paired difference from scratch: seed by seed, the same split and rows."""
            return {**summary(values), "vs_scratch": paired([v - r for v, r in zip(values, scratch, strict=True)])}

        results = clean_json({
            "schema": SCHEMA,
            "config": config,
            "versions": versions(),
            "metric": base.metric,
            "blocks": list(sources["A"].blocks),
            "series": {name: {str(n): cell(v) for n, v in per_n.items()} for name, per_n in acc.items()},
            "base": summary(base_b) if base_b else None,
            "base_trained_on": "every training row of the target" if base_b else None,
            "references": {"scratch": summary(scratch), "logreg": logreg,
                           "rows": len(data.train), "per_class": base.per_class},
        })
        write_layers_report(out / "report.html", results)
        finish_experiment(out, results)
        return results
