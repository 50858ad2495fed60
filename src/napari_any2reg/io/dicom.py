"""DICOM series reading (a folder of classic single-frame MR images).

Selection
---------
Every regular file in the folder (not sub-folders; hidden files and ``DICOMDIR`` are
skipped) is tried with pydicom; files that are not DICOM images are ignored. Images are
grouped by SeriesInstanceUID. With several series, the one with the most files is read and
the others are listed in ``metadata["dicom_other_series"]``; when the largest series are
tied the read fails and lists them (put one series per folder, or pass the list of files).
A series spanning several slice positions is refused (one slice per sequence).

Frame order and timings
-----------------------
1. InversionTime (0018,0082) when every frame has one and the values differ;
2. else a TI parsed from ImageComments (0020,4000) (``"TI 120"``, ``"TI=120ms"``,
   ``"T1 prep TI: 120.5"``) when every frame has one and they differ (Siemens MOLLI);
3. else TriggerTime (0018,1060) when every frame has one and they differ (cine: kind
   ``cine`` unless the series description says otherwise; never for MOLLI / STONE /
   SASHA / IR series, whose fit needs preparation times, not trigger delays);
4. else InstanceNumber (then file name), and no timings.

Pixel values are ``stored * RescaleSlope + RescaleIntercept``; spacing is PixelSpacing
``(row spacing, column spacing) = (dy, dx)``. Only non-identifying acquisition fields are
copied to ``metadata["dicom"]`` (no names, IDs, dates or UIDs).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.sequence import Sequence
from ._common import SequenceFileNotFoundError, SequenceReadError, _Parts, build_sequence, guess_kind

__all__ = ["read_dicom_series", "parse_ti_comment", "looks_like_dicom", "find_dicom_series"]

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_MAPPING_KINDS = ("molli", "stone", "sasha", "ir")

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


def looks_like_dicom(path: Path) -> bool:
    """Cheap check: a file with the ``DICM`` marker at byte 128 (or a .dcm/.ima name)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".ima"):
        return path.is_file()
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
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


def _scan(files: list[Path]) -> tuple[list[tuple[Path, Any]], int]:
    """Headers of the DICOM image files among ``files``, and how many were skipped."""
    import pydicom

    found, skipped = [], 0
    for f in files:
        if f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            skipped += 1
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # not DICOM, or unreadable: ignored
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


def _choose_series(folder: Path, found: list, wanted: Path | None) -> tuple[list, list[dict]]:
    groups: dict[str, list] = defaultdict(list)
    for f, ds in found:
        groups[str(ds.get("SeriesInstanceUID", "") or "")].append((f, ds))
    if wanted is not None:
        for uid, items in groups.items():
            if any(f.name == wanted.name for f, _ in items):
                return items, []
        raise SequenceReadError(f"{wanted}: not a readable DICOM image file.")
    ranked = sorted(groups.values(), key=len, reverse=True)
    if len(ranked) > 1 and len(ranked[0]) == len(ranked[1]):
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


def _check_geometry(folder: Path, items: list) -> None:
    sizes: dict[tuple[int, int], list[str]] = defaultdict(list)
    for f, ds in items:
        sizes[(int(ds.Rows), int(ds.Columns))].append(f.name)
    if len(sizes) > 1:
        listing = "; ".join(
            f"{r}x{c}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)} files)"
            for (r, c), names in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        )
        raise SequenceReadError(
            f"{folder}: the frames have different sizes (Rows x Columns: {listing}); all frames "
            "of a sequence must share one size. Remove the odd files or pick another series."
        )
    positions: dict[tuple, int] = defaultdict(int)
    for _, ds in items:
        ipp = ds.get("ImagePositionPatient")
        if ipp is not None and len(ipp) == 3:
            positions[tuple(round(float(v), 1) for v in ipp)] += 1
    if len(positions) > 1:
        listing = "; ".join(f"{list(p)} ({n} files)" for p, n in positions.items())
        raise SequenceReadError(
            f"{folder}: the series spans {len(positions)} slice positions (ImagePositionPatient "
            f"{listing}); a sequence is one slice. Put one slice's files in a folder or pass them as a list."
        )
    for f, ds in items:
        if int(_float_or_none(ds.get("NumberOfFrames")) or 1) > 1:
            raise SequenceReadError(
                f"{f}: multi-frame (enhanced) DICOM is not supported; export the series as "
                "classic single-frame images."
            )
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise SequenceReadError(f"{f}: colour DICOM image; registration needs grayscale MR magnitude images.")


def _varying(values: list[float | None]) -> bool:
    return all(v is not None for v in values) and len(set(values)) > 1


def _order(items: list, kind: str | None) -> tuple[list, np.ndarray | None, str, str | None]:
    """Sorted items, timings (or None), what the order is based on, timing source.

    Trigger times are not used for T1-mapping kinds (MOLLI, STONE, SASHA, IR): there they
    are not the preparation times the fit needs, so such a series without per-frame TI
    keeps its InstanceNumber order and gets no timings.
    """
    datasets = [ds for _, ds in items]
    ti_tag = [_float_or_none(ds.get("InversionTime")) for ds in datasets]
    ti_comment = [parse_ti_comment(ds.get("ImageComments")) for ds in datasets]
    trigger = [_float_or_none(ds.get("TriggerTime")) for ds in datasets]
    instance = [_float_or_none(ds.get("InstanceNumber")) for ds in datasets]
    instance = [v if v is not None else math.inf for v in instance]
    names = [f.name for f, _ in items]
    for values, basis, source in (
        (ti_tag, "inversion_time", "InversionTime (0018,0082)"),
        (ti_comment, "inversion_time", "ImageComments (0020,4000)"),
        (trigger, "trigger_time", "TriggerTime (0018,1060)"),
    ):
        if basis == "trigger_time" and kind in _MAPPING_KINDS:
            continue
        if _varying(values):
            order = sorted(range(len(items)), key=lambda k: (values[k], instance[k], names[k]))
            return [items[k] for k in order], np.array([values[k] for k in order]), basis, source
    order = sorted(range(len(items)), key=lambda k: (instance[k], names[k]))
    return [items[k] for k in order], None, "instance_number", None


def _pixels(f: Path) -> np.ndarray:
    import pydicom

    ds = None
    try:
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise SequenceReadError(
            f"{f}: cannot decode the pixel data ({type(exc).__name__}: {exc}; transfer syntax "
            f"{syntax}). For compressed DICOM install a decoder (pip install pylibjpeg "
            "pylibjpeg-libjpeg) or export uncompressed images."
        ) from exc
    if stored.ndim != 2:
        raise SequenceReadError(f"{f}: pixel data of shape {stored.shape}; expected one 2-D grayscale image.")
    slope = _float_or_none(ds.get("RescaleSlope"))
    intercept = _float_or_none(ds.get("RescaleIntercept"))
    values = stored.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
    return values.astype(np.float32)


# ---------------------------------------------------------------------------- discovery
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
        candidates = [here / n for n in sorted(names) if looks_like_dicom(here / n)]
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
def read_dicom_series(path: Any) -> Sequence:
    """Read a DICOM series (folder, list of files, or one file of the series).

    Parameters
    ----------
    path : str, Path or list of paths
        A folder of single-frame DICOM images, an explicit list of files, or one ``.dcm``
        file (then the files of its series in the same folder are read).

    Returns
    -------
    Sequence
        Frames sorted by inversion time, else trigger time, else InstanceNumber (see the
        module notes), rescaled pixel values, spacing from PixelSpacing, kind guessed from
        SeriesDescription / ProtocolName / SequenceName.

    Raises
    ------
    SequenceReadError
        If no DICOM image is found, several equally large series are present, the frames
        differ in size or slice position, or pixel data cannot be decoded.
    """
    return build_sequence(_dicom_parts(path))


def _dicom_parts(path: Any) -> _Parts:
    folder, files, wanted = _candidate_files(path)
    found, skipped = _scan(files)
    if not found:
        raise SequenceReadError(
            f"{wanted or folder}: no DICOM image files found ({len(files)} file(s) checked); "
            "choose the folder that holds the images of one series (for TIFF or NIfTI, give "
            "the file itself)."
        )
    items, others = _choose_series(folder, found, wanted)
    _check_geometry(folder, items)
    first = items[0][1]
    texts = [str(first.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName", "SequenceName")]
    kind = guess_kind(*texts)
    items, timings, basis, source = _order(items, kind)
    frames = np.stack([_pixels(f) for f, _ in items])

    first = items[0][1]
    parts = _Parts(path=folder, frames=frames, format="dicom", sidecar=False)
    if timings is not None:
        parts.timings, parts.timings_source = timings, source
    elif kind in _MAPPING_KINDS:
        parts.metadata["timings_note"] = (
            "no per-frame inversion/saturation time found in InversionTime or ImageComments; "
            "frames are in InstanceNumber order: pass timings_ms"
        )
    spacing = first.get("PixelSpacing") or first.get("ImagerPixelSpacing")
    if spacing is not None and len(spacing) == 2:
        dy, dx = _float_or_none(spacing[0]), _float_or_none(spacing[1])
        if dy and dx and dy > 0 and dx > 0:
            parts.spacing, parts.spacing_source = (dy, dx), "PixelSpacing (0028,0030)"
        else:
            parts.spacing_problem = f"PixelSpacing {list(spacing)} is not a positive pixel size"
    if kind is not None:
        parts.kind, parts.kind_source = kind, "SeriesDescription/ProtocolName"
    elif basis == "trigger_time":
        parts.kind, parts.kind_source = "cine", "TriggerTime"
    parts.name = texts[0].strip() or None
    dicom = {}
    for key in SAFE_FIELDS:
        value = first.get(key)
        if value not in (None, ""):
            dicom[key] = _plain(value)
    parts.metadata.update(
        {
            "dicom": dicom,
            "dicom_files": [f.name for f, _ in items],
            "frame_order": basis,
        }
    )
    if others:
        parts.metadata["dicom_other_series"] = others
    if skipped:
        parts.metadata["dicom_skipped_files"] = skipped
    if basis == "inversion_time":
        trig = [_float_or_none(ds.get("TriggerTime")) for _, ds in items]
        if all(v is not None for v in trig):
            parts.metadata["trigger_times_ms"] = trig
    return parts
