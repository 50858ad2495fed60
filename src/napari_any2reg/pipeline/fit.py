"""Parametric maps of one sequence, from file to files: the code path of ``any2reg fit``.

:func:`fit_series` reads a sequence (raw or registered), chooses the frames to leave out (the
outlier frames a registration recorded in the ``metrics.json`` beside it, or the caller's
choice), fits a T1, T2 or T2* model to every pixel and writes the maps, ``stats.json`` and, with
a mask and RV insertion points, the AHA segments, all or nothing. Everything that can be checked
(timings, model, mask, output folder, free disk space) is checked before the fit runs.

The maps are ImageJ TIFFs with axes (``YX``; the parameters ``CYX``, one channel each), so Fiji
opens them with their pixel size, and :func:`napari_any2reg.io.read_map_tiff` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable
from typing import Sequence as Seq

import numpy as np

from ..core.vocabulary import arg
from ._requests import output_path

__all__ = ["FitOutcome", "fit_series", "frames_to_exclude", "NOTE_KINDS"]

#: The kinds of message :func:`fit_series` passes to ``on_note`` while it runs:
#: ``read_warning`` (the reader replaced or guessed something, e.g. a pixel size),
#: ``nonfinite`` (pixels with NaN/Inf samples are not fitted) and ``exclusion`` (which frames
#: are left out of the fit, and why).
NOTE_KINDS = ("read_warning", "nonfinite", "exclusion")


@dataclasses.dataclass
class FitOutcome:
    """What :func:`fit_series` did.

    Attributes
    ----------
    sequence : Sequence
        The sequence fitted (timings as used).
    result : T1FitResult
        The per-pixel fit (maps, R², SD, parameters).
    stats : dict
        The content of ``stats.json``.
    outdir : Path
    files : tuple of str
        The file names written into ``outdir``.
    excluded : tuple of int
        The frames left out of the fit.
    """

    sequence: Any
    result: Any
    stats: dict[str, Any]
    outdir: Path
    files: tuple[str, ...]
    excluded: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class _FitPlan:
    """Everything decided before the fit: what is fitted, with which model, into which files."""

    sequence: Any
    label: str  # the input as messages and stats.json name it
    model: str
    labels: np.ndarray | None
    rv_insertion: Any
    names: tuple[str, ...]  # map files and stats.json
    segment_names: tuple[str, ...]


def fit_series(
    source: Any,
    outdir: Any,
    *,
    model: str | None = None,
    timings_ms: Seq[float] | None = None,
    noise_floor: float | None = None,
    mask: Any = None,
    rv_insertion: Any = None,
    level: str = "mid",
    r2_threshold: float = 0.9,
    exclude_frames: Any = "auto",
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[float, str], None] | None = None,
    on_note: Callable[[str, str], None] | None = None,
) -> FitOutcome:
    """Fit a T1, T2 or T2* map to every pixel of a sequence and write the maps (all or nothing).

    Writes ``<map>.tif`` (``t1``, ``t2`` or ``t2star``; ms), ``r2.tif``, ``<map>_sd.tif`` (ms,
    from the fit covariance), ``params.tif`` (the model's parameters, one channel each) and
    ``stats.json`` (model, timings, failed pixels, frames left out; with ``mask`` the ROI
    statistics and R² survival curves); with ``rv_insertion`` also ``segments.csv`` and
    ``bullseye.png``. Pixels where the fit fails are NaN in every map and counted in
    ``stats.json``.

    Parameters
    ----------
    source : str, Path or Sequence
        The sequence file (TIFF, NIfTI, DICOM folder; raw or registered) or a sequence read
        already. Pixels with NaN/Inf samples are not fitted (NaN in the maps).
    outdir : str or Path
        Output folder (created when missing; nothing is left in it if the run fails).
    model : str, optional
        A key of :data:`napari_any2reg.core.mapping.T1_MODELS`; default: the model of the
        sequence kind.
    timings_ms : sequence of float, optional
        One inversion/saturation time or echo time per frame (ms; ``inf`` for no
        preparation), replacing those of the file.
    noise_floor : float, optional
        Decay models: per pixel, leave out the echoes from the first one at or below this level.
    mask : str, Path or array (H, W), optional
        Label image or mask on the image grid (1 LV blood, 2 LV myocardium, 3 RV blood) for the
        ROI statistics; a file is read with :func:`napari_any2reg.io.labels.read_label_image`.
    rv_insertion : str or array_like, optional
        RV insertion points (``"Y1,X1;Y2,X2"``, pixels, anterior first) with ``mask``: the AHA
        segments (``level``: basal, mid or apical) of the map.
    r2_threshold : float
        R² above which a pixel's fit counts as good in the ROI statistics (0 to 1).
    exclude_frames : "auto", "none", str "I,J" or sequence of int
        Frames left out of the fit. ``"auto"``: the outlier frames in the ``metrics.json``
        beside ``source`` (written by a registration), when the model keeps enough frames.
    device : {"auto", "cpu", "cuda"}
    overwrite : bool
        Replace existing outputs; default: refuse before fitting.
    progress : callable(fraction, message), optional
    on_note : callable(kind, text), optional
        Messages about the results, as they arise (kinds: :data:`NOTE_KINDS`).

    Returns
    -------
    FitOutcome

    Raises
    ------
    ValueError, OSError, FileExistsError
        Before fitting, for anything that can be checked (timings that do not match the
        frames, no model for the sequence kind, a mask of another shape, outputs that exist);
        nothing is written.
    """
    note = on_note or (lambda kind, text: None)
    plan = _plan(source, outdir, model=model, timings_ms=timings_ms, mask=mask, rv_insertion=rv_insertion,
                 r2_threshold=r2_threshold, overwrite=overwrite, note=note)
    outdir = output_path(outdir, "outdir")
    frames = _fittable_frames(plan, note)
    excluded, exclusion_note = frames_to_exclude(exclude_frames, plan.sequence, plan.model, source)
    if exclusion_note:
        note("exclusion", exclusion_note)
    from ..core.mapping import fit_t1

    result = fit_t1(frames, plan.sequence.timings_ms, plan.model, device=device, noise_floor=noise_floor,
                    progress=progress, exclude_frames=excluded)
    if not np.isfinite(result.t1_ms).any():
        # all-NaN maps with exit 0 look like a result (the sweep: a T2 model on a MOLLI series,
        # a noise floor above every echo): nothing is written, the user is told what to change
        from ..core.vocabulary import arg

        raise ValueError(
            f"no pixel of {plan.sequence.name or 'the series'} could be fitted with the {result.model} model "
            f"({int(result.failed.sum())} failed): check that {arg('model', result.model)} describes this "
            f"{plan.sequence.kind} series and its timings" + (f", and that {arg('noise_floor', noise_floor)} is below "
                                                              "the signal" if noise_floor is not None else "") + ".")
    stats = _statistics(plan, result, exclude_frames, excluded, exclusion_note, mask, r2_threshold)
    segment_writers = _segments(plan, result, stats, level)
    _record_input_problems(plan, stats)
    _write(plan, result, stats, segment_writers, outdir, overwrite)
    return FitOutcome(sequence=plan.sequence, result=result, stats=stats, outdir=outdir,
                      files=plan.names + tuple(segment_writers), excluded=tuple(excluded))


# ---------------------------------------------------------------- the steps
def _plan(source: Any, outdir: Any, *, model: str | None, timings_ms: Any, mask: Any, rv_insertion: Any,
          r2_threshold: float, overwrite: bool, note: Callable[[str, str], None]) -> _FitPlan:
    """Read the sequence and check everything that can be checked before fitting."""
    from ..core.mapping import T1_MODELS, model_for_kind
    from ..core.sequence import Sequence
    from ..io import check_output_folder
    from .segments import SEGMENT_FILES
    from .series import output_bytes, read_input, read_label_image, refuse_replacing_inputs

    if isinstance(source, Sequence):
        sequence, label = source, source.name
    else:
        # fit_t1 skips pixels with NaN/Inf samples (NaN in the maps, counted as failed), so such
        # pixels are no reason to refuse the file here, unlike for registration
        sequence, label = read_input(source, nonfinite="mask"), str(source)
        for text in sequence.metadata.get("read_warnings", ()):
            note("read_warning", text)
    model = model or model_for_kind(sequence.kind)
    if model is not None and model not in T1_MODELS:
        raise ValueError(f"{arg('model')} {model!r} is not a fit model; choose one of {', '.join(T1_MODELS)}.")
    if timings_ms is not None:
        if len(timings_ms) != sequence.n_frames:
            raise ValueError(
                f"{arg('timings_ms')} has {len(timings_ms)} values but {label} has {sequence.n_frames} "
                "frames; give exactly one time (ms) per frame, in frame order."
            )
        sequence = sequence.replace(timings_ms=timings_ms)
    if sequence.timings_ms is None:
        what = T1_MODELS[model].timing_label if model is not None else "inversion/saturation/echo times"
        raise ValueError(f"{label} has no {what} in its metadata; pass {arg('timings_ms')} "
                         f"with {sequence.n_frames} values (ms).")
    if model is None:
        raise ValueError(f"{label} is a {sequence.kind!r} sequence, which has no default T1 model; pass "
                         f"{arg('model')} ({', '.join(T1_MODELS)}).")
    if not 0.0 <= r2_threshold <= 1.0:
        raise ValueError(f"{arg('r2_threshold')} must be between 0 and 1; got {r2_threshold}.")
    labels = _label_image(mask, sequence.shape, read_label_image)
    if rv_insertion is not None and labels is None:
        raise ValueError(f"{arg('rv_insertion')} needs {arg('mask')} (label 2: the LV myocardium the segments divide).")
    if rv_insertion is not None:
        from ..core.tissue.segments import parse_insertion_points

        parse_insertion_points(rv_insertion)  # a malformed value fails before the fit

    stem = T1_MODELS[model].map_name  # t1, t2 or t2star
    names = (f"{stem}.tif", "r2.tif", f"{stem}_sd.tif", "params.tif", "stats.json")
    segment_names = SEGMENT_FILES if rv_insertion is not None else ()
    outdir = output_path(outdir, "outdir")
    targets = [outdir / name for name in names + segment_names]
    refuse_replacing_inputs(targets, [None if isinstance(source, Sequence) else source,
                                      mask if isinstance(mask, (str, Path)) else None])
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} to replace them")
    check_output_folder(outdir, needed_bytes=output_bytes(sequence, 0, sequence.shape[0] * sequence.shape[1] * 4 * 8))
    return _FitPlan(sequence=sequence, label=label, model=model, labels=labels, rv_insertion=rv_insertion,
                    names=names, segment_names=segment_names)


def _label_image(mask: Any, shape: tuple[int, int], read_label_image: Callable) -> np.ndarray | None:
    """The ROI label image: read from a file, or an array given by the caller (checked)."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        return read_label_image(mask, shape)
    labels = np.asarray(mask)
    if labels.shape != tuple(shape):
        raise ValueError(f"{arg('mask')} has shape {labels.shape} but the frames are {tuple(shape)}; "
                         "draw the labels on the image grid.")
    return labels.astype(np.int32)


def _fittable_frames(plan: _FitPlan, note: Callable[[str, str], None]) -> np.ndarray:
    """The frames with the reader's NaN/Inf pixels set back to NaN, so the fit leaves them out."""
    frames = plan.sequence.frames
    nonfinite = plan.sequence.metadata.get("nonfinite_mask")
    if nonfinite is None:
        return frames
    frames = frames.copy()
    frames[:, nonfinite] = np.nan  # the reader set them to 0; fit_t1 must see them as unusable
    note("nonfinite", f"{int(nonfinite.sum())} pixels of {plan.label} have NaN/Inf values; they are not fitted "
                      "(NaN in the maps, counted as failed)")
    return frames


def frames_to_exclude(choice: Any, sequence: Any, model: str, source: Any = None) -> tuple[tuple[int, ...], str]:
    """The frames left out of a fit and a sentence saying which (empty: every frame is fitted).

    Parameters
    ----------
    choice : "auto", "none", str "I,J" or sequence of int
        As ``exclude_frames`` of :func:`fit_series`.
    sequence : Sequence
    model : str
        The model fitted (its parameter count decides whether enough frames remain).
    source : str or Path, optional
        The sequence file: ``"auto"`` reads the outlier frames of the ``metrics.json`` beside
        it; without a file (or without that record) nothing is left out.
    """
    from ..core.mapping import T1_MODELS
    from ..core.qc.outliers import auto_exclusion, parse_exclude_frames

    frames = parse_exclude_frames(choice, sequence.n_frames, flag=arg("exclude_frames"))
    if frames != "auto":
        return frames, (f"frames {', '.join(map(str, frames))} left out of the fit ({arg('exclude_frames')})" if frames else "")
    if not isinstance(source, (str, Path)):
        return (), ""
    metrics_path = Path(source).parent / "metrics.json"
    try:
        outliers = json.loads(metrics_path.read_text())["outlier_frames"]["indices"]
    except (OSError, ValueError, KeyError, TypeError):
        return (), ""  # not a registration's output: nothing known to leave out
    if any(not 0 <= int(i) < sequence.n_frames for i in outliers):
        return (), f"{metrics_path} names frames outside 0..{sequence.n_frames - 1}; every frame is fitted"
    excluded, why = auto_exclusion(outliers, sequence.n_frames, T1_MODELS[model].n_params)
    return excluded, f"{arg('exclude_frames')} auto ({metrics_path.name}): {why}"


def _statistics(plan: _FitPlan, result: Any, requested: Any, excluded: Seq[int], exclusion_note: str, mask: Any,
                r2_threshold: float) -> dict[str, Any]:
    """The content of ``stats.json`` (without the segments)."""
    from ..core.mapping import T1_MODELS
    from ..core.mapping.roi import roi_masks, survival_thresholds

    sequence, spec = plan.sequence, T1_MODELS[plan.model]
    names = plan.names
    stats = result.summary()
    stats["exclude_frames"] = {"requested": str(requested), "excluded": list(excluded), "note": exclusion_note}
    stats.update({
        "input": plan.label,
        "name": sequence.name,
        "kind": sequence.kind,
        "n_frames": sequence.n_frames,
        "shape": list(sequence.shape),
        "spacing_mm": list(sequence.spacing_mm),
        "files": {names[0]: f"{spec.quantity} (ms)", "r2.tif": "R2", names[2]: f"SD of {spec.quantity} (ms) from s2 (J^T J)^-1",
                  "params.tif": f"parameters, one page each: {', '.join(result.param_names)}"},
    })
    if plan.labels is not None:
        rows = result.roi_statistics(plan.labels, r2_threshold=r2_threshold)
        thresholds = survival_thresholds()
        for row, (_, (_, roi)) in zip(rows, roi_masks(plan.labels).items()):
            row["r2_survival"] = result.r2_survival(roi, thresholds)[1].round(6).tolist()
        stats.update({"mask": str(mask) if isinstance(mask, (str, Path)) else "array", "roi": rows,
                      "r2_survival_thresholds": thresholds.round(6).tolist()})
    return stats


def _segments(plan: _FitPlan, result: Any, stats: dict[str, Any], level: str) -> dict[str, Callable[[Path], None]]:
    """The AHA segments of the map (``stats["segments"]``) and the writers of their files."""
    if plan.rv_insertion is None:
        return {}
    from .segments import analyse_segments, segment_files

    analysis = analyse_segments(result.t1_ms, plan.labels, plan.rv_insertion, level=level, quantity=result.quantity, unit="ms")
    stats["segments"] = analysis.summary()
    return segment_files(analysis)


def _record_input_problems(plan: _FitPlan, stats: dict[str, Any]) -> None:
    """The reader's warnings and the count of NaN/Inf input pixels, last in ``stats.json``."""
    metadata = plan.sequence.metadata
    if metadata.get("read_warnings"):
        stats["read_warnings"] = list(metadata["read_warnings"])
    if metadata.get("nonfinite_mask") is not None:
        stats["nonfinite_input_pixels"] = int(metadata["nonfinite_mask"].sum())


def _write(plan: _FitPlan, result: Any, stats: dict[str, Any], segment_writers: dict[str, Callable[[Path], None]],
           outdir: Path, overwrite: bool) -> None:
    """Write the maps, ``stats.json`` and the segment files in one all-or-nothing unit."""
    from ..core.mapping import T1_MODELS
    from ..io import atomic_write_folder

    sequence, spec = plan.sequence, T1_MODELS[plan.model]
    base = {"model": result.model, "spacing_mm": list(sequence.spacing_mm), "source": plan.label}
    maps = [
        (result.t1_ms, {"quantity": spec.quantity, "unit": "ms"}),
        (result.r_squared, {"quantity": "R2", "unit": ""}),
        (result.t1_sd_ms, {"quantity": f"{spec.quantity} SD", "unit": "ms"}),
        (result.params_stack(), {"quantity": "parameters", "param_names": list(result.param_names)}),
    ]

    def write_outputs(staging: Path) -> None:
        for name, (array, info) in zip(plan.names, maps):
            _write_map_tiff(staging / name, array, sequence.spacing_mm, {**base, **info})
        (staging / "stats.json").write_text(json.dumps(stats, indent=2, default=float))
        for name, writer in segment_writers.items():
            writer(staging / name)

    atomic_write_folder(outdir, write_outputs, expected=plan.names + tuple(segment_writers), overwrite=overwrite)


def _write_map_tiff(path: Path, array: np.ndarray, spacing_mm: tuple[float, float], info: dict[str, Any]) -> None:
    """One map as an ImageJ TIFF: ``YX`` for a map, ``CYX`` for the parameters (one channel each)."""
    from ..io import save_map_tiff

    save_map_tiff(path, array, spacing_mm, info, axes="YX" if np.ndim(array) == 2 else "CYX")
