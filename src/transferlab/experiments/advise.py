"""``advise``: from data to a decision within a time budget. Which source, how much of it, frozen or tuned, at what
learning rate, and does it beat learning without transfer and a logistic regression?

The recipe, one function per phase:

1. :func:`candidates`: every source of the data's modality whose weights are here (``--candidates`` to choose);
2. :func:`shortlist`: ``rank``'s LogME of each (one forward pass): the best :data:`SHORTLIST` go on. On the
   README's rank evidence LogME picked the winner on both tasks (Fashion-MNIST and WordNet) but not the order of
   the rest, so it shortlists rather than decides;
3. :func:`search`: an Optuna study over source x strategy x reuse depth x learning rate (TPE sampler, successive
   halving pruner: each trial reports its validation accuracy at every validation and the weakest stop early).
   Every trial is a ``fit`` trained to convergence on the training split, judged on the validation split; the
   test split is never seen. Beside the trials: scratch (a trial) and the logistic regression (on the validation
   split). The study lives in ``OUT/study.db`` (or ``--storage``: several processes or machines share one);
4. :func:`confirm`: the search's best beside what ``fit`` does by default, the frozen alternative, scratch and
   the logistic regression (:func:`contenders`), through ``compare`` with ``--seeds``, seed i trained on fold i
   of a cross-validation over the training and validation splits; :func:`choose` keeps the default unless
   another is clearly better on the folds' validation parts pooled (a paired bootstrap over those examples: every
   training and validation example, not the validation split's alone). The test split gives the intervals, the
   benefits over scratch and the verdict against the regression, never the choice (but for :func:`veto`,
   towards the simpler model only);
5. :func:`write_advice`: ``advice.json`` (the configuration in the form ``fit --config`` reads, and the
   evidence), ``report.html`` and three lines.

The budget covers everything, start-up included. What is left after the start-up and the shortlist goes
:data:`SEARCH_SHARE` to the search (at its end no trial starts, and the running ones stop) and
:data:`CONFIRM_SHARE` to the confirmation, shared equally by its cells as a cap on each (``--max-time``: a cell
that reaches it stops, flagged as not converged); the rest is room for what is not training (loading, reports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from transferlab import catalogue, preflight
from transferlab.config import LOGREG, RUNTIME_OPTIONS, FitConfig
from transferlab.data.splits import Data, fold_data
from transferlab.errors import UserError
from transferlab.evaluate.curves import paired_difference
from transferlab.evaluate.logreg import fit_logreg
from transferlab.experiments.common import clean_json, experiment_folder, finish_experiment, run_cell
from transferlab.experiments.plan import AdvisePlan
from transferlab.modality import Modality
from transferlab.train.fit import bind_source, fit, open_source, read_predictions, resolve_reuse, versions
from transferlab.transfer.strategies import make_strategy

log = logging.getLogger(__name__)
SCHEMA = "transferlab.advise/1"
SHORTLIST = 2  # candidates kept after LogME (see the module docstring)
STRATEGIES = ("frozen", "finetune", "finetune:decay=0.7", "lpft")
DEPTHS = ("all", "two thirds")  # how much of a source a tuned trial reuses
LR_SPAN = (0.1, 3.0)  # the learning rates searched, as multiples of the modality's default (log-uniform)
SEARCH_SEED = 0
HEARTBEAT = 5  # seconds between a running trial's heartbeats; silent for 3 of them, it is retried
# Of the budget left after the start-up and the shortlist. The confirmation decides (it weighs the default beside
# the search's best, 4 configurations x 3 seeds): at 0.4 its cells' caps on Fashion-MNIST would be 19 s (0.4 x 573 s
# over 12 cells), below the 16-26 s that fine-tuning there took to converge
SEARCH_SHARE, CONFIRM_SHARE = 0.35, 0.5


@dataclasses.dataclass
class Context:
    """What every trial needs, loaded once per process."""

    plan: AdvisePlan
    out: Path
    modality: Modality
    data: Data  # the search's data: the test split is the validation split (the real test split unseen)
    sources: dict[str, Any]  # loaded pretrained sources by spec
    deadline: Callable[[], float]  # the clock time at which the search must stop
    clock: Callable[[], float]


def advise(
    plan: AdvisePlan,
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    modality: Modality | None = None,
    dataset: Data | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
) -> dict[str, Any]:
    """Run the whole advice into ``out`` (locked by the caller) and return ``advice.json``'s content."""
    out = Path(out)
    started = clock() if started is None else started
    modality = modality or preflight.decide_modality(plan.data, list(plan.candidates)) or \
        preflight.decide_modality(plan.data, [FitConfig.source])
    data = dataset if dataset is not None else modality.load(plan.base)
    with experiment_folder(out, plan.config, resume, "advise", overwrite, locked=True) as zero:
        specs = candidates(plan, modality)
        short = shortlist(plan, out, modality, data, specs, progress)
        search_data = dataclasses.replace(data, test=data.val)  # trials are judged on validation; test unseen
        logreg = fit_logreg(search_data, modality, plan.base.seed, plan.base.metric, plan.base.class_weight)
        logreg_val = logreg["test_score"]
        timings: dict[str, float] = {"start_up_and_shortlist": clock() - started}
        left = max(0.0, plan.budget - timings["start_up_and_shortlist"])
        study = open_study(plan, out)
        end = clock() + SEARCH_SHARE * left  # the same moment for every worker (time.monotonic: one clock)
        ctx = Context(plan, out, modality, search_data, {s: open_source(plan.base.replace(source=s), True)
                                                         for s in short}, lambda: end, clock)
        enqueue_defaults(study, short)
        search(ctx, study, short, progress, end)
        timings["search"] = clock() - started - timings["start_up_and_shortlist"]
        best = recommend(study, logreg_val)
        options = contenders(best, short, modality)
        confirmed = confirm(plan, out, options, data, modality, progress, CONFIRM_SHARE * left, clock)
        chosen, scored = choose(options, confirmed, out / "confirm", logreg_folds(plan, data, modality, logreg["C"]),
                                plan.base.metric)
        timings["confirm"] = clock() - started - timings["search"] - timings["start_up_and_shortlist"]
        advice = write_advice(plan, out, best, chosen, scored, short, study, confirmed, logreg_val, timings,
                              clock() - started)
        if zero:
            finish_experiment(out, advice, "advice.json")
        return advice


# --- 1 and 2. candidates and shortlist ---------------------------------------------------------------------------


def candidates(plan: AdvisePlan, modality: Modality) -> list[str]:
    """``--candidates``, else every source the catalogue knows for the modality whose weights are here now."""
    if plan.candidates:
        return list(plan.candidates)
    found = []
    for kind in catalogue.source_kinds():
        if kind.modality != modality.name or kind.by_path or not kind.listed or kind.offline is None:
            continue
        for spec in kind.examples or (kind.name,):
            if catalogue._resolve(kind.offline)(spec) == "yes":
                found.append(spec)
    log.info("candidates: %s", ", ".join(found) or "none with weights here: the baselines only")
    return found


def shortlist(plan: AdvisePlan, out: Path, modality: Modality, data: Data, specs: list[str],
              progress: bool) -> list[str]:
    """The :data:`SHORTLIST` candidates with the highest LogME on the training split (``rank``, in
    ``OUT/shortlist``); all of them when there are that few."""
    if len(specs) <= SHORTLIST:
        return specs
    from transferlab.experiments.rank import rank

    options = {k: v for k, v in plan.base.to_dict().items() if k in ("image_size", "batch_size", "num_workers",
                                                                      "text_column", "label_column", "impute",
                                                                      "encoding_errors", "max_vectors", "seed")}
    ranked = rank(plan.data, sources=specs, out=out / "shortlist", scores="logme", resume=True, progress=progress,
                  dataset=data, modality=modality, locked=False, per_class=plan.base.per_class, **options)
    order = ranked["ranking"]["logme"]
    log.info("shortlist by LogME: %s", ", ".join(order[:SHORTLIST]))
    return order[:SHORTLIST]


# --- 3. the search ------------------------------------------------------------------------------------------------


def open_study(plan: AdvisePlan, out: Path) -> Any:
    """The Optuna study of this advice: resumed when its storage holds it. Heartbeats mark a trial whose process
    died as failed, and its configuration is tried again (resuming its run directory: nothing trained twice)."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = plan.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8, and what retries need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, heartbeat_interval=HEARTBEAT, grace_period=3 * HEARTBEAT,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    sampler = optuna.samplers.TPESampler(seed=SEARCH_SEED, n_startup_trials=6)
    # No trial is judged before the convergence rule's minimum of steps: with Optuna's "auto" (a hundredth of the
    # longest finished trial) fine-tuning trials on Fashion-MNIST were pruned after 16 steps, one epoch, on 375
    # validation images, before their rates could show
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, plan.base.min_steps), reduction_factor=3)
    name = "advise-" + hashlib.sha256(json.dumps(plan.config, sort_keys=True).encode()).hexdigest()[:12]
    return optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def enqueue_defaults(study: Any, short: list[str]) -> None:
    """The first trials, what a user would try first at the default rate, cheapest first: each shortlisted source
    frozen, then fine-tuned, then scratch (which converges slowest: on 2 CPU cores one EfficientNet-Lite0 scratch
    trial took a whole 10-minute budget's search share when it went first); the sampler explores from there.
    Enqueued once per study."""
    if study.user_attrs.get("enqueued"):
        return
    first = [{"source": spec, "strategy": s, "depth": "all", "lr_scale": 1.0}
             for s in ("frozen", "finetune") for spec in short]
    first += [{"source": short[0], "strategy": "scratch", "depth": "all", "lr_scale": 1.0}] if short else []
    for params in first:
        study.enqueue_trial(params)
    study.set_user_attr("enqueued", True)


def search(ctx: Context, study: Any, short: list[str], progress: bool, end: float) -> None:
    """Run trials until the deadline (the budget less the confirmation's reserve), in ``--workers`` processes on
    the one study (the others start here, on this machine; on other machines, ``advise --storage URL`` joins)."""
    if not short:
        log.info("no candidate source: nothing to search, the baselines decide")
        return
    if ctx.deadline() - ctx.clock() <= 0:
        return
    helpers = []
    if ctx.plan.workers > 1:  # the other workers: processes of their own on the same storage and clock
        spawn = multiprocessing.get_context("spawn")
        for _ in range(1, ctx.plan.workers):
            p = spawn.Process(target=_worker, args=(ctx.plan, ctx.out, short, end))
            p.start()
            helpers.append(p)
    threads = max(1, (os.cpu_count() or 1) // ctx.plan.workers)
    with _threads(threads):
        _optimize(ctx, study, short, progress)
    for p in helpers:
        p.join()


def _worker(plan: AdvisePlan, out: Path, short: list[str], end: float) -> None:
    """Another worker process: the same study, its own trials, the same deadline (``time.monotonic`` is one clock
    for every process of a machine)."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.workers))
    modality = preflight.decide_modality(plan.data, short)
    data = modality.load(plan.base)
    study = open_study(plan, out)
    ctx = Context(plan, out, modality, dataclasses.replace(data, test=data.val),
                  {s: open_source(plan.base.replace(source=s), True) for s in short}, lambda: end, time.monotonic)
    _optimize(ctx, study, short, progress=False)


@contextlib.contextmanager
def _threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimize(ctx: Context, study: Any, short: list[str], progress: bool) -> None:
    import optuna

    def stop_when_due(study: Any, trial: Any) -> None:
        if ctx.clock() >= ctx.deadline():
            study.stop()

    def objective(trial: Any) -> float:
        return run_trial(ctx, trial, short, progress)

    # which processes joined the study (a worker started late may find the search's time spent before a trial)
    study.set_user_attr(f"worker:{os.getpid()}", True)
    callbacks: list[Callable[[Any, Any], None]] = [stop_when_due]
    if ctx.plan.trials is not None:  # --trials: those that ran to their end, of every worker and earlier runs
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks.append(optuna.study.MaxTrialsCallback(ctx.plan.trials, states=ended))
        if len(study.get_trials(deepcopy=False, states=ended)) >= ctx.plan.trials:
            return
    remaining = ctx.deadline() - ctx.clock()
    if remaining > 0:
        study.optimize(objective, timeout=remaining, callbacks=callbacks, catch=(UserError,), gc_after_trial=True)
    log.info("search: %d trials in the study (%d finished, %d pruned)", len(study.trials),
             sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
             sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials))


def trial_config(ctx: Context, trial: Any, short: list[str]) -> tuple[FitConfig, dict[str, Any]]:
    """A trial's run configuration from the sampler's choices (scratch: the first shortlisted architecture)."""
    source = trial.suggest_categorical("source", short)
    strategy = trial.suggest_categorical("strategy", ("scratch", *STRATEGIES))
    depth = trial.suggest_categorical("depth", DEPTHS)
    scale = trial.suggest_float("lr_scale", *LR_SPAN, log=True)
    lr = ctx.modality.default_lr[0] * scale
    blocks = len(bind_source(ctx.modality, ctx.sources[source], ctx.data, ctx.plan.base).blocks)
    reuse = None if depth == "all" or strategy in ("scratch", "frozen") else max(1, math.ceil(blocks * 2 / 3))
    cfg = ctx.plan.base.replace(source=source, strategy=strategy, reuse=reuse, lr=lr, curve=False)
    return cfg, {"source": source, "strategy": strategy, "reuse": reuse, "lr": lr}


class Report(L.Callback):
    """Each validation's accuracy to the trial (the pruner's evidence); stops the trial when the pruner says so or
    when the search's deadline has passed."""

    def __init__(self, trial: Any, ctx: Context) -> None:
        self.trial, self.ctx = trial, ctx

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        value = trainer.callback_metrics.get("val_accuracy")
        if value is None or trainer.sanity_checking:
            return
        self.trial.report(float(value), step=int(trainer.global_step))
        if self.trial.should_prune():
            self.trial.set_user_attr("stopped", f"pruned at step {trainer.global_step}")
            raise optuna.TrialPruned()
        self._stop_at_deadline()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Between validations too: a long epoch (a sentence encoder's on a CPU) overran a 10-minute budget's
        search share by a minute when only validations looked at the clock."""
        self._stop_at_deadline()

    def _stop_at_deadline(self) -> None:
        import optuna

        if self.ctx.clock() >= self.ctx.deadline():
            self.trial.set_user_attr("stopped", "the budget")
            raise optuna.TrialPruned()


def run_trial(ctx: Context, trial: Any, short: list[str], progress: bool) -> float:
    """One trial: a ``fit`` to convergence on the training split, judged by its validation accuracy. Its run
    directory is named by its configuration, so a retried trial resumes what a killed one trained."""
    cfg, chosen = trial_config(ctx, trial, short)
    make_strategy(cfg.strategy).check(list(ctx.sources[cfg.source].blocks.values())[:resolve_reuse(
        cfg, ctx.sources[cfg.source])])  # e.g. lora where nothing has attention projections: refused
    what = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_OPTIONS}  # not where or how fast it runs
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = ctx.out / "trials" / f"{cfg.strategy.replace(':', '_').replace('=', '')}-{key}"
    trial.set_user_attr("run_dir", str(run_dir.relative_to(ctx.out)))
    trial.set_user_attr("chosen", chosen)
    trial.set_user_attr("pid", os.getpid())
    tick = ctx.clock()
    source = ctx.sources[cfg.source] if catalogue.starts_pretrained(cfg.strategy) else None
    import optuna

    try:
        result = run_cell(f"trial {trial.number}: {run_dir.name}", fit, cfg, run_dir, resume=True, progress=progress,
                          data=ctx.data, source=source, modality=ctx.modality, callbacks=(Report(trial, ctx),),
                          score="validation accuracy")
    except optuna.TrialPruned:
        log.info("trial %d: %s: stopped (%s)", trial.number, run_dir.name, trial.user_attrs.get("stopped", "pruned"))
        raise
    trial.set_user_attr("seconds", ctx.clock() - tick)
    trial.set_user_attr("train_seconds", result.wall_seconds)
    trial.set_user_attr("converged", bool(result.training.get("converged")))
    return result.test_score  # by --metric; the search data's "test" split is the validation split


# --- 4. the recommendation and its confirmation -------------------------------------------------------------------


def recommend(study: Any, logreg_val: float) -> dict[str, Any]:
    """The search's best on the validation split: the best trial, or the logistic regression when it did better.
    Ties go to the cheaper (the regression, then the faster trial)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = max(done, key=lambda t: (t.value, -t.user_attrs.get("train_seconds", 0.0)), default=None)
    if best is None or logreg_val >= best.value:
        return {"kind": "logreg", "validation": logreg_val, "trial": None}
    chosen = best.user_attrs["chosen"]
    return {"kind": "scratch" if chosen["strategy"] == "scratch" else "transfer", "validation": best.value,
            "trial": best.number, **chosen, "run_dir": best.user_attrs["run_dir"]}


def contenders(best: dict[str, Any], short: list[str], modality: Modality) -> list[dict[str, Any]]:
    """The configurations the confirmation weighs: the search's best (unless the regression won the search), what
    ``fit --source S`` runs with no other option (the default strategy at the default rate on the first
    shortlisted source: what a user would run without advise; marked ``default``), frozen of the best's source
    (the cheap alternative) and scratch; each configuration once (``lr`` None: the modality's default rate). With
    no source at all, scratch of the first architecture of this kind of data that trains from random weights."""
    source = best.get("source") or (short[0] if short else next(
        k.name for k in catalogue.source_kinds() if k.modality == modality.name and not k.is_prefix
        and k.weights.startswith("none")))
    plain = {"kind": "transfer", "reuse": None, "lr": None, "trial": None}
    found = [best] if best["kind"] != "logreg" else []
    if short:
        found += [{**plain, "source": short[0], "strategy": FitConfig.strategy, "default": True},
                  {**plain, "source": source, "strategy": "frozen"}]
    found.append({**plain, "kind": "scratch", "source": source, "strategy": "scratch"})

    def key(o: dict[str, Any]) -> tuple[Any, ...]:
        if o["kind"] == "scratch":
            return ("scratch",)  # one scratch: the searched one when scratch won the search
        lr = modality.default_lr[0] if o.get("lr") is None else o["lr"]
        return (o["source"], o["strategy"], o.get("reuse"), lr)

    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for o in found:
        kept = unique.setdefault(key(o), o)
        if o.get("default"):  # the searched best may be the default itself (the enqueued trial at the default rate)
            unique[key(o)] = {**kept, "default": True}
    return list(unique.values())


def arm_spec(pick: dict[str, Any]) -> str:
    """A compare arm for a configuration (no ``lr=``: the default rate)."""
    name, _, own = pick["strategy"].partition(":")
    parts = [f"source={pick['source']}", *([f"reuse={pick['reuse']}"] if pick.get("reuse") else []),
             *([] if pick.get("lr") is None else [f"lr={pick['lr']:.3g}"])]
    return f"{name}:" + ",".join(filter(None, [own, *parts]))


def confirm_arms(options: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The confirmation's source (scratch's architecture) and arms: the regression and every contender (scratch
    at the default rate is compare's own baseline, added when not listed)."""
    arms = [LOGREG, *(arm_spec(o) for o in options if o["kind"] == "transfer")]
    arms += [f"scratch:lr={o['lr']:.3g}" for o in options if o["kind"] == "scratch" and o.get("lr") is not None]
    return options[0]["source"], arms


def confirm(plan: AdvisePlan, out: Path, options: list[dict[str, Any]], data: Data, modality: Modality,
            progress: bool, seconds: float, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The contenders and the logistic regression through ``compare`` with ``--seeds``, seed i of each on fold i
    of the training and validation splits (in ``OUT/confirm``): the test split, seen once. Its cells share
    ``seconds``: the cells of a fold stop at their equal share of it, or at an equal share of what is left when
    the fold starts if that is less (flagged as not converged if they had not). The cells' loading and evaluation,
    which a cap does not count, so come out of the later folds' (with the caps fixed up front, an advise on
    WordNet took 653 s of a 600 s budget: each MiniLM cell spent 20-30 s beyond its cap evaluating a fold's 1,133
    validation glosses), and every contender of a fold has the same time, so that the comparison, paired within
    the folds, stays fair (a cap asked for by each cell in turn left the last fine-tuning cell 2 s, against 27 s
    for the frozen cell before it)."""
    from transferlab.experiments.compare import compare

    source, arms = confirm_arms(options)
    settings = {k: v for k, v in plan.base.to_dict().items() if k in {
        "image_size", "batch_size", "weight_decay", "num_workers", "pin_memory", "channels_last", "compile",
        "deterministic", "accelerator", "devices", "precision", "text_model", "max_vectors", "text_column",
        "label_column", "encoding_errors", "impute", "eval_per_class", "min_steps", "patience", "epochs",
        "max_steps", "seed"}}
    settings["max_time"] = share = max(1.0, seconds / (len(options) * plan.seeds))
    end = clock() + seconds
    return compare(plan.data, out=out / "confirm", source=source, arms=",".join(arms), seeds=plan.seeds,
                   per_class=None if plan.base.per_class is None else str(plan.base.per_class), resume=True,
                   progress=progress, data_by_size={plan.base.per_class: data}, modality=modality, folds=True,
                   cap=lambda left: max(1.0, min(share, (end - clock()) / left)), **settings)


def logreg_folds(plan: AdvisePlan, data: Data, modality: Modality, c: float,
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The logistic regression on each fold of the confirmation, trained on its training part at ``c`` (the C that
    cross-validation chose on the training split beside the search, as the contenders' rates were chosen there:
    one fit per fold instead of 50, which took 70 s of a 10-minute advise on WordNet): the labels and predictions
    of the fold's validation part, as class names."""
    names, found = np.asarray(data.classes), []
    for i in range(plan.seeds):
        part = fold_data(data, f"{i}/{plan.seeds}", plan.base.data_seed)
        r = fit_logreg(dataclasses.replace(part, test=part.val), modality, plan.base.seed, plan.base.metric,
                       plan.base.class_weight, c)
        found.append((names[np.asarray(part.val.labels)], names[np.asarray(r["predictions"])]))
    return found


def choose(options: list[dict[str, Any]], confirmed: dict[str, Any], folder: Path,
           logreg: list[tuple[np.ndarray, np.ndarray]], metric: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The recommendation: what ``fit`` does by default (scratch where there is no source), unless another
    contender or the logistic regression is *clearly* better on validation, cross-validated: seed i of every
    contender validated on fold i of the training and validation splits together, so every one of their examples
    is validated once, and ``logreg`` holds the regression's (labels, predictions) per fold. A contender's score is
    that of its predictions pooled over the folds; its difference from the default's has a paired bootstrap
    interval over the pooled examples (:func:`~transferlab.evaluate.curves.paired_difference`), which must lie
    above zero. Of several, the best score (ties: the faster). Why folds and an interval: on Fashion-MNIST's 375
    validation images, frozen's mean over 3 seeds on that one split beat the default's by 0.007 and then scored
    0.017 below it on the test split; the interval of that difference was [-0.01, +0.02], and pooling the folds
    gives the interval every training and validation example instead of the validation split's. Returns the
    choice and every contender scored, best first."""
    from transferlab.evaluate import score

    size = confirmed["largest_size"]
    y = np.concatenate([labels for labels, _ in logreg])
    scored = []
    for o in options:
        arm = recommended_arm(o, confirmed)
        cells = sorted((c for c in confirmed["cells"] if c["arm"] == arm and c["per_class"] == size),
                       key=lambda c: c["seed"])
        if cells:
            pooled = []
            for c, (labels, _) in zip(cells, logreg, strict=True):
                truth, pred = read_predictions(folder / c["run_dir"], "val")
                if not np.array_equal(truth, labels):
                    raise UserError(f"{folder / c['run_dir']}: its validation examples are not its fold's "
                                    "(was it edited, or run before the confirmation was cross-validated?)")
                pooled.append(pred)
            pred = np.concatenate(pooled)
            scored.append({**o, "arm": arm, "validation": score(metric, y, pred),
                           "validation_per_seed": [c["val_score"] for c in cells],
                           "search_validation": o.get("validation"), "train_seconds": _mean_train(confirmed, arm),
                           "predictions": pred})
    pred = np.concatenate([p for _, p in logreg])
    scored.append({"kind": "logreg", "arm": LOGREG, "trial": None, "validation": score(metric, y, pred),
                   "validation_per_seed": [score(metric, t, p) for t, p in logreg], "search_validation": None,
                   "train_seconds": None, "predictions": pred})
    default = next((o for o in scored if o.get("default")), None) or next(o for o in scored if o["kind"] == "scratch")
    for o in scored:
        o["versus_default"] = None if o is default else dataclasses.asdict(
            paired_difference(y, [o["predictions"]], [default["predictions"]], metric))
    scored.sort(key=lambda o: (-round(o["validation"], 9), o["train_seconds"] or 0.0))
    clear = [o for o in scored if o["versus_default"] is not None and o["versus_default"]["ci_low"] > 0]
    chosen = clear[0] if clear else default
    return {k: v for k, v in chosen.items() if k != "predictions"}, scored


# --- 5. the advice -------------------------------------------------------------------------------------------------


def write_advice(plan: AdvisePlan, out: Path, best: dict[str, Any], chosen: dict[str, Any],
                 scored: list[dict[str, Any]], short: list[str], study: Any, confirmed: dict[str, Any],
                 logreg_val: float, timings: dict[str, float], spent: float) -> dict[str, Any]:
    """``advice.json`` and ``report.html``; returns the advice."""
    from transferlab.report.html import write_advise_report

    size = confirmed["largest_size"]
    efficiency = confirmed["data_efficiency"]
    pick, arm = veto(chosen, chosen["arm"], confirmed, logreg_val)
    config = None
    if pick["kind"] in ("transfer", "scratch"):
        config = plan.base.replace(source=pick["source"], strategy=pick["strategy"], reuse=pick.get("reuse"),
                                   lr=pick["lr"]).to_dict()
        config.pop("curve", None)
    advice = clean_json({
        "schema": SCHEMA, "config_asked": plan.config, "versions": versions(),
        "config": config,  # what `transferlab fit DATA --config OUT/advice.json` runs (null: the regression)
        "recommendation": {**pick, "arm": arm},
        "searched_best": best,  # the search's best (one seed, on validation): a contender of the confirmation
        "selection": [{k: o.get(k) for k in ("arm", "default", "validation", "validation_per_seed", "versus_default",
                                             "search_validation", "train_seconds")} for o in scored],  # best mean first
        "shortlist": short, "logreg_validation": logreg_val,  # by config_asked["metric"]
        "trials": trials_table(study),
        "evidence": {k: confirmed[k] for k in ("data_efficiency", "benefits", "versus_logreg", "notes", "logreg",
                                                 "test_size", "baseline")},
        "confirm_dir": "confirm", "size": size,
        "budget_seconds": plan.budget, "seconds": spent, "timings": timings,
        "train_seconds": {a: _mean_train(confirmed, a) for a in efficiency if a != LOGREG},
    })
    write_advise_report(out / "report.html", advice)
    return advice


def veto(pick: dict[str, Any], arm: str | None, confirmed: dict[str, Any], logreg_val: float,
         ) -> tuple[dict[str, Any], str | None]:
    """The recommendation after the confirmation, which may only veto in favour of the simpler model: a searched
    best that the regression clearly beats on the test split (paired over the seeds: verdict "no") gives way to
    the regression, and the advice says why (on the blobs' problem 2, where nothing transfers, the search's pick
    by 150 validation examples did this)."""
    against = confirmed["versus_logreg"].get(confirmed["largest_size"], {}).get(arm or "")
    if pick["kind"] == "logreg" or against is None or against["verdict"] != "no":
        return pick, arm
    return {"kind": "logreg", "validation": logreg_val, "trial": None,
            "vetoed": {**pick, "arm": arm, "versus_logreg": against}}, LOGREG


def recommended_arm(pick: dict[str, Any], confirmed: dict[str, Any]) -> str | None:
    """The confirmation's arm of the recommendation (a scratch pick is the baseline arm, at its own rate)."""
    if pick["kind"] == "transfer":
        return next((a for a in confirmed["data_efficiency"] if a == arm_spec(pick)), None)
    return confirmed["baseline"] if pick["kind"] == "scratch" else LOGREG


def _mean_train(confirmed: dict[str, Any], arm: str) -> float | None:
    cells = [c["train_wall_seconds"] for c in confirmed["cells"] if c["arm"] == arm]
    return sum(cells) / len(cells) if cells else None


def trials_table(study: Any) -> list[dict[str, Any]]:
    """Every trial: what it chose, its validation accuracy (None: pruned or failed), how it ended, its seconds."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = {"waiting": "not started", "running": "stopped with its process"}.get(t.state.name.lower(),
                                                                               t.state.name.lower())
        rows.append({"number": t.number, "state": state, "value": t.value,
                     "stopped": t.user_attrs.get("stopped"), **t.user_attrs.get("chosen", {}),
                     "seconds": t.user_attrs.get("seconds"), "converged": t.user_attrs.get("converged"),
                     "run_dir": t.user_attrs.get("run_dir"),
                     "last_step": max(t.intermediate_values, default=None)})
    return rows
