"""Images: folders, ``path,label`` CSVs and Fashion-MNIST; a source's resize/normalise preprocessing; on a CPU
the input size follows the data (a coffee-break run), and a size too small for the source is refused up front."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from transferlab.cardcheck import card_error, int_field, is_number, show
from transferlab.data.folders import IMAGE_SUFFIXES, csv_header, files_under, holds_files
from transferlab.data.images import decode, load_images
from transferlab.data.tabular import column_scale, standardized
from transferlab.errors import UserError
from transferlab.modality import MODALITIES, Modality

if TYPE_CHECKING:
    from transferlab.config import FitConfig
    from transferlab.data.splits import Data
    from transferlab.sources.base import Source

log = logging.getLogger(__name__)
CPU_AUTO_MIN_SIZE = 64  # px: the smallest input size chosen automatically on a CPU
MAX_INPUT_SIZE = 4096  # px, the side of the square input (a card asking for more is refused)
MAX_RESIZED = 8192  # px, input_size / crop_pct: the side images are resized to before the centre crop
RAW_SIZE = 32  # px: the side of the images the logistic-regression baseline sees
CARD_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


class ImageModality(Modality):
    name = "image"
    word = "images"
    default_lr = (1e-3, 0.1)
    options = ("image_size", "channels_last", "strict")
    channels_last = True
    predict_column = "path"

    def claims(self, spec: str) -> bool | None:
        if spec.startswith("fashion-mnist"):
            return True
        path = Path(spec).expanduser()
        if path.is_file():
            header = csv_header(path) if path.suffix.lower() == ".csv" else []
            return None if header is None else "path" in header
        return holds_files(path, IMAGE_SUFFIXES) if path.is_dir() else None

    def load(self, cfg: FitConfig) -> Data:
        return load_images(cfg.data, seed=cfg.data_seed,
                           val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, per_class=cfg.per_class,
                           strict=cfg.strict, eval_per_class=cfg.eval_per_class)

    def preprocessing(self, source: Source, data: Data, cfg: FitConfig, on_cpu: bool,
                      recorded: dict[str, Any] | None = None) -> Any:
        """``--image-size``, or on a CPU the data's own resolution (:func:`cpu_input_size`; a resumed run keeps the
        size it started with), checked against what the source can process."""
        size = cfg.image_size
        if size is None and on_cpu:
            size = recorded["input_size"] if recorded else cpu_input_size(source, data)
        if size is not None:
            check_input_size(source, size)
        return source.preprocessing.resized(size)

    def shared_options(self, source: Source, data: Data, cfg: FitConfig, on_cpu: bool) -> dict[str, Any]:
        size = cfg.image_size
        if size is None:
            size = cpu_input_size(source, data) if on_cpu else source.preprocessing.input_size
        return {"image_size": size}

    def raw_features(self, splits: list[Any]) -> list[Any]:
        """The pixels: each image resized to at most :data:`RAW_SIZE` px square (never up), flattened, each pixel
        standardised on the training split."""
        side = min(RAW_SIZE, splits[0].native_size() or RAW_SIZE)
        pixels = [np.stack([np.asarray(s.load(i).convert("RGB").resize((side, side), Image.Resampling.BILINEAR),
                                       dtype=np.float32).ravel() for i in range(len(s))])
                  if len(s) else np.zeros((0, side * side * 3), np.float32) for s in splits]
        mean, std = column_scale(pixels[0])
        return [standardized(p, mean, std) for p in pixels]

    def preprocessing_from_dict(self, d: dict[str, Any]) -> Any:
        from transferlab.sources.base import ImagePreprocessing

        return ImagePreprocessing.from_dict(d)

    def check_card(self, card_path: Path, pre: dict[str, Any]) -> None:
        if "kind" in pre:
            raise card_error(card_path, "preprocessing.kind", f"{show(pre['kind'])} is not an image preprocessing")
        size = pre.get("input_size")
        int_field(card_path, "preprocessing.input_size", size, 1, MAX_INPUT_SIZE)
        for name in ("mean", "std"):
            v = pre.get(name)
            if not isinstance(v, list) or len(v) != 3 or not all(is_number(x) for x in v):
                raise card_error(card_path, f"preprocessing.{name}",
                                 f"must be a list of 3 finite numbers, not {show(v)}")
        if not all(x > 0 for x in pre["std"]):
            raise card_error(card_path, "preprocessing.std",
                             f"must be positive (it divides every pixel), not {show(pre['std'])}")
        if pre.get("interpolation") not in CARD_INTERPOLATIONS:
            raise card_error(card_path, "preprocessing.interpolation",
                             f"must be one of {', '.join(CARD_INTERPOLATIONS)}, not {show(pre.get('interpolation'))}")
        crop = pre.get("crop_pct")
        if not is_number(crop) or not 0 < crop <= 1 or size / crop > MAX_RESIZED:
            raise card_error(card_path, "preprocessing.crop_pct", "must be a number in (0, 1] with input_size / "
                             f"crop_pct at most {MAX_RESIZED}, not {show(crop)}")

    def export_examples(self, pre: Any) -> tuple[list[Any], dict[int, str]]:
        noise = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)  # not square: resized
        return [Image.new("RGB", (48, 48), (200, 40, 40)), Image.fromarray(noise)], {0: "batch"}

    def predict_inputs(self, paths: list[Path], texts: list[str], bad: list[tuple[str, str]], pre: Any,
                       options: dict[str, Any]) -> tuple[list[tuple[str, Any]], int]:
        from PIL import Image

        if texts:
            raise UserError("--text needs a text run; this run classifies images")
        extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
        files: list[Path] = []
        for p in paths:
            files += sorted(f for f in files_under(p) if f.suffix.lower() in extensions) if p.is_dir() else [p]
        return [(str(f), _reader(f, decode)) for f in files], len(files)


def _reader(path: Path, decode: Any) -> Any:
    def read() -> Any:
        return decode(path)  # raises Unusable with the reason

    return read


def cpu_input_size(source: Source, data: Data) -> int:
    """The input size when ``--image-size`` is not given and training runs on a CPU: the data's own resolution
    rounded up to a multiple of 32 px, at least :data:`CPU_AUTO_MIN_SIZE`, and never above the source's own size.
    Fashion-MNIST's 28 px images train EfficientNet-Lite0 at 64 px instead of 224 (about 12x less work per image;
    the accuracy cost is measured in the README)."""
    own, native = source.preprocessing.input_size, data.train.native_size()
    size = min(own, max(CPU_AUTO_MIN_SIZE, -(-native // 32) * 32))
    if size < own and not _runs_at(source, size):  # e.g. a ViT: its position embeddings fix its input size
        log.info("input size %d px: %s takes no smaller input", own, source.name)
        return own
    if size < own:
        log.info("input size %d px (the data are %d px, %s's own is %d px; on a CPU transferlab picks the smaller: "
                 "--image-size %d for the source's own)", size, native, source.name, own, own)
    return size


def _runs_at(source: Source, size: int) -> bool:
    import torch

    x = torch.zeros(1, 3, size, size)
    try:
        with torch.inference_mode():
            for block in source.blocks.values():
                x = block.eval()(x)
            source.pool(x)
    except (RuntimeError, ValueError, AssertionError):  # timm and torchvision ViTs assert their input size
        return False
    return True


def check_input_size(source: Source, size: int) -> None:
    """Refuse an input size the source's blocks cannot process (e.g. Inception v3 below 75 px), naming the
    smallest that works (found by dry forwards of one blank image: doubling the size, then bisecting), before the
    run directory exists."""
    if size >= source.preprocessing.input_size or _runs_at(source, size):
        return
    low, high = size, size * 2  # small failing forwards are cheap: double up from the size, then bisect
    while not _runs_at(source, high):
        low, high = high, high * 2
        if high > 4096:
            own = source.preprocessing.input_size
            if _runs_at(source, own):
                raise UserError(f"--image-size {size}: {source.name} takes only its own input size, {own} px")
            raise UserError(f"--image-size {size}: {source.name} does not run on square images of any size up to "
                            "4096 px")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if _runs_at(source, mid) else (mid, high)
    raise UserError(f"--image-size {size} is too small for {source.name}: the smallest input it can process is "
                    f"{high} px")


MODALITIES.register("image")(ImageModality())
