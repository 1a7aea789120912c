"""Helpers shared by the benchmark scripts: machine description, allocator detection, JSON output, tables.

Nothing here imports torch at module level, so a script can set allocator environment variables first.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def preload_path(allocator: str | None) -> str | None:
    """The library to preload for ``allocator`` (tcmalloc, mimalloc; None: glibc), None when not installed."""
    from transferlab.allocator import library

    return library(allocator) if allocator else None


def allocator_in_use() -> dict[str, Any]:
    """Which malloc this process really runs with (from /proc/self/maps) and whether THP is requested."""
    from transferlab.allocator import loaded as loaded_allocator

    loaded = loaded_allocator()
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    name = (loaded or "glibc malloc") + (" + THP_MEM_ALLOC_ENABLE=1" if thp else "")
    return {"name": name, "loaded": loaded, "tcmalloc_loaded": loaded == "tcmalloc", "THP_MEM_ALLOC_ENABLE": thp,
            "LD_PRELOAD": os.environ.get("LD_PRELOAD", "")}


def reexec_like_cli(script: str, argv: list[str]) -> None:
    """Run this script the way ``transferlab`` runs (``transferlab.allocator.use_fast``): THP_MEM_ALLOC_ENABLE=1
    and the default fast allocator preloaded if installed. Must run before torch is imported."""
    from transferlab.allocator import use_fast

    use_fast([script, *argv])


def run_json_child(script: str, name: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python SCRIPT --child SPEC`` in its own process; its last line of output, as JSON."""
    cmd = [sys.executable, script, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def epoch_throughput(r: dict[str, Any]) -> float:
    """Training images per second from the second epoch on (the first pays for warm-up): ``epoch_wall_s`` holds
    the wall time at the end of each epoch."""
    w = r["epoch_wall_s"]
    return r["train_images"] * (len(w) - 1) / (w[-1] - w[0])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Machine, library versions and allocator of the calling process (imports torch)."""
    import timm
    import torch

    import transferlab

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    thp_mode = ""
    try:
        thp_mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "kernel_thp": thp_mode,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "transferlab": transferlab.__version__,
        "allocator": allocator_in_use(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = enumerate(zip(r, widths, strict=True))
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in cells)

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies since boot, all CPUs, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class ForeignCPU:
    """CPU time other processes used while a benchmark ran: all busy CPU time minus this process tree's own.

    A non-zero share means the timings were taken on a shared, busy machine.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.busy0, self.total0 = _busy_jiffies()
        self.own0 = self._own()
        self.wall0 = os.times().elapsed

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def report(self) -> dict[str, float]:
        busy, _ = _busy_jiffies()
        busy_s = (busy - self.busy0) / self.tick
        own_s = self._own() - self.own0
        wall = os.times().elapsed - self.wall0
        foreign = max(0.0, busy_s - own_s)
        cpus = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "own_cpu_s": round(own_s, 2),
            "foreign_cpu_s": round(foreign, 2),
            "foreign_share_of_machine": round(foreign / max(wall * cpus, 1e-9), 3),
        }


def wait_until_quiet(max_wait_s: float, threshold: float = 0.1, probe_s: float = 2.0) -> dict[str, Any]:
    """Wait (at most ``max_wait_s``) until other processes use under ``threshold`` of the machine's CPU.

    Returns what it saw; ``quiet`` False means the benchmark starts on a busy machine anyway.
    """
    import time

    start = time.monotonic()
    while True:
        busy0, total0 = _busy_jiffies()
        time.sleep(probe_s)
        busy1, total1 = _busy_jiffies()
        share = (busy1 - busy0) / max(total1 - total0, 1)
        waited = time.monotonic() - start
        if share < threshold or waited >= max_wait_s:
            return {"quiet": share < threshold, "busy_share": round(share, 3), "waited_s": round(waited, 1)}
        print(f"waiting for a quiet machine: other processes use {share:.0%} of the CPUs", file=sys.stderr)


def repo_state() -> dict[str, Any]:
    """The commit the library was measured at and its uncommitted changes (the timings depend on them)."""

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "src", "pyproject.toml").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_library_changes": changed}
