"""The memory allocator: glibc's malloc, or a faster one re-executed under ``LD_PRELOAD`` when one is installed."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

_TCMALLOC = [
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
]
ALLOCATORS = ("tcmalloc", "mimalloc")  # what TRANSFERLAB_ALLOCATOR may name, besides auto and system
# preloaded when installed, in this order. benchmarks/overhead.py, 2 cores, with THP as the CLI runs: mimalloc 1.32x
# (run_inference) and 1.56x (bare loop) faster inference than glibc malloc and 1.08x faster training; against glibc
# without THP 1.18x / 1.21x and 0.96x training, within the spread of repeated passes (up to 1.6x for glibc). Used
# when present, so not a dependency: ``pip install 'transferlab[mimalloc]'``.
AUTO = ("tcmalloc", "mimalloc")
INSTALL = {"tcmalloc": "apt-get install libtcmalloc-minimal4", "mimalloc": "pip install 'transferlab[mimalloc]'"}


def library(name: str) -> str | None:
    """The shared library of allocator ``name``, or None when it is not installed: tcmalloc from the system's
    packages, mimalloc from PyPI's ``cmeel-mimalloc`` wheel (``pip install 'transferlab[mimalloc]'``)."""
    if name == "tcmalloc":
        return next((p for p in _TCMALLOC if os.path.exists(p)), None)
    if name == "mimalloc":
        for root in dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")):
            found = sorted((Path(root) / "cmeel.prefix" / "lib").glob("libmimalloc.so*"), key=lambda p: len(p.name))
            if found:
                return str(found[0])
    return None


def use_fast(command: list[str] | None = None) -> None:
    """Re-exec ``python COMMAND`` (default: ``-m transferlab`` with this process's arguments; the benchmark scripts
    give their own) under a faster allocator when one is installed: ``TRANSFERLAB_ALLOCATOR`` names one (tcmalloc,
    mimalloc), keeps glibc malloc (system), or (auto, the default) takes the first of :data:`AUTO` installed
    (benchmarks/overhead.py measured tcmalloc 1.03-1.84x faster inference, mimalloc above). PyTorch's transparent
    huge pages for large buffers (``THP_MEM_ALLOC_ENABLE=1``) are switched on either way."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    wanted = os.environ.get("TRANSFERLAB_ALLOCATOR", "auto")
    preload = os.environ.get("LD_PRELOAD", "")
    if wanted == "system" or any(name in preload for name in ALLOCATORS):
        return
    if wanted not in ("auto", *ALLOCATORS):
        sys.stderr.write(f"warning: TRANSFERLAB_ALLOCATOR={wanted!r} is not auto, system, tcmalloc or mimalloc; "
                         "using auto\n")
        wanted = "auto"
    lib = next(filter(None, map(library, AUTO if wanted == "auto" else (wanted,))), None)
    if lib is None:
        if wanted != "auto":
            hint = INSTALL[wanted]
            sys.stderr.write(f"warning: TRANSFERLAB_ALLOCATOR={wanted} but {wanted} is not installed ({hint}); "
                             "using glibc malloc\n")
        return
    env = {**os.environ, "LD_PRELOAD": " ".join(filter(None, [lib, preload]))}
    command = command if command is not None else ["-m", "transferlab", *sys.argv[1:]]
    os.execve(sys.executable, [sys.executable, *command], env)


def loaded() -> str | None:
    """The fast allocator this process runs with (from its memory map), or None: glibc malloc."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    return next((a for a in ALLOCATORS if a in maps), None)


def name() -> str:
    """Which memory allocator this process runs with."""
    name = loaded() or "glibc malloc"
    if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1":
        name += " + huge pages (THP_MEM_ALLOC_ENABLE=1)"
    return name
