"""The training loss: CTE of the warped frames + regulariser + group term + CAR contrast
invariance (+ the supervised end-point term on draws with known motion), and the AdaCS
scorer's loss.

On one sequence (``docs/design.md`` §3.5, §4), on the *un-augmented* frames warped by the
predicted field ``u`` (CAR: the similarity is computed on the pre-augmentation images)::

    L = CTE(warp(frames, u) inside the border mask)
        + lambda_reg * mean|grad u|^2          (pixels of the training grid)
        + lambda_grp * mean_x |mean_i u_i(x)|^2
        + lambda_contrast * MSE(P(E0(car_a(frames))), P(E0(car_b(frames))))

where ``E0`` is the network's level-0 image encoder (``net.encoder[0]``: the frame-shared stem
whose input is the image itself, i.e. where contrast enters), ``P`` a 1x1-conv projection head
(32 channels, trained with the network, kept in the checkpoint, not needed at inference) and
both projected maps are standardised per frame and channel before the MSE so that the head
cannot shrink its output to zero.

Why the border mask and the strong regulariser: on a small phantom the CTE with a weak
regulariser (1 x mean|grad u|^2) was minimised by non-physical deformations that pull
extrapolated border pixels into the histogram (loss below its value at the true alignment
while the end-point error grew). The classical engines evaluate the similarity inside
:func:`core.engines._transform.border_mask` and use ``20 x mean|grad u|^2``. We use the same
mask and ``lambda_reg = 10`` (400-step runs at 96 px / 3 mm, validation EPE ratio at the end:
lambda 1 → 0.47 after reaching 0.39 (unstable), 5 → 0.41, 10 (lr 2e-3) → 0.40, 20 → 0.42,
60 → 0.46; no folding in any run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augmentation import car_augment, random_intensity_curve
from ..engines._transform import border_mask
from ..losses import conditional_template_entropy, gradient_regulariser, group_motion_penalty, relative_endpoint_loss
from ..network import Any2RegNet, CorrespondenceScorer
from ..network.scoring import correspondence_residual, scoring_inputs, scoring_loss
from ..spatial import warp
from .config import TrainingConfig

__all__ = ["ProjectionHead", "training_loss", "scorer_loss"]


class ProjectionHead(nn.Module):
    """CAR projection head: 1x1 conv ``channels → out_channels`` (no bias) applied per frame;
    the output is standardised per frame and channel over space (instance norm, no affine)."""

    def __init__(self, channels: int, out_channels: int = 32):
        super().__init__()
        self.proj = nn.Conv2d(channels, out_channels, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(self.proj(features), eps=1e-5)


def _car(frames: torch.Tensor, generator: torch.Generator, config: TrainingConfig) -> torch.Tensor:
    return car_augment(frames, generator, layers=config.car_layers, hidden=config.car_hidden)


def training_loss(
    net: Any2RegNet,
    frames: torch.Tensor,
    config: TrainingConfig,
    generator: torch.Generator,
    *,
    projection: ProjectionHead | None = None,
    mask: torch.Tensor | None = None,
    augment: bool = True,
    scorer: CorrespondenceScorer | None = None,
    true_displacement: torch.Tensor | None = None,
    heart_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The training loss on one sequence.

    Parameters
    ----------
    net : Any2RegNet
    frames : Tensor (N, H, W), normalised, on the network's device
    config : TrainingConfig
        Loss weights, CTE bins, augmentation probabilities.
    generator : torch.Generator (CPU)
        Draws the augmentation choices and CAR weights.
    projection : ProjectionHead, optional
        Needed when ``config.lambda_contrast > 0`` (else that term is skipped).
    mask : Tensor (H, W) bool, optional
        Pixels of the similarity; default :func:`core.engines._transform.border_mask`.
    augment : bool
        ``False``: feed the frames unchanged and skip the contrast term (evaluation).
    scorer : CorrespondenceScorer, optional
        AdaCS: its (detached) scores of the warped frames weight the CTE histograms.
    true_displacement, heart_mask : Tensor, optional
        Known motion ``(N, 2, H, W)`` (phantoms, semi-synthetic real sequences) and the
        region to stress ``(H, W)``: adds ``lambda_supervised`` x
        :func:`core.losses.relative_endpoint_loss` (inside the interior of the grid) to the
        unsupervised loss, which stays.

    Returns
    -------
    (loss, terms, displacement): scalar loss with gradient, a dict of float terms
    (``loss``, ``cte``, ``reg``, ``grp``, ``contrast``, ``input`` = which input augmentation
    was used as a code 0 none / 1 car / 2 curve) and the predicted field ``(N, 2, H, W)``.
    """
    if mask is None:
        mask = border_mask(tuple(frames.shape[-2:]), frames.device, margin_fraction=config.border_margin)
    choice = 0
    net_input = frames
    contrast = frames.new_zeros(())
    if augment:
        r = float(torch.rand((), generator=generator))
        if r < config.car_probability:
            choice = 1
            net_input = _car(frames, generator, config)
        elif r < config.car_probability + config.curve_probability:
            choice = 2
            net_input = random_intensity_curve(frames, generator)
        if config.lambda_contrast > 0 and projection is not None:
            a = _car(frames, generator, config)[:, None]
            b = _car(frames, generator, config)[:, None]
            stem = net.encoder[0]
            contrast = F.mse_loss(projection(stem(a)), projection(stem(b)))
    u = net(net_input)
    warped = warp(frames[:, None], u)[:, 0]
    scores = None
    if scorer is not None:
        with torch.no_grad():  # stop-gradient: the scores only re-weight the residuals
            scores = scorer(scoring_inputs(warped.detach()))
    cte = conditional_template_entropy(warped, bins=config.cte_bins, mask=mask, pixel_weights=scores)
    reg = gradient_regulariser(u)
    grp = group_motion_penalty(u)
    loss = cte + config.lambda_reg * reg + config.lambda_grp * grp
    if augment and config.lambda_contrast > 0 and projection is not None:
        loss = loss + config.lambda_contrast * contrast
    still = true_displacement is not None and not bool(true_displacement.any())
    if still and config.lambda_supervised > 0 and config.still_unsupervised_weight != 1.0:
        loss = config.still_unsupervised_weight * loss
    supervised = None
    if config.lambda_supervised > 0 and true_displacement is not None:
        interior = border_mask(tuple(frames.shape[-2:]), frames.device, margin_fraction=config.border_margin, max_pixels=1 << 30)
        supervised = relative_endpoint_loss(u, true_displacement.to(u.device), interior,
                                            None if heart_mask is None else heart_mask.to(u.device))
        loss = loss + config.lambda_supervised * supervised
    terms = {
        "loss": float(loss.detach()),
        "cte": float(cte.detach()),
        "reg": float(reg.detach()),
        "grp": float(grp.detach()),
        "contrast": float(contrast.detach()),
        "input": choice,
    }
    if supervised is not None:
        terms["supervised"] = float(supervised.detach())
    return loss, terms, u


def scorer_loss(
    scorer: CorrespondenceScorer,
    frames: torch.Tensor,
    displacement: torch.Tensor,
    config: TrainingConfig,
    momentum: float | None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], float]:
    """AdaCS scoring loss of ``scorer`` on ``frames`` warped by the (detached) ``displacement``.

    ``momentum`` is the moving average of the mean residual so far (``None`` on the first
    call: this step's mean starts it). Returns ``(loss, terms, new_momentum)``.
    """
    with torch.no_grad():
        warped = warp(frames[:, None], displacement.detach())[:, 0]
        residual = correspondence_residual(warped)
        current = float(residual.mean())
    momentum = current if momentum is None else config.adacs_momentum * momentum + (1 - config.adacs_momentum) * current
    scores = scorer(scoring_inputs(warped, residual))
    loss, terms = scoring_loss(scores, residual, momentum, beta=config.adacs_beta, gamma=config.adacs_gamma, mask=mask)
    terms["residual"] = current
    return loss, terms, momentum

