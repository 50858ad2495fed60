"""Review of a registration: overlays, a per-frame QC table with flags, and a run summary.

Everything a reader needs to decide whether a motion correction can be trusted, computed from
the raw frames, the registered frames and the pull-back displacement (``docs/design.md`` §2, §9).
Small pure functions on numpy arrays; no Qt / napari (the Review widget only turns the results
into layers).

Which grid is which
-------------------
The registered frames live on the *common* grid ``x``; raw frame ``i`` shows the anatomy at
``x + u_i(x)`` (pull-back). :func:`deformation_grid` draws the lines of a regular grid laid on
the common grid *where they land in raw frame i*: vertex ``p`` of a line is drawn at
``p + u_i(p)``. Overlaid on the raw sequence, the grid therefore moves with the anatomy from
frame to frame (it is a "tissue-attached" grid), and it needs no inversion of the field (a
constant shift ``t`` moves every line by exactly ``t``). :func:`quiver_vectors` uses the same
reading: an arrow starts at a common-grid point and ends where that point is found in frame i.

Where statistics are taken
--------------------------
Deformation statistics (displacement, folding, Jacobian) are over the whole field: a fold
anywhere means the transform is not physically plausible. Intensity statistics (correspondence
score, correlation with the template, alignment) are inside a region of interest, by default
the central box of :func:`.metrics.default_roi` (cardiac scans centre the heart), because the
noise-only background has no structure to correspond.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence as SequenceType

import numpy as np
import torch

from .metrics import alignment_score, default_roi
from .spatial import jacobian_determinant, sample_displacement_at_points

__all__ = [
    "DeformationGrid",
    "Quiver",
    "QCThresholds",
    "FrameQC",
    "QCTable",
    "RunSummary",
    "Review",
    "grid_line_positions",
    "grid_spacing_pixels",
    "deformation_grid",
    "quiver_vectors",
    "displacement_magnitude_mm",
    "folding_mask",
    "log_jacobian_std",
    "jacobian_gradient_norm",
    "correspondence_maps",
    "template_correlation",
    "matched_template",
    "frame_templates",
    "template_difference",
    "sequence_template",
    "checkerboard",
    "curtain",
    "temporal_profile",
    "flag_reasons",
    "frame_qc_table",
    "run_summary",
    "review_registration",
    "grid_line_width",
    "grid_vertex_step",
    "arrow_display_scale",
    "jacobian_display_limits",
    "symmetric_limit",
]


# ------------------------------------------------------------------ input checks
def _as_displacement(displacement: Any) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(
            f"displacement must be (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}. "
            "Use the 'displacement' kept in the registered layer's metadata."
        )
    return u


def _as_frames(frames: Any, name: str = "frames") -> np.ndarray:
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W); got shape {f.shape}.")
    return f


def _check_same_grid(frames: np.ndarray, displacement: np.ndarray, name: str = "frames") -> None:
    if frames.shape[0] != displacement.shape[0] or frames.shape[1:] != displacement.shape[2:]:
        raise ValueError(
            f"{name} {frames.shape} and displacement {displacement.shape} do not belong to the same "
            "sequence (need (N, H, W) and (N, 2, H, W)); pick the registered layer of this source."
        )


def _spacing(spacing_mm: Any) -> tuple[float, float]:
    if spacing_mm is None:
        return 1.0, 1.0
    dy, dx = (float(v) for v in spacing_mm)
    if not (dy > 0 and dx > 0):
        raise ValueError(f"spacing_mm must be two positive numbers (dy, dx); got {spacing_mm!r}.")
    return dy, dx


def _roi(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return default_roi(shape)
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape):
        raise ValueError(f"the ROI mask must be (H, W) = {tuple(shape)}; got {m.shape}.")
    if not m.any():
        raise ValueError("the ROI mask is empty; pass a mask with at least one pixel or None for the default.")
    return m


# ------------------------------------------------------------------ deformation grid
@dataclasses.dataclass
class DeformationGrid:
    """Warped grid lines of every frame (see the module docstring for the direction).

    Attributes
    ----------
    paths : list of ndarray (P, 3) float32
        One polyline per line and frame, vertices ``(frame, y, x)`` in pixels of the raw frame
        (napari Shapes ``path`` data with the frame axis first).
    frame : ndarray (L,) int
        Frame index of each path.
    orientation : ndarray (L,) str
        ``"row"`` (a line of constant y on the common grid) or ``"column"`` (constant x).
    magnitude_mm : ndarray (L,) float32
        Mean displacement magnitude along each line, in mm (for colouring).
    rows, columns : ndarray
        Common-grid positions (pixels) of the undeformed row and column lines.
    """

    paths: list[np.ndarray]
    frame: np.ndarray
    orientation: np.ndarray
    magnitude_mm: np.ndarray
    rows: np.ndarray
    columns: np.ndarray

    @property
    def lines_per_frame(self) -> int:
        return int(self.rows.size + self.columns.size)

    def __len__(self) -> int:
        return len(self.paths)


def grid_line_positions(size: int, spacing_px: float) -> np.ndarray:
    """Positions of grid lines along an axis of ``size`` pixels, ``spacing_px`` apart.

    The lines are centred on the image (equal margins at both ends), so a grid looks the same
    whatever the image size.
    """
    if not spacing_px > 0:
        raise ValueError(f"grid spacing must be positive; got {spacing_px}.")
    extent = float(size - 1)
    count = int(np.floor(extent / spacing_px + 1e-6)) + 1
    start = (extent - (count - 1) * spacing_px) / 2.0
    return (start + spacing_px * np.arange(count)).astype(np.float32)


def grid_spacing_pixels(spacing: float | SequenceType[float], unit: str = "px",
                        spacing_mm: SequenceType[float] | None = None) -> tuple[float, float]:
    """Grid spacing ``(along y, along x)`` in pixels from a spacing in ``"px"`` or ``"mm"``."""
    sy, sx = (float(spacing), float(spacing)) if np.isscalar(spacing) else (float(s) for s in spacing)
    if unit in ("px", "pixel", "pixels"):
        return sy, sx
    if unit == "mm":
        dy, dx = _spacing(spacing_mm)
        return sy / dy, sx / dx
    raise ValueError(f"grid spacing unit must be 'px' or 'mm'; got {unit!r}.")


def displacement_magnitude_mm(displacement: Any, spacing_mm: SequenceType[float] | None = None) -> np.ndarray:
    """Length of ``u_i(x)`` in mm per pixel, ``(N, H, W)`` (pixels when ``spacing_mm`` is None)."""
    u = _as_displacement(displacement)
    dy, dx = _spacing(spacing_mm)
    return np.hypot(u[:, 0] * dy, u[:, 1] * dx).astype(np.float32)


def _sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear sample of one ``(2, H, W)`` field at ``(P, 2)`` pixel points."""
    out = sample_displacement_at_points(torch.from_numpy(np.ascontiguousarray(field)), torch.from_numpy(points))
    return out.numpy()


def deformation_grid(
    displacement: Any,
    spacing: float | SequenceType[float] = 8.0,
    *,
    unit: Literal["px", "mm"] = "px",
    spacing_mm: SequenceType[float] | None = None,
    step: float = 1.0,
) -> DeformationGrid:
    """Grid lines of the common grid drawn where they land in each raw frame.

    Vertex ``p`` of each line is drawn at ``p + u_i(p)`` (bilinear sample of the field), so an
    overlay on the raw frames moves with the anatomy and a constant field shifts every line
    by exactly that constant.

    Parameters
    ----------
    displacement : array (N, 2, H, W)
        Pull-back displacement in pixels ``(dy, dx)``.
    spacing : float or (float, float)
        Distance between lines, in ``unit``.
    unit : {"px", "mm"}
        Unit of ``spacing``; ``"mm"`` needs ``spacing_mm``.
    spacing_mm : (dy, dx), optional
        Pixel spacing; also used for the magnitude colouring (pixels when omitted).
    step : float
        Distance between vertices along a line, in pixels (the last vertex sits on the border).

    Returns
    -------
    DeformationGrid
        ``N * (rows + columns)`` paths.
    """
    u = _as_displacement(displacement)
    n, _, h, w = u.shape
    sy, sx = grid_spacing_pixels(spacing, unit, spacing_mm)
    if not step > 0:
        raise ValueError(f"step between vertices must be positive; got {step}.")
    dy, dx = _spacing(spacing_mm)
    rows, columns = grid_line_positions(h, sy), grid_line_positions(w, sx)
    along_x = np.unique(np.append(np.arange(0.0, w - 1, step), w - 1)).astype(np.float32)
    along_y = np.unique(np.append(np.arange(0.0, h - 1, step), h - 1)).astype(np.float32)
    lines: list[np.ndarray] = [np.stack([np.full_like(along_x, r), along_x], 1) for r in rows]
    lines += [np.stack([along_y, np.full_like(along_y, c)], 1) for c in columns]
    orientation = ["row"] * rows.size + ["column"] * columns.size
    points = np.concatenate(lines, 0).astype(np.float32)
    splits = np.cumsum([len(line) for line in lines])[:-1]

    paths, frames, magnitudes, kinds = [], [], [], []
    for i in range(n):
        shift = _sample(u[i], points)
        moved = points + shift
        length_mm = np.hypot(shift[:, 0] * dy, shift[:, 1] * dx)
        for line, mag, kind in zip(np.split(moved, splits), np.split(length_mm, splits), orientation):
            paths.append(np.column_stack([np.full(len(line), i, np.float32), line]).astype(np.float32))
            magnitudes.append(float(mag.mean()))
            frames.append(i)
            kinds.append(kind)
    return DeformationGrid(
        paths=paths,
        frame=np.asarray(frames, dtype=int),
        orientation=np.asarray(kinds),
        magnitude_mm=np.asarray(magnitudes, dtype=np.float32),
        rows=rows,
        columns=columns,
    )


@dataclasses.dataclass
class Quiver:
    """Displacement arrows: napari Vectors data ``(M, 2, 3)`` and their lengths in mm."""

    vectors: np.ndarray
    magnitude_mm: np.ndarray


def quiver_vectors(displacement: Any, step: float = 6.0, *, spacing_mm: SequenceType[float] | None = None) -> Quiver:
    """Arrows from common-grid points ``x`` to ``x + u_i(x)``, every ``step`` pixels.

    Returns napari Vectors data: ``vectors[:, 0]`` the start ``(frame, y, x)``,
    ``vectors[:, 1]`` the projection ``(0, dy, dx)`` in pixels (0 along the frame axis, so an
    arrow stays on its frame).
    """
    u = _as_displacement(displacement)
    n, _, h, w = u.shape
    ys, xs = grid_line_positions(h, step), grid_line_positions(w, step)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    points = np.stack([gy.ravel(), gx.ravel()], 1).astype(np.float32)
    dy, dx = _spacing(spacing_mm)
    out = np.zeros((n * len(points), 2, 3), np.float32)
    mags = np.zeros(n * len(points), np.float32)
    for i in range(n):
        shift = _sample(u[i], points)
        block = slice(i * len(points), (i + 1) * len(points))
        out[block, 0, 0] = i
        out[block, 0, 1:] = points
        out[block, 1, 1:] = shift
        mags[block] = np.hypot(shift[:, 0] * dy, shift[:, 1] * dx)
    return Quiver(vectors=out, magnitude_mm=mags)


# ------------------------------------------------------------------ Jacobian
def folding_mask(displacement: Any) -> np.ndarray:
    """Folded pixels, ``det(I + ∇u) <= 0``, as a boolean ``(N, H, W)`` map."""
    return np.asarray(jacobian_determinant(_as_displacement(displacement))) <= 0


def log_jacobian_std(det: np.ndarray) -> np.ndarray:
    """Per-frame standard deviation of ``log det J`` over pixels with ``det J > 0``, ``(N,)``.

    ``nan`` for a frame with no positive pixel (it is all folded).
    """
    det = np.asarray(det, dtype=np.float64)
    out = np.full(det.shape[0], np.nan)
    for i, d in enumerate(det):
        positive = d[d > 0]
        if positive.size:
            out[i] = float(np.log(positive).std())
    return out


def jacobian_gradient_norm(det: np.ndarray, spacing_mm: SequenceType[float] | None = None) -> np.ndarray:
    """Per-frame mean of ``|∇ det J|`` (central differences), ``(N,)``.

    Per pixel without ``spacing_mm``; per mm with it. Large values mean an irregular, locally
    changing deformation even without folding.
    """
    det = np.asarray(det, dtype=np.float64)
    gy, gx = np.gradient(det, axis=(-2, -1))
    if spacing_mm is not None:
        dy, dx = _spacing(spacing_mm)
        gy, gx = gy / dy, gx / dx
    return np.hypot(gy, gx).reshape(det.shape[0], -1).mean(axis=1)


# ------------------------------------------------------------------ display settings
def grid_line_width(shape: SequenceType[int]) -> float:
    """Width (pixels of the image) of deformation-grid lines that stay solid on screen.

    A fixed 0.35 px is thinner than a screen pixel once a large image (e.g. 320 x 320) is
    zoomed to fit, and the lines break into dashes; this grows with the image size.
    """
    return float(max(0.35, max(int(shape[-2]), int(shape[-1])) / 300.0))


def grid_vertex_step(shape: SequenceType[int]) -> float:
    """Distance between vertices along a grid line (pixels): ~128 vertices per line, at least 1."""
    return float(max(1.0, max(int(shape[-2]), int(shape[-1])) / 128.0))


def arrow_display_scale(magnitude_px: Any, step: float) -> float:
    """Factor that draws arrows long enough to see (napari Vectors ``length``).

    True displacements are often 1-3 px, invisible as arrows; the factor makes the 95th
    percentile arrow 80 % of the arrow spacing ``step``, and never shrinks arrows (>= 1).
    """
    values = np.asarray(magnitude_px, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    top = float(np.percentile(values, 95))
    if not top > 1e-6:
        return 1.0
    return float(max(1.0, 0.8 * float(step) / top))


def symmetric_limit(values: Any, percentile: float = 99.5, floor: float = 1e-6) -> float:
    """``percentile`` of ``|values|`` (finite ones), at least ``floor``: limits ``(-l, l)``."""
    array = np.abs(np.asarray(values, dtype=np.float64))
    array = array[np.isfinite(array)]
    if array.size == 0:
        return 1.0
    return float(max(np.percentile(array, percentile), floor))


def jacobian_display_limits(det: Any, percentile: float = 99.5, floor: float = 0.02) -> tuple[float, float]:
    """Contrast limits of det J centred at 1: ``1 ± r`` with ``r`` the ``percentile`` of ``|det - 1|``.

    Fixed limits 0-2 turn the small changes of a smooth registration (det J 0.95-1.05) into a
    uniform wash; ``r`` is clipped to ``[floor, 1]`` so a field with no change is not noise.
    """
    radius = min(symmetric_limit(np.asarray(det, dtype=np.float64) - 1.0, percentile, floor), 1.0)
    return 1.0 - radius, 1.0 + radius


# ------------------------------------------------------------------ intensities
def correspondence_maps(frames: Any, displacement: Any, *, spacing_mm: SequenceType[float] | None = None,
                        stored: Any = None) -> np.ndarray:
    """Per-frame correspondence scores ``(N, H, W)`` in [0, 1] on the common grid.

    ``stored`` (the scorer's maps kept with an Any2Reg result) is used when it fits; otherwise
    the model-free residual score, which has the same meaning (high = the pixel matches the
    group), is computed from the raw frames and the field.
    """
    f = _as_frames(frames)
    u = _as_displacement(displacement)
    _check_same_grid(f, u)
    if stored is not None:
        s = np.asarray(stored, dtype=np.float32)
        if s.shape == f.shape:
            return np.clip(s, 0.0, 1.0)
    from .network.scoring import predict_scores

    return predict_scores(None, f, u, spacing_mm=spacing_mm)


def sequence_template(registered: Any) -> np.ndarray:
    """PCA-weighted template of registered frames (as :func:`.registration.register` makes it)."""
    from .intensity import normalise_intensities, pca_template

    return pca_template(normalise_intensities(_as_frames(registered, "registered")))[0]


def template_correlation(frames: Any, template: Any, mask: Any = None) -> np.ndarray:
    """Pearson correlation of each frame with the template inside ``mask``, ``(N,)``.

    Insensitive to a per-frame gain and offset; a relaxation series keeps a high correlation
    when its frames are aligned, and a misplaced or corrupted frame loses it.
    """
    f = _as_frames(frames).astype(np.float64)
    t = np.asarray(template, dtype=np.float64)
    if t.shape != f.shape[1:]:
        raise ValueError(f"template must be (H, W) = {f.shape[1:]}; got {t.shape}.")
    m = _roi(mask, t.shape)
    x = f[:, m] - f[:, m].mean(axis=1, keepdims=True)
    y = t[m] - t[m].mean()
    denom = np.linalg.norm(x, axis=1) * np.linalg.norm(y)
    return np.where(denom > 0, x @ y / np.maximum(denom, 1e-300), 0.0)


def matched_template(frames: Any, template: Any, mask: Any = None) -> np.ndarray:
    """The template mapped into each frame's intensities, ``a_i T + b_i``, ``(N, H, W)``.

    ``a_i, b_i`` are the least-squares fit inside ``mask``: frames of a relaxation series differ
    in contrast, so a difference image needs the template at each frame's gain and offset.
    """
    f = _as_frames(frames).astype(np.float64)
    t = np.asarray(template, dtype=np.float64)
    if t.shape != f.shape[1:]:
        raise ValueError(f"template must be (H, W) = {f.shape[1:]}; got {t.shape}.")
    m = _roi(mask, t.shape)
    design = np.stack([t[m], np.ones(int(m.sum()))], 1)
    coeffs, *_ = np.linalg.lstsq(design, f[:, m].T, rcond=None)  # (2, N)
    return (coeffs[0][:, None, None] * t[None] + coeffs[1][:, None, None]).astype(np.float32)


def frame_templates(registered: Any, rank: int = 2) -> np.ndarray:
    """The template at each frame's contrast: rank-``rank`` PCA model of the registered frames.

    A relaxation series changes contrast tissue by tissue (near a null point the myocardium is
    dark while the blood is bright), which no gain and offset of one template reproduces. Once
    the frames are aligned, every pixel's curve lies close to a ``rank``-dimensional subspace
    (the PCA2 model of the engines), so the mean image plus the first ``rank`` principal
    components across frames, evaluated at frame ``i``, is frame ``i``'s template with the
    motion left out. ``rank=0`` gives the mean image for every frame.

    Returns
    -------
    ndarray (N, H, W) float32, in the registered frames' units.
    """
    f = _as_frames(registered, "registered").astype(np.float64)
    n = f.shape[0]
    rank = int(rank)
    if not 0 <= rank < n:
        raise ValueError(f"rank must be in 0..{n - 1} for {n} frames; got {rank}.")
    x = f.reshape(n, -1)
    mean = x.mean(axis=0, keepdims=True)
    model = np.repeat(mean, n, axis=0)
    if rank:
        # SVD of the small N x N Gram matrix instead of the N x HW data: same components
        centred = x - mean
        values, vectors = np.linalg.eigh(centred @ centred.T)
        top = vectors[:, np.argsort(values)[::-1][:rank]]  # (N, rank) frame loadings
        model += top @ (top.T @ centred)
    return model.reshape(f.shape).astype(np.float32)


def template_difference(frames: Any, template: Any, mask: Any = None) -> np.ndarray:
    """Frames minus their template, in the frames' units.

    ``template`` is either per frame ``(N, H, W)`` (e.g. :func:`frame_templates`), subtracted
    as it is, or one ``(H, W)`` image, first matched to each frame's gain and offset
    (:func:`matched_template`). Computed on the raw frames it shows the motion ("before"); on
    the registered frames what is left after correction ("after").
    """
    f = _as_frames(frames)
    t = np.asarray(template, dtype=np.float32)
    if t.ndim == 3:
        if t.shape != f.shape:
            raise ValueError(f"per-frame templates must be (N, H, W) = {f.shape}; got {t.shape}.")
        return (f - t).astype(np.float32)
    return (f - matched_template(f, t, mask)).astype(np.float32)


def checkerboard(first: Any, second: Any, tiles: int = 8) -> np.ndarray:
    """Checkerboard composite: ``first`` in the even tiles, ``second`` in the odd ones.

    Works on ``(H, W)`` images or ``(N, H, W)`` stacks of the same shape; ``tiles`` is the
    number of tiles along each image axis. Edges that jump at tile borders show misalignment.
    """
    a, b = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"checkerboard needs two images of the same shape; got {a.shape} and {b.shape}.")
    if int(tiles) < 1:
        raise ValueError(f"tiles must be at least 1; got {tiles}.")
    h, w = a.shape[-2:]
    ty = (np.arange(h) * int(tiles)) // h
    tx = (np.arange(w) * int(tiles)) // w
    even = ((ty[:, None] + tx[None, :]) % 2) == 0
    return np.where(even, a, b).astype(np.float32)


def curtain(first: Any, second: Any, position: float = 0.5, axis: int = -1) -> np.ndarray:
    """Curtain composite: ``first`` before ``position`` (fraction 0–1 of ``axis``), ``second`` after."""
    a, b = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"curtain needs two images of the same shape; got {a.shape} and {b.shape}.")
    size = a.shape[axis]
    cut = int(round(float(np.clip(position, 0.0, 1.0)) * size))
    index = np.arange(size) < cut
    shape = [1] * a.ndim
    shape[axis] = size
    return np.where(index.reshape(shape), a, b).astype(np.float32)


def temporal_profile(raw: Any, registered: Any, y: int, x: int, radius: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Intensity of one pixel across frames, raw and registered, ``((N,), (N,))``.

    ``radius`` > 0 averages a ``(2r+1)^2`` neighbourhood (clipped at the border). In the raw
    frames the pixel sees whatever tissue moved under it; after registration it follows one
    piece of tissue, so a relaxation curve becomes smooth.
    """
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    if a.shape != b.shape:
        raise ValueError(f"raw {a.shape} and registered {b.shape} frames must have the same shape.")
    h, w = a.shape[1:]
    y, x, r = int(round(float(y))), int(round(float(x))), int(radius)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {h}x{w} image.")
    ys, xs = slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)
    return a[:, ys, xs].mean(axis=(1, 2)), b[:, ys, xs].mean(axis=(1, 2))


# ------------------------------------------------------------------ QC table and flags
@dataclasses.dataclass(frozen=True)
class QCThresholds:
    """When a frame is flagged as untrustworthy (``None`` switches a test off).

    Attributes
    ----------
    max_folding_percent : float
        Flag a frame with more folded pixels (% of the field, ``det J <= 0``).
    min_mean_score : float
        Flag a frame whose mean correspondence score inside the ROI is lower.
    min_template_correlation : float
        Flag a frame whose registered image correlates less with the template inside the ROI
        (absolute value: phase-sensitive inversion-recovery frames are negatively correlated by
        nature). Frames near a tissue's null point correlate only ~0.45–0.6 even when perfectly
        aligned (MOLLI / STONE phantoms), hence the low default: the flag is for frames that do
        not resemble the anatomy at all.
    """

    max_folding_percent: float | None = 0.1
    min_mean_score: float | None = 0.5
    min_template_correlation: float | None = 0.3


@dataclasses.dataclass(frozen=True)
class FrameQC:
    """QC numbers of one frame (see :data:`QCTable.COLUMNS` for units)."""

    frame: int
    mean_displacement_mm: float
    max_displacement_mm: float
    folding_percent: float
    log_jacobian_std: float
    jacobian_gradient: float
    mean_score: float
    template_correlation_before: float
    template_correlation: float
    reasons: tuple[str, ...] = ()
    time_ms: float = float("nan")
    jacobian_gradient_mm: float = float("nan")

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def flag_reasons(row: FrameQC, thresholds: QCThresholds = QCThresholds()) -> tuple[str, ...]:
    """Why a frame is untrustworthy under ``thresholds`` (empty when it passes)."""
    reasons = []
    t = thresholds
    if t.max_folding_percent is not None and row.folding_percent > t.max_folding_percent:
        reasons.append(f"folding {row.folding_percent:.2f} % > {t.max_folding_percent:g} %")
    if t.min_mean_score is not None and not row.mean_score >= t.min_mean_score:
        reasons.append(f"score {row.mean_score:.2f} < {t.min_mean_score:g}")
    if t.min_template_correlation is not None and not abs(row.template_correlation) >= t.min_template_correlation:
        reasons.append(f"template correlation |{row.template_correlation:.2f}| < {t.min_template_correlation:g}")
    return tuple(reasons)


@dataclasses.dataclass
class QCTable:
    """Per-frame QC rows with their flags."""

    rows: list[FrameQC]
    thresholds: QCThresholds = QCThresholds()

    #: (attribute, header, format) of the displayed columns, in order.
    COLUMNS = (
        ("frame", "frame", "{:d}"),
        ("time_ms", "TI (ms)", "{:g}"),
        ("mean_displacement_mm", "mean |u| (mm)", "{:.2f}"),
        ("max_displacement_mm", "max |u| (mm)", "{:.2f}"),
        ("folding_percent", "folding (%)", "{:.2f}"),
        ("log_jacobian_std", "std log J", "{:.3f}"),
        ("jacobian_gradient_mm", "|∇J| (1/mm)", "{:.4f}"),
        ("mean_score", "score", "{:.2f}"),
        ("template_correlation_before", "corr. before", "{:.2f}"),
        ("template_correlation", "corr. after", "{:.2f}"),
    )

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """One column over frames as an array."""
        return np.asarray([getattr(row, name) for row in self.rows])

    @property
    def flagged_frames(self) -> list[int]:
        return [row.frame for row in self.rows if row.flagged]

    def with_thresholds(self, thresholds: QCThresholds) -> "QCTable":
        """The same numbers flagged again under new thresholds (no recomputation)."""
        rows = [dataclasses.replace(row, reasons=flag_reasons(row, thresholds)) for row in self.rows]
        return QCTable(rows, thresholds)

    def formatted(self) -> list[list[str]]:
        """Rows as display strings (the :data:`COLUMNS` then the reasons)."""
        return [[_format_cell(fmt, getattr(row, attr)) for attr, _, fmt in self.COLUMNS] + ["; ".join(row.reasons)]
                for row in self.rows]

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-friendly rows (reasons as a list)."""
        return [{**dataclasses.asdict(row), "reasons": list(row.reasons)} for row in self.rows]


def _format_cell(fmt: str, value: Any) -> str:
    """A table cell: "—" for a missing number (NaN), "∞" for no preparation (inf)."""
    if isinstance(value, float) and not isinstance(value, bool):
        if np.isnan(value):
            return "—"
        if np.isinf(value):
            return "∞"
    return fmt.format(value)


def frame_qc_table(
    raw: Any,
    registered: Any,
    displacement: Any,
    *,
    template: Any = None,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    roi: Any = None,
    thresholds: QCThresholds = QCThresholds(),
    det: Any = None,
    timings_ms: Any = None,
) -> QCTable:
    """Per-frame QC of a registration.

    Parameters
    ----------
    raw, registered : array (N, H, W)
        Frames before and after registration.
    displacement : array (N, 2, H, W)
        Pull-back field in pixels.
    template : array (H, W), optional
        The run's template; the PCA-weighted mean of the registered frames when omitted.
    scores : array (N, H, W), optional
        Correspondence maps; computed with :func:`correspondence_maps` when omitted.
    spacing_mm : (dy, dx), optional
        For displacements in mm (pixels when omitted).
    roi : array (H, W) bool, optional
        Region for the intensity statistics (default: central box).
    thresholds : QCThresholds
        Flagging rules.
    det : array (N, H, W), optional
        Precomputed Jacobian determinant (saves a recomputation).
    timings_ms : sequence of float, optional
        Inversion / saturation / trigger time of each frame (the table's "TI" column; NaN
        when omitted or of the wrong length).

    All lengths are in mm (``|∇J|`` per mm) when ``spacing_mm`` is given, else in pixels.

    Returns
    -------
    QCTable
    """
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    u = _as_displacement(displacement)
    _check_same_grid(a, u, "raw frames")
    _check_same_grid(b, u, "registered frames")
    m = _roi(roi, a.shape[1:])
    if template is None:
        template = sequence_template(b)
    if scores is None:
        scores = correspondence_maps(a, u, spacing_mm=spacing_mm)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != a.shape:
        raise ValueError(f"scores must be (N, H, W) = {a.shape}; got {scores.shape}.")
    det = np.asarray(jacobian_determinant(u) if det is None else det)
    magnitude = displacement_magnitude_mm(u, spacing_mm)
    folding = 100.0 * (det <= 0).reshape(len(det), -1).mean(axis=1)
    log_std = log_jacobian_std(det)
    grad = jacobian_gradient_norm(det)
    grad_mm = jacobian_gradient_norm(det, spacing_mm) if spacing_mm is not None else grad
    times = np.full(a.shape[0], np.nan)
    if timings_ms is not None and len(timings_ms) == a.shape[0]:
        times = np.asarray(timings_ms, dtype=np.float64)
    corr_before = template_correlation(a, template, m)
    corr_after = template_correlation(b, template, m)
    mean_scores = scores[:, m].mean(axis=1)
    rows = []
    for i in range(a.shape[0]):
        row = FrameQC(
            frame=i,
            mean_displacement_mm=float(magnitude[i].mean()),
            max_displacement_mm=float(magnitude[i].max()),
            folding_percent=float(folding[i]),
            log_jacobian_std=float(log_std[i]),
            jacobian_gradient=float(grad[i]),
            mean_score=float(mean_scores[i]),
            template_correlation_before=float(corr_before[i]),
            template_correlation=float(corr_after[i]),
            time_ms=float(times[i]),
            jacobian_gradient_mm=float(grad_mm[i]),
        )
        rows.append(dataclasses.replace(row, reasons=flag_reasons(row, thresholds)))
    return QCTable(rows, thresholds)


# ------------------------------------------------------------------ run summary
@dataclasses.dataclass(frozen=True)
class RunSummary:
    """Headline numbers of one run; ``str()`` gives the one-line summary."""

    engine: str
    device: str
    seconds: float | None
    folding_percent: float
    alignment_before: float
    alignment_after: float

    def line(self) -> str:
        seconds = "?" if self.seconds is None else f"{self.seconds:.1f} s"
        return (f"{self.engine} on {self.device}, {seconds}; folding {self.folding_percent:.2f} %; "
                f"alignment {self.alignment_before:.3f} → {self.alignment_after:.3f}")

    def __str__(self) -> str:
        return self.line()


def run_summary(raw: Any, registered: Any, displacement: Any, info: dict[str, Any] | None = None,
                roi: Any = None) -> RunSummary:
    """Engine, device and time from ``info`` (a ``RegistrationResult.summary()``), folding from
    the field, and the model-free alignment score (:func:`.metrics.alignment_score`) before → after.
    """
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    u = _as_displacement(displacement)
    _check_same_grid(a, u, "raw frames")
    m = _roi(roi, a.shape[1:])
    info = dict(info or {})
    seconds = info.get("seconds")
    return RunSummary(
        engine=str(info.get("engine", "unknown engine")),
        device=str(info.get("device", "unknown device")),
        seconds=None if seconds is None else float(seconds),
        folding_percent=100.0 * float(folding_mask(u).mean()),
        alignment_before=alignment_score(a, m),
        alignment_after=alignment_score(b, m),
    )


# ------------------------------------------------------------------ everything at once
@dataclasses.dataclass
class Review:
    """All per-pixel review maps of one run, plus its QC table and summary."""

    jacobian: np.ndarray  # (N, H, W) det(I + ∇u)
    folding: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N, H, W) in [0, 1]
    template: np.ndarray  # (H, W)
    difference_before: np.ndarray  # (N, H, W) raw - frame template
    difference_after: np.ndarray  # (N, H, W) registered - frame template
    table: QCTable
    summary: RunSummary


def review_registration(
    raw: Any,
    registered: Any,
    displacement: Any,
    *,
    template: Any = None,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    info: dict[str, Any] | None = None,
    roi: Any = None,
    thresholds: QCThresholds = QCThresholds(),
    difference_rank: int = 2,
    progress: Any = None,
    timings_ms: Any = None,
) -> Review:
    """Compute every review map, the QC table and the run summary in one go.

    ``progress``, if given, is called as ``progress(fraction, message)`` between the steps.
    ``scores`` are the stored correspondence maps (any2reg engines) or ``None``. The
    differences before / after are to :func:`frame_templates` of rank ``difference_rank``
    (the template at each frame's contrast); the QC table correlates with ``template``.
    """
    report = progress or (lambda fraction, message: None)
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    u = _as_displacement(displacement)
    _check_same_grid(a, u, "raw frames")
    _check_same_grid(b, u, "registered frames")
    m = _roi(roi, a.shape[1:])
    report(0.0, "Jacobian determinant")
    det = np.asarray(jacobian_determinant(u))
    report(0.1, "correspondence scores")
    maps = correspondence_maps(a, u, spacing_mm=spacing_mm, stored=scores)
    report(0.6, "template differences")
    t = sequence_template(b) if template is None else np.asarray(template, dtype=np.float32)
    per_frame = frame_templates(b, rank=min(difference_rank, a.shape[0] - 1))
    before, after = template_difference(a, per_frame), template_difference(b, per_frame)
    report(0.8, "QC table")
    table = frame_qc_table(a, b, u, template=t, scores=maps, spacing_mm=spacing_mm, roi=m,
                           thresholds=thresholds, det=det, timings_ms=timings_ms)
    summary = run_summary(a, b, u, info, m)
    report(1.0, "done")
    return Review(jacobian=det.astype(np.float32), folding=det <= 0, scores=maps, template=t,
                  difference_before=before, difference_after=after, table=table, summary=summary)
