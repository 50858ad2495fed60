"""Input checks shared by the QC functions: displacement and frame arrays as float32, the
same-grid check, the pixel spacing and the region of interest of the intensity statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import default_roi


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
