"""The public entry points. The CLI calls these and nothing else."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transferlab.config import FitConfig
from transferlab.errors import UserError
from transferlab.train.run import RunResult  # noqa: F401  (re-exported for type hints)

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
    from transferlab.train.run import fit as run_fit

    cfg = FitConfig.from_dict({"data": data, **options})  # unknown options: a clear error with suggestions
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
    from transferlab.train.engine import is_global_zero

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
    from transferlab.layers import layers as run_layers

    return run_layers(target_data, out=out, **options)


def predict(
    run_dir: str | Path, paths: list[str | Path], batch_size: int = 64, texts: list[str] | None = None
) -> list[tuple[str, str, float]]:
    """Classify with a finished run: (input, label, probability) per input.

    Image runs take image files (folders are searched recursively); text runs take ``texts`` and text files
    whose every non-empty line is one text.
    """
    from PIL import Image

    from transferlab.data import open_image
    from transferlab.sources import load_run
    from transferlab.sources.base import preprocessing_from_dict

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    model, card = load_run(run_dir)
    pre = preprocessing_from_dict(card["preprocessing"])
    text_run = card.get("modality") == "text"
    items: list[Any] = list(texts or [])
    if items and not text_run:
        raise UserError(f"--text needs a text run; {run_dir} classifies images")
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    for p in map(Path, paths):
        if p.is_dir() and not text_run:
            items += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions)
        elif p.is_file() and text_run:
            from transferlab.data.text import _read_text_file

            items += [line for line in _read_text_file(p, "strict").splitlines() if line.strip()]
        elif p.is_file():
            items.append(p)
        else:
            raise UserError(f"{p} does not exist" if not p.exists() else f"{p} is a folder; give text files")
    if not items:
        raise UserError("nothing to classify in " + ", ".join(map(str, paths)))
    from torch.utils.data import DataLoader

    from transferlab.data import SplitDataset
    from transferlab.train.engine import run_inference

    class Inputs:  # what SplitDataset reads: item i and a label (unused here)
        labels = [0] * len(items)

        def load(self, i: int) -> Any:
            return items[i] if text_run else open_image(items[i])

        def __len__(self) -> int:
            return len(items)

    loader = DataLoader(SplitDataset(Inputs(), pre.transform(augment=False)), batch_size=batch_size,
                        collate_fn=pre.collate)
    prob, idx = run_inference(model, loader).softmax(1).max(1)
    return [(str(f), card["classes"][i], float(p)) for f, i, p in zip(items, idx.tolist(), prob, strict=True)]


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
    from transferlab.compare import compare as run_compare

    return run_compare(data, out=out, **options)


def rank(data: str, *, sources: str | list[str], out: str | Path, **options: Any) -> dict[str, Any]:
    """Rank candidate sources for ``data`` from one forward pass each (LogME, LEEP, NCE, H-score, kNN and
    linear-probe accuracy); with ``validate=True`` also fine-tune each and report Kendall's and weighted tau.

    >>> rank("fashion-mnist:classes=5-9,per_class=200", sources="efficientnet_lite0,scratch:efficientnet_lite0",
    ...      image_size=64, out="runs/rank")  # doctest: +SKIP
    """
    from transferlab.rank import rank as run_rank

    return run_rank(data, sources=sources, out=out, **options)


def demo(
    out: str | Path = "transferlab-demo", quick: bool = False, progress: bool = True, text: bool = False
) -> dict[str, Any]:
    """The main job on the built-in default: does ImageNet EfficientNet-Lite0 help on the bundled Fashion-MNIST
    classes 5-9? A small :func:`compare` of scratch, frozen and finetune; rerunning it reuses finished cells.

    ``text=True``: does the built-in sentence encoder (all-MiniLM-L6-v2) help on the bundled WordNet task, against
    a word-embedding classifier trained from scratch?"""
    out = Path(out) / (("text-" if text else "") + ("quick" if quick else "full"))
    resume = (out / "compare.json").is_file()
    if text:
        settings = DEMO_TEXT_QUICK if quick else DEMO_TEXT_FULL
        return compare(DEMO_TEXT_DATA, out=out, source=DEMO_TEXT_SOURCE, arms=",".join(DEMO_TEXT_ARMS),
                       eval_per_class=50, progress=progress, resume=resume, **settings)
    settings = DEMO_QUICK if quick else DEMO_FULL
    return compare(DEMO_DATA, out=out, source=DEMO_SOURCE, arms=",".join(DEMO_ARMS), image_size=64,
                   progress=progress, resume=resume, **settings)


DEMO_QUICK = {"per_class": "30", "seeds": 2, "epochs": 3}
DEMO_FULL = {"per_class": "10,100", "seeds": 3, "epochs": 4}
DEMO_TEXT_DATA = "wordnet"
DEMO_TEXT_SOURCE = "minilm"
DEMO_TEXT_ARMS = ("scratch:source=words", "frozen", "finetune")
DEMO_TEXT_QUICK = {"per_class": "20", "seeds": 2, "epochs": 3}
DEMO_TEXT_FULL = {"per_class": "10,50", "seeds": 3, "epochs": 3}
