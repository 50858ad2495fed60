"""Building blocks of the Any2Reg network (``docs/design.md`` §3).

* :class:`ConvBlock` — ``Conv2d 3x3 → InstanceNorm2d → LeakyReLU(0.2)``, applied to every frame
  with the same weights (frames are the batch axis, so the block is frame-shared by construction;
  instance normalisation works per frame, so no statistic ever mixes frames).
* :class:`SetAggregation` — the permutation-invariant set operator: correlation-guided
  (leading-eigenvector) weights ``a_i`` from :func:`core.losses.pca_weights` and the canonical
  feature ``g = sum_i a_i f_i``; ``mode="mean"`` is the paper's mean-aggregation ablation.
* :class:`SharedUpdate` — the broadcast + shared update ``f_i <- U([f_i, g])``.
* :class:`FlowHead` — the last layer of each decoder scale, initialised near zero so that an
  untrained network predicts ~identity.
* :func:`integrate_velocity` — scaling and squaring of a stationary velocity field
  (diffeomorphic option, GroupMorph/VoxelMorph style).

All tensors are ``(N, C, H, W)`` with the frame axis first.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import pca_weights
from ..spatial import compose_displacements

__all__ = [
    "ConvBlock",
    "SetAggregation",
    "SharedUpdate",
    "FlowHead",
    "integrate_velocity",
    "conv_block_on_parts",
    "AGGREGATION_MODES",
]

#: Accepted ``mode`` values of :class:`SetAggregation`.
AGGREGATION_MODES = ("pca", "mean")


class ConvBlock(nn.Sequential):
    """``Conv2d(k x k, stride) → InstanceNorm2d(affine) → LeakyReLU(0.2)``.

    With ``stride=2`` and an even input size the output is exactly half the size (the network
    pads its input to a multiple of ``2**scales``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3, norm: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=not norm)
        ]
        if norm:
            layers.append(nn.InstanceNorm2d(out_channels, affine=True))
        layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels


def conv_block_on_parts(block: nn.Sequential, parts: "list[torch.Tensor]") -> torch.Tensor:
    """``block(torch.cat(parts, dim=1))`` without building the concatenation.

    A convolution is linear in its input channels, so ``conv([p_1, ..., p_k])`` is the sum of
    ``conv_k(p_k)`` with the weight columns of each part (zero padding is per channel, so this
    holds at the borders too). A part with one frame (the canonical feature ``g`` broadcast to
    every frame) is convolved once and broadcast in the sum, instead of ``N`` times: the set
    layers that read ``[f_i, g]`` cost about half (CPU inference: the concatenations and those
    convolutions were a third of the network's time). The rest of ``block`` (norm, activation)
    is applied as usual. ``block[0]`` must be a :class:`torch.nn.Conv2d` with ``groups=1``.
    """
    conv = block[0]
    total = None
    start = 0
    for part in parts:
        stop = start + part.shape[1]
        term = nn.functional.conv2d(part, conv.weight[:, start:stop], None, conv.stride, conv.padding,
                                    conv.dilation)
        total = term if total is None else total + term
        start = stop
    if start != conv.in_channels:
        raise ValueError(f"the parts have {start} channels; the convolution takes {conv.in_channels}")
    if conv.bias is not None:
        total = total + conv.bias.view(1, -1, 1, 1)
    for layer in list(block)[1:]:  # (block[1:] would rebuild a ConvBlock)
        total = layer(total)
    return total


class SetAggregation(nn.Module):
    """Permutation-invariant canonical feature of a set of per-frame features.

    ``mode="pca"`` (Any2Reg, paper Eq. 4): each frame's features are flattened and
    L2-normalised, ``R_ij = <v_i, v_j>``, ``w`` = leading eigenvector of ``R`` (sign fixed so
    ``sum(w) > 0``) and ``a_i = |w_i| / sum |w|`` — all done by :func:`core.losses.pca_weights`,
    which is reused here. ``mode="mean"``: ``a_i = 1/N`` (ablation).

    The canonical feature is ``g = sum_i a_i f_i``. Permuting the frames permutes ``a`` and
    leaves ``g`` unchanged (to float round-off), as long as the leading eigenvalue of ``R`` is
    simple (it is for any real sequence: all frames share the anatomy, so ``R`` is dominated by
    one positive mode).

    Parameters
    ----------
    mode : {"pca", "mean"}
    differentiable_weights : bool
        ``False`` (default): the weights ``a`` are computed from detached features, i.e. treated
        as constants by back-propagation (gradients still reach every ``f_i`` through
        ``g = sum a_i f_i``). Back-propagating through ``eigh`` is exact but its gradient has
        ``1 / (lambda_1 - lambda_j)`` factors that blow up when the spectral gap is small;
        ``True`` enables it anyway.
    """

    def __init__(self, mode: str = "pca", differentiable_weights: bool = False):
        super().__init__()
        mode = mode.lower()
        if mode not in AGGREGATION_MODES:
            raise ValueError(f"aggregation mode must be one of {AGGREGATION_MODES}; got {mode!r}")
        self.mode = mode
        self.differentiable_weights = bool(differentiable_weights)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """Aggregation weights ``a`` ``(N,)``: non-negative, summing to 1."""
        n = features.shape[0]
        if self.mode == "mean":
            return features.new_full((n,), 1.0 / n)
        source = features if self.differentiable_weights else features.detach()
        return pca_weights(source)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(g, a)``: canonical feature ``(1, C, H, W)`` and weights ``(N,)``."""
        a = self.weights(features)
        g = torch.einsum("n,n...->...", a, features).unsqueeze(0)
        return g, a

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, differentiable_weights={self.differentiable_weights}"


class SharedUpdate(nn.Module):
    """Broadcast + shared update ``f_i <- f_i + U([f_i, g])`` (paper Eq. 5).

    ``U`` is two :class:`ConvBlock` s with the same weights for every frame, so the map from the
    set to the updated set is permutation-equivariant (``g`` is invariant). The residual form
    keeps each frame's own information when ``g`` carries little.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(2 * channels, channels), ConvBlock(channels, channels))

    def forward(self, features: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
        # [f_i, g] without the concatenation: g's half of the first convolution runs once
        first = conv_block_on_parts(self.body[0], [features, canonical])
        return features + self.body[1](first)


class FlowHead(nn.Conv2d):
    """``Conv2d(channels → 2, 3x3)`` predicting a ``(dy, dx)`` field in pixels of its scale.

    Weights ~ ``N(0, init_std)`` and zero bias (VoxelMorph's initialisation), so an untrained
    network outputs a displacement of order ``init_std`` pixels, i.e. ~identity.
    """

    def __init__(self, channels: int, init_std: float = 1e-5):
        super().__init__(channels, 2, kernel_size=3, padding=1)
        nn.init.normal_(self.weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.bias)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Displacement ``exp(v)`` of a stationary velocity field by scaling and squaring.

    ``u = v / 2**steps`` (a small, hence fold-free, displacement), then ``steps`` times
    ``u <- u ∘ u`` with :func:`core.spatial.compose_displacements` (``u(x) + u(x + u(x))``).
    For a constant ``v`` the result is exactly ``v`` (a translation); for a smooth ``v`` it is
    fold-free up to interpolation error.

    Parameters
    ----------
    velocity : Tensor (N, 2, H, W), pixels ``(dy, dx)``
    steps : int
        Number of squarings (GroupMorph / VoxelMorph: 7).

    Returns
    -------
    Tensor (N, 2, H, W), pull-back displacement in pixels. Differentiable.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    u = velocity / (2.0**steps)
    for _ in range(steps):
        u = compose_displacements(u, u)
    return u
