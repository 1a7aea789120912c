"""Each arm of a ``compare`` against another arm instead of scratch: asymptotic test accuracy per labelled size and
the difference from the reference arm, paired by seed, with the same intervals ``compare`` uses.

Usage: ``python scripts/paired_vs_arm.py OUT/results.json [REFERENCE_ARM]`` (default ``finetune``) prints a
Markdown table: what the README's "which fine-tuning recipe" tables are.
"""

from __future__ import annotations

import json
import sys

from transferlab.evaluate.curves import interval


def asymptotes(results: dict, size: str, arm: str) -> dict[int, float]:
    """Each seed's asymptote: the converged model's test accuracy, as its cell recorded it."""
    return {c["seed"]: c["test_accuracy"] for c in results["cells"] if c["per_class"] == size and c["arm"] == arm}


def main(path: str, reference: str = "finetune") -> None:
    results = json.loads(open(path).read())
    sizes = results["config"]["per_class"]
    params = {c["arm"]: c.get("parameters") for c in results["cells"]}
    print("| arm | trained / total parameters | "
          + " | ".join(f"{s} per class: accuracy | vs {reference}" for s in sizes) + " |")
    print("|---|---|" + "---|---|" * len(sizes))
    for arm, per_size in results["data_efficiency"].items():
        p = params.get(arm)
        row = [f"`{arm}`", f"{p['trained']:,} / {p['total']:,}" if p else "?"]
        for size in sizes:
            v = per_size[size]
            capped = "" if v.get("all_converged", True) else " ↗"
            row.append(f"{v['mean']:.3f}" + (f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" if v.get("ci_low") is not None
                                             else "") + capped)
            if arm == reference:
                row.append("—")
                continue
            b = asymptotes(results, size, reference)
            a = asymptotes(results, size, arm) or dict.fromkeys(b, v["mean"])  # logreg: one fit, every seed
            iv = interval([a[s] - b[s] for s in b], bounds=(-1.0, 1.0))
            row.append(f"{iv.mean:+.3f} [{iv.ci_low:+.3f}, {iv.ci_high:+.3f}]")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
