"""DICOM series reading: classic single-frame and enhanced multi-frame MR images.

Selection
---------
Every regular file in the folder (not sub-folders; hidden files and ``DICOMDIR`` are
skipped) is tried with pydicom; files without the 128-byte preamble are read when they start
like a DICOM data set (``force=True``); files that are not DICOM images are ignored. Files
larger than the decode limit are skipped unread, and a folder whose headers take longer than
``ANY2REG_DICOM_SCAN_SECONDS`` (default 120 s) to scan stops with an error naming the slowest
file, so one junk file cannot stall a read. Images are grouped by SeriesInstanceUID. With
several series, the one with the most frames is read and the others are listed in
``metadata["dicom_other_series"]``; when the largest series are tied the read fails and lists
them (put one series per folder, or pass the list of files). A file seen twice (same
SOPInstanceUID, e.g. a copy) is read once, with a :class:`SequenceReadWarning`.

Slices
------
The frames are grouped by slice position (ImagePositionPatient rounded to 0.1 mm) and the
slices sorted along the slice normal (IOP row x column direction): one :class:`_Parts`, hence
one sequence, per slice (:func:`read_dicom_slices`). Enhanced multi-frame MR files (per-frame
functional groups: plane position / orientation, pixel measures, MR modifier inversion times,
cardiac trigger delay, pixel value transformation) are split into the same per-frame records.

Frame order and timings (within one slice)
------------------------------------------
1. InversionTime (0018,0082) (enhanced: InversionTimes (0018,9079) of the MR modifier) when
   every frame has one and the values differ;
2. else the Philips private inversion delay (2005,1572) (the tag dcm2niix reads for Philips
   MOLLI, whose standard tag is often absent or constant);
3. else a TI parsed from ImageComments (0020,4000) (``"TI 120"``, ``"TI=120ms"``,
   ``"T1 prep TI: 120.5"``) when every frame has one and they differ (Siemens MOLLI);
4. else EchoTime (0018,0081) (enhanced: EffectiveEchoTime (0018,9082) of the MR echo
   functional group) when every frame has one and they differ: a multi-echo series (kind
   ``mge`` when ScanningSequence says gradient echo and the description names no other kind;
   the echo times are the timings of the T2 / T2* fit);
5. else TriggerTime (0018,1060) (enhanced: NominalCardiacTriggerDelayTime (0020,9153)) when
   every frame has one and they differ (cine: kind ``cine`` unless the series description
   says otherwise; never for MOLLI / STONE / SASHA / IR series, whose fit needs preparation
   times, not trigger delays);
6. else InstanceNumber (enhanced: the frame number), and no timings. Two frames that nothing
   orders (same timing and the same InstanceNumber) are an error, not a silent guess.

Pixel values are ``stored * RescaleSlope + RescaleIntercept``; spacing is PixelSpacing
``(row spacing, column spacing) = (dy, dx)``; ImageOrientationPatient / ImagePositionPatient
become the sequence's :class:`~napari_any2reg.core.geometry.SliceGeometry`. Only
non-identifying acquisition fields are copied to ``metadata["dicom"]`` (no names, IDs, dates
or UIDs). Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000) need the ``[dicom]`` extra
(``pip install napari-any2reg[dicom]``: pylibjpeg decoders).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import struct
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.geometry import SliceGeometry
from ..core.sequence import Sequence
from ._common import (
    pick_slice,
    MAX_DECODED_BYTES,
    SequenceFileNotFoundError,
    SequenceReadError,
    SequenceReadWarning,
    _Parts,
    build_sequence,
    check_decoded_size,
    guess_kind,
)

__all__ = [
    "read_dicom_series",
    "read_dicom_slices",
    "parse_ti_comment",
    "looks_like_dicom",
    "find_dicom_series",
]

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_MAPPING_KINDS = ("molli", "stone", "sasha", "ir")
_PHILIPS_TI = (0x2005, 0x1572)  # Philips private "inversion delay" (ms), as read by dcm2niix
_DEFAULT_SCAN_SECONDS = 120.0

#: Acquisition fields copied to metadata (nothing that identifies the patient).
SAFE_FIELDS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "SeriesDescription", "ProtocolName", "SequenceName", "SeriesNumber", "ImageType",
    "ScanningSequence", "SequenceVariant", "MRAcquisitionType", "BodyPartExamined",
    "PatientPosition", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
    "SliceLocation", "RepetitionTime", "EchoTime", "FlipAngle", "PixelSpacing",
)

_TI_PATTERN = re.compile(
    r"(?<![A-Za-z])(?:TI|inversion[\s_-]*time)(?![A-Za-z])\s*[:=]?\s*([-+]?\d+(?:\.\d*)?)",
    re.IGNORECASE,
)


def parse_ti_comment(text: Any) -> float | None:
    """Parse an inversion time from a vendor comment such as ImageComments.

    Examples
    --------
    >>> parse_ti_comment("TI 120"), parse_ti_comment("TI=120ms"), parse_ti_comment("T1 prep TI: 120.5")
    (120.0, 120.0, 120.5)
    >>> parse_ti_comment("TIME 5") is None
    True
    """
    if not text:
        return None
    match = _TI_PATTERN.search(str(text))
    return float(match.group(1)) if match else None


def _starts_like_dataset(head: bytes) -> bool:
    """A file without preamble that begins with a group 0002 or 0008 element (little endian)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    vr = head[4:6]
    # explicit VR: two upper-case letters; implicit VR: a 4-byte length of a small header value
    return (vr.isalpha() and vr.isupper()) or struct.unpack("<I", head[4:8])[0] < 1024


def looks_like_dicom(path: Path) -> bool:
    """Cheap check: ``DICM`` at byte 128, a .dcm/.ima name, or a data set without preamble."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".ima"):
        return path.is_file()
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return (len(head) == 132 and head[128:] == b"DICM") or _starts_like_dataset(head)


def has_dicom_content(path: Path) -> bool:
    """Whether the file's bytes are DICOM: ``DICM`` at byte 128, or a data set without preamble.

    Unlike :func:`looks_like_dicom` the name is not trusted: a ``.dcm`` holding text is not DICOM.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return (len(head) == 132 and head[128:] == b"DICM") or _starts_like_dataset(head)


#: Why a file is not read as DICOM (the messages of the reader and of napari's reader hook).
NOT_DICOM = ("not a DICOM file (no 'DICM' marker at byte 128 and no DICOM data set at its start); "
             "is it another format, or damaged? Export the series from the scanner or PACS again")


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (bytes, bytearray)):  # private tags read as UN (implicit VR files)
        raw = bytes(value)
        if len(raw) in (4, 8) and not raw.strip(b" \0").replace(b".", b"").replace(b"-", b"").isdigit():
            return _float_or_none(struct.unpack("<f" if len(raw) == 4 else "<d", raw)[0])
        value = raw.decode("ascii", "replace").strip(" \0")
    if type(value).__name__ == "MultiValue" or isinstance(value, (list, tuple)):
        value = value[0] if len(value) else None
        return _float_or_none(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """DICOM values as JSON-friendly Python values."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str)):
        if isinstance(value, float):
            return float(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        return str(value)
    return str(value)


# ---------------------------------------------------------------------------- files
def _candidate_files(path: Any) -> tuple[Path, list[Path], Path | None]:
    """(folder for messages, files to try, the one file the caller named or None)."""
    if isinstance(path, (list, tuple)):
        files = [Path(p) for p in path]
        if not files:
            raise SequenceReadError("read_dicom_series: empty list of files; give a folder or files.")
        for f in files:
            if not f.is_file():
                raise SequenceFileNotFoundError(f"{f}: no such file; check the list of DICOM files.")
        parents = {f.resolve().parent for f in files}
        folder = parents.pop() if len(parents) == 1 else files[0].parent
        return folder, files, None
    path = Path(path)
    if not path.exists():
        raise SequenceFileNotFoundError(f"{path}: no such file or folder; check the path.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return path, files, None
    return path.parent, sorted(p for p in path.parent.iterdir() if p.is_file()), path


def _scan_seconds() -> float:
    setting = os.environ.get("ANY2REG_DICOM_SCAN_SECONDS", "").strip()
    try:
        return float(setting) if setting else _DEFAULT_SCAN_SECONDS
    except ValueError:
        raise SequenceReadError(
            f"ANY2REG_DICOM_SCAN_SECONDS={setting!r} is not a number; set it to seconds or unset it."
        ) from None


def _read_header(f: Path) -> Any:
    """Header of one file (no pixels), or ``None`` when it is not DICOM."""
    import pydicom

    try:
        # defer_size: a huge value in a junk file is not read into memory
        return pydicom.dcmread(f, stop_before_pixels=True, defer_size="4 MB")
    except Exception:
        pass
    try:  # no 128-byte preamble: only try force=True on what starts like a data set
        with open(f, "rb") as handle:
            head = handle.read(8)
        if not _starts_like_dataset(head):
            return None
        return pydicom.dcmread(f, stop_before_pixels=True, defer_size="4 MB", force=True)
    except Exception:
        return None


def _scan(files: list[Path]) -> tuple[list[tuple[Path, Any]], int]:
    """Headers of the DICOM image files among ``files``, and how many were skipped.

    Raises
    ------
    SequenceReadError
        When scanning takes longer than ``ANY2REG_DICOM_SCAN_SECONDS`` (names the slowest file).
    """
    found, skipped = [], 0
    budget = _scan_seconds()
    start = time.monotonic()
    slowest: tuple[float, Path | None] = (0.0, None)
    for f in files:
        if f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            skipped += 1
            continue
        try:
            if f.stat().st_size > MAX_DECODED_BYTES:  # no MR image file is that large
                skipped += 1
                continue
        except OSError:
            skipped += 1
            continue
        before = time.monotonic()
        ds = _read_header(f)
        took = time.monotonic() - before
        if took > slowest[0]:
            slowest = (took, f)
        if time.monotonic() - start > budget:
            raise SequenceReadError(
                f"{f.parent}: reading the DICOM headers took more than {budget:.0f} s "
                f"({len(found)} images after {files.index(f) + 1} of {len(files)} files; slowest "
                f"{slowest[1]} at {slowest[0]:.1f} s). Move files that are not images out of the "
                "folder, or raise the limit with ANY2REG_DICOM_SCAN_SECONDS."
            )
        if ds is None:
            skipped += 1
            continue
        sop = str(ds.get("SOPClassUID", ""))
        if "Rows" not in ds or "Columns" not in ds or sop == _DICOMDIR_SOP:
            skipped += 1
            continue
        found.append((f, ds))
    return found, skipped


def _series_label(ds: Any) -> str:
    description = str(ds.get("SeriesDescription", "") or "").strip() or "no description"
    number = ds.get("SeriesNumber", "")
    return f"series {number} '{description}'" if number not in ("", None) else f"'{description}'"


def _n_frames(ds: Any) -> int:
    return max(int(_float_or_none(ds.get("NumberOfFrames")) or 1), 1)


def _choose_series(folder: Path, found: list, wanted: Path | None) -> tuple[list, list[dict]]:
    groups: dict[str, list] = defaultdict(list)
    for f, ds in found:
        groups[str(ds.get("SeriesInstanceUID", "") or "")].append((f, ds))
    if wanted is not None:
        for uid, items in groups.items():
            if any(f.name == wanted.name for f, _ in items):
                return items, []
        raise SequenceReadError(f"{wanted}: not a readable DICOM image file.")

    def size(items: list) -> int:
        return sum(_n_frames(ds) for _, ds in items)

    ranked = sorted(groups.values(), key=size, reverse=True)
    if len(ranked) > 1 and size(ranked[0]) == size(ranked[1]):
        listing = "; ".join(f"{_series_label(items[0][1])} ({len(items)} files)" for items in ranked)
        raise SequenceReadError(
            f"{folder}: holds {len(ranked)} DICOM series of equal size ({listing}); cannot tell "
            "which to read. Put one series per folder or pass the list of its files."
        )
    others = [
        {
            "series": _series_label(items[0][1]),
            "files": len(items),
        }
        for items in ranked[1:]
    ]
    return ranked[0], others


# ---------------------------------------------------------------------------- frames
@dataclasses.dataclass
class _Frame:
    """One image of a series: a classic file, or one frame of an enhanced multi-frame file."""

    file: Path
    index: int | None  # frame in an enhanced multi-frame file (None: classic single frame)
    header: Any  # the file's data set (SAFE_FIELDS, descriptions)
    rows: int
    columns: int
    uid: str  # SOPInstanceUID (plus the frame number for enhanced files): duplicates are copies
    instance: float
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    spacing: Any = None
    thickness: float | None = None
    ti_tag: float | None = None
    ti_philips: float | None = None
    ti_comment: float | None = None
    echo: float | None = None
    trigger: float | None = None
    slope: float | None = None
    intercept: float | None = None

    @property
    def label(self) -> str:
        return self.file.name if self.index is None else f"{self.file.name} frame {self.index + 1}"


def _element_value(ds: Any, tag: tuple[int, int]) -> Any:
    element = ds.get(tag) if ds is not None else None
    return None if element is None else element.value


def _philips_ti(ds: Any) -> float | None:
    """Philips inversion delay (2005,1572), unless the private block belongs to another vendor."""
    creator = _element_value(ds, (0x2005, 0x0015))
    if creator is not None and "philips" not in str(creator).lower():
        return None
    return _float_or_none(_element_value(ds, _PHILIPS_TI))


def _triplet(value: Any, size: int) -> tuple[float, ...] | None:
    if value is None or len(value) != size:
        return None
    numbers = [_float_or_none(v) for v in value]
    return None if any(v is None for v in numbers) else tuple(numbers)


def _instance_number(ds: Any) -> float:
    number = _float_or_none(ds.get("InstanceNumber"))
    return math.inf if number is None else number


def _classic_frame(f: Path, ds: Any) -> _Frame:
    return _Frame(
        file=f, index=None, header=ds, rows=int(ds.Rows), columns=int(ds.Columns),
        uid=str(ds.get("SOPInstanceUID", "") or f.resolve()),
        instance=_instance_number(ds),
        position=_triplet(ds.get("ImagePositionPatient"), 3),
        orientation=_triplet(ds.get("ImageOrientationPatient"), 6),
        spacing=ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing"),
        thickness=_float_or_none(ds.get("SpacingBetweenSlices")) or _float_or_none(ds.get("SliceThickness")),
        ti_tag=_float_or_none(ds.get("InversionTime")),
        ti_philips=_philips_ti(ds),
        ti_comment=parse_ti_comment(ds.get("ImageComments")),
        echo=_float_or_none(ds.get("EchoTime")),
        trigger=_float_or_none(ds.get("TriggerTime")),
        slope=_float_or_none(ds.get("RescaleSlope")),
        intercept=_float_or_none(ds.get("RescaleIntercept")),
    )


def _functional(item: Any, shared: Any, sequence: str, keyword: str) -> Any:
    """``keyword`` of the first item of functional group ``sequence``: per-frame, else shared."""
    for group in (item, shared):
        if group is None:
            continue
        seq = group.get(sequence)
        if seq:
            value = seq[0].get(keyword)
            if value not in (None, ""):
                return value
    return None


def _enhanced_frames(f: Path, ds: Any) -> list[_Frame]:
    """Per-frame records of an enhanced multi-frame MR file (functional groups)."""
    count = _n_frames(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if len(shared_seq) else None
    uid = str(ds.get("SOPInstanceUID", "") or f.resolve())
    frames = []
    for k in range(count):
        item = per_frame[k] if k < len(per_frame) else None
        ti = _functional(item, shared, "MRModifierSequence", "InversionTimes")
        philips = None
        private = item.get((0x2005, 0x140F)) if item is not None else None  # Philips per-frame block
        if private is not None and private.value:
            block = private.value[0]
            ti = ti if ti is not None else block.get("InversionTime")
            philips = _philips_ti(block)
        frames.append(_Frame(
            file=f, index=k, header=ds, rows=int(ds.Rows), columns=int(ds.Columns),
            uid=f"{uid}#{k}", instance=float(k + 1),
            position=_triplet(_functional(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3),
            orientation=_triplet(_functional(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
            spacing=_functional(item, shared, "PixelMeasuresSequence", "PixelSpacing"),
            thickness=(_float_or_none(_functional(item, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"))
                       or _float_or_none(_functional(item, shared, "PixelMeasuresSequence", "SliceThickness"))),
            ti_tag=_float_or_none(ti),
            ti_philips=philips,
            ti_comment=parse_ti_comment(ds.get("ImageComments")) if count == 1 else None,
            echo=_float_or_none(_functional(item, shared, "MREchoSequence", "EffectiveEchoTime")),
            trigger=_float_or_none(_functional(item, shared, "CardiacSynchronizationSequence",
                                               "NominalCardiacTriggerDelayTime")),
            slope=_float_or_none(_functional(item, shared, "PixelValueTransformationSequence", "RescaleSlope")),
            intercept=_float_or_none(_functional(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")),
        ))
    return frames


def _frames_of(items: list) -> tuple[list[_Frame], list[str]]:
    """Frame records of the series' files, copies (same SOPInstanceUID) dropped with a warning."""
    frames: list[_Frame] = []
    for f, ds in items:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise SequenceReadError(f"{f}: colour DICOM image; registration needs grayscale MR magnitude images.")
        if _n_frames(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            frames.extend(_enhanced_frames(f, ds))
        else:
            frames.append(_classic_frame(f, ds))
    seen: dict[str, _Frame] = {}
    unique, copies = [], []
    for frame in sorted(frames, key=lambda fr: (str(fr.file), fr.index or 0)):
        if frame.uid in seen:
            copies.append(f"{frame.label} (copy of {seen[frame.uid].label})")
            continue
        seen[frame.uid] = frame
        unique.append(frame)
    if copies:
        warnings.warn(
            f"{len(copies)} DICOM image(s) appear twice (same SOPInstanceUID) and were read once: "
            + "; ".join(copies[:5]) + (" ..." if len(copies) > 5 else ""),
            SequenceReadWarning,
            stacklevel=4,
        )
    return unique, copies


def _check_sizes(folder: Path, frames: list[_Frame]) -> None:
    sizes: dict[tuple[int, int], list[str]] = defaultdict(list)
    for frame in frames:
        sizes[(frame.rows, frame.columns)].append(frame.label)
    if len(sizes) > 1:
        listing = "; ".join(
            f"{r}x{c}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)} files)"
            for (r, c), names in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        )
        raise SequenceReadError(
            f"{folder}: the frames have different sizes (Rows x Columns: {listing}); all frames "
            "of a sequence must share one size. Remove the odd files or pick another series."
        )


def _slices(frames: list[_Frame]) -> list[list[_Frame]]:
    """Frames grouped by slice position, slices sorted along the slice normal."""
    groups: dict[Any, list[_Frame]] = defaultdict(list)
    for frame in frames:
        key = None if frame.position is None else tuple(round(v, 1) for v in frame.position)
        groups[key].append(frame)
    if len(groups) == 1:
        return list(groups.values())

    def along_normal(group: list[_Frame]) -> tuple:
        first = group[0]
        if first.position is None:
            return (1, 0.0)
        if first.orientation is not None:
            o = np.asarray(first.orientation)
            return (0, float(np.dot(first.position, np.cross(o[:3], o[3:]))))
        return (0, *first.position)

    return sorted(groups.values(), key=along_normal)


def _varying(values: list[float | None]) -> bool:
    return all(v is not None for v in values) and len(set(values)) > 1


def _order(frames: list[_Frame], kind: str | None, where: Path) -> tuple[list[_Frame], np.ndarray | None, str, str | None]:
    """Sorted frames, timings (or None), what the order is based on, timing source.

    Trigger times are not used for T1-mapping kinds (MOLLI, STONE, SASHA, IR): there they
    are not the preparation times the fit needs, so such a series without per-frame TI
    keeps its InstanceNumber order and gets no timings.

    Raises
    ------
    SequenceReadError
        When two frames have the same sort key and the same InstanceNumber: their order would
        be a guess.
    """
    names = [f"{fr.file.name}:{fr.index or 0}" for fr in frames]
    instance = [fr.instance for fr in frames]
    chosen = None
    for values, basis, source in (
        ([fr.ti_tag for fr in frames], "inversion_time", "InversionTime (0018,0082)"),
        ([fr.ti_philips for fr in frames], "inversion_time", "Philips inversion delay (2005,1572)"),
        ([fr.ti_comment for fr in frames], "inversion_time", "ImageComments (0020,4000)"),
        ([fr.echo for fr in frames], "echo_time", "EchoTime (0018,0081)"),
        ([fr.trigger for fr in frames], "trigger_time", "TriggerTime (0018,1060)"),
    ):
        if basis == "trigger_time" and kind in _MAPPING_KINDS:
            continue
        if _varying(values):
            chosen = (values, basis, source)
            break
    keys = [((chosen[0][k],) if chosen else ()) + (instance[k],) for k in range(len(frames))]
    order = sorted(range(len(frames)), key=lambda k: (keys[k], names[k]))
    ties = [(order[p], order[p + 1]) for p in range(len(order) - 1) if keys[order[p]] == keys[order[p + 1]]]
    if ties:
        a, b = ties[0]
        what = f"{chosen[1].replace('_', ' ')} {chosen[0][a]:g} ms and " if chosen else ""
        number = "no InstanceNumber" if math.isinf(instance[a]) else f"InstanceNumber {instance[a]:g}"
        raise SequenceReadError(
            f"{where}: frames {frames[a].label} and {frames[b].label} share {what}{number}, so their "
            f"order cannot be told ({len(ties)} such pair(s)). Remove duplicated images, or read "
            "the files with explicit timings (timings_ms / --timings) after renumbering them."
        )
    ordered = [frames[k] for k in order]
    if chosen is None:
        return ordered, None, "instance_number", None
    values, basis, source = chosen
    return ordered, np.array([values[k] for k in order], dtype=np.float64), basis, source


def _decode(f: Path) -> np.ndarray:
    import pydicom

    ds = None
    try:
        ds = pydicom.dcmread(f, force=True)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            # a bare data set (no preamble / file meta): its encoding is what pydicom just read
            from pydicom.dataset import FileMetaDataset
            from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

            implicit, little = getattr(ds, "original_encoding", (False, True))
            if little:
                ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        return ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise SequenceReadError(
            f"{f}: cannot decode the pixel data ({type(exc).__name__}: {exc}; transfer syntax "
            f"{syntax}). For compressed DICOM (JPEG, JPEG-LS, JPEG 2000) install the decoders: "
            "pip install 'napari-any2reg[dicom]' (pylibjpeg), or export uncompressed images."
        ) from exc


def _pixels(frames: list[_Frame]) -> np.ndarray:
    """Rescaled float32 pixels ``(N, H, W)`` of the frame records, each file decoded once."""
    cache: dict[Path, np.ndarray] = {}
    out = []
    for frame in frames:
        if frame.file not in cache:
            cache[frame.file] = _decode(frame.file)
        stored = cache[frame.file]
        if frame.index is not None:
            stored = stored if stored.ndim == 2 and frame.index == 0 else stored[frame.index]
        if stored.ndim != 2:
            raise SequenceReadError(f"{frame.label}: pixel data of shape {stored.shape}; expected one 2-D grayscale image.")
        slope = 1.0 if frame.slope is None else frame.slope
        out.append((stored.astype(np.float64) * slope + (frame.intercept or 0.0)).astype(np.float32))
    return np.stack(out)


# ---------------------------------------------------------------------------- discovery
_NOT_DICOM = (".tif", ".tiff", ".nii", ".nii.gz", ".json", ".csv", ".npy", ".npz", ".txt", ".png", ".jpg", ".pdf",
              ".html", ".md", ".py", ".pt")

def find_dicom_series(root: Any, *, exclude: Any = ()) -> list[dict[str, Any]]:
    """Every DICOM series / slice under ``root`` (searched recursively), for cohort runs.

    Headers only are read (no pixel data). Images are grouped by folder, SeriesInstanceUID
    and slice position (ImagePositionPatient rounded to 0.1 mm), because :func:`read_dicom_series`
    reads one slice of one series; each group can be passed to it as its list of files.

    Parameters
    ----------
    root : str or Path
        Folder to search. Hidden files and folders and ``DICOMDIR`` are skipped.
    exclude : iterable of paths, optional
        Folders not to search (e.g. the output folder of a run inside the input tree).

    Returns
    -------
    list of dict
        Sorted by folder, series number and slice: ``files`` (list of Path), ``folder``
        (Path), ``series_number`` (int or None), ``description`` (str), ``slice_index`` (0-based
        position of the slice within its series, by position along the slice normal order of
        appearance) and ``n_slices`` (slices in that series).
    """
    import os

    root = Path(root)
    skip = {Path(p).resolve() for p in exclude}
    groups: dict[tuple, list[Path]] = defaultdict(list)
    info: dict[tuple, tuple] = {}
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and (here / d).resolve() not in skip)
        # extension-less and preamble-less files can be DICOM: every file but known other formats is tried
        candidates = [here / n for n in sorted(names) if not n.lower().endswith(_NOT_DICOM)]
        found, _ = _scan(candidates)
        for f, ds in found:
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            ipp = ds.get("ImagePositionPatient")
            position = tuple(round(float(v), 1) for v in ipp) if ipp is not None and len(ipp) == 3 else None
            key = (str(here), uid, position)
            groups[key].append(f)
            if key not in info:
                number = _float_or_none(ds.get("SeriesNumber"))
                info[key] = (None if number is None else int(number), str(ds.get("SeriesDescription", "") or "").strip())
    slices: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        slices[key[:2]].append(key)
    series = []
    for (folder, _uid), keys in slices.items():
        keys = sorted(keys, key=lambda k: (k[2] is None, k[2] or ()))
        for index, key in enumerate(keys):
            number, description = info[key]
            series.append({
                "files": sorted(groups[key]),
                "folder": Path(folder),
                "series_number": number,
                "description": description,
                "slice_index": index,
                "n_slices": len(keys),
            })
    series.sort(key=lambda s: (str(s["folder"]), s["series_number"] if s["series_number"] is not None else -1, s["slice_index"]))
    return series


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
    """
    if frame.index is not None:  # enhanced multi-frame: per-frame FrameType, not read here
        return None
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
