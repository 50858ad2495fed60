"""Refinement of the network's field on one sequence: the training loss of that sequence
(:func:`sequence_loss`), instance optimisation on a coarse control grid
(:func:`instance_optimise`), the classical multi-stage alternative
(:func:`classical_refinement`) and the objective that judges whether a refinement helped."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...engine_api import Progress
from ...losses import conditional_template_entropy, gradient_regulariser, group_motion_penalty
from ...network import mind_descriptors
from ...spatial import warp
from .._transform import Stage, border_mask, canonical_frame_order, optimise, pyramid_level, stages_for_spacing


# ---------------------------------------------------------------- instance optimisation
def sequence_loss(
    frames: torch.Tensor,
    displacement: torch.Tensor,
    *,
    mask: torch.Tensor,
    descriptors: torch.Tensor | None,
    lambda_reg: float = 10.0,
    lambda_grp: float = 1.0,
    lambda_structure: float = 20.0,
    bins: int = 24,
    groupwise: bool = True,
    mind_chunk: int | None = None,
) -> torch.Tensor:
    """How well ``displacement`` aligns normalised ``frames`` ``(N, H, W)`` (lower is better).

    The training loss (CTE inside ``mask`` + ``lambda_reg`` mean|∇u|² + ``lambda_grp`` group
    penalty when ``groupwise``) plus ``lambda_structure`` x the groupwise residual of the MIND
    ``descriptors`` of the raw frames, warped with them (``None``: no structure term, unless
    ``mind_chunk`` is given: then the descriptors are made from ``frames``, ``mind_chunk`` frames
    at a time, without gradient — the do-no-harm objective's way: held whole, the descriptors
    and the three arrays made from them took 40 floats per pixel, 3 GB for 500 frames of
    192 x 192, the engine's peak memory).
    """
    warped = warp(frames[:, None], displacement)[:, 0]
    loss = conditional_template_entropy(warped, bins=bins, mask=mask) + lambda_reg * gradient_regulariser(displacement)
    if descriptors is not None:
        moved = warp(descriptors, displacement)
        residual = ((moved - moved.mean(dim=0, keepdim=True)) ** 2).mean(dim=1)
        loss = loss + lambda_structure * residual[:, mask].mean()
    elif mind_chunk is not None:
        loss = loss + lambda_structure * _structure_residual_in_chunks(frames, displacement, mask, int(mind_chunk))
    if groupwise:
        loss = loss + lambda_grp * group_motion_penalty(displacement)
    return loss


def _structure_residual_in_chunks(frames: torch.Tensor, displacement: torch.Tensor, mask: torch.Tensor,
                                  chunk: int) -> torch.Tensor:
    """``((moved - moved.mean(0)) ** 2).mean(1)[:, mask].mean()`` of the warped MIND descriptors,
    ``chunk`` frames at a time (the descriptors are per frame): one pass for the mean over
    frames, one for the residual; memory of one chunk instead of the whole set."""
    with torch.no_grad():
        n = frames.shape[0]

        def moved(i: int) -> torch.Tensor:
            return warp(mind_descriptors(frames[i : i + chunk]), displacement[i : i + chunk])

        mean = sum(moved(i).sum(dim=0, keepdim=True) for i in range(0, n, chunk)) / n
        total = sum(((moved(i) - mean) ** 2).mean(dim=1)[:, mask].sum() for i in range(0, n, chunk))
        return total / (n * int(mask.sum()))


def instance_optimise(
    frames: torch.Tensor,
    initial: torch.Tensor,
    *,
    steps: int = 30,
    learning_rate: float = 0.05,
    control_spacing_px: int = 8,
    lambda_reg: float = 30.0,
    lambda_grp: float = 1.0,
    lambda_structure: float = 20.0,
    lambda_deviation: float = 1.0,
    bins: int = 24,
    reference_frame: int | None = None,
    progress: Progress | None = None,
    region: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Refine a field ``initial`` ``(N, 2, H, W)`` for normalised ``frames`` ``(N, H, W)``.

    Minimises the training loss of this sequence plus the same similarity on the auxiliary
    (MIND) features — ``lambda_structure`` x the mean groupwise MIND residual
    (:func:`core.network.scoring.correspondence_residual`), as the Any2Reg paper adds a term on
    the auxiliary stream; the descriptors of the raw frames are warped with the frames — over a correction ``d`` on a control grid (``control_spacing_px``
    apart, bicubically upsampled), ``u = initial + d``; in groupwise mode ``d`` is centred over
    frames, in all-to-one mode ``d_ref = 0``. Returns the refined field and the loss per step
    (the first entry is the loss of ``initial``); the iterate with the lowest loss is returned.

    Why the structure term: CTE alone, refined from the network's field, made MOLLI slightly
    worse (held-out phantoms at 10 mm motion, relative EPE 1.45 → 1.66 and 1.54 → 1.68 mm with
    a preliminary network; frames near the null point carry little histogram information) while
    STONE and cine improved. With the MIND term (weight 20; 5 and 40 were worse) the shipped
    network's fields improve on 9 phantoms at 10 mm motion from 1.37 to 1.23 mm on average
    (MOLLI 1.41 → 1.46 is the one small loss), in about 2 s for N = 11 at 192 x 192 on a CPU.

    Why a coarser control grid, a stronger smoothness term and ``lambda_deviation`` (a penalty
    on the mean squared change from ``initial``, in working-grid pixels²): on sequences with no
    motion at all the similarity still prefers a small spurious field (contrast change and
    noise are partly "explained" by deformation), so the refinement added invented motion to
    the network's. Tuned on validation material only (motion-free MOLLI phantoms, seeds
    10000-10003, and the training-base real slices pre-aligned + noise or + 10/25 mm known
    motion): control spacing 4 px / ``lambda_reg`` 10 / no deviation term gave a mean spurious
    motion of 1.13 mm (network alone 0.52 mm) and a median EPE ratio of 0.305 on the moved
    slices (network 0.347); 8 px / 30 / 1.0 gives 0.65 mm and 0.317.
    """
    n, _, h, w = initial.shape
    grid = (max(2, h // control_spacing_px), max(2, w // control_spacing_px))
    coefficients = torch.zeros(n, 2, *grid, device=frames.device, dtype=frames.dtype, requires_grad=True)
    optimiser = torch.optim.Adam([coefficients], lr=learning_rate, eps=1e-6)
    mask = border_mask((h, w), frames.device, region=region)  # region: a user mask, see register(mask=)
    initial = initial.detach()

    def field() -> torch.Tensor:
        d = F.interpolate(coefficients, size=(h, w), mode="bicubic", align_corners=True)
        if reference_frame is None:
            d = d - d.mean(dim=0, keepdim=True)
        else:
            keep = torch.ones(n, 1, 1, 1, device=d.device, dtype=d.dtype)
            keep[reference_frame] = 0
            d = d * keep
        return initial + d

    def deviation(u: torch.Tensor) -> torch.Tensor:
        return ((u - initial) ** 2).sum(dim=1).mean()

    # MIND descriptors are computed once on the raw frames and warped with them: the same
    # groupwise residual as correspondence_residual(warped frames), without differentiating
    # through the descriptor computation at every step (10x cheaper).
    descriptors = mind_descriptors(frames) if lambda_structure > 0 else None

    def loss_of(u: torch.Tensor) -> torch.Tensor:
        loss = sequence_loss(frames, u, mask=mask, descriptors=descriptors, lambda_reg=lambda_reg, lambda_grp=lambda_grp,
                             lambda_structure=lambda_structure, bins=bins, groupwise=reference_frame is None)
        if lambda_deviation > 0:
            loss = loss + lambda_deviation * deviation(u)
        return loss

    history: list[float] = []
    best_loss, best_field = None, initial
    for step in range(steps + 1):
        if progress is not None:
            progress.check()
        u = field()
        loss = loss_of(u)
        value = float(loss.detach())
        history.append(value)
        # keep the best iterate: Adam on a histogram loss is not monotone
        if best_loss is None or value < best_loss:
            best_loss, best_field = value, u.detach()
        if step == steps:
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress.report((step + 1) / steps, f"instance optimisation {step + 1}/{steps}")
    return best_field, history


#: Refinements of the network's field in ``any2reg-io`` (``refinement=``).
REFINEMENTS = ("classical", "instance")


def classical_refinement(
    frames: torch.Tensor,
    initial: torch.Tensor,
    *,
    steps: int = 30,
    spacing_mm=(1.5, 1.5),
    reference_frame: int | None = None,
    regulariser_weight: float = 20.0,
    lambda_structure: float = 20.0,
    bins: int = 24,
    progress: Progress | None = None,
    region: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Refine the network's field with the classical groupwise optimiser started from it.

    ``u = initial + T`` where ``T`` is a control-point FFD fitted by the ``groupwise`` engine's
    objective (conditional template entropy + ``regulariser_weight`` x the diffusion
    regulariser of the whole ``u``) plus ``lambda_structure`` x the groupwise MIND residual of
    the frames' MIND descriptors warped with them (as :func:`instance_optimise`), on the two finest
    levels: ``4/7`` of ``steps`` at half resolution (control points 24 px apart at 1.5 mm),
    the rest at full resolution (12 px); the control spacing follows the pixel size in mm.
    ``frames`` ``(N, H, W)`` normalised, ``initial`` ``(N, 2, H, W)`` input pixels, satisfying
    the group constraint.

    Why: the network already removes the large motion, so the classical optimiser starts near
    the solution and its coarse-to-fine FFD finishes the job; the MIND term keeps it from
    degrading MOLLI, whose frames near the null point carry little histogram information (CTE
    alone made 2 of 2 validation MOLLI phantoms worse than the network). Measured on
    validation material only (never the held-out split):

    * training-base real slices with 10 / 25 mm known motion, median EPE ratio: network
      0.347, :func:`instance_optimise` 0.317, ``groupwise`` from zero 0.276, this 0.255;
    * validation phantoms (seeds 10000-10005, 10 mm): EPE in the heart below the network's on
      all six (MOLLI 1.135 -> 1.117 and 1.438 -> 1.193 mm, cine 1.047 -> 0.715) and below
      ``groupwise`` on five (SASHA 1.367 vs 1.293 mm);
    * the price: on motion-free sequences (MOLLI phantoms, pre-aligned slices + noise) it
      invents more relative motion than the network alone (mean 0.99 vs 0.52 mm; phantoms
      0.65-0.78 vs 0.37-0.43 mm): ``any2reg`` stays the default.

    Returns the refined field ``(N, 2, H, W)`` and the loss history per level.
    """
    steps = int(steps)
    half = max(1, round(steps * 4 / 7)) if steps > 1 else 0
    stages = [
        Stage("refine 1/2", downsample=2, iterations=half, grid_spacing_px=24, learning_rate=0.12),
        Stage("refine 1/1", downsample=1, iterations=max(1, steps - half), grid_spacing_px=12, learning_rate=0.08),
    ]
    stages = stages_for_spacing([st for st in stages if st.iterations > 0], spacing_mm, tuple(frames.shape[-2:]))

    # MIND descriptors of each pyramid level, computed once and warped with the frames (as in
    # instance_optimise; recomputing them on the warped frames at every step made a 320 x 320
    # STONE slice take 25 s). `optimise` works in the content-defined frame order, so the
    # descriptors are built in that same order.
    descriptors: dict[tuple[int, int], torch.Tensor] = {}
    if lambda_structure > 0:
        ordered = frames[canonical_frame_order(frames)]
        for stage in stages:
            level = pyramid_level(ordered, stage.downsample)
            descriptors[tuple(level.shape[-2:])] = mind_descriptors(level)

    def loss_fn(warped, disp, mask):
        loss = conditional_template_entropy(warped, bins=bins, mask=mask)
        if lambda_structure > 0:
            moved = warp(descriptors[tuple(disp.shape[-2:])], disp)
            residual = ((moved - moved.mean(dim=0, keepdim=True)) ** 2).mean(dim=1)
            loss = loss + lambda_structure * residual[:, mask].mean()
        return loss, {}

    return optimise(frames, stages, loss_fn, reference_frame=reference_frame, progress=progress or Progress(),
                    regulariser_weight=regulariser_weight, regulariser=gradient_regulariser, region=region,
                    initial=initial)


class _SequenceObjective:
    """:func:`sequence_loss` of one sequence for any field (lower is better); the mask is
    computed once, the MIND descriptors chunk by chunk at each call (cheap: ~1-2 ms per frame)."""

    #: Frames per chunk of the structure term (its descriptors are made per call, never held).
    MIND_CHUNK = 16

    def __init__(self, frames: torch.Tensor, region_mask: torch.Tensor | None, reference_frame: int | None):
        self.frames = frames
        self.mask = border_mask(tuple(frames.shape[-2:]), frames.device, region=region_mask)
        self.groupwise = reference_frame is None

    def __call__(self, displacement: torch.Tensor) -> float:
        with torch.no_grad():
            return float(sequence_loss(self.frames, displacement.to(self.frames.dtype), mask=self.mask,
                                       descriptors=None, mind_chunk=self.MIND_CHUNK, groupwise=self.groupwise))
