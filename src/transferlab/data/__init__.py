"""Datasets: readers for images, texts and tables, the shared split rules, and the built-in Fashion-MNIST and
WordNet tasks. Nothing here imports torch (a reader's errors come before any slow import)."""

from __future__ import annotations

from transferlab.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist_dir, read_idx
from transferlab.data.images import ImageSplit, check_image, load_images, open_image
from transferlab.data.splits import Data, SplitDataset, build_data
from transferlab.data.text import TextSplit, load_texts

__all__ = [
    "FASHION_MNIST_CLASSES", "Data", "ImageSplit", "SplitDataset", "TextSplit", "build_data", "check_image",
    "find_fashion_mnist_dir", "load_images", "load_texts", "open_image", "read_idx",
]
