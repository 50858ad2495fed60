"""Where a slice lies in the scanner: the geometry carried with a :class:`Sequence`.

A cardiac slice is a plane of pixels placed obliquely in the patient. The readers fill a
:class:`SliceGeometry` from DICOM ImageOrientationPatient / ImagePositionPatient or from a
NIfTI affine; the writers turn it back into a NIfTI affine, so an exported stack overlays
its source in ITK-SNAP, 3D Slicer or FSLeyes; the widgets turn it into napari ``scale`` and
``translate``. Pure numpy: no file formats here.

Conventions
-----------
* World coordinates are DICOM patient coordinates, **LPS** (x to the patient's left, y to the
  posterior, z to the head), in mm. NIfTI uses RAS: ``ras = diag(-1, -1, 1) @ lps``.
* ``row_direction`` is DICOM's first IOP triplet: the unit vector along which the
  **column index** grows (along an image row); ``column_direction`` is the second triplet: the
  unit vector along which the **row index** grows (down an image column).
* ``origin`` is the centre of pixel ``(row 0, column 0)`` (DICOM ImagePositionPatient).
* The slice normal is ``row_direction x column_direction`` (right-handed, as DICOM).

So pixel ``(r, c)`` with spacing ``(dy, dx)`` lies at::

    world = origin + c * dx * row_direction + r * dy * column_direction
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["SliceGeometry", "LPS_TO_RAS"]

#: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _unit(vector: Any, what: str) -> tuple[float, float, float]:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.size != 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"{what} must be 3 finite numbers; got {v.tolist()}.")
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:
        raise ValueError(f"{what} is a zero vector; the orientation is undefined.")
    return tuple(float(x) for x in v / norm)


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Position and orientation of one image plane in patient (LPS) coordinates.

    Parameters
    ----------
    origin : (3,) float
        Centre of pixel (row 0, column 0) in mm, LPS (DICOM ImagePositionPatient).
    row_direction : (3,) float
        Unit vector along which the column index grows (IOP[0:3]).
    column_direction : (3,) float
        Unit vector along which the row index grows (IOP[3:6]).
    slice_thickness_mm : float, optional
        Thickness (or slice spacing) used for the third axis of a written NIfTI affine.
    """

    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    row_direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    column_direction: tuple[float, float, float] = (0.0, 1.0, 0.0)
    slice_thickness_mm: float | None = None

    def __post_init__(self) -> None:
        origin = np.asarray(self.origin, dtype=np.float64).reshape(-1)
        if origin.size != 3 or not np.all(np.isfinite(origin)):
            raise ValueError(f"origin must be 3 finite numbers (mm); got {origin.tolist()}.")
        row = _unit(self.row_direction, "row_direction")
        col = np.asarray(_unit(self.column_direction, "column_direction"))
        # scanners round IOP to ~6 digits: make the column direction exactly orthogonal
        col = col - np.dot(col, row) * np.asarray(row)
        object.__setattr__(self, "origin", tuple(float(v) for v in origin))
        object.__setattr__(self, "row_direction", row)
        object.__setattr__(self, "column_direction", _unit(col, "column_direction (orthogonalised)"))
        thickness = self.slice_thickness_mm
        if thickness is not None:
            thickness = float(thickness)
            if not np.isfinite(thickness) or thickness <= 0:
                thickness = None
        object.__setattr__(self, "slice_thickness_mm", thickness)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dicom(cls, orientation: Any, position: Any, slice_thickness_mm: Any = None) -> "SliceGeometry":
        """From ImageOrientationPatient (6 numbers) and ImagePositionPatient (3 numbers)."""
        iop = np.asarray(orientation, dtype=np.float64).reshape(-1)
        if iop.size != 6:
            raise ValueError(f"ImageOrientationPatient must hold 6 numbers; got {iop.tolist()}.")
        return cls(tuple(position), tuple(iop[:3]), tuple(iop[3:]), slice_thickness_mm)

    @classmethod
    def from_nifti_affine(cls, affine: Any) -> tuple["SliceGeometry", tuple[float, float]]:
        """Geometry and spacing ``(dy, dx)`` of voxel plane ``k = 0`` of a RAS NIfTI affine.

        NIfTI ``i`` is the column index and ``j`` the row index (see :mod:`..io.nifti`).
        """
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise ValueError(f"a NIfTI affine is a finite 4 x 4 matrix; got shape {a.shape}.")
        lps = LPS_TO_RAS @ a[:3]
        dx, dy = float(np.linalg.norm(lps[:, 0])), float(np.linalg.norm(lps[:, 1]))
        thickness = float(np.linalg.norm(lps[:, 2])) or None
        geometry = cls(tuple(lps[:, 3]), tuple(lps[:, 0]), tuple(lps[:, 1]), thickness)
        return geometry, (dy, dx)

    # ------------------------------------------------------------------ derived
    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``row_direction x column_direction`` (LPS)."""
        return np.cross(self.row_direction, self.column_direction)

    @property
    def slice_position_mm(self) -> float:
        """Signed distance of the plane from the scanner origin along the normal (sorts slices)."""
        return float(np.dot(self.origin, self.normal))

    def pixel_to_world(self, rows: Any, columns: Any, spacing_mm: Any) -> np.ndarray:
        """LPS position (mm) of pixel centres ``(rows, columns)``; returns ``(..., 3)``."""
        dy, dx = (float(s) for s in spacing_mm)
        r = np.asarray(rows, dtype=np.float64)[..., None]
        c = np.asarray(columns, dtype=np.float64)[..., None]
        return (np.asarray(self.origin) + c * dx * np.asarray(self.row_direction)
                + r * dy * np.asarray(self.column_direction))

    def affine_lps(self, spacing_mm: Any) -> np.ndarray:
        """4 x 4 matrix mapping voxel ``(column, row, slice, 1)`` to LPS mm."""
        dy, dx = (float(s) for s in spacing_mm)
        thickness = self.slice_thickness_mm or 1.0
        out = np.eye(4)
        out[:3, 0] = np.asarray(self.row_direction) * dx
        out[:3, 1] = np.asarray(self.column_direction) * dy
        out[:3, 2] = self.normal * thickness
        out[:3, 3] = self.origin
        return out

    def nifti_affine(self, spacing_mm: Any) -> np.ndarray:
        """RAS affine of NIfTI voxels ``(i, j, k) = (column, row, slice)``, as the writers store it."""
        out = self.affine_lps(spacing_mm)
        out[:3] = LPS_TO_RAS @ out[:3]
        return out

    def with_rows_flipped(self, n_rows: int, spacing_mm: Any) -> "SliceGeometry":
        """The same plane described with the row index reversed (row ``r`` becomes ``n_rows-1-r``)."""
        dy = float(spacing_mm[0])
        col = np.asarray(self.column_direction)
        origin = np.asarray(self.origin) + (int(n_rows) - 1) * dy * col
        return SliceGeometry(tuple(origin), self.row_direction, tuple(-col), self.slice_thickness_mm)

    def shifted_along_normal(self, distance_mm: float) -> "SliceGeometry":
        """The parallel plane ``distance_mm`` further along the normal (another slice of a stack)."""
        origin = np.asarray(self.origin) + float(distance_mm) * self.normal
        return dataclasses.replace(self, origin=tuple(origin))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (kept in layer metadata and file headers)."""
        return {
            "frame_of_reference": "LPS",
            "origin": list(self.origin),
            "row_direction": list(self.row_direction),
            "column_direction": list(self.column_direction),
            "slice_thickness_mm": self.slice_thickness_mm,
        }

    @classmethod
    def from_dict(cls, value: Any) -> "SliceGeometry":
        """Inverse of :meth:`to_dict` (a :class:`SliceGeometry` is returned unchanged)."""
        if isinstance(value, SliceGeometry):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"a slice geometry is a dict with origin / row_direction / column_direction; got {type(value).__name__}.")
        return cls(
            tuple(value["origin"]),
            tuple(value["row_direction"]),
            tuple(value["column_direction"]),
            value.get("slice_thickness_mm"),
        )

    def allclose(self, other: "SliceGeometry", atol: float = 1e-4) -> bool:
        return (np.allclose(self.origin, other.origin, atol=atol)
                and np.allclose(self.row_direction, other.row_direction, atol=atol)
                and np.allclose(self.column_direction, other.column_direction, atol=atol))
