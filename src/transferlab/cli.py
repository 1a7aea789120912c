"""argv -> config -> one api call -> exit code. User errors print one sentence and exit 2."""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from transferlab import modality
from transferlab.config import FitConfig
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


# Every option that more than one command takes is declared once here, as an Annotated alias, and each command
# lists it by that alias: typer reads options from a command's signature only and cannot take a dataclass as a
# group of them (fastapi/typer#154, open). Defaults of training options are FitConfig's. A group of options (a
# frozen dataclass below: the same aliases and defaults) picks its values from a command's locals() and passes them
# on: ``**_options(locals(), Hardware)``.
FIT = FitConfig()
ARCH = "cnn_small"  # pretrain and layers: the architecture trained from scratch
SEEDS = 3  # compare and layers: the fewest that get a verdict

Source = Annotated[str, typer.Option(help="Source model (see `transferlab sources`).")]
Weights = Annotated[str | None, typer.Option(help="Weights file for the source (.safetensors or .pth).")]
Arch = Annotated[str, typer.Option(help="Architecture trained from scratch: cnn_tiny, cnn_small or timm:<arch>.")]
Epochs = Annotated[int, typer.Option(help="Passes over the training data.")]
BatchSize = Annotated[int, typer.Option(help="Training examples per step.")]
Lr = Annotated[float | None, typer.Option(help="Learning rate of the head and new blocks. Default: 1e-3 for "
                                          "images, 1e-2 for text and tables.")]
BackboneLrMult = Annotated[float | None, typer.Option(help="finetune: the reused blocks train at lr x this. Default: "
                                                       "0.1 for images and tables, 0.01 for text.")]
Seed = Annotated[int, typer.Option(help="Random seed (weights, order, augmentation; also the split); with --seeds N, "
                                        "the first of N.")]
Seeds = Annotated[int, typer.Option(help="Seeds per arm or candidate (a verdict on transfer needs 3 or more).")]
ImageSize = Annotated[int | None, typer.Option(help="Input size in px (default: the model's own).")]
PerClass = Annotated[int | None, typer.Option(help="Training examples per class.")]
EvalPerClass = Annotated[int | None, typer.Option(help="Cap on val and test examples per class.")]
Strict = Annotated[bool, typer.Option(help="Refuse unreadable files (naming them) instead of skipping them.")]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run in --out, reusing what it finished.")]
Overwrite = Annotated[bool, typer.Option(help="Start over in --out: deletes what transferlab wrote there, and only "
                                          "that (refused when the folder holds anything else).")]

# Text data and text sources.
TextModel = Annotated[str, typer.Option(help="Word-vector sources: bag (mean + MLP) or cnn (1-D convolutions).")]
MaxVectors = Annotated[int | None, typer.Option(help="Read at most this many vectors from a vectors file.")]
TextColumn = Annotated[str, typer.Option(help="CSV/TSV/JSONL column holding the text.")]
LabelColumn = Annotated[str, typer.Option(help="Column holding the label: in CSV/TSV/JSONL text and in tables.")]
EncodingErrors = Annotated[str, typer.Option(help="strict: invalid UTF-8 is an error; replace: accept it.")]
# Tables.
Impute = Annotated[Literal["none", "mean"], typer.Option(
    help="Tables: a missing cell is an error (none) or filled with the training split's column mean (mean).")]

# Where and how training runs: passed to Lightning's Trainer.
Accelerator = Annotated[str, typer.Option(help="cpu, gpu, mps or auto (a GPU when there is one).")]
Devices = Annotated[str, typer.Option(help="Devices per node: a count, 'auto', or indices such as 0,1.")]
NumNodes = Annotated[int, typer.Option(help="Machines (see the README on torchrun and SLURM).")]
Distributed = Annotated[str, typer.Option(help="Lightning strategy: auto, ddp or ddp_find_unused_parameters_true.")]
Precision = Annotated[str, typer.Option(help="32, bf16-mixed or 16-mixed (never mixed by default).")]
Compile = Annotated[bool, typer.Option(help="torch.compile the trained network.")]
ChannelsLast = Annotated[bool, typer.Option(help="Images in channels_last memory layout.")]
PinMemory = Annotated[bool | None, typer.Option(help="Pinned host memory for batches. Default: on with a GPU.")]
Deterministic = Annotated[bool, typer.Option(help="Deterministic algorithms only (bit-identical reruns; measured "
                                             "12% slower fine-tuning on the CPU).")]


class _Group:
    """Options that travel together: the fields of a frozen dataclass, typed by the aliases above."""

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Self:
        """The group's values among a command's parameters (its ``locals()``)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    def as_options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Hardware(_Group):
    """fit, pretrain, layers, compare, rank."""

    accelerator: Accelerator = FIT.accelerator
    devices: Devices = FIT.devices
    num_nodes: NumNodes = FIT.num_nodes
    distributed: Distributed = FIT.distributed
    precision: Precision = FIT.precision
    compile: Compile = FIT.compile
    channels_last: ChannelsLast = FIT.channels_last
    pin_memory: PinMemory = FIT.pin_memory
    deterministic: Deterministic = FIT.deterministic


@dataclass(frozen=True)
class DataOptions(_Group):
    """How texts and tables are read: every command that trains on data (fit, pretrain, layers, compare, rank)."""

    text_model: TextModel = FIT.text_model
    max_vectors: MaxVectors = FIT.max_vectors
    text_column: TextColumn = FIT.text_column
    label_column: LabelColumn = FIT.label_column
    encoding_errors: EncodingErrors = FIT.encoding_errors
    impute: Impute = FIT.impute  # type: ignore[assignment]


GROUPS = (Hardware, DataOptions)


def _options(params: Mapping[str, Any], *groups: type[_Group]) -> dict[str, Any]:
    """The keyword arguments of every group in ``groups``, taken from a command's parameters (its ``locals()``)."""
    return {name: value for group in groups for name, value in group.of(params).as_options().items()}


def _zero() -> bool:
    from transferlab.files import is_global_zero

    return is_global_zero()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Show the version and the memory allocator, and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="", help="Log more.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("transferlab").setLevel(logging.INFO)


@app.command()
def fit(
    data: Annotated[str, typer.Argument(help="Images: folder, CSV of path,label, fashion-mnist[:options]. Text: "
                                        ".csv/.tsv/.jsonl, folder of .txt files, wordnet[:options].")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    source: Source = FIT.source,
    strategy: Annotated[str, typer.Option(help="scratch, frozen, finetune, gradual, l2sp, bss or lora, with options as "
                                          "NAME:key=value,... (finetune:decay=0.7,reg=l2sp; gradual:every=2; "
                                          "lora:r=8,alpha=16).")] = FIT.strategy,
    reuse: Annotated[str, typer.Option(help="Reuse the first N blocks of the source, or 'all'.")] = "all",
    epochs: Epochs = FIT.epochs,
    batch_size: BatchSize = FIT.batch_size,
    lr: Lr = FIT.lr,
    backbone_lr_mult: BackboneLrMult = FIT.backbone_lr_mult,
    freeze_bn: Annotated[bool, typer.Option(
        "--freeze-bn/--train-bn", help="finetune: keep the reused BatchNorm statistics fixed.")] = FIT.freeze_bn,
    image_size: ImageSize = FIT.image_size,
    per_class: PerClass = FIT.per_class,
    eval_per_class: EvalPerClass = FIT.eval_per_class,
    seed: Seed = FIT.seed,
    weights: Weights = FIT.weights,
    strict: Strict = FIT.strict,
    cache: Annotated[bool, typer.Option(help="frozen: train on cached features.")] = FIT.cache,
    num_workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = FIT.num_workers,
    text_model: TextModel = FIT.text_model,
    max_vectors: MaxVectors = FIT.max_vectors,
    text_column: TextColumn = FIT.text_column,
    label_column: LabelColumn = FIT.label_column,
    encoding_errors: EncodingErrors = FIT.encoding_errors,
    impute: Impute = FIT.impute,  # type: ignore[assignment]
    accelerator: Accelerator = FIT.accelerator,
    devices: Devices = FIT.devices,
    num_nodes: NumNodes = FIT.num_nodes,
    distributed: Distributed = FIT.distributed,
    precision: Precision = FIT.precision,
    compile: Compile = FIT.compile,
    channels_last: ChannelsLast = FIT.channels_last,
    pin_memory: PinMemory = FIT.pin_memory,
    deterministic: Deterministic = FIT.deterministic,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a target model from a source and write a run directory."""
    from transferlab import api

    result = api.fit(
        data, out=out, resume=resume, overwrite=overwrite, source=source, strategy=strategy, reuse=_reuse(reuse),
        epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr_mult=backbone_lr_mult, freeze_bn=freeze_bn,
        image_size=image_size, per_class=per_class, eval_per_class=eval_per_class, seed=seed, weights=weights,
        strict=strict, cache=cache, num_workers=num_workers,
        **_options(locals(), Hardware, DataOptions),
    )
    if not _zero():
        return
    coverage = api.run_card(out).get("coverage")
    if coverage:
        console.print(f"vectors cover {coverage['types']:.1%} of the target's word types and {coverage['tokens']:.1%} "
                      "of its tokens", markup=False)
    console.print(
        f"test accuracy {result.test_accuracy:.4f} (always guessing the commonest training class: "
        f"{result.majority_baseline:.4f}) · {result.wall_seconds:.1f} s training · run directory {out}",
        markup=False,
    )


@app.command()
def pretrain(
    data: Annotated[str, typer.Argument(help="Source task data (abundant, related to the target).")],
    out: Annotated[Path, typer.Option(help="Run directory to write; then use it as --source.")],
    arch: Arch = ARCH,
    epochs: Epochs = FIT.epochs,
    batch_size: BatchSize = FIT.batch_size,
    lr: Lr = FIT.lr,
    image_size: ImageSize = FIT.image_size,
    per_class: PerClass = FIT.per_class,
    eval_per_class: EvalPerClass = FIT.eval_per_class,
    seed: Seed = FIT.seed,
    text_model: TextModel = FIT.text_model,
    max_vectors: MaxVectors = FIT.max_vectors,
    text_column: TextColumn = FIT.text_column,
    label_column: LabelColumn = FIT.label_column,
    encoding_errors: EncodingErrors = FIT.encoding_errors,
    impute: Impute = FIT.impute,  # type: ignore[assignment]
    accelerator: Accelerator = FIT.accelerator,
    devices: Devices = FIT.devices,
    num_nodes: NumNodes = FIT.num_nodes,
    distributed: Distributed = FIT.distributed,
    precision: Precision = FIT.precision,
    compile: Compile = FIT.compile,
    channels_last: ChannelsLast = FIT.channels_last,
    pin_memory: PinMemory = FIT.pin_memory,
    deterministic: Deterministic = FIT.deterministic,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Develop your own source: train ARCH from scratch on a source task and check it beats a naive model."""
    from transferlab import api

    result, check = api.pretrain(
        data, arch=arch, out=out, resume=resume, overwrite=overwrite, epochs=epochs, batch_size=batch_size, lr=lr,
        image_size=image_size, per_class=per_class, eval_per_class=eval_per_class, seed=seed,
        **_options(locals(), Hardware, DataOptions),
    )
    if not _zero():
        return
    table = Table(title=f"source check: {arch} on {data}")
    for col in ("model test accuracy", "majority-class baseline", "chance", "clearly better?"):
        table.add_column(col)
    better = check["clearly_better_than_naive"]
    table.add_row(f"{check['test_accuracy']:.4f}", f"{check['majority_baseline']:.4f}", f"{check['chance']:.4f}",
                  Text("yes" if better else "NO", style="green" if better else "bold red"))
    console.print(table)
    if not better:
        err.print(Text("warning: this source is not clearly better than a naive model and will transfer little; "
                       "train longer or on more data before reusing it", style="bold red"))
    console.print(f"use it as a source: --source {out}", markup=False)


@app.command()
def layers(
    target_data: Annotated[str, typer.Option("--target-data", help="Task B: the target.")],
    out: Annotated[Path, typer.Option(help="Directory for cells, results.json and report.html.")],
    source_data: Annotated[str | None, typer.Option("--source-data", help="Task A: train base A on it.")] = None,
    arch: Arch = ARCH,
    source: Annotated[str | None, typer.Option(help="A ready source instead of --source-data.")] = None,
    seeds: Seeds = SEEDS,
    epochs: Epochs = FIT.epochs,
    image_size: ImageSize = FIT.image_size,
    per_class: PerClass = FIT.per_class,
    eval_per_class: EvalPerClass = FIT.eval_per_class,
    lr: Lr = FIT.lr,
    text_model: TextModel = FIT.text_model,
    max_vectors: MaxVectors = FIT.max_vectors,
    text_column: TextColumn = FIT.text_column,
    label_column: LabelColumn = FIT.label_column,
    encoding_errors: EncodingErrors = FIT.encoding_errors,
    impute: Impute = FIT.impute,  # type: ignore[assignment]
    accelerator: Accelerator = FIT.accelerator,
    devices: Devices = FIT.devices,
    num_nodes: NumNodes = FIT.num_nodes,
    distributed: Distributed = FIT.distributed,
    precision: Precision = FIT.precision,
    compile: Compile = FIT.compile,
    channels_last: ChannelsLast = FIT.channels_last,
    pin_memory: PinMemory = FIT.pin_memory,
    deterministic: Deterministic = FIT.deterministic,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """How much of the source to reuse? The layer-transfer sweep of Yosinski et al. 2014 (base A and base B are
    ARCH trained from scratch)."""
    from transferlab import api

    results = api.layers(
        target_data, out=out, source_data=source_data, arch=arch, source=source, seeds=seeds, epochs=epochs,
        image_size=image_size, per_class=per_class, eval_per_class=eval_per_class, lr=lr, resume=resume,
        overwrite=overwrite, **_options(locals(), Hardware, DataOptions),
    )
    if not _zero():
        return
    from transferlab.report.html import fmt_interval

    ns = sorted(next(iter(results["series"].values())), key=int)
    table = Table(title="target test accuracy by blocks reused (mean [95% CI])")
    table.add_column("series")
    for n, name in zip(ns, results["blocks"], strict=True):
        table.add_column(f"n={n} ({name})")
    for name, per_n in results["series"].items():
        table.add_row(name, *[fmt_interval(per_n[n]) for n in ns])
    console.print(table)
    if results["base"]:
        console.print(f"base B: {fmt_interval(results['base'])}", markup=False)
    console.print(f"report: {out / 'report.html'}", markup=False)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    inputs: Annotated[list[Path] | None, typer.Argument(help="Image files or folders (searched recursively); for a "
                                                        "text run, text files with one text per line.")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="A text to classify (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option(help="CSV file to write instead of stdout.")] = None,
    skipped: Annotated[Path | None, typer.Option(
        help="CSV file (path,reason) listing the files that could not be read; default with --output X: "
             "X's name with .skipped.csv (pred.csv -> pred.skipped.csv), written when files were skipped.")] = None,
    strict: Strict = FIT.strict,
) -> None:
    """Classify images or texts with a trained run: CSV with path (or text),label,probability.

    Unreadable files (zero-byte, corrupt, not an image, not UTF-8 text) are skipped and listed; --strict refuses."""
    from transferlab import api
    from transferlab.files import atomic_write

    if not inputs and not text:
        raise UserError("give image or text files to classify, or --text")
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
        rows = api.predict(run_dir, inputs or [], texts=text, strict=strict, skipped=unread)
    except UserError:
        write_skipped()
        raise
    write_skipped()
    if unread:
        shown = "; ".join(f"{path} ({reason})" for path, reason in unread[:5])
        more = f"; and {len(unread) - 5} more" if len(unread) > 5 else ""
        where = f"listed in {listing}" if listing is not None else "--skipped FILE lists them"
        err.print(f"skipped {len(unread)} files that cannot be read: {shown}{more} ({where})", markup=False)
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

    if blocks is not None:
        table = Table(title=f"blocks of {blocks} (--reuse N keeps the first N)")
        table.add_column("n", justify="right")
        table.add_column("block")
        table.add_column("parameters", justify="right")
        for i, (name, count) in enumerate(api.source_blocks(blocks, weights), 1):
            table.add_row(str(i) if "source head" not in name else "", name, f"{count:,}")
        console.print(table)
        return
    table = Table(title="sources (also: timm:<arch>, torchvision:<arch>, scratch:<source>, a run directory)")
    for col in ("source", "weights", "offline"):
        table.add_column(col, overflow="fold")
    for row in api.list_sources():
        table.add_row(row["source"], row["weights"], row["offline"])
    console.print(table)
    console.print(f"allocator: {allocator()}", markup=False)


@app.command()
def compare(
    data: Annotated[str, typer.Argument(help="Target data, as for fit.")],
    out: Annotated[Path, typer.Option(help="Directory for cells, results.json, curves.csv and report.html.")],
    source: Source = FIT.source,
    arms: Annotated[str, typer.Option(help="Comma-separated arms: strategy[:source=S,reuse=N,lr=X,...].")] = (
        "scratch,frozen,finetune"
    ),
    seeds: Seeds = SEEDS,
    epochs: Epochs = FIT.epochs,
    per_class: Annotated[str | None, typer.Option(help="Labelled sizes, e.g. 10,30,100,all.")] = None,
    eval_per_class: EvalPerClass = FIT.eval_per_class,
    image_size: ImageSize = FIT.image_size,
    batch_size: BatchSize = FIT.batch_size,
    lr: Lr = FIT.lr,
    backbone_lr_mult: BackboneLrMult = FIT.backbone_lr_mult,
    text_model: TextModel = FIT.text_model,
    max_vectors: MaxVectors = FIT.max_vectors,
    text_column: TextColumn = FIT.text_column,
    label_column: LabelColumn = FIT.label_column,
    encoding_errors: EncodingErrors = FIT.encoding_errors,
    impute: Impute = FIT.impute,  # type: ignore[assignment]
    accelerator: Accelerator = FIT.accelerator,
    devices: Devices = FIT.devices,
    num_nodes: NumNodes = FIT.num_nodes,
    distributed: Distributed = FIT.distributed,
    precision: Precision = FIT.precision,
    compile: Compile = FIT.compile,
    channels_last: ChannelsLast = FIT.channels_last,
    pin_memory: PinMemory = FIT.pin_memory,
    deterministic: Deterministic = FIT.deterministic,
    threshold: Annotated[float, typer.Option(help="Time to threshold: this fraction of scratch's asymptote.")] = 0.9,
    seed: Seed = FIT.seed,
    weights: Weights = FIT.weights,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Did transfer help? Learning curves and the three benefits against scratch, with intervals."""
    from transferlab import api

    results = api.compare(
        data, out=out, source=source, arms=arms, seeds=seeds, epochs=epochs, per_class=per_class,
        eval_per_class=eval_per_class, image_size=image_size, batch_size=batch_size, lr=lr,
        backbone_lr_mult=backbone_lr_mult, threshold=threshold, seed=seed, weights=weights, resume=resume,
        overwrite=overwrite, **_options(locals(), Hardware, DataOptions),
    )
    if _zero():
        _print_benefits(results, out)


@app.command()
def rank(
    data: Annotated[str, typer.Argument(help="Target data, as for fit (its training split is scored).")],
    sources: Annotated[str, typer.Option(help="Comma-separated candidate sources (scratch:<source> is a control).")],
    out: Annotated[Path, typer.Option(help="Directory for results.json and report.html.")],
    scores: Annotated[str | None, typer.Option(help="Comma-separated: logme,leep,nce,hscore,knn,linear. Default: "
                                               "all (LEEP and NCE where the source has its own head).")] = None,
    validate: Annotated[bool, typer.Option(help="Also fine-tune every candidate (--seeds, --epochs, "
                                           "--eval-per-class) and report Kendall's and weighted tau between each "
                                           "score and the fine-tuned accuracy.")] = False,
    skip_missing: Annotated[bool, typer.Option(help="Rank the others when a candidate cannot be loaded or lacks "
                                               "a head a named score needs.")] = False,
    per_class: PerClass = FIT.per_class,
    image_size: ImageSize = FIT.image_size,
    seeds: Seeds = 2,  # --validate only: no verdict is drawn from it
    epochs: Epochs = FIT.epochs,
    eval_per_class: EvalPerClass = FIT.eval_per_class,
    text_model: TextModel = FIT.text_model,
    max_vectors: MaxVectors = FIT.max_vectors,
    text_column: TextColumn = FIT.text_column,
    label_column: LabelColumn = FIT.label_column,
    encoding_errors: EncodingErrors = FIT.encoding_errors,
    impute: Impute = FIT.impute,  # type: ignore[assignment]
    accelerator: Accelerator = FIT.accelerator,
    devices: Devices = FIT.devices,
    num_nodes: NumNodes = FIT.num_nodes,
    distributed: Distributed = FIT.distributed,
    precision: Precision = FIT.precision,
    compile: Compile = FIT.compile,
    channels_last: ChannelsLast = FIT.channels_last,
    pin_memory: PinMemory = FIT.pin_memory,
    deterministic: Deterministic = FIT.deterministic,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Which source? Rank candidates by transferability scores from one forward pass each."""
    from transferlab import api
    from transferlab.report.html import SCORE_LABELS, SHORT_SCORE_LABELS, fmt_number

    results = api.rank(
        data, sources=sources, out=out, scores=scores, validate=validate, skip_missing=skip_missing,
        per_class=per_class, image_size=image_size, seeds=seeds, epochs=epochs, eval_per_class=eval_per_class,
        resume=resume, overwrite=overwrite, **_options(locals(), Hardware, DataOptions),
    )
    if not _zero():
        return
    wanted = results["config"]["scores"]
    first = wanted[0]
    table = Table(title=f"transferability on {data} ({results['train_size']} examples): score and rank (#1 is "
                  f"best; ties share a rank), by {first}")
    table.add_column("source", overflow="fold", min_width=12)  # wrapped, never cut: it names the row
    for s in wanted:
        table.add_column(SHORT_SCORE_LABELS[s], justify="right")
    table.add_column("s", justify="right")
    if validate:
        table.add_column("tuned", justify="right")
    order = results["ranking"][first] + [s for s in results["sources"] if s not in results["ranking"][first]]
    for spec in order:
        cells = []
        for s in wanted:
            value = results["scores"][spec].get(s)
            cells.append("n/a" if value is None else f"{value:.3f}\n#{results['ranks'][s][spec]}")
        row = [spec, *cells, f"{results['seconds'][spec]['total']:.1f}"]
        if validate:
            row.append(f"{results['finetune_accuracy'][spec]:.4f}")
        table.add_row(*row)
    console.print(table)
    if validate:
        vt = Table(title=f"how far to trust each score here: ranking took {results['speedup']:.1f}x less time than "
                   "fine-tuning every candidate")
        for col in ("score", "Kendall tau", "weighted tau", "top pick is the best?"):
            vt.add_column(col)
        for s, v in results["validation"].items():
            vt.add_row(SCORE_LABELS[s], fmt_number(v["kendall_tau"]), fmt_number(v["weighted_tau"]),
                       "yes" if v["top_is_best"] else "no")
        console.print(vt)
    for spec, reason in results["skipped"].items():
        err.print(f"skipped {spec}: {reason}", markup=False)
    console.print(f"report: {out / 'report.html'}", markup=False)


def _print_benefits(results: dict, out: Path) -> None:
    from transferlab.report.html import MEASURE_LABELS, fmt_interval, rising_notes

    colours = {"yes": "green", "no": "red", "inconclusive": "yellow", "too few seeds": "magenta"}
    method = results.get("interval_method", "student t")
    for size in results["config"]["per_class"]:
        table = Table(title=f"did transfer help? {size} labelled examples per class, vs {results['baseline']} "
                      f"(mean [95% {method} interval] over {results['config']['seeds']} seeds)")
        table.add_column("arm", overflow="fold")
        for m in MEASURE_LABELS.values():
            table.add_column(m, overflow="fold")
        for arm, measures in results["benefits_by_size"][size].items():
            table.add_row(arm, *[
                Text(f"{fmt_interval(measures[m])} {measures[m]['verdict']}", style=colours[measures[m]["verdict"]])
                for m in MEASURE_LABELS
            ])
        console.print(table)
    if results["config"]["seeds"] < 3:
        err.print(Text(f"{results['config']['seeds']} seeds give no verdict: rerun with --seeds 3 or more",
                       style="magenta"))
    for note in rising_notes(results):
        err.print(Text(f"note: {note}; train longer (--epochs) to measure it", style="yellow"))
    if len(results["config"]["per_class"]) > 1:
        for arm, v in results.get("asymptote_by_size", {}).items():
            console.print(f"{arm}, asymptote benefit across sizes: {v['summary']}", markup=False)
    for item in results["negative_transfer"]:
        console.print(f"negative transfer: {item['arm']} on {item['measure']} at {item['per_class']} per class",
                      style="red", markup=False)
    console.print(f"report: {out / 'report.html'}", markup=False)


@app.command()
def demo(
    quick: Annotated[bool, typer.Option(help="Smaller and shorter (a couple of minutes on 2 cores).")] = False,
    text: Annotated[bool, typer.Option(help="Text demo: the packaged sentence encoder on WordNet glosses.")] = False,
    out: Annotated[Path, typer.Option(help="Where the demo writes.")] = Path("transferlab-demo"),
    overwrite: Annotated[bool, typer.Option(help="Start the demo over instead of reusing its finished cells.")] = False,
) -> None:
    """Does ImageNet EfficientNet-Lite0 help on bundled Fashion-MNIST classes 5-9? scratch vs frozen vs finetune.
    With --text: does all-MiniLM-L6-v2 help on bundled WordNet glosses against word embeddings from scratch?"""
    from transferlab import api

    if text:
        source, data, arms = api.DEMO_TEXT_SOURCE, api.DEMO_TEXT_DATA, api.DEMO_TEXT_ARMS
        note = "sentence encoder all-MiniLM-L6-v2 (packaged)"
    else:
        source, data, arms = api.DEMO_SOURCE, api.DEMO_DATA, api.DEMO_ARMS
        note = "ImageNet"
    console.print(f"transferlab demo: {source} ({note}) -> {data} (bundled), arms {', '.join(arms)}; "
                  f"allocator: {allocator()}", markup=False)
    results = api.demo(out=out, quick=quick, text=text, overwrite=overwrite)
    table = Table(title="final test accuracy per arm (mean over seeds, largest size)")
    for col in ("arm", "test accuracy", "training wall s (mean)"):
        table.add_column(col)
    largest = results["largest_size"]
    for arm in arms:
        cells = [c for c in results["cells"] if c["arm"] == arm and c["per_class"] == largest]
        acc = sum(c["test_accuracy"] for c in cells) / len(cells)
        wall = sum(c["train_wall_seconds"] for c in cells) / len(cells)
        table.add_row(arm, f"{acc:.3f}", f"{wall:.1f}")
    console.print(table)
    _print_benefits(results, out / (("text-" if text else "") + ("quick" if quick else "full")))


@app.command("pretrain-vectors")
def pretrain_vectors(
    corpus: Annotated[Path, typer.Argument(help="Unlabelled text: a file (one sentence per line) or a folder of "
                                           ".txt files.")],
    out: Annotated[Path, typer.Option(help="Folder to write; then use it as --source.")],
    dim: Annotated[int, typer.Option(help="Vector dimension.")] = 100,
    window: Annotated[int, typer.Option(help="Context window (words each side).")] = 5,
    min_count: Annotated[int, typer.Option(help="Ignore words rarer than this.")] = 2,
    epochs: Epochs = 5,  # word2vec's own default, not FitConfig's
    skipgram: Annotated[bool, typer.Option("--skipgram/--cbow", help="word2vec architecture.")] = True,
    seed: Seed = FIT.seed,
    workers: Annotated[int, typer.Option(help="Threads; above 1 is faster but not bit-reproducible.")] = 1,
    encoding_errors: EncodingErrors = FIT.encoding_errors,
) -> None:
    """Develop your own text source: train word2vec (gensim) on an unlabelled corpus."""
    from transferlab import api

    info = api.pretrain_vectors(corpus, out=out, dim=dim, window=window, min_count=min_count, epochs=epochs,
                                skipgram=skipgram, seed=seed, workers=workers, encoding_errors=encoding_errors)
    console.print(f"{info['vocabulary']:,} words x {dim} from {info['tokens']:,} tokens in {info['train_seconds']} s",
                  markup=False)
    table = Table(title="sanity check: nearest neighbours of frequent words")
    table.add_column("word")
    table.add_column("neighbours")
    for word, near in list(info["neighbours"].items())[:6]:
        table.add_row(word, ", ".join(near))
    console.print(table)
    console.print(f"use it as a source: --source {out}", markup=False)


def main() -> None:
    _use_fast_allocator()
    try:
        app()
    except KeyboardInterrupt:
        err.print(Text("interrupted: the run directory is marked INCOMPLETE; --resume continues it", style="yellow"))
        sys.exit(130)
