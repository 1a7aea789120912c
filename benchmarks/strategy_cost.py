"""What each strategy costs: wall time, training time, peak memory and parameters trained, as ratios to
``finetune`` measured in one run.

Every arm is one ``transferlab fit`` in its own process (so the peak resident memory, from ``/usr/bin/time``, is the
arm's own, model loading included) on the same data, seed and budget as the README's evidence: EfficientNet-Lite0
on the bundled Fashion-MNIST classes 5-9 at 100 per class, 4 epochs, 64 px; MiniLM on the bundled WordNet task at
50 per class, 3 epochs. Usage: ``python benchmarks/strategy_cost.py [--only images|text]``; writes
``benchmarks/results/strategy_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

SUITES = {
    "images": (["fashion-mnist:classes=5-9", "--source", "efficientnet_lite0", "--per-class", "100", "--epochs", "4",
                "--image-size", "64"], ["scratch", "frozen", "finetune", "finetune:decay=0.7", "gradual", "l2sp",
                                        "bss"]),
    "text": (["wordnet", "--source", "minilm", "--per-class", "50", "--epochs", "3", "--eval-per-class", "50"],
             ["scratch", "frozen", "finetune", "lora", "gradual", "finetune:reuse=3"]),
}


def one(args: list[str], strategy: str, work: Path) -> dict:
    out = work / strategy.replace(":", "_").replace("=", "-")
    name, _, rest = strategy.partition(":")
    extra = [f"--reuse={rest.split('=')[1]}"] if rest.startswith("reuse=") else []
    spec = name if rest.startswith("reuse=") else strategy
    if name == "scratch" and "minilm" in args:  # the text baseline: word embeddings from scratch, as in the README
        args = [a if a != "minilm" else "words" for a in args]
    work.mkdir(parents=True, exist_ok=True)
    times = work / "time.txt"
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", str(times), sys.executable, "-m", "transferlab", "fit", *args,
           "--strategy", spec, *extra, "--out", str(out)]
    env = {**os.environ, "TRANSFERLAB_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{strategy} failed:\n{proc.stderr[-2000:]}")
    wall, rss_kb = times.read_text().split()[-2:]
    card = json.loads((out / "model.json").read_text())
    return {"wall_seconds": float(wall), "train_seconds": card["metrics"]["train_wall_seconds"],
            "peak_rss_mib": int(rss_kb) / 1024, "test_accuracy": card["metrics"]["test_accuracy"],
            "parameters": card["parameters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(SUITES))
    only = parser.parse_args().only
    chosen = [only] if only else list(SUITES)
    results: dict = {"machine": machine_info(), "suites": {}}
    with tempfile.TemporaryDirectory(prefix="transferlab-strategy-cost-") as tmp:
        for suite in chosen:
            args, strategies = SUITES[suite]
            rows = {s: one(args, s, Path(tmp) / suite) for s in strategies}
            ref = rows["finetune"]
            for row in rows.values():
                row["ratio_to_finetune"] = {k: row[k] / ref[k] for k in ("wall_seconds", "train_seconds",
                                                                           "peak_rss_mib") if ref[k]}
            results["suites"][suite] = {"command": ["transferlab", "fit", *args], "arms": rows}
            for s, row in rows.items():
                print(f"{suite:6} {s:20} train {row['train_seconds']:7.1f} s  wall {row['wall_seconds']:6.1f} s  "
                      f"peak {row['peak_rss_mib']:6.0f} MiB  trained {row['parameters']['trained']:>10,} of "
                      f"{row['parameters']['total']:,}  acc {row['test_accuracy']:.3f}")
    write_json("strategy_cost", results)


if __name__ == "__main__":
    main()
