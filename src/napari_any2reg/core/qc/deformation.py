"""The deformation side of the review: tissue-attached deformation grids and quiver arrows,
displacement magnitude, folding and Jacobian statistics, and the display settings (line width,
vertex step, arrow scale, colour limits) that keep the overlays readable at any image size."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence as SequenceType

import numpy as np
import torch

from ..spatial import jacobian_determinant, sample_displacement_at_points
from ._inputs import _as_displacement, _spacing


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
