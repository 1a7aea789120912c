"""LoRA through PEFT on a sentence encoder: adapters train, the base stays, the run directory holds merged weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from transferlab import api
from transferlab.sources import load_source


def test_lora_trains_adapters_only_and_saves_merged_weights(text_csv: Path, tmp_path: Path) -> None:
    common = dict(text_column="sentence", label_column="topic", per_class=4, eval_per_class=3, epochs=2,
                  progress=False, batch_size=8)
    run = api.fit(str(text_csv), out=tmp_path / "lora", source="minilm", strategy="lora:r=4,alpha=8", **common)
    card = json.loads((tmp_path / "lora" / "model.json").read_text())
    trained, total = card["parameters"]["trained"], card["parameters"]["total"]
    # r=4 on query, key and value of 6 layers of width 384: 6 * 3 * 4 * (384 + 384), plus the head (384 x 3 + 3)
    assert trained == 6 * 3 * 4 * 768 + 384 * 3 + 3 and trained < 0.01 * total
    saved = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert not any("lora" in k for k in saved)  # merged: the source's own architecture, keys and shapes
    source = load_source("minilm")
    key = next(k for k in saved if k.endswith("attention.self.query.weight"))
    block, rest = key.removeprefix("blocks.").split(".", 1)
    before = dict(source.blocks[block].named_parameters())[rest]
    assert not torch.equal(saved[key], before)  # the merged update moved the projection
    value_ln = next(k for k in saved if k.endswith("attention.output.LayerNorm.weight"))
    block, rest = value_ln.removeprefix("blocks.").split(".", 1)
    assert torch.equal(saved[value_ln], dict(source.blocks[block].named_parameters())[rest])  # the base stayed
    rows = api.predict(tmp_path / "lora", [], texts=["the striker scored a late goal"])
    assert rows[0][1] in card["classes"]
    assert run.test_accuracy >= 0


def test_the_adapters_train_at_the_reused_blocks_rate() -> None:
    """At the head's rate (text: 1e-2) LoRA's training loss rose again after 3 epochs on WordNet."""
    from transferlab.transfer import strategies
    from transferlab.transfer.model import build_model

    model = build_model(load_source("minilm"), 3, reuse=5, pretrained=True)  # the last 2 layers new
    groups = strategies.make_strategy("lora", backbone_lr_mult=0.01).attach(model, 5, lr=1e-2)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(rate)  # no weight in two groups
    adapters = [p for n, p in model.blocks.named_parameters() if "lora_" in n]
    assert adapters and {rate[id(p)] for p in adapters} == {1e-2 * 0.01}
    new = [*model.blocks[5].parameters(), *model.blocks[6].parameters(), *model.head.parameters()]
    assert {rate[id(p)] for p in new} == {1e-2}
    assert set(rate) == {id(p) for p in model.parameters() if p.requires_grad}  # every trained weight


def test_the_adapters_dropout_trains_while_the_reused_blocks_stay_in_eval_mode() -> None:
    from transferlab.transfer import strategies
    from transferlab.transfer.model import build_model

    model = build_model(load_source("minilm"), 3, reuse=7, pretrained=True)
    strategies.make_strategy("lora:dropout=0.5", backbone_lr_mult=0.01).attach(model, 7, lr=1e-2)
    drops = [m for n, m in model.blocks.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    base = [m for n, m in model.blocks.named_modules() if "lora_" not in n and isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 6 * 3 and base  # query, key and value of 6 layers; the encoder's own dropout
    model.train()
    assert all(m.training for m in drops) and not any(m.training for m in base)
    model.eval()
    assert not any(m.training for m in drops)
    strategies.make_strategy("lora").finalize(model)  # merged: no adapter, and nothing left that follows the mode
    assert not any("lora_" in n for n, _ in model.named_modules()) and model.trains_in_frozen == []
