"""The network passes: the working grid a pass runs on (:func:`working_grid`), the schedule of
a coarse and the fine passes (:func:`pass_schedule`), the field they compose, and the
displacement SD from shifted and flipped inputs (:func:`displacement_sd_mm`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...engine_api import Progress
from ...network import predict
from ...spatial import compose_displacements, warp
from .pretrained import Pretrained


#: Largest working grid (pixels per frame) a network pass runs on. A finer field of view is
#: resampled to the coarser spacing that fits (said in ``params["working_grid"]``): a 512 x 512
#: renal DCE at its native 0.7 mm took 3x longer than at 1.4 mm and lost its large breathing
#: motion (issue 22), and the pass's memory grows with the pixels of every frame.
MAX_WORKING_PIXELS = 256 * 256

#: Network passes at the working grid (``passes``), chosen on the independent validation set
#: (``benchmarks/validate_fullres.py``, rule in its docstring; table in
#: ``benchmarks/results/validate_fullres.md``): a 3 mm pass then one native pass, two
#: orientations, gave a median EPE ratio of 0.289 (3 mm alone 0.342, native alone 0.556: the
#: fine grid misses large motion); a second native pass reached 0.270 at 2 orientations but
#: took twice as long and invented more motion (1.28 vs 1.04 mm). The native pass runs in one
#: orientation (:func:`orientations_per_pass`, row I: 0.287 with v12 in 1.35 s at 2 threads).
DEFAULT_PASSES = 1
#: Spacing of a first network pass that catches large motion before the fine passes
#: (``coarse_pass_mm``; 0: none). The shipped weights' training spacing.
DEFAULT_COARSE_PASS_MM = 3.0


def working_grid(shape: tuple[int, int], spacing_mm, working_spacing_mm: float | None = None,
                 max_pixels: int = MAX_WORKING_PIXELS) -> tuple[tuple[float, float], str]:
    """The spacing ``(dy, dx)`` the network passes run at, and why.

    ``working_spacing_mm=None``: the scan's own spacing (no resampling); a number: that
    isotropic spacing. Either is coarsened (isotropically, by the smallest factor) when the
    working grid would exceed ``max_pixels`` per frame.
    """
    spacing = tuple(float(s) for s in spacing_mm)
    if working_spacing_mm is None:
        target, reason = spacing, "native"
    else:
        target, reason = (float(working_spacing_mm),) * 2, "requested"
    a, b = [(size - 1) * s / t for size, s, t in zip(shape, spacing, target)]
    if (a + 1) * (b + 1) > max_pixels:
        # the factor f with (a / f + 1)(b / f + 1) = max_pixels (corner-aligned grids)
        m = max_pixels - 1
        factor = ((a + b) + math.sqrt((a + b) ** 2 + 4 * m * a * b)) / (2 * m)
        target = tuple(t * factor for t in target)
        reason += f", coarsened to fit {max_pixels} pixels per frame"
    return target, reason


def _same_grid(a, b, tolerance: float = 0.1) -> bool:
    return all(abs(x / y - 1.0) <= tolerance for x, y in zip(a, b))


def pass_schedule(spacing_mm, working: tuple[float, float], passes: int, coarse_pass_mm: float) -> list[tuple[str, tuple[float, float]]]:
    """``(label, spacing)`` of each network pass: an optional coarse pass (only where it is
    coarser than the working grid), then ``passes`` passes at the working grid."""
    schedule = []
    if coarse_pass_mm and coarse_pass_mm > 1.1 * max(working):
        schedule.append(("coarse", (float(coarse_pass_mm),) * 2))
    schedule += [(f"pass {k + 1}/{passes}", tuple(working)) for k in range(passes)]
    return schedule


def orientations_per_pass(schedule: list[tuple[str, tuple[float, float]]], orientations: int,
                          fine_pass_orientations: int | None) -> list[int]:
    """The test-time orientations of each pass of ``schedule``: ``orientations`` for a coarse
    pass (or for every pass when none runs), ``fine_pass_orientations`` (``None``: the same) for
    the passes at the working grid after a coarse pass. On the validation set a second
    orientation at the working grid after a coarse pass moved the median EPE ratio by 0.002
    and cost 0.4 s at 2 threads (0.8 s at 1; N = 11, 192 x 192), which took the engine over its
    1.5 s budget (``benchmarks/results/validate_fullres.md``, rows C and I)."""
    coarse_ran = any(label == "coarse" for label, _ in schedule)
    fine = orientations if (fine_pass_orientations is None or not coarse_ran) else fine_pass_orientations
    return [int(orientations) if label == "coarse" else int(fine) for label, _ in schedule]


def _network_field(model: Pretrained, frames: torch.Tensor, initial: torch.Tensor | None, *, spacing_mm,
                   schedule: list[tuple[str, tuple[float, float]]], reference_frame: int | None, auxiliary_features,
                   orientations: "int | list[int]", progress: Progress, shifts: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's displacement ``(N, 2, H, W)`` for normalised ``frames`` after the passes
    of ``schedule``, each run on the raw frames warped by the field so far (starting from
    ``initial``, e.g. the coarse translation) and composed with it exactly
    (``u = v + u_prev(x + v)``, DESIGN.md section 7), so the registered frames are one
    interpolation of the raw ones however many passes ran.

    Also returns the variance of each component over the test-time orientations (pixels²,
    ``(N, 2, H, W)``), summed over the passes as independent errors: a pass's variance is
    carried to where the later passes sample its field (``var_prev(x + v)``), as the field is.
    The last pass also runs ``shifts`` times on its input shifted by a few pixels
    (:data:`UNCERTAINTY_SHIFTS_PX`, off the network's pooling grid), each field shifted back,
    and their spread around the pass's field joins the orientations'. ``orientations``: one
    number for every pass, or one per pass of ``schedule`` (:func:`orientations_per_pass`)."""
    per_pass = [int(orientations)] * len(schedule) if isinstance(orientations, int) else [int(k) for k in orientations]
    u = initial
    variance = None
    aux_raw = None
    if auxiliary_features is not None:
        aux_raw = torch.as_tensor(np.asarray(auxiliary_features, np.float32), device=frames.device)
        aux_raw = aux_raw if aux_raw.ndim == 4 else aux_raw[:, None]
    for index, (label, pass_spacing) in enumerate(schedule):
        pass_progress = progress.stage(index / len(schedule), (index + 1) / len(schedule))
        network_input, aux = frames, aux_raw
        if u is not None:
            network_input = warp(frames[:, None], u)[:, 0]
            if aux_raw is not None:  # user features live on the frames' grid: move them alike
                aux = warp(aux_raw, u)
        pass_orientations = per_pass[index]
        v, sd = predict(model.net, network_input.detach().cpu().numpy(), spacing_mm=spacing_mm,
                        training_spacing_mm=pass_spacing, reference_frame=reference_frame,
                        auxiliary_features=None if aux is None else aux.cpu().numpy(), orientations=pass_orientations,
                        normalised=True, spread=True,
                        progress=lambda fraction, p=pass_progress, m=label: p.report(fraction, f"network {m}"))
        v = torch.from_numpy(v).to(frames.device)
        pass_variance = torch.from_numpy(sd).to(frames.device) ** 2
        if shifts and index == len(schedule) - 1:
            pass_variance = _with_shifted_inputs(model, network_input, v, pass_variance, pass_orientations, shifts,
                                                 spacing_mm=spacing_mm, pass_spacing=pass_spacing,
                                                 reference_frame=reference_frame, aux=aux)
        variance = pass_variance if variance is None else pass_variance + warp(variance, v)
        u = v if u is None else compose_displacements(u, v)
        progress.check()
    if reference_frame is None and len(schedule) > 1:
        # composition keeps each pass's zero mean only to first order: restore the group
        # constraint (mean displacement over frames 0 at every pixel, DESIGN.md section 2)
        u = u - u.mean(dim=0, keepdim=True)
    return u, variance


#: Shifts (dy, dx) in pixels of the perturbed network inputs of the uncertainty estimate: odd
#: and off the network's stride-2 pooling grid, so each pass sees the sequence sampled anew.
UNCERTAINTY_SHIFTS_PX = ((3, 0), (0, 3), (-3, -3), (1, -2), (-1, 3), (2, 2), (-3, 1), (3, -1))


def _with_shifted_inputs(model: Pretrained, network_input: torch.Tensor, v: torch.Tensor, variance: torch.Tensor,
                         orientations: int, shifts: int, *, spacing_mm, pass_spacing, reference_frame, aux) -> torch.Tensor:
    """The variance of the field ``v`` over its ``orientations`` and ``shifts`` predictions on
    the input shifted by :data:`UNCERTAINTY_SHIFTS_PX` (pixels²; the field of a sequence
    shifted by ``s``, ``f'(x) = f(x + s)``, is ``u'(x) = u(x + s)``, so each is shifted back).
    On the independent validation set (20 moved cases, ``benchmarks/bench_uncertainty.py``) two
    shifts changed the SD's rank correlation with the true error by at most 0.02 (heart median
    0.12 either way), which is why the engines default to none; four orientations raised it to
    0.21."""
    x = network_input.detach().cpu().numpy()
    a = None if aux is None else aux.cpu().numpy()
    squares = variance * orientations  # sum over the orientation samples of (sample - v)^2
    for dy, dx in UNCERTAINTY_SHIFTS_PX[:shifts]:
        shifted = np.roll(x, shift=(-dy, -dx), axis=(-2, -1))
        shifted_aux = None if a is None else np.roll(a, shift=(-dy, -dx), axis=(-2, -1))
        w = predict(model.net, shifted, spacing_mm=spacing_mm, training_spacing_mm=pass_spacing,
                    reference_frame=reference_frame, auxiliary_features=shifted_aux, orientations=1, normalised=True)
        w = torch.from_numpy(np.roll(w, shift=(dy, dx), axis=(-2, -1))).to(v.device)
        squares = squares + (w - v) ** 2
    return squares / (orientations + shifts)


def displacement_sd_mm(variance: torch.Tensor, spacing_mm) -> np.ndarray:
    """Per-pixel SD of the displacement vector in mm, ``(N, H, W)``, from the per-component
    variance in pixels² (``sqrt(var_y dy² + var_x dx²)``)."""
    dy, dx = (float(s) for s in spacing_mm)
    sd = torch.sqrt(variance[:, 0] * dy ** 2 + variance[:, 1] * dx ** 2)
    return sd.float().cpu().numpy().astype(np.float32)
