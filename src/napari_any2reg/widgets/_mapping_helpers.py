"""T1 mapping dock helpers: timings text, display settings of the maps, ROI rasterising, the
outlier-frame exclusion of a registered fit (:class:`OutlierCheck`) and the worker body that
fits the chosen series (:func:`run_fits`). No Qt here."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from napari.layers import Image, Shapes

from ..core.mapping import T1FitResult
from ..core.mapping.roi import r2_survival, roi_masks, roi_statistics, survival_thresholds

__all__ = ["MappingOutcome", "MapJob", "OutlierCheck", "parse_timings", "format_timings", "t1_display_settings",
           "sd_display_limits", "signal_mask", "display_maps", "shapes_to_labels", "ShapesROI", "link_maps", "run_fits",
           "T1_LIMITS_MS", "POST_CONTRAST_MEDIAN_MS"]

#: T1 display range (ms) by contrast state and field strength (tissue tables in core.phantom).
T1_LIMITS_MS = {("native", 1.5): (0.0, 2000.0), ("native", 3.0): (0.0, 2500.0), ("post", 1.5): (0.0, 1000.0), ("post", 3.0): (0.0, 1000.0)}

#: T2 and T2* display ranges (ms): normal myocardium (T2 ~50 ms, T2* ~35 ms at 1.5 T) mid-scale.
DECAY_LIMITS_MS = {"T2": (0.0, 120.0), "T2*": (0.0, 80.0)}

#: Below this median T1 (ms) of well-fitted pixels a map is shown with the post-contrast range.
POST_CONTRAST_MEDIAN_MS = 700.0

@dataclasses.dataclass
class MappingOutcome:
    """Results of one Fit: per role (``"before"`` / ``"after"``) the fit, its statistics and curves.

    Attributes
    ----------
    results : dict of str to T1FitResult
    sources : dict of str to str
        Source layer name per role.
    statistics : dict of str to list of dict
        :func:`~napari_any2reg.core.mapping.roi.roi_statistics` rows per role (ROI labels, or
        one row "fitted pixels" without an ROI).
    survival : dict of str to dict of int to (thresholds, fraction)
        R² survival curve per role and ROI label (empty without an ROI).
    model : str
    r2_threshold : float
    """

    results: dict[str, T1FitResult]
    sources: dict[str, str]
    statistics: dict[str, list[dict[str, Any]]]
    survival: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]
    model: str
    r2_threshold: float
    display: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: per role, what the outlier exclusion did (a sentence naming the frames fitted)
    exclusion: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MapJob:
    """One series to fit, copied out of its layer (the worker never touches layers)."""

    role: str
    name: str
    frames: np.ndarray
    scale: np.ndarray  # (dy, dx)
    translate: np.ndarray  # (ty, tx)
    metadata: dict[str, Any]


@dataclasses.dataclass
class OutlierCheck:
    """What the registered fit needs to leave out the outlier frames (copied on the GUI thread).

    The outlier frames are found as for ``metrics.json`` (:func:`napari_any2reg.core.qc.verdict.
    assess_registration`) and left out as ``fit --exclude-frames auto`` does
    (:func:`napari_any2reg.core.qc.outliers.auto_exclusion`: only while the model keeps enough
    frames). Worker side: :meth:`exclusion`.

    Attributes
    ----------
    raw : ndarray (N, H, W) or None
        The source frames (``None``: the source layer is not open, nothing is tested).
    displacement : ndarray (N, 2, H, W)
    scores : ndarray (N, H, W) or None
        The stored correspondence maps (else the model-free ones are computed).
    spacing_mm : (dy, dx)
    source_name : str
    """

    raw: np.ndarray | None
    displacement: np.ndarray
    scores: np.ndarray | None
    spacing_mm: tuple[float, float]
    source_name: str

    @classmethod
    def of(cls, registration: Any, layer: Any, source: Any) -> "OutlierCheck":
        """Copies of what the check needs from a :class:`~._registered.RegisteredLayer`, its
        image ``layer`` and its ``source`` layer (``None`` when it is not open)."""
        return cls(
            raw=None if source is None else np.array(source.data, dtype=np.float32, copy=True),
            displacement=np.array(registration.displacement, dtype=np.float32, copy=True),
            scores=None if registration.correspondence is None else np.array(registration.correspondence, np.float32),
            spacing_mm=registration.spacing_mm(layer),
            source_name=registration.source_layer,
        )

    def exclusion(self, registered: np.ndarray, timings: Any, n_params: int) -> tuple[tuple[int, ...], str]:
        """The frames to leave out of the fit of ``registered`` and a sentence saying which are fitted."""
        from ..core.qc.outliers import auto_exclusion
        from ..core.qc.verdict import assess_registration

        n = int(registered.shape[0])
        if self.raw is None or self.raw.shape != registered.shape:
            return (), (f"outlier frames not tested (the source layer {self.source_name!r} is not open); "
                        f"all {n} frames fitted")
        report = assess_registration(self.raw, registered, self.displacement, scores=self.scores,
                                     spacing_mm=self.spacing_mm, timings_ms=timings)["outlier_frames"]
        if report.get("not_tested"):
            return (), f"outlier frames not tested ({report['not_tested']}); all {n} frames fitted"
        excluded, note = auto_exclusion(report["indices"], n, n_params)
        return excluded, note


def parse_timings(text: str) -> list[float]:
    """Parse ``"100, 180, 260"`` (commas, semicolons or spaces; ``inf`` allowed) into floats."""
    tokens = [t for t in text.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            raise ValueError(f"cannot read {token!r} as a time in ms; write numbers separated by commas (inf allowed).") from None
    return values


def format_timings(timings: Any) -> str:
    """Timings as the editable text: ``"100, 180, inf"``."""
    if timings is None:
        return ""
    return ", ".join("inf" if math.isinf(float(t)) else f"{float(t):g}" for t in timings)


def t1_display_settings(t1_ms: np.ndarray, r_squared: np.ndarray, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Colormap and contrast limits for a T1 map: native or post-contrast, 1.5 or 3 T.

    The contrast state comes from the layer metadata (``contrast``: ``native`` / ``post``) when
    present, else from the median T1 of well-fitted pixels (below
    :data:`POST_CONTRAST_MEDIAN_MS` -> post-contrast).
    """
    metadata = metadata or {}
    field = 3.0 if float(metadata.get("field_strength", 1.5) or 1.5) > 2.0 else 1.5
    contrast = str(metadata.get("contrast", "")).lower()
    if contrast not in ("native", "post"):
        with np.errstate(invalid="ignore"):
            good = t1_ms[np.isfinite(t1_ms) & (r_squared > 0.9)]
        contrast = "post" if good.size and float(np.median(good)) < POST_CONTRAST_MEDIAN_MS else "native"
    return {"colormap": "turbo", "contrast_limits": T1_LIMITS_MS[(contrast, field)], "contrast": contrast}


def sd_display_limits(t1_sd_ms: np.ndarray, r_squared: np.ndarray, r2_threshold: float = 0.9,
                      t1_limits: tuple[float, float] = (0.0, 2000.0)) -> tuple[float, float]:
    """Contrast limits of a T1 SD map: 0 to the 95th percentile over well-fitted pixels.

    Badly fitted background pixels have SDs of 10^4 ms and more; a percentile over all pixels
    makes the whole heart one colour. Capped at a quarter of the T1 display range.
    """
    sd = np.asarray(t1_sd_ms, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        good = sd[np.isfinite(sd) & (np.asarray(r_squared) > r2_threshold)]
    cap = 0.25 * float(t1_limits[1] - t1_limits[0])
    top = float(np.percentile(good, 95)) if good.size else cap
    return 0.0, float(min(max(top, 1.0), cap))


#: ROI-table row of a fit without an ROI: the pixels with signal (:func:`signal_mask`).
BODY_ROW = "body (pixels with signal)"


def signal_mask(frames: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Pixels with signal: max |intensity| over frames above ``fraction`` of its 99th percentile.

    Air and lungs have no T1 worth showing; outside this mask the displayed maps are NaN.
    """
    peak = np.nanmax(np.abs(np.asarray(frames, dtype=np.float32)), axis=0)
    finite = peak[np.isfinite(peak)]
    if finite.size == 0:
        return np.zeros(peak.shape, dtype=bool)
    return peak > fraction * float(np.percentile(finite, 99))


# ====================================================================== widget
def run_fits(
    jobs: list[MapJob],
    *,
    timings: list[float],
    model: str,
    device: str,
    rois: dict[str, "np.ndarray | ShapesROI | None"],
    r2_threshold: float,
    fit: Any,
    job: Any,
    outlier_checks: dict[str, OutlierCheck] | None = None,
) -> MappingOutcome:
    """Worker-thread body: fit each series with ``fit`` (:func:`~napari_any2reg.core.mapping.fit_t1`),
    then ROI statistics and survival curves; ``job`` is the dock's :class:`~._base.Job`.

    ``outlier_checks`` (per role, the registered series): the outlier frames are left out of
    that series' fit (:meth:`OutlierCheck.exclusion`); :attr:`MappingOutcome.exclusion` says
    which frames were fitted.
    """
    from ..core.mapping import T1_MODELS

    outcome = MappingOutcome(results={}, sources={}, statistics={}, survival={}, model=model, r2_threshold=r2_threshold)
    for i, series in enumerate(jobs):
        def progress(fraction: float, message: str, i: int = i, name: str = series.name) -> None:
            job.progress((i + fraction) / len(jobs), f"{name}: {message}")

        check = (outlier_checks or {}).get(series.role)
        exclude: tuple[int, ...] = ()
        if check is not None:
            progress(0.0, "outlier frames")
            exclude, note = check.exclusion(series.frames, timings, T1_MODELS[model].n_params)
            n = int(series.frames.shape[0])
            if exclude:  # short: the status line of a full dock in a 1280x800 window has little room
                frames = ", ".join(map(str, exclude))
                note = (f"outlier frame{'s' if len(exclude) > 1 else ''} {frames} left out, "
                        f"{n - len(exclude)} of {n} frames fitted")
            outcome.exclusion[series.role] = note
            job.check()
        # exclude_frames only when frames are left out (a fit without them is the plain call)
        extra = {"exclude_frames": exclude} if exclude else {}
        result = fit(series.frames, timings, model, device=device, progress=progress, cancel=job.cancel, **extra)
        outcome.results[series.role] = result
        outcome.sources[series.role] = series.name
        outcome.display[series.role] = display_maps(result, series, r2_threshold)
        labels = rois.get(series.role)
        if isinstance(labels, ShapesROI):  # drawn shapes: rasterised here, off the GUI thread
            job.progress((i + 1) / len(jobs), f"{series.name}: ROI {labels.name!r}")
            labels = labels.rasterise()
        if labels is None:
            # without an ROI, the body (pixels with signal): air and lungs fail to fit by nature
            # and would dominate the numbers next to good myocardial values
            body = outcome.display[series.role]["body"] & result.mask
            outcome.display[series.role]["counted"] = (body, "body")
            rows = roi_statistics(result.t1_ms, body, t1_sd_ms=result.t1_sd_ms, r_squared=result.r_squared,
                                  r2_threshold=r2_threshold, label_names={1: BODY_ROW})
            outcome.statistics[series.role] = rows
            outcome.survival[series.role] = {}
            continue
        outcome.display[series.role]["counted"] = (np.asarray(labels) > 0, "ROI")
        outcome.statistics[series.role] = roi_statistics(
            result.t1_ms, labels, t1_sd_ms=result.t1_sd_ms, r_squared=result.r_squared, r2_threshold=r2_threshold
        )
        thresholds = survival_thresholds()
        outcome.survival[series.role] = {
            value: r2_survival(result.r_squared, roi, thresholds) for value, (_, roi) in roi_masks(labels).items()
        }
    return outcome


def display_maps(result: T1FitResult, job: MapJob, r2_threshold: float) -> dict[str, Any]:
    """What the layers show (worker side): maps masked to the heart's signal, and their limits."""
    mask = signal_mask(job.frames)
    if result.quantity in DECAY_LIMITS_MS:  # a T2 / T2* map: no native / post-contrast states
        t1_view = {"colormap": "turbo", "contrast_limits": DECAY_LIMITS_MS[result.quantity], "contrast": "native"}
    else:
        t1_view = t1_display_settings(result.t1_ms, result.r_squared, job.metadata)

    def masked(values: np.ndarray) -> np.ndarray:
        out = np.array(values, dtype=np.float32, copy=True)
        out[~mask] = np.nan
        return out

    return {
        "t1": masked(result.t1_ms),
        "r2": masked(result.r_squared),
        "t1_sd": masked(result.t1_sd_ms),
        "t1_view": t1_view,
        "sd_limits": sd_display_limits(result.t1_sd_ms, result.r_squared, r2_threshold, t1_view["contrast_limits"]),
        "masked_pixels": int((~mask).sum()),
        "body": mask,
    }


@dataclasses.dataclass
class ShapesROI:
    """A Shapes layer's ROI copied out of the layer (GUI thread), rasterised in the worker.

    ``polygons`` are the shapes' vertices in the layer's data coordinates, ``matrix`` / ``offset``
    the affine map from them to the reference image's ``(row, column)`` pixels (world
    coordinates in between), ``shape`` the ``(H, W)`` grid.
    """

    name: str
    polygons: list[np.ndarray]
    shape_types: list[str]
    matrix: np.ndarray
    offset: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def from_layer(cls, layer: Shapes, reference: Image, shape: tuple[int, int]) -> "ShapesROI":
        """Snapshot ``layer`` (cheap: the vertices and one affine map, no per-vertex calls)."""
        if len(layer.data) == 0:
            raise ValueError(f"Shapes layer {layer.name!r} has no shapes; draw an ROI first.")
        ndim = int(layer.ndim)

        def to_pixels(vertex: np.ndarray) -> np.ndarray:
            world = np.asarray(layer.data_to_world(vertex), dtype=float)
            if world.size < reference.ndim:
                world = np.concatenate([np.zeros(reference.ndim - world.size), world])
            return np.asarray(reference.world_to_data(world), dtype=float)[-2:]

        # data -> world -> reference pixels is affine: read it off at the origin and the unit vectors
        origin = to_pixels(np.zeros(ndim))
        matrix = np.stack([to_pixels(np.eye(ndim)[k]) - origin for k in range(ndim)], axis=1)
        return cls(name=str(layer.name), polygons=[np.array(v, dtype=float, copy=True) for v in layer.data],
                   shape_types=[str(t) for t in layer.shape_type], matrix=matrix, offset=origin,
                   shape=(int(shape[0]), int(shape[1])))

    def rasterise(self) -> np.ndarray:
        """``(H, W) int64`` labels on the reference grid; shape ``i`` gets label ``i + 1`` (worker side)."""
        polygons = [vertices @ self.matrix.T + self.offset for vertices in self.polygons]
        flat = Shapes(polygons, shape_type=self.shape_types, ndim=2)
        return np.asarray(flat.to_labels(labels_shape=self.shape), dtype=np.int64)


def shapes_to_labels(layer: Shapes, reference: Image, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a Shapes layer onto ``reference``'s (rows, columns) grid; shape i gets label i+1.

    Vertices go through world coordinates, so a Shapes layer drawn with another scale or
    translation (or in 3-D, on a frame) still lands on the right pixels. The dock snapshots the
    layer with :meth:`ShapesROI.from_layer` and rasterises in its worker.
    """
    return ShapesROI.from_layer(layer, reference, shape).rasterise()


def link_maps(added: dict[str, list[Any]]) -> None:
    """Link colormap and contrast limits of the raw and registered maps of each kind."""
    from napari.experimental import link_layers, unlink_layers  # public since napari 0.4.x

    for layers in added.values():
        if len(layers) == 2:
            unlink_layers(layers)  # a refit replaces the links instead of stacking them
            link_layers(layers, ("colormap", "contrast_limits"))
