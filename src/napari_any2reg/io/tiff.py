"""TIFF, ImageJ hyperstack and OME-TIFF reading and writing.

Files written by :func:`write_tiff` are ImageJ hyperstacks (float32, frames along T, pixel
size in mm in the resolution tags so Fiji shows it) whose ImageDescription also carries one
line ``any2reg={...}`` with a JSON object::

    {"any2reg": 1, "kind": "stone", "name": "...", "timings_ms": [100.0, ..., "inf"],
     "timing_name": "inversion_times_ms", "spacing_mm": [dy, dx], "metadata": {...}}

A target ending in ``.ome.tif`` / ``.ome.tiff`` is written as OME-TIFF instead
(PhysicalSizeY/X in mm; the same JSON in an OME CommentAnnotation).

Fiji / ImageJ hyperstacks
-------------------------
Written: axes ``TYX`` (Fiji shows a hyperstack of frames, not a Z-stack), unit ``mm`` with the
pixel size in the resolution tags, one slice label per frame (``"TI 100 ms"``; per-frame
timings are always in the metadata: labels, Info and the any2reg JSON), and the frame interval
``finterval`` (seconds, ``tunit=sec``) when the frames are evenly timed (a cine: Fiji's
Image > Properties then shows it; MOLLI's uneven times are in the labels only).

Read: ``TYX``, ``TCYX``, ``TZYX`` and ``TZCYX`` hyperstacks. Slices (Z) and channels (C) are
not frames: such a file gives one sequence per slice and channel (slice-major;
``metadata["slice_index"]`` / ``["channel_index"]``, names ``"<stem> slice K channel C"``);
frames come from T. A frame interval (``finterval`` in ``tunit``, default seconds) is kept as
``metadata["frame_interval_ms"]`` and gives the timings ``k * interval`` when nothing better
(the any2reg JSON, a JSON sidecar) does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.sequence import Sequence
from ._atomic import atomic_write
from ._common import (
    pick_slice,
    TIMING_KEYS,
    SequenceReadError,
    _Parts,
    build_sequence,
    check_decoded_size,
    check_file,
    decode_timings,
    encode_timings,
    frames_from_axes,
    sequence_header,
    parse_info,
    split_name,
)

__all__ = ["read_tiff", "write_tiff"]

TIFF_EXTENSIONS = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
_ANNOTATION_NAMESPACE = "napari-any2reg"

# length units to mm (ImageJ and OME spellings)
_UNIT_MM = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "micron": 1e-3, "microns": 1e-3, "\\u00b5m": 1e-3,
    "micrometer": 1e-3, "nm": 1e-6, "nanometer": 1e-6, "cm": 10.0, "centimeter": 10.0,
    "m": 1000.0, "meter": 1000.0, "inch": 25.4, "in": 25.4,
}
# time units to ms (OME spellings)
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "µs": 1e-3, "us": 1e-3, "min": 60000.0, "h": 3600000.0}
# print resolutions that say nothing about pixel size
_DEFAULT_DPI = (1.0, 72.0, 96.0, 150.0, 300.0, 600.0)


# ---------------------------------------------------------------------------- reading
def read_tiff(path: Any) -> Sequence:
    """Read a multi-page TIFF, ImageJ hyperstack or OME-TIFF as a :class:`Sequence`.

    Parameters
    ----------
    path : str or Path
        ``.tif`` / ``.tiff`` / ``.ome.tif`` file.

    Returns
    -------
    Sequence
        Frames ``(N, H, W)`` float32. Timings, spacing, kind and name come from, in order:
        the any2reg JSON written by :func:`write_tiff`; OME-XML (PhysicalSizeY/X, Plane
        DeltaT, MapAnnotation keys such as ``inversion_times_ms``); ImageJ metadata and the
        resolution tags; a JSON sidecar ``<stem>.json``; the file name (kind).

    Raises
    ------
    SequenceReadError
        If the file is missing or not a TIFF, holds a single 2-D image, RGB data or more
        than one non-singleton non-spatial axis, or its timings do not match the frames.

    Notes
    -----
    Frames are taken along whichever axis (T, Z, ...) is the only one with more than one
    entry; singleton axes are squeezed. Plain TIFF resolution tags are used only with the
    centimetre unit or a non-default inch resolution (72/96/300 dpi say nothing about
    pixel size).
    """
    return build_sequence(_tiff_parts(path))


def _tiff_parts(path: Any) -> _Parts:
    return pick_slice(_tiff_parts_list(path), None)


_log = logging.getLogger(__name__)

#: Words of tifffile's log messages that mean the file's structure is damaged (a tag of an
#: invalid type, a page offset past the end), not merely unusual ("ImageJ series metadata
#: invalid" alone is a layout tifffile does not know: it reads the file as plain pages).
_DAMAGE_WORDS = ("tifffileerror", "invalid page offset", "invalid data type", "truncat", "unexpected end")


class _ThreadMessages(logging.Filter):
    """Keeps the messages of the ``tifffile`` logger raised in one thread, and drops them."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:  # another thread's read (a batch): its own filter decides
            return True
        message = " ".join(record.getMessage().split())
        self.messages.append(message)
        _log.debug("tifffile: %s", message)  # still there with -v, never on stderr by default
        return False


@contextlib.contextmanager
def _tifffile_messages() -> Iterator[list[str]]:
    """The messages tifffile logs in this thread within the block (kept off the user's stderr,
    where a corrupted file printed 7 lines before the error: the reader turns them into its
    message)."""
    logger = logging.getLogger("tifffile")
    keep = _ThreadMessages()
    logger.addFilter(keep)
    try:
        yield keep.messages
    finally:
        logger.removeFilter(keep)


def _tiff_parts_list(path: Any) -> list[_Parts]:
    """One :class:`_Parts` per slice: an OME/ImageJ stack with Z > 1 and T > 1 is split along Z."""
    path = check_file(path)
    import tifffile

    try:
        with _tifffile_messages() as messages, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise SequenceReadError(f"{path}: the TIFF file holds no image data.")
            series = tif.series[0]
            check_decoded_size(path, series.shape, series.dtype)  # before decoding anything
            data = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            description = page.description or ""
            imagej = dict(tif.imagej_metadata or {}) if tif.is_imagej else None
            ome = tif.ome_metadata if tif.is_ome else None
            resolution, resolution_problem = _page_resolution(page)
            n_series = len(tif.series)
    except SequenceReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt input
        raise SequenceReadError(
            f"{path}: not a readable TIFF file ({type(exc).__name__}: {exc}); "
            "is it corrupt, truncated or another format?"
        ) from exc
    damage = [m for m in messages if any(word in m.lower() for word in _DAMAGE_WORDS)]
    if damage:  # the metadata read past the damage is noise (a pixel spacing of 2.6e-08 mm was reported)
        more = f"; and {len(damage) - 1} more" if len(damage) > 1 else ""
        raise SequenceReadError(
            f"{path}: not a readable TIFF file: it looks corrupted or truncated (tifffile: {damage[0]}{more}); "
            "copy it again from its source, or export it anew."
        )

    axes = axes.upper()
    rgb_as_frames = False
    if "S" in axes and "Y" in axes and axes.index("S") < axes.index("Y") and data.dtype.kind == "f":
        # planar "RGB(A)" float data: a 3- or 4-frame stack that was written without
        # photometric='minisblack' (tifffile does this by default); colour is never float
        axes = axes.replace("S", "Q")
        rgb_as_frames = True
    context = (description, imagej, ome, resolution, resolution_problem, n_series, rgb_as_frames, page)
    big = [a for i, a in enumerate(axes) if a not in "YXS" and data.shape[i] > 1]
    # a hyperstack's slices (Z) and channels (C) are not frames: one sequence per slice and
    # channel, frames from T (a Z-stack of channels without T: frames from Z, as before)
    frame = "T" if "T" in big else ("Z" if "Z" in big and "C" in big else None)
    split = [a for a in big if a != frame]
    if frame is not None and split and set(split) <= {"Z", "C"}:
        return _split_hyperstack(path, data, axes, split, context)
    return [_tiff_slice_parts(path, data, axes, *context)]


def _split_hyperstack(path: Path, data: np.ndarray, axes: str, split: list[str], context: tuple) -> list[_Parts]:
    """One ``_Parts`` per (slice, channel) of a hyperstack, slice-major."""
    import itertools

    sizes = {a: int(data.shape[axes.index(a)]) for a in split}
    order = [a for a in "ZC" if a in split]
    out = []
    for indices in itertools.product(*(range(sizes[a]) for a in order)):
        chosen, rest = data, axes
        for a, k in zip(order, indices):
            position = rest.index(a)
            chosen, rest = np.take(chosen, k, axis=position), rest[:position] + rest[position + 1:]
        parts = _tiff_slice_parts(path, chosen, rest, *context)
        name = split_name(path)[0]
        for a, k in zip(order, indices):
            if a == "Z":
                parts.metadata.update({"slice_index": k, "n_slices": sizes["Z"], "slice_position_mm": float(k)})
                name += f" slice {k}"
            else:
                parts.metadata.update({"channel_index": k, "n_channels": sizes["C"]})
                name += f" channel {k}"
        parts.name = name
        out.append(parts)
    return out


def _tiff_slice_parts(path: Path, data: np.ndarray, axes: str, description: str, imagej: Any, ome: Any,
                      resolution: Any, resolution_problem: Any, n_series: int, rgb_as_frames: bool,
                      page: Any) -> _Parts:
    try:
        frames, frame_axis = frames_from_axes(data, axes, path)
    except SequenceReadError as exc:
        if "RGB" in str(exc) and "S" in axes and axes.index("S") < axes.index("Y"):
            raise SequenceReadError(
                f"{exc} If the {data.shape[axes.index('S')]} planes are frames, rewrite the file "
                "as a grayscale stack (tifffile.imwrite(..., photometric='minisblack'))."
            ) from None
        raise
    parts = _Parts(path=path, frames=frames, format="tiff")
    if rgb_as_frames:
        parts.metadata["tiff_planar_rgb_read_as_frames"] = True
    parts.metadata["tiff_frame_axis"] = frame_axis
    if n_series > 1:
        parts.metadata["tiff_series_ignored"] = n_series - 1

    info = _any2reg_info(description, imagej, ome, path)
    if info is not None:
        parts.format = "any2reg-tiff"
        parts.take_info(info, f"{path} (any2reg description)")
    if ome is not None:
        parts.format = "ome-tiff" if info is None else parts.format
        _take_ome(parts, ome, frame_axis, frames.shape[0])
    if imagej is not None:
        parts.format = "imagej-tiff" if info is None else parts.format
        _take_frame_interval(parts, imagej, frame_axis, frames.shape[0])
        if parts.spacing is None:
            unit = str(imagej.get("unit", "")).strip()
            scale = _UNIT_MM.get(unit.lower())
            if scale is not None and resolution is not None:
                parts.spacing = (_tidy(scale / resolution[1]), _tidy(scale / resolution[0]))
                parts.spacing_source = "ImageJ unit and resolution"
            elif scale is not None and resolution_problem:
                parts.spacing_problem = f"the ImageJ pixel size is not positive ({resolution_problem}, unit {unit})"
    if parts.spacing is None and imagej is None and ome is None:
        if resolution is not None:
            spacing = _plain_resolution_spacing(resolution)
            if spacing is not None:
                parts.spacing, parts.spacing_source = spacing, "TIFF resolution tags"
        elif resolution_problem and _resolution_unit(page) == 3:  # centimetre: meant as a pixel size
            parts.spacing_problem = f"the TIFF pixel size is not positive ({resolution_problem}, unit cm)"
    return parts


#: ImageJ time units (Calibration.getTimeUnit) in ms; ImageJ's default is seconds.
_TUNIT_MS = {"sec": 1000.0, "s": 1000.0, "second": 1000.0, "seconds": 1000.0, "ms": 1.0, "msec": 1.0,
             "millisecond": 1.0, "milliseconds": 1.0, "min": 60000.0, "minute": 60000.0, "minutes": 60000.0,
             "us": 1e-3, "µs": 1e-3, "\u00b5s": 1e-3, "usec": 1e-3}


def _take_frame_interval(parts: _Parts, imagej: dict, frame_axis: str, n: int) -> None:
    """An ImageJ frame interval (``finterval`` in ``tunit``) as ``metadata["frame_interval_ms"]``, and
    as the timings ``k * interval`` when nothing more specific (any2reg JSON, a JSON sidecar) gives them."""
    from ._common import find_sidecar

    try:
        step = float(imagej.get("finterval", 0) or 0)
    except (TypeError, ValueError):
        return
    unit = str(imagej.get("tunit", "sec") or "sec").strip()
    factor = _TUNIT_MS.get(unit.lower())
    if frame_axis != "T" or not math.isfinite(step) or step <= 0:
        return
    if factor is None:
        parts.metadata["frame_interval_note"] = f"ImageJ finterval={step:g} in an unknown time unit {unit!r}: not used"
        return
    interval = _tidy(step * factor)
    parts.metadata["frame_interval_ms"] = interval
    if parts.timings is None and find_sidecar(parts.path) is None:
        parts.timings = np.arange(n, dtype=np.float64) * interval
        parts.timings_source = f"{parts.path} (ImageJ frame interval finterval={step:g} {unit})"


def _tidy(value: float) -> float:
    """Drop rounding noise from rational/unit conversions (10 significant digits)."""
    return float(f"{value:.10g}")


def _page_resolution(page: Any) -> tuple[tuple[float, float, int] | None, str | None]:
    """``((x pixels per unit, y pixels per unit, ResolutionUnit), None)``, or ``(None, problem)``.

    ``problem`` is ``None`` when the tags are absent and describes the values when they are
    present but unusable (zero, negative, NaN), so that the fall-back to 1 mm can be reported.
    """
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
    except KeyError:
        return None, None
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2

    def ratio(value: Any) -> float:
        return value[0] / value[1] if isinstance(value, tuple) else float(value)

    def text(value: Any) -> str:
        return f"{value[0]}/{value[1]}" if isinstance(value, tuple) else str(value)

    problem = f"XResolution {text(xres)}, YResolution {text(yres)} pixels per unit"
    try:
        x, y = ratio(xres), ratio(yres)
    except (ZeroDivisionError, TypeError, ValueError):
        return None, problem
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None, problem
    return (x, y, unit), None


def _resolution_unit(page: Any) -> int:
    tag = page.tags.get("ResolutionUnit")
    return int(tag.value) if tag is not None else 2


def _plain_resolution_spacing(resolution: tuple[float, float, int]) -> tuple[float, float] | None:
    x, y, unit = resolution
    if unit == 3:  # centimetre
        return _tidy(10.0 / y), _tidy(10.0 / x)
    if unit == 2 and not (x == y and x in _DEFAULT_DPI):  # inch, not a print default
        return _tidy(25.4 / y), _tidy(25.4 / x)
    return None


def _any2reg_info(
    description: str, imagej: dict | None, ome: str | None, path: Path
) -> dict[str, Any] | None:
    """The any2reg JSON from an ImageJ line, a JSON description or an OME annotation."""
    candidates = []
    if imagej is not None and isinstance(imagej.get("any2reg"), str):
        candidates.append(imagej["any2reg"])
    for line in description.splitlines():
        if line.startswith("any2reg="):
            candidates.append(line[len("any2reg="):])
    if description.lstrip().startswith("{"):
        candidates.append(description)
    if ome is not None:
        for element in _ome_elements(ome, "CommentAnnotation"):
            value = _ome_child_text(element, "Value")
            if value and value.lstrip().startswith("{"):
                candidates.append(value)
    for text in candidates:
        try:
            content = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(content, dict) and "any2reg" in content:
            return parse_info(content, f"{path} (any2reg description)")
    return None


# ---------------------------------------------------------------------------- OME-XML
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_elements(xml: str, name: str) -> list:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    return [el for el in root.iter() if _local(el.tag) == name]


def _ome_child_text(element: Any, name: str) -> str | None:
    for child in element.iter():
        if _local(child.tag) == name:
            return child.text
    return None


def _take_ome(parts: _Parts, xml: str, frame_axis: str, n: int) -> None:
    """Spacing (PhysicalSizeY/X) and timings (annotations, Plane DeltaT) from OME-XML."""
    pixels = _ome_elements(xml, "Pixels")
    if not pixels:
        return
    pix = pixels[0]
    if parts.spacing is None:
        sizes, given = [], []
        for axis in ("Y", "X"):
            value = pix.get(f"PhysicalSize{axis}")
            unit = pix.get(f"PhysicalSize{axis}Unit", "µm").strip()
            scale = _UNIT_MM.get(unit.lower())
            if value is not None:
                given.append(f"PhysicalSize{axis}={value!r} {unit}")
            try:
                size = _tidy(float(value) * scale) if value is not None and scale else None
            except ValueError:
                size = None
            sizes.append(size if size is not None and math.isfinite(size) and size > 0 else None)
        if all(s is not None for s in sizes):
            parts.spacing, parts.spacing_source = (sizes[0], sizes[1]), "OME PhysicalSizeY/X"
        elif given:
            parts.spacing_problem = (
                f"the OME pixel size ({', '.join(given)}) is not a positive length in a known unit"
            )
    if parts.timings is None:
        for element in _ome_elements(xml, "M"):  # MapAnnotation entries
            key = (element.get("K") or "").strip()
            if key in TIMING_KEYS and element.text:
                parts.timings = decode_timings(element.text, f"{parts.path} (OME MapAnnotation {key})")
                parts.timings_source = f"{parts.path} (OME MapAnnotation {key})"
                break
    if parts.timings is None:
        index_attr = {"T": "TheT", "Z": "TheZ", "C": "TheC"}.get(frame_axis)
        planes = [p for p in pix if _local(p.tag) == "Plane"]
        times: dict[int, float] = {}
        for plane in planes:
            delta = plane.get("DeltaT")
            if delta is None or index_attr is None:
                continue
            scale = _UNIT_MS.get(plane.get("DeltaTUnit", "s").strip().lower())
            try:
                times.setdefault(int(plane.get(index_attr, "0")), float(delta) * scale)
            except (TypeError, ValueError):
                continue
        if len(times) == n and sorted(times) == list(range(n)):
            parts.timings = np.array([times[i] for i in range(n)])
            parts.timings_source = f"{parts.path} (OME Plane DeltaT)"


# ---------------------------------------------------------------------------- writing
def _description_json(sequence: Sequence) -> str:
    content = sequence_header(sequence)
    return json.dumps(content, ensure_ascii=True, allow_nan=False)


def write_tiff(path: Any, sequence: Sequence, *, overwrite: bool = False) -> Path:
    """Write a sequence as a float32 multi-page TIFF that :func:`read_tiff` reads back exactly.

    Parameters
    ----------
    path : str or Path
        Target ``.tif`` / ``.tiff`` (ImageJ hyperstack) or ``.ome.tif`` / ``.ome.tiff``
        (OME-TIFF).
    sequence : Sequence
        The sequence; its frames are not modified.
    overwrite : bool, optional
        Replace an existing file. Default: raise :class:`FileExistsError`.

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    Frames, timings (``inf`` stored as ``"inf"``), spacing, kind, name and the
    JSON-serialisable metadata are kept in the any2reg JSON; the pixel size is also in the
    resolution tags (ImageJ unit ``mm``) or OME PhysicalSizeY/X so Fiji and OME readers
    see it. The write is atomic (:func:`atomic_write`).
    """
    if not isinstance(sequence, Sequence):
        raise TypeError(f"write_tiff needs a Sequence; got {type(sequence).__name__}.")
    path = Path(path)
    _, ext = split_name(path)
    if ext not in TIFF_EXTENSIONS:
        raise ValueError(
            f"{path}: write_tiff writes {', '.join(TIFF_EXTENSIONS)} files; got {ext or 'no extension'!r}."
        )
    import tifffile

    frames = np.ascontiguousarray(sequence.frames, dtype=np.float32)
    dy, dx = sequence.spacing_mm
    info = _description_json(sequence)
    if ext.startswith(".ome"):
        def writer(temp: Path) -> None:
            tifffile.imwrite(
                temp,
                frames,
                ome=True,
                photometric="minisblack",
                metadata={
                    "axes": "TYX",
                    "Name": sequence.name,
                    "PhysicalSizeX": dx,
                    "PhysicalSizeXUnit": "mm",
                    "PhysicalSizeY": dy,
                    "PhysicalSizeYUnit": "mm",
                    "CommentAnnotation": {"Value": info, "Namespace": _ANNOTATION_NAMESPACE},
                },
            )
    else:
        metadata = {"axes": "TYX", "unit": "mm", "any2reg": info, "Info": _info_text(sequence),
                    "Labels": frame_labels(sequence)}
        interval = uniform_interval_ms(sequence.timings_ms)
        if interval is not None:  # Fiji's frame interval, in its default unit
            metadata.update({"finterval": interval / 1000.0, "tunit": "sec"})

        def writer(temp: Path) -> None:
            tifffile.imwrite(
                temp,
                frames,
                imagej=True,
                photometric="minisblack",
                resolution=(1.0 / dx, 1.0 / dy),  # pixels per mm (unit=mm)
                metadata=metadata,
            )

    return atomic_write(path, writer, overwrite=overwrite)


_TIMING_LABELS = {"inversion_times_ms": "TI", "saturation_times_ms": "TS", "trigger_times_ms": "trigger"}


def frame_labels(sequence: Sequence) -> list[str]:
    """One ImageJ slice label per frame (Fiji shows it above the image): ``"TI 100 ms"``."""
    if sequence.timings_ms is None:
        return [f"frame {k}" for k in range(sequence.n_frames)]
    short = _TIMING_LABELS.get(sequence.timing_name, "t")
    return [f"{short} {value:g} ms" if math.isfinite(value) else f"{short} {value:g} (no preparation)"
            for value in (float(v) for v in sequence.timings_ms)]


def uniform_interval_ms(timings: Any) -> float | None:
    """The frame interval (ms) when the timings are evenly spaced and finite, else ``None``."""
    if timings is None:
        return None
    values = np.asarray(timings, dtype=np.float64)
    if values.size < 2 or not np.all(np.isfinite(values)):
        return None
    steps = np.diff(values)
    if steps[0] <= 0 or not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-6):
        return None
    return float(steps[0])


def _info_text(sequence: Sequence) -> str:
    """Readable summary shown by Fiji's Image > Show Info."""
    timings = encode_timings(sequence.timings_ms)
    return (
        f"napari-any2reg sequence {sequence.name!r}\n"
        f"kind: {sequence.kind}\n"
        f"{sequence.timing_name}: {timings}\n"
        f"spacing_mm (dy, dx): {list(sequence.spacing_mm)}\n"
    )
