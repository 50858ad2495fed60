"""Per-frame transform model and multi-resolution optimiser shared by the classical engines.

Each frame ``i`` has a translation ``t_i`` and a free-form deformation given by a coarse grid
of control-point displacements (interpolated to pixels with bicubic interpolation, which is
smooth like a cubic B-spline FFD but interpolating). Both are stored in **full-resolution
pixels** so they can be evaluated on any pyramid level.

The group constraint is enforced exactly, not by a penalty: in groupwise mode the parameters
are projected to zero mean over frames (so the mean displacement is 0 at every pixel); in
all-to-one mode the reference frame's parameters are held at zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..engine_api import Progress
from ..spatial import resize_displacement, warp

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


@dataclasses.dataclass
class Stage:
    """One optimisation stage: a pyramid level and what is free in it."""

    name: str
    downsample: int  # pyramid factor (1 = full resolution)
    iterations: int
    grid_spacing_px: int | None  # control-point spacing (full-res px); None = translation only
    learning_rate: float  # in full-resolution pixels per step (Adam)


class GroupTransform(torch.nn.Module):
    """Translation + control-point FFD for ``N`` frames on an ``(H, W)`` grid."""

    def __init__(self, n_frames: int, shape: tuple[int, int], reference_frame: int | None, device):
        super().__init__()
        self.shape = shape
        self.reference_frame = reference_frame
        self.translation = torch.nn.Parameter(torch.zeros(n_frames, 2, device=device))
        self.control = torch.nn.Parameter(torch.zeros(n_frames, 2, 2, 2, device=device))
        free = torch.ones(n_frames, device=device)
        if reference_frame is not None:
            free[reference_frame] = 0.0
        self.register_buffer("free", free)

    def set_grid_spacing(self, spacing_px: int) -> None:
        """Refine (or create) the control grid, keeping the current deformation."""
        h, w = self.shape
        gh = max(2, int(round((h - 1) / spacing_px)) + 1)
        gw = max(2, int(round((w - 1) / spacing_px)) + 1)
        if tuple(self.control.shape[-2:]) == (gh, gw):
            return
        with torch.no_grad():
            refined = F.interpolate(self.control.data, size=(gh, gw), mode="bicubic", align_corners=True)
        self.control = torch.nn.Parameter(refined)

    def _constrained(self, p: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (p.ndim - 1)
        if self.reference_frame is None:
            return p - p.mean(dim=0, keepdim=True)
        return p * self.free.view(shape)

    def displacement(self, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense pull-back displacement ``(N, 2, h, w)`` in pixels of the requested grid."""
        H, W = self.shape
        shape = shape or self.shape
        t = self._constrained(self.translation)
        c = self._constrained(self.control)
        dense_full_px = F.interpolate(c, size=shape, mode="bicubic", align_corners=True)
        dense_full_px = dense_full_px + t[:, :, None, None]
        if tuple(shape) == (H, W):
            return dense_full_px
        # values are full-resolution pixels: convert to the level's pixel units
        factor = dense_full_px.new_tensor([(shape[0] - 1) / (H - 1), (shape[1] - 1) / (W - 1)])
        return dense_full_px * factor.view(1, 2, 1, 1)


def pyramid_level(frames: torch.Tensor, factor: int) -> torch.Tensor:
    """Anti-aliased downsampling of ``(N, H, W)`` by an integer factor."""
    if factor == 1:
        return frames
    h, w = frames.shape[-2:]
    size = (max(8, round(h / factor)), max(8, round(w / factor)))
    return F.interpolate(frames[:, None], size=size, mode="area")[:, 0]


#: Fewest similarity pixels a user region may leave on a pyramid level before the sub-lattice is dropped.
MIN_REGION_PIXELS = 64


def border_mask(
    shape: tuple[int, int], device, margin_fraction: float = 0.06, max_pixels: int = 12000,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixels the similarity is evaluated on.

    Excludes a thin border (where warped pixels are extrapolated) and, on large grids, keeps
    a regular sub-lattice of at most ~``max_pixels`` pixels: the smooth transform is well
    determined by them and the histogram cost stays bounded at full resolution.

    ``region`` (bool ``(H, W)`` on the full grid, e.g. a heart or body mask drawn by the user)
    restricts the similarity further: it is resampled to ``shape`` (a coarse pixel counts when
    any of its fine pixels does) and intersected with the border mask; when that leaves fewer
    than :data:`MIN_REGION_PIXELS` pixels the sub-lattice is dropped so a small region still
    drives the cost. The regulariser still acts everywhere, so the field stays smooth outside.
    """
    h, w = shape
    my, mx = max(1, int(h * margin_fraction)), max(1, int(w * margin_fraction))
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    stride = max(1, int((h * w / max_pixels) ** 0.5 + 0.999))
    mask[my : h - my : stride, mx : w - mx : stride] = True
    if region is None:
        return mask
    inside = region_on_grid(region, shape, device)
    restricted = mask & inside
    if int(restricted.sum()) < MIN_REGION_PIXELS:
        full = torch.zeros(h, w, dtype=torch.bool, device=device)
        full[my : h - my, mx : w - mx] = True
        restricted = full & inside
    if not bool(restricted.any()):
        raise ValueError("the registration mask covers no pixel away from the image border; draw it over the heart / body.")
    return restricted


def region_on_grid(region: torch.Tensor, shape: tuple[int, int], device) -> torch.Tensor:
    """A bool ``(H, W)`` region resampled to ``shape`` (max pooling: any fine pixel counts)."""
    region = region.to(device=device, dtype=torch.float32)
    if tuple(region.shape) == tuple(shape):
        return region > 0
    return F.adaptive_max_pool2d(region[None, None], shape)[0, 0] > 0


def optimise(
    frames: torch.Tensor,
    stages: list[Stage],
    loss_fn: LossFn,
    *,
    reference_frame: int | None,
    progress: Progress,
    regulariser_weight: float,
    regulariser: Callable[[torch.Tensor], torch.Tensor],
    region: torch.Tensor | None = None,
    initial: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Run the stages and return the full-resolution displacement and per-stage loss history.

    ``loss_fn(warped, displacement, mask) -> (loss, extra)`` gets the warped frames of the
    current level ``(N, h, w)``, the level displacement and a border mask (intersected with
    ``region``, a user mask ``(H, W)``, when given: see :func:`border_mask`).

    ``initial`` ``(N, 2, H, W)`` (full-resolution pixels), when given, is a fixed field the
    optimised translation + FFD is added to (``u = initial + T``; the regulariser sees the
    whole ``u``): the refinement of another engine's result, e.g. the network's in
    ``any2reg-io``. It must already satisfy the group constraint (mean 0, or ``u_ref = 0``).
    """
    # Work in a canonical frame order and restore the caller's order at the end: the loss is
    # symmetric in the frames, but float sums over frames are not, and ~150 Adam steps amplify
    # that rounding in flat regions (0.34 px between two orders of one STONE phantom). In a
    # content-defined order a permuted input runs the very same arithmetic.
    order = canonical_frame_order(frames)
    frames = frames[order]
    if reference_frame is not None:
        reference_frame = int((order == reference_frame).nonzero()[0, 0])
    n, H, W = frames.shape
    if initial is not None:
        initial = initial.detach()[order].to(frames.device, frames.dtype)
    model = GroupTransform(n, (H, W), reference_frame, frames.device)
    history: dict[str, list[float]] = {}
    total = max(1, sum(s.iterations for s in stages))
    done = 0
    for stage in stages:
        level = pyramid_level(frames, stage.downsample)
        shape = tuple(level.shape[-2:])
        mask = border_mask(shape, frames.device, region=region)
        offset = None
        if initial is not None:
            offset = initial if shape == (H, W) else resize_displacement(initial, shape)
        if stage.grid_spacing_px is not None:
            model.set_grid_spacing(stage.grid_spacing_px)
            params = [model.control]
        else:
            params = [model.translation]
        # eps well above float noise: Adam turns tiny gradients of either sign into full-size
        # steps, which would make the result depend on the order of float sums (frame order).
        optimiser = torch.optim.Adam(params, lr=stage.learning_rate, eps=1e-6)
        losses = history.setdefault(stage.name, [])
        for _ in range(stage.iterations):
            optimiser.zero_grad(set_to_none=True)
            disp = model.displacement(shape)
            if offset is not None:
                disp = offset + disp
            warped = warp(level[:, None], disp, "bilinear", "border")[:, 0]
            loss, _ = loss_fn(warped, disp, mask)
            if stage.grid_spacing_px is not None and regulariser_weight > 0:
                loss = loss + regulariser_weight * regulariser(disp)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            done += 1
            progress.report(done / total, f"{stage.name}: loss {losses[-1]:.4f}")
    with torch.no_grad():
        final = model.displacement((H, W))
        if initial is not None:
            final = initial + final
        displacement = torch.empty_like(final)
        displacement[order] = final
    return displacement, history


def canonical_frame_order(frames: torch.Tensor) -> torch.Tensor:
    """A frame order defined by the frames' content alone (indices into ``frames`` ``(N, H, W)``).

    Sorted by the mean, then the standard deviation, then a fixed pseudo-random projection of
    each frame (float64): any permutation of the same frames gets the same sequence of
    frames. Frames that tie on all three are identical for every purpose here.
    """
    x = frames.detach().reshape(frames.shape[0], -1).to("cpu", torch.float64)
    projection = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    keys = np.stack([(x @ projection).numpy(), x.std(dim=1).numpy(), x.mean(dim=1).numpy()])
    return torch.from_numpy(np.lexsort(keys)).to(frames.device)


def scaled_stages(stages: list[Stage], iterations_scale: float) -> list[Stage]:
    """Scale every stage's iteration count (at least 1) — the speed/quality knob.

    Raises
    ------
    ValueError
        If ``iterations_scale`` is not a positive finite number (0 or a negative value would
        silently run one iteration per stage; NaN cannot be rounded).
    """
    try:
        scale = float(iterations_scale)
    except (TypeError, ValueError):
        scale = float("nan")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"iterations_scale must be a positive number (0.3 for a quick preview, 2 for hard cases); "
            f"got {iterations_scale!r}."
        )
    iterations_scale = scale
    return [dataclasses.replace(s, iterations=max(1, int(round(s.iterations * iterations_scale)))) for s in stages]


#: Default schedule of the classical engines, tuned on 192x192 phantoms at 1.5 mm
#: (benchmarks/results/engines_cpu.md): translation first, then coarse-to-fine FFD.
DEFAULT_STAGES = [
    Stage("translation 1/4", downsample=4, iterations=40, grid_spacing_px=None, learning_rate=0.5),
    Stage("translation 1/2", downsample=2, iterations=20, grid_spacing_px=None, learning_rate=0.2),
    Stage("ffd 1/4", downsample=4, iterations=40, grid_spacing_px=48, learning_rate=0.2),
    Stage("ffd 1/2", downsample=2, iterations=40, grid_spacing_px=24, learning_rate=0.12),
    Stage("ffd 1/1", downsample=1, iterations=30, grid_spacing_px=12, learning_rate=0.08),
]


def stages_for_spacing(stages: list[Stage], spacing_mm: tuple[float, float], shape: tuple[int, int]) -> list[Stage]:
    """Keep the control-point spacing roughly constant in mm (defaults assume ~1.5 mm pixels)."""
    pixel_mm = float(min(spacing_mm))
    out = []
    for s in stages:
        if s.grid_spacing_px is None:
            out.append(s)
            continue
        px = max(6, int(round(s.grid_spacing_px * 1.5 / pixel_mm)))
        px = min(px, max(shape) // 2)
        out.append(dataclasses.replace(s, grid_spacing_px=px))
    return out



def run_classical_engine(
    frames: torch.Tensor,
    loss_fn: LossFn,
    *,
    progress: Progress,
    reference_frame: int | None,
    spacing_mm: tuple[float, float],
    iterations_scale: float,
    regulariser_weight: float,
    nonrigid: bool,
    region: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, list[float]], list[dict]]:
    """The schedule both classical engines share: pick, adapt and run the stages.

    Returns the displacement, the loss history and a JSON-friendly description of the stages.
    """
    from ..losses import gradient_regulariser

    stages = [s for s in DEFAULT_STAGES if nonrigid or s.grid_spacing_px is None]
    stages = scaled_stages(stages_for_spacing(stages, spacing_mm, tuple(frames.shape[-2:])), iterations_scale)
    displacement, history = optimise(
        frames,
        stages,
        loss_fn,
        reference_frame=reference_frame,
        progress=progress,
        regulariser_weight=regulariser_weight,
        regulariser=gradient_regulariser,
        region=region,
    )
    described = [
        {"name": s.name, "downsample": s.downsample, "iterations": s.iterations, "grid_spacing_px": s.grid_spacing_px}
        for s in stages
    ]
    return displacement, history, described


__all__ = ["Stage", "GroupTransform", "optimise", "canonical_frame_order", "pyramid_level", "border_mask", "region_on_grid", "scaled_stages", "stages_for_spacing", "DEFAULT_STAGES", "run_classical_engine"]
