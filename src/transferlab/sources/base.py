"""The one surface every source exposes, whatever its origin (timm, torchvision, packaged weights, run dirs)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How inputs must look for the source: square size, normalisation, resize interpolation and crop."""

    input_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    modality = "image"
    collate = None  # the default collation stacks image tensors

    def transform(self, augment: bool = False) -> Callable[[Any], torch.Tensor]:
        """PIL RGB image -> normalised float tensor at ``input_size``.

        Evaluation resizes to ``input_size / crop_pct`` and centre-crops, as the source was evaluated. Augmentation
        (tuned arms only) is deliberately light: a mild random resized crop and a horizontal flip."""
        from torchvision.transforms import v2

        if augment:
            geometry = v2.Compose([
                v2.ToImage(),
                v2.RandomResizedCrop(self.input_size, scale=(0.7, 1.0), ratio=(0.9, 1.1),
                                     interpolation=self._interpolation(), antialias=True),
                v2.RandomHorizontalFlip(),
            ])
        else:
            geometry = self.view(self.crop_pct)
        return v2.Compose([geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def view(self, crop_pct: float) -> Callable[[Any], torch.Tensor]:
        """PIL RGB image -> uint8 tensor (3, S, S): resized to ``S / crop_pct`` on its shorter side, centre-cropped
        to S (evaluation's geometry; :mod:`transferlab.data.decoded` stores it)."""
        from torchvision.transforms import v2

        return v2.Compose([v2.ToImage(), v2.Resize(int(round(self.input_size / crop_pct)),
                                                   interpolation=self._interpolation(), antialias=True),
                           v2.CenterCrop(self.input_size)])

    def _interpolation(self) -> Any:
        from torchvision.transforms import v2

        return v2.InterpolationMode(self.interpolation) if self.interpolation in INTERPOLATIONS else \
            v2.InterpolationMode.BILINEAR

    def dataset(self, split: Any, augment: bool = False) -> torch.utils.data.Dataset | None:
        """``split`` decoded once into the cache (:mod:`transferlab.data.decoded`), or None when it cannot be."""
        from transferlab.data.decoded import decoded_dataset

        return decoded_dataset(split, self, augment)

    def resized(self, size: int | None) -> ImagePreprocessing:
        """The same preprocessing at another input size (``None`` keeps the source's)."""
        return self if size is None else replace(self, input_size=int(size))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImagePreprocessing:
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
        )


class GlobalPool(nn.Sequential):
    """Global average pooling to a flat feature vector."""

    def __init__(self) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


@dataclass
class Source:
    """Where the knowledge comes from.

    ``blocks`` are ordered from input to output; applying them in turn and then ``pool`` gives a
    ``num_features`` vector. "Reuse the first n" counts these blocks. ``classifier`` is the source's own
    head (for example ImageNet's 1000 classes) when it has one.
    """

    name: str
    architecture: str  # the spec that rebuilds this architecture with random weights
    blocks: OrderedDict[str, nn.Module]
    pool: nn.Module
    num_features: int
    preprocessing: Any  # ImagePreprocessing, or the modality's own (text: tokens or words; tables: Standardize)
    pretrained: bool
    weights_origin: str
    rebuild: Callable[[], Source] = field(repr=False)
    classifier: nn.Module | None = None
    source_classes: list[str] | None = None
    modality: str = "image"  # the name of its modality (image, text, tabular): which data it takes
    adapt: Callable[..., Source] | None = None  # unbound (word vectors, MLPs): the modality binds it to the data
    reusable: int | None = None  # blocks that carry the source's knowledge (None: all); the default --reuse
    cache_partial: bool = True  # a cut before the last block gives fixed-size tensors that can be cached
    prefix_pool: nn.Module | None = None  # a feature vector from a cut before the last block (word vectors: a mean)
    info: dict[str, Any] = field(default_factory=dict)  # facts worth recording in the run, e.g. vocabulary coverage

    @property
    def default_reuse(self) -> int:
        """The blocks ``--reuse`` takes by default: every block that carries the source's knowledge."""
        return len(self.blocks) if self.reusable is None else self.reusable

    def fresh(self) -> Source:
        """A randomly initialised copy of the same architecture: the no-transfer baseline's starting point."""
        return self.rebuild()

    def block_table(self) -> list[tuple[str, int]]:
        """(name, parameter count) for every block, plus the source head when there is one."""
        rows = [(name, sum(p.numel() for p in b.parameters())) for name, b in self.blocks.items()]
        if self.classifier is not None:
            rows.append(("classifier (source head)", sum(p.numel() for p in self.classifier.parameters())))
        return rows


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes of named tensors, in their given order."""
    h = hashlib.sha256()
    for key, t in tensors.items():
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def state_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes and values): identifies exactly which weights ran."""
    return tensors_digest(module.state_dict())


def check_decomposition(
    full: nn.Module, blocks: OrderedDict[str, nn.Module], pool: nn.Module, classifier: nn.Module, size: int
) -> bool:
    """True when classifier(pool(blocks(x))) reproduces the full model's output on a random input."""
    full.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = full(x)
        got = x
        for b in blocks.values():
            got = b(got)
        got = classifier(pool(got))
    return expected.shape == got.shape and torch.allclose(expected, got, atol=1e-4, rtol=1e-3)
