"""The two engines, ``any2reg`` and ``any2reg-io``, registered with
:func:`~napari_any2reg.core.engine_api.register_engine`, and the run they share: coarse
translation, network passes, optional refinement (kept only where it lowers the sequence's
loss), correspondence scores and the displacement SD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...engine_api import EngineOutput, Progress, register_engine
from ...network import predict_scores
from ...network.any2reg_net import _resize_images, _working_shape
from ...spatial import upsample_displacement
from .coarse import coarse_translation
from .passes import (
    DEFAULT_COARSE_PASS_MM,
    DEFAULT_PASSES,
    _network_field,
    _same_grid,
    displacement_sd_mm,
    orientations_per_pass,
    pass_schedule,
    working_grid,
)
from .pretrained import DEFAULT_FINE_PASS_ORIENTATIONS, DEFAULT_ORIENTATIONS, load_pretrained
from .refinement import REFINEMENTS, _SequenceObjective, classical_refinement, instance_optimise


def _run(frames: torch.Tensor, *, progress: Progress, reference_frame: int | None, spacing_mm, weights,
         auxiliary_features, io_steps: int, io_learning_rate: float, scores: bool, coarse: bool,
         orientations: int, region_mask: torch.Tensor | None = None, refinement: str = "classical",
         working_spacing_mm: float | None = None, passes: int = DEFAULT_PASSES,
         coarse_pass_mm: float = DEFAULT_COARSE_PASS_MM, do_no_harm: bool = True,
         uncertainty_shifts: int = 0, fine_pass_orientations: int | None = None) -> EngineOutput:
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
    pass_orientations = orientations_per_pass(schedule, int(orientations), fine_pass_orientations)
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
                                     orientations=pass_orientations, shifts=uncertainty_shifts,
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
    uncertainty = _uncertainty_note(pass_orientations, uncertainty_shifts, io_steps, harm)
    if _has_spread(pass_orientations, uncertainty_shifts):
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
    params["pass_orientations"] = {label: int(k) for (label, _), k in zip(schedule, pass_orientations)}
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


def _has_spread(pass_orientations: list[int], shifts: int) -> bool:
    """Whether some pass predicted its field more than once (its orientations; the last pass
    also on its ``shifts`` shifted inputs): only then is there a spread to report."""
    return any(k > 1 for k in pass_orientations[:-1]) or pass_orientations[-1] + shifts > 1


def _uncertainty_note(pass_orientations: list[int], shifts: int, io_steps: int, harm: dict[str, Any] | None) -> str:
    """What ``displacement_sd_mm`` is for this run (``params["uncertainty"]``); ``pass_orientations``:
    the test-time orientations of each network pass, in order (the shifts join the last)."""
    if not _has_spread(pass_orientations, shifts):
        return ("none: one test-time orientation and no shifted passes give no spread; use orientations=2 or more "
                "(uncertainty_shifts adds passes on shifted inputs)")
    if len(set(pass_orientations)) == 1:
        text = (f"SD of the network's displacement over {pass_orientations[0]} test-time orientation(s) and {shifts} "
                "shifted inputs (mm, per pixel)")
    else:
        text = ("SD of the network's displacement over the test-time orientations of each pass ("
                + ", ".join(str(k) for k in pass_orientations) + f", coarse first) and {shifts} shifted inputs "
                "(mm, per pixel); a pass run in one orientation adds no spread")
    if io_steps > 0:
        text += "; of the network prediction before the refinement"
    if harm is not None and harm.get("fallback"):
        text += "; the returned field is identity (do no harm), the SD is of the rejected prediction"
    return text


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _check_unused(name: str, unused: dict[str, Any]) -> None:
    if unused:
        raise TypeError(f"{name}: unknown option(s) {', '.join(sorted(unused))}")


@register_engine("any2reg")
def any2reg_engine(frames: torch.Tensor, *, progress: Progress, reference_frame: int | None, spacing_mm,
                   weights: str | Path | None = None, auxiliary_features: np.ndarray | None = None,
                   scores: bool = True, coarse: bool = True, orientations: int = DEFAULT_ORIENTATIONS,
                   working_spacing_mm: float | None = None, passes: int = DEFAULT_PASSES,
                   coarse_pass_mm: float = DEFAULT_COARSE_PASS_MM, do_no_harm: bool = True,
                   uncertainty_shifts: int = 0, fine_pass_orientations: int | None = DEFAULT_FINE_PASS_ORIENTATIONS,
                   **unused: Any) -> EngineOutput:
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
        1, 2 or 4 orientations, in the coarse pass (in every pass when none runs; the passes
        after it: ``fine_pass_orientations``); each costs one forward pass.
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
    fine_pass_orientations : {1, 2, 4}, optional
        Orientations of the passes at the working grid when a coarse pass ran before them
        (``None``: ``orientations``); the coarse pass, about a fifth of the cost, keeps
        ``orientations`` (:func:`orientations_per_pass`). Default 1: on the validation set a
        second fine orientation changed the median EPE ratio by 0.002 for 0.4 s (2 threads).
    do_no_harm : bool
        Return no motion (identity) when the field leaves the sequence's objective worse than
        identity does (``params["do_no_harm"]``).
    uncertainty_shifts : int
        Extra passes of the last network pass on shifted inputs; with the orientations they
        give ``extras["displacement_sd_mm"]`` (N, H, W), the per-pixel SD of the displacement
        in mm (``params["uncertainty"]`` says what it is; none with one orientation and 0).
        Default 0: on the independent validation set the shifts changed the SD's rank
        correlation with the true error by 0.02 at most while costing one network pass each
        (``benchmarks/results/uncertainty.md``); more orientations help more.
    """
    _check_unused("any2reg", unused)
    return _run(frames, progress=progress, reference_frame=reference_frame, spacing_mm=spacing_mm, weights=weights,
                auxiliary_features=auxiliary_features, io_steps=0, io_learning_rate=0.0, scores=scores,
                coarse=bool(coarse), orientations=int(orientations), working_spacing_mm=working_spacing_mm,
                passes=int(passes), coarse_pass_mm=float(coarse_pass_mm), do_no_harm=bool(do_no_harm),
                uncertainty_shifts=int(uncertainty_shifts), fine_pass_orientations=_optional_int(fine_pass_orientations))


@register_engine("any2reg-io")
def any2reg_io_engine(frames: torch.Tensor, *, progress: Progress, reference_frame: int | None, spacing_mm,
                      weights: str | Path | None = None, auxiliary_features: np.ndarray | None = None,
                      io_steps: int = 30, io_learning_rate: float = 0.05, scores: bool = True,
                      coarse: bool = True, orientations: int = DEFAULT_ORIENTATIONS,
                      refinement: str = "classical",
                      working_spacing_mm: float | None = None, passes: int = DEFAULT_PASSES,
                      coarse_pass_mm: float = DEFAULT_COARSE_PASS_MM, do_no_harm: bool = True,
                      uncertainty_shifts: int = 0,
                      fine_pass_orientations: int | None = DEFAULT_FINE_PASS_ORIENTATIONS,
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
                uncertainty_shifts=int(uncertainty_shifts), fine_pass_orientations=_optional_int(fine_pass_orientations))
