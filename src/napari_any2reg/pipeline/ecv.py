"""Native + post-contrast T1 as one set, and ECV: the code path of ``any2reg ecv`` and of the
Mapping dock's ECV section.

:func:`register_pair` registers two series of the same slice (each with its own timings) as one
set of frames, so that both fitted T1 maps end on one grid; given two T1 maps (2-D) it aligns
them instead. :func:`compute_ecv` goes from the two inputs (sequences or maps) to the ECV map
(``core.tissue.ecv``), and :func:`write_ecv` writes ``ecv.tif``, ``native_t1.tif``, ``post_t1.tif``
and ``ecv_stats.json`` (with ``--rv-insertion`` also ``segments.csv`` and ``bullseye.png``) in
one all-or-nothing unit.

The output grid
---------------
A groupwise registration returns every frame on the *common* grid, the mean position of all
frames: with native and post-contrast breath-holds 12 mm apart that is 6 mm from both, where no
label image drawn by a reader fits. So the joint field is re-expressed on the mean position of
the *native* frames (``grid="native"``, the default): with ``m`` the mean native displacement
and ``w`` its inverse (``z + w(z) = x`` where ``x + m(x) = z``), every frame's field becomes
``u'_i(z) = w(z) + u_i(z + w(z))`` (one composition, frames interpolated once), so the native
frames move by about zero on average and labels drawn on the native series or map stay valid.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._requests import output_path

__all__ = ["PairRegistration", "EcvOutcome", "register_pair", "compute_ecv", "ecv_files", "write_ecv", "ecv_file",
           "ECV_FILES"]

#: The files of ``any2reg ecv`` (segments.csv and bullseye.png join them with insertion points).
ECV_FILES = ("ecv.tif", "native_t1.tif", "post_t1.tif", "ecv_stats.json")

GRIDS = ("native", "common")


@dataclasses.dataclass
class PairRegistration:
    """Two series (or two maps) registered as one set and split back.

    Attributes
    ----------
    native, post : Sequence or ndarray (H, W)
        The inputs resampled onto one grid (sequences keep their timings; maps stay maps, NaN
        where the post map had no value after resampling).
    displacement_native, displacement_post : ndarray (N, 2, H, W)
        Pull-back fields of each input's frames on that grid (a map is one frame).
    result : RegistrationResult
        The joint registration (its own fields are on the common grid).
    grid : {"native", "common"}
    """

    native: Any
    post: Any
    displacement_native: np.ndarray
    displacement_post: np.ndarray
    result: Any
    grid: str

    @property
    def of_maps(self) -> bool:
        """Whether two T1 maps were aligned (not two series registered as one set)."""
        return isinstance(self.native, np.ndarray)

    def description(self) -> str:
        """What was done, in words: ``"registered as one set (any2reg, 8 + 8 frames)"`` for two
        series, ``"T1 maps aligned (groupwise on 1000/T1)"`` for two maps."""
        if self.of_maps:
            return f"T1 maps aligned ({self.result.engine} on 1000/T1)"
        n_native, n_post = int(self.displacement_native.shape[0]), int(self.displacement_post.shape[0])
        return f"registered as one set ({self.result.engine}, {n_native} + {n_post} frames)"

    def summary(self) -> dict[str, Any]:
        post_shift = np.hypot(self.displacement_post[:, 0], self.displacement_post[:, 1])
        native_shift = np.hypot(self.displacement_native[:, 0], self.displacement_native[:, 1])
        return {
            "what": "T1 maps aligned" if self.of_maps else "series registered as one set",
            "engine": self.result.engine,
            "device": self.result.device,
            "seconds": round(float(self.result.seconds), 3),
            "grid": self.grid,
            "n_frames": [int(self.displacement_native.shape[0]), int(self.displacement_post.shape[0])],
            "native_mean_shift_px": float(native_shift.mean()),
            "post_mean_shift_px": float(post_shift.mean()),
            "notes": self.result.notes(),
        }


def _as_map(values: Any, which: str) -> np.ndarray:
    array = np.asarray(values, np.float64)
    if array.ndim != 2:
        raise ValueError(f"the {which} T1 map must be 2-D (rows, columns); got shape {array.shape}.")
    return array


def _r1_image(t1_ms: np.ndarray) -> np.ndarray:
    """What two T1 maps are registered on: ``1000 / T1`` (T1 clipped to 100-5000 ms), 0 where no fit."""
    with np.errstate(invalid="ignore"):
        r1 = 1000.0 / np.clip(t1_ms, 100.0, 5000.0)
    return np.nan_to_num(r1, nan=0.0)


def _recentre(displacement: np.ndarray, on: slice) -> np.ndarray:
    """The fields re-expressed on the mean position of the frames ``on`` (module docstring)."""
    from ..core.spatial import compose_displacements, invert_displacement

    mean = displacement[on].mean(axis=0, keepdims=True)
    inverse = invert_displacement(mean)
    return compose_displacements(displacement, np.repeat(inverse, displacement.shape[0], axis=0)).astype(np.float32)


def _warp_map(values: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """A map with NaN (failed fits) warped bilinearly; a pixel touching a NaN stays NaN."""
    from ..core.spatial import warp_images

    valid = np.isfinite(values)
    filled = np.where(valid, values, 0.0).astype(np.float32)
    moved = warp_images(np.stack([filled, valid.astype(np.float32)]), np.repeat(displacement, 2, axis=0))
    out = moved[0].astype(np.float64)
    out[moved[1] < 0.999] = np.nan
    return out


def register_pair(
    native: Any,
    post: Any,
    *,
    engine: str | None = None,
    device: str = "auto",
    grid: str = "native",
    mask: Any = None,
    spacing_mm: Any = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
    **engine_options: Any,
) -> PairRegistration:
    """Register a native and a post-contrast acquisition of one slice as one set.

    Parameters
    ----------
    native, post : Sequence, or ndarray (H, W)
        Two sequences (each with its own timings and any number of frames): the union of their
        frames is registered at once and split back. Or two T1 maps (ms, NaN where a fit
        failed): the post map is aligned to the native one. Never modified.
    engine : str, optional
        Any registration engine. Default: the trained network for two sequences, ``groupwise``
        for two maps (the network was trained on image series, and its do-no-harm check keeps
        two T1 maps of opposite blood-myocardium contrast unmoved).
    grid : {"native", "common"}
        ``"native"``: the result is on the mean position of the native frames (labels drawn on
        the native series fit it); ``"common"``: the groupwise grid of all frames.
    mask : array_like (H, W), optional
        Region that drives the similarity (``register(mask=)``, which grows it by 20 mm), e.g. the heart.
    spacing_mm : (dy, dx), optional
        Pixel size of two maps (sequences carry their own).
    progress, cancel, **engine_options
        As for :func:`napari_any2reg.core.registration.register`.

    Notes
    -----
    Two maps are registered as R1 images, ``1000 / T1`` with T1 clipped to 100-5000 ms and 0
    where the fit failed: failed fits in air and lung (T1 up to the fit's bound) would otherwise
    dominate the intensity scale. On phantom pairs 12 mm apart this recovered 3.6 of the 4 px
    shift at the heart with ``groupwise`` against 1.4 px on the T1 values.

    Returns
    -------
    PairRegistration

    Raises
    ------
    ValueError
        Inputs of different kinds (a sequence and a map), other matrices or pixel spacings, or an
        unknown ``grid``.
    """
    from ..core.registration import DEFAULT_ENGINE, register
    from ..core.sequence import Sequence
    from ..core.spatial import warp_images

    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r}: use one of {', '.join(GRIDS)}.")
    both_sequences = isinstance(native, Sequence) and isinstance(post, Sequence)
    if not both_sequences and (isinstance(native, Sequence) or isinstance(post, Sequence)):
        raise ValueError("register_pair takes two sequences or two T1 maps; fit the sequence first (compute_ecv does).")
    if both_sequences:
        if native.shape != post.shape:
            raise ValueError(f"the native series is {native.shape[0]} x {native.shape[1]} pixels but the post-contrast "
                             f"one is {post.shape[0]} x {post.shape[1]}; both must be the same slice on the same matrix.")
        if not np.allclose(native.spacing_mm, post.spacing_mm, rtol=1e-3):
            raise ValueError(f"the native series has {native.spacing_mm} mm pixels but the post-contrast one "
                             f"{post.spacing_mm} mm; both must be on the same grid.")
        frames = np.concatenate([native.frames, post.frames])
        joint = Sequence(frames, spacing_mm=native.spacing_mm, name=f"{native.name} + {post.name}")
        n_native = native.n_frames
        engine = engine or DEFAULT_ENGINE
    else:
        native_map, post_map = _as_map(native, "native"), _as_map(post, "post-contrast")
        if native_map.shape != post_map.shape:
            raise ValueError(f"the native T1 map is {native_map.shape} but the post-contrast map {post_map.shape}; "
                             "both must be on the same matrix.")
        frames = np.stack([_r1_image(native_map), _r1_image(post_map)]).astype(np.float32)
        # the maps' pixel size (a map array has none): the mask's margin and the engine's
        # smoothness are in mm
        pixel = {} if spacing_mm is None else {"spacing_mm": tuple(float(v) for v in spacing_mm)}
        joint = Sequence(frames, name="native + post-contrast T1 maps", **pixel)
        n_native = 1
        engine = engine or "groupwise"
    result = register(joint, engine=engine, device=device, progress=progress, mask=mask,
                      cancel=cancel if cancel is not None else threading.Event(), **engine_options)
    displacement = result.displacement
    if grid == "native":
        displacement = _recentre(displacement, slice(0, n_native))
    split_native, split_post = displacement[:n_native], displacement[n_native:]
    if both_sequences:
        moved = warp_images(joint.frames, displacement) if grid == "native" else result.registered
        native_out = native.replace(frames=moved[:n_native], name=f"{native.name} registered")
        post_out = post.replace(frames=moved[n_native:], name=f"{post.name} registered")
    else:
        native_out = _warp_map(native_map, split_native)
        post_out = _warp_map(post_map, split_post)
    return PairRegistration(native=native_out, post=post_out, displacement_native=split_native,
                            displacement_post=split_post, result=result, grid=grid)


@dataclasses.dataclass
class EcvOutcome:
    """What :func:`compute_ecv` made: the two T1 maps on one grid, the ECV and its numbers."""

    native_t1_ms: np.ndarray
    post_t1_ms: np.ndarray
    ecv: Any  # core.tissue.ecv.EcvResult
    spacing_mm: tuple[float, float]
    registration: PairRegistration | None = None
    fits: dict[str, Any] = dataclasses.field(default_factory=dict)
    segments: Any = None  # pipeline.segments.SegmentAnalysis with insertion points
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)

    def description(self) -> str:
        """How the two inputs were brought onto one grid: ``"registered as one set (...)"``
        (two series), ``"T1 maps aligned (...)"`` (two maps, or a series fitted then aligned
        with a map) or ``"not registered"``."""
        return "not registered" if self.registration is None else self.registration.description()

    def stats(self) -> dict[str, Any]:
        """The ``ecv_stats.json`` body."""
        out = self.ecv.summary()
        out["spacing_mm"] = list(self.spacing_mm)
        out["inputs"] = dict(self.inputs)
        out["registration"] = None if self.registration is None else self.registration.summary()
        out["fits"] = {role: fit.summary() for role, fit in self.fits.items()}
        if self.segments is not None:
            out["segments"] = self.segments.summary()
        return out


def _fit_map(sequence: Any, device: str, fit: Callable[..., Any], which: str, progress, cancel) -> Any:
    from .series import fit_problem_for

    problem = fit_problem_for(sequence)
    if problem is not None:
        raise ValueError(f"no T1 map can be fitted to the {which} series: {problem}.")
    frames = sequence.frames
    nonfinite = sequence.metadata.get("nonfinite_mask")
    if nonfinite is not None:
        frames = frames.copy()
        frames[:, nonfinite] = np.nan  # unusable samples: failed (NaN) pixels, not zeros
    return fit(frames, sequence.timings_ms, _model(sequence), device=device, progress=progress, cancel=cancel)


def _model(sequence: Any) -> str:
    from ..core.mapping import model_for_kind

    return model_for_kind(sequence.kind)


def compute_ecv(
    native: Any,
    post: Any,
    labels: Any,
    *,
    hematocrit: float | None = None,
    synthetic_hematocrit: bool = False,
    register: bool = True,
    engine: str | None = None,
    device: str = "auto",
    rv_insertion: Any = None,
    level: str = "mid",
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
    fit: Callable[..., Any] | None = None,
    spacing_mm: tuple[float, float] | None = None,
    erode_px: int = 0,
    **engine_options: Any,
) -> EcvOutcome:
    """ECV from a native and a post-contrast acquisition (sequences or T1 maps).

    Parameters
    ----------
    native, post : Sequence (MOLLI, STONE, SASHA...) or ndarray (H, W) T1 map in ms
        Told apart by type / shape. Sequences are registered as one set (:func:`register_pair`)
        and then fitted; a map with a sequence: the sequence is fitted, then the maps aligned.
    labels : ndarray (H, W)
        On the native grid: 1 LV blood pool (blood T1), 2 LV myocardium, 3 RV blood pool.
    hematocrit, synthetic_hematocrit :
        See :func:`napari_any2reg.core.tissue.ecv.ecv_map` (exactly one).
    register : bool
        ``False``: use the inputs as they are (the comparison without motion correction).
    rv_insertion : str or array_like, optional
        RV insertion points (``"Y1,X1;Y2,X2"``): adds the AHA segment statistics of the ECV.
    fit : callable, optional
        The T1 fitter (default :func:`napari_any2reg.core.mapping.fit_t1`).
    spacing_mm : (dy, dx), optional
        Pixel spacing of two maps (a sequence brings its own): the outputs' spacing and the
        20 mm around the labels that drive the alignment of two maps.
    erode_px : int
        Leave this many pixel layers at the border of the LV myocardium (label 2) out of its
        statistics and the segments' (partial volume with blood; ``core.tissue.segments.myocardium_core``). The
        ECV map is unchanged. Default 0: the whole label.

    Returns
    -------
    EcvOutcome
    """
    from ..core.tissue.ecv import check_hematocrit, ecv_map
    from ..core.mapping import fit_t1
    from ..core.sequence import Sequence
    from ..core.vocabulary import arg

    fit = fit or fit_t1
    report = progress or (lambda fraction, message: None)
    # everything that can be checked, before any work
    if (hematocrit is None) == (not synthetic_hematocrit):
        raise ValueError(f"give the measured hematocrit ({arg('hematocrit')}) or ask for the synthetic one "
                         f"({arg('synthetic_hematocrit', True)}), exactly one of them.")
    if hematocrit is not None:
        check_hematocrit(hematocrit)
    shapes = [x.shape if isinstance(x, Sequence) else np.shape(x) for x in (native, post)]
    for which, x in (("native", native), ("post-contrast", post)):
        if not isinstance(x, Sequence):
            _as_map(x, which)
            continue
        from .series import fit_problem_for

        problem = fit_problem_for(x)
        if problem is not None:  # found before registering, not after
            raise ValueError(f"no T1 map can be fitted to the {which} series {x.name!r}: {problem}.")
    if shapes[0] != shapes[1]:
        raise ValueError(f"the native input is {shapes[0]} pixels but the post-contrast one {shapes[1]}; both must be "
                         "the same slice on the same matrix.")
    labels = np.asarray(labels)
    if labels.shape != tuple(shapes[0]):
        raise ValueError(f"{arg('mask')} has shape {labels.shape} but the images are {tuple(shapes[0])}; give one 2-D "
                         "label image on the native grid (1 LV blood, 2 LV myocardium, 3 RV blood).")
    if not (labels == 1).any():
        raise ValueError(f"{arg('mask')} has no LV blood pool (label 1); the blood T1s come from it: label the LV "
                         "cavity 1.")
    from ..core.tissue.segments import myocardium_core

    myocardium_core(labels, erode_px)  # a bad erode_px is refused before any work
    if rv_insertion is not None:
        from ..core.tissue.segments import parse_insertion_points

        parse_insertion_points(rv_insertion)
    spacing = next((x.spacing_mm for x in (native, post) if isinstance(x, Sequence)), spacing_mm or (1.0, 1.0))

    registration = None
    fits: dict[str, Any] = {}
    both_sequences = isinstance(native, Sequence) and isinstance(post, Sequence)
    if register and both_sequences:
        registration = register_pair(native, post, engine=engine, device=device, cancel=cancel,
                                     progress=lambda f, m: report(0.6 * f, f"registration: {m}"), **engine_options)
        native, post = registration.native, registration.post
    maps = {}
    for k, (role, x) in enumerate((("native", native), ("post", post))):
        if isinstance(x, Sequence):
            stage = (0.6 if registration else 0.0) + 0.15 * k
            fits[role] = _fit_map(x, device, fit, role, lambda f, m, s=stage: report(s + 0.15 * f, f"{role} T1 fit: {m}"),
                                  cancel)
            maps[role] = np.asarray(fits[role].t1_ms, np.float64)
        else:
            maps[role] = _as_map(x, role)
    if register and not both_sequences:
        # the heart drives the alignment of two maps: the labels on the native grid, which
        # register() grows by MASK_MARGIN_MM (20 mm: the post-contrast heart lies within a
        # breath-hold's shift). Growing them here as well doubled the margin, and without the
        # spacing the second 20 "mm" were 20 pixels (60 mm at 3 mm pixels)
        registration = register_pair(maps["native"], maps["post"], engine=engine, device=device, cancel=cancel,
                                     mask=labels != 0, spacing_mm=spacing,
                                     progress=lambda f, m: report(0.3 + 0.6 * f, f"aligning the maps: {m}"),
                                     **engine_options)
        maps = {"native": registration.native, "post": registration.post}
    report(0.95, "ECV")
    result = ecv_map(maps["native"], maps["post"], labels, hematocrit=hematocrit,
                     synthetic_hematocrit=synthetic_hematocrit, erode_px=erode_px)
    segments = None
    if rv_insertion is not None:
        from .segments import analyse_segments

        segments = analyse_segments(result.ecv_percent, labels, rv_insertion, level=level, quantity=result.label,
                                    unit="%", erode_px=erode_px)
    report(1.0, "done")
    return EcvOutcome(native_t1_ms=maps["native"].astype(np.float32), post_t1_ms=maps["post"].astype(np.float32),
                      ecv=result, spacing_mm=tuple(float(s) for s in spacing), registration=registration, fits=fits,
                      segments=segments)


def ecv_files(outcome: EcvOutcome) -> dict[str, Callable[[Path], Any]]:
    """``{file name: writer(path)}`` of an ECV outcome (the maps as ImageJ TIFFs, axes ``YX``)."""
    from ..io import save_map_tiff

    label = outcome.ecv.label
    base = {"spacing_mm": list(outcome.spacing_mm), "registered": outcome.registration is not None}
    files = {
        "ecv.tif": lambda p: save_map_tiff(p, outcome.ecv.ecv_percent, outcome.spacing_mm,
                                           {**base, "quantity": label, "unit": "%",
                                            "hematocrit": outcome.ecv.hematocrit,
                                            "hematocrit_synthetic": outcome.ecv.synthetic}, axes="YX"),
        "native_t1.tif": lambda p: save_map_tiff(p, outcome.native_t1_ms, outcome.spacing_mm,
                                                 {**base, "quantity": "T1 native", "unit": "ms"}, axes="YX"),
        "post_t1.tif": lambda p: save_map_tiff(p, outcome.post_t1_ms, outcome.spacing_mm,
                                               {**base, "quantity": "T1 post-contrast", "unit": "ms"}, axes="YX"),
        "ecv_stats.json": lambda p: p.write_text(json.dumps(outcome.stats(), indent=2, default=float)),
    }
    if outcome.segments is not None:
        from .segments import segment_files

        files.update(segment_files(outcome.segments))
    return files


def write_ecv(outcome: EcvOutcome, outdir: Any, *, overwrite: bool = False, inputs: list[Any] = ()) -> list[Path]:
    """Write the ECV outputs into ``outdir``, all or nothing."""
    from ..io import atomic_write_folder, check_output_folder
    from .series import refuse_replacing_inputs

    outdir = output_path(outdir, "outdir")
    files = ecv_files(outcome)
    refuse_replacing_inputs([outdir / name for name in files], list(inputs))
    check_output_folder(outdir, needed_bytes=outcome.ecv.ecv_percent.size * 12 + 3_000_000)

    def write(staging: Path) -> None:
        for name, writer in files.items():
            writer(staging / name)

    return atomic_write_folder(outdir, write, expected=list(files), overwrite=overwrite)


def ecv_file(native_path: Any, post_path: Any, outdir: Any, *, mask_path: Any, hematocrit: float | None = None,
             synthetic_hematocrit: bool = False, register: bool = True, engine: str | None = None,
             device: str = "auto", rv_insertion: Any = None, level: str = "mid", overwrite: bool = False,
             progress: Callable[[float, str], None] | None = None, erode_px: int = 0,
             **engine_options: Any) -> EcvOutcome:
    """``any2reg ecv``: read NATIVE and POST (sequences or 2-D T1 maps, by shape) and the labels,
    check the output folder, compute and write (all or nothing)."""
    from ..core.sequence import Sequence
    from ..io.labels import read_label_image
    from ..io.map_input import read_map_or_sequence
    from .series import check_weights, refuse_replacing_inputs

    native = read_map_or_sequence(native_path, flag="NATIVE", nonfinite="mask")
    post = read_map_or_sequence(post_path, flag="POST", nonfinite="mask")
    shape = native.shape
    labels = read_label_image(mask_path, shape)
    outdir = output_path(outdir, "outdir")
    names = list(ECV_FILES) + (["segments.csv", "bullseye.png"] if rv_insertion is not None else [])
    inputs = [native_path, post_path, mask_path]
    refuse_replacing_inputs([outdir / name for name in names], inputs)
    existing = [str(outdir / n) for n in names if (outdir / n).exists()]
    if existing and not overwrite:
        from ..core.vocabulary import arg

        raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} to replace them")
    from ..core.registration import DEFAULT_ENGINE

    if register and (engine or DEFAULT_ENGINE).startswith("any2reg"):
        check_weights(device, engine_options.get("weights"))

    def value(x: Any) -> Any:
        return x if isinstance(x, Sequence) else np.asarray(x.values, np.float64)

    outcome = compute_ecv(value(native), value(post), labels, hematocrit=hematocrit,
                          synthetic_hematocrit=synthetic_hematocrit, register=register, engine=engine, device=device,
                          rv_insertion=rv_insertion, level=level, progress=progress, erode_px=erode_px,
                          spacing_mm=None if isinstance(native, Sequence) else tuple(native.spacing_mm), **engine_options)
    outcome.inputs = {"native": str(native_path), "post": str(post_path), "mask": str(mask_path),
                      "native_kind": "sequence" if isinstance(native, Sequence) else "T1 map",
                      "post_kind": "sequence" if isinstance(post, Sequence) else "T1 map"}
    write_ecv(outcome, outdir, overwrite=overwrite, inputs=inputs)
    return outcome
