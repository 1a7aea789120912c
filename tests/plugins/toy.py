"""A plug-in from outside the package, in one file: a source and a strategy, each declared once.

This is the README's "How to add a source or a strategy", tested (tests/test_plugins.py): importing this file is
all it takes for ``fit``, ``compare`` and ``transferlab sources`` to know ``toy_cnn`` and ``toy_top``."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from transferlab import catalogue
from transferlab.sources.base import GlobalPool, ImagePreprocessing, Source
from transferlab.transfer.model import TransferModel
from transferlab.transfer.strategies import Strategy


def toy_cnn(r: catalogue.Request) -> Source:
    """Two conv blocks whose "pretrained" weights are a fixed draw (a stand-in for weights of your own)."""

    def build() -> OrderedDict[str, nn.Module]:
        return OrderedDict(conv1=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
                           conv2=nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()))

    if r.pretrained:
        torch.manual_seed(1234)
    return Source(name="toy_cnn", architecture="toy_cnn", blocks=build(), pool=GlobalPool(), num_features=16,
                  preprocessing=ImagePreprocessing(input_size=24), pretrained=r.pretrained, weights_origin="a draw",
                  rebuild=lambda: toy_cnn(catalogue.Request("toy_cnn", "toy_cnn", pretrained=False)))


class TopBlock(Strategy):
    """Only the last ``open`` reused blocks train (with the head); the rest stay as the source left them."""

    name = "toy_top"
    open: int

    def freeze_model(self, model: TransferModel, reuse: int) -> None:
        model.freeze(max(0, reuse - self.open))


catalogue.register_source(catalogue.SourceKind("toy_cnn", "image", toy_cnn, "a toy CNN from a plug-in",
                                               in_cards=True))  # its runs' cards may name it: rebuilt by toy_cnn
catalogue.register_strategy(catalogue.StrategyKind("toy_top", TopBlock, {"open": catalogue.Option(int, 1, 0, 100)},
                                                   summary="train the last `open` reused blocks only"))
