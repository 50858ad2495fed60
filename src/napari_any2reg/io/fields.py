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
    if ext in _NIFTI and (_ITK_FRAME.search(stem) or not path.is_file()) and _itk_siblings(path):
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


def elastix_transform_text(field_file: str, shape: Any, spacing_mm: Any = (1.0, 1.0)) -> str:
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
    ``(dx, dy)``, origin ``(0, 0)``, identity direction. Entries follow elastix's parameter
    file syntax: one ``(Name value ...)`` per line, strings in double quotes.
    """
    height, width = (int(v) for v in shape)
    dy, dx = (float(s) for s in spacing_mm)
    entries = [
        ("Transform", '"DeformationFieldTransform"'),
        ("DeformationFieldFileName", json.dumps(str(field_file))),
        ("DeformationFieldInterpolationOrder", "1"),
        ("NumberOfParameters", "0"),
        ("InitialTransformParametersFileName", '"NoInitialTransform"'),
        ("HowToCombineTransforms", '"Compose"'),
        ("FixedImageDimension", "2"),
        ("MovingImageDimension", "2"),
        ("FixedInternalImagePixelType", '"float"'),
        ("MovingInternalImagePixelType", '"float"'),
        ("Size", f"{width} {height}"),
        ("Index", "0 0"),
        ("Spacing", f"{dx:.10g} {dy:.10g}"),
        ("Origin", "0 0"),
        ("Direction", "1 0 0 1"),
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


def save_elastix_transform(field_path: Any, shape: Any, spacing_mm: Any = (1.0, 1.0), path: Any = None) -> Path:
    """Write the elastix parameter file of one ITK field frame (default ``<field stem>.txt`` beside it).

    Written in place (callers make it atomic). See :func:`elastix_transform_text`.
    """
    field_path = Path(field_path)
    target = Path(path) if path is not None else field_path.with_name(split_name(field_path)[0] + ".txt")
    # relative to the parameter file: a moved or copied folder keeps working (transformix run
    # in that folder opens it); an absolute path would name the old place
    name = os.path.relpath(field_path.resolve(), target.resolve().parent)
    target.write_text(elastix_transform_text(Path(name).as_posix(), shape, spacing_mm), encoding="utf-8")
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
