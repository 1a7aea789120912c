"""A strategy is a Lightning callback in the shape of BaseFinetuning: its schedule runs per epoch and survives
--resume (its parameter groups are in the checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab import config
from transferlab.api import fit
from transferlab.train import callbacks
from transferlab.transfer import strategies
from transferlab.transfer.model import TransferModel


class UnfreezeAtEpoch2(strategies.Strategy):
    """A test schedule: the reused blocks start frozen and join the optimiser at a tenth of the rate in epoch 2."""

    name = "unfreeze2"

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(reuse)

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        if epoch >= 1:  # the state for this epoch, also in the first epoch after a resume
            self.model_.freeze(0, bn=self.reuse_)
            self.train_also(pl_module, list(self.model_.blocks)[: self.reuse_], optimizer, self.lr_ / 10)


@pytest.fixture
def scheduled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "STRATEGY_NAMES", (*config.STRATEGY_NAMES, "unfreeze2"))
    monkeypatch.setitem(strategies.STRATEGIES._items, "unfreeze2", UnfreezeAtEpoch2)


def _data(base_run: Path) -> str:
    return json.loads((base_run / "model.json").read_text())["data"]


def test_a_schedule_changes_what_trains_and_survives_resume(base_run: Path, tmp_path: Path, scheduled: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opts = dict(source=str(base_run), strategy="unfreeze2", reuse=2, epochs=4, progress=False)
    fit(_data(base_run), out=tmp_path / "full", **opts)
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    source = load_file(str(base_run / "model.safetensors"))
    assert not torch.equal(full["blocks.conv1.0.weight"], source["blocks.conv1.0.weight"])  # it did unfreeze

    real_end = callbacks.MetricsCSV.on_train_epoch_end

    def die_in_epoch_3(self, trainer, module):  # after the checkpoint of epoch 2, which has both groups
        real_end(self, trainer, module)
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.MetricsCSV, "on_train_epoch_end", die_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(_data(base_run), out=tmp_path / "cut", **opts)
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "UnfreezeAtEpoch2" in k)
    assert len(state["internal_optimizer_metadata"][0]) == 2  # the head's group and the unfrozen blocks'
    assert len(ckpt["optimizer_states"][0]["param_groups"]) == 2
    monkeypatch.setattr(callbacks.MetricsCSV, "on_train_epoch_end", real_end)
    fit(_data(base_run), out=tmp_path / "cut", resume=True, **opts)
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_strategy_parameters_are_recorded(base_run: Path, tmp_path: Path) -> None:
    run = fit(_data(base_run), out=tmp_path / "f", source=str(base_run), strategy="finetune", epochs=1,
              backbone_lr_mult=0.5, freeze_bn=False, progress=False)
    resolved = json.loads((run.out / "config.json").read_text())["resolved"]
    assert resolved["strategy"] == {"name": "finetune", "backbone_lr_mult": 0.5, "freeze_bn": False}
    assert resolved["modality"] == "image"


def test_every_registered_strategy_is_named_before_lightning_loads() -> None:
    assert tuple(strategies.STRATEGIES) == config.STRATEGY_NAMES
    assert all(issubclass(strategies.STRATEGIES.get(n), strategies.Strategy) for n in config.STRATEGY_NAMES)
