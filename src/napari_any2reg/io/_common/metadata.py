"""What travels beside the frames: per-frame timings as text (``inf`` for a frame without
preparation), JSON-friendly metadata and the sequence header of the writers, and the JSON
sidecar (found next to a file, read and checked)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...core.geometry import SliceGeometry
from ...core.sequence import SEQUENCE_KINDS
from .errors import READER_KEYS, TIMING_KEYS, SequenceReadError
from .naming import split_name


# ---------------------------------------------------------------------------- timings
def encode_timings(timings: Any) -> list | None:
    """Timings as a JSON-safe list: ``inf`` becomes the string ``"inf"``."""
    if timings is None:
        return None
    out: list = []
    for value in np.asarray(timings, dtype=np.float64).reshape(-1).tolist():
        if math.isinf(value):
            out.append("inf" if value > 0 else "-inf")
        else:
            out.append(value)
    return out


def decode_timings(values: Any, source: str) -> np.ndarray:
    """Parse timings from JSON values, strings or numbers.

    Accepts numbers, numeric strings, ``"inf"`` / ``"Infinity"`` (any case), ``null``
    (read as ``inf``: a frame without preparation) and a comma/space separated string.

    Raises
    ------
    SequenceReadError
        Naming ``source`` when a value is not a number.
    """
    if isinstance(values, str):
        values = [v for v in re.split(r"[,;\s]+", values.strip()) if v]
    if np.isscalar(values):
        values = [values]
    out = []
    for value in values:
        if value is None:
            out.append(math.inf)
            continue
        try:
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise SequenceReadError(
                f"{source}: timing {value!r} is not a number; give times in ms "
                "(use \"inf\" for a frame without preparation)."
            ) from None
        if math.isnan(number):
            raise SequenceReadError(
                f"{source}: timing {value!r} is NaN; use \"inf\" for a frame without preparation."
            )
        out.append(number)
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------------------- metadata
def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        if value.size > 4096:
            raise TypeError("array too large for a text header")
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def jsonable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Keep the JSON-serialisable entries of ``metadata`` (converted), drop the rest.

    numpy scalars and small arrays are converted to Python values; non-finite floats become
    strings; entries the readers add themselves (``source``, ``format``, ...) are dropped.
    """
    out = {}
    for key, value in metadata.items():
        if key in READER_KEYS:
            continue
        try:
            converted = _jsonable(value)
            json.dumps(converted, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(key)] = converted
    return out


def sequence_header(sequence: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON header every writer stores (TIFF description, NIfTI sidecar) to round-trip a sequence."""
    return {
        "any2reg": 1,
        "kind": sequence.kind,
        "name": sequence.name,
        "timings_ms": encode_timings(sequence.timings_ms),
        "timing_name": sequence.timing_name,
        "spacing_mm": list(sequence.spacing_mm),
        "metadata": jsonable_metadata(sequence.metadata) if metadata is None else metadata,
        **({"geometry": sequence.geometry.to_dict()} if getattr(sequence, "geometry", None) is not None else {}),
    }


# ---------------------------------------------------------------------------- sidecars
def find_sidecar(path: Path) -> Path | None:
    """The JSON sidecar next to ``path`` (``<stem>.json`` or ``<name>.json``), if any."""
    path = Path(path)
    stem, _ = split_name(path)
    for candidate in (path.with_name(stem + ".json"), path.with_name(path.name + ".json")):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: Path) -> dict[str, Any]:
    """Read a JSON sidecar.

    Returns
    -------
    dict
        Keys present only when found: ``timings`` (float array) with ``timing_key``,
        ``spacing`` (tuple), ``kind`` (str), ``name`` (str), ``metadata`` (dict).

    Raises
    ------
    SequenceReadError
        If the file is not valid JSON, not an object, or a value has the wrong form.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SequenceReadError(
            f"{path}: the JSON sidecar cannot be read ({exc}); fix or remove it."
        ) from exc
    if not isinstance(content, dict):
        raise SequenceReadError(
            f"{path}: the JSON sidecar must hold an object such as "
            '{"timings_ms": [...], "spacing_mm": [dy, dx], "kind": "molli"}.'
        )
    return parse_info(content, str(path))


def parse_info(content: dict[str, Any], source: str) -> dict[str, Any]:
    """Pick the any2reg fields out of a JSON object (sidecar or file description)."""
    info: dict[str, Any] = {}
    for key in TIMING_KEYS:
        if content.get(key) is not None:
            info["timings"] = decode_timings(content[key], source)
            info["timing_key"] = key
            break
    spacing = content.get("spacing_mm")
    if spacing is not None:
        try:
            values = [float(v) for v in np.asarray(spacing, dtype=object).reshape(-1)]
        except (TypeError, ValueError):
            values = []
        if len(values) == 1:
            values = values * 2
        if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
            raise SequenceReadError(
                f"{source}: spacing_mm must be [dy, dx] in mm (positive numbers); got {spacing!r}."
            )
        info["spacing"] = (values[0], values[1])
    kind = content.get("kind")
    if kind is not None:
        kind = str(kind).lower()
        if kind not in SEQUENCE_KINDS:
            raise SequenceReadError(
                f"{source}: unknown kind {content['kind']!r}; use one of {', '.join(SEQUENCE_KINDS)}."
            )
        info["kind"] = kind
    if isinstance(content.get("name"), str) and content["name"]:
        info["name"] = content["name"]
    if isinstance(content.get("metadata"), dict):
        info["metadata"] = dict(content["metadata"])
    if isinstance(content.get("geometry"), dict):
        try:
            info["geometry"] = SliceGeometry.from_dict(content["geometry"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SequenceReadError(f"{source}: invalid geometry ({exc}); fix or remove the entry.") from exc
    if "timings" not in info and content.get("InversionTime") is not None:
        # BIDS sidecars (dcm2niix) give InversionTime in seconds: one value, or one per volume
        values = decode_timings(content["InversionTime"], source) * 1000.0
        if values.size > 1:
            info["timings"], info["timing_key"] = values, "InversionTime (BIDS, s)"
        else:
            info.setdefault("metadata", {})["bids_inversion_time_ms"] = float(values[0])
    return info
