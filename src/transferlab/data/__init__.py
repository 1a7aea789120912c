"""Image datasets for transfer learning: loading, validation, splits and the built-in Fashion-MNIST."""

from transferlab.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist_dir, read_idx
from transferlab.data.images import (
    ImageData,
    ImageDataset,
    ImageSplit,
    check_image,
    load_images,
    open_image,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "ImageData",
    "ImageDataset",
    "ImageSplit",
    "check_image",
    "find_fashion_mnist_dir",
    "load_images",
    "open_image",
    "read_idx",
]
