"""``any2reg`` and ``any2reg-io``: the trained set network, and the same refined per sequence.

* ``any2reg`` — one forward pass of the shipped :class:`~core.network.Any2RegNet` (any N, any
  size, any spacing, any contrast; ~1 s on a CPU). The AdaCS scorer shipped with it produces
  the per-frame correspondence maps (``result.extras["correspondence"]``).
* ``any2reg-io`` — instance optimisation: the network's field refined by ``io_steps`` Adam
  steps (30) on the training loss of this very sequence (CTE inside the border mask +
  ``lambda_reg`` x mean|grad u|^2 + group-motion penalty, plus a MIND structure term), at the
  training spacing, with the
  correction parameterised on a coarse control grid so that it stays smooth.

The weights come from the package's ``weights/`` folder (hash-verified by the io layer's
:mod:`~napari_any2reg.io.model_io`, the :func:`core.weights.weights_source`) once per process and device; ``weights=PATH`` uses a training checkpoint
or ``best.pt`` instead (benchmarks, ablations).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import conditional_template_entropy, gradient_regulariser, group_motion_penalty
from ..network import Any2RegNet, CorrespondenceScorer, mind_descriptors, networks_from_checkpoint, predict, predict_scores
from ..network.any2reg_net import _resize_images, _working_shape
from ..engine_api import EngineOutput, Progress, register_engine
from ..spatial import compose_displacements, upsample_displacement, warp
from ..weights import WeightsError, weights_source
from ._transform import Stage, border_mask, canonical_frame_order, optimise, pyramid_level, stages_for_spacing

__all__ = ["DEFAULT_WEIGHTS", "load_pretrained", "shipped_weights_name", "sequence_loss", "coarse_translation", "Pretrained", "instance_optimise", "any2reg_engine", "any2reg_io_engine"]

#: The shipped weights file used by default.
DEFAULT_WEIGHTS = "any2reg-v10.pt"
#: Test-time orientations of the network pass (see :func:`core.network.predict`). Two (the
#: frames as given and flipped left-right, fields mapped back and averaged): on the validation
#: set (motion-free MOLLI phantoms seeds 10000-10003 and training-base real slices; moved
#: phantoms and real slices with 10 / 25 mm known motion) any2reg-v6 invents 13 % less motion
#: (mean 0.301 -> 0.261 mm) at the same accuracy (median EPE ratio 0.303 -> 0.301) for 1.4x
#: the network time; four passes add little more (0.254 mm, 0.298) for 2.6x.
DEFAULT_ORIENTATIONS = 2


class Pretrained:
    """A loaded network with its scorer and provenance."""

    def __init__(self, net: Any2RegNet, scorer: CorrespondenceScorer | None, info: dict[str, Any]):
        self.net = net
        self.scorer = scorer
        self.info = info

    @property
    def training_spacing_mm(self) -> tuple[float, float]:
        return tuple(self.info["training_spacing_mm"])


def shipped_weights_name(weights: str | Path | None) -> str | None:
    """The manifest name of a shipped weights file given by name (``"any2reg-v1"`` or
    ``"any2reg-v1.pt"``); ``None`` for the default, for paths and for unknown names."""
    if weights is None:
        return DEFAULT_WEIGHTS
    text = str(weights)
    source = weights_source()
    if source.is_path(text):
        return None
    names = source.shipped_names()
    for name in (text, f"{text}.pt"):
        if name in names:
            return name
    return None


#: No trained weight comes near this (the shipped files: |w| < 3); a file beyond it is damaged.
_MAX_ABS_WEIGHT = 1e6


def _check_tensors(checkpoint: dict[str, Any]) -> None:
    """ValueError naming the first network tensor that holds NaN / Inf or an implausible value:
    a damaged file must not reach the network (NaN fields, a LinAlgError in the aggregation,
    or a field of 1e31 px)."""
    for group in ("model_state", "scorer_state"):
        state = checkpoint.get(group)
        if state is None:
            continue
        if not isinstance(state, dict):
            raise ValueError(f"its {group} is a {type(state).__name__}, not a state dictionary")
        for key, value in state.items():
            if not torch.is_tensor(value) or not value.is_floating_point() or value.numel() == 0:
                continue
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"tensor {group}[{key!r}] holds NaN or Inf: the file is damaged; use another copy")
            largest = float(value.abs().max())
            if largest > _MAX_ABS_WEIGHT:
                raise ValueError(f"tensor {group}[{key!r}] holds {largest:.3g}, far beyond any trained weight: "
                                 "the file is damaged; use another copy")


@functools.lru_cache(maxsize=8)
def _load_cached(weights: str | None, device: str, shipped: str | None = None) -> Pretrained:
    dev = torch.device(device)
    # the io layer reads the file (and checks a shipped one's SHA-256): core reads no file
    checkpoint, source, sha = weights_source().load(shipped if shipped is not None else weights, shipped is not None)
    try:
        if not isinstance(checkpoint, dict):
            raise ValueError(f"holds a {type(checkpoint).__name__}, not an any2reg checkpoint")
        _check_tensors(checkpoint)
        net, scorer = networks_from_checkpoint(checkpoint, dev)  # strict: expected keys and shapes
        spacing = checkpoint.get("training_spacing_mm") or checkpoint["config"]["spacing_mm"]
        if len(spacing) != 2 or not all(math.isfinite(float(s)) and float(s) > 0 for s in spacing):
            raise ValueError(f"training spacing {spacing!r} is not two positive mm values")
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"Weights file {source}: {exc}") from exc
    info = {
        "weights": source,
        "sha256": sha,
        "step": checkpoint.get("step"),
        "training_spacing_mm": tuple(float(s) for s in spacing),
        "net_config": dict(checkpoint["net_config"]),
        "has_scorer": scorer is not None,
    }
    return Pretrained(net, scorer, info)


def load_pretrained(device: str | torch.device = "cpu", weights: str | Path | None = None) -> Pretrained:
    """The Any2Reg network (and AdaCS scorer) on ``device``, loaded once per process.

    ``weights``: ``None`` for the default shipped, hash-verified file; the name of another
    shipped file (``"any2reg-v1"``, kept for comparison; hash-verified too); or a path to
    ``best.pt`` / ``checkpoint.pt`` / an exported weights file.
    """
    dev = torch.device(device)
    shipped = shipped_weights_name(weights)
    if shipped is not None:
        return _load_cached(None, str(dev), shipped)
    return _load_cached(str(Path(weights).resolve()), str(dev))


def shipped_weights_available() -> bool:
    """Whether the default weights are installed, listed and intact (SHA-256 checked)."""
    return weights_source().problem(DEFAULT_WEIGHTS) is None


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
) -> torch.Tensor:
    """How well ``displacement`` aligns normalised ``frames`` ``(N, H, W)`` (lower is better).

    The training loss (CTE inside ``mask`` + ``lambda_reg`` mean|∇u|² + ``lambda_grp`` group
    penalty when ``groupwise``) plus ``lambda_structure`` x the groupwise residual of the MIND
    ``descriptors`` of the raw frames, warped with them (``None``: no structure term).
    """
    warped = warp(frames[:, None], displacement)[:, 0]
    loss = conditional_template_entropy(warped, bins=bins, mask=mask) + lambda_reg * gradient_regulariser(displacement)
    if descriptors is not None:
        moved = warp(descriptors, displacement)
        residual = ((moved - moved.mean(dim=0, keepdim=True)) ** 2).mean(dim=1)
        loss = loss + lambda_structure * residual[:, mask].mean()
    if groupwise:
        loss = loss + lambda_grp * group_motion_penalty(displacement)
    return loss


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


# ---------------------------------------------------------------- coarse stage
def _subpixel_peaks(correlation: torch.Tensor) -> torch.Tensor:
    """Positions of the maxima of circular correlation maps ``(N, h, w)`` as signed shifts
    ``(N, 2)``, refined by a parabola through each peak and its neighbours on each axis."""
    n, h, w = correlation.shape
    index = torch.argmax(correlation.reshape(n, -1), dim=1)
    py, px = index // w, index % w
    rows = torch.arange(n, device=correlation.device)
    shifts = []
    for p, size, sample in ((py, h, lambda q: correlation[rows, q % h, px]), (px, w, lambda q: correlation[rows, py, q % w])):
        left, centre, right = sample(p - 1), sample(p), sample(p + 1)
        denominator = left - 2 * centre + right
        offset = torch.where(denominator < 0, 0.5 * (left - right) / denominator.clamp(max=-1e-12), torch.zeros_like(centre))
        value = p.to(correlation.dtype) + offset.clamp(-0.5, 0.5)
        shifts.append(torch.where(value > size / 2, value - size, value))
    return torch.stack(shifts, dim=1)


def coarse_translation(
    frames: torch.Tensor,
    *,
    spacing_mm,
    training_spacing_mm,
    reference_frame: int | None = None,
    iterations: int = 3,
    threshold_mm: float = 8.0,
    max_shift_mm: float = 45.0,
) -> torch.Tensor:
    """Groupwise translation of every frame, the coarse stage before the network.

    Breathing can shift whole frames by 20–30 mm (real STONE frames 0–1 sit 15–20 px away
    from the rest), more than a network captures well in one pass. On the network's working
    grid (training spacing), each frame's contrast-insensitive MIND descriptors (centre-
    weighted by a Hann window: the heart is near the centre of a cardiac scan) are
    cross-correlated by FFT with the mean of the other frames' descriptors, shifted by the
    current estimate; the peak (parabolic sub-pixel refinement) gives the frame's shift. Three
    rounds, then the shifts are centred over frames (or ``t_ref = 0``). Costs milliseconds.

    Do-no-harm: if no frame is more than ``threshold_mm`` away from the group after this
    stage, the motion is left to the network entirely (returns zeros): a small, noisy shift
    estimate would only add error where the network is accurate on its own. 8 mm: on
    motion-free real kidney MOLLI the estimate reaches 3 mm at the null-crossing frames (MIND
    still sees contrast there); on the validation set (see ``benchmarks/validate_weights.py``)
    4 mm let the stage fire on 10 mm phantom motion that the network captures better alone
    (median EPE ratio 0.297 -> 0.288 with 6-10 mm; still 25 mm shifts fire). The engine also
    runs the network without the shift and keeps the field its objective prefers.

    Parameters
    ----------
    frames : Tensor (N, H, W), normalised
    spacing_mm, training_spacing_mm : (dy, dx)
    reference_frame : int, optional
    iterations : int
    threshold_mm, max_shift_mm : float

    Returns
    -------
    Tensor (N, 2): translation ``(dy, dx)`` of each frame in input pixels (pull-back:
    ``registered_i(x) = frame_i(x + t_i)``).
    """
    n = frames.shape[0]
    shape = tuple(frames.shape[-2:])
    work = _working_shape(shape, spacing_mm, training_spacing_mm)
    work_spacing = training_spacing_mm if work != shape else (spacing_mm or training_spacing_mm)
    x = _resize_images(frames[:, None].float(), work)[:, 0]
    features = mind_descriptors(x)
    features = features - features.mean(dim=(-2, -1), keepdim=True)
    window = torch.outer(torch.hann_window(work[0], periodic=False, device=x.device),
                         torch.hann_window(work[1], periodic=False, device=x.device))
    spectra = torch.fft.rfft2(features * window)  # (N, C, h, w/2+1)
    ky = torch.fft.fftfreq(work[0], device=x.device)[:, None]
    kx = torch.fft.rfftfreq(work[1], device=x.device)[None, :]
    limit_px = [max_shift_mm / float(s) for s in work_spacing]
    shifts = torch.zeros(n, 2, dtype=torch.float64)
    for _ in range(iterations):
        # the spectra moved back by the current shifts (Fourier shift theorem)
        phase = torch.exp(2j * math.pi * (ky * shifts[:, 0, None, None].to(x.device) + kx * shifts[:, 1, None, None].to(x.device)))
        aligned = spectra * phase[:, None].to(spectra.dtype)
        total = aligned.sum(dim=0, keepdim=True)
        # each frame against the mean of the *other* frames (its own noise does not attract it)
        templates = (total - aligned) / max(n - 1, 1)
        correlation = torch.fft.irfft2((spectra * templates.conj()).sum(dim=1), s=work)
        peaks = _subpixel_peaks(correlation).to(torch.float64).cpu()
        new = torch.stack([peaks[:, 0].clamp(-limit_px[0], limit_px[0]), peaks[:, 1].clamp(-limit_px[1], limit_px[1])], dim=1)
        shifts = new - (new.mean(dim=0, keepdim=True) if reference_frame is None else new[reference_frame : reference_frame + 1])
    spread_mm = (shifts * torch.tensor(work_spacing, dtype=torch.float64)).norm(dim=1).max()
    if float(spread_mm) < threshold_mm:
        shifts = torch.zeros_like(shifts)
    scale = torch.tensor([(shape[0] - 1) / max(work[0] - 1, 1), (shape[1] - 1) / max(work[1] - 1, 1)], dtype=torch.float64)
    return (shifts * scale).to(device=frames.device, dtype=frames.dtype)


#: Largest working grid (pixels per frame) a network pass runs on. A finer field of view is
#: resampled to the coarser spacing that fits (said in ``params["working_grid"]``): a 512 x 512
#: renal DCE at its native 0.7 mm took 3x longer than at 1.4 mm and lost its large breathing
#: motion (issue 22), and the pass's memory grows with the pixels of every frame.
MAX_WORKING_PIXELS = 256 * 256

#: Network passes at the working grid (``passes``), chosen on the independent validation set
#: (``benchmarks/validate_fullres.py``, rule in its docstring; table in
#: ``benchmarks/results/validate_fullres.md``): a 3 mm pass then one native pass, two
#: orientations, gave a median EPE ratio of 0.289 (3 mm alone 0.342, native alone 0.556: the
#: fine grid misses large motion) in 1.46 s (N = 11, 192 x 192, 2 threads); a second native
#: pass reached 0.270 at 2 orientations but took 3.4 s and invented more motion (1.28 vs 1.04 mm).
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


def _network_field(model: Pretrained, frames: torch.Tensor, initial: torch.Tensor | None, *, spacing_mm,
                   schedule: list[tuple[str, tuple[float, float]]], reference_frame: int | None, auxiliary_features,
                   orientations: int, progress: Progress, shifts: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
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
    and their spread around the pass's field joins the orientations'."""
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
        v, sd = predict(model.net, network_input.detach().cpu().numpy(), spacing_mm=spacing_mm,
                        training_spacing_mm=pass_spacing, reference_frame=reference_frame,
                        auxiliary_features=None if aux is None else aux.cpu().numpy(), orientations=orientations,
                        normalised=True, spread=True,
                        progress=lambda fraction, p=pass_progress, m=label: p.report(fraction, f"network {m}"))
        v = torch.from_numpy(v).to(frames.device)
        pass_variance = torch.from_numpy(sd).to(frames.device) ** 2
        if shifts and index == len(schedule) - 1:
            pass_variance = _with_shifted_inputs(model, network_input, v, pass_variance, orientations, shifts,
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
    On MOLLI / STONE / SASHA phantoms the shifts raised the rank correlation of the SD with the
    true error in the heart from about 0 (two orientations alone) to 0.06-0.28
    (``benchmarks/bench_uncertainty.py``)."""
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


# ---------------------------------------------------------------- engines
class _SequenceObjective:
    """:func:`sequence_loss` of one sequence for any field (lower is better); the MIND
    descriptors and the mask are computed once."""

    def __init__(self, frames: torch.Tensor, region_mask: torch.Tensor | None, reference_frame: int | None):
        self.frames = frames
        self.mask = border_mask(tuple(frames.shape[-2:]), frames.device, region=region_mask)
        self.descriptors = mind_descriptors(frames)
        self.groupwise = reference_frame is None

    def __call__(self, displacement: torch.Tensor) -> float:
        with torch.no_grad():
            return float(sequence_loss(self.frames, displacement.to(self.frames.dtype), mask=self.mask,
                                       descriptors=self.descriptors, groupwise=self.groupwise))


def _run(frames: torch.Tensor, *, progress: Progress, reference_frame: int | None, spacing_mm, weights,
         auxiliary_features, io_steps: int, io_learning_rate: float, scores: bool, coarse: bool,
         orientations: int, region_mask: torch.Tensor | None = None, refinement: str = "classical",
         working_spacing_mm: float | None = None, passes: int = DEFAULT_PASSES,
         coarse_pass_mm: float = DEFAULT_COARSE_PASS_MM, do_no_harm: bool = True,
         uncertainty_shifts: int = 2) -> EngineOutput:
    progress.report(0.0, "loading the Any2Reg network")
    model = load_pretrained(frames.device, weights)
    progress.check()
    # progress spans: coarse stage 0-0.05, network up to `network_end`, instance optimisation
    # up to `split`, correspondence maps to the end
    split = 0.85
    network_end = 0.3 if io_steps > 0 else split
    history: dict[str, list[float]] = {}
    shape = tuple(frames.shape[-2:])
    # an unknown spacing is taken as the training spacing (the network's only known grid)
    scan_spacing = tuple(float(s) for s in (spacing_mm or model.training_spacing_mm))
    working, working_reason = working_grid(shape, scan_spacing, working_spacing_mm)
    schedule = pass_schedule(scan_spacing, working, int(passes), float(coarse_pass_mm or 0.0))
    translation = None
    if coarse:
        translation = coarse_translation(frames, spacing_mm=scan_spacing, training_spacing_mm=model.training_spacing_mm,
                                         reference_frame=reference_frame)
        if not bool(translation.any()):  # below the threshold: the network sees the frames as given
            translation = None
    array = frames.detach().cpu().numpy()
    network_progress = progress.stage(0.05, network_end)
    network_progress.report(0.0, "network prediction")
    # a constant shift is a field like any other: the passes start from it
    starts = [None] if translation is None else [translation[:, :, None, None].expand(-1, -1, *shape).contiguous(), None]
    fields, variances = [], []
    for index, start in enumerate(starts):
        field, variance = _network_field(model, frames, start, spacing_mm=scan_spacing, schedule=schedule,
                                     reference_frame=reference_frame, auxiliary_features=auxiliary_features,
                                     orientations=orientations, shifts=uncertainty_shifts,
                                     progress=network_progress.stage(index / len(starts), (index + 1) / len(starts)))
        fields.append(field)
        variances.append(variance)
        progress.check()
    objective = _SequenceObjective(frames, region_mask, reference_frame) if (len(fields) == 2 or do_no_harm) else None
    coarse_losses = None
    if len(fields) == 2:
        # The coarse shift is only a starting point: with it the network captures the largest
        # breathing shifts (real STONE frames 0-1, 23-31 mm), without it the network alone is
        # more accurate on most smooth 20-30 mm motion (validation, benchmarks/validate_coarse.py:
        # median EPE ratio 0.227 with, 0.148 without, 48 phantom / training-base cases). Keep
        # whichever the sequence's own objective (the training loss + MIND structure term, no
        # ground truth) prefers: on that set it matched the better of the two (median 0.148),
        # and validate_weights.py's kidney case at 25 mm, which needs the shift (0.289 with,
        # 0.542 without), kept it.
        coarse_losses = [objective(u) for u in fields]
        if coarse_losses[1] < coarse_losses[0]:
            translation = None
    displacement = fields[0] if translation is not None else fields[-1]
    variance = variances[0] if translation is not None else variances[-1]
    if io_steps > 0 and refinement == "classical":
        # on the input grid (the network works at its 3 mm training spacing; the refinement adds
        # the detail of finer scans): control spacing in mm as the groupwise engine's
        displacement, stage_losses = classical_refinement(
            frames, displacement.to(frames.dtype), steps=io_steps, spacing_mm=spacing_mm or model.training_spacing_mm,
            reference_frame=reference_frame, progress=progress.stage(network_end, split), region=region_mask,
        )
        history.update(stage_losses)
    elif io_steps > 0:
        # refine at the training spacing, where the loss and its weights were tuned
        shape = tuple(array.shape[-2:])
        work = _working_shape(shape, spacing_mm, model.training_spacing_mm)
        x = _resize_images(frames[:, None], work)[:, 0]
        u_work = upsample_displacement(displacement, work) if work != shape else displacement
        refined, losses = instance_optimise(
            x, u_work, steps=io_steps, learning_rate=io_learning_rate, reference_frame=reference_frame,
            progress=progress.stage(network_end, split), region=region_mask,
        )
        displacement = upsample_displacement(refined, shape) if work != shape else refined
        history["instance_optimisation"] = losses
    harm = None
    if do_no_harm:
        # Do no harm: a field that leaves the sequence's own objective (no ground truth) worse
        # than no registration at all is not returned; identity is, and the result says so.
        harm = {"identity": round(objective(torch.zeros_like(displacement)), 5), "registered": round(objective(displacement), 5)}
        harm["fallback"] = bool(harm["registered"] >= harm["identity"])
        if harm["fallback"]:
            displacement = torch.zeros_like(displacement)
    extras: dict[str, Any] = {}
    uncertainty = _uncertainty_note(orientations, uncertainty_shifts, io_steps, harm)
    if orientations + uncertainty_shifts > 1:
        extras["displacement_sd_mm"] = displacement_sd_mm(variance, scan_spacing)
    if scores:
        score_progress = progress.stage(split, 1.0)
        score_progress.report(0.0, "correspondence scores")
        extras["correspondence"] = predict_scores(model.scorer, array, displacement.detach().cpu().numpy(),
                                                  spacing_mm=spacing_mm, training_spacing_mm=model.training_spacing_mm, normalised=True,
                                                  progress=lambda fraction: score_progress.report(fraction, "correspondence scores"))
        extras["correspondence_source"] = "adacs-scorer" if model.scorer is not None else "residual"
    progress.report(1.0, "done")
    params = {
        "weights": model.info["weights"],
        "weights_sha256": model.info["sha256"],
        "training_step": model.info["step"],
        "training_spacing_mm": list(model.training_spacing_mm),
        "aggregation": model.info["net_config"].get("aggregation"),
        "auxiliary": "user" if auxiliary_features is not None else (model.info["net_config"].get("auxiliary_kind") if model.info["net_config"].get("use_auxiliary") else None),
    }
    if io_steps > 0:
        params.update(io_steps=io_steps, refinement=refinement)
        if refinement == "instance":
            params["io_learning_rate"] = io_learning_rate
    params["coarse"] = bool(coarse)
    params["coarse_used"] = translation is not None  # shifts above the threshold, and the objective kept them
    if coarse_losses is not None:
        params["coarse_losses"] = {"with_shift": round(coarse_losses[0], 5), "without": round(coarse_losses[1], 5)}
    params["orientations"] = int(orientations)
    params["uncertainty"] = uncertainty
    params["working_grid"] = {"spacing_mm": [round(v, 4) for v in working], "why": working_reason,
                              "resampled": not _same_grid(working, scan_spacing, 1e-6)}
    params["passes"] = int(passes)
    params["network_passes"] = [{"pass": label, "spacing_mm": [round(v, 4) for v in sp]} for label, sp in schedule]
    if harm is not None:
        params["do_no_harm"] = harm
    if translation is not None:
        params["coarse_translation_px"] = [[round(float(v), 3) for v in row] for row in translation.cpu()]
    return EngineOutput(displacement=displacement, loss_history=history, params=params, extras=extras)


def _uncertainty_note(orientations: int, shifts: int, io_steps: int, harm: dict[str, Any] | None) -> str:
    """What ``displacement_sd_mm`` is for this run (``params["uncertainty"]``)."""
    if orientations + shifts < 2:
        return ("none: one test-time orientation and no shifted passes give no spread; use orientations=2 or "
                "uncertainty_shifts=2")
    text = (f"SD of the network's displacement over {orientations} test-time orientation(s) and {shifts} "
            "shifted inputs (mm, per pixel)")
    if io_steps > 0:
        text += "; of the network prediction before the refinement"
    if harm is not None and harm.get("fallback"):
        text += "; the returned field is identity (do no harm), the SD is of the rejected prediction"
    return text


def _check_unused(name: str, unused: dict[str, Any]) -> None:
    if unused:
        raise TypeError(f"{name}: unknown option(s) {', '.join(sorted(unused))}")


@register_engine("any2reg")
def any2reg_engine(frames: torch.Tensor, *, progress: Progress, reference_frame: int | None, spacing_mm,
                   weights: str | Path | None = None, auxiliary_features: np.ndarray | None = None,
                   scores: bool = True, coarse: bool = True, orientations: int = DEFAULT_ORIENTATIONS,
                   working_spacing_mm: float | None = None, passes: int = DEFAULT_PASSES,
                   coarse_pass_mm: float = DEFAULT_COARSE_PASS_MM, do_no_harm: bool = True,
                   uncertainty_shifts: int = 2, **unused: Any) -> EngineOutput:
    """Register with one forward pass of the trained network.

    Parameters
    ----------
    weights : path, optional
        A weights / checkpoint file instead of the shipped one.
    auxiliary_features : ndarray (N, C, H, W), optional
        Per-frame feature maps replacing the built-in MIND stream (the network must have been
        trained with ``auxiliary_channels=C``).
    scores : bool
        Also compute the per-frame correspondence maps (``extras["correspondence"]``).
    coarse : bool
        Groupwise translation pre-alignment before the network (:func:`coarse_translation`),
        for breathing shifts larger than the network captures. When it fires (a frame > 8 mm
        off), the network also runs on the frames as given and the field with the lower
        sequence objective is kept (``params["coarse_losses"]``, ``params["coarse_used"]``);
        ``False`` skips the stage.
    orientations : {1, 2, 4}
        Test-time augmentation (:func:`core.network.predict`): mean of the fields predicted in
        1, 2 or 4 orientations, in every network pass; each costs one forward pass.
    working_spacing_mm : float, optional
        Isotropic spacing the network passes run at; ``None``: the scan's own pixel grid. Either
        is coarsened where a frame would exceed :data:`MAX_WORKING_PIXELS`
        (``params["working_grid"]`` says which grid ran and why).
    passes : int
        Network passes at the working grid, each on the frames warped by the field so far,
        composed exactly (:func:`core.spatial.compose_displacements`).
    coarse_pass_mm : float
        Spacing of one first pass before them that catches large motion (0: none; skipped
        where the working grid is not finer).
    do_no_harm : bool
        Return no motion (identity) when the field leaves the sequence's objective worse than
        identity does (``params["do_no_harm"]``).
    uncertainty_shifts : int
        Extra passes of the last network pass on shifted inputs; with the orientations they
        give ``extras["displacement_sd_mm"]`` (N, H, W), the per-pixel SD of the displacement
        in mm (``params["uncertainty"]`` says what it is; none with one orientation and 0).
    """
    _check_unused("any2reg", unused)
    return _run(frames, progress=progress, reference_frame=reference_frame, spacing_mm=spacing_mm, weights=weights,
                auxiliary_features=auxiliary_features, io_steps=0, io_learning_rate=0.0, scores=scores,
                coarse=bool(coarse), orientations=int(orientations), working_spacing_mm=working_spacing_mm,
                passes=int(passes), coarse_pass_mm=float(coarse_pass_mm), do_no_harm=bool(do_no_harm),
                uncertainty_shifts=int(uncertainty_shifts))


@register_engine("any2reg-io")
def any2reg_io_engine(frames: torch.Tensor, *, progress: Progress, reference_frame: int | None, spacing_mm,
                      weights: str | Path | None = None, auxiliary_features: np.ndarray | None = None,
                      io_steps: int = 30, io_learning_rate: float = 0.05, scores: bool = True,
                      coarse: bool = True, orientations: int = DEFAULT_ORIENTATIONS,
                      refinement: str = "classical",
                      working_spacing_mm: float | None = None, passes: int = DEFAULT_PASSES,
                      coarse_pass_mm: float = DEFAULT_COARSE_PASS_MM, do_no_harm: bool = True,
                      uncertainty_shifts: int = 2,
                      region_mask: torch.Tensor | None = None, **unused: Any) -> EngineOutput:
    """The network's prediction refined on this sequence by ``io_steps`` optimisation steps.

    ``refinement="classical"`` (default): the groupwise engine's objective and FFD started from
    the network's field (:func:`classical_refinement`); ``"instance"``: Adam on the training
    loss plus a MIND term over a control grid (:func:`instance_optimise`, step size
    ``io_learning_rate``). Other options as :func:`any2reg_engine`. ``region_mask`` (bool
    ``(H, W)``, from ``register(mask=...)``) restricts the refinement's similarity."""
    _check_unused("any2reg-io", unused)
    if io_steps < 0:
        raise ValueError(f"any2reg-io: io_steps must be >= 0; got {io_steps}")
    if refinement not in REFINEMENTS:
        raise ValueError(f"any2reg-io: refinement must be one of {', '.join(REFINEMENTS)}; got {refinement!r}")
    return _run(frames, progress=progress, reference_frame=reference_frame, spacing_mm=spacing_mm, weights=weights,
                auxiliary_features=auxiliary_features, io_steps=int(io_steps), io_learning_rate=float(io_learning_rate),
                scores=scores, coarse=bool(coarse), orientations=int(orientations), region_mask=region_mask,
                refinement=refinement, working_spacing_mm=working_spacing_mm, passes=int(passes),
                coarse_pass_mm=float(coarse_pass_mm), do_no_harm=bool(do_no_harm),
                uncertainty_shifts=int(uncertainty_shifts))
