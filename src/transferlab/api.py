"""The public entry points. The CLI calls these and nothing else."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferlab import preflight
from transferlab.config import FitConfig
from transferlab.errors import UserError

if TYPE_CHECKING:  # importing torch and Lightning takes seconds: only after the input has been checked
    from transferlab.train.run import RunResult

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
    from transferlab.strategies import STRATEGIES

    STRATEGIES.get(cfg.strategy)
    from transferlab.train.run import fit as run_fit

    return run_fit(cfg, Path(out), resume=resume, overwrite=overwrite, progress=progress)


def pretrain(data: str, *, arch: str, out: str | Path, **options: Any) -> tuple[RunResult, dict[str, Any]]:
    """The develop model approach: train ``arch`` from scratch on a source task and check that it learned.

    The run directory is a source for every command (``--source DIR``). Its card gains ``source_check``: test
    accuracy next to the majority-class baseline and chance, and whether the model is clearly better than the
    baseline (beyond two binomial standard errors); a source that learned nothing transfers nothing.
    """
    import math

    from transferlab.sources.rundir import read_card, write_card

    if options.get("strategy", "scratch") != "scratch":
        raise UserError("pretrain always trains from scratch; use fit for other strategies")
    options.pop("strategy", None)
    result = fit(data, out=out, source=arch, strategy="scratch", **options)
    from transferlab.files import is_global_zero

    if not is_global_zero():  # under DDP rank 0 checks and writes
        return result, {}
    base = result.majority_baseline
    margin = 2 * math.sqrt(max(base * (1 - base), 1e-12) / max(result.test_size, 1))
    check = {
        "test_accuracy": result.test_accuracy,
        "majority_baseline": base,
        "chance": 1 / len(result.classes),
        "clearly_better_than_naive": result.test_accuracy > base + margin,
        "margin": margin,
    }
    card = read_card(Path(out))
    card["source_check"] = check
    write_card(Path(out), card)
    if not check["clearly_better_than_naive"]:
        log.warning("the pretrained source is not clearly better than always predicting the commonest class")
    return result, check


def layers(target_data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """The layer-transfer sweep of Yosinski et al. 2014: AnB, AnB+, BnB, BnB+ for every cut n (see
    :mod:`transferlab.layers`). Writes ``results.json`` and ``report.html`` to ``out``."""
    preflight.check_data(target_data, "--target-data")
    if options.get("source_data") is not None:
        preflight.check_data(options["source_data"], "--source-data")
    if options.get("source") is not None:
        preflight.check_source(options["source"])
    preflight.check_out(Path(out), options.get("resume", False), options.get("overwrite", False), "layers")
    from transferlab.layers import layers as run_layers

    return run_layers(target_data, out=out, **options)


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

    from transferlab.data.images import _decode, _files_under, _Unusable
    from transferlab.sources import load_run
    from transferlab.sources.base import preprocessing_from_dict
    from transferlab.train.engine import run_inference

    model, card = load_run(run_dir)
    pre = preprocessing_from_dict(card["preprocessing"])
    text_run = card.get("modality") == "text"
    given = list(texts or [])
    if given and not text_run:
        raise UserError(f"--text needs a text run; {run_dir} classifies images")
    bad: list[tuple[str, str]] = skipped if skipped is not None else []
    first_bad = len(bad)
    # (what the row shows, what to read: a text, or None for an image file, read by the worker)
    items: list[tuple[str, str | None]] = [(t, t) for t in given]
    files: list[Path] = []
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    for p in map(Path, paths):
        if p.is_dir() and not text_run:
            files += sorted(f for f in _files_under(p) if f.suffix.lower() in extensions)  # not hidden ones
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist" if not p.exists() else f"{p} is a folder; give text files")
    if text_run:
        for f in files:
            try:
                raw = f.read_bytes()
            except OSError as e:
                bad.append((str(f), f"unreadable ({e.strerror or e})"))
                continue
            try:
                content = raw.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                line = raw[: e.start].count(b"\n") + 1
                bad.append((str(f), f"line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x})"))
                continue
            items += [(line, line) for line in content.splitlines() if line.strip()]
    else:
        items += [(str(f), None) for f in files]
    if not items and len(bad) == first_bad:
        raise UserError("nothing to classify in " + ", ".join(map(str, paths)))

    transform = pre.transform(augment=False)
    collate = pre.collate or (lambda batch: (torch.stack([x for x, _ in batch]), None))
    rows: list[tuple[str, str, float]] = []

    def load(item: tuple[str, str | None]) -> torch.Tensor | str:
        """The input's tensor, or the reason its file cannot be used."""
        shown, value = item
        if value is not None:
            return transform(value)
        try:
            return transform(_decode(Path(shown)))
        except _Unusable as e:
            return str(e)

    with warnings.catch_warnings(), torch.inference_mode():
        # the decoder turns this warning into an error itself; setting it here keeps it in force while the worker
        # threads enter and leave their own catch_warnings blocks (the filter list is process-global)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        workers = 1 if text_run else min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
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
        raise UserError(f"{len(new_bad)} of {len(files)} files cannot be read, the first {new_bad[0][0]} "
                        f"({new_bad[0][1]}): fix or remove them, or run without --strict to skip them")
    if not rows:
        raise UserError(f"none of the {len(files)} files given could be read (the first, {new_bad[0][0]}: "
                        f"{new_bad[0][1]}), so nothing was classified")
    if new_bad:
        log.debug("skipped %d of %d files that cannot be read", len(new_bad), len(files))
    return rows


def run_card(run_dir: str | Path) -> dict[str, Any]:
    """The ``model.json`` card of a finished run directory."""
    from transferlab.sources.rundir import read_card

    return read_card(Path(run_dir))


def pretrain_vectors(corpus: str | Path, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """The develop model approach for text: train word2vec on an unlabelled corpus (a text file, one sentence or
    document per line, or a folder of ``.txt`` files) and write a vectors store usable as ``--source OUT``.
    Options: ``dim``, ``window``, ``min_count``, ``epochs``, ``skipgram``, ``seed``, ``workers``."""
    from transferlab.sources.vectors import train_vectors

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
    if source.adapt is not None:  # word vectors: the blocks exist once a vocabulary is known
        source = source.adapt([])
    return source.block_table()


def compare(data: str, *, out: str | Path, **options: Any) -> dict[str, Any]:
    """Every arm x seed x labelled size through :func:`fit`, then the benefits of transfer over scratch.

    Writes ``results.json``, ``curves.csv`` and ``report.html`` to ``out`` and returns the results.

    >>> compare("fashion-mnist:classes=5-9", source="efficientnet_lite0", arms="scratch,frozen,finetune",
    ...         seeds=3, epochs=4, per_class="10,100", image_size=64, out="runs/cmp")  # doctest: +SKIP
    """
    preflight.check_data(data)
    preflight.check_out(Path(out), options.get("resume", False), options.get("overwrite", False), "compare")
    from transferlab.compare import compare as run_compare

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
        preflight.check_modalities(data, specs)
    preflight.check_out(Path(out), options.get("resume", False), options.get("overwrite", False), "rank")
    from transferlab.rank import rank as run_rank

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
