"""The public entry points. The CLI calls these and nothing else.

Each checks its input with :mod:`transferlab.preflight` first and imports the training stack (torch, Lightning,
timm: seconds) only after that, so a wrong path or name is one sentence within a fraction of a second
(``benchmarks/error_latency.py``): the one place where imports sit inside functions on purpose."""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferlab import files, preflight
from transferlab import modality as modalities
from transferlab.config import DEFAULT_ARCH, DEFAULT_ARMS, FitConfig
from transferlab.errors import UserError

if TYPE_CHECKING:  # importing torch and Lightning takes seconds: only after the input has been checked
    from transferlab.train.fit import RunResult

log = logging.getLogger(__name__)

DEMO_DATA = "fashion-mnist:classes=5-9"
DEMO_SOURCE = FitConfig().source  # the default source: EfficientNet-Lite0 (ImageNet)
DEMO_ARMS = ("logreg", "scratch", "frozen", "finetune")


def fit(
    data: str,
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> RunResult:
    """Train a target model from a source and write a run directory (see :class:`FitConfig` for options).

    >>> fit("fashion-mnist:classes=5-9,per_class=50", source="efficientnet_lite0", strategy="frozen",
    ...     image_size=64, out="runs/frozen")  # doctest: +SKIP
    """
    config = options.pop("config", None)
    base = read_options(config) if config is not None else {}
    cfg = FitConfig.from_dict({**base, "data": data, **options})  # unknown options: a clear error with suggestions
    return _fit(cfg, Path(out), resume, overwrite, progress)


def read_options(path: str | Path) -> dict[str, Any]:
    """The run options a JSON file holds: ``advise``'s ``advice.json`` (its recommended configuration), a run's
    ``config.json``, or a plain object of FitConfig options (checked like any option)."""
    found = files.read_json(Path(path), "--config")
    if isinstance(found, dict) and found.get("schema", "").startswith("transferlab.advise"):
        if found.get("config") is None:
            raise UserError(f"--config {path}: the advice recommends a logistic regression on the raw inputs, which "
                            "fit does not train (its accuracy is in the advice)")
        found = found["config"]
    elif isinstance(found, dict) and isinstance(found.get("config"), dict) and "resolved" in found:
        found = found["config"]
    if not isinstance(found, dict):
        raise UserError(f"--config {path} is not an object of run options")
    return {k: v for k, v in found.items() if k not in ("data", "curve")}


def _fit(cfg: FitConfig, out: Path, resume: bool, overwrite: bool, progress: bool, pretraining: bool = False) -> Any:
    """Check, lock the run directory, read the data (a bad cell is one sentence before torch loads), then train."""
    preflight.check_fit(cfg.data, cfg.source, out, resume, overwrite)
    with files.locked(out):
        modality = preflight.decide_modality(cfg.data, [cfg.source])
        data = modality.load(cfg) if modality is not None else None
        from transferlab.train import fit as training

        run = training.pretrain if pretraining else training.fit
        return run(cfg, out, resume=resume, overwrite=overwrite, progress=progress, data=data, modality=modality,
                   locked=True)


def pretrain(data: str, *, arch: str, out: str | Path, **options: Any) -> tuple[RunResult, dict[str, Any]]:
    """The develop model approach: train ``arch`` from scratch on a source task and check that it learned.

    The run directory is a source for every command (``--source DIR``). Its card gains ``source_check``: test
    accuracy next to the majority-class baseline and chance, and whether the model is clearly better than the
    baseline (beyond two binomial standard errors); a source that learned nothing transfers nothing.
    """
    if options.pop("strategy", "scratch") != "scratch":
        raise UserError("pretrain always trains from scratch; use fit for other strategies")
    resume, overwrite, progress = (options.pop(k, d) for k, d in (("resume", False), ("overwrite", False),
                                                                    ("progress", True)))
    cfg = FitConfig.from_dict({"data": data, "source": arch, "strategy": "scratch", **options})
    return _fit(cfg, Path(out), resume, overwrite, progress, pretraining=True)


def layers(target_data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """The layer-transfer sweep of Yosinski et al. 2014: AnB, AnB+, BnB, BnB+ for every cut n (see
    :mod:`transferlab.experiments.sweep`), beside scratch and a logistic regression at the cells' size. Writes
    ``results.json`` and ``report.html`` to ``out``."""
    preflight.check_data(target_data, "--target-data")
    if options.get("source_data") is not None:
        preflight.check_data(options["source_data"], "--source-data")
    if options.get("source") is not None:
        preflight.check_source(options["source"])
    out = Path(out)
    preflight.check_out(out, options.get("resume", False), options.get("overwrite", False), "layers")
    with files.locked(out, "the layer sweep folder"):  # one writer, before any data or model loads
        settings = _fit_settings(options)
        cfg = FitConfig.from_dict({"data": target_data, "source": options.get("source") or options.get("arch")
                                   or DEFAULT_ARCH, **settings})
        modality = preflight.decide_modality(cfg.data, [cfg.source])
        dataset = modality.load(cfg) if modality is not None else None  # read and checked before torch loads
        from transferlab.experiments.sweep import sweep

        return sweep(target_data, out=out, locked=True, dataset=dataset, modality=modality, **options)


def predict(
    model: str | Path,
    paths: list[str | Path],
    batch_size: int = 64,
    texts: list[str] | None = None,
    *,
    strict: bool = False,
    skipped: list[tuple[str, str]] | None = None,
    text_column: str | None = None,
    top: int = 1,
) -> list[tuple[str, str, float]]:
    """Classify with a finished run, or with a source's own classifier: (input, label, probability) per input, in
    input order; with ``top=K``, the K likeliest labels of each input, likeliest first (K rows per input).

    ``model`` is a run directory, or a source whose weights include a classifier with named classes
    (``efficientnet_lite0``, ``timm:<arch>``, ``torchvision:<arch>``: ImageNet's classes), used as it is, no
    training. A run's probabilities are calibrated: its logits divided by the temperature fitted on its validation
    split (``calibration`` in its card). Inputs are read as ``fit`` read them. Image runs take image files
    (folders are searched recursively). Text runs take ``texts``, the ``text_column`` of CSV/TSV/JSONL files
    (default: the column the run was trained on) and every non-empty line of other text files. Table runs take
    CSV/TSV files, their columns by name in any order. What cannot be used (a zero-byte, truncated or corrupt
    image, one over Pillow's decompression-bomb limit; a text or table file that is unreadable, not UTF-8 or not a
    regular file; a table row with a cell that is not a finite number) is skipped: ``(where, reason)`` for each is
    appended to ``skipped`` when a list is given, also when this raises because nothing was left. ``strict=True``
    refuses instead, naming the first and how many there are. Each file is opened and decoded once; the model runs
    per batch.
    """
    is_run = Path(model).is_dir()
    if not is_run:
        _check_classifier_source(str(model))
    missing = [p for p in map(Path, paths) if not p.exists()]
    if missing:  # before the model loads
        raise UserError(f"{missing[0]} does not exist")
    if batch_size < 1:
        raise UserError(f"the batch size must be at least 1, not {batch_size}")
    if top < 1:
        raise UserError(f"--top must be at least 1, not {top}")
    card_path = Path(model) / "model.json"
    if is_run and top > 1 and card_path.is_file():  # a run's classes are in its card: refused before torch loads
        card = files.read_json(card_path, "model card")
        _check_top(top, card.get("classes") if isinstance(card, dict) else None, model)
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from PIL import Image

    from transferlab.errors import Unusable
    from transferlab.transfer.model import run_inference

    net, classes, modality, pre, options = _run_classifier(Path(model), text_column) if is_run else \
        _source_classifier(str(model))
    temperature = options.pop("temperature", 1.0)
    _check_top(top, classes, model)
    bad: list[tuple[str, str]] = skipped if skipped is not None else []
    first_bad = len(bad)
    try:
        items, n_files = modality.predict_inputs(list(map(Path, paths)), list(texts or []), bad, pre, options)
    except UserError as e:
        raise UserError(f"{model}: {e}") from None
    if strict and len(bad) > first_bad:
        raise UserError(f"{len(bad) - first_bad} inputs cannot be used, the first {bad[first_bad][0]} "
                        f"({bad[first_bad][1]}): fix or remove them, or run without --strict to skip them")
    if not items and len(bad) == first_bad:
        raise UserError("nothing to classify in " + ", ".join(map(str, paths)))

    transform = pre.transform(augment=False)
    collate = pre.collate or torch.utils.data.default_collate  # (input, label) pairs -> batches
    rows: list[tuple[str, str, float]] = []

    def load(item: tuple[str, Any]) -> Any:
        """The input's tensor, or the reason it cannot be used."""
        _, raw = item
        try:
            return transform(raw() if callable(raw) else raw)
        except Unusable as e:
            return str(e)

    with warnings.catch_warnings(), torch.inference_mode():
        # the decoder turns this warning into an error itself; setting it here keeps it in force while the worker
        # threads enter and leave their own catch_warnings blocks (the filter list is process-global)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                batch = []
                for (shown, _), loaded in zip(chunk, pool.map(load, chunk), strict=True):
                    if isinstance(loaded, str):
                        bad.append((shown, loaded))
                    else:
                        batch.append((shown, loaded))
                if not batch or (strict and len(bad) > first_bad):  # a refusal is coming: spare the model
                    continue
                x, _ = collate([(t, 0) for _, t in batch])
                logits = run_inference(net, [(x, None)], channels_last=modality.channels_last)
                probs = (logits / temperature).softmax(1)  # the run's calibration (see fit), 1 for a source
                if not torch.isfinite(probs).all():  # never a NaN in the output
                    where = batch[int((~torch.isfinite(probs).all(1)).nonzero()[0])][0]
                    raise UserError(f"the model's output for {where} is not a finite number: the input lies far "
                                    "outside what the run was trained on")
                prob, idx = probs.topk(top, dim=1)
                for (shown, _), ks, qs in zip(batch, idx.tolist(), prob.tolist(), strict=True):
                    rows.extend((shown, classes[i], float(q)) for i, q in zip(ks, qs, strict=True))
    new_bad = bad[first_bad:]
    if new_bad and strict:
        raise UserError(f"{len(new_bad)} of {n_files} files cannot be read, the first {new_bad[0][0]} "
                        f"({new_bad[0][1]}): fix or remove them, or run without --strict to skip them")
    if not rows:
        raise UserError(f"none of the {n_files} files given could be read (the first, {new_bad[0][0]}: "
                        f"{new_bad[0][1]}), so nothing was classified")
    if new_bad:
        log.debug("skipped %d of %d files that cannot be read", len(new_bad), n_files)
    return rows


def _fit_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The options a FitConfig takes, but ``source``: the commands that read data before any model load set it
    themselves (the command line passes ``source=None`` when it is not given)."""
    return {k: v for k, v in options.items() if k in {f.name for f in fields(FitConfig)} and k != "source"}


def _check_top(top: int, classes: Any, model: str | Path) -> None:
    if isinstance(classes, list) and top > len(classes):
        raise UserError(f"--top {top} asks for more labels than the {len(classes)} classes {model} knows")


def _check_classifier_source(spec: str) -> None:
    """Before torch: ``spec`` names a source whose weights include a classifier (see ``predict``)."""
    from transferlab import catalogue

    found = catalogue.find_source(spec)
    if found is None and ("/" in spec or Path(spec).exists() or not spec.replace("_", "").isalnum()):
        raise UserError(f"run directory {spec} does not exist" if not Path(spec).exists() else
                        f"{spec} is neither a run directory nor a source")
    classifying = [k for k in catalogue.source_kinds() if k.classifies]
    names = ", ".join(k.name + "<arch>" * k.is_prefix for k in classifying)
    if found is None:
        raise UserError(f"MODEL {spec!r} is neither a run directory nor a source{catalogue.suggest(spec, classifying)}"
                        f"; sources with their own classifier: {names}")
    if not found[0].classifies or spec.startswith("scratch:"):
        raise UserError(f"{spec} has no classifier of its own with named classes: train one on your data with "
                        f"`transferlab fit DATA --source {spec}` and predict with that run, or use a source that "
                        f"classifies ({names})")


def _run_classifier(run_dir: Path, text_column: str | None) -> tuple[Any, list[str], Any, Any, dict[str, Any]]:
    """A run's model, classes, modality, preprocessing and predict options."""
    from transferlab.transfer.rundir import load_run

    net, card = load_run(run_dir)
    modality = modalities.get(card.get("modality", "image"))
    recorded = run_options(run_dir)
    options = {"text_column": text_column or recorded.get("text_column", "text"),
               "label_column": recorded.get("label_column", "label"),
               "temperature": card.get("calibration", {}).get("temperature", 1.0)}
    return net, list(card["classes"]), modality, modality.preprocessing_from_dict(card["preprocessing"]), options


def _source_classifier(spec: str) -> tuple[Any, list[str], Any, Any, dict[str, Any]]:
    """A source used as it is: its blocks, pool and own classifier, with its class names and preprocessing."""
    from torch import nn

    from transferlab.sources import load_source

    source = load_source(spec)
    if source.classifier is None or not source.source_classes:
        raise UserError(f"{spec} has no classifier with named classes in these weights ({source.weights_origin}): "
                        "train one on your data with `transferlab fit` and predict with that run")
    net = nn.Sequential(*source.blocks.values(), source.pool, source.classifier).eval()
    return net, list(source.source_classes), modalities.get(source.modality), source.preprocessing, {}


def export(run: str | Path, out: str | Path, format: str = "onnx") -> dict[str, Any]:  # noqa: A002
    """Write a finished run as one file another runtime loads (``onnx`` or ``torchscript``), its output
    ``predict``'s calibrated probabilities, and beside it ``out.json``: the input it takes (the run's
    preprocessing), the classes in output order and the check made at export (the file's outputs against the
    run's on example inputs, at most 1e-4 apart). Returns that sidecar.

    >>> export("runs/finetune", "model.onnx")  # doctest: +SKIP
    """
    run, out = Path(run), Path(out)
    if not (run / "model.json").is_file():
        raise UserError(f"{run} is not a finished run directory (no model.json)")
    preflight.check_export(out, format)
    from transferlab.transfer.export import export as run_export

    return run_export(run, out, format)


def run_options(run_dir: str | Path) -> dict[str, Any]:
    """The options a finished run was trained with (its ``config.json``), or {} when it has none."""
    path = Path(run_dir) / "config.json"
    recorded = files.read_json(path, "run configuration") if path.is_file() else {}
    options = recorded.get("config") if isinstance(recorded, dict) else None
    return options if isinstance(options, dict) else {}


def run_card(run_dir: str | Path) -> dict[str, Any]:
    """The ``model.json`` card of a finished run directory."""
    from transferlab.transfer.rundir import read_card

    return read_card(Path(run_dir))


def pretrain_vectors(corpus: str | Path, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """The develop model approach for text: train word2vec on an unlabelled corpus (a text file, one sentence or
    document per line, or a folder of ``.txt`` files) and write a vectors store usable as ``--source OUT``.
    Options: ``dim``, ``window``, ``min_count``, ``epochs``, ``skipgram``, ``seed``, ``workers``."""
    from transferlab.sources.word2vec import train_vectors

    return train_vectors(corpus, out, **options)


def list_sources() -> list[dict[str, str]]:
    """Built-in and well-known sources, and whether their weights are available offline now."""
    from transferlab.sources import known_sources

    return known_sources()


def source_blocks(spec: str, weights: str | None = None) -> list[tuple[str, int]]:
    """The ordered blocks of a source (what ``--reuse N`` counts) with their parameter counts."""
    from transferlab.sources import load_source

    try:
        source = load_source(spec, weights=weights)
    except UserError:
        source = load_source(spec, pretrained=False)  # the architecture is known even without weights
    return modalities.get(source.modality).example(source).block_table()


def compare(data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """Every arm x seed x labelled size through :func:`fit`, each trained to convergence, then the benefits of
    transfer over scratch, and every arm against a logistic regression on the raw inputs (the ``logreg`` arm).

    Writes ``results.json``, ``curves.csv`` and ``report.html`` to ``out`` and returns the results.

    >>> compare("fashion-mnist:classes=5-9", source="efficientnet_lite0", arms="logreg,scratch,frozen,finetune",
    ...         seeds=3, per_class="10,100", image_size=64, out="runs/cmp")  # doctest: +SKIP
    """
    from transferlab.experiments.plan import plan

    preflight.check_data(data)
    run = {k: options.pop(k) for k in ("resume", "overwrite", "progress", "workers") if k in options}
    planned = plan(data, options.pop("source", FitConfig.source), options.pop("arms", DEFAULT_ARMS),
                   options.pop("seeds", 3), options.pop("per_class", None), options.pop("threshold", 0.9), options)
    out = Path(out)
    preflight.check_out(out, run.get("resume", False), run.get("overwrite", False), "compare")
    with files.locked(out, "the comparison folder"):  # one writer, before any data or model loads
        kind = preflight.decide_modality(data, planned.arm_sources())
        data_by_size = None
        if kind is not None:  # the data at every size, read and checked before torch loads
            data_by_size = {size: kind.load(planned.base.replace(split_seed=planned.base.seed, per_class=size))
                            for size in planned.sizes}
        from transferlab.experiments.compare import compare as run_compare

        return run_compare(data, out=out, data_by_size=data_by_size, modality=kind, locked=True, planned=planned,
                           **run)


def rank(data: str, *, sources: str | list[str], out: str | Path, **options: Any) -> dict[str, Any]:
    """Rank candidate sources for ``data`` from one forward pass each (LogME, LEEP, NCE, H-score, kNN and
    linear-probe accuracy); with ``validate=True`` also fine-tune each and report Kendall's and weighted tau.

    >>> rank("fashion-mnist:classes=5-9,per_class=200", sources="efficientnet_lite0,scratch:efficientnet_lite0",
    ...      image_size=64, out="runs/rank")  # doctest: +SKIP
    """
    preflight.check_data(data)
    specs = [s.strip() for s in (sources.split(",") if isinstance(sources, str) else sources) if s.strip()]
    kind = None
    if not options.get("skip_missing"):
        try:
            for spec in specs:
                preflight.check_source(spec, "--sources")
        except UserError as e:
            raise UserError(f"{e}; pass --skip-missing to rank the others") from None
        kind = preflight.decide_modality(data, specs)
    out = Path(out)
    preflight.check_out(out, options.get("resume", False), options.get("overwrite", False), "rank")
    with files.locked(out, "the ranking folder"):  # one writer, before any data or model loads
        dataset = None
        if kind is not None:  # read and checked before torch loads
            settings = _fit_settings(options)
            dataset = kind.load(FitConfig.from_dict({"data": data, "source": specs[0], **settings}))
        from transferlab.experiments.rank import rank as run_rank

        return run_rank(data, sources=sources, out=out, dataset=dataset, modality=kind, locked=True, **options)


def advise(data: str, *, out: str | Path, budget: str | float = "30m", **options: Any) -> dict[str, Any]:
    """Which source, how much of it, frozen or tuned, at what learning rate, within ``budget`` (``30m``, ``90s``;
    start-up included): candidates shortlisted by LogME, an Optuna search of trials trained to convergence and
    judged on the validation split, then the search's best, the default fit, the frozen alternative, scratch and a
    logistic regression confirmed with ``seeds`` seeds, seed i on fold i of the training and validation splits;
    the default fit is recommended unless another is clearly better on the folds' validation parts pooled (a
    paired bootstrap over those examples), and reported on the test split. Writes
    ``advice.json`` (the configuration ``fit --config`` reads, and the evidence) and ``report.html`` to ``out``.

    >>> advise("fashion-mnist:classes=5-9,per_class=100", budget="10m", out="runs/advice")  # doctest: +SKIP
    """
    import time

    from transferlab.experiments.plan import plan_advise

    started = time.monotonic()
    run = {k: options.pop(k) for k in ("resume", "overwrite", "progress") if k in options}
    preflight.check_data(data)
    planned = plan_advise(data, budget, options.pop("candidates", None), options.pop("seeds", 3),
                          options.pop("workers", 1), options.pop("storage", None), options,
                          trials=options.pop("trials", None))
    out = Path(out)
    preflight.check_out(out, run.get("resume", False), run.get("overwrite", False), "advise")
    with files.locked(out, "the advice folder"):  # one writer, before any data or model loads
        kind = preflight.decide_modality(data, list(planned.candidates))
        dataset = kind.load(planned.base) if kind is not None else None  # read and checked before torch loads
        from transferlab.experiments.advise import advise as run_advise

        return run_advise(planned, out=out, modality=kind, dataset=dataset, started=started, **run)


def demo(
    out: str | Path = "transferlab-demo", quick: bool = False, progress: bool = True, text: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The main job on the built-in default: does ImageNet EfficientNet-Lite0 help on the bundled Fashion-MNIST
    classes 5-9? A small :func:`compare` of scratch, frozen and finetune, each trained to convergence, beside a
    logistic regression on the pixels; rerunning it reuses finished cells.

    ``text=True``: does the built-in sentence encoder (all-MiniLM-L6-v2) help on the bundled WordNet task, against
    a word-embedding classifier trained from scratch? ``overwrite`` starts over (for example after an upgrade
    changed the demo's settings)."""
    out = Path(out) / (("text-" if text else "") + ("quick" if quick else "full"))
    resume = (out / "compare.json").is_file() and not overwrite
    if text:
        settings = DEMO_TEXT_QUICK if quick else DEMO_TEXT_FULL
        return compare(DEMO_TEXT_DATA, out=out, source=DEMO_TEXT_SOURCE, arms=",".join(DEMO_TEXT_ARMS),
                       progress=progress, resume=resume, overwrite=overwrite, **settings)
    settings = DEMO_QUICK if quick else DEMO_FULL
    return compare(DEMO_DATA, out=out, source=DEMO_SOURCE, arms=",".join(DEMO_ARMS), image_size=64,
                   progress=progress, resume=resume, overwrite=overwrite, **settings)


# Every arm trains to convergence (the default budget); 3 seeds are the fewest that get a verdict
DEMO_QUICK = {"per_class": "30", "seeds": 3}
DEMO_FULL = {"per_class": "10,100", "seeds": 3}
DEMO_TEXT_DATA = "wordnet"
DEMO_TEXT_SOURCE = "minilm"
DEMO_TEXT_ARMS = ("logreg", "scratch:source=words", "frozen", "finetune")
DEMO_TEXT_QUICK = {"per_class": "20", "seeds": 3, "eval_per_class": 50}
DEMO_TEXT_FULL = {"per_class": "10,50", "seeds": 3, "eval_per_class": 50}
