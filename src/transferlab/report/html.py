"""Self-contained HTML reports: plots embedded as base64 PNG, no network, no scripts."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.config import METRIC_NAMES
from transferlab.evaluate.curves import MIN_VERDICT_SEEDS, interval
from transferlab.files import atomic_write

MEASURE_LABELS = {
    "jumpstart": "higher start: jumpstart ({metric})",
    "early_slope": "higher slope: early rate ({metric} per 1k examples)",
    "time_to_threshold": "higher slope: examples saved to threshold",
    "asymptote": "higher asymptote ({metric})",
    "transfer_ratio": "transfer ratio (area / scratch's)",
}


def measure_labels(results: dict[str, Any]) -> dict[str, str]:
    """The benefit measures' column labels, in the comparison's metric."""
    name = METRIC_NAMES[results.get("metric", "accuracy")]
    return {k: v.format(metric=name) for k, v in MEASURE_LABELS.items()}


def metric_name(results: dict[str, Any]) -> str:
    """The words for what ``results`` (or a ``config``) judged by: accuracy, balanced accuracy or macro-F1."""
    return METRIC_NAMES[results.get("metric", "accuracy")]


def skill_key(results: dict[str, Any]) -> str:
    """The key of a learning curve's skill in ``results["curves"]``: ``test_<metric>``."""
    return f"test_{results.get('metric', 'accuracy')}"
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.yes{background:#d9f2d9}.no{background:#f7d4d4}
.inconclusive{background:#f3f3f3}.too{background:#fff8e0}img{max-width:100%}pre{background:#f8f8f8;padding:1em;overflow:auto}"""


def _png(fig: Any, path: Any = None) -> str:
    """The figure as an embedded <img>; also saved to ``path`` when given."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    if path is not None:
        atomic_write(path, buf.getvalue())
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _band(runs: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% band per evaluation point over seeds (:func:`interval`, within [0, 1]). Runs trained to
    convergence end at different points: a shorter run is held at its last value (it had converged there)."""
    n = max(len(r) for r in runs)
    padded = [list(r) + [r[-1]] * (n - len(r)) for r in runs]
    ivs = [interval([r[i] for r in padded], bounds=(0.0, 1.0)) for i in range(n)]
    return tuple(np.array([getattr(iv, k) for iv in ivs]) for k in ("mean", "ci_low", "ci_high"))


def curves_figure(results: dict[str, Any], size: str) -> Any:
    """Learning curves per arm at one labelled size, with bands and the start, slope and asymptote marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (arm, per_seed) in enumerate(results["curves"][size].items()):
        color = f"C{i}"
        runs = list(per_seed.values())
        longest = max(runs, key=lambda r: len(r["examples"]))
        x = np.array(longest["examples"])
        mean, lo, hi = _band([r[skill_key(results)] for r in runs])
        ax.plot(x, mean, color=color, label=arm, marker=".")
        ax.fill_between(x, lo, hi, color=color, alpha=0.2)
        ends = np.array(longest["epoch_end"], dtype=bool)
        ax.scatter([x[1]], [mean[1]], color=color, s=70, marker="^", zorder=3)  # start
        first_end = int(np.argmax(ends)) if ends.any() else len(x) - 1
        ax.plot([x[0], x[first_end]], [mean[0], mean[first_end]], color=color, ls=":", lw=1)  # early slope
        finals = [r["final"] for r in runs if r.get("final") is not None]
        tail = mean[ends][-3:] if ends.any() else mean[-3:]
        ax.axhline(float(np.mean(finals)) if finals else float(np.mean(tail)), color=color, ls="--", lw=0.8)
    logreg = results["data_efficiency"].get("logreg", {}).get(size)
    if logreg is not None:
        ax.axhline(logreg["mean"], color="black", ls="-.", lw=1, label="logreg (raw inputs)")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel(f"test {METRIC_NAMES[results.get('metric', 'accuracy')]}")
    ax.set_xscale("symlog", linthresh=max(1.0, float(x[1]) if len(x) > 1 else 1.0))
    ax.set_title(f"learning curves, {size} labelled examples per class (▲ start, ··· early slope, -- converged)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def efficiency_figure(results: dict[str, Any]) -> Any:
    """Asymptotic test accuracy against labelled examples per class, per arm, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sizes = results["config"]["per_class"]
    for i, (arm, per_size) in enumerate(results["data_efficiency"].items()):
        m = np.array([per_size[s]["mean"] for s in sizes])
        if per_size[sizes[0]].get("ci_low") is None:  # the logistic regression: one fit, no seeds
            ax.plot(range(len(sizes)), m, label=arm, marker="D", ls="-.", color="black")
            continue
        lo = np.array([per_size[s]["ci_low"] for s in sizes])
        hi = np.array([per_size[s]["ci_high"] for s in sizes])
        ax.errorbar(range(len(sizes)), m, yerr=[m - lo, hi - m], label=arm, marker="o", capsize=4, color=f"C{i}")
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("labelled training examples per class")
    ax.set_ylabel(f"test {METRIC_NAMES[results.get('metric', 'accuracy')]} at convergence")
    ax.set_title("data efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def fmt_interval(b: dict[str, Any]) -> str:
    """``mean [low, high]``; counts of examples as whole numbers, other measures to 3 decimals."""
    if b["mean"] is None:
        return "n/a"
    whole = b.get("unit") == "examples"

    def f(x: float | None) -> str:
        return "?" if x is None else f"{x:,.0f}" if whole else f"{x:.3f}"

    if b.get("ci_low") is None and b.get("ci_high") is None:  # one number: nothing varied
        return f(b["mean"])
    return f"{f(b['mean'])} [{f(b['ci_low'])}, {f(b['ci_high'])}]"


def shown_config(results: dict[str, Any]) -> dict[str, Any]:
    """The configuration as it ran: defaults resolved (the learning rates), only the options of the data's
    modality, and the test-set size."""
    cfg = json.loads(json.dumps(results["config"]))
    other = set(results.get("other_modalities_options", ()))
    base = {k: v for k, v in cfg.pop("base", {}).items() if k not in other}
    base.update({k: v for k, v in results.get("resolved", {}).items() if base.get(k) is None})
    return {**cfg, "base": base, "test_size": results.get("test_size")}


def arm_parameters(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each arm's trained and total parameter counts (from its first cell that recorded them)."""
    found: dict[str, dict[str, int]] = {}
    for cell in results.get("cells", []):
        if cell.get("parameters") and cell["arm"] not in found:
            found[cell["arm"]] = cell["parameters"]
    return found


def accuracy_table(results: dict[str, Any]) -> str:
    """Each arm's test accuracy at convergence per labelled size (mean [interval]); ↗ where some seed did not
    converge (a lower bound), ∅ where the arm did not learn; against the logistic regression; and the parameters
    it trained of its total."""
    sizes = results["config"]["per_class"]
    params = arm_parameters(results)
    versus = results.get("versus_logreg", {})
    rows = ["<table><tr><th class=l>arm</th>" + "".join(f"<th>{html.escape(s)} per class</th>" for s in sizes)
            + "<th>parameters trained / total</th></tr>"]
    for arm, per_size in results["data_efficiency"].items():
        cells = ""
        for s in sizes:
            v, vs = per_size[s], versus.get(s, {}).get(arm)
            mark = ("" if v.get("all_converged", True) is not False else " ↗") + \
                ("" if v.get("learned", True) else " ∅")
            against = "" if vs is None else \
                f"<br><small class={vs['verdict'].split()[0]}>vs logreg {fmt_interval(vs)} {vs['verdict']}</small>"
            cells += f"<td>{fmt_interval(v)}{mark}{against}</td>"
        p = params.get(arm)
        count = f"{p['trained']:,} / {p['total']:,}" if p else "0 (scikit-learn)" if arm == "logreg" else "?"
        rows.append(f"<tr><td class=l>{html.escape(arm)}</td>{cells}<td>{count}</td></tr>")
    return "\n".join(rows) + "</table>"


def calibration_table(results: dict[str, Any]) -> str:
    """Each arm's test expected calibration error before and after temperature scaling (fitted on the validation
    split), mean over seeds per size; empty when no cell recorded it."""
    rows = {}
    for c in results["cells"]:
        cal = c.get("calibration") or {}
        if cal.get("test_ece") is not None and cal.get("test_ece_calibrated") is not None:
            rows.setdefault((c["arm"], c["per_class"]), []).append((cal["test_ece"], cal["test_ece_calibrated"],
                                                                    cal["temperature"]))
    if not rows:
        return ""
    body = "".join(f"<tr><td class=l>{html.escape(arm)}</td><td>{html.escape(size)}</td>"
                   + "".join(f"<td>{np.mean([v[i] for v in values]):.3f}</td>" for i in (0, 1, 2)) + "</tr>"
                   for (arm, size), values in rows.items())
    return ("<h2>Calibration</h2><p>Expected calibration error on the test split (15 confidence bins; Guo et al. "
            "2017) before and after dividing the logits by the temperature fitted on the validation split, mean "
            "over seeds. <code>predict</code> gives the calibrated probabilities.</p><table><tr><th class=l>arm"
            "</th><th>per class</th><th>ECE</th><th>ECE calibrated</th><th>temperature</th></tr>" + body
            + "</table>")


def benefit_table(per_arm: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    rows = ["<table><tr><th class=l>arm</th>" + "".join(f"<th>{html.escape(labels[m])}</th>"
                                                         for m in MEASURE_LABELS) + "</tr>"]
    for arm, measures in per_arm.items():
        cells = "".join(
            f"<td class={measures[m]['verdict'].split()[0]}>{fmt_interval(measures[m])}<br>"
            f"<b>{measures[m]['verdict']}</b></td>"
            for m in MEASURE_LABELS
        )
        rows.append(f"<tr><td class=l>{html.escape(arm)}</td>{cells}</tr>")
    return "\n".join(rows) + "</table>"


def write_compare_report(path: Any, results: dict[str, Any]) -> None:
    """One self-contained ``report.html`` for a comparison; its plots are also saved as PNG beside it."""
    cfg = results["config"]
    method = results.get("interval_method") or "student t"
    name = METRIC_NAMES[results.get("metric", "accuracy")]
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>transferlab compare</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>Did transfer help? {html.escape(cfg['source'])} → {html.escape(cfg['data'])}</h1>",
        f"<p>Arms {', '.join(map(html.escape, cfg['arms']))}; {cfg['seeds']} seeds; benefits against "
        f"<b>{html.escape(results['baseline'])}</b>, paired by seed, with 95% {html.escape(method)} intervals over "
        "seeds (Student's t below 10 seeds, where a bootstrap is too narrow; no verdict below 3 seeds). Skill is "
        f"test {name}; areas are over examples seen with its own zero; the threshold is "
        f"{cfg['threshold']:.0%} of scratch's asymptote. How long each cell trained: "
        f"{html.escape(results.get('training_rule', 'a fixed number of epochs'))}. Beside the arms, logreg: a "
        "logistic regression on the raw inputs, its regularisation chosen by cross-validation on the training "
        "split.</p>",
        f"<h2>Test {name} per arm at convergence (the asymptote)</h2>", accuracy_table(results),
        "<p>↗: some seed stopped at its cap with the validation loss still improving (a lower bound). ∅: did not "
        f"learn (within two standard errors of always guessing the commonest class). vs logreg: the arm's {name} "
        "minus the regression's, paired by seed.</p>",
        calibration_table(results),
    ]
    notes = results.get("notes", [])
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if results["negative_transfer"]:
        items = "".join(f"<li>{html.escape(n['arm'])}: {n['measure']} at {n['per_class']} per class</li>"
                        for n in results["negative_transfer"])
        parts.append(f"<h3>Negative transfer</h3><ul>{items}</ul>")
    if len(cfg["per_class"]) > 1:
        paying = "".join(f"<li>{html.escape(arm)}, asymptote benefit across sizes: {html.escape(v['summary'])}</li>"
                         for arm, v in results.get("asymptote_by_size", {}).items())
        figure = _png(efficiency_figure(results), path.with_name("data_efficiency.png"))
        parts += ["<h2>Data efficiency</h2>", figure, f"<ul>{paying}</ul>"]
    for size in cfg["per_class"]:
        parts += [f"<h2>Benefits at {html.escape(size)} labelled examples per class</h2>",
                  benefit_table(results["benefits_by_size"][size], measure_labels(results)),
                  _png(curves_figure(results, size), path.with_name(f"curves_{size}.png"))]
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(shown_config(results), indent=1))}</pre>",
              f"<pre>{html.escape(json.dumps(results['versions'], indent=1))}</pre>", "</body></html>"]
    atomic_write(path, "\n".join(parts))


def layers_figure(results: dict[str, Any]) -> Any:
    """Target accuracy against the number of reused blocks n, per series, with bands and the base B line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    styles = {"AnB": ("C3", "o", "-"), "AnB+": ("C3", "s", "--"), "BnB": ("C0", "o", "-"), "BnB+": ("C0", "s", "--")}
    for name, per_n in results["series"].items():
        color, marker, ls = styles[name]
        ns = sorted(per_n, key=int)
        m = np.array([per_n[n]["mean"] for n in ns])
        ax.plot([int(n) for n in ns], m, color=color, marker=marker, ls=ls, label=name)
        ax.fill_between([int(n) for n in ns], [per_n[n]["ci_low"] for n in ns], [per_n[n]["ci_high"] for n in ns],
                        color=color, alpha=0.12)
    ref, same = results.get("references") or {}, scratch_is_base(results)
    if results.get("base"):
        b = results["base"]
        ax.axhline(b["mean"], color="black", lw=1, label="base B = scratch" if same else "base B (every target row)")
        ax.axhspan(b["ci_low"], b["ci_high"], color="black", alpha=0.08)
    if ref.get("scratch") and not same:
        ax.axhline(ref["scratch"]["mean"], color="C2", lw=1, ls=":", label="scratch (cells' rows)")
    if ref.get("logreg") is not None:
        ax.axhline(ref["logreg"], color="C4", lw=1, ls="-.", label="logreg (cells' rows)")
    ax.set_xticks(range(1, len(results["blocks"]) + 1),
                  [f"{i}\n{name}" for i, name in enumerate(results["blocks"], 1)])
    ax.set_xlabel("blocks reused from the source (n)")
    ax.set_ylabel(f"target test {metric_name(results)}")
    ax.set_title("layer transfer (Yosinski et al. 2014): frozen (AnB, BnB) and fine-tuned (+)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside the curves, not over them
    return fig


def scratch_is_base(results: dict[str, Any]) -> bool:
    """Whether a sweep's scratch reference is base B itself (the cells trained on every target row)."""
    return bool(results.get("base")) and (results.get("references") or {}).get("scratch") == results["base"]


def vs_mark(cell: dict[str, Any]) -> str:
    """``" ▲"`` / ``" ▼"`` after a layer cell whose paired difference from scratch is decided; nothing otherwise
    (undecided, or results written before ``vs_scratch``)."""
    return VS_SCRATCH.get((cell.get("vs_scratch") or {}).get("verdict"), "")


def selffer_caveat(results: dict[str, Any]) -> bool:
    """Whether base B saw more target rows than the cells (``--per-class`` with a source task)."""
    return bool(results.get("base") and (results.get("references") or {}).get("per_class"))


def write_layers_report(path: Any, results: dict[str, Any]) -> None:
    """One self-contained ``report.html`` for a layer sweep; the plot is also saved beside it."""
    cfg = results["config"]
    ns = sorted(next(iter(results["series"].values())), key=int)
    head = "".join(f"<th>n={n}</th>" for n in ns)
    rows = [f"<table><tr><th class=l>series</th>{head}</tr>"]
    for name, per_n in results["series"].items():
        rows.append(f"<tr><td class=l>{name}</td>" + "".join(f"<td>{fmt_interval(per_n[n])}</td>" for n in ns)
                    + "</tr>")
    if results.get("base"):
        rows.append(f"<tr><td class=l>base B</td><td colspan={len(ns)}>{fmt_interval(results['base'])}</td></tr>")
    diffs = [f"<table><tr><th class=l>minus scratch, paired by seed</th>{head}</tr>"]
    for name, per_n in results["series"].items():
        cells = [per_n[n] for n in ns]  # vs_scratch is absent from results written before it
        diffs.append(f"<tr><td class=l>{name}</td>" + "".join(
            f"<td>{fmt_interval(c['vs_scratch'])}{vs_mark(c)}</td>" if c.get("vs_scratch") else "<td>n/a</td>"
            for c in cells) + "</tr>")
    ref = results.get("references")
    if ref:
        rows.append(f"<tr><td class=l>scratch (cells' rows)</td><td colspan={len(ns)}>"
                    f"{fmt_interval(ref['scratch'])}</td></tr>")
        rows.append(f"<tr><td class=l>logreg (cells' rows)</td><td colspan={len(ns)}>{fmt_number(ref['logreg'])}"
                    "</td></tr>")
    figure = _png(layers_figure(results), path.with_name("layers.png"))
    method = next(iter(next(iter(results["series"].values())).values())).get("interval_method", "student t")
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>transferlab layers</title><style>{_CSS}</style>",
        "</head><body><h1>How much of the source to reuse?</h1>",
        f"<p>Target {html.escape(cfg['target_data'])}; source "
        f"{html.escape(str(cfg['source'] or cfg['source_data']))}; {cfg['seeds']} seeds; "
        f"test accuracy, mean [95% {html.escape(method)} interval]; every cell trained to convergence. Base B "
        f"trained on {html.escape(str(results.get('base_trained_on') or 'the target'))}; the cells and the two "
        "references (the architecture from scratch, a logistic regression on the raw inputs) on "
        f"{(results.get('references') or {}).get('rows', '?')} training rows.</p>",
        figure, "\n".join(rows) + "</table>",
        "<h2>Each cell against the architecture from scratch</h2>", "\n".join(diffs) + "</table>",
        f"<p>{SELFFER_CAVEAT}.</p>" if selffer_caveat(results) else "",
        f"<p>{VS_SCRATCH_LEGEND}; no mark: no difference shown"
        + (f" ({cfg['seeds']} seeds give no verdict).</p>" if cfg["seeds"] < MIN_VERDICT_SEEDS else ".</p>"),
        "<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(cfg, indent=1))}</pre>", "</body></html>",
    ]
    atomic_write(path, "\n".join(parts))


SHORT_SCORE_LABELS = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score", "knn": "kNN",
                      "linear": "linear"}
SCORE_LABELS = {
    "logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score", "knn": "kNN accuracy (CV)",
    "linear": "linear probe accuracy (CV)",
}


YES_NO = {True: "yes", False: "no", None: "n/a"}  # a yes/no question that may not apply (rank's top pick)
VS_SCRATCH = {"yes": " ▲", "no": " ▼"}  # a layer cell's paired difference from scratch, when its interval decides
SELFFER_CAVEAT = ("BnB and BnB+ start from base B, which learned from every target row, the cells from fewer: their "
                  "lead over AnB may be partly those rows, so read each series against scratch (the marks)")
VS_SCRATCH_LEGEND = ("▲ / ▼: above / below the architecture from scratch on the cells' rows, paired by seed (the 95% "
                     "interval of the difference excludes 0)")


def fmt_number(x: float | None, digits: int = 3) -> str:
    """A number, or n/a where it is undefined (None after JSON cleaning; e.g. tau when every accuracy ties)."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def rank_figure(results: dict[str, Any]) -> Any:
    """One panel per score: the score of each candidate against its fine-tuned accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [s for s in results["config"]["scores"] if results["validation"][s]["sources"] >= 2]
    cols = min(3, max(1, len(scores)))
    rows = -(-len(scores) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    acc = results["finetune_accuracy"]
    for ax, s in zip(axes.flat, scores, strict=False):
        have = [spec for spec in results["sources"] if results["scores"][spec].get(s) is not None]
        x = [results["scores"][spec][s] for spec in have]
        y = [acc[spec] for spec in have]
        ax.scatter(x, y)
        for spec, xi, yi in zip(have, x, y, strict=True):
            ax.annotate(spec, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        v = results["validation"][s]
        ax.set_title(f"{SCORE_LABELS[s]}: tau {fmt_number(v['kendall_tau'], 2)}, weighted "
                     f"{fmt_number(v['weighted_tau'], 2)}", fontsize=9)
        ax.set_xlabel(s)
        ax.set_ylabel(f"fine-tuned test {metric_name(results)}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scores):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def write_rank_report(path: Any, results: dict[str, Any]) -> None:
    """One self-contained ``report.html`` for a ranking: a ranked table per score, timing, and validation."""
    cfg = results["config"]
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>transferlab rank</title><style>{_CSS}</style>",
        "</head><body><h1>Which source? Transferability ranking</h1>",
        f"<p>Target {esc(cfg['data'])}: {results['train_size']} training examples, {len(results['classes'])} "
        "classes. Higher is better for every score.</p>",
    ]
    for s in cfg["scores"]:
        rows = "".join(f"<tr><td>{results['ranks'][s][spec]}</td><td class=l>{esc(spec)}</td>"
                       f"<td>{results['scores'][spec][s]:.4f}</td></tr>" for spec in results["ranking"][s])
        missing = [spec for spec in results["sources"] if spec not in results["ranking"][s]]
        note = f"<p>Not applicable (no source head): {esc(', '.join(missing))}</p>" if missing else ""
        parts.append(f"<h2>{SCORE_LABELS[s]}</h2><table><tr><th>rank</th><th class=l>source</th><th>score</th></tr>"
                     f"{rows}</table>{note}")
    timing = "".join(
        f"<tr><td class=l>{esc(spec)}</td><td>{t['features']:.1f}</td><td>{t['scores']:.1f}</td>"
        + (f"<td>{results['finetune_seconds'][spec]:.1f}</td>" if "finetune_seconds" in results else "") + "</tr>"
        for spec, t in results["seconds"].items())
    extra = "<th>one fine-tuning run, s</th>" if "finetune_seconds" in results else ""
    parts.append("<h2>Time per source</h2><table><tr><th class=l>source</th><th>features, s</th><th>scores, s</th>"
                 f"{extra}</tr>{timing}</table>")
    if "validation" in results:
        rows = "".join(f"<tr><td class=l>{SCORE_LABELS[s]}</td><td>{fmt_number(v['kendall_tau'])}</td>"
                       f"<td>{fmt_number(v['weighted_tau'])}</td><td>{YES_NO[v['top_is_best']]}</td></tr>"
                       for s, v in results["validation"].items())
        accs = "".join(f"<tr><td class=l>{esc(spec)}</td><td>{a:.4f}</td></tr>"
                       for spec, a in sorted(results["finetune_accuracy"].items(), key=lambda kv: -kv[1]))
        parts += [
            "<h2>How far to trust the ranking on this data (--validate)</h2>",
            f"<p>Every candidate fine-tuned with the same budget ({cfg['seeds']} seeds; cells under "
            f"<code>{esc(results['validate_dir'])}/</code>). Ranking all candidates took "
            f"{results['speedup']:.1f}x less time than fine-tuning each once.</p>",
            f"<table><tr><th class=l>source</th><th>fine-tuned test {metric_name(results)}</th></tr>{accs}</table>",
            "<table><tr><th class=l>score</th><th>Kendall tau</th><th>weighted tau</th><th>top pick is the best?</th>"
            f"</tr>{rows}</table>",
            _png(rank_figure(results), path.with_name("rank.png")),
        ]
    parts += ["<h2>Configuration</h2>", f"<pre>{esc(json.dumps(cfg, indent=1))}</pre>", "</body></html>"]
    atomic_write(path, "\n".join(parts))


def pareto_figure(advice: dict[str, Any]) -> Any:
    """Every finished trial's validation accuracy against its training seconds, the Pareto front joined (the
    trials no other beats on both), the regression as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in advice["trials"] if t["value"] is not None and t["seconds"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    strategies = sorted({t["strategy"] for t in done})
    for i, s in enumerate(strategies):
        pts = [t for t in done if t["strategy"] == s]
        ax.scatter([t["seconds"] for t in pts], [t["value"] for t in pts], label=s, color=f"C{i}")
    front, best = [], -1.0
    for t in sorted(done, key=lambda t: (t["seconds"], -t["value"])):
        if t["value"] > best:
            front.append(t)
            best = t["value"]
    if front:
        ax.plot([t["seconds"] for t in front], [t["value"] for t in front], color="black", lw=1, label="Pareto front")
    ax.axhline(advice["logreg_validation"], color="gray", ls="-.", lw=1, label="logreg")
    ax.set_xscale("log")
    ax.set_xlabel("trial wall seconds (log)")
    ax.set_ylabel(f"validation {metric_name(advice['config_asked'])}")
    ax.set_title("what was tried: accuracy against cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def advise_lines(advice: dict[str, Any], out: Path) -> list[str]:
    """The decision in three lines: what to use and what it scored against scratch and the regression; the
    cheaper alternative; what was searched in how much of the budget."""
    pick, ev = advice["recommendation"], advice["evidence"]
    eff = ev["data_efficiency"]
    logreg = ev["logreg"][advice["size"]]["test_score"]

    def acc(arm: str | None) -> str:
        v = eff.get(arm or "", {}).get(advice["size"])
        return "?" if v is None else fmt_interval(v)

    scratch = acc(ev["baseline"])
    if not advice["shortlist"]:
        first = (f"No source for this data here, so nothing was searched: the baselines only, a logistic regression "
                 f"(test {logreg:.3f}) and scratch ({scratch}); give --candidates to weigh transfer")
    elif pick.get("vetoed"):
        v = pick["vetoed"]
        first = (f"Use a logistic regression on the raw inputs (test {logreg:.3f}): the best confirmed configuration, "
                 f"{v['strategy']} of {v['source']} at {_rate(v.get('lr'))}, scored lower on the test split "
                 f"({acc(v['arm'])}, paired difference {fmt_interval(v['versus_logreg'])}); scratch {scratch}")
    elif pick["kind"] == "logreg":
        default = next((o["arm"] for o in advice.get("selection", []) if o["versus_default"] is None), "the default")
        first = (f"Use a logistic regression on the raw inputs (test {logreg:.3f}): cross-validated it was "
                 f"clearly better than {default}, by {fmt_interval(pick['versus_default'])}; scratch {scratch}")
    else:
        reuse = "all blocks" if pick.get("reuse") is None else f"the first {pick['reuse']} blocks"
        what = "train it from scratch" if pick["kind"] == "scratch" else f"reuse {reuse}, {pick['strategy']}"
        why = ("what fit does by default; nothing else was clearly better cross-validated" if
               pick.get("versus_default") is None else
               f"clearly better than the default cross-validated, by {fmt_interval(pick['versus_default'])}")
        first = (f"Use {pick['source']}, {what}, {_rate(pick.get('lr'))} ({why}): test {acc(pick['arm'])} vs "
                 f"scratch {scratch} and logreg {logreg:.3f}")
    second = alternative(advice)
    states = [t["state"] for t in advice["trials"]]
    ran = [s for s in states if s != "not started"]
    confirmed = [o for o in advice.get("selection", []) if o["arm"] != "logreg"]
    chosen = f", {len(confirmed)} confirmed on {advice['config_asked']['seeds']} folds" if confirmed else ""
    third = (f"Searched {len(ran)} trials ({states.count('pruned')} pruned) over {len(advice['shortlist'])} "
             f"shortlisted sources{chosen} in {advice['seconds'] / 60:.1f} of {advice['budget_seconds'] / 60:.1f} min; "
             f"fit DATA --config {out / 'advice.json'} reproduces it; report {out / 'report.html'}")
    return [first, second, third]


def _rate(lr: float | None) -> str:
    return "the default learning rate" if lr is None else f"lr {lr:.2g}"


def alternative(advice: dict[str, Any]) -> str:
    """The cheaper alternative beside the recommendation: frozen (or the regression) and what it costs."""
    pick, ev = advice["recommendation"], advice["evidence"]
    eff, size = ev["data_efficiency"], advice["size"]
    frozen = next((a for a in eff if a.startswith("frozen")), None)
    if pick["kind"] != "transfer" or frozen is None or frozen == pick.get("arm"):
        verdicts = {a: v["verdict"] for a, v in ev["versus_logreg"].get(size, {}).items()}
        return "Against the logistic regression: " + (", ".join(f"{a} {v}" for a, v in verdicts.items()) or "n/a")
    best, cheap = eff[pick["arm"]][size]["mean"], eff[frozen][size]["mean"]
    t = advice["train_seconds"]
    ratio = (t.get(frozen) or 0) / t[pick["arm"]] if t.get(pick["arm"]) else float("nan")
    return (f"frozen is {'within' if abs(best - cheap) <= 0.01 else 'lower by'} {abs(best - cheap):.2f} "
            f"({cheap:.3f}) at {ratio:.2g}x the training time")


def write_advise_report(path: Any, advice: dict[str, Any]) -> None:
    """One self-contained ``report.html`` for an advice: the decision, the confirmation on the test split, every
    trial (what it tried, how it ended and why) and the accuracy-cost plot with its Pareto front."""
    esc, size = html.escape, advice["size"]
    ev = advice["evidence"]
    lines = "".join(f"<li>{esc(line)}</li>" for line in advise_lines(advice, path.parent))
    conf = [f"<table><tr><th class=l>arm</th><th>test {metric_name(advice['config_asked'])}</th><th>vs logreg</th>"
            "<th>training s</th></tr>"]
    for arm, per_size in ev["data_efficiency"].items():
        vs = ev["versus_logreg"].get(size, {}).get(arm)
        against = "" if vs is None else f"{fmt_interval(vs)} {vs['verdict']}"
        secs = advice["train_seconds"].get(arm)
        conf.append(f"<tr><td class=l>{esc(arm)}</td><td>{fmt_interval(per_size[size])}</td><td>{esc(against)}</td>"
                    f"<td>{'' if secs is None else f'{secs:.1f}'}</td></tr>")
    chose = [f"<table><tr><th class=l>arm</th><th>validation {metric_name(advice['config_asked'])}, the folds "
             "pooled</th><th>per fold</th><th>minus the default's [95% paired bootstrap]</th><th>its search trial"
             "</th></tr>"]
    for o in advice.get("selection", []):
        seeds = ", ".join(f"{v:.3f}" for v in o["validation_per_seed"])
        trial = "" if o["search_validation"] is None else f"{o['search_validation']:.3f}"
        versus = "the default" if o["versus_default"] is None else fmt_interval(o["versus_default"])
        chose.append(f"<tr><td class=l>{esc(o['arm'])}</td><td>{o['validation']:.4f}</td><td>{seeds}</td>"
                     f"<td>{versus}</td><td>{trial}</td></tr>")
    timing = {"budget_seconds": advice["budget_seconds"], "seconds": advice["seconds"], **advice["timings"]}
    head = ("number", "source", "strategy", "reuse", "lr", "state", "stopped",
            f"validation {metric_name(advice['config_asked'])}", "seconds")
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for t in advice["trials"]:
        cells = [t["number"], t.get("source"), t.get("strategy"), t.get("reuse") or "all",
                 "" if t.get("lr") is None else f"{t['lr']:.3g}", t["state"], t.get("stopped") or "",
                 "" if t["value"] is None else f"{t['value']:.4f}",
                 "" if t["seconds"] is None else f"{t['seconds']:.1f}"]
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>transferlab advise</title><style>{_CSS}</style>",
        f"</head><body><h1>Advice for {esc(advice['config_asked']['data'])}</h1><ul>{lines}</ul>",
        "<h2>Confirmed on the test split</h2>",
        f"<p>{len(ev['data_efficiency'])} arms, {advice['config_asked']['seeds']} seeds each, seed i trained on "
        "fold i: the training and validation splits together less the i-th of as many parts (at most as many "
        "examples per class as the training split), validated on that part; the test split "
        f"({ev['test_size'].get(size, '?')} examples) the same for all, and seen here only. Notes: "
        f"{esc('; '.join(ev['notes']) or 'none')}.</p>", "\n".join(conf) + "</table>",
        "<h2>How the recommendation was chosen</h2>",
        "<p>What <code>fit</code> does by default, unless another contender is clearly better on validation, "
        "cross-validated: its score on its folds' validation parts pooled (every training and validation example "
        "validated once) minus the default's, with a 95% bootstrap interval over those examples (paired: both "
        "scored on the same resamples), above zero; of several, the best score. Never by the test split, and not "
        "by the search's one seed (the best of many trials on one validation split is flattered by its luck). A "
        "pick the regression clearly beats on the test split gives way to it.</p>",
        "\n".join(chose) + "</table>",
        "<h2>What was tried</h2>",
        f"<p>Shortlist (by LogME): {esc(', '.join(advice['shortlist']) or 'none')}. Each trial trained to "
        "convergence on the training split and was judged on the validation split; the successive-halving pruner "
        "stopped the weakest early (stopped: pruned at step N), and trials still running when the budget had to "
        "be kept for the confirmation were stopped (stopped: the budget). The logistic regression on the "
        f"validation split: {advice['logreg_validation']:.4f}.</p>",
        _png(pareto_figure(advice), path.with_name("pareto.png")) if advice["trials"] else "",
        "\n".join(rows) + "</table>",
        "<h2>Time</h2>", f"<pre>{esc(json.dumps(timing, indent=1))}</pre>",
        "<h2>Configuration</h2>", f"<pre>{esc(json.dumps(advice['config_asked'], indent=1))}</pre>", "</body></html>",
    ]
    atomic_write(path, "\n".join(parts))
