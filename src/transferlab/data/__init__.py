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
from transferlab.data.text import TextData, TextSplit, load_texts

SplitDataset = ImageDataset  # item i is (transform(split.load(i)), label) for image and text splits alike


def load_data(
    spec: str,
    modality: str = "image",
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    per_class: int | None = None,
    strict: bool = False,
    eval_per_class: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    encoding_errors: str = "strict",
) -> ImageData:
    """Load ``spec`` as the source's modality asks: :func:`load_images` or :func:`load_texts`."""
    common = dict(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, per_class=per_class,
                  eval_per_class=eval_per_class)
    if modality == "text":
        return load_texts(spec, text_column=text_column, label_column=label_column, encoding_errors=encoding_errors,
                          **common)
    return load_images(spec, strict=strict, **common)


__all__ = [
    "SplitDataset",
    "TextData",
    "TextSplit",
    "load_data",
    "load_texts",
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
