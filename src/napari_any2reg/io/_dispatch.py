"""Format dispatch: :func:`read_sequence`, :func:`read_slices` and :func:`supported_path`.

Every sequence reader is declared once, in :data:`READERS`: its name, file name patterns,
the function that parses it, a description and whether it reads folders. The table drives
the dispatch here, the error message for unsupported files, the ``any2reg`` help text for
inputs (:func:`input_help`), and is checked against the reader ``filename_patterns`` of
``napari.yaml`` by the tests. Adding a format is one :class:`ReaderFormat` entry.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any, Callable

from ..core.sequence import Sequence
from ._common import (
    pick_slice,
    SequenceFileNotFoundError,
    SequenceReadError,
    build_sequence,
    split_name,
)
from ._common.errors import special_file_kind
from .dicom import NOT_DICOM, _dicom_parts_list, has_dicom_content, looks_like_dicom
from .nifti import NIFTI_EXTENSIONS, _nifti_parts_list
from .tiff import TIFF_EXTENSIONS, _tiff_parts_list

__all__ = [
    "ReaderFormat",
    "READERS",
    "reader_patterns",
    "reader_for",
    "supported_description",
    "input_help",
    "read_sequence",
    "read_slices",
    "supported_path",
    "refusal_reason",
]

_FOLDER_PROBE = 32  # files looked at by supported_path on a folder


@dataclasses.dataclass(frozen=True)
class ReaderFormat:
    """One input format: how files are recognised and which function parses them.

    Attributes
    ----------
    name : str
        Shown in messages and help (``"NIfTI"``).
    extensions : tuple of str
        Lower-case endings with the dot (``".nii.gz"``); matched case-insensitively.
    patterns : tuple of str
        The napari reader ``filename_patterns`` for this format (napari matches them with
        case-sensitive globs, hence ``*.DCM`` beside ``*.dcm``). Never ``"*"``: napari would
        offer this plugin, preselected, for every PNG or CSV; files without an extension are
        reached through their folder (``accepts_folders``).
    parts : callable
        ``parts(path)`` -> list of ``_Parts``, one per slice (the format's parser).
    description : str
        What to give, for messages and the CLI help.
    accepts_folders : bool
        A folder (or a list of files) is read by this format.
    sniff : callable, optional
        ``sniff(path) -> bool`` recognises files without a known extension from their content.
    """

    name: str
    extensions: tuple[str, ...]
    patterns: tuple[str, ...]
    parts: Callable[[Any], list]
    description: str
    accepts_folders: bool = False
    sniff: Callable[[Path], bool] | None = None


_DICOM_EXTENSIONS = (".dcm", ".ima")

#: The sequence readers, in the order they are tried.
READERS: tuple[ReaderFormat, ...] = (
    ReaderFormat(
        "TIFF", TIFF_EXTENSIONS, tuple("*" + e for e in TIFF_EXTENSIONS), _tiff_parts_list,
        "TIFF (.tif, .tiff), OME-TIFF (.ome.tif, .ome.tiff) or an ImageJ hyperstack",
    ),
    ReaderFormat(
        "NIfTI", NIFTI_EXTENSIONS, tuple("*" + e for e in NIFTI_EXTENSIONS), _nifti_parts_list,
        "NIfTI (.nii, .nii.gz), with an optional JSON sidecar",
    ),
    ReaderFormat(
        "DICOM", _DICOM_EXTENSIONS,
        # extension-less DICOM files (IM_0001, 00000001) are opened through their folder
        ("*.dcm", "*.DCM", "*.ima", "*.IMA"),
        _dicom_parts_list,
        "DICOM (.dcm, .ima, extension-less files, or a folder or list of files holding one series)",
        accepts_folders=True, sniff=looks_like_dicom,
    ),
)


def reader_patterns() -> set[str]:
    """Every file name pattern of :data:`READERS` (what napari.yaml's reader must declare)."""
    return {pattern for reader in READERS for pattern in reader.patterns}


def supported_description() -> str:
    """The formats for error messages: ``"TIFF (...); NIfTI (...); DICOM (...)"``."""
    return "; ".join(reader.description for reader in READERS)


def input_help() -> str:
    """Short CLI help for a sequence input, from the table (``"TIFF/OME-TIFF, NIfTI or DICOM ..."``)."""
    files = ", ".join(f"{r.name} ({' '.join(r.extensions)})" for r in READERS)
    folders = " or ".join(f"a {r.name} series folder" for r in READERS if r.accepts_folders)
    return f"{files} file, or {folders}"


def reader_for(path: Any) -> ReaderFormat | None:
    """The reader for ``path`` (a file, a folder or a list of files), or ``None``.

    Judged from the name first, then from the content (``sniff``) for unknown extensions;
    folders and lists go to the format that reads folders. Nothing is parsed.
    """
    if isinstance(path, (list, tuple)) or Path(path).is_dir():
        return next((r for r in READERS if r.accepts_folders), None)
    ext = split_name(path)[1]
    for reader in READERS:
        if ext in reader.extensions:
            return reader
    for reader in READERS:
        if reader.sniff is not None and reader.sniff(Path(path)):
            return reader
    return None


def check_regular_file(path: Path) -> None:
    """Refuse at once what no reader can read: a FIFO, socket or device (reading one blocks
    forever) and an empty file (a zero-byte ``.dcm`` must not send the reader to its folder)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SequenceFileNotFoundError(f"{path}: no such file or folder; check the path.") from None
    except OSError as exc:
        raise SequenceReadError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions.") from None
    if stat.S_ISDIR(info.st_mode):
        return
    what = special_file_kind(path)
    if what is not None:
        raise SequenceReadError(f"{path} is {what}, not an image file; give an image file or a folder of DICOM files.")
    if info.st_size == 0:
        raise SequenceReadError(f"{path} is empty (0 bytes): not an image file; copy it again or give another file.")


def _parts_list(path: Any):
    """One ``_Parts`` per slice of whatever ``path`` holds."""
    if not isinstance(path, (list, tuple)):
        path = Path(path)
        if not path.exists():
            raise SequenceFileNotFoundError(f"{path}: no such file or folder; check the path.")
        if not path.is_dir():
            check_regular_file(path)
    else:
        for entry in path:
            check_regular_file(Path(entry))
    reader = reader_for(path)
    if reader is None:
        raise SequenceReadError(_unsupported(path))
    return reader.parts(list(path) if isinstance(path, (list, tuple)) else path)


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


def _folder_holds(folder: Path, sniff: Callable[[Path], bool]) -> bool:
    """Whether one of the first files of ``folder`` is recognised by ``sniff`` (a folder reader's)."""
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
                if sniff(Path(entry.path)):
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
        folder_readers = [r for r in READERS if r.accepts_folders and r.sniff is not None]
        return bool(path) and all(
            isinstance(p, (str, os.PathLike)) and Path(p).is_file() and any(r.sniff(Path(p)) for r in folder_readers)
            for p in path
        )
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    _, ext = split_name(path)
    if any(ext in reader.extensions for reader in READERS):
        return True
    if path.is_dir():
        return any(_folder_holds(path, r.sniff) for r in READERS if r.accepts_folders and r.sniff is not None)
    if ext == "" and path.is_file():
        return any(r.sniff(path) for r in READERS if r.sniff is not None)
    return False


def _unsupported(path: Any) -> str:
    ext = split_name(path)[1]
    return (f"{path}: unsupported file type {ext or '(no extension)'!r}; supported: "
            f"{supported_description()}. Convert the file to one of these.")


def refusal_reason(path: Any) -> str | None:
    """Why :func:`read_sequence` certainly cannot read ``path``, in one line; ``None`` when it can try.

    The cheap checks of :func:`supported_path` (no pixel data is read), with the reason kept:
    napari's reader hook shows it instead of napari's bare "refused the file" (issue 24 item
    13). Problems only a full read finds (a 2-D TIFF, a truncated NIfTI) come from the reader.

    Parameters
    ----------
    path : str, Path or list of paths
        A file, a folder (one DICOM series) or a list of files (the images of one DICOM series).

    Returns
    -------
    str or None
        The message names the path, the problem and what to open instead.
    """
    if isinstance(path, (list, tuple)):
        if not path:
            return "no file given: open a file, a DICOM series folder or the files of one DICOM series."
        for entry in path:
            if not isinstance(entry, (str, os.PathLike)):
                return f"{entry!r} is not a file path; open a file or a DICOM series folder."
            try:
                check_regular_file(Path(entry))
            except SequenceReadError as exc:
                return str(exc)
            if Path(entry).is_dir():
                return (f"{entry} is a folder: several paths are read as the files of one DICOM series; "
                        "open the folder on its own.")
            if not has_dicom_content(Path(entry)):
                what = NOT_DICOM.split(";")[0]
                return (f"{entry}: {what}; several files are read as the images of one DICOM series "
                        "(open a TIFF or NIfTI file on its own).")
        return None
    if not isinstance(path, (str, os.PathLike)):
        return f"{path!r} is not a file path; open a file or a DICOM series folder."
    path = Path(path)
    try:
        check_regular_file(path)  # missing, FIFO / socket / device, empty
    except SequenceReadError as exc:
        return str(exc)
    folder_readers = [r for r in READERS if r.accepts_folders and r.sniff is not None]
    if path.is_dir():
        if any(_folder_holds(path, r.sniff) for r in folder_readers):
            return None
        with os.scandir(path) as entries:
            if next(entries, None) is None:
                return f"{path} is an empty folder; choose the folder that holds the images of one DICOM series."
        names = " or ".join(r.name for r in folder_readers)
        return (f"{path}: no {names} file among its first {_FOLDER_PROBE} files; a folder is read as one "
                f"{names} series. Choose the folder that holds the images, or open a TIFF or NIfTI file itself.")
    reader = reader_for(path)
    if reader is None:
        return _unsupported(path)
    if reader.name == "DICOM" and not has_dicom_content(path):
        return f"{path}: {NOT_DICOM}."
    return None

