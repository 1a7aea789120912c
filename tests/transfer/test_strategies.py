"""A strategy is a Lightning callback in the shape of BaseFinetuning: its schedule runs per epoch and survives
--resume (its parameter groups are in the checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import stopped_at_epoch_end
from transferlab import catalogue, config
from transferlab.api import fit
from transferlab.errors import UserError
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
    monkeypatch.setitem(catalogue._STRATEGIES, "unfreeze2", catalogue.StrategyKind("unfreeze2", UnfreezeAtEpoch2))


def _data(base_run: Path) -> str:
    return json.loads((base_run / "model.json").read_text())["data"]


def test_a_schedule_changes_what_trains_and_survives_resume(base_run: Path, tmp_path: Path, scheduled: None) -> None:
    opts = dict(source=str(base_run), strategy="unfreeze2", reuse=2, epochs=4, progress=False)
    fit(_data(base_run), out=tmp_path / "full", **opts)
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    source = load_file(str(base_run / "model.safetensors"))
    assert not torch.equal(full["blocks.conv1.0.weight"], source["blocks.conv1.0.weight"])  # it did unfreeze

    with stopped_at_epoch_end(3), pytest.raises(KeyboardInterrupt):  # after epoch 2's checkpoint, with both groups
        fit(_data(base_run), out=tmp_path / "cut", **opts)
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "UnfreezeAtEpoch2" in k)
    assert len(state["internal_optimizer_metadata"][0]) == 2  # the head's group and the unfrozen blocks'
    assert len(ckpt["optimizer_states"][0]["param_groups"]) == 2
    fit(_data(base_run), out=tmp_path / "cut", resume=True, **opts)
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_strategy_parameters_are_recorded(base_run: Path, tmp_path: Path) -> None:
    run = fit(_data(base_run), out=tmp_path / "f", source=str(base_run), strategy="finetune", epochs=1,
              backbone_lr_mult=0.5, freeze_bn=False, progress=False)
    resolved = json.loads((run.out / "config.json").read_text())["resolved"]
    assert resolved["strategy"] == {"name": "finetune", "backbone_lr_mult": 0.5, "freeze_bn": False, "decay": None,
                                    "reg": "none", "alpha": 0.1, "beta": 0.01, "eta": 0.001, "k": 1}
    assert resolved["modality"] == "image"
    opts = dict(source=str(base_run), strategy="finetune", epochs=1, backbone_lr_mult=0.5, freeze_bn=False,
                progress=False, resume=True)
    assert fit(_data(base_run), out=run.out, **opts).test_accuracy == run.test_accuracy  # reused as it is
    record = json.loads((run.out / "config.json").read_text())
    del record["resolved"]["strategy"]["decay"]  # as an earlier transferlab, without that option, wrote it
    (run.out / "config.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="earlier transferlab whose finetune had no decay option"):
        fit(_data(base_run), out=run.out, **opts)  # its numbers are not this version's: not reused


def test_every_strategy_in_the_catalogue_is_a_strategy_of_that_name() -> None:
    for name in catalogue.strategy_names():
        cls = catalogue.strategy(name).cls()
        assert issubclass(cls, strategies.Strategy) and cls.name == name


# --- the strategies of the transformer era ------------------------------------------------------------------------


def _model(base_run: Path, reuse: int = 3) -> TransferModel:
    from transferlab.sources import load_source
    from transferlab.transfer.model import build_model

    return build_model(load_source(str(base_run)), 3, reuse=reuse, pretrained=True)


def test_layer_wise_decay_gives_every_block_its_rate(base_run: Path) -> None:
    model = _model(base_run)
    groups = strategies.make_strategy("finetune:decay=0.5").attach(model, 3, lr=1.0)
    blocks = list(model.blocks)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    for i, block in enumerate(blocks):  # counted from the top: conv3 0.5, conv2 0.25, conv1 0.125
        assert {rate[id(p)] for p in block.parameters()} == {0.5 ** (len(blocks) - i)}, i
    assert {rate[id(p)] for p in model.head.parameters()} == {1.0}
    plain = strategies.make_strategy("finetune", backbone_lr_mult=0.1).attach(_model(base_run, 2), 2, lr=1.0)
    assert [g["lr"] for g in plain] == [0.1, 1.0]  # without decay: the reused blocks at lr x backbone_lr_mult


def test_strategy_specs_are_checked_before_anything_loads() -> None:
    from transferlab.config import FitConfig, parse_strategy

    assert parse_strategy("gradual:every=2,decay=0.8,reg=l2sp") == ("gradual", {"every": 2, "decay": 0.8,
                                                                                 "reg": "l2sp"})
    for spec, fragment in [("finetune:decay=2", "decay must lie in"), ("gradual:every=0", r"every must lie in \[1, "),
                           ("finetune:reg=dropout", "reg must be one of"), ("lora:rank=4", "unknown option 'rank'"),
                           ("frozen:decay=0.5", "it takes no options"), ("l2sp:alpha=x", "is not a number")]:
        with pytest.raises(UserError, match=fragment):
            FitConfig(strategy=spec)
    arm = config.Arm.parse("finetune:decay=0.7,reuse=2")
    assert arm.strategy == "finetune:decay=0.7" and arm.options == {"reuse": 2}
    assert config.split_arms("scratch,finetune:reuse=3,lr=1e-3,gradual:every=2,decay=0.8") == [
        "scratch", "finetune:reuse=3,lr=1e-3", "gradual:every=2,decay=0.8"]  # options of several arms on one line


def test_l2sp_pulls_towards_the_source_and_bss_penalises_small_singular_values(base_run: Path) -> None:
    model = _model(base_run, reuse=2)
    strategy = strategies.make_strategy("l2sp:alpha=2,beta=0")
    strategy.attach(model, 2, lr=1.0)
    module = torch.nn.Module()
    module.device = torch.device("cpu")  # what penalty() reads of the LightningModule
    assert strategy.penalty(module, None).item() == 0.0  # at the source's weights
    with torch.no_grad():
        model.blocks[0][0].weight.add_(0.5)
    n = model.blocks[0][0].weight.numel()
    assert strategy.penalty(module, None).item() == pytest.approx(2 / 2 * 0.25 * n)
    bss = strategies.make_strategy("bss:eta=1,k=1")
    assert bss.wants_features
    feats = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    assert float(bss.penalty(module, feats)) == pytest.approx(1.0)


def test_gradual_opens_one_block_per_epoch_from_the_top_and_resumes(base_run: Path, tmp_path: Path) -> None:
    opts = dict(source=str(base_run), strategy="gradual:every=1", reuse=3, epochs=4, progress=False)
    fit(_data(base_run), out=tmp_path / "full", **opts)
    full = load_file(str(tmp_path / "full" / "model.safetensors"))

    opened: list[list[bool]] = []  # which blocks trained in each epoch

    def record(trainer, module) -> None:
        opened.append([b[0].weight.requires_grad for b in module.net.blocks])

    with stopped_at_epoch_end(3, record), pytest.raises(KeyboardInterrupt):
        fit(_data(base_run), out=tmp_path / "cut", **opts)
    assert opened == [[False, False, False], [False, False, True], [False, True, True]]
    fit(_data(base_run), out=tmp_path / "cut", resume=True, **opts)
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_bss_and_lora_refusal_run_through_fit(base_run: Path, tmp_path: Path) -> None:
    run = fit(_data(base_run), out=tmp_path / "bss", source=str(base_run), strategy="bss", epochs=1, progress=False)
    assert run.parameters["trained"] == run.parameters["total"]
    with pytest.raises(UserError, match="lora adapts the attention projections"):
        fit(_data(base_run), out=tmp_path / "lora", source=str(base_run), strategy="lora", epochs=1, progress=False)
    assert not (tmp_path / "lora").exists()  # refused before the run directory was made
    from transferlab.api import compare

    with pytest.raises(UserError, match="arm 'lora'.*lora adapts"):  # and before a comparison's first cell
        compare(_data(base_run), out=tmp_path / "cmp", source=str(base_run), arms="scratch,lora", seeds=2,
                epochs=1, progress=False)
    assert not (tmp_path / "cmp").exists()


def test_lpft_starts_from_a_converged_linear_probe_and_wise_zero_returns_to_it(base_run: Path, tmp_path: Path) -> None:
    """``lpft:wise=0`` averages all the way back to LP-FT's starting point: the source's blocks exactly, and the head
    of the linear probe, which predicts as the logistic regression on the source's features does."""
    import numpy as np

    from transferlab.evaluate.logreg import linear_head
    from transferlab.transfer.rundir import load_run

    data = json.loads((base_run / "model.json").read_text())["data"]
    run = fit(data, out=tmp_path / "lp", source=str(base_run), strategy="lpft:wise=0", epochs=2, progress=False)
    source, tuned = load_file(str(base_run / "model.safetensors")), load_file(str(run.out / "model.safetensors"))
    assert all(torch.equal(source[k], tuned[k]) for k in source if k.startswith("blocks."))
    model, _ = load_run(run.out)
    from transferlab.modality import get

    card = json.loads((run.out / "model.json").read_text())
    pre = get("image").preprocessing_from_dict(card["preprocessing"])
    split = get("image").load(config.FitConfig(data=data)).train
    x = torch.stack([pre.transform()(split.load(i)) for i in range(len(split.labels))])
    with torch.inference_mode():
        feats = model.forward_features(x).double().numpy()
    weight, bias, _ = linear_head(feats, np.asarray(split.labels), len(card["classes"]), seed=0)
    assert np.allclose(tuned["head.weight"].double().numpy(), weight, atol=1e-5)
    assert (model.head(torch.as_tensor(feats).float()).argmax(1).numpy() == (feats @ weight.T + bias).argmax(1)).all()
    plain = fit(data, out=tmp_path / "ft", source=str(base_run), strategy="lpft", epochs=2, progress=False)
    moved = load_file(str(plain.out / "model.safetensors"))
    assert any(not torch.equal(source[k], moved[k]) for k in source if k.startswith("blocks."))  # then it tunes
