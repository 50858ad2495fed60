"""NIfTI (``.nii``, ``.nii.gz``) reading and writing.

Orientation
-----------
NIfTI stores voxel ``data[i, j, ...]`` with ``i`` the first (fastest, "x") index and ``j``
the second ("y") index. As in ITK/SimpleITK, dcm2niix and the NIfTI viewers (ITK-SNAP,
3D Slicer, FSLeyes), ``i`` is the horizontal image axis (DICOM columns) and ``j`` the
vertical one (DICOM rows). The readers therefore return::

    frames[t, r, c] = data[c, r, t]        # frames = np.transpose(data, (2, 1, 0))

i.e. rows = NIfTI ``j``, columns = NIfTI ``i``, frames = the one non-singleton axis after
``j`` (``(I, J, N)``, ``(I, J, 1, N)``, ``(I, J, N, 1)`` ... all work). A file with slices
*and* frames, ``(I, J, Z, N)`` with ``Z > 1``, is read slice by slice (:func:`read_nifti_slices`).

Geometry and the one flip
-------------------------
When the header declares a real space (``sform_code`` or ``qform_code`` > 0) the affine
becomes the sequence's :class:`~napari_any2reg.core.geometry.SliceGeometry`. DICOM pixel
axes (column, row, slice normal) are right-handed; converters such as dcm2niix reverse the
row axis, which makes the affine's determinant negative. Such a file is read with its rows
reversed (``frames[t, r, c] = data[c, J-1-r, t]``) so the same scan read from DICOM and from
NIfTI gives the same frames, and the geometry still places every pixel where the affine
says. No other reorientation is applied (an oblique short-axis slice is never rotated), and
files with a positive determinant or no declared space read without flips, exactly as
before. :func:`write_nifti` writes ``(I, J, 1, N)`` (slice axis 1, frames on the 4th, time
axis, unit ms) with the geometry's affine (positive determinant, ``sform``/``qform`` code 1),
so an export overlays its source in ITK-SNAP, 3D Slicer and FSLeyes: world coordinates of a
pixel equal the source's. Without geometry the source file's affine is written back when the
grid is unchanged, else ``diag(dx, dy, 1)``. Spacing is ``(dy, dx) = (pixdim[2], pixdim[1])``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.geometry import LPS_TO_RAS, SliceGeometry
from ..core.sequence import Sequence
from ._atomic import atomic_write_all
from ._common import (
    pick_slice,
    SequenceReadError,
    _Parts,
    build_sequence,
    check_decoded_size,
    check_file,
    frames_from_axes,
    jsonable_metadata,
    sequence_header,
    split_name,
)

__all__ = ["read_nifti", "read_nifti_slices", "write_nifti", "sidecar_path", "ORIENTATION"]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")

#: The transform between NIfTI voxel order and ``(N, H, W)`` frames (documentation string).
ORIENTATION = ("frames[t, r, c] = data[c, r, 0, t]: rows = NIfTI j (axis 1), columns = NIfTI i (axis 0), "
               "frames on axis 3; rows reversed on reading only when the affine's determinant is negative")

_SPACE_UNIT_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}


def sidecar_path(path: Any) -> Path:
    """The JSON sidecar of a NIfTI file: ``scan.nii.gz`` -> ``scan.json`` (BIDS style)."""
    path = Path(path)
    return path.with_name(split_name(path)[0] + ".json")


def _exact_float(value: float) -> float:
    """NIfTI stores pixdim as float32: recover the decimal that was most likely meant."""
    return float(str(np.float32(value)))


def read_nifti_slices(path: Any) -> list[Sequence]:
    """Read every slice of a NIfTI file: one :class:`Sequence` per ``k`` of an ``(I, J, Z, N)`` file."""
    return [build_sequence(parts) for parts in _nifti_parts_list(path)]


def read_nifti(path: Any) -> Sequence:
    """Read a NIfTI file as a :class:`Sequence`.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file holding ``(I, J, N)`` (or ``(I, J, 1, N)``, ...) data.

    Returns
    -------
    Sequence
        ``frames = np.transpose(data, (2, 1, 0))`` (see module notes: rows = NIfTI ``j``,
        columns = ``i``, no flips), spacing ``(pixdim[2], pixdim[1])`` in mm. Timings,
        kind and name come from the JSON sidecar ``<stem>.json`` when present; otherwise
        the kind is guessed from the file name (``stone``, ``cine``, ``molli``, ...).

    Raises
    ------
    SequenceReadError
        If the file is missing, not NIfTI, truncated, 2-D, RGB, has several non-singleton
        axes beyond ``j``, or the sidecar timings do not match the number of frames.
    """
    return build_sequence(_nifti_parts(path))


def _nifti_parts(path: Any) -> _Parts:
    return pick_slice(_nifti_parts_list(path), None)


def _nifti_parts_list(path: Any) -> list[_Parts]:
    path = check_file(path)
    import nibabel

    try:
        image = nibabel.load(str(path), mmap=False)  # no open file handle left behind
        header = image.header
        # before decoding: a small .nii.gz can claim gigabytes
        check_decoded_size(path, image.shape, header.get_data_dtype())
        data = np.asanyarray(image.dataobj)
        zooms = tuple(float(z) for z in header.get_zooms())
        space_unit = header.get_xyzt_units()[0]
        affine = np.asarray(image.affine, dtype=np.float64)
        shape = tuple(int(s) for s in image.shape)
        descrip = np.asarray(header.get("descrip", b"")).item()
        declared = int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
    except SequenceReadError:
        raise
    except Exception as exc:  # nibabel/gzip/zlib raise many types for bad files
        raise SequenceReadError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc}); "
            "is it corrupt or truncated? Re-export or re-download it."
        ) from exc

    if data.dtype.fields is not None:
        raise SequenceReadError(
            f"{path}: RGB/structured NIfTI data; registration needs grayscale magnitude frames."
        )
    if data.ndim < 2:
        raise SequenceReadError(f"{path}: {data.ndim}-D data {data.shape}; need a time series (N, H, W).")
    geometry, flip = None, False
    if declared:
        try:
            geometry, _ = SliceGeometry.from_nifti_affine(affine)
            # DICOM's (column, row, normal) is right-handed; a negative determinant means the
            # row axis was reversed by the converter (dcm2niix): undo it
            flip = float(np.linalg.det(LPS_TO_RAS @ affine[:3, :3])) < 0
        except ValueError:
            geometry = None
    slice_count = int(data.shape[2]) if data.ndim >= 4 else 1
    if slice_count > 1 and any(s > 1 for s in data.shape[3:]):
        slabs = [(k, data[:, :, k]) for k in range(slice_count)]
    else:
        slabs = [(0, data)]
    out = []
    for k, slab in slabs:
        axes = "XY" + "ZTUVW"[: slab.ndim - 2]
        frames, _ = frames_from_axes(slab, axes, path)  # (N, J, I): rows = j, columns = i
        slice_geometry = None
        if geometry is not None:
            slice_geometry, _ = SliceGeometry.from_nifti_affine(affine @ _shift_k(k))
        if flip:
            frames = frames[:, ::-1, :]
        parts = _finish_parts(path, frames, header, zooms, space_unit, shape, affine, descrip)
        if slice_geometry is not None:
            if flip:
                slice_geometry = slice_geometry.with_rows_flipped(frames.shape[1], parts.spacing or (1.0, 1.0))
            parts.geometry, parts.geometry_source = slice_geometry, "NIfTI affine"
            parts.metadata["nifti_rows_reversed"] = bool(flip)
        if len(slabs) > 1:
            parts.metadata.update({"slice_index": k, "n_slices": slice_count,
                                   "slice_position_mm": round(slice_geometry.slice_position_mm, 4)
                                   if slice_geometry is not None else float(k)})
            parts.name = f"{split_name(path)[0]} slice {k}"
        out.append(parts)
    return out


def _shift_k(k: int) -> np.ndarray:
    shift = np.eye(4)
    shift[2, 3] = float(k)
    return shift


def _finish_parts(path: Path, frames: np.ndarray, header: Any, zooms: tuple, space_unit: Any,
                  shape: tuple, affine: np.ndarray, descrip: Any) -> _Parts:
    parts = _Parts(path=path, frames=frames, format="nifti")

    scale = _SPACE_UNIT_MM.get(space_unit, 1.0)
    pixdim = _raw_pixdim(path, header)
    if len(zooms) >= 2 and all(np.isfinite(pixdim)) and min(pixdim) > 0:
        parts.spacing = (_exact_float(zooms[1]) * scale, _exact_float(zooms[0]) * scale)
        parts.spacing_source = "NIfTI pixdim"
    else:
        parts.spacing_problem = f"NIfTI pixdim[1:3] = {pixdim} is not a positive pixel size"
    parts.metadata.update(
        {
            "nifti_shape": list(shape),
            "nifti_pixdim": [float(v) for v in header["pixdim"]],
            "nifti_affine": affine.tolist(),
            "nifti_orientation": ORIENTATION,
        }
    )
    interval = _frame_interval_ms(header, shape)
    if interval is not None:
        parts.metadata["frame_interval_ms"] = interval
    if isinstance(descrip, bytes):
        descrip = descrip.split(b"\0")[0].decode("ascii", "replace").strip()
    if descrip:
        parts.metadata["nifti_descrip"] = descrip
    return parts


#: NIfTI time units (xyzt_units) in ms; "unknown" gives no interval.
_TIME_UNIT_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}


def _frame_interval_ms(header: Any, shape: tuple) -> float | None:
    """pixdim[4] of a 4-D file in ms, by its time unit (dcm2niix writes seconds: 1.0 s = 1000 ms)."""
    try:
        unit = header.get_xyzt_units()[1]
        step = float(header["pixdim"][4])
    except Exception:
        return None
    factor = _TIME_UNIT_MS.get(unit)
    if factor is None or len(shape) < 4 or shape[3] < 2 or not np.isfinite(step) or step <= 0:
        return None
    return step * factor


def _raw_pixdim(path: Path, header: Any) -> list[float]:
    """``pixdim[1:3]`` as stored in the file.

    nibabel's loader silently "fixes" zero or negative pixdim (to 1 or the absolute value), so
    the loaded header cannot tell a real 1 mm from a substituted one; the raw header can.
    """
    import nibabel
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as handle:
            raw = type(header).from_fileobj(handle, check=False)
        return [float(v) for v in raw["pixdim"][1:3]]
    except Exception:  # unreadable raw header: fall back to what nibabel loaded
        return [float(v) for v in header["pixdim"][1:3]]


def _affine_for(sequence: Sequence) -> np.ndarray:
    """The affine to write: the geometry's; else the source file's when the grid matches, else diag(dx, dy, 1)."""
    dy, dx = sequence.spacing_mm
    if sequence.geometry is not None:
        return sequence.geometry.nifti_affine(sequence.spacing_mm)
    h, w = sequence.shape
    meta = sequence.metadata
    try:
        affine = np.asarray(meta.get("nifti_affine"), dtype=np.float64)
        shape = list(meta.get("nifti_shape"))[:2]
        if affine.shape == (4, 4) and np.all(np.isfinite(affine)) and shape == [w, h]:
            norms = np.linalg.norm(affine[:3, :2], axis=0)
            if np.allclose(norms, [dx, dy], rtol=1e-5):
                return affine
    except (TypeError, ValueError):
        pass
    return np.diag([dx, dy, 1.0, 1.0])


def _frame_step_ms(timings: Any, interval_ms: Any = None) -> float:
    """pixdim[4] (ms): the median step between timings when known (frames are not evenly timed
    in MOLLI), else the source file's frame interval converted to ms, else 1."""
    fallback = 1.0
    try:
        if interval_ms is not None and np.isfinite(float(interval_ms)) and float(interval_ms) > 0:
            fallback = float(interval_ms)
    except (TypeError, ValueError):
        pass
    if timings is None:
        return fallback
    values = np.asarray(timings, dtype=np.float64)
    steps = np.diff(values[np.isfinite(values)])
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else fallback


def write_nifti(path: Any, sequence: Sequence, *, overwrite: bool = False) -> Path:
    """Write a sequence as NIfTI plus a JSON sidecar; :func:`read_nifti` reads it back exactly.

    Parameters
    ----------
    path : str or Path
        Target ``.nii`` or ``.nii.gz``. The sidecar ``<stem>.json`` is written beside it.
    sequence : Sequence
        The sequence; its frames are not modified.
    overwrite : bool, optional
        Replace existing files. Default: raise :class:`FileExistsError` if the image or
        the sidecar exists.

    Returns
    -------
    Path
        The NIfTI file.

    Notes
    -----
    Data are written float32 with shape ``(W, H, 1, N)``: ``data[:, :, 0] = np.transpose(frames,
    (2, 1, 0))`` (the inverse of the reader), pixdim ``(dx, dy, thickness, step)``, units mm and
    ms, affine from the sequence's geometry (see the module notes). The sidecar
    holds kind, name, ``timings_ms`` (``inf`` as ``"inf"``), ``spacing_mm`` and the
    JSON-serialisable metadata. Both files are written atomically (:func:`atomic_write_all`).
    """
    if not isinstance(sequence, Sequence):
        raise TypeError(f"write_nifti needs a Sequence; got {type(sequence).__name__}.")
    path = Path(path)
    if split_name(path)[1] not in NIFTI_EXTENSIONS:
        raise ValueError(f"{path}: write_nifti writes .nii or .nii.gz files.")
    import nibabel

    # (I, J, 1, N): k is the slice axis, frames go on the 4th (time) axis
    data = np.transpose(np.asarray(sequence.frames, dtype=np.float32), (2, 1, 0))[:, :, None, :]
    affine = _affine_for(sequence)
    image = nibabel.Nifti1Image(data, affine)
    code = 1 if sequence.geometry is not None else 0  # 1 = scanner anatomical space
    image.set_sform(affine, code=code if code else 2)
    image.set_qform(affine, code=code)
    step = _frame_step_ms(sequence.timings_ms, sequence.metadata.get("frame_interval_ms"))
    known = step != 1.0 or sequence.timings_ms is not None or sequence.metadata.get("frame_interval_ms") is not None
    # no timing known: the time unit says so, rather than claiming frames 1 ms apart
    image.header.set_xyzt_units("mm", "msec" if known else "unknown")
    image.header["pixdim"][4] = step
    image.header["descrip"] = f"napari-any2reg {sequence.kind}".encode("ascii")[:79]
    own_metadata = {k: v for k, v in jsonable_metadata(sequence.metadata).items() if not k.startswith("nifti_")}
    sidecar = {**sequence_header(sequence, own_metadata), "orientation": ORIENTATION}
    text = json.dumps(sidecar, indent=2, allow_nan=False) + "\n"
    written = atomic_write_all(
        [
            (path, lambda temp: nibabel.save(image, str(temp))),
            (sidecar_path(path), lambda temp: temp.write_text(text, encoding="utf-8")),
        ],
        overwrite=overwrite,
    )
    return written[0]
