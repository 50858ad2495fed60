"""The one registration API: ``register(sequence, engine=..., device=...) -> RegistrationResult``.

Widgets, the CLI and the benchmarks all call :func:`register`. Engines are plain functions
registered in :data:`ENGINES`; each receives the normalised frames as a torch tensor and a
:class:`Progress` object, and returns an :class:`EngineOutput`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
import torch

from .device import cpu_threads, describe_device, resolve_device
from .engine_api import (
    BUILTIN_ENGINES,
    ENGINES,
    PROGRAMMATIC_OPTIONS,
    Cancelled,
    Engine,
    EngineOutput,
    Progress,
    ProgressCallback,
    RegistrationCancelled,
    check_option,
    register_engine,
    validate_engine_options,
)
from .intensity import normalise_intensities, pca_template
from .sequence import Sequence, SequenceError
from .spatial import folding_fraction, warp_images
from .vocabulary import arg

__all__ = [
    "DEFAULT_ENGINE",
    "field_problem",
    "register",
    "RegistrationResult",
    "EngineOutput",
    "Progress",
    "RegistrationCancelled",
    "Cancelled",
    "Engine",
    "ENGINES",
    "register_engine",
    "available_engines",
    "normalise_intensities",
    "FieldError",
]


#: The engine used when none is named (widget, CLI and :func:`register`): the trained network.
DEFAULT_ENGINE = "any2reg"

#: A user mask drives the similarity of the optimising engines grown by this margin. A region
#: drawn tight around the heart (its labels) lets every frame slide until the region sees
#: uniform tissue: a lower entropy / PCA residual for a wrong answer. On MOLLI, STONE and cine
#: phantoms (8 mm motion, 3 mm grid) ``groupwise`` with the heart labels as the mask ended 4.4-16.5
#: mm from the truth in the heart (1.0-1.7 mm without a mask); grown by 20 mm, 1.1-1.7 mm (30 / 40
#: mm: no better). 20 mm is the breathing motion the engines recover: what can move into the
#: region is seen by the similarity, what lies further away (chest wall, liver) is still excluded.
MASK_MARGIN_MM = 20.0


def available_engines() -> list[str]:
    _load_builtin_engines()
    return sorted(ENGINES)


def _load_builtin_engines() -> None:
    """Import every engine module of ``core/engines`` (each registers itself with
    ``@register_engine``): a new engine is a new module there, no list to extend here."""
    # imported on first use: importing the engines loads torch networks and weights code that
    # `core.registration`'s importers (CLI --help) should not pay for
    import importlib
    import pkgutil

    from . import engines

    for module in pkgutil.iter_modules(engines.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{engines.__name__}.{module.name}")


@dataclasses.dataclass
class RegistrationResult:
    """Output of :func:`register`.

    Attributes
    ----------
    registered : ndarray (N, H, W) float32
        Frames resampled onto the common grid, in the input's intensity units.
    displacement : ndarray (N, 2, H, W) float32
        Pull-back displacement in pixels ``(dy, dx)``: ``registered_i(x) = frame_i(x + u_i(x))``.
    template : ndarray (H, W) float32
        PCA-weighted mean of the normalised registered frames (the implicit common reference).
    weights : ndarray (N,) float32
        Aggregation weights ``a_i`` (leading eigenvector of the frame correlation matrix).
    engine, params, device, seconds, loss_history
        Provenance of the run.
    reference_frame : int or None
        Fixed frame in all-to-one mode, ``None`` for groupwise.
    options : dict
        The engine options the run was asked for (validated; the engine's defaults for the
        rest), as ``register(**options)`` received them: what reproduces the run.
    """

    registered: np.ndarray
    displacement: np.ndarray
    template: np.ndarray
    weights: np.ndarray
    engine: str
    params: dict[str, Any]
    device: str
    seconds: float
    loss_history: dict[str, list[float]]
    reference_frame: int | None = None
    sequence: Sequence | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def folding_percent(self) -> float:
        return 100.0 * folding_fraction(self.displacement)

    def registered_sequence(self) -> Sequence:
        """The registered frames as a :class:`Sequence` with the input's timings and spacing."""
        base = self.sequence
        if base is None:
            return Sequence(self.registered, name="registered")
        return base.replace(frames=self.registered, name=f"{base.name} registered")

    def notes(self) -> list[str]:
        """What a reader should know about how this result was made, one short line each
        (the CLI prints them, the registration dock shows them): the grid the network ran on
        and whether the do-no-harm check replaced the field by identity."""
        notes = []
        grid = self.params.get("working_grid")
        if grid:
            dy, dx = grid["spacing_mm"]
            passes = ", ".join(f"{p['pass']} at {p['spacing_mm'][0]:g} mm" for p in self.params.get("network_passes", []))
            notes.append(f"network grid {dy:g} x {dx:g} mm ({grid['why']}); {passes}")
        harm = self.params.get("do_no_harm")
        if harm and harm.get("fallback"):
            notes.append("do no harm: the field left the sequence objective worse than no registration "
                         f"({harm['registered']:.4f} vs {harm['identity']:.4f}); the frames are returned unmoved")
        return notes

    def summary(self) -> dict[str, Any]:
        """JSON-friendly provenance and headline numbers."""
        return {
            "engine": self.engine,
            "device": self.device,
            "seconds": round(self.seconds, 4),
            "reference_frame": self.reference_frame,
            "folding_percent": self.folding_percent,
            "max_displacement_px": float(np.abs(self.displacement).max()),
            "params": self.params,
            "notes": self.notes(),
            "engine_options": {name: os.fspath(value) if isinstance(value, os.PathLike) else value
                               for name, value in self.options.items()},
        }


def _region_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """A user mask as bool ``(H, W)``: labels > 0, a stack reduced over frames."""
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.ndim == 3:
        array = (array != 0).any(axis=0)
    if array.shape != tuple(shape):
        raise SequenceError(
            f"the registration mask has shape {array.shape} but the frames are {tuple(shape)}; draw it on "
            "the sequence's grid (one (H, W) label image, or one per frame)."
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise SequenceError("the registration mask contains NaN or Inf; use 0 for outside, 1 (or a label) for inside.")
    region = array != 0
    if not region.any():
        raise SequenceError("the registration mask is empty; draw the heart / body region (non-zero labels) or pass no mask.")
    return region


class FieldError(ValueError):
    """An engine returned a displacement field that cannot be a registration (NaN / Inf, or
    moving pixels further than the image is wide); nothing is made from it."""


def grown_region(region: np.ndarray, spacing_mm: tuple[float, float], margin_mm: float = MASK_MARGIN_MM) -> np.ndarray:
    """``region`` (bool ``(H, W)``) grown by ``margin_mm`` (Euclidean, in mm on the pixel grid)."""
    from scipy import ndimage

    if margin_mm <= 0 or region.all():
        return region.copy()
    return ndimage.distance_transform_edt(~region, sampling=tuple(float(v) for v in spacing_mm)) <= margin_mm


def field_problem(displacement: torch.Tensor | np.ndarray, shape: tuple[int, int]) -> str | None:
    """What makes ``displacement`` (pixels) no registration of ``(H, W)`` images: NaN / Inf
    values, or shifts further than the image extent (``max(H, W)``); ``None`` when it is usable.

    The one rule for the fields the engines return and the fields ``apply`` is given."""
    field = torch.as_tensor(displacement)
    finite = bool(torch.isfinite(field).all())
    largest = float(field.abs().max()) if finite and field.numel() else 0.0
    if finite and largest <= max(shape):
        return None
    return "NaN or Inf values" if not finite else f"shifts of up to {largest:.3g} px, beyond the {shape[0]} x {shape[1]} image"


def _checked_field(engine: str, displacement: torch.Tensor, shape: tuple[int, int], options: dict[str, Any]) -> torch.Tensor:
    """``displacement`` if it is finite and moves no pixel beyond the image extent, else :class:`FieldError`."""
    what = field_problem(displacement, shape)
    if what is None:
        return displacement
    cause = (f"the weights given with {arg('weights')} are likely damaged or untrained; use the shipped weights"
             if options.get("weights") is not None else "try another engine or report the sequence")
    raise FieldError(f"the {engine} engine returned a displacement field with {what}: no usable registration, "
                     f"nothing is written; {cause}.")


def register(
    sequence: Sequence | np.ndarray,
    engine: str = DEFAULT_ENGINE,
    device: str | torch.device = "auto",
    *,
    reference_frame: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    mask: Any = None,
    threads: int | None = None,
    **options: Any,
) -> RegistrationResult:
    """Motion-correct a quantitative cardiac sequence.

    Parameters
    ----------
    sequence : Sequence or ndarray (N, H, W)
        The frames to align. The input is never modified.
    engine : str
        Name of the engine (see :func:`available_engines`).
    device : {"auto", "cpu", "cuda"} or torch.device
        Where to compute; ``"auto"`` uses CUDA when present.
    reference_frame : int, optional
        Keep this frame fixed (all-to-one mode, ``u_ref = 0``). ``None``: groupwise, with the
        mean displacement over frames kept at zero.
    progress : callable(fraction, message), optional
        Progress callback.
    cancel : threading.Event or callable, optional
        Cancellation flag, checked between optimisation steps.
    mask : array_like (H, W) or (N, H, W), optional
        Region that drives the similarity (e.g. the heart or the body; a napari Labels layer:
        every non-zero label counts; a stack counts a pixel labelled in any frame). The
        ``groupwise``, ``xcoreg`` and ``any2reg-io`` engines evaluate their similarity only
        inside it, grown by :data:`MASK_MARGIN_MM` (a tight mask would let frames slide until it
        sees uniform tissue); the fields stay smooth (regularised) everywhere. The single network pass of
        ``any2reg`` has no similarity to restrict: it ignores the mask and says so in
        ``params["mask"]`` (use ``any2reg-io``).
    threads : int, optional
        torch CPU threads for this call (the previous setting is restored afterwards).
        ``None``: the cores not busy with other work (:func:`.device.default_cpu_threads`;
        on a shared 2-core machine two threads were 4-14x slower than one), or
        ``OMP_NUM_THREADS`` when set.
    **options
        Engine-specific options (e.g. ``metric="cte"``, ``iterations_scale=0.3``), declared in
        :data:`.engine_api.ENGINE_OPTIONS`; the built-in engines' options are checked there
        (:func:`.engine_api.validate_engine_options`) before any work, ``None`` meaning the
        engine's default.

    Returns
    -------
    RegistrationResult
    """
    if not isinstance(sequence, Sequence):
        sequence = Sequence(np.asarray(sequence))
    _load_builtin_engines()
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; available: {', '.join(sorted(ENGINES))}.")
    if engine in BUILTIN_ENGINES:  # an engine registered by a user declares no options here
        options = validate_engine_options(engine, options)
    if reference_frame is not None:
        reference_frame = check_option(engine, "reference_frame", reference_frame)  # 1.5, inf: refused
        if not 0 <= reference_frame < sequence.n_frames:
            raise SequenceError(
                f"{arg('reference_frame', reference_frame)} is outside the frames 0..{sequence.n_frames - 1}; "
                f"give a frame number in that range or none (groupwise)."
            )
    # the user's options, not the arrays code passes (the mask joins them below)
    requested = {name: value for name, value in options.items() if name not in PROGRAMMATIC_OPTIONS}
    dev = resolve_device(device)
    region = _region_mask(mask, sequence.shape)
    mask_note = None
    if region is not None:
        if engine == "any2reg":
            mask_note = "ignored: one network pass has no similarity to restrict; any2reg-io uses the mask"
        else:
            grown = grown_region(region, sequence.spacing_mm)
            options["region_mask"] = torch.from_numpy(grown).to(dev)
            mask_note = (f"{int(grown.sum())} pixels drive the similarity (the mask's {int(region.sum())} "
                         f"grown by {MASK_MARGIN_MM:g} mm, so a tight mask cannot be matched by sliding out of it)")
    reporter = Progress(progress, cancel)
    with cpu_threads(threads) as used_threads:
        return _register(sequence, engine, dev, reference_frame, reporter, options, requested, mask_note, used_threads)


def _register(sequence: Sequence, engine: str, dev: torch.device, reference_frame: int | None, reporter: Progress,
              options: dict[str, Any], requested: dict[str, Any], mask_note: str | None, threads: int) -> RegistrationResult:
    reporter.report(0.0, "preparing")

    start = time.perf_counter()
    normalised = normalise_intensities(sequence.frames)
    frames_t = torch.from_numpy(normalised).to(dev)
    out = ENGINES[engine](
        frames_t,
        progress=reporter.stage(0.0, 0.97),
        reference_frame=reference_frame,
        spacing_mm=sequence.spacing_mm,
        **options,
    )
    displacement = _checked_field(engine, out.displacement.detach(), sequence.shape, options)
    if mask_note is not None:
        out.params = {**out.params, "mask": mask_note}
    if dev.type == "cpu":
        out.params = {**out.params, "cpu_threads": threads}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    reporter.report(0.98, "warping")

    displacement_np = displacement.float().cpu().numpy().astype(np.float32)
    registered = warp_images(sequence.frames, displacement_np)
    registered_norm = warp_images(normalised, displacement_np)
    template, weights = pca_template(registered_norm)
    reporter.report(1.0, "done")
    return RegistrationResult(
        registered=registered,
        displacement=displacement_np,
        template=template,
        weights=weights.astype(np.float32),
        engine=engine,
        params=out.params,
        device=describe_device(dev),
        seconds=seconds,
        loss_history=out.loss_history,
        reference_frame=reference_frame,
        sequence=sequence,
        extras=out.extras,
        options=requested,
    )
