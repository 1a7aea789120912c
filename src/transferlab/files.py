"""Writing the user's disk safely: atomic files, one writer per output folder, and ``--overwrite`` that deletes only
what transferlab wrote.

- :func:`atomic_write` writes a temporary file in the target's own folder, fsyncs it, gives it the mode a plain
  ``open`` would (``0666 & ~umask``: a group sharing a cache can read it) and renames it over the target, so a
  reader sees the old file or the new one, never half of one. A full disk becomes one sentence naming the file.
- :class:`DirLock` is an ``fcntl.flock`` on ``OUT/.lock``: the kernel drops it when its process dies, so a
  ``kill -9`` never leaves a stale lock, and a second process is refused with the holder's pid.
- :func:`mark` / :func:`clear_output`: every folder transferlab creates carries a ``.transferlab`` marker naming
  its kind. ``--overwrite`` empties a folder only when the marker is there and every file in it is one that kind
  of folder holds; anything else is refused before a single file is deleted.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferlab.errors import UserError

MARKER = ".transferlab"
LOCK = ".lock"
# What each kind of folder holds, relative to the marked folder (subfolders holding their own marker are checked
# on their own terms).
OWNED: dict[str, tuple[str, ...]] = {
    "run": ("config.json", "metrics.csv", "curve.csv", "model.safetensors", "model.json", "confusion_matrix.png",
            "skipped_files.csv", "INCOMPLETE", "checkpoints/*.ckpt"),
    "compare": ("compare.json", "results.json", "curves.csv", "report.html", "INCOMPLETE", "*.png"),
    "layers": ("layers.json", "results.json", "report.html", "layers.png", "INCOMPLETE", "*.png"),
    "rank": ("rank.json", "results.json", "report.html", "INCOMPLETE", "*.png"),
}
_ALWAYS = (MARKER, LOCK, "*.tmp", "*/*.tmp", "*.tmp/*")


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets it, which races with
    other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _nearly_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def disk_full(path: Path | str) -> UserError:
    """The one sentence for a write that failed for lack of space (or quota)."""
    return UserError(f"No space left on device while writing {path}: free some space, then --resume continues "
                     "the run")


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: Path | str, write: Callable[[Path], Any] | str | bytes) -> None:
    """Write ``path`` atomically. ``write`` is the content, or a function that writes a given temporary path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(write, str | bytes):
            data = write.encode() if isinstance(write, str) else write
            with open(tmp, "wb") as f:
                f.write(data)
        else:
            write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        full = is_disk_full(e) or (isinstance(e, Exception) and _nearly_full(path.parent))
        tmp.unlink(missing_ok=True)
        if full:  # torch.save reports a full disk as a RuntimeError of its zip writer: ask the file system
            raise disk_full(path) from None
        raise
    try:  # the rename itself survives a power cut once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_json(path: Path | str, obj: Any, indent: int = 1) -> None:
    atomic_write(path, json.dumps(obj, indent=indent))


class DirLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.lock`` for as long as the object is held."""

    def __init__(self, folder: Path, what: str = "run directory") -> None:
        self.folder, self.what = Path(folder), what
        self.fd: int | None = None

    def acquire(self) -> DirLock:
        path = self.folder / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            if is_disk_full(e):
                raise disk_full(path) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.what} {self.folder} is in use by another transferlab process (pid {holder}); "
                            "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (deleting it would race a waiting locker)
            self.fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_folder(out: Path, what: str = "run directory") -> DirLock:
    """Create ``out`` if needed and take its lock (one writer per folder)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(out) from None
        raise UserError(f"--out {out} cannot be created: {e.strerror}") from None
    return DirLock(out, what).acquire()


def is_global_zero() -> bool:
    """Whether this process is rank 0, from the environment the launcher set (Lightning, torchrun or SLURM), so it
    is known before the Trainer exists. Only rank 0 writes run directories and reports."""
    if os.environ.get("RANK") is not None:  # torchrun
        return int(os.environ["RANK"]) == 0
    if os.environ.get("LOCAL_RANK") is not None:  # Lightning's own launcher (also inside an interactive SLURM shell)
        return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ["LOCAL_RANK"]) == 0
    for var in ("SLURM_PROCID", "JSM_NAMESPACE_RANK"):  # srun, jsrun
        if os.environ.get(var) is not None:
            return int(os.environ[var]) == 0
    return True


def mark(folder: Path, kind: str) -> None:
    """Record that transferlab created ``folder`` as a ``kind`` folder (see :data:`OWNED`)."""
    if not (folder / MARKER).is_file():
        write_json(folder / MARKER, {"kind": kind, "written_by": "transferlab"})


def marker_kind(folder: Path) -> str | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) and data.get("written_by") == "transferlab" else None
    return kind if kind in OWNED else None


def _foreign(folder: Path, kind: str) -> Path | None:
    """The first file under ``folder`` that a ``kind`` folder would not hold (subfolders with their own marker
    are judged by their own kind), or None when every file is transferlab's."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for d in list(dirs):
            sub = here / d
            if sub.is_symlink():
                return sub
            sub_kind = marker_kind(sub)
            if sub_kind is not None and sub != folder:
                dirs.remove(d)
                bad = _foreign(sub, sub_kind)
                if bad is not None:
                    return bad
        for name in files:
            rel = (here / name).relative_to(folder).as_posix()
            if not any(fnmatch.fnmatchcase(rel, p) for p in (*OWNED[kind], *_ALWAYS)):
                return here / name
    return None


def check_overwritable(folder: Path, kind: str) -> None:
    """Refuse, with one sentence, to empty a folder that is not wholly a transferlab ``kind`` folder."""
    found = marker_kind(folder)
    if found is None:
        raise UserError(f"--overwrite refused: {folder} was not written by transferlab (no {MARKER} marker); "
                        "nothing was deleted: choose another --out or empty it yourself")
    if found != kind:
        raise UserError(f"--overwrite refused: {folder} holds a transferlab {found} folder, not a {kind} folder; "
                        "nothing was deleted")
    bad = _foreign(folder, kind)
    if bad is not None:
        raise UserError(f"--overwrite refused: {bad} was not written by transferlab; nothing was deleted: move it "
                        "away or choose another --out")


def clear_output(folder: Path) -> None:
    """Delete everything in a folder that :func:`check_overwritable` accepted, except the held lock file."""
    for entry in folder.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def cache_dir(kind: str = "") -> Path:
    """transferlab's cache (features, word-vector stores, downloads): ``$TRANSFERLAB_CACHE_DIR``, else
    ``~/.cache/transferlab``; ``kind`` names a subfolder."""
    root = Path(os.environ.get("TRANSFERLAB_CACHE_DIR") or Path.home() / ".cache" / "transferlab")
    return root / kind if kind else root
