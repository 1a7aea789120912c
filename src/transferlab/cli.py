"""argv -> config -> one api call -> exit code. User errors print one sentence and exit 2.

Every option that more than one command takes is declared once, as a FitConfig field with its help, and composed
into the commands by option group (:mod:`transferlab.options`). The tables the commands print are built in
:mod:`transferlab.report.tables`.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from transferlab import allocator, catalogue, modality
from transferlab.config import DEFAULT_ARMS
from transferlab.errors import UserError
from transferlab.files import disk_full, is_disk_full, is_global_zero
from transferlab.options import (
    ARCH,
    FIT,
    SEEDS,
    TRAINING,
    Arch,
    BackboneLrMult,
    PerClass,
    Seeds,
    Source,
    Strict,
    Weights,
    option,
    takes,
)

PROGRESS = {"bars": True}  # progress bars: on a terminal, unless --quiet (set by the root callback)
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


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning you can measure: reuse all or part of a source model, frozen or tuned.")


def _version(value: bool) -> None:
    if value:
        from transferlab import __version__

        console.print(f"transferlab {__version__} (allocator: {allocator.name()})", markup=False)
        raise typer.Exit()


def _reuse(value: str) -> int | None:
    if value != "all" and not value.isdigit():
        raise UserError(f"--reuse must be 'all' or a number of blocks, not {value!r}")
    return None if value == "all" else int(value)


def show(out: tuple[list[Any], list[Any]]) -> None:
    """Print a report's tables and sentences (``report.tables``): results to stdout, notes to stderr; under DDP,
    in the first process only."""
    if not is_global_zero():
        return
    for item in out[0]:
        console.print(item, markup=False) if isinstance(item, str) else console.print(item)
    for item in out[1]:
        err.print(item, markup=False) if isinstance(item, str) else err.print(item)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Show the version and the memory allocator, and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="", help="Log more.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress and no log lines: the "
                                        "results, warnings and errors only.")] = False,
) -> None:
    """Progress bars on a terminal only; elsewhere (a log file) one line per validated epoch and per cell."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("transferlab").setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    PROGRESS["bars"] = sys.stderr.isatty() and not quiet


# --- commands ----------------------------------------------------------------------------------------------------


@app.command()
@takes(*TRAINING)
def fit(
    data: Annotated[str, typer.Argument(help="Images: folder, CSV of path,label, fashion-mnist[:options]. Text: .csv/"
                                        ".tsv/.jsonl, .txt folder, wordnet[:options]. Tables: .csv/.tsv.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    source: Source = FIT.source,
    strategy: option("strategy") = FIT.strategy,
    reuse: Annotated[str, typer.Option(help="Reuse the first N blocks of the source, or 'all'.")] = "all",
    backbone_lr_mult: BackboneLrMult = FIT.backbone_lr_mult,
    freeze_bn: Annotated[bool, typer.Option(
        "--freeze-bn/--train-bn", help="finetune: keep the reused BatchNorm statistics fixed.")] = FIT.freeze_bn,
    per_class: PerClass = FIT.per_class,
    weights: Weights = FIT.weights,
    strict: Strict = FIT.strict,
    cache: option("cache") = FIT.cache,
    config: Annotated[Path | None, typer.Option(help="Read the run's options from this JSON file: advise's "
                                                "advice.json (its recommendation), a run's config.json or an "
                                                "object of options; options given here win.")] = None,
    **options: Any,
) -> None:
    """Train a target model from a source, until it converges, and write a run directory."""
    from transferlab import api
    from transferlab.report.tables import fit_lines

    given = dict(source=source, strategy=strategy, reuse=_reuse(reuse), backbone_lr_mult=backbone_lr_mult,
                 freeze_bn=freeze_bn, per_class=per_class, weights=weights, strict=strict, cache=cache, **options)
    if config is not None:  # the file's options, then only what this command line says itself
        ctx = click.get_current_context()
        given = {k: v for k, v in given.items() if k in ("resume", "overwrite") or
                 ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE}
        given["config"] = config
    out_given = {"resume": given.pop("resume", False), "overwrite": given.pop("overwrite", False)}
    result = api.fit(data, out=out, **out_given, **given, progress=PROGRESS["bars"])
    show((fit_lines(result, api.run_card(out), out), []))


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

    _, check = api.pretrain(data, arch=arch, out=out, per_class=per_class, **options, progress=PROGRESS["bars"])
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
                         progress=PROGRESS["bars"], per_class=per_class, **options)
    show(layers_tables(results, out))


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="A finished run directory, or a source with its own classifier "
                                         "(efficientnet_lite0, timm:<arch>, torchvision:<arch>: ImageNet classes).")],
    inputs: Annotated[list[Path] | None, typer.Argument(help="Images or folders of them; texts (CSV/TSV/JSONL: the "
                                                        "text column; others: a text per line); tables.")] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="A text to classify (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option(help="CSV file to write instead of stdout.")] = None,
    skipped: Annotated[Path | None, typer.Option(help="CSV (path,reason) of the inputs that could not be used; "
                                                 "with --output X.csv: X.skipped.csv when any.")] = None,
    strict: Strict = FIT.strict,
    text_column: Annotated[str | None, typer.Option(help="Text runs: the column of CSV/TSV/JSONL files to classify "
                                                    "(default: the one the run was trained on).")] = None,
    top: Annotated[int, typer.Option(help="The K likeliest labels of each input (K rows, with a rank column).",
                                     metavar="K")] = 1,
) -> None:
    """Classify images, texts or table rows with a trained run, or photos with a source's own ImageNet classifier:
    CSV with path (text, or row),label,probability. Inputs that cannot be used (zero-byte, corrupt, not an image,
    not UTF-8 text, a table cell that is not a finite number) are skipped and listed; --strict refuses."""
    from transferlab import api
    from transferlab.report import csv_text, write_csv
    from transferlab.report.tables import calibration_note, predict_table, skipped_note, skipped_path

    if not inputs and not text:
        raise UserError("give image, text or table files to classify, or --text")
    unread: list[tuple[str, str]] = []
    listing = skipped_path(output, skipped)
    try:
        rows = api.predict(model, inputs or [], texts=text, strict=strict, skipped=unread, text_column=text_column,
                           top=top)
    finally:  # an explicit --skipped is always written; the one beside --output when it lists something or replaces
        if listing is not None and (unread or skipped is not None or listing.exists()):
            write_csv(listing, ("path", "reason"), unread)
    if unread:
        err.print(skipped_note(unread, listing), markup=False)
    card = api.run_card(model) if Path(model).is_dir() else {}
    kind = modality.get(card.get("modality", "image") if card else catalogue.source_modality(model) or "image")
    err.print(calibration_note(card), markup=False)
    header, table = predict_table(rows, top, kind.predict_column)
    if output is None:
        sys.stdout.write(csv_text(header, table))
    else:
        write_csv(output, header, table)


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
    console.print(f"allocator: {allocator.name()}", markup=False)


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
    workers: Annotated[int, typer.Option(help="Cells trained at once, each in its own process.")] = 1,
    weights: Weights = FIT.weights,
    **options: Any,
) -> None:
    """Did transfer help? Learning curves and the three benefits against scratch, and every arm against a
    logistic regression, with intervals; every cell trained to convergence."""
    from transferlab import api
    from transferlab.report.tables import compare_tables

    results = api.compare(data, out=out, source=source, arms=arms, seeds=seeds, per_class=per_class, workers=workers,
                          progress=PROGRESS["bars"], backbone_lr_mult=backbone_lr_mult, threshold=threshold,
                          weights=weights, **options)
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
                       progress=PROGRESS["bars"], per_class=per_class, seeds=seeds, **options)
    show(rank_tables(results, data, out))


@app.command()
@takes(*TRAINING)
def advise(
    data: Annotated[str, typer.Argument(help="Target data, as for fit.")],
    out: Annotated[Path, typer.Option(help="Directory for advice.json, report.html, the study and its runs.")],
    budget: Annotated[str, typer.Option(help="Wall time for everything, start-up included: 30m, 90s, 1.5h.")] = "30m",
    candidates: Annotated[str | None, typer.Option(help="Comma-separated sources to choose from (default: every "
                                                   "source of the data's kind whose weights are here).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds of the confirmation, seed i on fold i (3 or more).")] = 3,
    workers: Annotated[int, typer.Option(help="Processes searching at once (one per GPU, or per core group).")] = 1,
    trials: Annotated[int | None, typer.Option(help="Stop the search after N trials (default: by the budget).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL shared by several advise processes "
                                                "(default: sqlite in --out).")] = None,
    per_class: PerClass = FIT.per_class,
    **options: Any,
) -> None:
    """Which source, how much of it, frozen or tuned, at what rate? Searched within a time budget; the default kept
    unless cross-validation clearly favours another; confirmed against scratch and a logistic regression."""
    from transferlab import api
    from transferlab.report.html import advise_lines

    advice = api.advise(data, out=out, budget=budget, candidates=candidates, seeds=seeds, workers=workers,
                        trials=trials, progress=PROGRESS["bars"], storage=storage, per_class=per_class, **options)
    show((advise_lines(advice, out), []))


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

    source, data, arms = (api.DEMO_TEXT_SOURCE, api.DEMO_TEXT_DATA, api.DEMO_TEXT_ARMS) if text else \
        (api.DEMO_SOURCE, api.DEMO_DATA, api.DEMO_ARMS)
    console.print(f"transferlab demo: {source} -> {data} (bundled), arms {', '.join(arms)}; allocator: "
                  f"{allocator.name()}", markup=False)
    results = api.demo(out=out, quick=quick, text=text, overwrite=overwrite, progress=PROGRESS["bars"])
    console.print(demo_table(results, arms))
    show(compare_tables(results, out / (("text-" if text else "") + ("quick" if quick else "full"))))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path, typer.Option(help="The file to write, such as model.onnx; FILE.json goes beside it.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (needs transferlab[export]) or torchscript.")] = "onnx",
) -> None:
    """A run as one file for another runtime (out: predict's probabilities; FILE.json: its input, its classes)."""
    from transferlab import api
    from transferlab.report.tables import export_line

    console.print(export_line(api.export(run, out, fmt), out), markup=False)


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
    encoding_errors: option("encoding_errors") = FIT.encoding_errors,
) -> None:
    """Develop your own text source: train word2vec (gensim) on an unlabelled corpus."""
    from transferlab import api
    from transferlab.report.tables import vectors_table

    info = api.pretrain_vectors(corpus, out=out, dim=dim, window=window, min_count=min_count, epochs=epochs,
                                skipgram=skipgram, seed=seed, workers=workers, encoding_errors=encoding_errors)
    show((vectors_table(info, dim, out), []))


def main() -> None:
    allocator.use_fast()
    app()


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted one: the same arguments with --resume (and without
    --overwrite); the demo resumes by itself."""
    args = [a for a in argv if a != "--overwrite"]
    if args[:1] != ["demo"] and "--resume" not in args:
        args.append("--resume")
    return "transferlab " + shlex.join(args)
