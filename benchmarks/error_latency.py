"""How long a user waits for a wrong command's one sentence, and for ``--help``, as ratios to ``python -c pass``.

Each command runs as the user types it (``python -m transferlab ...``, the allocator re-exec included) in a fresh
process, several times; the median wall time is reported next to the median of ``python -c pass`` measured in the
same run. Target (issue "Honest numbers and a good first hour"): every input error within 1.5 s on 2 cores.

    .venv/bin/python benchmarks/error_latency.py        # about 30 s; writes results/error_latency.json
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, repo_state, table, write_json  # noqa: E402

REPEATS = 5


def wall(argv: list[str]) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(REPEATS):
        tick = time.perf_counter()
        code = subprocess.run(argv, capture_output=True).returncode
        times.append(time.perf_counter() - tick)
    return statistics.median(times), code


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "occupied").mkdir()
    (tmp / "occupied" / "mine.txt").write_text("x")
    cli = [sys.executable, "-m", "transferlab"]
    cases = {
        "fit /nonexistent": [*cli, "fit", "/nonexistent", "--out", str(tmp / "o")],
        "fit --image-size 8": [*cli, "fit", "fashion-mnist", "--image-size", "8", "--out", str(tmp / "o")],
        "fit --source efficientnet_lite (typo)": [*cli, "fit", "fashion-mnist", "--source", "efficientnet_lite",
                                                  "--out", str(tmp / "o")],
        "fit wordnet --source efficientnet_lite0 (modality)": [*cli, "fit", "wordnet", "--source",
                                                               "efficientnet_lite0", "--out", str(tmp / "o")],
        "fit --out occupied": [*cli, "fit", "fashion-mnist", "--out", str(tmp / "occupied")],
        "compare --arms scratch,finetune:lr=inf": [*cli, "compare", "fashion-mnist", "--arms",
                                                   "scratch,finetune:lr=inf", "--out", str(tmp / "o")],
        "rank --sources efficientnet_lite0,nosuch": [*cli, "rank", "fashion-mnist", "--sources",
                                                     "efficientnet_lite0,nosuch", "--out", str(tmp / "o")],
        "--help": [*cli, "--help"],
        "fit --help": [*cli, "fit", "--help"],
        "--version": [*cli, "--version"],
    }
    base, _ = wall([sys.executable, "-c", "pass"])
    rows, results = [], {"python -c pass": {"seconds": base}}
    for name, argv in cases.items():
        seconds, code = wall(argv)
        results[name] = {"seconds": seconds, "exit_code": code, "ratio_to_python": seconds / base}
        rows.append([name, str(code), f"{seconds:.3f}", f"{seconds / base:.1f}"])
    print(table(rows, ["command", "exit", "median s", "x python -c pass"]))
    print(f"python -c pass: {base:.3f} s (median of {REPEATS})")
    worst = max(v["seconds"] for k, v in results.items() if k != "python -c pass")
    print(f"slowest: {worst:.2f} s (target: every error within 1.5 s)")
    write_json("error_latency", {"machine": machine_info(), "repo": repo_state(), "repeats": REPEATS,
                                 "results": results, "slowest_seconds": worst, "target_seconds": 1.5})


if __name__ == "__main__":
    main()
