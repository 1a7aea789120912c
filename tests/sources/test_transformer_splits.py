"""Transformers split into their layers (timm and torchvision ViTs, sentence encoders), checked against the models'
own forward; a model that does not split as expected is reused whole."""

from __future__ import annotations

import logging
from collections import OrderedDict

import pytest
import torch
from torch import nn

from transferlab import api
from transferlab.sources import load_source
from transferlab.sources.text import (
    HFEncoder,
    SentencePool,
    builtin_encoder_path,
    encoder_blocks,
    pad_collate,
    sentence_encoder_source,
)
from transferlab.sources.zoo import _from_timm_model, _torchvision_blocks
from transferlab.transfer.model import build_model

TEXTS = ["a wolf and a sheep", "Cheese is made from milk.", "x",
         "The stock market fell sharply on Monday after the central bank's announcement."]


def _run(blocks: OrderedDict[str, nn.Module], pool: nn.Module, x):
    with torch.no_grad():
        for block in blocks.values():
            x = block.eval()(x)
        return pool.eval()(x)


# --- timm ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, last", [
    ({}, "norm"),  # class token, then timm's final norm
    ({"global_pool": "avg", "fc_norm": True}, "block2"),  # average of the patch tokens, fc_norm (norm is Identity)
    ({"reg_tokens": 2, "no_embed_class": True}, "norm"),  # register tokens, position embedding before the concat
    ({"dynamic_img_size": True, "pre_norm": True}, "norm"),  # NHWC patches, resampled positions; norm_pre
])
def test_timm_vit_splits_into_patch_embedding_blocks_and_norm(kwargs: dict, last: str) -> None:
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, **kwargs).eval()
    source = _from_timm_model("vit", "vit", model, False, "random init", lambda: None)
    assert list(source.blocks) == ["patch_embed", "block1", "block2"] + (["norm"] if last == "norm" else [])
    assert source.classifier is model.head and source.num_features == 192
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    got = _run(source.blocks, source.pool, x)
    assert features.std() > 0.1 and logits.std() > 0.1
    torch.testing.assert_close(got, features, rtol=0, atol=1e-5)
    torch.testing.assert_close(source.classifier(got), logits, rtol=0, atol=1e-5)


def test_a_timm_vit_that_does_not_split_is_reused_whole(caplog: pytest.LogCaptureFixture) -> None:
    import timm

    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1)  # two heads averaged
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        source = _from_timm_model("deit", "deit", model, False, "random init", lambda: None)
    assert list(source.blocks) == ["features"] and "reused as one block" in caplog.text


def test_timm_vit_source_lists_its_blocks() -> None:
    rows = api.source_blocks("timm:vit_tiny_patch16_224")
    assert [name for name, _ in rows] == ["patch_embed", *(f"block{i}" for i in range(1, 13)), "norm",
                                          "classifier (source head)"]
    assert rows[1][1] == rows[12][1] == 444_864 and rows[-1][1] == 192 * 1000 + 1000


# --- torchvision -----------------------------------------------------------------------------------------------


def test_torchvision_vit_splits_into_its_encoder_layers() -> None:
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=16, num_layers=3, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=5).eval()
    blocks, pool, classifier, num_features = _torchvision_blocks("vit_tiny", model)
    assert list(blocks) == ["patch_embed", "block1", "block2", "block3", "norm"] and num_features == 16
    assert blocks["norm"] is model.encoder.ln and classifier is model.heads
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = _run(blocks, pool, x)
    heads, model.heads = model.heads, nn.Identity()  # torchvision initialises heads to zeros: compare features
    with torch.no_grad():
        features = model(x)
    model.heads = heads
    assert features.std() > 0.1
    torch.testing.assert_close(got, features, rtol=0, atol=1e-5)


def test_torchvision_vit_b_32_lists_its_blocks() -> None:
    rows = api.source_blocks("torchvision:vit_b_32")  # vit_b_16 is the same, 4x slower
    assert [name for name, _ in rows] == ["patch_embed", *(f"block{i}" for i in range(1, 13)), "norm",
                                          "classifier (source head)"]
    assert rows[-1][1] == 768 * 1000 + 1000


# --- sentence encoders ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return load_source("minilm")


def test_minilm_splits_into_embeddings_and_layers_and_gives_the_same_embeddings(minilm) -> None:
    from sentence_transformers import SentenceTransformer

    assert list(minilm.blocks) == ["embeddings", *(f"layer{i}" for i in range(1, 7))]
    assert minilm.default_reuse == 7 and not minilm.cache_partial and isinstance(minilm.prefix_pool, SentencePool)
    ids, _ = pad_collate([(minilm.preprocessing.encode(t), 0) for t in TEXTS], minilm.preprocessing.pad_id)
    got = _run(minilm.blocks, minilm.pool, ids)
    st = SentenceTransformer(str(builtin_encoder_path()), device="cpu")
    expected = torch.as_tensor(st.encode(TEXTS, convert_to_numpy=True))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_padding_never_counts_at_any_cut(minilm) -> None:
    """A short sentence padded in a batch with a long one has the embedding it has alone, at every cut (the layers
    apply the attention mask; the prefix pool ignores padding)."""
    pre = minilm.preprocessing
    short, long = pre.encode(TEXTS[2]), pre.encode(TEXTS[3])
    batch, _ = pad_collate([(short, 0), (long, 0)], pre.pad_id)
    model = build_model(minilm, 3, None, pretrained=True).eval()
    for n in (1, 3, 7):
        cut = nn.Sequential(model.prefix(n), minilm.prefix_pool) if n < 7 else model.prefix(n)
        with torch.no_grad():
            alone, padded = cut(short[None]), cut(batch)
        assert padded.shape == (2, 384)
        torch.testing.assert_close(padded[0], alone[0], rtol=0, atol=1e-5)
    assert model(batch).shape == (2, 3)


def test_eager_attention_gets_the_mask_bert_builds(minilm) -> None:
    """The additive mask of eager attention, not only SDPA's: the split still reproduces the whole model."""
    from transformers import AutoModel

    from transferlab.sources.text import _tokenizer

    folder = minilm.preprocessing.path
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    pool = SentencePool("mean", True)
    blocks = encoder_blocks(model, _tokenizer(folder), 0, pool, "eager")
    assert len(blocks) == 7
    ids, _ = pad_collate([(minilm.preprocessing.encode(t), 0) for t in TEXTS], 0)
    expected = _run(OrderedDict(t=HFEncoder(model, 0)), pool, ids)
    torch.testing.assert_close(_run(blocks, pool, ids), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(_run(blocks, pool, ids), _run(minilm.blocks, minilm.pool, ids), rtol=0, atol=1e-5)


def test_an_encoder_that_does_not_split_is_reused_whole(minilm, caplog: pytest.LogCaptureFixture) -> None:
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    from transferlab.sources.text import _tokenizer

    tokenizer, pool = _tokenizer(minilm.preprocessing.path), SentencePool()
    decoder = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                   is_decoder=True))  # causal attention: the bidirectional split must not pass
    other = DistilBertModel(DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32))  # not BERT-shaped
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        assert list(encoder_blocks(decoder, tokenizer, 0, pool, "decoder")) == ["transformer"]
        assert list(encoder_blocks(other, tokenizer, 0, pool, "distil")) == ["transformer"]
    assert "decoder does not split" in caplog.text and "distil is not BERT-shaped" in caplog.text


def test_a_random_encoder_splits_the_same_way() -> None:
    scratch = sentence_encoder_source("scratch:minilm", str(builtin_encoder_path()), False)
    assert list(scratch.blocks) == ["embeddings", *(f"layer{i}" for i in range(1, 7))]
    assert scratch.blocks["embeddings"].training  # the check left a freshly built model in its own mode


def test_minilm_lists_its_layers() -> None:
    assert [name for name, _ in api.source_blocks("minilm")] == ["embeddings", *(f"layer{i}" for i in range(1, 7))]
