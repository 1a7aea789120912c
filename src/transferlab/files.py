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

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from transferlab.errors import UserError

MARKER = ".transferlab"
LOCK = ".lock"
# What each kind of folder holds, relative to the marked folder, one path per entry. Each component is a glob
# matched against one component only, so no pattern reaches into a folder it does not name: ``*.png`` is a PNG at
# the top of the folder, never ``holiday/2024/beach.png``.
OWNED: dict[str, tuple[str, ...]] = {
    "run": ("config.json", "metrics.csv", "curve.csv", "model.safetensors", "model.json", "confusion_matrix.png",
            "predictions.csv", "skipped_files.csv", "INCOMPLETE", "checkpoints/last.ckpt",
            "checkpoints/best.safetensors", "tensorboard/events.out.tfevents.*", "tensorboard/hparams.yaml"),
    "compare": ("compare.json", "results.json", "curves.csv", "report.html", "INCOMPLETE", "data_efficiency.png",
                "curves_*.png"),
    "layers": ("layers.json", "results.json", "report.html", "layers.png", "INCOMPLETE"),
    "rank": ("rank.json", "results.json", "report.html", "INCOMPLETE", "rank.png"),
    "advise": ("advise.json", "advice.json", "report.html", "INCOMPLETE", "study.db", "study.db-journal",
               "pareto.png"),
}
# Folders of another kind that a kind of folder holds, and exactly where: a compare's cells are runs four levels
# down. A marked folder anywhere else is judged as plain files of its parent (and so refused).
NESTED: dict[str, dict[str, str]] = {
    "compare": {"cells/*/*/*": "run"},
    "layers": {"cells/*/*/*": "run", "base/*": "run"},
    "rank": {"validate": "compare"},
    "advise": {"trials/*": "run", "confirm": "compare", "shortlist": "rank"},
}
# atomic_write's temporary files (``.NAME.PID.tmp``), in any folder a kind writes files to
_TEMPORARY = re.compile(r"\.[^/]+\.\d+\.tmp")


def _matches(rel: str, pattern: str) -> bool:
    """Whether the relative path ``rel`` is ``pattern``, component by component (a ``*`` never crosses a ``/``)."""
    parts, globs = rel.split("/"), pattern.split("/")
    return len(parts) == len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs, strict=True))


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


# --- reading what users and earlier runs left: regular files of bounded size only ------------------------------

MAX_JSON_BYTES = 256 << 20  # a run card with a large vocabulary is a few MB; config and results files far less
MAX_DATA_BYTES = 1 << 30  # tables and text files are read whole into memory
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _refuse(path: Path, what: str, st: os.stat_result, limit: int | None) -> str | None:
    """Why a file with status ``st`` is not read (not a regular file, or above ``limit`` bytes), or None."""
    kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        return f"{what} {path} is {kind or 'not a regular file'}, not a regular file"
    if limit is not None and st.st_size > limit:
        return f"{what} {path} is {_size(st.st_size)}, more than the {_size(limit)} transferlab reads"
    return None


def check_file(path: Path | str, what: str, limit: int | None = None) -> None:
    """Refuse, in one sentence, anything but a regular file of at most ``limit`` bytes (``stat`` never blocks, so
    a FIFO is refused without waiting for a writer; a link is judged by what it points to)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror})") from None
    reason = _refuse(path, what, st, limit)
    if reason is not None:
        raise UserError(reason)


def is_regular(path: Path | str) -> bool:
    """Whether ``path`` is (or links to) a regular file; never blocks, never raises."""
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:
        return False


def read_bounded(path: Path | str, what: str, limit: int = MAX_DATA_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. A FIFO, a device, a folder or a larger file is one
    sentence: opened without blocking, judged by ``fstat`` of what was opened, and never read past the limit."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror})") from None
    try:
        reason = _refuse(path, what, os.fstat(fd), limit)
        if reason is not None:
            raise UserError(reason)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 24, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UserError(f"{what} {path} is more than the {_size(limit)} transferlab reads")
        return b"".join(chunks)
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)


def read_json(path: Path | str, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file transferlab wrote and now reads back (a card, a config, results): bounded, UTF-8 and valid
    JSON, else one sentence naming it. The caller checks the shape of what it uses."""
    path = Path(path)
    raw = read_bounded(path, what, limit)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text (was it edited?)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON (line {e.lineno}; was it edited?)") from None
    except (ValueError, RecursionError):
        raise UserError(f"{what} {path} is not valid JSON (a number too long or nesting too deep)") from None


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


@contextlib.contextmanager
def locked(out: Path, what: str = "run directory") -> Iterator[None]:
    """Hold ``out``'s lock for the block (under DDP only rank 0 locks): taken before any data or model loads, so a
    second writer is refused at once. When the block fails before writing anything into a folder it created, the
    folder goes again: a bad input leaves nothing behind."""
    if not is_global_zero():
        yield
        return
    created = not out.exists()
    lock = lock_folder(out, what)
    try:
        yield
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [LOCK]:
            (out / LOCK).unlink()
            out.rmdir()
        raise
    finally:
        lock.release()


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
        data = read_json(folder / MARKER, "marker", 4096)
    except UserError:
        return None
    kind = data.get("kind") if isinstance(data, dict) and data.get("written_by") == "transferlab" else None
    return kind if kind in OWNED else None


def _owned_file(rel: str, kind: str) -> bool:
    folder, _, name = rel.rpartition("/")
    if _TEMPORARY.fullmatch(name) and (not folder or any(_matches(folder, p.rpartition("/")[0])
                                                          for p in OWNED[kind] if "/" in p)):
        return True
    return rel in (MARKER, LOCK) or any(_matches(rel, p) for p in OWNED[kind])


def _owned_folder(rel: str, kind: str) -> bool:
    """Whether ``rel`` is a folder on the way to something a ``kind`` folder holds (``checkpoints``, ``cells/10``)."""
    depth = rel.count("/") + 1
    paths = [*OWNED[kind], *NESTED.get(kind, {})]
    return any(p.count("/") >= depth and _matches(rel, "/".join(p.split("/")[:depth])) for p in paths)


def _foreign(folder: Path, kind: str) -> Path | None:
    """The first entry under ``folder`` that a ``kind`` folder would not hold, or None when every file and folder
    is transferlab's. Files are matched by :data:`OWNED` exactly; a folder of another kind counts only where
    :data:`NESTED` puts it, and is then judged by its own kind."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for d in list(dirs):
            sub = here / d
            rel = sub.relative_to(folder).as_posix()
            if sub.is_symlink():
                return sub
            nested = next((k for p, k in NESTED.get(kind, {}).items() if _matches(rel, p)), None)
            if nested is not None and marker_kind(sub) == nested:
                dirs.remove(d)
                bad = _foreign(sub, nested)
                if bad is not None:
                    return bad
            elif nested is not None and all(e.name == LOCK for e in sub.iterdir()):
                dirs.remove(d)  # locked, then stopped before it was marked: nothing written yet
            elif not _owned_folder(rel, kind):
                return sub
        for name in files:
            if not _owned_file((here / name).relative_to(folder).as_posix(), kind):
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
