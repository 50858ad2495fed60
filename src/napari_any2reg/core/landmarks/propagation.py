"""Propagation through a registration: points, landmarks and labels drawn on one raw frame
carried to every other frame (through the common grid)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..spatial import (
    compose_displacements,
    invert_displacement,
    map_points_to_common,
    sample_displacement_at_points,
    warp,
    warp_labels,
)
from .table import LandmarkError, LandmarkTable, _as_field, _frame_index


# ====================================================================== propagation
def propagate_points(points: Any, source_frame: int, displacement: Any) -> np.ndarray:
    """Carry points clicked on one raw frame to every raw frame through the registration.

    A point ``p`` on frame ``k`` is first mapped to the common grid (``x + u_k(x) = p``, by
    inversion), then to frame ``i`` by ``x + u_i(x)`` (no inversion needed: the field is a
    pull-back from the common grid).

    Parameters
    ----------
    points : array_like (P, 2)
        ``(y, x)`` pixel positions on frame ``source_frame``.
    source_frame : int
    displacement : ndarray (N, 2, H, W)

    Returns
    -------
    ndarray (N, P, 2) float64
        Positions on every frame; row ``source_frame`` equals the input.
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(p)):
        raise LandmarkError("points to propagate must be finite (y, x) positions.")
    field = torch.as_tensor(u)
    common = torch.as_tensor(map_points_to_common(u, k, p.astype(np.float32)))
    out = np.empty((u.shape[0], len(p), 2))
    for i in range(u.shape[0]):
        out[i] = (common + sample_displacement_at_points(field[i], common)).numpy()
    out[k] = p  # exact on the annotated frame (the round trip is only accurate to ~1e-3 px)
    return out


def propagate_landmarks(table: LandmarkTable, source_frame: int, displacement: Any) -> LandmarkTable:
    """The landmarks placed on ``source_frame``, propagated to every frame (:func:`propagate_points`).

    Points on other frames are ignored; the result has one row per landmark and frame.
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    rows = table.subset(table.frames == k).keep_last()
    if not len(rows):
        raise LandmarkError(f"no landmark is placed on frame {k}; place points on that frame first.")
    moved = propagate_points(rows.points, k, u)  # (N, P, 2)
    positions = {name: moved[:, j] for j, name in enumerate(rows.names.tolist())}
    return LandmarkTable.from_positions(positions, table.spacing_mm, table.spacing_source)


def label_field_from_frame(displacement: Any, source_frame: int, iterations: int = 30) -> np.ndarray:
    """Pull-back fields ``w_i`` that resample raw frame ``k`` onto every raw frame ``i``.

    Raw frame ``i`` shows at pixel ``y`` the anatomy of common-grid point ``y + v_i(y)``
    (``v_i`` the inverse of ``u_i``), which raw frame ``k`` shows at ``z + u_k(z)`` with
    ``z = y + v_i(y)``. So ``frame_k -> frame_i`` is the single pull-back
    ``w_i(y) = v_i(y) + u_k(y + v_i(y))`` (:func:`.spatial.compose_displacements`); composing
    the fields first means the labels are resampled once, not twice. ``w_k = 0`` exactly.

    Returns
    -------
    ndarray (N, 2, H, W) float32
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    inverse = invert_displacement(u, iterations=iterations)
    source = np.repeat(u[k : k + 1], u.shape[0], axis=0)
    w = np.asarray(compose_displacements(source, inverse), dtype=np.float32)
    w[k] = 0.0
    return w


def _resample_labels(labels: np.ndarray, field: np.ndarray, method: str) -> np.ndarray:
    """Pull-back resampling of integer labels ``(N, H, W)`` by ``field`` ``(N, 2, H, W)``.

    ``"linear"``: each label's indicator is warped bilinearly and the label with the largest
    share wins (smooth, sub-pixel boundaries: better Dice than nearest for small structures
    such as the myocardium). ``"nearest"``: :func:`.spatial.warp_labels`.
    """
    if method == "nearest":
        return np.asarray(warp_labels(labels, field)).astype(labels.dtype)
    if method != "linear":
        raise ValueError(f"method must be 'linear' or 'nearest'; got {method!r}.")
    values = np.unique(labels)
    onehot = torch.as_tensor(np.stack([labels == v for v in values], axis=1).astype(np.float32))  # (N, C, H, W)
    warped = warp(onehot, torch.as_tensor(field), "bilinear", "border")
    winner = warped.argmax(dim=1).numpy()
    return values[winner].astype(labels.dtype)


def propagate_labels(labels: Any, source_frame: int, displacement: Any, *, method: str = "linear") -> np.ndarray:
    """Carry a label mask drawn on one raw frame to every raw frame through the registration.

    Parameters
    ----------
    labels : array_like (H, W) of int, or (N, H, W)
        The mask on frame ``source_frame`` (for a stack, its ``source_frame`` slice is used).
    source_frame : int
    displacement : ndarray (N, 2, H, W)
    method : {"linear", "nearest"}
        How labels are resampled (see :func:`_resample_labels`).

    Returns
    -------
    ndarray (N, H, W), the input's integer dtype
        Frame ``source_frame`` is an exact copy of the mask.

    Notes
    -----
    The mask is pulled into each frame with one resampling by the composed field of
    :func:`label_field_from_frame` (common grid ← frame ``k`` through ``u_k``, frame ``i`` ←
    common grid through the inverse ``v_i``).
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    mask = np.asarray(labels)
    if mask.ndim == 3:
        if mask.shape[0] != u.shape[0]:
            raise LandmarkError(f"the labels have {mask.shape[0]} frames but the registration has {u.shape[0]}.")
        mask = mask[k]
    if mask.ndim != 2 or mask.shape != u.shape[-2:]:
        raise LandmarkError(
            f"labels must be (H, W) = {tuple(u.shape[-2:])} (or (N, H, W)) on the image grid; got {np.shape(labels)}."
        )
    if mask.dtype.kind not in "iub":
        if not np.all(mask == np.round(mask)):
            raise LandmarkError("labels must be whole numbers (0 = background).")
        mask = mask.astype(np.int64)
    field = label_field_from_frame(u, k)
    stack = np.repeat(mask[None], u.shape[0], axis=0)
    out = _resample_labels(stack, field, method)
    out[k] = mask
    return out
