"""The tables and sentences the terminal shows, built from the same results the HTML reports read (rich
renderables; the CLI only prints them). Each function returns ``(to stdout, to stderr)`` lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from transferlab.config import METRIC_NAMES
from transferlab.evaluate.curves import MIN_VERDICT_SEEDS
from transferlab.report.html import (
    MEASURE_LABELS,
    SCORE_LABELS,
    SELFFER_CAVEAT,
    SHORT_SCORE_LABELS,
    VS_SCRATCH_LEGEND,
    YES_NO,
    fmt_interval,
    fmt_number,
    measure_labels,
    metric_name,
    scratch_is_base,
    selffer_caveat,
    vs_mark,
)

Out = tuple[list[Any], list[Any]]
COLOURS = {"yes": "green", "no": "red", "inconclusive": "yellow", "too few seeds": "magenta"}


def compare_tables(results: dict[str, Any], out: Path) -> Out:
    """Per size: the converged accuracy of every arm (the logistic regression included) with its verdict against
    the regression, then the benefits over scratch; the notes (did not learn, not converged, does not beat the
    regression), the asymptote across sizes, negative transfer and the report's path."""
    stdout: list[Any] = []
    stderr: list[Any] = []
    method = results.get("interval_method") or "student t"
    seeds, name = results["config"]["seeds"], METRIC_NAMES[results.get("metric", "accuracy")]
    for size in results["config"]["per_class"]:
        versus = results.get("versus_logreg", {}).get(size, {})
        acc = Table(title=f"test {name} at convergence, {size} labelled examples per class (mean [95% interval] "
                    f"over {seeds} seeds)")
        for col in ("arm", f"test {name}", "converged", "vs logreg (difference)"):
            acc.add_column(col, overflow="fold")
        for arm, per_size in results["data_efficiency"].items():
            v = per_size.get(size)
            if v is None:
                continue
            learned = "" if v.get("learned", True) else " (did not learn)"
            conv = "" if v.get("converged") is None else f"{v['converged']}/{v['seeds']}"
            vs = versus.get(arm)
            against = "" if vs is None else Text(f"{fmt_interval(vs)} {vs['verdict']}", style=COLOURS[vs["verdict"]])
            acc.add_row(arm, fmt_interval(v) + learned, conv, against)
        stdout.append(acc)
        if not results["benefits_by_size"][size]:  # scratch beside the regression only (advise, no source)
            continue
        table = Table(title=f"did transfer help? {size} labelled examples per class, vs {results['baseline']} "
                      f"(mean [95% {method} interval] over {seeds} seeds)")
        table.add_column("arm", overflow="fold")
        for m in measure_labels(results).values():
            table.add_column(m, overflow="fold")
        for arm, measures in results["benefits_by_size"][size].items():
            table.add_row(arm, *[Text(f"{fmt_interval(measures[m])} {measures[m]['verdict']}",
                                      style=COLOURS[measures[m]["verdict"]]) for m in MEASURE_LABELS])
        stdout.append(table)
    if seeds < MIN_VERDICT_SEEDS:
        stderr.append(Text(f"{seeds} seeds give no verdict: rerun with --seeds 3 or more", style="magenta"))
    for note in results.get("notes", []):
        stderr.append(Text(f"note: {note}", style="yellow"))
    if len(results["config"]["per_class"]) > 1:
        for arm, v in results.get("asymptote_by_size", {}).items():
            stdout.append(f"{arm}, asymptote benefit across sizes: {v['summary']}")
    for item in results["negative_transfer"]:
        stdout.append(Text(f"negative transfer: {item['arm']} on {item['measure']} at {item['per_class']} per class",
                           style="red"))
    stdout.append(f"report: {out / 'report.html'}")
    return stdout, stderr


def fit_lines(result: Any, card: dict[str, Any], out: Path) -> list[str]:
    """What ``fit`` says when it ends: the vectors' coverage (word vectors), how long it trained and whether it
    converged, and its test accuracy next to the naive model's."""
    lines = []
    coverage = card.get("coverage")
    if coverage:
        lines.append(f"vectors cover {coverage['types']:.1%} of the target's word types and {coverage['tokens']:.1%} "
                     "of its tokens")
    if result.training:
        lines.append(describe(result.training))
    m = card["metrics"]
    learned = "" if m.get("learned", True) else " (did not learn: within two standard errors of it)"
    others = "".join(f", {METRIC_NAMES[k]} {m[f'test_{k}']:.4f}" for k in METRIC_NAMES if f"test_{k}" in m
                     and k != "accuracy")
    naive = f"{result.majority_baseline:.4f}" + ("" if result.metric == "accuracy" else
                                                 f", {METRIC_NAMES[result.metric]} {result.naive_score:.4f}")
    lines.append(f"test accuracy {result.test_accuracy:.4f}{others} (always guessing the commonest training class: "
                 f"{naive}){learned} · {result.wall_seconds:.1f} s training · run directory {out}")
    return lines


def demo_table(results: dict[str, Any], arms: tuple[str, ...]) -> Table:
    """Each arm's mean test accuracy and training time at the largest size."""
    table = Table(title="final test accuracy per arm (mean over seeds, largest size)")
    for col in ("arm", "test accuracy", "training wall s (mean)"):
        table.add_column(col)
    largest = results["largest_size"]
    for arm in arms:
        cells = [c for c in results["cells"] if c["arm"] == arm and c["per_class"] == largest]
        if cells:
            acc = sum(c["test_accuracy"] for c in cells) / len(cells)
            wall = sum(c["train_wall_seconds"] for c in cells) / len(cells)
            table.add_row(arm, f"{acc:.3f}", f"{wall:.1f}")
        elif arm in results.get("logreg", {}).get(largest, {}) or arm in results["data_efficiency"]:
            v = results["logreg"][largest]  # the logistic regression: one fit, no cells
            table.add_row(arm, f"{v['test_accuracy']:.3f}", f"{v['seconds']:.1f}")
    return table


def rank_tables(results: dict[str, Any], data: str, out: Path) -> Out:
    """The scores and ranks of every candidate, with --validate how far each score can be trusted here."""
    wanted = results["config"]["scores"]
    validate = "validation" in results
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
    stdout: list[Any] = [table]
    if validate:
        vt = Table(title=f"how far to trust each score here: ranking took {results['speedup']:.1f}x less time than "
                   "fine-tuning every candidate")
        for col in ("score", "Kendall tau", "weighted tau", "top pick is the best?"):
            vt.add_column(col)
        for s, v in results["validation"].items():
            vt.add_row(SCORE_LABELS[s], fmt_number(v["kendall_tau"]), fmt_number(v["weighted_tau"]),
                       YES_NO[v["top_is_best"]])
        stdout.append(vt)
    stderr = [f"skipped {spec}: {reason}" for spec, reason in results["skipped"].items()]
    stdout.append(f"report: {out / 'report.html'}")
    return stdout, stderr


def layers_tables(results: dict[str, Any], out: Path) -> Out:
    """Target test accuracy by blocks reused, per series; base B and the scratch reference."""
    ns = sorted(next(iter(results["series"].values())), key=int)
    table = Table(title=f"target test {metric_name(results)} by blocks reused (mean [95% interval])")
    table.add_column("series")
    for n, name in zip(ns, results["blocks"], strict=True):
        table.add_column(f"n={n} ({name})")
    for name, per_n in results["series"].items():
        table.add_row(name, *[fmt_interval(per_n[n]) + vs_mark(per_n[n]) for n in ns])
    stdout: list[Any] = [table, VS_SCRATCH_LEGEND, *layers_references(results), f"report: {out / 'report.html'}"]
    seeds = results["config"]["seeds"]
    stderr = ([Text(f"{seeds} seeds mark no cell: rerun with --seeds {MIN_VERDICT_SEEDS} or more", style="magenta")]
              if seeds < MIN_VERDICT_SEEDS else [])
    return stdout, stderr


def layers_references(results: dict[str, Any]) -> list[str]:
    """Base B (trained on every target row) and the references trained on the cells' rows, in words."""
    lines = []
    if results.get("base"):
        lines.append(f"base B (trained on {results.get('base_trained_on') or 'the target'}): "
                     f"{fmt_interval(results['base'])}")
    ref = results.get("references")
    if ref:
        rows = f"{ref['rows']} training rows" + (f", {ref['per_class']} per class" if ref.get("per_class") else "")
        scratch = "base B" if scratch_is_base(results) else fmt_interval(ref["scratch"])
        lines.append(f"on the cells' {rows}: the architecture from scratch {scratch}, a "
                     f"logistic regression on the raw inputs {fmt_number(ref['logreg'])}")
    if selffer_caveat(results):
        lines.append(SELFFER_CAVEAT)
    return lines


def pretrain_table(check: dict[str, Any], arch: str, data: str, out: Path) -> Out:
    """The source check: the model against the majority-class baseline and chance."""
    table = Table(title=f"source check: {arch} on {data}")
    for col in ("model test accuracy", "majority-class baseline", "chance", "clearly better?"):
        table.add_column(col)
    better = check["clearly_better_than_naive"]
    table.add_row(f"{check['test_accuracy']:.4f}", f"{check['majority_baseline']:.4f}", f"{check['chance']:.4f}",
                  Text("yes" if better else "NO", style="green" if better else "bold red"))
    stderr = [] if better else [Text("warning: this source is not clearly better than a naive model and will "
                                     "transfer little; train longer or on more data before reusing it",
                                     style="bold red")]
    return [table, f"use it as a source: --source {out}"], stderr


def sources_table(rows: list[dict[str, str]]) -> Table:
    table = Table(title="sources (each also as scratch:<source>: the same architecture, random weights)")
    for col in ("source", "data", "weights", "offline"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["source"], row["modality"], row["weights"], row["offline"])
    return table


def blocks_table(name: str, blocks: list[tuple[str, int]]) -> Table:
    table = Table(title=f"blocks of {name} (--reuse N keeps the first N)")
    table.add_column("n", justify="right")
    table.add_column("block")
    table.add_column("parameters", justify="right")
    for i, (block, count) in enumerate(blocks, 1):
        table.add_row(str(i) if "source head" not in block else "", block, f"{count:,}")
    return table


def vectors_table(info: dict[str, Any], dim: int, out: Path) -> list[Any]:
    table = Table(title="sanity check: nearest neighbours of frequent words")
    table.add_column("word")
    table.add_column("neighbours")
    for word, near in list(info["neighbours"].items())[:6]:
        table.add_row(word, ", ".join(near))
    return [f"{info['vocabulary']:,} words x {dim} from {info['tokens']:,} tokens in {info['train_seconds']} s", table,
            f"use it as a source: --source {out}"]


def describe(training: dict[str, Any]) -> str:
    """One line for the terminal: "trained to convergence: best validation at step N of M"."""
    if training.get("converged"):
        return (f"trained to convergence: best validation at step {training['best_step']} of {training['steps']} "
                f"(epoch {training['best_epoch']} of {training['epochs']})")
    if not training.get("early_stopping", True):
        return f"trained for a fixed budget of {training['steps']} steps ({training['epochs']} epochs): no " \
               "validation split to tell convergence"
    return (f"NOT converged: stopped at the cap ({training['steps']} steps, {training['epochs']} epochs) with the "
            f"validation loss still improving (best at step {training['best_step']}), so this result is a lower "
            "bound: raise --epochs/--max-steps or leave them unset")


def skipped_path(output: Path | None, skipped: Path | None) -> Path | None:
    """Where ``predict`` lists what it skipped: ``--skipped``, else beside ``--output`` (X.csv -> X.skipped.csv)."""
    listing = skipped or (None if output is None else output.with_name(output.stem + ".skipped.csv"))
    if output is not None and listing == output:
        listing = output.with_name(output.name + ".skipped.csv")
    return listing


def skipped_note(unread: list[tuple[str, str]], listing: Path | None) -> str:
    """``predict``'s sentence on the inputs it skipped: the first five and where the list is."""
    shown = "; ".join(f"{path} ({reason})" for path, reason in unread[:5])
    more = f"; and {len(unread) - 5} more" if len(unread) > 5 else ""
    where = f"listed in {listing}" if listing is not None else "--skipped FILE lists them"
    return f"skipped {len(unread)} inputs that cannot be used: {shown}{more} ({where})"


def calibration_note(card: dict[str, Any]) -> str:
    """What ``predict``'s probabilities are: calibrated by the run's temperature, or not (and why)."""
    cal = card.get("calibration", {})
    if cal.get("fitted_on"):
        return f"probabilities calibrated by temperature scaling on the run's validation split (T = " \
               f"{cal['temperature']:.3g})"
    return "probabilities not calibrated (" + ("no validation split to fit a temperature on)" if card else
                                               "the source's own classifier)")


def predict_table(rows: list[tuple[str, str, float]], top: int, column: str) -> tuple[tuple[str, ...], Any]:
    """``predict``'s CSV header and rows: with ``top`` > 1 a rank column (``top`` rows per input, in order)."""
    header = (column, *(("rank",) if top > 1 else ()), "label", "probability")
    return header, ((p, *((i % top + 1,) if top > 1 else ()), label, f"{prob:.6f}")
                    for i, (p, label, prob) in enumerate(rows))


def export_line(sidecar: dict[str, Any], out: Path) -> str:
    """What ``export`` wrote and how it was checked."""
    check = sidecar["check"]
    checked = (f"its probabilities within {check['max_abs_difference']:.1g} of the run's under {check['runtime']}"
               if check.get("runtime") else "not checked (onnxruntime is not installed)")
    shape = " x ".join(map(str, sidecar["input"]["shape"]))
    return (f"wrote {out} ({sidecar['format']}; input {sidecar['input']['dtype']} {shape}, output the probabilities "
            f"of {len(sidecar['output']['classes'])} classes) and {out}.json (its preprocessing); {checked}")
