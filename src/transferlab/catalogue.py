"""Every plug-in declared once, read without torch: the kinds of source and the strategies.

A **source kind** is a built-in name (``efficientnet_lite0``), a prefix (``timm:``), a kind of file (word vectors:
``.txt``, ``.vec``, ``.bin``) or of folder (a run directory, a vectors store). Its entry says which data it takes,
the names people know it by, whether a run card may name it, and where its loader lives (``module:function``,
imported only when a source of that kind loads). ``preflight`` (checks before torch), ``load_source``, run cards,
``transferlab sources`` and the error sentences all read these entries; nothing keeps a second list. timm's
``@register_model`` with its ``pretrained_cfg`` is the model: metadata first, code on demand.

A **strategy** declares its options (type, range, default) here, so that a wrong spec is one sentence before any
slow import, and its class (``module:Class``, a Lightning callback) receives them resolved.

Plug-ins from outside the package register the same way, from their own file (the README's "How to add")::

    from transferlab import catalogue
    catalogue.register_source(catalogue.SourceKind("my_cnn", "image", "my_module:load", "my CNN"))
    catalogue.register_strategy(catalogue.StrategyKind("my_ft", "my_module:MyFinetune", {...}))
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from transferlab.errors import UserError, did_you_mean

# --- sources ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What a source loader is asked for: the spec as given, the part after a prefix (or the path), and how."""

    spec: str
    rest: str
    pretrained: bool = True
    weights: Path | None = None
    max_vectors: int | None = None
    encoding_errors: str = "strict"
    from_card: bool = False  # rebuilding a run card's architecture: no weights, never a download


@dataclass(frozen=True)
class SourceKind:
    """One kind of source. ``name`` is a built-in name, a prefix ending in ``:`` or, for kinds told by a path
    (``suffixes``, ``holds``), a word for messages."""

    name: str
    modality: str | None  # the data it takes; None: a run directory's card says
    loader: str | Callable[[Request], Any]  # "module:function" taking a Request, returning a Source
    summary: str  # what `transferlab sources` shows
    weights: str = ""  # where its weights come from
    aliases: tuple[str, ...] = ()  # names people know it by (compared lower-cased)
    suffixes: tuple[str, ...] = ()  # a file with one of these suffixes is of this kind
    holds: tuple[str, ...] = ()  # a folder holding one of these files is of this kind
    examples: tuple[str, ...] = ()  # well-known specs of a prefix kind (listing, did-you-mean)
    pattern: str = r".+"  # what the part after a prefix must be
    in_cards: bool = False  # a run card may name it as its architecture
    listed: bool = True  # shown by `transferlab sources` (a second spelling of a kind is not)
    offline: str | None = None  # "module:function"(spec) -> str: whether its weights are here now (listing)
    classifies: bool = False  # its weights include a classifier with named classes: `predict SOURCE` uses it

    @property
    def is_prefix(self) -> bool:
        return self.name.endswith(":")

    @property
    def by_path(self) -> bool:
        return bool(self.suffixes or self.holds)

    def load(self, request: Request) -> Any:
        return _resolve(self.loader)(request)


_SOURCES: dict[str, SourceKind] = {}


def register_source(kind: SourceKind) -> SourceKind:
    """Add a source kind (a duplicate name or alias is an error)."""
    taken = {n for k in _SOURCES.values() for n in (k.name, *k.aliases)}
    clash = next((n for n in (kind.name, *kind.aliases) if n in taken), None)
    if clash is not None:
        raise ValueError(f"source {clash!r} is already registered")
    _SOURCES[kind.name] = kind
    return kind


def source_kinds() -> list[SourceKind]:
    return list(_SOURCES.values())


def canonical(spec: str) -> str:
    """A source name as the catalogue knows it: ``all-MiniLM-L6-v2`` is ``minilm``."""
    low = spec.lower()
    return next((k.name for k in _SOURCES.values() if low in k.aliases), spec)


def find_source(spec: str) -> tuple[SourceKind, str] | None:
    """The kind of a source spec (``scratch:`` removed first) and the part its loader reads, or None when nothing
    matches (an unknown name, a path that does not exist). Reads no more than a card's ``modality``."""
    name = canonical(spec.removeprefix("scratch:"))
    if name in _SOURCES and not (_SOURCES[name].is_prefix or _SOURCES[name].by_path):
        return _SOURCES[name], ""
    for kind in _SOURCES.values():
        if kind.is_prefix and name.startswith(kind.name) and re.fullmatch(kind.pattern, name[len(kind.name):]):
            return kind, name[len(kind.name):]
    path = Path(name).expanduser()
    for kind in _SOURCES.values():
        if kind.suffixes and path.suffix.lower() in kind.suffixes and path.is_file():
            return kind, str(path)
        if kind.holds and path.is_dir() and any((path / f).is_file() for f in kind.holds):
            return kind, str(path)
    return None


def source_modality(spec: str) -> str | None:
    """The modality a source spec takes, as far as its name, its suffix or its run card says (None: unknown)."""
    found = find_source(spec)
    if found is None:
        return None
    kind, rest = found
    if kind.modality is not None:
        return kind.modality
    from transferlab.files import read_json

    try:  # a run directory: its card says (checked properly when it loads)
        card = read_json(Path(rest) / "model.json", "model card")
    except UserError:
        return None
    modality = card.get("modality", "image") if isinstance(card, dict) else None
    return modality if isinstance(modality, str) else None


def unknown_source(spec: str, option: str = "--source") -> UserError:
    """The one sentence for a source that is none of the catalogue's kinds."""
    name = canonical(spec.removeprefix("scratch:"))
    close = suggest(name)
    files = ", ".join(k.summary for k in _SOURCES.values() if k.by_path)
    if Path(name).expanduser().exists():
        return UserError(f"{option} {spec!r} is none of {files}")
    looks_like_path = "/" in name or any(name.lower().endswith(s) for k in _SOURCES.values() for s in k.suffixes)
    builtins = ", ".join(k.name for k in _SOURCES.values() if not (k.is_prefix or k.by_path))
    forms = ", ".join(f"{k.name}<{'arch' if k.modality == 'image' else 'name'}>" for k in _SOURCES.values()
                      if k.is_prefix)
    return UserError(f"{option} {spec!r}: " + (f"{name} does not exist" if looks_like_path else
                                                 f"unknown source{close}")
                     + f"; use a built-in ({builtins}), {forms}, {files}, or scratch:<source>")


def suggest(name: str, kinds: list[SourceKind] | None = None) -> str:
    """' (did you mean X?)' for the source names (never two spellings of one) closest to ``name``, else ''."""
    by_spelling = {n.lower(): n_ for k in (kinds or _SOURCES.values()) if not k.by_path
                   for n_ in ((k.name,) if not k.is_prefix else k.examples) for n in (n_, *k.aliases)}
    close = dict.fromkeys(by_spelling[c] for c in difflib.get_close_matches(name.lower(), list(by_spelling), n=6,
                                                                           cutoff=0.5))
    return " (did you mean " + " or ".join(repr(c) for c in list(close)[:3]) + "?)" if close else ""


def in_cards(arch: str) -> SourceKind | None:
    """The kind of a run card's architecture, when a card may name it (never a run directory or a file)."""
    found = find_source(arch) if not arch.startswith("scratch:") else None
    if found is None or not found[0].in_cards or found[0].by_path:
        return None
    return found[0]


# --- strategies ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of a strategy: its type, default and range (``low`` and ``high`` inclusive unless ``open``
    names the end that is not), or its ``choices``. ``from_run``: set by the run (``--backbone-lr-mult``), not in
    the spec."""

    kind: type
    default: Any
    low: float = -math.inf
    high: float = math.inf
    open: str = ""  # "low" or "high": that end is excluded
    choices: tuple[str, ...] = ()
    from_run: bool = False

    def check(self, spec: str, key: str, value: Any) -> Any:
        """The value as this option takes it, or one sentence naming the spec and the key."""
        if self.choices:
            if value not in self.choices:
                raise UserError(f"strategy {spec!r}: {key} must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if isinstance(value, str):
            try:
                value = self.kind(value)
            except ValueError:
                kind = "a whole number" if self.kind is int else "a number"
                raise UserError(f"strategy {spec!r}: {key}={value!r} is not {kind}") from None
        if self.kind is float and not math.isfinite(value):
            raise UserError(f"strategy {spec!r}: {key} must be a finite number, not {value}")
        too_low = value < self.low or (self.open == "low" and value == self.low)
        too_high = value > self.high or (self.open == "high" and value == self.high)
        if too_low or too_high:
            left, right = "(" if self.open == "low" else "[", ")" if self.open == "high" else "]"
            raise UserError(f"strategy {spec!r}: {key} must lie in {left}{self.low:g}, {self.high:g}{right}, not "
                            f"{value:g}")
        return value


@dataclass(frozen=True)
class StrategyKind:
    """A strategy: its class (``module:Class``, resolved when a run builds it), its options, and what shared code
    must know before the class loads: whether it starts from the source's weights, and whether the reused blocks
    stay fixed (so their outputs can be cached)."""

    name: str
    loader: str | type
    options: Mapping[str, Option] = field(default_factory=dict)
    pretrained: bool = True
    frozen_prefix: bool = False
    summary: str = ""

    @property
    def spec_options(self) -> dict[str, Option]:
        return {k: o for k, o in self.options.items() if not o.from_run}

    def cls(self) -> type:
        return _resolve(self.loader)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value: ``given`` (checked) over the defaults."""
        unknown = next((k for k in given if k not in self.options), None)
        if unknown is not None:
            raise UserError(f"strategy {self.name!r} has no option {unknown!r}")
        return {k: self.options[k].check(self.name, k, given[k]) if k in given and given[k] is not None
                else (given[k] if k in given else o.default) for k, o in self.options.items()}


_STRATEGIES: dict[str, StrategyKind] = {}


def register_strategy(kind: StrategyKind) -> StrategyKind:
    if kind.name in _STRATEGIES:
        raise ValueError(f"strategy {kind.name!r} is already registered")
    _STRATEGIES[kind.name] = kind
    return kind


def strategy_names() -> tuple[str, ...]:
    return tuple(_STRATEGIES)


def strategy(name: str) -> StrategyKind:
    """The strategy called ``name`` (an unknown name is one sentence with close matches)."""
    if name not in _STRATEGIES:
        raise UserError(f"unknown strategy {name!r}{did_you_mean(name, _STRATEGIES)}; known: "
                        f"{', '.join(_STRATEGIES)}")
    return _STRATEGIES[name]


def starts_pretrained(spec: str) -> bool:
    """Whether the strategy a spec names starts from the source's weights (every one but ``scratch``)."""
    return strategy(parse_strategy(spec)[0]).pretrained


@cache
def parse_strategy(spec: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``name[:key=value,...]`` -> (name, the options the spec sets, checked), parsed once per spec."""
    name, _, rest = spec.strip().partition(":")
    kind = strategy(name)
    takes, options = kind.spec_options, {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in takes:
            what = f"its options are {', '.join(takes)}" if takes else "it takes no options"
            raise UserError(f"strategy {spec!r}: unknown option {key!r}{did_you_mean(key, takes)}; {what}")
        options[key] = takes[key].check(spec, key, value)
    return name, tuple(options.items())


def _resolve(target: str | Callable[..., Any]) -> Any:
    """A ``module:name`` string's object (imported now), or the object itself."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# --- the built-in plug-ins ----------------------------------------------------------------------------------------

Z, T, M = "transferlab.sources.zoo", "transferlab.sources.text", "transferlab.sources"
for _kind in (
    SourceKind("efficientnet_lite0", "image", f"{Z}:load_lite0", "EfficientNet-Lite0, 9 blocks (timm's "
               "tf_efficientnet_lite0)", "ImageNet-1k (packaged)", aliases=("tf_efficientnet_lite0",
               "efficientnet-lite0"), in_cards=True, offline=f"{Z}:lite0_offline", classifies=True),
    SourceKind("cnn_tiny", "image", f"{M}.cnn:load", "a small CNN, 3 conv blocks", "none (train your own)",
               in_cards=True),
    SourceKind("cnn_small", "image", f"{M}.cnn:load", "a small CNN, 4 conv blocks", "none (train your own)",
               in_cards=True),
    SourceKind("mlp_tiny", "tabular", f"{M}.mlp:load", "an MLP for tables, 2 hidden layers of 32",
               "none (train your own on a table)", in_cards=True),
    SourceKind("mlp_small", "tabular", f"{M}.mlp:load", "an MLP for tables, 3 hidden layers of 64",
               "none (train your own on a table)", in_cards=True),
    SourceKind("minilm", "text", f"{T}:load_minilm", "all-MiniLM-L6-v2, the packaged sentence encoder",
               "sentence-transformers all-MiniLM-L6-v2 (packaged)", in_cards=True,
               aliases=("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"), offline=f"{T}:minilm_offline"),
    SourceKind("timm:", "image", f"{Z}:load_timm", "any timm architecture", "--weights, the Hugging Face cache, "
               "or the hub when online",
               examples=("timm:resnet50", "timm:resnet18", "timm:vit_base_patch16_224.augreg_in21k"),
               pattern=r"(timm/)?[A-Za-z0-9][\w.-]*", in_cards=True, offline=f"{Z}:timm_offline", classifies=True),
    SourceKind("hf-hub:", "image", f"{Z}:load_timm", "timm's weights by their Hugging Face id (hf-hub:timm/<arch>)",
               "the Hugging Face cache, or the hub when online", pattern=r"timm/[A-Za-z0-9][\w.-]*", listed=False,
               classifies=True),
    SourceKind("torchvision:", "image", f"{Z}:load_torchvision", "a torchvision model", "--weights, torch hub's "
               "cache, or a download when online", examples=("torchvision:vgg16", "torchvision:inception_v3",
               "torchvision:resnet50"), pattern=r"[A-Za-z0-9][\w.-]*", in_cards=True,
               offline=f"{Z}:torchvision_offline", classifies=True),
    SourceKind("sentence-transformers:", "text", f"{T}:load_sentence_transformers", "a sentence-transformers model "
               "(a folder or a hub id)", "the folder, or the Hugging Face cache",
               examples=("sentence-transformers:<folder or hub id>",), in_cards=True),
    SourceKind("words", "text", f"{T}:load_words", "random word embeddings: words[:DIM][:bag|cnn]",
               "none: random word embeddings", examples=("words[:DIM][:bag|cnn]",), in_cards=True),
    SourceKind("words:", "text", f"{T}:load_words", "random word embeddings of DIM dimensions",
               "none: random word embeddings", pattern=r"[0-9a-z:]+", in_cards=True, listed=False),
    SourceKind("vectors:", "text", f"{T}:load_vector_file", "a word-vectors file or store", "the file",
               listed=False),
    SourceKind("word vectors", "text", f"{T}:load_vector_file", "a word-vectors file (.txt, .vec, .bin: GloVe, "
               "word2vec, fastText)", "your vectors", suffixes=(".txt", ".vec", ".bin")),
    SourceKind("vectors store", "text", f"{T}:load_vector_file", "a vectors store written by pretrain-vectors",
               "your vectors", holds=("words.json",)),
    SourceKind("run directory", None, "transferlab.transfer.rundir:load", "a transferlab run directory (with its "
               "model.json)", "its own weights", holds=("model.json", "config.json")),
):
    register_source(_kind)

# L2-SP (Li, Grandvalet & Davoine, ICML 2018). The authors' own script (holyseven/TransferLearningClassification,
# run_classification/train.sh: --weight_decay_mode 1 --weight_decay_rate 0.1 --weight_decay_rate2 0.01) uses
# alpha = 0.1 on the reused weights and beta = 0.01 on the new layer, both on TensorFlow's l2_loss (= 1/2 ||.||^2),
# i.e. exactly the alpha/2 and beta/2 of penalties.l2sp(). The paper tunes alpha per dataset (0.1 or 0.01); tllib's
# examples/task_adaptation/image_classification/delta.py --regularization-type l2_sp defaults to 0.01 for both
# (--trade-off-backbone / --trade-off-head, on the same 1/2 ||.||^2).
L2SP_ALPHA = 0.1
L2SP_BETA = 0.01
# BSS (Chen et al., NeurIPS 2019): k = 1 smallest singular value, eta = 0.001. Also tllib's defaults
# (examples/task_adaptation/image_classification/bss.py: --k 1, --trade-off 0.001).
BSS_K = 1
BSS_ETA = 0.001

S = "transferlab.transfer.strategies"
_RUN = {"backbone_lr_mult": Option(float, 0.1, 0, 100, from_run=True), "freeze_bn": Option(bool, True, from_run=True)}
_DECAY = {"decay": Option(float, None, 0, 1, open="low")}
_L2SP = {"alpha": Option(float, L2SP_ALPHA, 0, 1e6), "beta": Option(float, L2SP_BETA, 0, 1e6)}
_BSS = {"eta": Option(float, BSS_ETA, 0, 1e6), "k": Option(int, BSS_K, 1, 10_000)}
_TUNING = {**_RUN, **_DECAY, "reg": Option(str, "none", choices=("none", "l2sp", "bss")), **_L2SP, **_BSS}
for _strategy in (
    StrategyKind("scratch", f"{S}:Scratch", pretrained=False,
                 summary="the same architecture with random weights, all trained: the no-transfer baseline"),
    StrategyKind("frozen", f"{S}:Frozen", frozen_prefix=True,
                 summary="the reused blocks fixed (their outputs cached), the rest and the head trained"),
    StrategyKind("finetune", f"{S}:Finetune", _TUNING,
                 summary="everything trains, the reused blocks at lr x backbone_lr_mult or layer-wise rates"),
    StrategyKind("gradual", f"{S}:Gradual", {**_TUNING, "every": Option(int, 1, 1, 10_000)},
                 summary="ULMFiT's gradual unfreezing: one more reused block every `every` epochs"),
    StrategyKind("l2sp", f"{S}:L2SP", {**_RUN, **_DECAY, **_L2SP},
                 summary="finetune with the L2-SP penalty towards the source's weights"),
    StrategyKind("bss", f"{S}:BSS", {**_RUN, **_DECAY, **_BSS},
                 summary="finetune with Batch Spectral Shrinkage of the features"),
    StrategyKind("lpft", f"{S}:LPFT", {**_RUN, **_DECAY, "wise": Option(float, 1.0, 0, 1)},
                 summary="LP-FT: a linear probe of the head first, then finetune; wise<1 averages the weights with "
                         "the probe's (WiSE-FT)"),
    StrategyKind("lora", f"{S}:LoRA", {"r": Option(int, 8, 1, 4096), "alpha": Option(float, 16.0, 0, 1e6),
                                       "dropout": Option(float, 0.0, 0, 1, open="high"),
                                       "backbone_lr_mult": _RUN["backbone_lr_mult"]},
                 summary="low-rank adapters on the reused blocks' attention projections (PEFT), trained at lr x "
                         "backbone_lr_mult"),
):
    register_strategy(_strategy)
