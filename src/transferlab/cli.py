"""argv -> config -> one api call -> exit code. User errors print one sentence and exit 2.

Every option that more than one command takes is declared once, in an option group (a frozen dataclass whose
fields carry their typer annotation and FitConfig's default); :func:`takes` adds a group's fields to a command's
parameters, so that ``--help`` lists them and the command receives them as keyword arguments. The tables the
commands print are built in :mod:`transferlab.report.tables`.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from transferlab import modality
from transferlab.config import DEFAULT_ARMS, FitConfig
from transferlab.errors import UserError
from transferlab.files import disk_full, is_disk_full

console = Console(soft_wrap=True)  # sentences and paths are not broken; tables still fit the terminal
err = Console(stderr=True, soft_wrap=True)  # one sentence stays on one line


class _Commands(TyperGroup):
    """Runs a command, so that a user error is one sentence and exit code 2 wherever the app runs: under main(),
    and in process under typer's CliRunner."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            err.print(Text(f"error: {e}", style="red"))
        except KeyboardInterrupt as e:  # before click turns it into "Aborted!"
            epoch = getattr(e, "epoch", None)
            where = f" during epoch {epoch}" if epoch else ""
            err.print(Text(f"interrupted{where}: the output is marked INCOMPLETE; `{resume_command(sys.argv[1:])}` "
                           "continues it", style="yellow"))
            raise typer.Exit(130) from None
        except OSError as e:  # a full disk the library did not translate itself (files.atomic_write does)
            if not is_disk_full(e):
                raise
            err.print(Text(f"error: {disk_full(e.filename or 'a file')}", style="red"))
        raise typer.Exit(2)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Transfer learning you can measure: reuse all or part of a source model, frozen or tuned.",
)

_TCMALLOC = [
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
]


def _use_fast_allocator() -> None:
    """Re-exec under tcmalloc when it is installed (benchmarks/overhead.py measured 1.03-1.36x faster inference).

    ``TRANSFERLAB_ALLOCATOR=system`` keeps glibc malloc. PyTorch's transparent huge pages for large buffers
    (``THP_MEM_ALLOC_ENABLE=1``) are switched on either way.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if os.environ.get("TRANSFERLAB_ALLOCATOR", "auto") == "system" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = next((p for p in _TCMALLOC if os.path.exists(p)), None)
    if lib is None:
        return
    preload = " ".join(filter(None, [lib, os.environ.get("LD_PRELOAD", "")]))
    env = {**os.environ, "LD_PRELOAD": preload}
    os.execve(sys.executable, [sys.executable, "-m", "transferlab", *sys.argv[1:]], env)


def allocator() -> str:
    """Which memory allocator this process runs with."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    name = "tcmalloc" if "tcmalloc" in maps else "glibc malloc"
    if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1":
        name += " + huge pages (THP_MEM_ALLOC_ENABLE=1)"
    return name


def _version(value: bool) -> None:
    if value:
        from transferlab import __version__

        console.print(f"transferlab {__version__} (allocator: {allocator()})", markup=False)
        raise typer.Exit()


def _reuse(value: str) -> int | None:
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--reuse must be 'all' or a number of blocks, not {value!r}") from None


# --- option groups: each option declared once -------------------------------------------------------------------

FIT = FitConfig()
ARCH = "cnn_small"  # pretrain and layers: the architecture trained from scratch
SEEDS = 3  # compare and layers: the fewest that get a verdict

Source = Annotated[str, typer.Option(help="Source model (see `transferlab sources`).")]
Weights = Annotated[str | None, typer.Option(help="Weights file for the source (.safetensors or .pth).")]
Arch = Annotated[str, typer.Option(help="Architecture trained from scratch: cnn_tiny, cnn_small (images), "
                                        "mlp_tiny, mlp_small (tables), words[:DIM] (text) or timm:<arch>.")]
Seeds = Annotated[int, typer.Option(help="Seeds per arm or candidate (a verdict on transfer needs 3 or more).")]
PerClass = Annotated[int | None, typer.Option(help="Training examples per class.")]
Strict = Annotated[bool, typer.Option(help="Refuse unreadable files (naming them) instead of skipping them.")]
BackboneLrMult = Annotated[float | None, typer.Option(help="finetune: the reused blocks train at lr x this. Default: "
                                                       "0.1 for images and tables, 0.01 for text.")]


class Group:
    """Options that travel together: the fields of a frozen dataclass, each typed by its typer annotation."""

    @classmethod
    @functools.cache
    def parameters(cls) -> tuple[inspect.Parameter, ...]:
        """The group's fields as keyword parameters (made once: every command gets the same objects)."""
        hints = get_type_hints(cls, include_extras=True)
        return tuple(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                       annotation=hints[f.name]) for f in fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Budget(Group):
    """How long and how fast a model trains (see the README's "How long does a run train?")."""

    epochs: Annotated[int | None, typer.Option(help="At most this many passes over the training data (default: "
                                               "until converged, at most 100 epochs or 2,000 steps).")] = FIT.epochs
    max_steps: Annotated[int | None, typer.Option(help="At most this many optimiser steps.")] = FIT.max_steps
    min_steps: Annotated[int, typer.Option(help="At least this many optimiser steps (small data gets more epochs, "
                                           "not fewer steps), within --epochs/--max-steps.")] = FIT.min_steps
    patience: Annotated[int, typer.Option(help="Stop after this many validations without a lower validation "
                                          "loss; the best validation's weights are kept.")] = FIT.patience
    batch_size: Annotated[int, typer.Option(help="Training examples per step.")] = FIT.batch_size
    lr: Annotated[float | None, typer.Option(help="Learning rate of the head and new blocks. Default: 1e-3 for "
                                             "images, 1e-2 for text and tables.")] = FIT.lr
    seed: Annotated[int, typer.Option(help="Random seed (weights, order, augmentation; also the split); with "
                                      "--seeds N, the first of N.")] = FIT.seed


@dataclass(frozen=True)
class Inputs(Group):
    """How examples are held out and shown to the model."""

    image_size: Annotated[int | None, typer.Option(help="Input size in px (default: the model's own).")] = \
        FIT.image_size
    eval_per_class: Annotated[int | None, typer.Option(help="Cap on val and test examples per class.")] = \
        FIT.eval_per_class


@dataclass(frozen=True)
class Hardware(Group):
    """Where and how training runs: passed to Lightning's Trainer."""

    accelerator: Annotated[str, typer.Option(help="cpu, gpu, mps or auto (a GPU when there is one).")] = \
        FIT.accelerator
    devices: Annotated[str, typer.Option(help="Devices per node: a count, 'auto', or indices such as 0,1.")] = \
        FIT.devices
    num_nodes: Annotated[int, typer.Option(help="Machines (see the README on torchrun and SLURM).")] = FIT.num_nodes
    distributed: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp or "
                                             "ddp_find_unused_parameters_true.")] = FIT.distributed
    precision: Annotated[str, typer.Option(help="32, bf16-mixed or 16-mixed (never mixed by default).")] = \
        FIT.precision
    compile: Annotated[bool, typer.Option(help="torch.compile the trained network.")] = FIT.compile
    channels_last: Annotated[bool, typer.Option(help="Images in channels_last memory layout.")] = FIT.channels_last
    pin_memory: Annotated[bool | None, typer.Option(help="Pinned host memory for batches. Default: on with a "
                                                    "GPU.")] = FIT.pin_memory
    deterministic: Annotated[bool, typer.Option(help="Deterministic algorithms only (bit-identical reruns; "
                                                "measured 12% slower fine-tuning on the CPU).")] = FIT.deterministic
    num_workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = FIT.num_workers


@dataclass(frozen=True)
class DataOptions(Group):
    """How texts and tables are read: every command that trains on data."""

    text_model: Annotated[str, typer.Option(help="Word-vector sources: bag (mean + MLP) or cnn (1-D "
                                            "convolutions).")] = FIT.text_model
    max_vectors: Annotated[int | None, typer.Option(help="Read at most this many vectors from a vectors "
                                                    "file.")] = FIT.max_vectors
    text_column: Annotated[str, typer.Option(help="CSV/TSV/JSONL column holding the text.")] = FIT.text_column
    label_column: Annotated[str, typer.Option(help="Column holding the label: in CSV/TSV/JSONL text and in "
                                              "tables.")] = FIT.label_column
    encoding_errors: Annotated[str, typer.Option(help="strict: invalid UTF-8 is an error; replace: accept "
                                                 "it.")] = FIT.encoding_errors
    impute: Annotated[Literal["none", "mean"], typer.Option(  # type: ignore[assignment]
        help="Tables: a missing cell is an error (none) or filled with the training split's column mean "
             "(mean).")] = FIT.impute


@dataclass(frozen=True)
class Output(Group):
    """What to do with an output folder that holds a run already."""

    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out, reusing what it "
                                         "finished.")] = False
    overwrite: Annotated[bool, typer.Option(help="Start over in --out: deletes what transferlab wrote there, and "
                                            "only that (refused when the folder holds anything else).")] = False


TRAINING = (Budget, Inputs, Hardware, DataOptions, Output)  # every command that trains on data takes these


def takes(*groups: type[Group]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add each group's fields to a command's parameters (after its own, before its ``**options``, which receives
    them): a shared option is declared once, in its group, and ``--help`` lists it with its help and default."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        sig, hints = inspect.signature(command), get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [p for group in groups for p in group.parameters()]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            return command(*args, **kwargs)

        run.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return run

    return wrap


def _zero() -> bool:
    from transferlab.files import is_global_zero

    return is_global_zero()


def show(out: tuple[list[Any], list[Any]]) -> None:
    """Print a report's tables and sentences (``report.tables``): results to stdout, notes to stderr."""
    for item in out[0]:
        console.print(item, markup=False) if isinstance(item, str) else console.print(item)
    for item in out[1]:
        err.print(item, markup=False) if isinstance(item, str) else err.print(item)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Show the version and the memory allocator, and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="", help="Log more.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("transferlab").setLevel(logging.INFO)


# --- commands ----------------------------------------------------------------------------------------------------


@app.command()
@takes(*TRAINING)
def fit(
    data: Annotated[str, typer.Argument(help="Images: folder, CSV of path,label, fashion-mnist[:options]. Text: "
                                        ".csv/.tsv/.jsonl, folder of .txt files, wordnet[:options]. Tables: "
                                        ".csv/.tsv of numeric columns and a label.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    source: Source = FIT.source,
    strategy: Annotated[str, typer.Option(help="scratch, frozen, finetune, gradual, l2sp, bss or lora, with options as "
                                          "NAME:key=value,... (finetune:decay=0.7,reg=l2sp; gradual:every=2; "
                                          "lora:r=8,alpha=16).")] = FIT.strategy,
    reuse: Annotated[str, typer.Option(help="Reuse the first N blocks of the source, or 'all'.")] = "all",
    backbone_lr_mult: BackboneLrMult = FIT.backbone_lr_mult,
    freeze_bn: Annotated[bool, typer.Option(
        "--freeze-bn/--train-bn", help="finetune: keep the reused BatchNorm statistics fixed.")] = FIT.freeze_bn,
    per_class: PerClass = FIT.per_class,
    weights: Weights = FIT.weights,
    strict: Strict = FIT.strict,
    cache: Annotated[bool, typer.Option(help="frozen: train on cached features.")] = FIT.cache,
    **options: Any,
) -> None:
    """Train a target model from a source, until it converges, and write a run directory."""
    from transferlab import api
    from transferlab.train.budget import describe

    result = api.fit(data, out=out, source=source, strategy=strategy, reuse=_reuse(reuse),
                     backbone_lr_mult=backbone_lr_mult, freeze_bn=freeze_bn, per_class=per_class, weights=weights,
                     strict=strict, cache=cache, **options)
    if not _zero():
        return
    card = api.run_card(out)
    coverage = card.get("coverage")
    if coverage:
        console.print(f"vectors cover {coverage['types']:.1%} of the target's word types and {coverage['tokens']:.1%} "
                      "of its tokens", markup=False)
    if result.training:
        console.print(describe(result.training), markup=False)
    learned = "" if card["metrics"].get("learned", True) else " (did not learn: within two standard errors of it)"
    console.print(
        f"test accuracy {result.test_accuracy:.4f} (always guessing the commonest training class: "
        f"{result.majority_baseline:.4f}){learned} · {result.wall_seconds:.1f} s training · run directory {out}",
        markup=False,
    )


@app.command()
@takes(*TRAINING)
def pretrain(
    data: Annotated[str, typer.Argument(help="Source task data (abundant, related to the target).")],
    out: Annotated[Path, typer.Option(help="Run directory to write; then use it as --source.")],
    arch: Arch = ARCH,
    per_class: PerClass = FIT.per_class,
    **options: Any,
) -> None:
    """Develop your own source: train ARCH from scratch on a source task and check it beats a naive model."""
    from transferlab import api
    from transferlab.report.tables import pretrain_table

    _, check = api.pretrain(data, arch=arch, out=out, per_class=per_class, **options)
    if _zero():
        show(pretrain_table(check, arch, data, out))


@app.command()
@takes(*TRAINING)
def layers(
    target_data: Annotated[str, typer.Option("--target-data", help="Task B: the target.")],
    out: Annotated[Path, typer.Option(help="Directory for cells, results.json and report.html.")],
    source_data: Annotated[str | None, typer.Option("--source-data", help="Task A: train base A on it.")] = None,
    arch: Arch = ARCH,
    source: Annotated[str | None, typer.Option(help="A ready source instead of --source-data.")] = None,
    seeds: Seeds = SEEDS,
    per_class: PerClass = FIT.per_class,
    **options: Any,
) -> None:
    """How much of the source to reuse? The layer-transfer sweep of Yosinski et al. 2014 (base A and base B are
    ARCH trained from scratch)."""
    from transferlab import api
    from transferlab.report.tables import layers_tables

    results = api.layers(target_data, out=out, source_data=source_data, arch=arch, source=source, seeds=seeds,
                         per_class=per_class, **options)
    if _zero():
        show(layers_tables(results, out))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    inputs: Annotated[list[Path] | None, typer.Argument(help="Image files or folders (searched recursively); for a "
                                                        "text run, text files (CSV/TSV/JSONL: their text column; "
                                                        "others: one text per line); for a table run, CSV/TSV "
                                                        "tables.")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="A text to classify (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option(help="CSV file to write instead of stdout.")] = None,
    skipped: Annotated[Path | None, typer.Option(
        help="CSV file (path,reason) listing the inputs that could not be used; default with --output X: "
             "X's name with .skipped.csv (pred.csv -> pred.skipped.csv), written when inputs were skipped.")] = None,
    strict: Strict = FIT.strict,
    text_column: Annotated[str | None, typer.Option(help="Text runs: the column of CSV/TSV/JSONL files to classify "
                                                    "(default: the one the run was trained on).")] = None,
) -> None:
    """Classify images, texts or table rows with a trained run: CSV with path (text, or row),label,probability.

    Inputs that cannot be used (zero-byte, corrupt, not an image, not UTF-8 text, a table cell that is not a
    finite number) are skipped and listed; --strict refuses."""
    from transferlab import api
    from transferlab.files import atomic_write

    if not inputs and not text:
        raise UserError("give image, text or table files to classify, or --text")
    unread: list[tuple[str, str]] = []
    listing = skipped
    if listing is None and output is not None:
        beside = output.with_name(output.stem + ".skipped.csv")
        listing = beside if beside != output else output.with_name(output.name + ".skipped.csv")

    def write_skipped() -> None:
        # an explicit --skipped is always written; the default one beside --output when there is something to list
        # or an older list there to replace
        if listing is None or not (unread or skipped is not None or listing.exists()):
            return
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([("path", "reason"), *unread])
        atomic_write(listing, buf.getvalue())

    try:
        rows = api.predict(run_dir, inputs or [], texts=text, strict=strict, skipped=unread, text_column=text_column)
    except UserError:
        write_skipped()
        raise
    write_skipped()
    if unread:
        shown = "; ".join(f"{path} ({reason})" for path, reason in unread[:5])
        more = f"; and {len(unread) - 5} more" if len(unread) > 5 else ""
        where = f"listed in {listing}" if listing is not None else "--skipped FILE lists them"
        err.print(f"skipped {len(unread)} inputs that cannot be used: {shown}{more} ({where})", markup=False)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    kind = modality.get(api.run_card(run_dir).get("modality", "image"))
    writer.writerow([kind.predict_column, "label", "probability"])
    writer.writerows((p, label, f"{prob:.6f}") for p, label, prob in rows)
    if output is None:
        sys.stdout.write(buf.getvalue())
    else:
        atomic_write(output, buf.getvalue())


@app.command()
def sources(
    blocks: Annotated[str | None, typer.Option(help="Print this source's ordered blocks.")] = None,
    weights: Weights = FIT.weights,
) -> None:
    """List built-in and known sources, or the blocks of one source."""
    from transferlab import api
    from transferlab.report.tables import blocks_table, sources_table

    if blocks is not None:
        console.print(blocks_table(blocks, api.source_blocks(blocks, weights)))
        return
    console.print(sources_table(api.list_sources()))
    console.print(f"allocator: {allocator()}", markup=False)


@app.command()
@takes(*TRAINING)
def compare(
    data: Annotated[str, typer.Argument(help="Target data, as for fit.")],
    out: Annotated[Path, typer.Option(help="Directory for cells, results.json, curves.csv and report.html.")],
    source: Source = FIT.source,
    arms: Annotated[str, typer.Option(help="Comma-separated arms: strategy[:source=S,reuse=N,lr=X,...], and logreg "
                                      "(a logistic regression on the raw inputs).")] = ",".join(DEFAULT_ARMS),
    seeds: Seeds = SEEDS,
    per_class: Annotated[str | None, typer.Option(help="Labelled sizes, e.g. 10,30,100,all.")] = None,
    backbone_lr_mult: BackboneLrMult = FIT.backbone_lr_mult,
    threshold: Annotated[float, typer.Option(help="Time to threshold: this fraction of scratch's asymptote.")] = 0.9,
    weights: Weights = FIT.weights,
    **options: Any,
) -> None:
    """Did transfer help? Learning curves and the three benefits against scratch, and every arm against a
    logistic regression, with intervals; every cell trained to convergence."""
    from transferlab import api
    from transferlab.report.tables import compare_tables

    results = api.compare(data, out=out, source=source, arms=arms, seeds=seeds, per_class=per_class,
                          backbone_lr_mult=backbone_lr_mult, threshold=threshold, weights=weights, **options)
    if _zero():
        show(compare_tables(results, out))


@app.command()
@takes(*TRAINING)
def rank(
    data: Annotated[str, typer.Argument(help="Target data, as for fit (its training split is scored).")],
    sources: Annotated[str, typer.Option(help="Comma-separated candidate sources (scratch:<source> is a control).")],
    out: Annotated[Path, typer.Option(help="Directory for results.json and report.html.")],
    scores: Annotated[str | None, typer.Option(help="Comma-separated: logme,leep,nce,hscore,knn,linear. Default: "
                                               "all (LEEP and NCE where the source has its own head).")] = None,
    validate: Annotated[bool, typer.Option(help="Also fine-tune every candidate (--seeds, to convergence) and "
                                           "report Kendall's and weighted tau between each score and the "
                                           "fine-tuned accuracy.")] = False,
    skip_missing: Annotated[bool, typer.Option(help="Rank the others when a candidate cannot be loaded or lacks "
                                               "a head a named score needs.")] = False,
    per_class: PerClass = FIT.per_class,
    seeds: Seeds = 2,  # --validate only: no verdict is drawn from it
    **options: Any,
) -> None:
    """Which source? Rank candidates by transferability scores from one forward pass each."""
    from transferlab import api
    from transferlab.report.tables import rank_tables

    results = api.rank(data, sources=sources, out=out, scores=scores, validate=validate, skip_missing=skip_missing,
                       per_class=per_class, seeds=seeds, **options)
    if _zero():
        show(rank_tables(results, data, out))


@app.command()
def demo(
    quick: Annotated[bool, typer.Option(help="Smaller (a couple of minutes on 2 cores).")] = False,
    text: Annotated[bool, typer.Option(help="Text demo: the packaged sentence encoder on WordNet glosses.")] = False,
    out: Annotated[Path, typer.Option(help="Where the demo writes.")] = Path("transferlab-demo"),
    overwrite: Annotated[bool, typer.Option(help="Start the demo over instead of reusing its finished cells.")] = False,
) -> None:
    """Does ImageNet EfficientNet-Lite0 help on bundled Fashion-MNIST classes 5-9? scratch vs frozen vs finetune,
    beside a logistic regression on the pixels. With --text: does all-MiniLM-L6-v2 help on bundled WordNet glosses
    against word embeddings from scratch?"""
    from transferlab import api
    from transferlab.report.tables import compare_tables, demo_table

    if text:
        source, data, arms = api.DEMO_TEXT_SOURCE, api.DEMO_TEXT_DATA, api.DEMO_TEXT_ARMS
        note = "sentence encoder all-MiniLM-L6-v2 (packaged)"
    else:
        source, data, arms = api.DEMO_SOURCE, api.DEMO_DATA, api.DEMO_ARMS
        note = "ImageNet"
    console.print(f"transferlab demo: {source} ({note}) -> {data} (bundled), arms {', '.join(arms)}; "
                  f"allocator: {allocator()}", markup=False)
    results = api.demo(out=out, quick=quick, text=text, overwrite=overwrite)
    console.print(demo_table(results, arms))
    show(compare_tables(results, out / (("text-" if text else "") + ("quick" if quick else "full"))))


@app.command("pretrain-vectors")
def pretrain_vectors(
    corpus: Annotated[Path, typer.Argument(help="Unlabelled text: a file (one sentence per line) or a folder of "
                                           ".txt files.")],
    out: Annotated[Path, typer.Option(help="Folder to write; then use it as --source.")],
    dim: Annotated[int, typer.Option(help="Vector dimension.")] = 100,
    window: Annotated[int, typer.Option(help="Context window (words each side).")] = 5,
    min_count: Annotated[int, typer.Option(help="Ignore words rarer than this.")] = 2,
    epochs: Annotated[int, typer.Option(help="Passes over the corpus.")] = 5,  # word2vec's own default
    skipgram: Annotated[bool, typer.Option("--skipgram/--cbow", help="word2vec architecture.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = FIT.seed,
    workers: Annotated[int, typer.Option(help="Threads; above 1 is faster but not bit-reproducible.")] = 1,
    encoding_errors: Annotated[str, typer.Option(help="strict: invalid UTF-8 is an error; replace: accept it.")] = \
        FIT.encoding_errors,
) -> None:
    """Develop your own text source: train word2vec (gensim) on an unlabelled corpus."""
    from transferlab import api
    from transferlab.report.tables import vectors_table

    info = api.pretrain_vectors(corpus, out=out, dim=dim, window=window, min_count=min_count, epochs=epochs,
                                skipgram=skipgram, seed=seed, workers=workers, encoding_errors=encoding_errors)
    show((vectors_table(info, dim, out), []))


def main() -> None:
    _use_fast_allocator()
    app()


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted one: the same arguments with --resume (and without
    --overwrite); the demo resumes by itself."""
    args = [a for a in argv if a != "--overwrite"]
    if args[:1] != ["demo"] and "--resume" not in args:
        args.append("--resume")
    return "transferlab " + shlex.join(args)
