"""Which files of a folder are DICOM and which series to read: the preamble and data-set
probes, header scanning with its size and time limits, the choice among several series, and
the recursive search for series of a cohort (:func:`find_dicom_series`)."""

from __future__ import annotations

import math
import os
import re
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._common import MAX_DECODED_BYTES, SequenceFileNotFoundError, SequenceReadError


_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


_DEFAULT_SCAN_SECONDS = 120.0


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
