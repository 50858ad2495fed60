"""The displacement field as one file: ``.npy`` (exactly the array) or NIfTI (mm, in the
slice's axes or, with a geometry, as world LPS vectors), written by :func:`save_displacement`
and read back to pixels ``(N, 2, H, W)`` by :func:`read_displacement` (which also reads the
per-frame ITK fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._common import split_name
from .._common.errors import load_npy, special_file_kind
from .convention import _NIFTI, _METAIMAGE, _check_field, plane_components, world_vectors
from .itk import _ITK_FRAME, _itk_siblings, read_displacement_itk


def save_displacement(path: Any, displacement: Any, spacing_mm: Any = (1.0, 1.0), geometry: Any = None) -> Path:
    """Write a displacement field as ``.npy`` (pixels) or ``.nii`` / ``.nii.gz`` (mm).

    Parameters
    ----------
    path : str or Path
        Target; the extension picks the format. The file is written in place (wrap the call
        in :func:`.atomic_write` to make it atomic).
    displacement : array (N, 2, H, W)
        Pixels, components ``(dy, dx)``, pull-back.
    spacing_mm : (dy, dx)
        Pixel spacing (NIfTI: converts the vectors to mm and sets pixdim).
    geometry : SliceGeometry or dict, optional
        The source's place in the scanner: the NIfTI is then written in world coordinates
        (source affine, LPS vectors, see the module notes). Ignored for ``.npy``.
    """
    path = Path(path)
    u = _check_field(displacement)
    ext = split_name(path)[1]
    if ext == ".npy":
        with open(path, "wb") as handle:  # np.save(path) would append ".npy" to odd names
            np.save(handle, u)
        return path
    if ext not in _NIFTI:
        raise ValueError(f"{path}: a displacement is written as .npy, .nii or .nii.gz; got {ext or 'no extension'!r}.")
    import nibabel

    dy, dx = (float(s) for s in spacing_mm)
    if geometry is not None:
        return _save_world_nifti(path, u, (dy, dx), geometry)
    # (N, 2, H, W) -> (W, H, N, 1, 2), (x, y) components in mm
    vectors = np.stack([u[:, 1] * dx, u[:, 0] * dy], axis=-1)  # (N, H, W, 2)
    data = np.ascontiguousarray(np.transpose(vectors, (2, 1, 0, 3))[:, :, :, None, :], dtype=np.float32)
    image = nibabel.Nifti1Image(data, np.diag([dx, dy, 1.0, 1.0]))
    image.header.set_xyzt_units("mm")
    image.header.set_intent("vector", (), name="displacement")
    image.header["descrip"] = b"napari-any2reg pull-back displacement (mm)"
    nibabel.save(image, str(path))
    return path


def _save_world_nifti(path: Path, u: np.ndarray, spacing_mm: tuple[float, float], geometry: Any) -> Path:
    """``(W, H, 1, N, 3)``: the slice grid on the source affine, LPS vectors in mm (module notes)."""
    import nibabel

    from ...core.geometry import SliceGeometry

    g = SliceGeometry.from_dict(geometry)
    vectors = world_vectors(u, spacing_mm, g)  # (N, H, W, 3)
    data = np.ascontiguousarray(np.transpose(vectors, (2, 1, 0, 3))[:, :, None, :, :], dtype=np.float32)
    affine = g.nifti_affine(spacing_mm)
    image = nibabel.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)  # scanner anatomical space, as registered.nii.gz
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm", "unknown")  # the 4th axis counts frames
    image.header.set_intent("vector", (), name="displacement")
    image.header["descrip"] = b"napari-any2reg pull-back displacement (mm, LPS vectors)"
    nibabel.save(image, str(path))
    return path


def read_displacement(path: Any) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read a field written by :func:`save_displacement` (or any ``(N, 2, H, W)`` .npy).

    ``path`` may also name the per-frame ITK fields of :func:`save_displacement_itk`: their
    base name (``displacement_itk.nii.gz``, which itself does not exist) or any one frame file
    (``displacement_itk_frame000.nii.gz``); all frames are read (:func:`read_displacement_itk`).

    Returns
    -------
    displacement : ndarray (N, 2, H, W) float32, pixels ``(dy, dx)``
    spacing_mm : (dy, dx) or None
        From the NIfTI header, or from a ``<stem>.json`` sidecar beside a ``.npy``; ``None``
        when unknown.

    Raises
    ------
    ValueError
        If the file does not hold a field of that shape (message names the file and the fix).
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    what = special_file_kind(path)
    if what is not None:  # a FIFO would block forever; "no such file" would be false
        raise ValueError(f"{path} is {what}, not a displacement file; give the displacement.npy, displacement.nii.gz "
                         "or ITK fields written by the registration.")
    stem, ext = split_name(path)
    if ext in (*_NIFTI, _METAIMAGE) and (_ITK_FRAME.search(stem) or not path.is_file()) and _itk_siblings(path):
        return read_displacement_itk(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such displacement file; check the path.")
    if ext == ".npy":
        array = load_npy(path, what="the displacement.npy (N, 2, H, W) written by 'any2reg register'")
        if array.ndim != 4 or array.shape[1] != 2:
            raise ValueError(
                f"{path}: shape {array.shape} is not a displacement field (N, 2, H, W) in pixels (dy, dx); "
                "use the displacement.npy written by 'any2reg register'."
            )
        spacing = None
        sidecar = path.with_name(stem + ".json")
        if sidecar.is_file():
            try:
                values = json.loads(sidecar.read_text(encoding="utf-8")).get("spacing_mm")
                if values is not None and len(values) == 2 and all(float(v) > 0 for v in values):
                    spacing = (float(values[0]), float(values[1]))
            except (OSError, ValueError, TypeError, AttributeError):
                spacing = None
        return np.asarray(array, dtype=np.float32), spacing
    if ext not in _NIFTI:
        raise ValueError(f"{path}: a displacement is read from .npy, .nii or .nii.gz; got {ext or 'no extension'!r}.")
    import nibabel

    try:
        image = nibabel.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for broken files
        raise ValueError(f"{path}: not a readable NIfTI file ({exc}).") from exc
    if data.ndim == 5 and data.shape[2] == 1 and data.shape[4] == 3:  # scanner coordinates (module notes)
        return _read_world_nifti(path, image, data)
    if data.ndim == 4 and data.shape[-1] == 2:
        data = data[:, :, :, None, :]
    if data.ndim != 5 or data.shape[3] != 1 or data.shape[4] != 2:
        raise ValueError(
            f"{path}: shape {data.shape} is not a 2-D displacement series (W, H, N, 1, 2); use the "
            "displacement.nii.gz written by the any2reg export."
        )
    zooms = image.header.get_zooms()
    dx, dy = float(zooms[0]), float(zooms[1])
    vectors = np.transpose(data[:, :, :, 0, :], (2, 1, 0, 3))  # (N, H, W, 2) = (x mm, y mm)
    u = np.stack([vectors[..., 1] / dy, vectors[..., 0] / dx], axis=1).astype(np.float32)
    return u, (dy, dx)


def _read_world_nifti(path: Path, image: Any, data: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """``(W, H, 1, N, 3)`` LPS vectors on the affine's slice grid back to pixels ``(N, 2, H, W)``."""
    from ...core.geometry import SliceGeometry

    try:
        geometry, spacing = SliceGeometry.from_nifti_affine(image.affine)
    except ValueError as exc:
        raise ValueError(f"{path}: its affine does not place a slice ({exc}).") from exc
    vectors = np.transpose(data[:, :, 0], (1, 0, 2, 3)).transpose(2, 0, 1, 3)  # (N, H, W, 3)
    return plane_components(vectors, spacing, geometry.row_direction, geometry.column_direction), spacing
