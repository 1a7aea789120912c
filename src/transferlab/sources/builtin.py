"""The built-in sources by name: an ImageNet CNN with packaged weights, small CNNs and MLPs to develop your own
source with, and the packaged sentence encoder."""

from __future__ import annotations

import functools
from pathlib import Path

from transferlab.preflight import BUILTIN_SOURCES
from transferlab.registry import Registry
from transferlab.sources.base import Source
from transferlab.sources.cnn import WIDTHS, simple_cnn
from transferlab.sources.mlp import MLP_WIDTHS, mlp_source
from transferlab.sources.text import BUILTIN_ENCODER, builtin_encoder_path, sentence_encoder_source
from transferlab.sources.zoo import efficientnet_lite0

BUILTIN: Registry = Registry("source")
BUILTIN.register("efficientnet_lite0")(efficientnet_lite0)
for _name in WIDTHS:
    BUILTIN.register(_name)(functools.partial(simple_cnn, _name))
for _name in MLP_WIDTHS:
    BUILTIN.register(_name)(functools.partial(mlp_source, _name))


@BUILTIN.register(BUILTIN_ENCODER)
def _minilm(pretrained: bool, weights: Path | None) -> Source:
    return sentence_encoder_source(BUILTIN_ENCODER, str(builtin_encoder_path()), pretrained)


assert dict(BUILTIN_SOURCES).keys() == set(BUILTIN), "preflight.BUILTIN_SOURCES must name exactly the built-ins"
