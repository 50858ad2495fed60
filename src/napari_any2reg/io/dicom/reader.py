"""The DICOM readers: :func:`read_dicom_series` (one slice) and :func:`read_dicom_slices` (every
slice), which scan the files, choose the series, order each slice's frames, leave the
scanner's derived maps out of the sequence (attached as metadata) and build the sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...core.geometry import SliceGeometry
from ...core.sequence import Sequence
from .._common import SequenceReadError, _Parts, build_sequence, check_decoded_size, guess_kind, pick_slice
from .frames import _MAPPING_KINDS, _check_sizes, _Frame, _frames_of, _order, _pixels, _slices
from .scan import NOT_DICOM, _candidate_files, _choose_series, _float_or_none, _plain, _read_header, _scan


#: Acquisition fields copied to metadata (nothing that identifies the patient).
SAFE_FIELDS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "SeriesDescription", "ProtocolName", "SequenceName", "SeriesNumber", "ImageType",
    "ScanningSequence", "SequenceVariant", "MRAcquisitionType", "BodyPartExamined",
    "PatientPosition", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
    "SliceLocation", "RepetitionTime", "EchoTime", "FlipAngle", "PixelSpacing",
)


# ---------------------------------------------------------------------------- reader
def read_dicom_series(path: Any, *, slice_index: int | None = None) -> Sequence:
    """Read one slice of a DICOM series (folder, list of files, or one file of the series).

    Parameters
    ----------
    path : str, Path or list of paths
        A folder of DICOM images (classic single-frame or enhanced multi-frame), an explicit
        list of files, or one file (then the files of its series in the same folder are read).
    slice_index : int, optional
        Which slice of a multi-slice series (0-based, along the slice normal). Required when
        the series holds several slice positions; :func:`read_dicom_slices` reads them all.

    Returns
    -------
    Sequence
        Frames sorted by inversion time, else trigger time, else InstanceNumber (see the
        module notes), rescaled pixel values, spacing from PixelSpacing, geometry from
        ImageOrientationPatient / ImagePositionPatient, kind guessed from SeriesDescription /
        ProtocolName / SequenceName.

    Raises
    ------
    SequenceReadError
        If no DICOM image is found, several equally large series are present, the frames
        differ in size, their order is ambiguous, the series has several slices and no
        ``slice_index`` was given, or pixel data cannot be decoded.
    """
    return build_sequence(_dicom_parts(path, slice_index=slice_index))


def read_dicom_slices(path: Any) -> list[Sequence]:
    """Read every slice of a DICOM series: one :class:`Sequence` per slice position.

    Slices are sorted along the slice normal (apex to base or base to apex, as the scanner's
    orientation says); ``metadata["slice_index"]`` / ``["n_slices"]`` / ``["slice_position_mm"]``
    record where each came from. A single-slice series gives a list of one.
    """
    return [build_sequence(parts) for parts in _dicom_parts_list(path)]


def _dicom_parts(path: Any, *, slice_index: int | None = None) -> _Parts:
    return pick_slice(_dicom_parts_list(path, slice_index=slice_index), None)


def _dicom_parts_list(path: Any, *, slice_index: int | None = None) -> list[_Parts]:
    folder, files, wanted = _candidate_files(path)
    if wanted is not None and _read_header(wanted) is None:
        # a file named on its own that is not DICOM: say so, without scanning its folder
        raise SequenceReadError(f"{wanted}: {NOT_DICOM}.")
    found, skipped = _scan(files)
    if not found:
        raise SequenceReadError(
            f"{wanted or folder}: no DICOM image files found ({len(files)} file(s) checked); "
            "choose the folder that holds the images of one series (for TIFF or NIfTI, give "
            "the file itself)."
        )
    items, others = _choose_series(folder, found, wanted)
    frames, copies = _frames_of(items)
    frames, derived = _split_derived(frames)
    _check_sizes(folder, frames)
    first_header = frames[0].header
    texts = [str(first_header.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName", "SequenceName")]
    kind = guess_kind(*texts)
    groups = _slices(frames)
    if slice_index is not None:
        if not -len(groups) <= int(slice_index) < len(groups):
            raise SequenceReadError(
                f"{folder}: slice {slice_index} asked for, but the series has {len(groups)} slice(s) "
                f"(0..{len(groups) - 1})."
            )
        selected = [(int(slice_index) % len(groups), groups[int(slice_index)])]
    else:
        selected = list(enumerate(groups))
    out = []
    for index, group in selected:
        parts = _slice_parts(folder, group, kind, texts)
        if len(groups) > 1:
            parts.metadata.update({"slice_index": index, "n_slices": len(groups)})
            parts.name = f"{parts.name or folder.name} slice {index}"
        if parts.geometry is not None:
            parts.metadata["slice_position_mm"] = round(parts.geometry.slice_position_mm, 4)
        else:
            parts.metadata["slice_position_mm"] = float(index)
        if others:
            parts.metadata["dicom_other_series"] = others
        if skipped:
            parts.metadata["dicom_skipped_files"] = skipped
        if copies:
            parts.metadata["dicom_duplicates_dropped"] = copies
        if derived:
            _attach_scanner_maps(parts, group, derived)
        out.append(parts)
    return out


def _derived_type(frame: _Frame) -> str | None:
    """The ImageType value that marks a scanner-derived map (``T1 MAP``, ``T2 MAP``, ...), or None.

    A Philips MOLLI series holds, under the same series number, the inversion frames and the
    scanner's own T1 maps (``ORIGINAL\\PRIMARY\\T1 MAP\\T1``, TI 0): those are results, not frames.
    In an enhanced multi-frame file each frame says so in its own FrameType (the file's ImageType
    describes the whole file, e.g. ``MIXED``).
    """
    if frame.index is not None:
        value: Any = frame.frame_type
    else:
        value = frame.header.get("ImageType") if frame.header is not None else None
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    for item in values:
        text = " ".join(str(item).upper().split())
        if text.endswith("MAP"):  # T1 MAP, T2 MAP, T2* MAP, ECV MAP, T1MAP
            return text
    return None


def _split_derived(frames: list[_Frame]) -> tuple[list[_Frame], list[tuple[str, _Frame]]]:
    """``(acquired frames, [(map type, frame), ...])``: scanner-derived maps left out of the
    sequence, unless every image is one (a map series read on purpose keeps its images)."""
    kinds = [_derived_type(frame) for frame in frames]
    if all(k is None for k in kinds) or all(k is not None for k in kinds):
        return frames, []
    kept = [frame for frame, k in zip(frames, kinds) if k is None]
    derived = [(k, frame) for frame, k in zip(frames, kinds) if k is not None]
    return kept, derived


def _attach_scanner_maps(parts: _Parts, group: list[_Frame], derived: list[tuple[str, _Frame]]) -> None:
    """The scanner's maps of this slice (same position) as ``metadata["scanner_maps"]``:
    ``{"scanner T1 map": (H, W) float32, ...}``, to compare with a fit after correction."""
    position = None if group[0].position is None else tuple(round(v, 1) for v in group[0].position)
    mine = [(k, fr) for k, fr in derived
            if (None if fr.position is None else tuple(round(v, 1) for v in fr.position)) == position
            and (fr.rows, fr.columns) == (group[0].rows, group[0].columns)]
    maps: dict[str, np.ndarray] = {}
    for kind, frame in sorted(mine, key=lambda item: (item[0], item[1].instance)):
        base = "scanner " + kind.replace("MAP", "map")
        name, k = base, 2
        while name in maps:
            name, k = f"{base} ({k})", k + 1
        maps[name] = _pixels([frame])[0]
    parts.metadata["scanner_maps"] = maps
    parts.metadata["dicom_derived_left_out"] = [f"{fr.label} ({k})" for k, fr in derived]


def _slice_parts(folder: Path, frames: list[_Frame], kind: str | None, texts: list[str]) -> _Parts:
    frames, timings, basis, source = _order(frames, kind, folder)
    check_decoded_size(folder, (len(frames), frames[0].rows, frames[0].columns), np.float32)
    pixels = _pixels(frames)
    first = frames[0]
    parts = _Parts(path=folder, frames=pixels, format="dicom", sidecar=False)
    if timings is not None:
        parts.timings, parts.timings_source = timings, source
    elif kind in _MAPPING_KINDS:
        parts.metadata["timings_note"] = (
            "no per-frame inversion/saturation time found in InversionTime, the Philips private "
            "tag or ImageComments; frames are in InstanceNumber order: pass timings_ms"
        )
    spacing = first.spacing
    if spacing is not None and len(spacing) == 2:
        dy, dx = _float_or_none(spacing[0]), _float_or_none(spacing[1])
        if dy and dx and dy > 0 and dx > 0:
            parts.spacing, parts.spacing_source = (dy, dx), "PixelSpacing (0028,0030)"
        else:
            parts.spacing_problem = f"PixelSpacing {list(spacing)} is not a positive pixel size"
    if first.orientation is not None and first.position is not None:
        try:
            parts.geometry = SliceGeometry.from_dicom(first.orientation, first.position, first.thickness)
            parts.geometry_source = "ImageOrientationPatient / ImagePositionPatient"
        except ValueError:
            parts.geometry = None  # a zero orientation vector: no usable geometry
    if kind is not None:
        parts.kind, parts.kind_source = kind, "SeriesDescription/ProtocolName"
    elif basis == "trigger_time":
        parts.kind, parts.kind_source = "cine", "TriggerTime"
    elif basis == "echo_time" and "GR" in str(first.header.get("ScanningSequence", "")).upper():
        parts.kind, parts.kind_source = "mge", "EchoTime + ScanningSequence GR"
    parts.name = texts[0].strip() or None
    dicom = {}
    for key in SAFE_FIELDS:
        value = first.header.get(key)
        if value not in (None, ""):
            dicom[key] = _plain(value)
    if first.position is not None:
        dicom["ImagePositionPatient"] = list(first.position)
    if first.orientation is not None:
        dicom["ImageOrientationPatient"] = list(first.orientation)
    parts.metadata.update(
        {
            "dicom": dicom,
            "dicom_files": [fr.label for fr in frames],
            "frame_order": basis,
        }
    )
    if basis == "inversion_time":
        trig = [fr.trigger for fr in frames]
        if all(v is not None for v in trig):
            parts.metadata["trigger_times_ms"] = trig
    return parts
