"""Image transforms built from a source's preprocessing: eval (resize, centre crop) and light augmentation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from transferlab.sources.base import Preprocessing

_INTERPOLATION = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def make_transform(pre: Preprocessing, augment: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised float tensor at ``pre.input_size``.

    Evaluation resizes to ``input_size / crop_pct`` and centre-crops, as the source was evaluated. Augmentation
    (tuned arms only) is deliberately light: a mild random resized crop and a horizontal flip.
    """
    size = pre.input_size
    interp = _INTERPOLATION.get(pre.interpolation, v2.InterpolationMode.BILINEAR)
    if augment:
        geometry = [
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.9, 1.1), interpolation=interp, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [
            v2.Resize(int(round(size / pre.crop_pct)), interpolation=interp, antialias=True),
            v2.CenterCrop(size),
        ]
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    )
