"""AdaCS correspondence scoring for groupwise registration (``docs/design.md`` §7; AdaCS paper).

A small frame-shared U-Net predicts, for every frame of a registered sequence, a map
``s_i(x) in [0, 1]``: how well the pixel can be put into correspondence with the rest of the
group (high = trustworthy). During training it is optimised alternately with the registration
network and its (stop-gradient) scores re-weight the registration similarity; at inference the
maps are what the review overlays show.

Groupwise residual
------------------
AdaCS is defined for pairs with an intensity residual ``|warped - target|``. A quantitative
sequence has no common contrast, so the residual here is contrast-insensitive: MIND
self-similarity descriptors (:func:`.auxiliary.mind_descriptors`, invariant to ``I -> aI + b``)
of each warped frame against their mean over the frames::

    r_i(x) = mean_c (MIND_c(warped_i)(x) - mean_j MIND_c(warped_j)(x))^2

It is small where the local structure of frame ``i`` matches the group and large where it
cannot (through-plane motion, an artefact, a structure that appears in only a few frames,
noise-only background).

Scoring objective (per training step, residuals and frames detached)::

    L_s = mean(s * r / m) - beta * mean(log s) + gamma * TV(s)

``m`` is the momentum (exponential moving average over training steps) of ``mean(r)``.
Dividing by it keeps the balance of the terms fixed while the residuals shrink during training,
which is the same as letting the anti-collapse and total-variation weights follow the residual
momentum (AdaCS §4.4). Pixel-wise, without TV, the optimum is ``s = min(1, beta m / r)``:
pixels whose residual exceeds ``1 / beta`` times the typical one are down-weighted.

Permutation equivariance: the network sees, per frame, the warped frame, the group's mean
image and the frame's residual map; the mean and the residual are symmetric functions of the
set, and the U-Net is shared by all frames, so shuffling the frames shuffles the scores.

No Qt / napari imports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..spatial import warp
from .any2reg_net import DEFAULT_TRAINING_SPACING_MM, _resize_images, _working_shape
from .auxiliary import mind_descriptors
from .blocks import ConvBlock

__all__ = [
    "CorrespondenceScorer",
    "correspondence_residual",
    "scoring_inputs",
    "scoring_loss",
    "total_variation",
    "residual_scores",
    "predict_scores",
]

_EPS = 1e-6


def correspondence_residual(warped: torch.Tensor) -> torch.Tensor:
    """Contrast-insensitive groupwise residual ``r_i(x)`` of warped frames ``(N, H, W)`` → ``(N, H, W)``.

    See the module docstring; non-negative, zero for a set of identical frames.
    """
    if warped.ndim != 3:
        raise ValueError(f"warped frames must be (N, H, W); got {tuple(warped.shape)}")
    mind = mind_descriptors(warped)  # (N, C, H, W), each frame on its own
    return ((mind - mind.mean(dim=0, keepdim=True)) ** 2).mean(dim=1)


def scoring_inputs(warped: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The scorer's per-frame input ``(N, 3, H, W)``: warped frame, group mean, residual.

    The residual is scaled by its mean over the sequence so that the input does not depend on
    the noise level in absolute terms.
    """
    if residual is None:
        residual = correspondence_residual(warped)
    mean_image = warped.mean(dim=0, keepdim=True).expand_as(warped)
    scaled = residual / (residual.mean() + _EPS)
    return torch.stack([warped, mean_image, scaled], dim=1)


class CorrespondenceScorer(nn.Module):
    """Frame-shared two-level U-Net: ``(N, 3, H, W)`` inputs → ``(N, H, W)`` scores in ``(0, 1)``.

    Parameters
    ----------
    channels : int
        Features at full resolution (twice that at half and quarter resolution).
    in_channels : int
        3: see :func:`scoring_inputs`.
    """

    def __init__(self, channels: int = 8, in_channels: int = 3):
        super().__init__()
        c = int(channels)
        self.enc0 = nn.Sequential(ConvBlock(in_channels, c), ConvBlock(c, c))
        self.enc1 = nn.Sequential(ConvBlock(c, 2 * c, stride=2), ConvBlock(2 * c, 2 * c))
        self.enc2 = nn.Sequential(ConvBlock(2 * c, 2 * c, stride=2), ConvBlock(2 * c, 2 * c))
        self.dec1 = ConvBlock(4 * c, 2 * c)
        self.dec0 = ConvBlock(3 * c, c)
        self.head = nn.Conv2d(c, 1, 1)
        # start confident (s ~ 0.88): the anti-collapse term then only has to keep it there
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, 2.0)
        self.config: dict[str, Any] = {"channels": c, "in_channels": int(in_channels)}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim != 4 or inputs.shape[1] != self.config["in_channels"]:
            raise ValueError(f"scorer input must be (N, {self.config['in_channels']}, H, W); got {tuple(inputs.shape)}")
        h, w = inputs.shape[-2:]
        # pad to a multiple of 4 and at least 8 x 8, so that the quarter-resolution level keeps
        # more than one pixel (instance norm needs it): small fields of view work too
        ph, pw = max((-h) % 4, 8 - h), max((-w) % 4, 8 - w)
        x = F.pad(inputs, (0, pw, 0, ph), mode="replicate") if (ph or pw) else inputs
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        d1 = self.dec1(torch.cat([e1, F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False)], 1))
        d0 = self.dec0(torch.cat([e0, F.interpolate(d1, size=e0.shape[-2:], mode="bilinear", align_corners=False)], 1))
        return torch.sigmoid(self.head(d0))[:, 0, :h, :w]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def total_variation(scores: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation ``mean |d_y s| + mean |d_x s|`` of ``(N, H, W)`` maps."""
    return (scores[..., 1:, :] - scores[..., :-1, :]).abs().mean() + (scores[..., :, 1:] - scores[..., :, :-1]).abs().mean()


def scoring_loss(scores: torch.Tensor, residual: torch.Tensor, momentum: float, *, beta: float = 0.5,
                 gamma: float = 0.2, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """AdaCS scoring objective (module docstring) for ``scores`` and ``residual`` ``(N, H, W)``.

    ``momentum`` is the moving average of ``mean(residual)``; ``mask`` ``(H, W)`` restricts the
    data and anti-collapse terms (TV is over the whole map). Returns ``(loss, terms)``.
    """
    rho = residual.detach() / max(float(momentum), _EPS)
    log_s = torch.log(scores.clamp_min(_EPS))
    if mask is not None:
        m = mask.to(scores.dtype).expand_as(scores)
        denominator = m.sum().clamp_min(1.0)
        data = (scores * rho * m).sum() / denominator
        anti = -(log_s * m).sum() / denominator
    else:
        data = (scores * rho).mean()
        anti = -log_s.mean()
    tv = total_variation(scores)
    loss = data + beta * anti + gamma * tv
    return loss, {"score_loss": float(loss.detach()), "score_data": float(data.detach()),
                  "score_tv": float(tv.detach()), "score_mean": float(scores.detach().mean())}


def residual_scores(warped: torch.Tensor, beta: float = 0.5, smoothing_sigma: float = 2.0) -> torch.Tensor:
    """Model-free score with the scorer's meaning, for engines without a scoring network.

    ``s = min(1, beta * mean(r) / r)`` (the pixel-wise optimum of the scoring objective without
    TV), with the residual first smoothed by a Gaussian of ``smoothing_sigma`` pixels (standing in
    for the TV term). ``warped`` ``(N, H, W)`` normalised frames → ``(N, H, W)`` in ``(0, 1]``.
    """
    from ..spatial import gaussian_smooth

    r = correspondence_residual(warped)
    if smoothing_sigma > 0:
        r = gaussian_smooth(r[:, None], smoothing_sigma)[:, 0]
    return (beta * r.mean() / r.clamp_min(_EPS)).clamp(max=1.0)


def predict_scores(scorer: CorrespondenceScorer | None, frames, displacement, spacing_mm=None,
                   training_spacing_mm=DEFAULT_TRAINING_SPACING_MM, *, progress=None, chunk: int = 16,
                   normalised: bool = False) -> np.ndarray:
    """Per-frame correspondence maps of a registered sequence, on the input grid.

    Parameters
    ----------
    scorer : CorrespondenceScorer or None
        ``None``: the model-free :func:`residual_scores`.
    frames : ndarray (N, H, W)
        The raw (unregistered) frames, any intensity scale.
    displacement : ndarray (N, 2, H, W)
        The registration's pull-back field in pixels.
    spacing_mm, training_spacing_mm : (dy, dx), optional
        As in :func:`.any2reg_net.predict`: the scorer runs at the training spacing (MIND
        offsets and receptive field are in pixels) and its maps are resampled back.
    progress : callable(fraction), optional
        Called after every ``chunk`` frames scored (it may raise to cancel).
    chunk : int
        Frames per scorer pass (the scorer works frame by frame once the group inputs exist).
    normalised : bool
        ``frames`` are already normalised (:func:`core.intensity.normalise_intensities`):
        skip that step.

    Returns
    -------
    ndarray float32 (N, H, W) in [0, 1], on the common (registered) grid.
    """
    from ..intensity import normalise_intensities

    frames = np.asarray(frames, dtype=np.float32)
    displacement = np.asarray(displacement, dtype=np.float32)
    if frames.ndim != 3 or displacement.shape != (frames.shape[0], 2, *frames.shape[1:]):
        raise ValueError(f"frames (N, H, W) and displacement (N, 2, H, W) must match; got {frames.shape}, {displacement.shape}")
    device = torch.device("cpu")
    if scorer is not None:
        param = next(scorer.parameters(), None)
        device = param.device if param is not None else device
    x = torch.from_numpy(frames if normalised else normalise_intensities(frames)).to(device)
    u = torch.from_numpy(displacement).to(device)
    with torch.no_grad():
        warped = warp(x[:, None], u)
        shape = tuple(frames.shape[-2:])
        if scorer is not None:
            warped = _resize_images(warped, _working_shape(shape, spacing_mm, training_spacing_mm))
        warped = warped[:, 0]
        if scorer is None:
            scores = residual_scores(warped)
        else:
            was_training = scorer.training
            scorer.eval()
            try:
                inputs = scoring_inputs(warped)
                parts = []
                for start in range(0, inputs.shape[0], chunk):
                    parts.append(scorer(inputs[start : start + chunk]))
                    if progress is not None:
                        progress(min(1.0, (start + chunk) / inputs.shape[0]))
                scores = torch.cat(parts, dim=0)
            finally:
                scorer.train(was_training)
        scores = _resize_images(scores[:, None], shape)[:, 0]
    return scores.clamp(0.0, 1.0).float().cpu().numpy()
