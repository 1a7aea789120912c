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

from transferlab import preflight
from transferlab.config import SET_BY_COMPARE, Arm, FitConfig, split_arms
from transferlab.errors import UserError

if TYPE_CHECKING:  # importing torch and Lightning takes seconds: only after the input has been checked
    from transferlab.train.fit import RunResult

log = logging.getLogger(__name__)

DEMO_DATA = "fashion-mnist:classes=5-9"
DEMO_SOURCE = "efficientnet_lite0"
DEMO_ARMS = ("scratch", "frozen", "finetune")


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
    ...     epochs=3, image_size=64, out="runs/frozen")  # doctest: +SKIP
    """
    cfg = FitConfig.from_dict({"data": data, **options})  # unknown options: a clear error with suggestions
    preflight.check_fit(cfg.data, cfg.source, Path(out), resume, overwrite)
    from transferlab.train.fit import fit as run_fit

    return run_fit(cfg, Path(out), resume=resume, overwrite=overwrite, progress=progress)


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
    preflight.check_fit(cfg.data, cfg.source, Path(out), resume, overwrite)
    from transferlab.train.fit import pretrain as run_pretrain

    return run_pretrain(cfg, Path(out), resume=resume, overwrite=overwrite, progress=progress)


def layers(target_data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """The layer-transfer sweep of Yosinski et al. 2014: AnB, AnB+, BnB, BnB+ for every cut n (see
    :mod:`transferlab.layers`). Writes ``results.json`` and ``report.html`` to ``out``."""
    preflight.check_data(target_data, "--target-data")
    if options.get("source_data") is not None:
        preflight.check_data(options["source_data"], "--source-data")
    if options.get("source") is not None:
        preflight.check_source(options["source"])
    preflight.check_out(Path(out), options.get("resume", False), options.get("overwrite", False), "layers")
    from transferlab.experiments.sweep import sweep

    return sweep(target_data, out=out, **options)


def predict(
    run_dir: str | Path,
    paths: list[str | Path],
    batch_size: int = 64,
    texts: list[str] | None = None,
    *,
    strict: bool = False,
    skipped: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str, float]]:
    """Classify with a finished run: (input, label, probability) per input, in input order.

    Image runs take image files (folders are searched recursively); text runs take ``texts`` and text files
    whose every non-empty line is one text. Like ``fit``, files that cannot be read (zero-byte, not an image,
    truncated or corrupt, over Pillow's decompression-bomb limit; for text, unreadable or not valid UTF-8) are
    skipped: ``(path, reason)`` for each is appended to ``skipped`` when a list is given, also when this raises
    because nothing was left. ``strict=True`` refuses instead, naming the first such file and how many there are.
    Each file is opened and decoded once; inputs are transformed as they are read and the model runs per batch.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    missing = [p for p in map(Path, paths) if not p.exists()]
    if missing:  # before the model loads
        raise UserError(f"{missing[0]} does not exist")
    if batch_size < 1:
        raise UserError(f"the batch size must be at least 1, not {batch_size}")
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from PIL import Image

    from transferlab import modality as modalities
    from transferlab.errors import Unusable
    from transferlab.sources import load_run
    from transferlab.train.features import run_inference

    model, card = load_run(run_dir)
    modality = modalities.get(card.get("modality", "image"))
    pre = modality.preprocessing_from_dict(card["preprocessing"])
    bad: list[tuple[str, str]] = skipped if skipped is not None else []
    first_bad = len(bad)
    try:
        items, files = modality.predict_inputs(list(map(Path, paths)), list(texts or []), bad)
    except UserError as e:
        raise UserError(f"{run_dir}: {e}") from None
    if not items and len(bad) == first_bad:
        raise UserError("nothing to classify in " + ", ".join(map(str, paths)))

    transform = pre.transform(augment=False)
    collate = pre.collate or (lambda batch: (torch.stack([x for x, _ in batch]), None))
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
                prob, idx = run_inference(model, [(x, None)]).softmax(1).max(1)
                rows.extend((shown, card["classes"][i], float(q))
                            for (shown, _), i, q in zip(batch, idx.tolist(), prob.tolist(), strict=True))
    new_bad = bad[first_bad:]
    if new_bad and strict:
        raise UserError(f"{len(new_bad)} of {files} files cannot be read, the first {new_bad[0][0]} "
                        f"({new_bad[0][1]}): fix or remove them, or run without --strict to skip them")
    if not rows:
        raise UserError(f"none of the {files} files given could be read (the first, {new_bad[0][0]}: "
                        f"{new_bad[0][1]}), so nothing was classified")
    if new_bad:
        log.debug("skipped %d of %d files that cannot be read", len(new_bad), files)
    return rows


def run_card(run_dir: str | Path) -> dict[str, Any]:
    """The ``model.json`` card of a finished run directory."""
    from transferlab.sources.rundir import read_card

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
    from transferlab import modality
    from transferlab.sources import load_source

    try:
        source = load_source(spec, weights=weights)
    except UserError:
        source = load_source(spec, pretrained=False)  # the architecture is known even without weights
    return modality.get(source.modality).example(source).block_table()


def compare(data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """Every arm x seed x labelled size through :func:`fit`, then the benefits of transfer over scratch.

    Writes ``results.json``, ``curves.csv`` and ``report.html`` to ``out`` and returns the results.

    >>> compare("fashion-mnist:classes=5-9", source="efficientnet_lite0", arms="scratch,frozen,finetune",
    ...         seeds=3, epochs=4, per_class="10,100", image_size=64, out="runs/cmp")  # doctest: +SKIP
    """
    preflight.check_data(data)
    arms = options.get("arms", DEMO_ARMS)
    settings = {k: v for k, v in options.items() if k in {f.name for f in fields(FitConfig)} - set(SET_BY_COMPARE)}
    base = FitConfig.from_dict({"data": data, **settings})
    for arm in split_arms(arms):
        Arm.parse(arm).config(base)  # an unknown strategy, arm option or bad value: before any slow import
    preflight.check_out(Path(out), options.get("resume", False), options.get("overwrite", False), "compare")
    from transferlab.experiments.compare import compare as run_compare

    return run_compare(data, out=out, **options)


def rank(data: str, *, sources: str | list[str], out: str | Path, **options: Any) -> dict[str, Any]:
    """Rank candidate sources for ``data`` from one forward pass each (LogME, LEEP, NCE, H-score, kNN and
    linear-probe accuracy); with ``validate=True`` also fine-tune each and report Kendall's and weighted tau.

    >>> rank("fashion-mnist:classes=5-9,per_class=200", sources="efficientnet_lite0,scratch:efficientnet_lite0",
    ...      image_size=64, out="runs/rank")  # doctest: +SKIP
    """
    preflight.check_data(data)
    specs = [s.strip() for s in (sources.split(",") if isinstance(sources, str) else sources) if s.strip()]
    if not options.get("skip_missing"):
        try:
            for spec in specs:
                preflight.check_source(spec, "--sources")
        except UserError as e:
            raise UserError(f"{e}; pass --skip-missing to rank the others") from None
        preflight.resolve_modality(data, specs)
    preflight.check_out(Path(out), options.get("resume", False), options.get("overwrite", False), "rank")
    from transferlab.experiments.rank import rank as run_rank

    return run_rank(data, sources=sources, out=out, **options)


def demo(
    out: str | Path = "transferlab-demo", quick: bool = False, progress: bool = True, text: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The main job on the built-in default: does ImageNet EfficientNet-Lite0 help on the bundled Fashion-MNIST
    classes 5-9? A small :func:`compare` of scratch, frozen and finetune; rerunning it reuses finished cells.

    ``text=True``: does the built-in sentence encoder (all-MiniLM-L6-v2) help on the bundled WordNet task, against
    a word-embedding classifier trained from scratch? ``overwrite`` starts over (for example after an upgrade
    changed the demo's settings)."""
    out = Path(out) / (("text-" if text else "") + ("quick" if quick else "full"))
    resume = (out / "compare.json").is_file() and not overwrite
    if text:
        settings = DEMO_TEXT_QUICK if quick else DEMO_TEXT_FULL
        return compare(DEMO_TEXT_DATA, out=out, source=DEMO_TEXT_SOURCE, arms=",".join(DEMO_TEXT_ARMS),
                       eval_per_class=50, progress=progress, resume=resume, overwrite=overwrite, **settings)
    settings = DEMO_QUICK if quick else DEMO_FULL
    return compare(DEMO_DATA, out=out, source=DEMO_SOURCE, arms=",".join(DEMO_ARMS), image_size=64,
                   progress=progress, resume=resume, overwrite=overwrite, **settings)


DEMO_QUICK = {"per_class": "30", "seeds": 3, "epochs": 3}  # 3 seeds: the fewest that get a verdict
DEMO_FULL = {"per_class": "10,100", "seeds": 3, "epochs": 4}
DEMO_TEXT_DATA = "wordnet"
DEMO_TEXT_SOURCE = "minilm"
DEMO_TEXT_ARMS = ("scratch:source=words", "frozen", "finetune")
DEMO_TEXT_QUICK = {"per_class": "20", "seeds": 3, "epochs": 3}
DEMO_TEXT_FULL = {"per_class": "10,50", "seeds": 3, "epochs": 3}
