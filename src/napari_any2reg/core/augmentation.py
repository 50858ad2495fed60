"""Intensity augmentations for training the Any2Reg network (``docs/design.md`` §4, CAR).

* :func:`car_augment` — CAR contrast augmentation (random 1x1 convolutions): every frame gets
  its own random stack of ``layers`` 1x1 convolutions (weights ~ U(0, 10), then zero-centred
  per layer, LeakyReLU(0.2) between layers), and the result is min–max rescaled to [0, 1]
  per frame. A 1x1 kernel changes the contrast but not the geometry (no blur, no shift), so
  the frames keep their anatomy and motion while each one gets a new, possibly non-monotone,
  tissue contrast.
* :func:`random_intensity_curve` — a milder per-frame augmentation: a random monotone
  (increasing or, with some probability, decreasing) piecewise-linear tone curve, i.e. a new
  "relaxation state" of every tissue that keeps the tissue ordering.

Both work on torch tensors ``(N, H, W)`` or ``(N, 1, H, W)`` in about [0, 1], return the same
shape, are deterministic given the ``torch.Generator`` and run on the input's device. No
gradients are needed through them (they act on the network input only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["car_augment", "random_intensity_curve"]

_EPS = 1e-8


def _flatten(frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(N, H, W)`` or ``(N, 1, H, W)`` → ``(N, 1, P)`` and the original shape."""
    if frames.ndim == 3:
        n, h, w = frames.shape
    elif frames.ndim == 4 and frames.shape[1] == 1:
        n, _, h, w = frames.shape
    else:
        raise ValueError(f"frames must be (N, H, W) or (N, 1, H, W); got {tuple(frames.shape)}")
    return frames.reshape(n, 1, h * w), tuple(frames.shape)


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``generator`` (always drawn on the CPU so that the stream,
    hence the augmentation, is the same whatever device the frames live on)."""
    return torch.rand(*shape, generator=generator, dtype=torch.float32)


def _rescale_per_frame(x: torch.Tensor) -> torch.Tensor:
    """Min–max scale each row of ``(N, 1, P)`` to [0, 1]."""
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(_EPS)).clamp(0.0, 1.0)


@torch.no_grad()
def car_augment(
    frames: torch.Tensor,
    generator: torch.Generator,
    layers: int = 4,
    hidden: int = 8,
    *,
    weight_high: float = 10.0,
    negative_slope: float = 0.2,
    thresholds: bool = True,
) -> torch.Tensor:
    """CAR contrast augmentation: a new random contrast for every frame.

    For each frame independently: ``layers`` 1x1 convolutions ``1 → hidden → ... → hidden → 1``
    (no bias) whose weights are drawn from ``U(0, weight_high)`` and then zero-centred (the
    mean of the layer's weights is subtracted), with ``LeakyReLU(negative_slope)`` between
    layers; the output is min–max rescaled to [0, 1] per frame. Inputs outside [0, 1] are
    clipped first (the normalised frames may reach -0.5 / 1.5).

    Parameters
    ----------
    frames : Tensor (N, H, W) or (N, 1, H, W)
        Intensities in about [0, 1].
    generator : torch.Generator (CPU)
        Source of the random weights; the same generator state gives the same output.
    layers : int
        Stacked 1x1 convolution layers (CAR: 4).
    hidden : int
        Channels between layers.
    weight_high : float
        Upper bound of the uniform weight distribution (CAR: 10).
    negative_slope : float
        LeakyReLU slope (CAR: 0.2).
    thresholds : bool
        Give every hidden channel a bias that puts its LeakyReLU kink at a random level
        (uniform) inside the channel's range over the frame. Without biases (the literal
        recipe) the map is positively homogeneous, ``f(t x) = t f(x)`` for ``t > 0``, so on a
        single non-negative channel it is just ``f(x) = x f(1)``: a scaling or an inversion,
        not a new contrast. With the thresholds the map is piecewise linear with kinks inside
        the intensity range: non-linear and, in general, non-monotone.

    Returns
    -------
    Tensor of the input's shape and dtype, each frame in [0, 1]. A frame that the random map
    sends to a constant (rare) is returned min–max rescaled instead of augmented.
    """
    if layers < 1 or hidden < 1:
        raise ValueError(f"layers and hidden must be >= 1; got {layers}, {hidden}")
    x, shape = _flatten(frames)
    n = x.shape[0]
    base = x.float().clamp(0.0, 1.0)
    out = base
    widths = [1] + [hidden] * (layers - 1) + [1]
    for layer in range(layers):
        c_in, c_out = widths[layer], widths[layer + 1]
        w = _rand(generator, n, c_out, c_in) * weight_high
        w = w - w.mean(dim=(1, 2), keepdim=True)  # zero-centred per frame and layer
        out = torch.bmm(w.to(out.device), out)  # (N, c_out, P)
        if layer < layers - 1:
            if thresholds:  # a kink at a random level inside each channel's range
                u = _rand(generator, n, c_out, 1).to(out.device)
                lo, hi = out.amin(dim=-1, keepdim=True), out.amax(dim=-1, keepdim=True)
                out = out - (lo + u * (hi - lo))
            out = F.leaky_relu(out, negative_slope)
    spread = out.amax(dim=-1) - out.amin(dim=-1)  # (N, 1)
    degenerate = spread[:, 0] <= 1e-6 * (1.0 + out.abs().amax(dim=-1)[:, 0])
    out = _rescale_per_frame(out)
    if bool(degenerate.any()):
        out[degenerate] = _rescale_per_frame(base[degenerate])
    return out.to(frames.dtype).reshape(shape)


@torch.no_grad()
def random_intensity_curve(
    frames: torch.Tensor,
    generator: torch.Generator,
    knots: int = 5,
    invert_probability: float = 0.3,
) -> torch.Tensor:
    """Per-frame random monotone tone curve (piecewise linear through ``knots`` random levels).

    Each frame gets its own strictly increasing curve from [0, 1] onto [0, 1] (random knot
    levels: sorted uniform increments), flipped to decreasing with ``invert_probability``
    (an inversion-recovery frame before the null point). Tissue order is kept (or reversed),
    unlike :func:`car_augment` whose maps may be non-monotone.

    Parameters
    ----------
    frames : Tensor (N, H, W) or (N, 1, H, W) in about [0, 1] (clipped)
    generator : torch.Generator (CPU)
    knots : int
        Interior knots of the curve (>= 1).
    invert_probability : float

    Returns
    -------
    Tensor of the input's shape and dtype, in [0, 1].
    """
    if knots < 1:
        raise ValueError(f"knots must be >= 1; got {knots}")
    x, shape = _flatten(frames)
    n = x.shape[0]
    steps = _rand(generator, n, knots + 1) + 0.05  # positive increments
    levels = torch.cat((torch.zeros(n, 1), torch.cumsum(steps, dim=1)), dim=1)
    levels = levels / levels[:, -1:]  # (N, knots + 2), 0 → 1, increasing
    invert = _rand(generator, n) < invert_probability
    levels = torch.where(invert[:, None], 1.0 - levels, levels).to(x.device)
    v = x[:, 0].float().clamp(0.0, 1.0) * (knots + 1)  # (N, P) position along the knots
    idx = v.floor().clamp(max=knots).long()
    frac = v - idx
    lo = torch.gather(levels, 1, idx)
    hi = torch.gather(levels, 1, idx + 1)
    out = lo + frac * (hi - lo)
    return out.clamp(0.0, 1.0).to(frames.dtype).reshape(shape)
