"""Per-frame ITK fields: one 2-D vector NIfTI per frame in the slice's axes, or one 3-D
MetaImage per frame in scanner geometry (:func:`save_displacement_itk`), the MetaImage writer
and reader, and the reading of such a set of files back to one field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .._common import split_name
from .convention import _METAIMAGE, _NIFTI, _check_field, plane_components, world_vectors


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
    from ...core.geometry import SliceGeometry

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
