"""Pieces shared by the readers and writers: errors, names, timings, sidecars.

Every reader first collects what the file says in a :class:`_Parts` record and then calls
:func:`build_sequence`, which fills the gaps from a JSON sidecar, applies the caller's
overrides and validates the result once (so a wrong timing count in a sidecar does not
matter when the caller passes ``timings_ms`` explicitly).

Precedence, highest first: explicit keyword argument > the file itself (any2reg JSON,
OME-XML, ImageJ/NIfTI header, DICOM tags) > JSON sidecar > guess from the file name >
default (``kind="unknown"``, ``spacing_mm=(1, 1)``, ``timings_ms=None``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.geometry import SliceGeometry
from ..core.sequence import SEQUENCE_KINDS, Sequence, SequenceError

__all__ = [
    "SequenceReadError",
    "SequenceReadWarning",
    "MAX_DECODED_BYTES",
    "check_decoded_size",
    "FILE_EXTENSIONS",
    "TIMING_KEYS",
    "split_name",
    "guess_kind",
    "encode_timings",
    "decode_timings",
    "jsonable_metadata",
    "sequence_header",
    "find_sidecar",
    "read_sidecar",
    "check_file",
    "frames_from_axes",
    "build_sequence",
]

#: File endings :func:`split_name` treats as one extension (longest first so ``.ome.tif`` wins
#: over ``.tif``); every reader extension of ``_dispatch.READERS`` must be here (tested).
FILE_EXTENSIONS = (".ome.tiff", ".ome.tif", ".nii.gz", ".tiff", ".tif", ".nii", ".dcm", ".ima")

#: Sidecar keys that may hold the per-frame timing (first match wins).
TIMING_KEYS = ("timings_ms", "inversion_times_ms", "saturation_times_ms", "trigger_times_ms")

#: Metadata keys the readers add themselves; not copied into exported files.
READER_KEYS = (
    "source", "format", "timings_source", "spacing_source", "kind_source", "sidecar", "read_warnings",
    "nonfinite_mask", "nonfinite_pixels", "geometry_source", "geometry", "scanner_maps",
)

#: Largest image a reader decodes (bytes as float32), unless the environment variable
#: ``ANY2REG_MAX_DECODED_GB`` says otherwise. A cardiac series is at most a few hundred MB (300
#: frames of 512 x 512 is 315 MB); a small compressed file that claims more is corrupt or hostile
#: (a 614 KB TIFF can claim 3 GB) and would exhaust memory before any other check runs.
MAX_DECODED_BYTES = 2 * 1024**3


class SequenceReadError(ValueError):
    """A file or folder cannot be read as a quantitative cardiac sequence.

    The message always names the file (or folder) and the problem and, where possible,
    says how to fix it. A missing path raises a subclass that is also a
    :class:`FileNotFoundError`.
    """


class SequenceFileNotFoundError(SequenceReadError, FileNotFoundError):
    """The path given to a reader does not exist."""


class SequenceReadWarning(UserWarning):
    """A file was read, but something in it was replaced by a default (e.g. an invalid pixel size).

    The same text is kept in ``sequence.metadata["read_warnings"]``.
    """


def check_decoded_size(path: Path, shape: tuple[int, ...], dtype: Any, limit: int | None = None) -> None:
    """Refuse to decode an image whose pixels would exceed :data:`MAX_DECODED_BYTES`.

    Checked from the header, before the pixel data are read, so a corrupt or hostile file
    cannot exhaust memory. The size counts at least 4 bytes per value (frames are float32).
    """
    if limit is None:
        limit = MAX_DECODED_BYTES
        setting = os.environ.get("ANY2REG_MAX_DECODED_GB", "").strip()
        if setting:
            try:
                limit = int(float(setting) * 1e9)
            except ValueError:
                raise SequenceReadError(
                    f"ANY2REG_MAX_DECODED_GB={setting!r} is not a number; set it to a size in GB or unset it."
                ) from None
    limit = int(limit)
    count = math.prod(int(v) for v in shape)
    decoded = count * max(np.dtype(dtype).itemsize, 4)
    if decoded > limit:
        try:
            on_disk = f" from a {_size_text(path.stat().st_size)} file"
        except OSError:
            on_disk = ""
        raise SequenceReadError(
            f"{path}: the header claims {tuple(int(v) for v in shape)} {np.dtype(dtype).name} values, "
            f"{_size_text(decoded)} decoded{on_disk}; more than the {_size_text(limit)} limit for one "
            "sequence. The file is corrupt, or not one cardiac series: save one slice per file or "
            "crop it; if it is genuine, raise the limit with the environment variable "
            "ANY2REG_MAX_DECODED_GB."
        )


def _size_text(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


# ---------------------------------------------------------------------------- names
def split_name(path: str | Path) -> tuple[str, str]:
    """Split a file name into stem and (compound) extension.

    Parameters
    ----------
    path : str or Path
        File path; only the name is used.

    Returns
    -------
    stem, ext : str
        ``ext`` is lower-case and includes the dot (``".nii.gz"``, ``".ome.tif"``); it is
        ``""`` for a name without extension.

    Examples
    --------
    >>> split_name("scan.OME.tif")
    ('scan', '.ome.tif')
    >>> split_name("t1.nii.gz")
    ('t1', '.nii.gz')
    """
    name = Path(path).name
    lower = name.lower()
    for ext in FILE_EXTENSIONS + (".json", ".npy"):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix.lower()) if suffix else (name, "")


_KIND_RULES = (
    ("molli", lambda t: "molli" in t),  # molli, shmolli, mollimoco
    ("sasha", lambda t: "sasha" in t),
    ("stone", lambda t: t.startswith("stone")),
    ("cine", lambda t: t.startswith("cine") or (t.endswith("cine") and not t.endswith("medicine"))),
    ("perfusion", lambda t: t.startswith("perf")),
    ("asl", lambda t: t == "asl" or t.endswith("asl")),  # asl, pcasl, pasl, fairasl
    ("t2prep", lambda t: t.startswith("t2prep")),  # t2prep, t2prepssfp
    ("mge", lambda t: t in ("mge", "megre", "t2s") or t.startswith("t2star")),  # multi-gradient echo T2*
)


def guess_kind(*texts: Any) -> str | None:
    """Guess the sequence kind from names such as a file name or SeriesDescription.

    Parameters
    ----------
    *texts : str
        Texts to search, most specific first; ``None`` entries are skipped.

    Returns
    -------
    str or None
        One of ``molli``, ``sasha``, ``stone``, ``cine``, ``perfusion``, ``asl``, ``t2prep``,
        ``mge``, or ``None`` when nothing matches.

    Examples
    --------
    >>> guess_kind("stone_0138_slice4_t1map")
    'stone'
    >>> guess_kind("ShMOLLI_192i") , guess_kind("tfl_perf_SR"), guess_kind("t1map")
    ('molli', 'perfusion', None)
    """
    for text in texts:
        if not text:
            continue
        tokens = [t for t in re.split(r"[^a-z0-9]+", str(text).lower()) if t]
        for kind, rule in _KIND_RULES:
            if any(rule(token) for token in tokens):
                return kind
    return None


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


# ---------------------------------------------------------------------------- checks
def check_file(path: Any) -> Path:
    """Return ``Path(path)`` if it is an existing file, else raise a clear error."""
    path = Path(path)
    if not path.exists():
        raise SequenceFileNotFoundError(f"{path}: no such file or folder; check the path.")
    if path.is_dir():
        raise SequenceReadError(
            f"{path}: is a folder; only a folder of DICOM files can be read as a sequence. "
            "Give the path of the image file instead."
        )
    return path


def frames_from_axes(data: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, str]:
    """Reduce an array with named axes to ``(N, H, W)``.

    Parameters
    ----------
    data : ndarray
        Image data whose last two named axes are ``Y`` and ``X`` (``S`` samples allowed).
    axes : str
        One character per dimension of ``data`` (tifffile convention, e.g. ``"TZCYX"``).
    path : Path
        For error messages.

    Returns
    -------
    frames : ndarray, shape (N, H, W)
    frame_axis : str
        The axis code the frames came from (``"T"``, ``"Z"``, ...).

    Raises
    ------
    SequenceReadError
        For RGB data, a single 2-D image, or more than one non-singleton non-spatial axis.
    """
    axes = axes.upper()
    if len(axes) != data.ndim:
        axes = "Q" * (data.ndim - 2) + "YX"
    if "S" in axes and data.shape[axes.index("S")] > 1:
        raise SequenceReadError(
            f"{path}: RGB/colour image {data.shape}; registration needs grayscale magnitude "
            "frames. Convert it to a grayscale stack (e.g. in Fiji: Image > Type > 32-bit)."
        )
    if "Y" not in axes or "X" not in axes:
        axes = axes[:-2] + "YX"
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    data = np.transpose(data, order)
    axes = "".join(axes[i] for i in order)
    keep = [i for i in range(data.ndim - 2) if data.shape[i] > 1]
    other = tuple(i for i in range(data.ndim - 2) if data.shape[i] == 1)
    frames = np.squeeze(data, axis=other) if other else data
    if not keep:
        raise SequenceReadError(
            f"{path}: single image {frames.shape[-2:]}; need a time series (N, H, W) with one "
            "frame per inversion/saturation/trigger time."
        )
    if len(keep) > 1:
        dims = ", ".join(f"{axes[i]}={data.shape[i]}" for i in keep)
        raise SequenceReadError(
            f"{path}: {len(keep)} non-spatial axes with more than one entry ({dims}); need a "
            "single time series (N, H, W). Save one slice/channel per file."
        )
    return frames, axes[keep[0]]


# ---------------------------------------------------------------------------- assembly
@dataclasses.dataclass
class _Parts:
    """What a reader found in a file, before sidecar, overrides and validation."""

    path: Path
    frames: np.ndarray
    format: str
    timings: Any = None
    timings_source: str | None = None
    spacing: Any = None
    spacing_source: str | None = None
    kind: str | None = None
    kind_source: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    sidecar: bool = True  # look for a JSON sidecar next to ``path``
    spacing_problem: str | None = None  # an invalid pixel size found in the file (warned if nothing replaces it)
    geometry: SliceGeometry | None = None  # where the slice lies in the scanner (LPS)
    geometry_source: str | None = None

    def take_info(self, info: dict[str, Any], source: str) -> None:
        """Fill empty fields from parsed any2reg/sidecar info."""
        if self.timings is None and "timings" in info:
            self.timings, self.timings_source = info["timings"], source
        if self.spacing is None and "spacing" in info:
            self.spacing, self.spacing_source = info["spacing"], source
        if self.kind is None and "kind" in info:
            self.kind, self.kind_source = info["kind"], source
        if self.name is None and "name" in info:
            self.name = info["name"]
        if self.geometry is None and "geometry" in info:
            self.geometry, self.geometry_source = info["geometry"], source
        for key, value in info.get("metadata", {}).items():
            self.metadata.setdefault(key, value)


def build_sequence(
    parts: _Parts,
    *,
    kind: str | None = None,
    timings_ms: Any = None,
    spacing_mm: Any = None,
    nonfinite: str = "error",
) -> Sequence:
    """Complete ``parts`` (sidecar, name guess, overrides) and build the :class:`Sequence`.

    Parameters
    ----------
    parts : _Parts
    kind, timings_ms, spacing_mm : optional
        Overrides (see :func:`read_sequence`).
    nonfinite : {"error", "mask"}
        ``"mask"``: NaN/Inf samples are set to 0 and the pixels that had one are recorded in
        ``metadata["nonfinite_mask"]`` (bool ``(H, W)``; count in ``metadata["nonfinite_pixels"]``),
        for uses that skip such pixels (T1 fitting) instead of refusing the file.

    Raises
    ------
    SequenceReadError
        Naming the file when the sidecar is bad, the timing count does not match the number
        of frames, or the frames fail :class:`Sequence` validation.
    """
    if nonfinite not in ("error", "mask"):
        raise ValueError(f"nonfinite must be 'error' or 'mask'; got {nonfinite!r}.")
    path = parts.path
    n = int(parts.frames.shape[0])
    needs_more = parts.timings is None or parts.spacing is None or parts.kind is None or parts.geometry is None
    sidecar = find_sidecar(path) if (parts.sidecar and needs_more and path.is_file()) else None
    if sidecar is not None:
        parts.take_info(read_sidecar(sidecar), str(sidecar))
        parts.metadata["sidecar"] = str(sidecar)
    stem = split_name(path)[0]
    if parts.kind is None:
        guessed = guess_kind(stem)
        if guessed is not None:
            parts.kind, parts.kind_source = guessed, "file name"

    if timings_ms is not None:
        parts.timings, parts.timings_source = timings_ms, "argument"
    elif parts.timings is not None:
        count = int(np.size(parts.timings))
        if count != n:
            raise SequenceReadError(
                f"{parts.timings_source}: {count} timings for {n} frames in {path}; give "
                "exactly one time (ms) per frame, or pass timings_ms explicitly."
            )
    if spacing_mm is not None:
        parts.spacing, parts.spacing_source = spacing_mm, "argument"
    if kind is not None:
        parts.kind, parts.kind_source = kind, "argument"

    read_warnings = []
    if parts.spacing is None and parts.spacing_problem:
        read_warnings.append(
            f"{path}: {parts.spacing_problem}; using 1 x 1 mm pixels instead. Distances, TRE and the "
            "registration's smoothness in mm are wrong unless you give the real spacing (CLI: "
            "--spacing-mm DY,DX; Python: spacing_mm=(dy, dx))."
        )
    frames = parts.frames
    metadata = dict(parts.metadata)
    if nonfinite == "mask":
        values = np.asarray(frames)
        if values.dtype.kind in "fc":
            bad = ~np.isfinite(values)
            if bad.any():
                frames = np.where(bad, 0, values)
                metadata["nonfinite_mask"] = bad.reshape(bad.shape[0], *bad.shape[-2:]).any(axis=0)
                metadata["nonfinite_pixels"] = int(metadata["nonfinite_mask"].sum())
    for text in read_warnings:
        warnings.warn(text, SequenceReadWarning, stacklevel=3)
    if read_warnings:
        metadata["read_warnings"] = read_warnings
    metadata.update(
        {
            "source": str(path),
            "format": parts.format,
            "timings_source": parts.timings_source if parts.timings is not None else None,
            "spacing_source": parts.spacing_source if parts.spacing is not None else "default",
            "kind_source": parts.kind_source if parts.kind is not None else "default",
        }
    )
    if parts.geometry is not None:
        metadata["geometry_source"] = parts.geometry_source
    try:
        return Sequence(
            frames=frames,
            timings_ms=parts.timings,
            spacing_mm=parts.spacing if parts.spacing is not None else (1.0, 1.0),
            kind=parts.kind if parts.kind is not None else "unknown",
            name=parts.name or stem or path.name,
            metadata=metadata,
            geometry=parts.geometry,
        )
    except SequenceError as exc:
        raise SequenceReadError(f"{path}: {exc}") from exc


def pick_slice(parts: list, slice_index: int | None):
    """The one ``_Parts`` of a file or series: the only slice, or slice ``slice_index``; several
    slices and no choice is an error that lists them and names the ways to pick one."""
    if slice_index is None:
        if len(parts) == 1:
            return parts[0]
        positions = "; ".join(
            f"{k}: {p.metadata.get('slice_position_mm', k):.1f} mm ({p.frames.shape[0]} frames)" for k, p in enumerate(parts)
        )
        raise SequenceReadError(
            f"{parts[0].path}: holds {len(parts)} slices ({positions}); a sequence is one slice. Pick one "
            "(Python: read_sequence(..., slice_index=K) or read_slices(); CLI: --slice K or --slice all; "
            "napari opens each slice as its own layer)."
        )
    k = int(slice_index)
    if not -len(parts) <= k < len(parts):
        raise SequenceReadError(
            f"{parts[0].path}: slice {k} asked for, but it holds {len(parts)} slice(s) (0..{len(parts) - 1})."
        )
    return parts[k]
