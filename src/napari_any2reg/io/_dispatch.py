"""Format dispatch: :func:`read_sequence`, :func:`read_slices` and :func:`supported_path`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.sequence import Sequence
from ._common import (
    pick_slice,
    SUPPORTED_DESCRIPTION,
    SequenceFileNotFoundError,
    SequenceReadError,
    build_sequence,
    split_name,
)
from .dicom import _dicom_parts_list, looks_like_dicom
from .nifti import NIFTI_EXTENSIONS, _nifti_parts_list
from .tiff import TIFF_EXTENSIONS, _tiff_parts_list

__all__ = ["read_sequence", "read_slices", "supported_path"]

_DICOM_EXTENSIONS = (".dcm", ".ima")
_FOLDER_PROBE = 32  # files looked at by supported_path on a folder


def _parts_list(path: Any):
    """One ``_Parts`` per slice of whatever ``path`` holds."""
    if isinstance(path, (list, tuple)):
        return _dicom_parts_list(list(path))
    path = Path(path)
    if not path.exists():
        raise SequenceFileNotFoundError(f"{path}: no such file or folder; check the path.")
    if path.is_dir():
        return _dicom_parts_list(path)
    _, ext = split_name(path)
    if ext in TIFF_EXTENSIONS:
        return _tiff_parts_list(path)
    if ext in NIFTI_EXTENSIONS:
        return _nifti_parts_list(path)
    if ext in _DICOM_EXTENSIONS or looks_like_dicom(path):
        return _dicom_parts_list(path)
    raise SequenceReadError(
        f"{path}: unsupported file type {ext or '(no extension)'!r}; supported: "
        f"{SUPPORTED_DESCRIPTION}. Convert the file to one of these."
    )


def read_slices(
    path: Any,
    *,
    kind: str | None = None,
    timings_ms: Any = None,
    spacing_mm: Any = None,
    nonfinite: str = "error",
) -> list[Sequence]:
    """Read every slice of a file or folder: one :class:`Sequence` per slice position.

    A multi-slice DICOM series (several ImagePositionPatient values, e.g. a Philips MOLLI
    export of 3-4 slices x 11 frames in one folder, or an enhanced multi-frame file), a NIfTI
    ``(I, J, Z, N)`` file or an OME/ImageJ TIFF with ``Z > 1`` and ``T > 1`` gives one sequence
    per slice, sorted along the slice normal, with ``metadata["slice_index"]``,
    ``["n_slices"]`` and ``["slice_position_mm"]``; single-slice data give a list of one. The
    overrides apply to every slice (see :func:`read_sequence`).
    """
    return [
        build_sequence(parts, kind=kind, timings_ms=timings_ms, spacing_mm=spacing_mm, nonfinite=nonfinite)
        for parts in _parts_list(path)
    ]


def read_sequence(
    path: Any,
    *,
    kind: str | None = None,
    timings_ms: Any = None,
    spacing_mm: Any = None,
    nonfinite: str = "error",
    slice_index: int | None = None,
) -> Sequence:
    """Read a quantitative cardiac sequence from any supported file or folder.

    Parameters
    ----------
    path : str, Path or list of paths
        ``.tif`` / ``.tiff`` / ``.ome.tif`` (:func:`read_tiff`), ``.nii`` / ``.nii.gz``
        (:func:`read_nifti`), a folder of DICOM files, a ``.dcm`` file or a list of DICOM
        files (:func:`read_dicom_series`). Extension-less DICOM files are recognised by
        their ``DICM`` marker.
    kind : str, optional
        Sequence kind; overrides what the file, its sidecar or its name say.
    timings_ms : array_like, optional
        One time (ms) per frame; overrides the file's timings (``inf`` allowed).
    spacing_mm : float or (float, float), optional
        Pixel spacing ``(dy, dx)``; overrides the file's.
    nonfinite : {"error", "mask"}, optional
        What to do with NaN/Inf pixel values: refuse the file (default: registration needs
        finite frames), or set them to 0 and record the pixels in ``metadata["nonfinite_mask"]``
        (``(H, W)`` bool) for uses that skip them, such as T1 fitting.
    slice_index : int, optional
        Which slice of multi-slice data (0-based, along the slice normal; see
        :func:`read_slices`). Required when the data hold several slices.

    Returns
    -------
    Sequence

    Raises
    ------
    SequenceReadError
        With a message naming the file, the problem and the fix (missing path: also a
        :class:`FileNotFoundError`).

    Warns
    -----
    SequenceReadWarning
        When a value in the file was invalid and replaced by a default (a pixel size of zero
        or below: 1 mm is used); the text is also in ``metadata["read_warnings"]``.

    Examples
    --------
    >>> seq = read_sequence("molli.tif")                                   # doctest: +SKIP
    >>> seq = read_sequence("cine.nii.gz", kind="cine")                    # doctest: +SKIP
    >>> seq = read_sequence("MOLLI_dicom/", timings_ms=[100, 180, 260])    # doctest: +SKIP
    """
    return build_sequence(
        pick_slice(_parts_list(path), slice_index),
        kind=kind, timings_ms=timings_ms, spacing_mm=spacing_mm, nonfinite=nonfinite,
    )


def _folder_has_dicom(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            checked = 0
            for entry in entries:
                if checked >= _FOLDER_PROBE:
                    return False
                if entry.name.startswith(".") or entry.name.upper() == "DICOMDIR":
                    continue
                if not entry.is_file():
                    continue
                checked += 1
                if looks_like_dicom(Path(entry.path)):
                    return True
    except OSError:
        return False
    return False


def supported_path(path: Any) -> bool:
    """Cheap check whether :func:`read_sequence` can try ``path`` (for napari's reader hook).

    Parameters
    ----------
    path : str, Path or list of paths
        A file (judged by its extension, or the DICOM marker for extension-less files), a
        folder (true when one of its first files is DICOM), or a list (true when every
        entry is a DICOM file).

    Returns
    -------
    bool
        No file is fully read; a ``True`` answer does not guarantee the read succeeds.
    """
    if isinstance(path, (list, tuple)):
        return bool(path) and all(
            isinstance(p, (str, os.PathLike)) and Path(p).is_file() and looks_like_dicom(Path(p))
            for p in path
        )
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    _, ext = split_name(path)
    if ext in TIFF_EXTENSIONS or ext in NIFTI_EXTENSIONS or ext in _DICOM_EXTENSIONS:
        return True
    if path.is_dir():
        return _folder_has_dicom(path)
    if ext == "" and path.is_file():
        return looks_like_dicom(path)
    return False
