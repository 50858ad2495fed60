"""A scanner's parameter map read from DICOM as one 2-D image (a T1 map for ``any2reg ecv``, any
map for ``any2reg segments``), beside the series reader, which it leaves as it is.

What is a map
-------------
* one file named on its own whose ImageType marks a map (a value ending in ``MAP``: ``T1 MAP``,
  ``T1MAP``, ``T2 MAP``, ``T2* MAP``, ``ECV MAP``; or Siemens' ``MOCO`` with ``T1`` / ``T2``
  values), even inside a folder of a MOLLI series (the way to pick the scanner's map there);
* a folder (or one file of it) whose chosen series holds one image only (a 2-D image is a map,
  by its shape, as for TIFF);
* a folder whose series holds map images only: one image is the map, several (two maps of one
  slice, one per slice) are refused with their file names (name the file).

A MOLLI folder with its acquired frames and the scanner's maps is a sequence (what registration
needs): :func:`read_dicom_map` returns ``None`` and a note naming the map files.

Pixel values are ``stored * RescaleSlope + RescaleIntercept`` (ms for T1 / T2 / T2* maps);
spacing from PixelSpacing, geometry from ImageOrientationPatient / ImagePositionPatient.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...core.geometry import SliceGeometry
from .._common import SequenceReadError, SequenceReadWarning
from .frames import _Frame, _frames_of, _pixels
from .reader import SAFE_FIELDS, _derived_type
from .scan import _candidate_files, _choose_series, _float_or_none, _plain, _read_header, _scan

__all__ = ["DicomMap", "read_dicom_map", "map_type"]

#: Units of the maps a scanner writes (after rescaling).
_UNITS = {"T1": "ms", "T2": "ms", "T2*": "ms", "ECV": "%"}


@dataclasses.dataclass(frozen=True, eq=False)
class DicomMap:
    """One 2-D map image: rescaled ``values`` (H, W) float32, ``spacing_mm`` (dy, dx),
    ``geometry`` (or None), ``info`` (quantity, unit, ImageType, the file, acquisition fields)."""

    values: np.ndarray
    spacing_mm: tuple[float, float]
    geometry: SliceGeometry | None
    info: dict[str, Any]
    path: str


def map_type(frame: _Frame) -> str | None:
    """The ImageType value that marks ``frame`` as a scanner map (``"T1 MAP"``), or None.

    Besides the values the series reader knows (ending in ``MAP``), Siemens' inline maps
    (``DERIVED\\PRIMARY\\...\\MOCO\\T1``) count; the ImageType of an enhanced file (one frame) too.
    """
    kind = _derived_type(frame)
    if kind is not None:
        return kind
    value = frame.header.get("ImageType") if frame.header is not None else None
    if value is None:
        return None
    values = [" ".join(str(v).upper().split()) for v in ([value] if isinstance(value, str) else list(value))]
    if frame.index is not None:
        for text in values:
            if text.endswith("MAP"):
                return text
    if "MOCO" in values:
        for quantity in ("T1", "T2", "T2*"):
            if quantity in values:
                return f"{quantity} MAP"
    return None


def _quantity(kind: str | None) -> tuple[str | None, str]:
    if kind is None:
        return None, ""
    name = kind[:-3].strip() if kind.endswith("MAP") else kind
    return (name or None), _UNITS.get(name, "")


def _as_map(frame: _Frame, kind: str | None, how: str) -> DicomMap:
    """The map of one frame record, rescaled, with its spacing and geometry."""
    values = _pixels([frame])[0]
    spacing: tuple[float, float] = (1.0, 1.0)
    source = "none (1 mm assumed)"
    if frame.spacing is not None and len(frame.spacing) == 2:
        dy, dx = _float_or_none(frame.spacing[0]), _float_or_none(frame.spacing[1])
        if dy and dx and dy > 0 and dx > 0:
            spacing, source = (float(dy), float(dx)), "PixelSpacing (0028,0030)"
    geometry = None
    if frame.orientation is not None and frame.position is not None:
        try:
            geometry = SliceGeometry.from_dicom(frame.orientation, frame.position, frame.thickness)
        except ValueError:
            geometry = None  # a zero orientation vector: no usable geometry
    quantity, unit = _quantity(kind)
    dicom = {}
    for key in SAFE_FIELDS:
        value = frame.header.get(key)
        if value not in (None, ""):
            dicom[key] = _plain(value)
    info: dict[str, Any] = {
        "format": "dicom", "dicom_file": frame.label, "read_as": how, "spacing_mm": list(spacing),
        "spacing_source": source, "rescale": {"slope": 1.0 if frame.slope is None else frame.slope,
                                              "intercept": frame.intercept or 0.0},
        "dicom": dicom,
    }
    if kind is not None:
        info["dicom_map_type"] = kind
    if quantity is not None:
        info["quantity"], info["unit"] = quantity, unit
    return DicomMap(values=values, spacing_mm=spacing, geometry=geometry, info=info, path=str(frame.file))


def _where(frame: _Frame) -> str:
    return "no position" if frame.position is None else "at " + ", ".join(f"{v:g}" for v in frame.position) + " mm"


def _not_an_image(file: Path, ds: Any) -> str:
    from pydicom.uid import UID

    sop = str(ds.get("SOPClassUID", "") or "")
    what = UID(sop).name if sop else "no SOPClassUID"
    modality = str(ds.get("Modality", "") or "none")
    return (f"{file}: read as DICOM ({what}, Modality {modality}), but it holds no image (no Rows / Columns / "
            "pixel data), so neither a 2-D map nor a sequence; give the map's image file (ImageType e.g. "
            "'T1 MAP') or the folder of the series")


def read_dicom_map(path: Any) -> tuple[DicomMap | None, str]:
    """``(map, note)``: the DICOM map at ``path`` (a file or a folder), or ``(None, what it holds)``
    when it is a sequence for the series reader (the note names the scanner maps it offers).

    Raises
    ------
    SequenceReadError
        A DICOM file that holds no image; a folder of several map images (the message names them:
        give one file); a file whose pixels cannot be decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SequenceReadWarning)
        return _read_dicom_map(path)


def _read_dicom_map(path: Any) -> tuple[DicomMap | None, str]:
    folder, files, wanted = _candidate_files(path)
    if wanted is not None:
        ds = _read_header(wanted)
        if ds is None:
            return None, f"{wanted}: not DICOM"
        if "Rows" not in ds or "Columns" not in ds:
            raise SequenceReadError(_not_an_image(wanted, ds))
        own, _ = _frames_of([(wanted, ds)])
        if len(own) > 1:
            return None, f"{wanted}: a multi-frame file of {len(own)} frames"
        kind = map_type(own[0])
        if kind is not None:
            return _as_map(own[0], kind, f"the {kind} image named"), ""
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        found, _ = _scan(files)
        items = [(f, d) for f, d in found if str(d.get("SeriesInstanceUID", "") or "") == uid]
    else:
        found, _ = _scan(files)
        if not found:
            return None, f"{folder}: no DICOM image"
        try:
            items, _ = _choose_series(folder, found, None)
        except SequenceReadError:
            return None, f"{folder}: several series"  # the series reader says which
    frames, _ = _frames_of(items)
    kinds = [map_type(frame) for frame in frames]
    if len(frames) == 1:
        return _as_map(frames[0], kinds[0], "the only image of its series"), ""
    where = wanted or folder
    maps = [f"{fr.file.name} ({k}, {_where(fr)})" for fr, k in zip(frames, kinds) if k is not None]
    if maps and len(maps) == len(frames):
        raise SequenceReadError(
            f"{where}: a series of {len(maps)} scanner map images ({'; '.join(maps[:6])}"
            f"{' ...' if len(maps) > 6 else ''}), not one 2-D map; give the file of the map you mean.")
    note = f"{where}: a series of {len(frames) - len(maps)} images"
    if maps:
        note += (f" with {len(maps)} scanner map image(s) ({'; '.join(maps[:6])}{' ...' if len(maps) > 6 else ''}); "
                 "name a map's file to read it as the map")
    return None, note
