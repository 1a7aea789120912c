"""The memory allocator: glibc's malloc, or a faster one re-executed under ``LD_PRELOAD`` when one is installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_TCMALLOC = [
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
]


def use_fast() -> None:
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


def name() -> str:
    """Which memory allocator this process runs with."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    name = "tcmalloc" if "tcmalloc" in maps else "glibc malloc"
    if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1":
        name += " + huge pages (THP_MEM_ALLOC_ENABLE=1)"
    return name


