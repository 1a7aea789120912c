"""Lightning's Trainer as transferlab runs it: atomic checkpoints read with weights_only, devices, precision."""

from __future__ import annotations

import logging
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.errors import UserError
from transferlab.files import atomic_write, check_file
from transferlab.train.budget import MIN_DELTA, Budget
from transferlab.train.callbacks import EpochBar, EpochLine

log = logging.getLogger(__name__)
BEST = "best"  # checkpoints/best.ckpt: the weights of the best validation so far


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically in their own folder (temporary file, fsync, rename: a full disk or a kill
    never leaves a truncated ``last.ckpt``) and read only with ``weights_only=True``; an unreadable one is one
    sentence. :meth:`check` reads a checkpoint before training starts and hands it to Lightning, so it is read
    once."""

    def __init__(self) -> None:
        super().__init__()
        self._read: tuple[str, dict[str, Any]] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def check(self, path: Path, expected: dict[str, torch.Tensor]) -> int:
        """Read and check ``path`` against the module's ``expected`` state dict now; returns the epoch (counted
        from 0) the checkpoint closed."""
        self._read = (str(path), read_checkpoint(path, expected, training=True))
        return int(self._read[1]["epoch"])

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self._read is not None and self._read[0] == str(path):
            ckpt, self._read = self._read[1], None
            return ckpt
        return read_checkpoint(Path(path))


def read_checkpoint(path: Path, expected: dict[str, torch.Tensor] | None = None, training: bool = False,
                    ) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True``, or one sentence saying why it cannot be resumed:
    not a regular file, larger than the module's weights could make it, unreadable, or not what this run writes
    (with ``expected``: the module's state dict, every key and shape; with ``training``: the optimiser state and
    the loop's counters a resume needs)."""
    hint = "delete it to restart from scratch, or start over with --overwrite"
    weights = sum(t.numel() * t.element_size() for t in (expected or {}).values())
    check_file(path, "checkpoint", max(64 << 20, 8 * weights + (64 << 20)) if expected is not None else None)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a zip, a refused pickle: all mean "cannot resume from this"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} is not a readable checkpoint (truncated, corrupt or not a checkpoint: {first}); "
                        f"{hint}") from None
    problem = _checkpoint_problem(ckpt, expected, training)
    if problem is not None:
        raise UserError(f"{path} is not a checkpoint of this run ({problem}); {hint}")
    return ckpt


def _checkpoint_problem(ckpt: Any, expected: dict[str, torch.Tensor] | None, training: bool) -> str | None:
    if not isinstance(ckpt, dict) or not {"state_dict", "epoch", "global_step"} <= set(ckpt):
        return "it lacks the state_dict, epoch or global_step of a training checkpoint"
    for key in ("epoch", "global_step"):
        if not isinstance(ckpt[key], int) or isinstance(ckpt[key], bool) or ckpt[key] < 0:
            return f"{key} is {str(ckpt[key])[:40]!r}, not a count"
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "its state_dict is not a dict of tensors"
    if expected is not None:
        missing = [k for k in expected if k not in state]
        if missing or len(state) != len(expected):
            return f"its weights do not match the model: {len(missing)} of {len(expected)} keys missing"
        wrong = next((k for k, t in expected.items() if tuple(state[k].shape) != tuple(t.shape)), None)
        if wrong is not None:
            return f"weight {wrong!r} has shape {tuple(state[wrong].shape)}, the model {tuple(expected[wrong].shape)}"
    if training:
        if not isinstance(ckpt.get("optimizer_states"), list) or not ckpt["optimizer_states"]:
            return "it holds no optimiser state"
        if not isinstance(ckpt.get("callbacks", {}), dict) or not isinstance(ckpt.get("loops", {}), dict):
            return "its callback or loop state is malformed"
    return None


def trainer_devices(devices: str) -> int | str | list[int]:
    """``--devices`` as Lightning takes it: a count, "auto", or a list of device indices."""
    if devices == "auto":
        return devices
    parts = [int(p) for p in str(devices).split(",") if p.strip()]
    return parts[0] if len(parts) == 1 and "," not in str(devices) else parts


def runs_on_cpu(cfg: Any) -> bool:
    """Whether training will run on the CPU (``--accelerator cpu``, or no GPU to be had)."""
    return getattr(cfg, "accelerator", "auto") == "cpu" or not torch.cuda.is_available()


def make_trainer(out: Path, budget: Budget | None, progress: bool, callbacks: list[L.Callback], cfg: Any = None,
                 ) -> L.Trainer:
    """Lightning's Trainer with transferlab's checkpointing and training budget (None: one epoch, to ask Lightning
    whether the hardware options work); ``cfg`` gives accelerator, devices, nodes, the distributed strategy and
    precision. Samplers are transferlab's own (``use_distributed_sampler=False``): the
    training order is sharded by :class:`EpochSampler` and evaluation is padded by :class:`Padded`, so that no
    example is dropped or counted twice."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    accelerator = getattr(cfg, "accelerator", "auto")
    on_cpu = runs_on_cpu(cfg)
    # the --distributed name and 16-mixed with --accelerator cpu were checked by FitConfig before any slow import;
    # 16-mixed with --accelerator auto on a machine without a GPU needs torch to tell
    if on_cpu and getattr(cfg, "precision", "32") == "16-mixed":
        raise UserError("--precision 16-mixed needs a GPU; on the CPU use bf16-mixed (or the default 32)")
    try:
        return _trainer(out, budget, progress, callbacks, cfg, accelerator, on_cpu)
    except (MisconfigurationException, ValueError) as e:  # an accelerator, device count or strategy not available
        raise UserError(f"--accelerator/--devices/--num-nodes/--distributed: {str(e).splitlines()[0]}") from None


def experiment_logger(cfg: Any, out: Path) -> Any:
    """``--logger``: Lightning's TensorBoard logger in ``RUN/tensorboard`` or its MLflow logger (the experiment
    ``transferlab``, the run named after the run directory), with the run's options as hyper-parameters; False
    for ``csv`` (``metrics.csv`` is transferlab's own, always written)."""
    kind = getattr(cfg, "logger", "csv")
    if kind == "csv":
        return False
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=out, name="tensorboard", version="", default_hp_metric=False)
    else:
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name="transferlab", run_name=out.name,
                              tracking_uri=os.environ["MLFLOW_TRACKING_URI"])  # checked by FitConfig
    logger.log_hyperparams({k: v for k, v in cfg.to_dict().items() if v is not None})
    return logger


class TimeCap(L.Callback):
    """``--max-time`` as a hard cap. Lightning's own (its ``Timer``, whose elapsed time is in the checkpoint, so a
    resumed run continues the same cap) asks to stop but is ignored until ``min_steps`` are done; once its time is
    up, the minimum is lifted too (an advise confirmation cell capped at 37 s trained 90 s without this)."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        from lightning.pytorch.callbacks import Timer

        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        left = timer.time_remaining() if timer is not None else None
        up = left is not None and left <= 0
        if trainer.strategy.broadcast(up):  # every process alike
            trainer.fit_loop.epoch_loop.min_steps = None
            trainer.fit_loop.min_epochs = None
            trainer.should_stop = True


def _trainer(out: Path, budget: Budget | None, progress: bool, callbacks: list[L.Callback], cfg: Any,
             accelerator: str, on_cpu: bool) -> L.Trainer:
    """Its ``checkpoint_io`` is an :class:`AtomicCheckpointIO`."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    ckpt = [ModelCheckpoint(  # checkpoints/last.ckpt after every epoch, once the epoch's rows are recorded
        dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True,
        enable_version_counter=False,
    )]
    if budget is not None and budget.early_stopping:  # see train/budget.py; both callbacks' state is checkpointed
        ckpt += [
            ModelCheckpoint(dirpath=out / "checkpoints", filename=BEST, monitor="val_loss", mode="min", save_top_k=1,
                            save_weights_only=True, enable_version_counter=False, auto_insert_metric_name=False),
            EarlyStopping(monitor="val_loss", mode="min", patience=budget.patience, min_delta=MIN_DELTA,
                          check_on_train_epoch_end=False),
        ]
    return L.Trainer(
        max_epochs=1 if budget is None else budget.max_epochs,
        max_steps=-1 if budget is None or budget.max_steps is None else budget.max_steps,
        max_time=None if budget is None or budget.max_time is None else timedelta(seconds=budget.max_time),
        min_steps=None if budget is None else budget.min_steps,
        check_val_every_n_epoch=1 if budget is None else budget.val_every,
        accelerator=accelerator,
        devices=trainer_devices(getattr(cfg, "devices", "1")),
        num_nodes=getattr(cfg, "num_nodes", 1),
        strategy=getattr(cfg, "distributed", "auto"),
        precision=getattr(cfg, "precision", "32"),
        use_distributed_sampler=False,
        logger=False if budget is None else experiment_logger(cfg, out),  # (None: only asking about the hardware)
        callbacks=[*callbacks, *ckpt, EpochLine(), *([EpochBar()] if progress else []),
                   *([TimeCap()] if budget is not None and budget.max_time is not None else [])],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
        deterministic=(True if on_cpu else "warn") if getattr(cfg, "deterministic", False) else None,
    )


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter and hints that do not apply here off the terminal."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # resume
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # frozen blocks, on purpose
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # validation sums are reduced by hand
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # --logger: epochs still log
