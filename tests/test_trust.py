"""What transferlab guarantees about the user's files: --overwrite deletes only its own output, one writer per
folder, checkpoints that survive kill -9 and a full disk, exact resume, and no finished run that diverged."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab import api
from transferlab.api import compare, fit
from transferlab.errors import UserError
from transferlab.files import DirLock, check_overwritable
from transferlab.train.module import LitClassifier


def _data(base_run: Path) -> str:
    return json.loads((base_run / "model.json").read_text())["data"]


def _same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


# --- 1. --overwrite deletes only what transferlab wrote ---------------------------------------------------------


def test_overwrite_refuses_a_folder_of_user_files_and_deletes_nothing(base_run: Path, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text("{}")
    (proj / "src" / "main.py").write_text("print('mine')\n")
    with pytest.raises(UserError, match="not written by transferlab.*nothing was deleted"):
        fit(_data(base_run), out=proj, source="cnn_tiny", strategy="scratch", epochs=1, overwrite=True,
            progress=False)
    assert (proj / "src" / "main.py").read_text() == "print('mine')\n" and (proj / "config.json").is_file()
    for kind in ("compare", "layers", "rank"):
        with pytest.raises(UserError, match="not written by transferlab"):
            check_overwritable(proj, kind)


def test_overwrite_replaces_a_run_but_not_a_user_file_inside_it(base_run: Path, tmp_path: Path) -> None:
    opts = dict(source="cnn_tiny", strategy="scratch", epochs=1, progress=False)
    out = tmp_path / "run"
    fit(_data(base_run), out=out, **opts)
    assert json.loads((out / ".transferlab").read_text())["kind"] == "run"
    fit(_data(base_run), out=out, overwrite=True, **opts)  # a transferlab run: replaced
    assert (out / "model.json").is_file()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(UserError, match="notes.txt was not written by transferlab"):
        fit(_data(base_run), out=out, overwrite=True, **opts)
    assert (out / "notes.txt").is_file() and (out / "model.json").is_file()


def test_compare_overwrite_keeps_user_files(base_run: Path, tmp_path: Path) -> None:
    opts = dict(source=str(base_run), arms="scratch,frozen", seeds=2, epochs=1, progress=False)
    out = tmp_path / "cmp"
    compare(_data(base_run), out=out, **opts)
    with pytest.raises(UserError, match="--resume.*--overwrite"):
        compare(_data(base_run), out=out, **opts)
    compare(_data(base_run), out=out, overwrite=True, **opts)
    assert (out / "results.json").is_file()
    stray = out / "cells" / "all" / "scratch" / "seed0" / "mine.csv"
    stray.write_text("a,b\n")
    with pytest.raises(UserError, match="mine.csv was not written by transferlab"):
        compare(_data(base_run), out=out, overwrite=True, **opts)
    assert stray.is_file() and (out / "results.json").is_file()


# --- 2. one writer per folder -------------------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holders_pid_and_kill_9_leaves_no_stale_lock(
    base_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from transferlab.files import DirLock; "
         "DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by another transferlab process \\(pid {holder.pid}\\)"):
            fit(_data(base_run), out=out, source="cnn_tiny", strategy="scratch", epochs=1, resume=True,
                progress=False)
        assert list(p.name for p in out.iterdir()) == [".lock"]  # nothing written by the refused process
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fit(_data(base_run), out=out, source="cnn_tiny", strategy="scratch", epochs=1, resume=True, progress=False)
    assert (out / "model.json").is_file()


def test_an_experiment_folder_has_one_writer(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    with DirLock(out):
        with pytest.raises(UserError, match=f"comparison folder .* in use .*\\(pid {os.getpid()}\\)"):
            compare(_data(base_run), out=out, source=str(base_run), arms="scratch,frozen", seeds=2, epochs=1,
                    progress=False)


# --- 3. checkpoints -----------------------------------------------------------------------------------------------


def _interrupted(base_run: Path, out: Path) -> None:
    """A run killed after its first checkpoint (raises in epoch 2: the checkpoint of epoch 1 is on disk)."""
    def stop(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return real(self, batch, batch_idx)

    real = LitClassifier.training_step
    LitClassifier.training_step = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(_data(base_run), out=out, source="cnn_tiny", strategy="scratch", epochs=2, progress=False)
    finally:
        LitClassifier.training_step = real
    assert (out / "checkpoints" / "last.ckpt").is_file()


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "tensor"])
def test_a_damaged_checkpoint_is_one_sentence(base_run: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "run"
    _interrupted(base_run, out)
    ckpt = out / "checkpoints" / "last.ckpt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "garbage":
        ckpt.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "pickle":
        torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "x": _Payload()}, ckpt)
    else:
        torch.save({"w": torch.zeros(3)}, ckpt)
    with pytest.raises(UserError, match="last.ckpt is not a (readable checkpoint|checkpoint of this run).*--overwrite"):
        fit(_data(base_run), out=out, source="cnn_tiny", strategy="scratch", epochs=2, resume=True, progress=False)
    assert (out / "INCOMPLETE").exists()


def test_checkpoints_are_written_by_rename_in_their_own_folder(base_run: Path, tmp_path: Path, monkeypatch) -> None:
    renames = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((Path(a), Path(b))), real(a, b))[1])
    _interrupted(base_run, tmp_path / "run")
    ckpt = [(a, b) for a, b in renames if b.name == "last.ckpt"]
    assert ckpt and all(a.parent == b.parent for a, b in ckpt)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 kB tmpfs, when this process may mount one (root on Linux); skipped elsewhere."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_sentence_and_leaves_the_run_incomplete(base_run: Path, tiny_disk: Path) -> None:
    out = tiny_disk / "run"
    # cnn_small's checkpoint (about 4.7 MB with its optimiser state) cannot fit in 256 kB
    result = subprocess.run(
        [sys.executable, "-m", "transferlab", "fit", _data(base_run), "--source", "cnn_small", "--strategy", "scratch",
         "--epochs", "1", "--image-size", "16", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "TRANSFERLAB_ALLOCATOR": "system"},
    )
    assert result.returncode == 2, result.stderr
    assert "No space left on device while writing" in result.stderr and "Traceback" not in result.stderr
    assert (out / "INCOMPLETE").exists() and not (out / "model.json").exists()
    assert not list(out.rglob("*.tmp"))  # no half-written file left behind


# --- 4. exact resume after kill -9 in the middle of an epoch -------------------------------------------------------


def _kill_9(out: Path, kill_seed: int, kill_epoch: int = 1, **options) -> None:
    """Run ``api.<command>`` in a forked child that sends itself SIGKILL at the third step of epoch ``kill_epoch``
    (counted from 0) of seed ``kill_seed``: a kill -9 in the middle of an epoch, without a new interpreter's
    imports. The child runs on one thread, as PyTorch's DataLoader workers do: an OpenMP pool the parent used
    does not survive a fork."""
    command = getattr(api, options.pop("command"))
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            torch.set_num_threads(1)
            real = LitClassifier.training_step

            def step(self, batch, batch_idx):  # noqa: ANN001, ANN202
                if self.current_epoch == kill_epoch and batch_idx == 2 and self.seed == kill_seed:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(self, batch, batch_idx)

            LitClassifier.training_step = step
            command(out=out, progress=False, accelerator="cpu", **options)
        except BaseException:
            traceback.print_exc()  # why it was not killed, into the test's captured output
        finally:
            os._exit(3)  # finished or failed without being killed: the assertion below says so
    status = None
    try:
        status = os.waitpid(pid, 0)[1]
    finally:
        if status is None:  # the wait was interrupted (a timeout, Ctrl-C): no child left running
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL, f"the child exited with {status}"


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("strategy", ["scratch", "frozen", "finetune", "lpft:wise=0.5"])
def test_resume_after_kill_9_mid_epoch_gives_the_same_weights(base_run: Path, tmp_path: Path, strategy: str) -> None:
    opts = dict(source=str(base_run), strategy=strategy, epochs=3, batch_size=4, reuse=2, seed=3)
    full = fit(_data(base_run), out=tmp_path / "full", progress=False, **opts)
    out = tmp_path / "killed"
    _kill_9(out, 3, command="fit", data=_data(base_run), **opts)
    assert (out / "INCOMPLETE").exists() and (out / "checkpoints" / "last.ckpt").is_file()
    resumed = fit(_data(base_run), out=out, resume=True, progress=False, **opts)
    _same_weights(tmp_path / "full", out)
    assert resumed.test_accuracy == full.test_accuracy
    assert [r["epoch"] for r in resumed.epochs] == [1, 2, 3]


@pytest.mark.usefixtures("one_thread")
def test_compare_resumes_a_cell_killed_mid_epoch_to_the_same_results(base_run: Path, tmp_path: Path) -> None:
    opts = dict(source=str(base_run), arms="scratch,finetune", seeds=2, epochs=2, batch_size=4)
    full = compare(_data(base_run), out=tmp_path / "full", progress=False, **opts)
    out = tmp_path / "killed"
    _kill_9(out, 1, command="compare", data=_data(base_run), **opts)  # dies in seed 1's first cell
    assert (out / "INCOMPLETE").exists()
    resumed = compare(_data(base_run), out=out, resume=True, progress=False, **opts)
    for cell in full["cells"]:
        _same_weights(tmp_path / "full" / cell["run_dir"], out / cell["run_dir"])
    assert [c["test_accuracy"] for c in resumed["cells"]] == [c["test_accuracy"] for c in full["cells"]]
    assert resumed["benefits"]["finetune"]["asymptote"]["per_seed"] == full["benefits"]["finetune"]["asymptote"][
        "per_seed"]


# --- 5. a run that diverged is not a finished run ---------------------------------------------------------------


@pytest.mark.parametrize("option", [{"lr": float("inf")}, {"lr": float("nan")}, {"backbone_lr_mult": float("inf")},
                                    {"weight_decay": float("nan")}])
def test_non_finite_options_are_refused_up_front(base_run: Path, tmp_path: Path, option: dict) -> None:
    with pytest.raises(UserError, match="must be"):
        fit(_data(base_run), out=tmp_path / "r", source="cnn_tiny", strategy="scratch", progress=False, **option)
    assert not (tmp_path / "r").exists()


def test_compare_checks_every_arm_before_the_first_cell(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="arm 'finetune:lr=inf'.*finite"):
        compare(_data(base_run), out=tmp_path / "c", source=str(base_run), arms="scratch,finetune:lr=inf", seeds=2,
                epochs=1, progress=False)
    assert not (tmp_path / "c").exists()


def test_a_diverging_run_stops_with_one_sentence_and_stays_incomplete(base_run: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = LitClassifier.training_step

    def blows_up(self, batch, batch_idx):  # the second step's outputs overflow, as a far too high lr makes them
        x, y = batch
        return real(self, (x * float("inf") if self.global_step == 1 else x, y), batch_idx)

    monkeypatch.setattr(LitClassifier, "training_step", blows_up)
    out = tmp_path / "boom"
    with pytest.raises(UserError, match=r"diverged: .* at epoch \d+, step 2; lower --lr \(now 0\.003\)"):
        fit(_data(base_run), out=out, source="cnn_tiny", strategy="scratch", epochs=2, lr=3e-3, progress=False)
    assert (out / "INCOMPLETE").exists() and not (out / "model.json").exists()


# --- 8. modes and cache checksums ----------------------------------------------------------------------------------


def test_outputs_and_cache_respect_the_umask(base_run: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        fit(_data(base_run), out=out, source=str(base_run), strategy="frozen", epochs=1, progress=False)
    finally:
        os.umask(old)
    cache = Path(os.environ["TRANSFERLAB_CACHE_DIR"]) / "features"
    for path in [out / "model.safetensors", out / "model.json", out / "metrics.csv", *cache.glob("*.safetensors")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_tampered_cache_entry_is_recomputed_with_a_warning(base_run: Path, tmp_path: Path, caplog) -> None:
    opts = dict(source=str(base_run), strategy="frozen", epochs=1, seed=7, progress=False)
    first = fit(_data(base_run), out=tmp_path / "a", **opts)
    entry = max((Path(os.environ["TRANSFERLAB_CACHE_DIR"]) / "features").glob("*.safetensors"),
                key=lambda p: p.stat().st_mtime)
    blob = bytearray(entry.read_bytes())
    blob[-8:] = b"\x7f" * 8  # the last feature values, silently changed
    entry.write_bytes(bytes(blob))
    time.sleep(0.01)
    with caplog.at_level("WARNING", logger="transferlab"):
        second = fit(_data(base_run), out=tmp_path / "b", **opts)
    assert "checksum does not match" in caplog.text
    assert second.cache_hit is False and second.test_accuracy == first.test_accuracy
