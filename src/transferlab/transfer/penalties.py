"""Regularised fine-tuning penalties as small pure functions: L2-SP, BSS and DELTA.

Each returns a 0-dim tensor to add to the task loss, already multiplied by its weights where the paper's
formula carries them (L2-SP's alpha and beta); BSS and DELTA return the bare term, for the caller to weight
with the constants below. Nothing here knows about a model: the caller chooses which parameters are reused
and which are new, and which feature maps to compare (a strategy wires them in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from transferlab.catalogue import BSS_ETA, BSS_K, L2SP_ALPHA, L2SP_BETA

__all__ = [
    "BSS_ETA",
    "BSS_K",
    "DELTA_ALPHA",
    "DELTA_BETA",
    "L2SP_ALPHA",
    "L2SP_BETA",
    "StartingPoint",
    "bss",
    "channel_attention",
    "delta",
    "l2sp",
]

# The defaults of L2-SP (alpha 0.1, beta 0.01: the authors' script) and BSS (k 1, eta 0.001: the paper and tllib)
# are the strategies' option defaults, declared with their sources in transferlab.catalogue.

# DELTA (Li et al., ICLR 2019): the authors' code (lixingjian/DELTA, train.py and run.sh) uses alpha = 0.01 on the
# feature-map term (0.1 on Stanford Dogs) and beta = 0.01 on the new layer's 1/2 ||w||^2; tllib's delta.py defaults
# to the same 0.01 / 0.01. Caution on scale: both reference codes apply alpha to 1/2 x the SUM over the batch,
# whereas delta() below takes the MEAN over the batch without the 1/2, so the same strength here is
# alpha * batch_size / 2 (0.32 at the authors' batch of 64, 0.24 at tllib's 48).
DELTA_ALPHA = 0.01
DELTA_BETA = 0.01


def _sum_of_squares(tensors: Iterable[Tensor]) -> Tensor:
    total: Tensor | None = None
    for t in tensors:
        s = t.pow(2).sum()
        total = s if total is None else total + s
    return torch.zeros(()) if total is None else total


def l2sp(
    reused: Iterable[tuple[Tensor, Tensor]],
    new: Iterable[Tensor],
    alpha: float = L2SP_ALPHA,
    beta: float = L2SP_BETA,
) -> Tensor:
    """L2-SP (Li, Grandvalet & Davoine, "Explicit inductive bias for transfer learning with convolutional
    networks", ICML 2018): ``alpha/2 * sum ||w - w0||^2`` over the ``reused`` (parameter, starting value) pairs
    plus ``beta/2 * sum ||w||^2`` over the ``new`` parameters. ``w0`` gets no gradient; d/dw = alpha * (w - w0).
    The authors penalise conv and linear weights only (not biases or BatchNorm): pass what you want penalised.
    Use no weight decay on these parameters in the optimiser: this replaces it. Empty inputs give 0."""

    def differences() -> Iterable[Tensor]:
        for w, w0 in reused:
            if w.shape != w0.shape:
                raise ValueError(
                    f"l2sp: a parameter of shape {tuple(w.shape)} is paired with a starting value "
                    f"of shape {tuple(w0.shape)}; pair each reused parameter with its own snapshot."
                )
            yield w - w0.detach()

    return alpha / 2 * _sum_of_squares(differences()) + beta / 2 * _sum_of_squares(new)


class StartingPoint(nn.Module):
    """A snapshot ``w0`` of some parameters (detached clones), kept as buffers so that it moves with
    ``.to(device)`` and, if ``persistent`` (the default), is saved in a checkpoint: a resumed run must penalise
    the distance to the source's weights, not to the weights it resumed from. Pass ``persistent=False`` to keep
    it out of the ``state_dict`` of a module it is attached to (then it must be re-made from the source on resume).
    """

    def __init__(self, params: Iterable[Tensor], *, persistent: bool = True) -> None:
        super().__init__()
        self._names: list[str] = []
        for i, p in enumerate(params):
            name = f"w0_{i}"
            self.register_buffer(name, p.detach().clone(), persistent=persistent)
            self._names.append(name)

    def __len__(self) -> int:
        return len(self._names)

    def values(self) -> list[Tensor]:
        """The starting values, in the order the parameters were given."""
        return [getattr(self, name) for name in self._names]

    def pairs(self, params: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """``(w, w0)`` pairs for :func:`l2sp`; ``params`` must be the snapshot's parameters, in the same order."""
        w0s = self.values()
        if len(params) != len(w0s):
            raise ValueError(
                f"StartingPoint holds {len(w0s)} starting values but was given {len(params)} "
                "parameters; pass the same parameters, in the same order, as when it was made."
            )
        for i, (w, w0) in enumerate(zip(params, w0s, strict=True)):
            if w.shape != w0.shape:
                raise ValueError(
                    f"StartingPoint: parameter {i} has shape {tuple(w.shape)} but its starting value "
                    f"has shape {tuple(w0.shape)}; pass the parameters in the order of the snapshot."
                )
        return list(zip(params, w0s, strict=True))


def bss(features: Tensor, k: int = BSS_K) -> Tensor:
    """Batch Spectral Shrinkage (Chen, Wang, Fu, Long & Wang, "Catastrophic forgetting meets negative transfer:
    Batch Spectral Shrinkage for safe transfer learning", NeurIPS 2019): ``sum_{i=1..k} sigma_{-i}^2``, the squares
    of the k smallest singular values of the (batch x dim) feature matrix; weight it by ``BSS_ETA``. A matrix has
    min(batch, dim) singular values, so a larger k sums them all. Differentiable through ``torch.linalg.svdvals``
    (stable gradients even for repeated values); costs one SVD per step, O(batch * dim * min(batch, dim)), which on
    a GPU runs in cuSOLVER and synchronises with the host. Half-precision features are promoted to float32."""
    if features.ndim != 2:
        raise ValueError(
            f"bss: features must be a (batch, dim) matrix, got shape {tuple(features.shape)}; "
            "flatten or pool them first."
        )
    if k < 1:
        raise ValueError(f"bss: k must be at least 1, got {k}.")
    if features.dtype not in (torch.float32, torch.float64):
        features = features.float()
    sigma = torch.linalg.svdvals(features)  # descending
    return sigma[-k:].pow(2).sum()


def delta(
    target_maps: Sequence[Tensor],
    source_maps: Sequence[Tensor],
    weights: Sequence[Tensor] | None = None,
) -> Tensor:
    """DELTA's behavioural term (Li et al., "DELTA: DEep Learning Transfer using feature map with attention for
    convolutional networks", ICLR 2019): ``sum_j sum_c w_jc * ||FM_jc - FM0_jc||^2``, averaged over the batch, for
    target maps (batch, channels, ...) and the source model's maps of the same inputs (detached here). ``weights[j]``
    holds per-channel attention, shape (channels,) or per-sample (batch, channels); None gives 1 for every channel,
    the paper's "feature map L2 without attention". Weight it by ``DELTA_ALPHA`` (see its note on scale) and add
    DELTA's L2 on the new layer as ``l2sp([], new, alpha=0, beta=DELTA_BETA)``."""
    if len(target_maps) != len(source_maps):
        raise ValueError(
            f"delta: {len(target_maps)} target feature maps but {len(source_maps)} source maps; "
            "take both from the same layers."
        )
    if weights is not None and len(weights) != len(target_maps):
        raise ValueError(
            f"delta: {len(weights)} attention weights for {len(target_maps)} feature maps; "
            "give one per layer (or None)."
        )
    total: Tensor = torch.zeros(())
    for j, (fm, fm0) in enumerate(zip(target_maps, source_maps, strict=True)):
        if fm.shape != fm0.shape or fm.ndim < 2:
            raise ValueError(
                f"delta: layer {j} target map has shape {tuple(fm.shape)} and source map "
                f"{tuple(fm0.shape)}; they must match, as (batch, channels, ...)."
            )
        diff = fm - fm0.detach()
        per_channel = diff.pow(2).flatten(2).sum(-1) if diff.ndim > 2 else diff.pow(2)  # (batch, channels)
        if weights is not None:
            per_channel = per_channel * weights[j].detach()
        total = total + per_channel.sum(1).mean(0)
    return total


def channel_attention(loss_increase: Tensor, temperature: float = 5.0) -> Tensor:
    """DELTA's per-channel attention from measured importances: ``C * softmax(standardise(x) / temperature)``,
    where x[c] is the rise in the task loss when channel c of a layer is zeroed (the paper's supervised attention;
    temperature 5 as in its code). Scaled to mean 1, so equal importances give the unweighted term. Measuring x
    (one forward pass per channel) is out of scope here. The reference codes also divide by H*W (a spatial mean)."""
    x = loss_increase.detach().float().flatten()
    std = x.std(correction=0)
    z = (x - x.mean()) / std if std > 0 else torch.zeros_like(x)
    return x.numel() * torch.softmax(z / temperature, dim=0)
