"""Writers and readers for what a registration produces besides the frames.

=========================  ==============================================================
``save_displacement``      ``.npy`` ``(N, 2, H, W)`` float32, pixels ``(dy, dx)``, pull-back
                           (exactly the array) or NIfTI (mm, see below)
``read_displacement``      either of the above, or the per-frame ITK fields, back to
                           ``(N, 2, H, W)`` pixels
``save_displacement_itk``  one 2-D ITK vector image per frame (mm)
``save_elastix_transform`` an elastix / transformix parameter file for one ITK field
``read_elastix_transform`` such a parameter file back to a dict
``save_label_stack``       integer labels ``(N, H, W)`` as TIFF (a registration applied to labels)
``read_label_stack``       a 2-D label image or ``(N, H, W)`` label stack (TIFF, NIfTI, .npy)
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

In scanner coordinates (a series with a geometry: DICOM, or a NIfTI with an affine)
--------------------------------------------------------------------------------
When the source series has a :class:`~napari_any2reg.core.geometry.SliceGeometry` (passed as
``geometry=``), the fields carry it, so other software applies them in world coordinates to the
images as they lie in the scanner (oblique, offset, anisotropic). The convention is ITK's:
points and vectors in patient **LPS** coordinates, mm; the field is still the pull-back
``registered_i(p) = frame_i(p + d_i(p))`` for every world point ``p`` of the common grid (the
source's pixel grid), with ``d_i(p) = u_dx * dx * row_direction + u_dy * dy * column_direction``
(in the slice plane).

* ``displacement.nii.gz`` (:func:`save_displacement`) holds ``(W, H, 1, N, 3)`` float32: the
  slice grid ``(i, j, k=0)`` with the source's NIfTI affine (the same as ``registered.nii.gz``:
  sform / qform code 1), frames on the 4th (time) axis and the vector ``d`` in dimension 5 as
  3 **LPS** components in mm (what ITK, ANTs and 3D Slicer store in a NIfTI displacement field:
  no RAS flip of the components). SimpleITK reads it as a 4-D image of 3-vectors; frame ``k``
  is ``field[:, :, :, k]``, a 3-D field on the slice's grid.
* the per-frame ITK fields are MetaImage files ``<stem>_frame000.mha``: a 3-D image of size
  ``(W, H, 1)`` with the slice's spacing ``(dx, dy, thickness)``, origin (ImagePositionPatient)
  and direction ``[row_direction, column_direction, normal]``, and ``d`` as 3 LPS components
  (ITK would read a one-slice vector NIfTI as 2-D and lose the plane's orientation; MetaImage
  keeps the 3rd axis). ``sitk.DisplacementFieldTransform(sitk.ReadImage(f, sitk.sitkVectorFloat64))``
  resamples a frame, as a 3-D one-slice image in its scanner geometry, onto the common grid.
* the elastix parameter files describe that 3-D grid (``FixedImageDimension 3``; ``Direction``
  column by column, as elastix reads it).

Without a geometry the fields stay in the slice's own axes, as described above.

Transform parameter files for elastix / transformix
---------------------------------------------------
:func:`save_elastix_transform` writes ``<stem>_frame003.txt`` beside a frame's field: elastix's
``DeformationFieldTransform`` (``(Transform "DeformationFieldTransform")`` with
``(DeformationFieldFileName "...")``, see elastix's
``src/Components/Transforms/DeformationFieldTransform/elxDeformationFieldTransform.h``) plus the
fixed-image grid (size, spacing, origin, direction as ITK sees the field), so
``transformix -tp displacement_frame003.txt -in frame003.nii.gz -out out/`` resamples that raw
frame onto the common grid. transformix maps each fixed (output) point ``p`` to ``p + u(p)`` in
the moving image, the same pull-back as above.

The functions here write to the path they are given (callers make it atomic with
:func:`.atomic_write` or :func:`.atomic_write_folder`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._common import split_name

__all__ = [
    "DISPLACEMENT_CONVENTION",
    "save_displacement",
    "save_displacement_itk",
    "itk_frame_paths",
    "itk_extension",
    "write_itk_world_frame",
    "write_metaimage",
    "read_metaimage",
    "world_vectors",
    "plane_components",
    "WORLD_CONVENTION",
    "read_displacement",
    "read_displacement_itk",
    "save_elastix_transform",
    "elastix_transform_text",
    "read_elastix_transform",
    "save_label_stack",
    "read_label_stack",
    "displacement_sidecar",
    "save_map_tiff",
    "read_map_tiff",
]

#: One line stating the field convention, stored with every exported field.
DISPLACEMENT_CONVENTION = "pull-back from the common grid: registered_i(x) = frame_i(x + u_i(x))"

#: The convention of fields in scanner coordinates (a source with a geometry).
WORLD_CONVENTION = ("world (ITK physical space): patient LPS coordinates in mm; registered_i(p) = frame_i(p + d_i(p)) "
                    "for every point p of the common grid, d_i in mm as 3 LPS components, "
                    "d = u_dx * dx * row_direction + u_dy * dy * column_direction")

_NIFTI = (".nii", ".nii.gz")
_METAIMAGE = ".mha"


def _plane(geometry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..core.geometry import SliceGeometry

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
    from ..core.geometry import SliceGeometry

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

    from ..core.geometry import SliceGeometry

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


def itk_frame_paths(path: Any, n_frames: int) -> list[Path]:
    """The per-frame file names :func:`save_displacement_itk` writes for ``path`` (``x.nii.gz``)."""
    path = Path(path)
    stem, ext = split_name(path)
    return [path.with_name(f"{stem}_frame{k:03d}{ext or '.nii.gz'}") for k in range(int(n_frames))]


def itk_extension(geometry: Any) -> str:
    """The per-frame ITK field format: ``.mha`` (3-D, scanner geometry) with a geometry, else ``.nii.gz``."""
    return _METAIMAGE if geometry is not None else ".nii.gz"


def save_displacement_itk(path: Any, displacement: Any, spacing_mm: Any = (1.0, 1.0), geometry: Any = None) -> list[Path]:
    """Write one ITK displacement field per frame (see the module notes); returns the paths.

    Parameters
    ----------
    path : str or Path
        Base name: frame ``k`` goes to ``<stem>_frame<kkk><ext>``. ``.nii`` / ``.nii.gz``: 2-D
        fields in the slice's own axes; ``.mha``: 3-D fields in scanner coordinates (needs
        ``geometry``; :func:`itk_extension` picks). Written in place (callers make the set
        atomic with :func:`.atomic_write_all`).
    displacement : array (N, 2, H, W)
        Pixels, components ``(dy, dx)``, pull-back.
    spacing_mm : (dy, dx)
    geometry : SliceGeometry or dict, optional
        The source's place in the scanner (required for ``.mha``).
    """
    path = Path(path)
    u = _check_field(displacement)
    ext = split_name(path)[1]
    if ext == _METAIMAGE:
        if geometry is None:
            raise ValueError(f"{path}: a .mha field is written in scanner coordinates; pass the source's geometry=.")
        return [write_itk_world_frame(target, u[k], spacing_mm, geometry)
                for k, target in enumerate(itk_frame_paths(path, u.shape[0]))]
    if ext not in _NIFTI:
        raise ValueError(f"{path}: ITK displacement fields are written as .nii, .nii.gz or .mha.")
    if geometry is not None:
        # ITK reads a one-slice vector NIfTI as 2-D: the plane's place in the scanner would be lost
        raise ValueError(f"{path}: fields in scanner coordinates are written as .mha (3-D); name the base <stem>.mha.")
    return [write_itk_frame(target, u[k], spacing_mm) for k, target in enumerate(itk_frame_paths(path, u.shape[0]))]


def write_itk_world_frame(path: Any, field: Any, spacing_mm: Any, geometry: Any) -> Path:
    """One frame's field ``(2, H, W)`` (pixels) as a 3-D one-slice MetaImage in scanner (LPS) coordinates."""
    from ..core.geometry import SliceGeometry

    g = SliceGeometry.from_dict(geometry)
    dy, dx = (float(s) for s in spacing_mm)
    vectors = world_vectors(field, (dy, dx), g)[None]  # (1, H, W, 3): z, y, x, component
    direction = [*g.row_direction, *g.column_direction, *g.normal]  # axis vectors, one after the other
    write_metaimage(path, vectors, spacing=(dx, dy, g.slice_thickness_mm or 1.0), origin=g.origin, direction=direction)
    return Path(path)


def write_metaimage(path: Any, array: Any, *, spacing: Any, origin: Any, direction: Any) -> Path:
    """A 3-D MetaImage (``.mha``, one file, zlib-compressed) of float32 vectors ``(Z, Y, X, C)``.

    ``direction`` lists the axis unit vectors one after the other (MetaImage's and elastix's
    ``TransformMatrix`` / ``Direction`` order); ``spacing`` and ``origin`` are ``(x, y, z)`` mm.
    """
    import zlib

    data = np.ascontiguousarray(array, dtype="<f4")
    if data.ndim != 4:
        raise ValueError(f"{path}: a vector MetaImage is (Z, Y, X, C); got shape {data.shape}.")
    payload = zlib.compress(data.tobytes(), 6)
    numbers = lambda values: " ".join(f"{float(v):.17g}" for v in values)  # noqa: E731
    header = "\n".join([
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = True",
        f"CompressedDataSize = {len(payload)}",
        f"TransformMatrix = {numbers(direction)}",
        f"Offset = {numbers(origin)}",
        "CenterOfRotation = 0 0 0",
        f"ElementSpacing = {numbers(spacing)}",
        f"DimSize = {data.shape[2]} {data.shape[1]} {data.shape[0]}",
        f"ElementNumberOfChannels = {data.shape[3]}",
        "ElementType = MET_FLOAT",
        "ElementDataFile = LOCAL",
    ]) + "\n"
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(payload)
    return Path(path)


def read_metaimage(path: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a MetaImage written by :func:`write_metaimage` (or ITK: one file, float, LSB):
    ``((Z, Y, X, C) float32, {"spacing", "origin", "direction"})``."""
    import zlib

    raw = Path(path).read_bytes()
    marker = b"ElementDataFile = LOCAL\n"
    end = raw.find(marker)
    if end < 0:
        raise ValueError(f"{path}: not a one-file MetaImage (.mha) with its data inside (ElementDataFile = LOCAL).")
    fields = {}
    for line in raw[:end].decode("ascii", "replace").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    try:
        size = [int(v) for v in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        if fields.get("ElementType") != "MET_FLOAT" or fields.get("BinaryDataByteOrderMSB", "False") != "False":
            raise ValueError("only little-endian MET_FLOAT data are read")
        body = raw[end + len(marker):]
        if fields.get("CompressedData", "False") == "True":
            body = zlib.decompress(body)
        while len(size) < 3:
            size.append(1)
        data = np.frombuffer(body, dtype="<f4").reshape(size[2], size[1], size[0], channels)
        info = {
            "spacing": [float(v) for v in fields["ElementSpacing"].split()],
            "origin": [float(v) for v in fields["Offset"].split()],
            "direction": [float(v) for v in fields["TransformMatrix"].split()],
        }
    except (KeyError, ValueError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable MetaImage displacement field ({exc}).") from exc
    return data.astype(np.float32), info


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
    stem, ext = split_name(path)
    if ext in (*_NIFTI, _METAIMAGE) and (_ITK_FRAME.search(stem) or not path.is_file()) and _itk_siblings(path):
        return read_displacement_itk(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such displacement file; check the path.")
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
    from ..core.geometry import SliceGeometry

    try:
        geometry, spacing = SliceGeometry.from_nifti_affine(image.affine)
    except ValueError as exc:
        raise ValueError(f"{path}: its affine does not place a slice ({exc}).") from exc
    vectors = np.transpose(data[:, :, 0], (1, 0, 2, 3)).transpose(2, 0, 1, 3)  # (N, H, W, 3)
    return plane_components(vectors, spacing, geometry.row_direction, geometry.column_direction), spacing


_ITK_FRAME = re.compile(r"_frame\d{3}$")


def _itk_base(path: Path) -> Path:
    """The base name of a set of ITK frame files (``x_frame002.nii.gz`` -> ``x.nii.gz``)."""
    stem, ext = split_name(path)
    return path.with_name(_ITK_FRAME.sub("", stem) + ext)


def _itk_siblings(path: Path) -> list[Path]:
    """The consecutive frame files ``<base>_frame000<ext>``, ``_frame001`` ... that exist."""
    base = _itk_base(Path(path))
    found = []
    for target in itk_frame_paths(base, 1000):
        if not target.is_file():
            break
        found.append(target)
    return found


def read_displacement_itk(path: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """Read the per-frame 2-D ITK fields of :func:`save_displacement_itk` back to pixels.

    Parameters
    ----------
    path : str or Path
        The base name given to :func:`save_displacement_itk` or any one of its frame files.

    Returns
    -------
    displacement : ndarray (N, 2, H, W) float32, pixels ``(dy, dx)``
    spacing_mm : (dy, dx)

    Raises
    ------
    FileNotFoundError
        If no ``<base>_frame000`` file exists.
    ValueError
        If a frame file is not a 2-D vector image, or the frames differ in grid or spacing.
    """
    import nibabel

    path = Path(path)
    files = _itk_siblings(path)
    if not files:
        raise FileNotFoundError(
            f"{path}: no ITK displacement frames ({itk_frame_paths(_itk_base(path), 1)[0].name}, ...) found; check the path."
        )
    if split_name(files[0])[1] == _METAIMAGE:
        return _read_world_frames(files)
    fields, spacing = [], None
    for file in files:
        try:
            image = nibabel.load(str(file))
            data = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as exc:  # nibabel raises several types for broken files
            raise ValueError(f"{file}: not a readable NIfTI file ({exc}).") from exc
        if data.ndim != 5 or data.shape[2:] != (1, 1, 2):
            raise ValueError(f"{file}: shape {data.shape} is not a 2-D ITK displacement frame (W, H, 1, 1, 2).")
        zooms = image.header.get_zooms()
        frame_spacing = (float(zooms[1]), float(zooms[0]))
        if spacing is not None and (fields[0].shape[1:] != data.shape[1::-1][:2] or not np.allclose(spacing, frame_spacing)):
            raise ValueError(f"{file}: its grid or spacing differs from {files[0].name}; the frames are not one field.")
        spacing = frame_spacing
        vectors = np.transpose(data[:, :, 0, 0, :], (1, 0, 2))  # (H, W, 2) = (x mm, y mm)
        fields.append(np.stack([vectors[..., 1] / spacing[0], vectors[..., 0] / spacing[1]]))
    return np.stack(fields).astype(np.float32), spacing


def _read_world_frames(files: list[Path]) -> tuple[np.ndarray, tuple[float, float]]:
    """The 3-D MetaImage frames of :func:`write_itk_world_frame` back to pixels ``(N, 2, H, W)``."""
    fields, spacing = [], None
    for file in files:
        data, info = read_metaimage(file)
        if data.shape[0] != 1 or data.shape[3] != 3:
            raise ValueError(f"{file}: shape {data.shape} is not a one-slice field of 3-vectors (1, H, W, 3).")
        direction = np.asarray(info["direction"], dtype=np.float64).reshape(3, 3)  # rows: the axis vectors
        frame_spacing = (float(info["spacing"][1]), float(info["spacing"][0]))
        if spacing is not None and (fields[0].shape[1:] != data.shape[1:3] or not np.allclose(spacing, frame_spacing)):
            raise ValueError(f"{file}: its grid or spacing differs from {files[0].name}; the frames are not one field.")
        spacing = frame_spacing
        fields.append(plane_components(data[0], spacing, direction[0], direction[1]))
    return np.stack(fields).astype(np.float32), spacing


def elastix_transform_text(field_file: str, shape: Any, spacing_mm: Any = (1.0, 1.0), geometry: Any = None) -> str:
    """An elastix transform parameter file for one 2-D ITK displacement frame.

    Parameters
    ----------
    field_file : str
        The field's file name as transformix should open it; :func:`save_elastix_transform`
        writes it relative to the parameter file (beside it: the bare file name), and
        transformix resolves a relative name against its working folder, so run it in the
        folder that holds both (``cd out && transformix -tp displacement_itk_frame000.txt ...``).
    shape : (H, W)
    spacing_mm : (dy, dx)

    Notes
    -----
    The grid is the one ITK reads from :func:`write_itk_frame`: size ``(W, H)``, spacing
    ``(dx, dy)``, origin ``(0, 0)``, identity direction; with ``geometry`` the 3-D one-slice grid
    of :func:`write_itk_world_frame` (size ``(W, H, 1)``, the slice's spacing, origin and
    direction in LPS). Entries follow elastix's parameter
    file syntax: one ``(Name value ...)`` per line, strings in double quotes.
    """
    height, width = (int(v) for v in shape)
    dy, dx = (float(s) for s in spacing_mm)
    if geometry is None:
        dimension, size, index = 2, f"{width} {height}", "0 0"
        spacing, origin, direction = f"{dx:.10g} {dy:.10g}", "0 0", "1 0 0 1"
    else:  # the 3-D one-slice grid of write_itk_world_frame, in scanner (LPS) coordinates
        from ..core.geometry import SliceGeometry

        g = SliceGeometry.from_dict(geometry)
        numbers = lambda values: " ".join(f"{float(v):.10g}" for v in values)  # noqa: E731
        dimension, size, index = 3, f"{width} {height} 1", "0 0 0"
        spacing = numbers((dx, dy, g.slice_thickness_mm or 1.0))
        origin = numbers(g.origin)
        # elastix reads Direction column by column: the axis vectors one after the other
        direction = numbers((*g.row_direction, *g.column_direction, *g.normal))
    entries = [
        ("Transform", '"DeformationFieldTransform"'),
        ("DeformationFieldFileName", json.dumps(str(field_file))),
        ("DeformationFieldInterpolationOrder", "1"),
        ("NumberOfParameters", "0"),
        ("InitialTransformParametersFileName", '"NoInitialTransform"'),
        ("HowToCombineTransforms", '"Compose"'),
        ("FixedImageDimension", str(dimension)),
        ("MovingImageDimension", str(dimension)),
        ("FixedInternalImagePixelType", '"float"'),
        ("MovingInternalImagePixelType", '"float"'),
        ("Size", size),
        ("Index", index),
        ("Spacing", spacing),
        ("Origin", origin),
        ("Direction", direction),
        ("UseDirectionCosines", '"true"'),
        ("ResampleInterpolator", '"FinalLinearInterpolator"'),
        ("Resampler", '"DefaultResampler"'),
        ("DefaultPixelValue", "0"),
        ("ResultImageFormat", '"nii.gz"'),
        ("ResultImagePixelType", '"float"'),
    ]
    lines = ["// napari-any2reg: pull-back displacement of one frame, " + DISPLACEMENT_CONVENTION]
    lines += [f"({name} {value})" for name, value in entries]
    return "\n".join(lines) + "\n"


def save_elastix_transform(field_path: Any, shape: Any, spacing_mm: Any = (1.0, 1.0), path: Any = None,
                           geometry: Any = None) -> Path:
    """Write the elastix parameter file of one ITK field frame (default ``<field stem>.txt`` beside it).

    Written in place (callers make it atomic). See :func:`elastix_transform_text`.
    """
    field_path = Path(field_path)
    target = Path(path) if path is not None else field_path.with_name(split_name(field_path)[0] + ".txt")
    # relative to the parameter file: a moved or copied folder keeps working (transformix run
    # in that folder opens it); an absolute path would name the old place
    name = os.path.relpath(field_path.resolve(), target.resolve().parent)
    target.write_text(elastix_transform_text(Path(name).as_posix(), shape, spacing_mm, geometry), encoding="utf-8")
    return target


_ELASTIX_ENTRY = re.compile(r"^\((\w+)\s*(.*)\)$")


def read_elastix_transform(path: Any) -> dict[str, list]:
    """Parse an elastix parameter file: ``{name: [values]}`` (strings unquoted, numbers as float)."""
    out: dict[str, list] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("//", 1)[0].strip()
        match = _ELASTIX_ENTRY.match(line)
        if not match:
            continue
        values = []
        for token in re.findall(r'"[^"]*"|\S+', match.group(2)):
            if token.startswith('"'):
                values.append(token[1:-1])
            else:
                try:
                    values.append(float(token))
                except ValueError:
                    values.append(token)
        out[match.group(1)] = values
    return out


_LABEL_DTYPES = (np.uint8, np.uint16, np.int32)


def save_label_stack(path: Any, labels: Any, spacing_mm: Any = (1.0, 1.0)) -> Path:
    """Write integer labels ``(N, H, W)`` (or ``(H, W)``) as a TIFF (or ``.npy``), in place.

    The smallest of uint8 / uint16 / int32 that holds the labels is used, so label viewers
    (napari, Fiji) open the file as labels; the TIFF resolution tags carry the spacing.
    """
    path = Path(path)
    data = np.asarray(labels)
    if data.dtype.kind not in "iub":
        raise ValueError(f"{path}: labels are integers; got {data.dtype}.")
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    dtype = next(t for t in _LABEL_DTYPES if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    data = np.ascontiguousarray(data, dtype=dtype)
    ext = split_name(path)[1]
    if ext == ".npy":
        with open(path, "wb") as handle:
            np.save(handle, data)
        return path
    if ext not in (".tif", ".tiff"):
        raise ValueError(f"{path}: labels are written as .tif, .tiff or .npy; got {ext or 'no extension'!r}.")
    import tifffile

    dy, dx = (float(s) for s in spacing_mm)
    tifffile.imwrite(path, data, photometric="minisblack", resolution=(10.0 / dx, 10.0 / dy),
                     resolutionunit="CENTIMETER", metadata=None,
                     description=json.dumps({"quantity": "labels", "spacing_mm": [dy, dx]}))
    return path


def read_label_stack(path: Any) -> np.ndarray:
    """A 2-D label image ``(H, W)`` or label stack ``(N, H, W)`` from TIFF, NIfTI or ``.npy``.

    NIfTI data ``(I, J[, 1], N)`` are turned into rows = ``j`` like the sequence reader. Float
    files must hold whole numbers; the result is an integer array.

    Raises
    ------
    FileNotFoundError, ValueError
        With the file name and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label file; check the path.")
    ext = split_name(path)[1]
    if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        import tifffile

        data = np.squeeze(tifffile.imread(path))
    elif ext in _NIFTI:
        import nibabel

        data = np.squeeze(np.asanyarray(nibabel.load(str(path)).dataobj))
        if data.ndim == 2:
            data = data.T  # (i, j) -> (rows = j, columns = i)
        elif data.ndim == 3:
            data = np.transpose(data, (2, 1, 0))  # (i, j, t) -> (t, j, i)
    elif ext == ".npy":
        data = np.squeeze(np.load(path, allow_pickle=False))
    else:
        raise ValueError(f"{path}: unsupported label file type {ext or '(none)'!r}; use a TIFF, NIfTI or .npy file.")
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: labels are one 2-D image (H, W) or a stack (N, H, W); got shape {data.shape}.")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError(f"{path}: labels must be whole numbers (0 = background).")
        data = data.astype(np.int64)
    elif data.dtype.kind not in "iub":
        raise ValueError(f"{path}: labels must be integers; got {data.dtype}.")
    return np.asarray(data)


#: ImageJ axes of a map TIFF: one map, one per frame (Fiji's T: a hyperstack of frames), several maps (C).
MAP_AXES = ("YX", "TYX", "CYX")


def save_map_tiff(path: Any, array: Any, spacing_mm: Any, info: dict[str, Any] | None = None,
                  axes: str | None = None) -> Path:
    """Write float32 map(s) ``(H, W)`` or ``(K, H, W)`` with the pixel size and a JSON description.

    Parameters
    ----------
    path : str or Path
        Target TIFF; written in place (callers make it atomic).
    array : array (H, W) or (K, H, W)
    spacing_mm : (dy, dx)
    info : dict, optional
        E.g. ``{"quantity": "T1", "unit": "ms"}``; stored as JSON together with ``spacing_mm``
        and read back by :func:`read_map_tiff`.
    axes : {"YX", "TYX", "CYX"}, optional
        Write an ImageJ TIFF that Fiji opens with these axes (``TYX``: one map per frame, such
        as the Jacobian determinant, a hyperstack of frames rather than a Z-stack; ``CYX``:
        several maps of one slice), unit ``mm`` and the pixel size in the resolution tags; the
        JSON is then the ImageJ property ``any2reg_map`` (Fiji: Image > Show Info). Default: a
        plain TIFF whose ImageDescription is the JSON, resolution in pixels per cm.
    """
    import tifffile

    dy, dx = (float(s) for s in spacing_mm)
    data = np.ascontiguousarray(array, dtype=np.float32)
    description = json.dumps({**dict(info or {}), "spacing_mm": [dy, dx]}, allow_nan=False, default=float)
    if axes is None:
        tifffile.imwrite(
            Path(path),
            data,
            photometric="minisblack",
            resolution=(10.0 / dx, 10.0 / dy),  # pixels per cm
            resolutionunit="CENTIMETER",
            description=description,
            metadata=None,
        )
        return Path(path)
    if axes not in MAP_AXES or len(axes) != data.ndim:
        raise ValueError(f"{path}: map axes are one of {', '.join(MAP_AXES)} matching the array; got {axes!r} "
                         f"for shape {data.shape}.")
    tifffile.imwrite(
        Path(path),
        data,
        imagej=True,
        photometric="minisblack",
        resolution=(1.0 / dx, 1.0 / dy),  # pixels per mm (unit=mm)
        metadata={"axes": axes, "unit": "mm", "any2reg_map": description, "Info": description},
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
        if tif.is_imagej:  # ImageJ maps keep the JSON in their any2reg_map property
            description = str((tif.imagej_metadata or {}).get("any2reg_map", description))
    try:
        info = json.loads(description)
        if not isinstance(info, dict):
            info = {}
    except ValueError:
        info = {}
    return np.asarray(array, dtype=np.float32), info
