"""Datasets for transfer learning: loading, validation, splits and the built-in Fashion-MNIST and WordNet tasks.

The names below are imported on first use (PEP 562), so that parsing a built-in data spec
(``transferlab.data.fashion_mnist``, ``transferlab.data.wordnet``) does not import torch: the CLI checks a
command's input before any slow import.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FASHION_MNIST_CLASSES": "fashion_mnist", "find_fashion_mnist_dir": "fashion_mnist", "read_idx": "fashion_mnist",
    "ImageData": "images", "ImageDataset": "images", "ImageSplit": "images", "check_image": "images",
    "load_images": "images", "open_image": "images", "SplitDataset": "images",
    "TextData": "text", "TextSplit": "text", "load_texts": "text", "load_data": "images",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    module = importlib.import_module(f"transferlab.data.{_WHERE[name]}")
    return getattr(module, "ImageDataset" if name == "SplitDataset" else name)
