"""The target model: a source's ordered blocks, global pooling and a new head, with a frozen prefix."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferlab.sources.base import Source


class TransferModel(nn.Module):
    """``head(pool(blocks(x)))``. The first ``frozen`` blocks take no gradient and stay in eval mode.

    Keeping frozen blocks in eval mode matters for BatchNorm: in train mode it would keep updating its running
    statistics even with ``requires_grad=False`` (pytorch/pytorch#86590). ``trains_in_frozen`` lists modules inside
    them that follow the model's mode all the same (LoRA's adapter dropout).
    """

    def __init__(self, blocks: OrderedDict[str, nn.Module], pool: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.blocks = nn.Sequential(blocks)
        self.pool = pool
        self.head = nn.Linear(num_features, num_classes)
        self.frozen = 0
        self.bn_frozen = 0
        self.trains_in_frozen: list[nn.Module] = []

    def freeze(self, n: int, bn: int | None = None) -> None:
        """Freeze the first ``n`` blocks (and unfreeze the rest); keep the BatchNorm statistics of the first ``bn``
        blocks fixed (default ``n``) while their weights may still train."""
        self.frozen, self.bn_frozen = n, max(n, bn or 0)
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i >= n)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for block in list(self.blocks)[: self.bn_frozen]:
            for m in block.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for block in list(self.blocks)[: self.frozen]:
            block.eval()
        for m in self.trains_in_frozen:
            m.train(mode)
        return self

    def prefix(self, n: int) -> nn.Sequential:
        """The first ``n`` blocks (shared modules, not copies); with every block, the pooling too, so that what a
        frozen prefix hands on (and the feature cache stores) is the feature vector rather than a feature map."""
        blocks = list(self.blocks)[:n]
        return nn.Sequential(*blocks, self.pool) if n == len(self.blocks) else nn.Sequential(*blocks)

    def tail(self, n: int) -> nn.Sequential:
        """Everything after ``prefix(n)``: the remaining blocks, the pool and the head (shared modules)."""
        rest = list(self.blocks)[n:]
        return nn.Sequential(*rest, self.pool, self.head) if rest else nn.Sequential(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_model(source: Source, num_classes: int, reuse: int | None, pretrained: bool) -> TransferModel:
    """Reuse the first ``reuse`` blocks of ``source`` (all when None) and re-initialise the rest.

    With ``pretrained=False`` every block comes from a fresh random copy of the same architecture. Reused blocks
    are deep copies, so one loaded source can seed many independent models.
    """
    n = len(source.blocks) if reuse is None else reuse
    fresh = source.fresh() if (not pretrained or n < len(source.blocks)) else None
    blocks = OrderedDict(
        (name, copy.deepcopy(block) if pretrained and i < n else fresh.blocks[name])
        for i, (name, block) in enumerate(source.blocks.items())
    )
    pool = copy.deepcopy(source.pool) if pretrained else fresh.pool
    return TransferModel(blocks, pool, source.num_features, num_classes)


@torch.inference_mode()
def run_inference(module: nn.Module, loader: DataLoader, desc: str = "", progress: bool = False,
                  channels_last: bool = False) -> torch.Tensor:
    """Outputs of ``module`` over ``loader`` (eval mode; batches of images in the channels_last layout when the
    modality asks for it), concatenated."""
    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    outs = []
    for x, _ in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append(module(x).float().cpu().contiguous())
    return torch.cat(outs) if outs else torch.zeros(0)
