"""``rank``: choose the source before training. One forward pass per candidate, then transferability scores.

Every candidate's features of the target training split come through the same feature cache as ``frozen``.
``--validate`` fine-tunes every candidate with one budget (``compare``'s cells) and reports how well each score's
ranking agrees with the fine-tuned accuracy (Kendall's tau and the weighted tau, which cares most about the top).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from transferlab import preflight
from transferlab.config import SET_BY_COMPARE, FitConfig
from transferlab.errors import UserError, did_you_mean
from transferlab.evaluate import transferability as tr
from transferlab.experiments.common import (
    clean_json,
    experiment_folder,
    finish_experiment,
    recorded_base,
)
from transferlab.experiments.compare import compare
from transferlab.report.html import write_rank_report
from transferlab.train.datamodule import frozen_features
from transferlab.train.fit import bind_source, open_source, versions
from transferlab.transfer.model import build_model

log = logging.getLogger(__name__)
SCHEMA = "transferlab.rank/1"


def parse_scores(text: str | None) -> tuple[list[str], bool]:
    """The scores asked for, and whether they were asked for explicitly (head scores are then required)."""
    if not text:
        return list(tr.SCORES), False
    scores = [s.strip() for s in text.split(",") if s.strip()]
    for s in scores:
        if s not in tr.SCORES:
            raise UserError(f"--scores: unknown score {s!r}{did_you_mean(s, tr.SCORES)}; "
                            f"choose from {', '.join(tr.SCORES)}")
    return list(dict.fromkeys(scores)), True


def competition_ranks(scores: dict[str, float]) -> dict[str, int]:
    """Rank 1 for the highest score; equal scores share a rank and the next rank is skipped (1, 1, 3). Scores
    within 1e-9 of each other, relatively, or 1e-12 absolutely, are equal: floating-point noise of one forward
    pass is not a ranking."""
    def above(other: float, value: float) -> bool:
        return other > value and not math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-12)

    return {spec: 1 + sum(above(other, value) for other in scores.values()) for spec, value in scores.items()}


def score_features(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None,
                   scores: list[str]) -> dict[str, float]:
    """Every asked-for score that applies (the head scores need ``source_probs``)."""
    fns = {
        "logme": lambda: tr.logme(features, labels),
        "hscore": lambda: tr.hscore(features, labels),
        "knn": lambda: tr.knn_accuracy(features, labels),
        "linear": lambda: tr.linear_accuracy(features, labels),
        "leep": lambda: tr.leep(source_probs, labels),
        "nce": lambda: tr.nce(source_probs.argmax(1), labels),
    }
    return {s: fns[s]() for s in scores if s not in tr.NEEDS_SOURCE_HEAD or source_probs is not None}


def rank(
    data: str,
    *,
    sources: str | list[str],
    out: str | Path,
    scores: str | None = None,
    validate: bool = False,
    skip_missing: bool = False,
    seeds: int = 2,
    per_class: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dataset: Any = None,
    modality: Any = None,
    locked: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Rank candidate sources for ``data``; write ``results.json`` and ``report.html`` to ``out``. ``dataset``:
    the data already read, by the caller that holds the folder's lock (``locked``)."""
    specs = [s.strip() for s in (sources.split(",") if isinstance(sources, str) else sources) if s.strip()]
    if len(set(specs)) != len(specs):
        raise UserError("--sources lists the same source twice")
    if len(specs) < 2:
        raise UserError("--sources needs at least two candidates to rank (add scratch:<source> as a control)")
    wanted, explicit = parse_scores(scores)
    base = FitConfig.from_dict({"data": data, "source": specs[0], "strategy": "frozen", "per_class": per_class,
                                **options})
    out = Path(out)
    modality = modality or preflight.decide_modality(data, specs)
    if dataset is None and modality is not None:  # the data are read and checked before any model loads
        dataset = modality.load(base)

    loaded, skipped = {}, {}
    for spec in specs:
        try:
            loaded[spec] = open_source(base.replace(source=spec), pretrained=True)
        except UserError as e:
            if not skip_missing:
                raise UserError(f"--sources: {e}; pass --skip-missing to rank the others") from None
            skipped[spec] = str(e)
            log.warning("skipping %s: %s", spec, e)
    if len(loaded) < 2:
        raise UserError(f"only {len(loaded)} of the candidates could be loaded; ranking needs two")
    modality = preflight.decide_modality(data, list(loaded), {spec: s.modality for spec, s in loaded.items()})
    dataset = dataset if dataset is not None else modality.load(base)
    labels = np.asarray(dataset.train.labels)
    heads = {spec: s.classifier is not None for spec, s in loaded.items()}
    missing_head = [spec for spec, has in heads.items() if not has]
    asked_head = [s for s in wanted if s in tr.NEEDS_SOURCE_HEAD]
    if explicit and asked_head and missing_head and not skip_missing:
        raise UserError(f"--scores {asked_head[0]} needs the source's own classifier head, which {missing_head[0]} "
                        "has not; drop it from --scores or pass --skip-missing")
    config = {"data": data, "sources": specs, "scores": wanted, "validate": validate, "seeds": seeds,
              "base": recorded_base(base)}
    with experiment_folder(out, config, resume, "rank", overwrite, locked=locked) as zero:
        results: dict[str, dict[str, float]] = {}
        seconds: dict[str, dict[str, float]] = {}
        for spec, source in loaded.items():
            log.info("features of %s", spec)
            source = bind_source(modality, source, dataset, base)
            model = build_model(source, len(dataset.classes), None, pretrained=True)
            reuse = source.default_reuse
            pre = modality.preprocessing(source, dataset, base, on_cpu=False)  # each source at its own size
            prefix, cut = model.prefix(reuse), reuse
            if reuse < len(source.blocks) and source.prefix_pool is not None:  # e.g. word vectors' mean over tokens
                prefix, cut = torch.nn.Sequential(prefix, source.prefix_pool), f"{reuse}+pool"
            feats, _, feature_seconds = frozen_features(prefix, source, cut, {"train": dataset.train}, pre, base,
                                                        progress, base.channels_last and modality.channels_last)
            tick = time.perf_counter()
            x = feats["train"].double()
            probs = None
            if source.classifier is not None and reuse == len(source.blocks):
                with torch.inference_mode():
                    probs = source.classifier.eval()(feats["train"]).double().softmax(1).numpy()
            results[spec] = score_features(x.numpy(), labels, probs, wanted)
            seconds[spec] = {"features": feature_seconds, "scores": time.perf_counter() - tick}
            seconds[spec]["total"] = seconds[spec]["features"] + seconds[spec]["scores"]

        ranking = {s: sorted((spec for spec in results if s in results[spec] and math.isfinite(results[spec][s])),
                             key=lambda spec, s=s: -results[spec][s]) for s in wanted}
        ranks = {s: competition_ranks({spec: results[spec][s] for spec in order}) for s, order in ranking.items()}
        summary: dict[str, Any] = {
            "schema": SCHEMA, "config": config, "versions": versions(), "classes": dataset.classes,
            "train_size": len(labels), "sources": list(loaded), "skipped": skipped, "scores": results,
            "ranking": ranking, "ranks": ranks, "seconds": seconds,
            "not_applicable": {spec: [s for s in wanted if s not in results[spec]] for spec in results},
        }
        if validate:
            summary.update(_validate(data, out, list(loaded), results, wanted, seeds, seconds, base, progress))
        summary = clean_json(summary)
        if zero:
            write_rank_report(out / "report.html", summary)
            finish_experiment(out, summary)
        return summary


def _validate(data: str, out: Path, specs: list[str], results: dict[str, dict[str, float]], wanted: list[str],
              seeds: int, seconds: dict[str, dict[str, float]], base: FitConfig, progress: bool) -> dict[str, Any]:
    """Fine-tune every candidate through ``compare`` and measure how well each score predicted the outcome."""
    options = {k: v for k, v in base.to_dict().items() if k not in SET_BY_COMPARE}  # devices and precision too
    arms = {spec: f"finetune:source={spec}" for spec in specs}
    size = None if base.per_class is None else str(base.per_class)
    # compare's scratch arm trains the architecture of the scratch:<source> control when there is one (a random
    # word-embedding model trains in seconds; a random transformer would cost as much as fine-tuning it)
    baseline = next((s.removeprefix("scratch:") for s in specs if s.startswith("scratch:")), specs[0])
    cmp = compare(data, out=out / "validate", source=baseline, arms=list(arms.values()), seeds=seeds,
                  per_class=size, resume=True, progress=progress, **options)
    key = cmp["largest_size"]
    accuracy = {spec: cmp["data_efficiency"][arm][key]["mean"] for spec, arm in arms.items()}
    train_seconds = {spec: float(np.mean([c["train_wall_seconds"] for c in cmp["cells"] if c["arm"] == arm]))
                     for spec, arm in arms.items()}
    validation = {}
    for s in wanted:
        have = [spec for spec in specs if s in results[spec] and math.isfinite(results[spec][s])]
        x = [results[spec][s] for spec in have]
        y = [accuracy[spec] for spec in have]
        enough = len(have) >= 2
        validation[s] = {
            "kendall_tau": float(stats.kendalltau(x, y).statistic) if enough else float("nan"),
            "weighted_tau": tr.weighted_tau(np.array(x), np.array(y)) if enough else float("nan"),
            "sources": len(have),
            "top_is_best": (max(have, key=lambda h: results[h][s]) == max(have, key=accuracy.get)) if enough
            else None,  # a score that applies to fewer than 2 sources picks nothing
        }
    rank_total = sum(v["total"] for v in seconds.values())
    finetune_total = sum(train_seconds.values())
    return {
        "validation": validation,
        "finetune_accuracy": accuracy,  # by the comparison's metric
        "metric": cmp.get("metric", "accuracy"),
        "finetune_seconds": train_seconds,
        "speedup": finetune_total / rank_total if rank_total > 0 else float("nan"),
        "validate_dir": "validate",
    }
