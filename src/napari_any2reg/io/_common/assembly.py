"""From file to sequence: the checks of the path and of the frame axes, the :class:`_Parts`
record every reader fills, :func:`build_sequence` (sidecar, overrides and validation, in the
precedence of :mod:`napari_any2reg.io._common`) and the choice of one slice of several."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...core.geometry import SliceGeometry
from ...core.sequence import Sequence, SequenceError
from .errors import SequenceFileNotFoundError, SequenceReadError, SequenceReadWarning
from .metadata import find_sidecar, read_sidecar
from .naming import guess_kind, split_name


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
