"""Parametric maps (T1, R², T1 SD) as NIfTI on the source's scanner geometry.

A map fitted from a sequence lies on the sequence's pixel grid, so it is written with the
same affine as :func:`.nifti.write_nifti` gives the stack: a 2-D map as ``(I, J, 1)``
(``I`` = column, ``J`` = row, ``k`` the slice axis) and a per-frame map stack as
``(I, J, 1, K)``. A voxel of the map therefore has the world coordinate of the same pixel of
the source stack, and the map overlays the images in any NIfTI viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.sequence import Sequence
from ._common import split_name
from .nifti import NIFTI_EXTENSIONS, _affine_for

__all__ = ["write_map_nifti"]


def write_map_nifti(path: Any, array: Any, grid: Sequence, *, description: str = "") -> Path:
    """Write a map ``(H, W)`` or map stack ``(K, H, W)`` on ``grid``'s geometry; returns the path.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz``; written in place (the export writes into a staging folder that
        appears all at once).
    array : array (H, W) or (K, H, W)
        Float map(s) on the sequence's pixel grid; NaN (no fit) stays NaN.
    grid : Sequence
        The sequence the map was fitted on (its geometry, or NIfTI affine, and spacing).
    description : str
        Quantity and unit, stored in the header's ``descrip`` (at most 79 ASCII characters).
    """
    import nibabel

    path = Path(path)
    if split_name(path)[1] not in NIFTI_EXTENSIONS:
        raise ValueError(f"{path}: maps are written as .nii or .nii.gz files.")
    values = np.asarray(array, dtype=np.float32)
    if values.shape[-2:] != tuple(grid.shape) or values.ndim not in (2, 3):
        raise ValueError(f"a map must be (H, W) or (K, H, W) on the {tuple(grid.shape)} grid; got {values.shape}.")
    # the stack writer's layout: rows -> J, columns -> I, one slice
    if values.ndim == 2:
        data = np.transpose(values, (1, 0))[:, :, None]
    else:
        data = np.transpose(values, (2, 1, 0))[:, :, None, :]
    affine = _affine_for(grid)
    image = nibabel.Nifti1Image(np.ascontiguousarray(data), affine)
    code = 1 if grid.geometry is not None else 0  # 1 = scanner anatomical space
    image.set_sform(affine, code=code if code else 2)
    image.set_qform(affine, code=code)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description.encode("ascii", "replace")[:79]
    nibabel.save(image, str(path))
    return path
