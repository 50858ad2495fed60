"""The field conventions stated with every exported field (pull-back, and world LPS for a
source with a geometry), the conversion of pixel fields to world vectors and back, and the
JSON sidecar of a field."""

from __future__ import annotations

from typing import Any

import numpy as np


DISPLACEMENT_CONVENTION = "pull-back from the common grid: registered_i(x) = frame_i(x + u_i(x))"

#: The convention of fields in scanner coordinates (a source with a geometry).
WORLD_CONVENTION = ("world (ITK physical space): patient LPS coordinates in mm; registered_i(p) = frame_i(p + d_i(p)) "
                    "for every point p of the common grid, d_i in mm as 3 LPS components, "
                    "d = u_dx * dx * row_direction + u_dy * dy * column_direction")

_NIFTI = (".nii", ".nii.gz")
_METAIMAGE = ".mha"


def _plane(geometry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ...core.geometry import SliceGeometry

    g = SliceGeometry.from_dict(geometry)
    return np.asarray(g.row_direction), np.asarray(g.column_direction), np.asarray(g.normal)


def world_vectors(field: Any, spacing_mm: Any, geometry: Any) -> np.ndarray:
    """Pixel displacements ``(..., 2, H, W)`` ``(dy, dx)`` as LPS vectors in mm ``(..., H, W, 3)``."""
    dy, dx = (float(s) for s in spacing_mm)
    row, col, _ = _plane(geometry)
    u = np.asarray(field, dtype=np.float64)
    vectors = (u[..., 1, :, :, None] * dx) * row + (u[..., 0, :, :, None] * dy) * col
    return vectors.astype(np.float32)


def plane_components(vectors: Any, spacing_mm: Any, row_direction: Any, column_direction: Any) -> np.ndarray:
    """LPS vectors in mm ``(..., H, W, 3)`` back to pixel displacements ``(..., 2, H, W)`` ``(dy, dx)``."""
    dy, dx = (float(s) for s in spacing_mm)
    v = np.asarray(vectors, dtype=np.float64)
    u_dx = v @ np.asarray(row_direction, dtype=np.float64) / dx
    u_dy = v @ np.asarray(column_direction, dtype=np.float64) / dy
    return np.stack([u_dy, u_dx], axis=-3).astype(np.float32)


def _check_field(displacement: Any) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"a displacement field is (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}.")
    return u


def displacement_sidecar(displacement: Any, spacing_mm: Any, geometry: Any = None) -> dict[str, Any]:
    """The JSON description written beside an exported field (both the .npy and the NIfTI)."""
    from ...core.geometry import SliceGeometry

    u = _check_field(displacement)
    out = {
        "any2reg_displacement": 1,
        "convention": DISPLACEMENT_CONVENTION,
        "shape_npy": list(u.shape),
        "npy": "(N, 2, H, W) float32 in pixels, components (dy, dx)",
        "nifti": "(W, H, N, 1, 2) float32 in mm: data[c, r, t, 0, 0] = u_dx * dx, data[c, r, t, 0, 1] = u_dy * dy",
        "spacing_mm": [float(s) for s in spacing_mm],
    }
    if geometry is not None:
        out["nifti"] = ("(W, H, 1, N, 3) float32 in mm on the source's NIfTI affine: data[c, r, 0, t] = d_t "
                        "at pixel (r, c), 3 LPS components")
        out["world_convention"] = WORLD_CONVENTION
        out["geometry"] = SliceGeometry.from_dict(geometry).to_dict()
    return out
