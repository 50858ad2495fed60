"""napari writer contributions: an image layer → TIFF or NIfTI (with timings and spacing), a
landmarks Points layer → landmark CSV (``frame,name,y,x,y_mm,x_mm``).

The layer is turned back into a :class:`Sequence` with ``._layers.sequence_from_layer`` (array-valued
metadata such as a registration's displacement is dropped: files keep JSON-friendly metadata
only) and written by :mod:`napari_any2reg.io`.
"""

from __future__ import annotations

import os
from typing import Any

from ._layers import sequence_from_layer_fields

__all__ = ["write_tiff", "write_nifti", "write_landmarks"]

_TIFF_EXTENSIONS = (".ome.tif", ".tif", ".tiff")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def _with_extension(path: str, extensions: tuple[str, ...]) -> str:
    if path.lower().endswith(extensions):
        return path
    return path + extensions[1 if extensions == _TIFF_EXTENSIONS else 0]


def _sequence(data: Any, attributes: dict[str, Any]):
    return sequence_from_layer_fields(
        data,
        name=attributes.get("name") or "sequence",
        scale=attributes.get("scale"),
        metadata=attributes.get("metadata"),
        jsonable_only=True,
    )


def write_tiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one image layer as a multi-frame TIFF; returns the written path.

    napari has already asked the user before overwriting an existing file.
    """
    from ..io import write_tiff as _write

    target = _with_extension(os.fspath(path), _TIFF_EXTENSIONS)
    written = _write(target, _sequence(data, attributes), overwrite=True)
    return [os.fspath(written if written is not None else target)]


def write_nifti(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one image layer as NIfTI (``.nii.gz`` or ``.nii``) plus its JSON sidecar
    (timings, kind, spacing); returns both paths."""
    from ..io import write_nifti as _write

    from ..io.nifti import sidecar_path

    target = _with_extension(os.fspath(path), _NIFTI_EXTENSIONS)
    written = os.fspath(_write(target, _sequence(data, attributes), overwrite=True) or target)
    sidecar = sidecar_path(written)
    return [written, os.fspath(sidecar)] if sidecar.exists() else [written]


def write_landmarks(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Points layer ``(frame, y, x)`` with a ``name`` feature as a landmark CSV.

    Positions are the layer's data coordinates: the image's pixels when the layer was made on the
    image's grid (the Landmarks widget's "New" does that); the mm columns use the layer's scale.
    A point placed twice for one landmark and frame keeps the last one.
    """
    import numpy as np

    from ..core.landmarks import LandmarkTable
    from ..io.landmarks import write_landmarks_csv

    target = os.fspath(path)
    if not target.lower().endswith(".csv"):
        target += ".csv"
    coords = np.asarray(data, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(
            f"landmarks are (frame, y, x) points; layer {attributes.get('name')!r} has shape {coords.shape}."
        )
    features = attributes.get("features")
    if features is None or "name" not in getattr(features, "columns", ()):
        raise ValueError(f"layer {attributes.get('name')!r} has no 'name' feature; make it with the Landmarks widget.")
    scale = np.asarray(attributes.get("scale") or (1.0, 1.0, 1.0), dtype=float)[-2:]
    table = LandmarkTable(np.round(coords[:, 0]).astype(int), features["name"].astype(str).to_numpy(object),
                          coords[:, 1:], (float(scale[0]), float(scale[1]))).keep_last().sorted()
    return [os.fspath(write_landmarks_csv(target, table, overwrite=True))]  # napari asked before replacing
