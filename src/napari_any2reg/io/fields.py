"""Writers and readers for what a registration produces besides the frames.

=========================  ==============================================================
``save_displacement``      ``.npy`` ``(N, 2, H, W)`` float32, pixels ``(dy, dx)``, pull-back
                           (exactly the array) or NIfTI (mm, see below)
``read_displacement``      either of the above back to ``(N, 2, H, W)`` pixels
``save_map_tiff``          float32 map(s) ``(H, W)`` or ``(K, H, W)`` as TIFF with the pixel
                           size in the resolution tags and a JSON description
``read_map_tiff``          ``(array, info)``
=========================  ==============================================================

Displacement in NIfTI
---------------------
Other software expects a NIfTI displacement field in mm with the vector in the 5th dimension
(``intent_code = NIFTI_INTENT_VECTOR``). The file holds ``data[c, r, t, 0, k]`` with
``c`` = column (NIfTI ``i``), ``r`` = row (``j``), ``t`` = frame (as the sequence writer
stores frames, no flips) and ``k = 0`` the x (column) component ``u_dx * dx``, ``k = 1`` the
y (row) component ``u_dy * dy``, in mm; pixdim is ``(dx, dy, 1)``. The field stays a
*pull-back* from the common grid (``registered_i(x) = frame_i(x + u_i(x))``).
:func:`read_displacement` undoes all of this.

Displacement for ITK / SimpleITK (2-D, one file per frame)
----------------------------------------------------------
:func:`save_displacement_itk` writes ``<stem>_frame000.nii.gz`` ... each holding one frame's field
as ``(W, H, 1, 1, 2)`` float32 (``intent_code = NIFTI_INTENT_VECTOR``) with the affine
``diag(-dx, -dy, 1)``. ITK reads that as a **2-D** image with 2 components, spacing
``(dx, dy)``, origin ``(0, 0)`` and *identity* direction (ITK converts the RAS affine to LPS,
which cancels the two minus signs; with ``diag(dx, dy, 1)`` it would see a mirrored direction
and mirror the warp). Component 0 is ``u_dx * dx`` and component 1 is ``u_dy * dy`` in mm, so::

    field = sitk.ReadImage("displacement_frame003.nii.gz", sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    moving = sitk.GetImageFromArray(frames[3]); moving.SetSpacing((dx, dy))   # origin 0, identity
    registered = sitk.Resample(moving, field, transform, sitk.sitkLinear)

reproduces ``registered[3]``: ITK's resampling transform maps each output point ``p`` to the
input point ``p + u(p)``, which is exactly the pull-back convention. The 2-D images live in the
slice's own in-plane axes (an ITK 2-D image cannot be oblique in 3-D); the scanner geometry is
in the JSON sidecar.

The functions here write to the path they are given (callers make it atomic with
:func:`.atomic_write` or :func:`.atomic_write_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._common import split_name

__all__ = [
    "DISPLACEMENT_CONVENTION",
    "save_displacement",
    "save_displacement_itk",
    "itk_frame_paths",
    "read_displacement",
    "displacement_sidecar",
    "save_map_tiff",
    "read_map_tiff",
]

#: One line stating the field convention, stored with every exported field.
DISPLACEMENT_CONVENTION = "pull-back from the common grid: registered_i(x) = frame_i(x + u_i(x))"

_NIFTI = (".nii", ".nii.gz")


def _check_field(displacement: Any) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"a displacement field is (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}.")
    return u


def displacement_sidecar(displacement: Any, spacing_mm: Any) -> dict[str, Any]:
    """The JSON description written beside an exported field (both the .npy and the NIfTI)."""
    u = _check_field(displacement)
    return {
        "any2reg_displacement": 1,
        "convention": DISPLACEMENT_CONVENTION,
        "shape_npy": list(u.shape),
        "npy": "(N, 2, H, W) float32 in pixels, components (dy, dx)",
        "nifti": "(W, H, N, 1, 2) float32 in mm: data[c, r, t, 0, 0] = u_dx * dx, data[c, r, t, 0, 1] = u_dy * dy",
        "spacing_mm": [float(s) for s in spacing_mm],
    }


def save_displacement(path: Any, displacement: Any, spacing_mm: Any = (1.0, 1.0)) -> Path:
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
    # (N, 2, H, W) -> (W, H, N, 1, 2), (x, y) components in mm
    vectors = np.stack([u[:, 1] * dx, u[:, 0] * dy], axis=-1)  # (N, H, W, 2)
    data = np.ascontiguousarray(np.transpose(vectors, (2, 1, 0, 3))[:, :, :, None, :], dtype=np.float32)
    image = nibabel.Nifti1Image(data, np.diag([dx, dy, 1.0, 1.0]))
    image.header.set_xyzt_units("mm")
    image.header.set_intent("vector", (), name="displacement")
    image.header["descrip"] = b"napari-any2reg pull-back displacement (mm)"
    nibabel.save(image, str(path))
    return path


def itk_frame_paths(path: Any, n_frames: int) -> list[Path]:
    """The per-frame file names :func:`save_displacement_itk` writes for ``path`` (``x.nii.gz``)."""
    path = Path(path)
    stem, ext = split_name(path)
    return [path.with_name(f"{stem}_frame{k:03d}{ext or '.nii.gz'}") for k in range(int(n_frames))]


def save_displacement_itk(path: Any, displacement: Any, spacing_mm: Any = (1.0, 1.0)) -> list[Path]:
    """Write one 2-D ITK displacement field per frame (see the module notes); returns the paths.

    Parameters
    ----------
    path : str or Path
        Base name, ``.nii`` or ``.nii.gz``: frame ``k`` goes to ``<stem>_frame<kkk><ext>``.
        Written in place (callers make the set atomic with :func:`.atomic_write_all`).
    displacement : array (N, 2, H, W)
        Pixels, components ``(dy, dx)``, pull-back.
    spacing_mm : (dy, dx)
    """
    path = Path(path)
    u = _check_field(displacement)
    if split_name(path)[1] not in _NIFTI:
        raise ValueError(f"{path}: ITK displacement fields are written as .nii or .nii.gz.")
    return [write_itk_frame(target, u[k], spacing_mm) for k, target in enumerate(itk_frame_paths(path, u.shape[0]))]


def write_itk_frame(path: Any, field: Any, spacing_mm: Any) -> Path:
    """One frame's field ``(2, H, W)`` (pixels, ``(dy, dx)``) as a 2-D ITK vector image in mm."""
    import nibabel

    dy, dx = (float(s) for s in spacing_mm)
    field = np.asarray(field, dtype=np.float32)
    vectors = np.stack([field[1] * dx, field[0] * dy], axis=-1)  # (H, W, 2): (x, y) in mm
    data = np.ascontiguousarray(np.transpose(vectors, (1, 0, 2))[:, :, None, None, :], dtype=np.float32)
    # RAS diag(-dx, -dy): ITK (LPS) sees spacing (dx, dy) and an identity direction
    affine = np.diag([-dx, -dy, 1.0, 1.0])
    image = nibabel.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header.set_intent("vector", (), name="displacement")
    image.header["descrip"] = b"napari-any2reg 2-D ITK displacement (mm), pull-back"
    nibabel.save(image, str(path))
    return Path(path)


def read_displacement(path: Any) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read a field written by :func:`save_displacement` (or any ``(N, 2, H, W)`` .npy).

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
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such displacement file; check the path.")
    stem, ext = split_name(path)
    if ext == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc}).") from exc
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


def save_map_tiff(path: Any, array: Any, spacing_mm: Any, info: dict[str, Any] | None = None) -> Path:
    """Write float32 map(s) ``(H, W)`` or ``(K, H, W)`` with the pixel size and a JSON description.

    The resolution tags carry the spacing (pixels per cm) so Fiji and other readers show mm;
    ``info`` (e.g. ``{"quantity": "T1", "unit": "ms"}``) goes into the description as JSON
    together with ``spacing_mm``. Written in place (callers make it atomic).
    """
    import tifffile

    dy, dx = (float(s) for s in spacing_mm)
    description = {**dict(info or {}), "spacing_mm": [dy, dx]}
    tifffile.imwrite(
        Path(path),
        np.ascontiguousarray(array, dtype=np.float32),
        photometric="minisblack",
        resolution=(10.0 / dx, 10.0 / dy),  # pixels per cm
        resolutionunit="CENTIMETER",
        description=json.dumps(description, allow_nan=False, default=float),
        metadata=None,
    )
    return Path(path)


def read_map_tiff(path: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a map written by :func:`save_map_tiff`: ``(array float32, info dict)``."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such map file; check the path.")
    with tifffile.TiffFile(path) as tif:
        array = tif.asarray()
        description = tif.pages[0].description or ""
    try:
        info = json.loads(description)
        if not isinstance(info, dict):
            info = {}
    except ValueError:
        info = {}
    return np.asarray(array, dtype=np.float32), info
