"""The frames of a DICOM series: one record per image (classic single-frame files and the frames
of enhanced multi-frame files), their grouping by slice, their order and timings (inversion,
echo or trigger times), and the decoding of their pixels."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .._common import SequenceReadError, SequenceReadWarning
from .scan import _float_or_none, _n_frames, parse_ti_comment


_MAPPING_KINDS = ("molli", "stone", "sasha", "ir")
_PHILIPS_TI = (0x2005, 0x1572)  # Philips private "inversion delay" (ms), as read by dcm2niix


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
    frame_type: tuple[str, ...] | None = None  # enhanced files: the frame's own FrameType (a map or a frame)

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


def _frame_type(value: Any) -> tuple[str, ...] | None:
    """An enhanced frame's FrameType (``DERIVED\\PRIMARY\\T1 MAP\\...``) as a tuple, or None."""
    if value in (None, ""):
        return None
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


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
            frame_type=_frame_type(_functional(item, shared, "MRImageFrameTypeSequence", "FrameType")),
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
