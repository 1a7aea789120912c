from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import stopped_at_epoch_end
from transferlab.api import fit, predict
from transferlab.config import FitConfig
from transferlab.errors import UserError
from transferlab.sources import load_source
from transferlab.train import features
from transferlab.transfer.model import build_model
from transferlab.transfer.rundir import load_run
from transferlab.transfer.strategies import make_strategy


def test_run_directory_is_complete(base_run: Path) -> None:
    for name in ("config.json", "metrics.csv", "model.safetensors", "model.json", "confusion_matrix.png"):
        assert (base_run / name).is_file(), name
    assert not (base_run / "checkpoints").exists()  # kept only while a run is unfinished
    assert not (base_run / "INCOMPLETE").exists()
    rows = list(csv.DictReader(open(base_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "wall_seconds"}
    card = json.loads((base_run / "model.json").read_text())
    assert card["complete"] and card["classes"] == ["blue", "green", "red"]
    assert card["metrics"]["test_accuracy"] > 0.6  # the colour task is easy: the scratch source learned it
    config = json.loads((base_run / "config.json").read_text())
    assert config["config"]["strategy"] == "scratch" and "torch" in config["versions"]


def test_run_directory_is_a_source(base_run: Path) -> None:
    source = load_source(str(base_run))
    assert list(source.blocks) == ["conv1", "conv2", "conv3"]
    assert source.source_classes == ["blue", "green", "red"]
    trained = load_file(str(base_run / "model.safetensors"))
    assert torch.equal(source.blocks["conv1"][0].weight, trained["blocks.conv1.0.weight"])


def test_reuse_n_keeps_first_blocks_bit_for_bit_and_reinitialises_the_rest(base_run: Path) -> None:
    source = load_source(str(base_run))
    torch.manual_seed(1)
    model = build_model(source, 3, reuse=2, pretrained=True)
    for name in ("conv1", "conv2"):
        for a, b in zip(model.blocks[list(source.blocks).index(name)].state_dict().values(),
                        source.blocks[name].state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(model.blocks[2][0].weight, source.blocks["conv3"][0].weight)
    model.blocks[0][0].weight.data += 1  # reused blocks are copies: the source is untouched
    assert not torch.equal(model.blocks[0][0].weight, source.blocks["conv1"][0].weight)


def test_finetune_param_groups_use_backbone_lr_mult(base_run: Path) -> None:
    model = build_model(load_source(str(base_run)), 3, reuse=2, pretrained=True)
    groups = make_strategy("finetune", backbone_lr_mult=0.1).attach(model, 2, lr=1e-2)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-3), 1e-2]
    n_backbone = sum(p.numel() for p in model.blocks[:2].parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_backbone


def test_frozen_batchnorm_running_stats_do_not_move(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "frozen-nocache"
    fit(_data(base_run), out=out,
        source=str(base_run), strategy="frozen", reuse=2, cache=False, epochs=1, progress=False)
    before = load_file(str(base_run / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    for key in ("blocks.conv1.1.running_mean", "blocks.conv1.1.running_var", "blocks.conv2.1.running_mean"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["blocks.conv3.1.running_mean"], after["blocks.conv3.1.running_mean"])


def _data(base_run: Path) -> str:
    return json.loads((base_run / "model.json").read_text())["data"]


def test_frozen_features_are_cached_and_backbone_not_rerun(base_run: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = features.run_inference

    def spy(module, loader, desc="", progress=False, channels_last=False):
        calls.append(desc)
        return real(module, loader, desc, progress, channels_last)

    monkeypatch.setattr(features, "run_inference", spy)
    first = fit(_data(base_run), out=tmp_path / "a", source=str(base_run), strategy="frozen", epochs=2,
                seed=3, progress=False)
    assert first.cache_hit is False and [c for c in calls if c.startswith("features")]
    calls.clear()
    second = fit(_data(base_run), out=tmp_path / "b", source=str(base_run), strategy="frozen", epochs=2,
                 seed=3, progress=False)
    assert second.cache_hit is True
    assert not [c for c in calls if c.startswith("features")]
    assert second.test_accuracy == first.test_accuracy


def test_interrupted_run_is_marked_and_resumes_to_the_same_model(base_run: Path, tmp_path: Path) -> None:
    opts = dict(source=str(base_run), strategy="frozen", reuse=2, epochs=3, progress=False)
    full = fit(_data(base_run), out=tmp_path / "full", **opts)

    out = tmp_path / "cut"
    with stopped_at_epoch_end(2), pytest.raises(KeyboardInterrupt):
        fit(_data(base_run), out=out, **opts)
    assert (out / "INCOMPLETE").exists() and not (out / "model.json").exists()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    before = (out / "metrics.csv").read_text().splitlines()[1]  # epoch 1, checkpointed, with its wall seconds
    with pytest.raises(UserError, match="incomplete"):
        load_source(str(out))
    with pytest.raises(UserError, match="--resume"):
        fit(_data(base_run), out=out, **opts)
    resumed = fit(_data(base_run), out=out, resume=True, **opts)
    assert not (out / "INCOMPLETE").exists()
    assert [r["epoch"] for r in resumed.epochs] == [1, 2, 3]
    assert (out / "metrics.csv").read_text().splitlines()[1] == before  # continued from epoch 1, not restarted
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.test_accuracy == full.test_accuracy


def test_resume_with_other_options_is_refused(base_run: Path, tmp_path: Path) -> None:
    fit(_data(base_run), out=tmp_path / "r", source=str(base_run), strategy="frozen", epochs=1, progress=False)
    with pytest.raises(UserError, match="different --epochs"):
        fit(_data(base_run), out=tmp_path / "r", source=str(base_run), strategy="frozen", epochs=2,
            resume=True, progress=False)
    # a record written before an option existed: an option listed as added resumes at its old meaning, any other
    # one (here --max-steps, whose None now means "the convergence cap") may have meant something else
    path = tmp_path / "r" / "config.json"
    record = json.loads(path.read_text())
    del record["config"]["fold"]
    path.write_text(json.dumps(record))
    again = dict(source=str(base_run), strategy="frozen", epochs=1, resume=True, progress=False)
    assert fit(_data(base_run), out=tmp_path / "r", **again).test_accuracy >= 0
    del record["config"]["logger"]  # where and how fast a run trains is no difference, absent or not
    path.write_text(json.dumps(record))
    assert fit(_data(base_run), out=tmp_path / "r", **again).test_accuracy >= 0
    del record["config"]["max_steps"]
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"different --max-steps \(not set, now None\); it was trained by an earlier"):
        fit(_data(base_run), out=tmp_path / "r", **again)


def test_a_new_option_is_a_decision_for_resume() -> None:
    """Records written before an option existed lack it, and resuming them is refused unless ``ADDED_OPTIONS``
    gives the value its absence meant (or it is a runtime option). Adding an option is therefore a decision; this
    list makes it one. The options below are today's; each was weighed when the check became strict, and none but
    fold needed an entry (no run directory in the README's evidence lacks any of them)."""
    known = set("data source strategy reuse epochs max_steps max_time min_steps patience batch_size lr "
                "backbone_lr_mult freeze_bn weight_decay image_size seed split_seed fold per_class eval_per_class "
                "val_fraction test_fraction weights strict cache num_workers pin_memory channels_last compile "
                "deterministic accelerator devices num_nodes distributed precision curve text_model max_vectors "
                "text_column label_column encoding_errors metric class_weight sampler logger impute".split())
    new = {f.name for f in dataclasses.fields(FitConfig)} - known
    assert not new, (f"new options {sorted(new)}: list each in config.ADDED_OPTIONS with the value that means what "
                     "older records did (or in RUNTIME_OPTIONS), then here")


def test_reuse_beyond_blocks_and_unknown_options_are_user_errors(base_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="exceeds the 3 blocks"):
        fit(_data(base_run), out=tmp_path / "x", source=str(base_run), strategy="frozen", reuse=4)
    with pytest.raises(UserError, match="did you mean 'epochs'"):
        fit(_data(base_run), out=tmp_path / "x", source=str(base_run), epoch=3)
    with pytest.raises(UserError, match="unknown strategy 'frozn'.*did you mean 'frozen'"):
        fit(_data(base_run), out=tmp_path / "x", source=str(base_run), strategy="frozn")
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_predict_classifies_files_and_folders(base_run: Path) -> None:
    data = Path(_data(base_run))
    rows = predict(base_run, [data / "red", data / "green" / "0.png"])
    assert len(rows) == 17
    assert {label for _, label, _ in rows} <= {"red", "green", "blue"}
    assert all(0 < p <= 1 for _, _, p in rows)
    correct = sum(label == Path(path).parent.name for path, label, _ in rows)
    assert correct >= 12
    _, model_card = load_run(base_run)
    assert model_card["strategy"] == "scratch"


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_finetune_keeps_reused_batchnorm_statistics_by_default(base_run: Path, tmp_path: Path, freeze_bn: bool) -> None:
    out = tmp_path / "ft"
    fit(_data(base_run), out=out, source=str(base_run), strategy="finetune", reuse=2, freeze_bn=freeze_bn,
        epochs=1, lr=1e-2, backbone_lr_mult=1.0, progress=False)
    before, after = load_file(str(base_run / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not torch.equal(before["blocks.conv1.0.weight"], after["blocks.conv1.0.weight"])  # tuned either way
    assert not torch.equal(before["blocks.conv1.1.weight"], after["blocks.conv1.1.weight"])  # BN affine too
    same_stats = torch.equal(before["blocks.conv1.1.running_mean"], after["blocks.conv1.1.running_mean"])
    assert same_stats is freeze_bn


def test_pretrain_reports_skill_against_a_naive_model(image_folder: Path, tmp_path: Path) -> None:
    from transferlab.api import pretrain

    result, check = pretrain(str(image_folder), arch="cnn_tiny", out=tmp_path / "src", epochs=2, lr=3e-3,
                             progress=False)
    assert check["majority_baseline"] == pytest.approx(1 / 3, abs=0.15)
    assert check["chance"] == pytest.approx(1 / 3)
    card = json.loads((tmp_path / "src" / "model.json").read_text())
    assert result.test_accuracy > check["majority_baseline"] + check["margin"]
    assert card["source_check"]["clearly_better_than_naive"] is True
    assert load_source(str(tmp_path / "src")).source_classes == ["blue", "green", "red"]


def test_pretrain_marks_a_source_that_learned_nothing(image_folder: Path, tmp_path: Path) -> None:
    from transferlab.api import pretrain

    _, check = pretrain(str(image_folder), arch="cnn_tiny", out=tmp_path / "src", epochs=1, lr=1e-9,
                        progress=False)
    assert check["clearly_better_than_naive"] is False
    card = json.loads((tmp_path / "src" / "model.json").read_text())
    assert card["source_check"]["clearly_better_than_naive"] is False
