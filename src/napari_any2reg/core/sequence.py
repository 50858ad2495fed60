"""The quantitative cardiac sequence model.

A :class:`Sequence` is the one object that travels between readers, engines, the CLI and
the napari widgets. It follows the project conventions (``docs/design.md`` §2):

* ``frames``: ``float32`` array ``(N, H, W)``, frame axis first;
* ``timings_ms``: one inversion / saturation / trigger time per frame, in ms (``inf`` for a
  non-inverted STONE frame), or ``None`` when unknown;
* ``spacing_mm``: pixel spacing ``(dy, dx)`` in mm;
* ``geometry``: where the slice lies in the scanner (:class:`~.geometry.SliceGeometry`), or
  ``None`` when the file did not say.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .geometry import SliceGeometry
from .vocabulary import arg

__all__ = ["Sequence", "SequenceError", "SEQUENCE_KINDS", "TIMING_NAMES"]

#: Sequence kinds the project knows about. ``unknown`` is accepted for user data.
SEQUENCE_KINDS = ("molli", "stone", "sasha", "ir", "asl", "perfusion", "cine", "t2prep", "mge", "unknown")

#: What the per-frame timing means for each kind (used in labels and metadata).
TIMING_NAMES = {
    "molli": "inversion_times_ms",
    "stone": "inversion_times_ms",
    "ir": "inversion_times_ms",
    "sasha": "saturation_times_ms",
    "cine": "trigger_times_ms",
    "perfusion": "trigger_times_ms",
    "asl": "trigger_times_ms",
    "t2prep": "echo_times_ms",  # the T2-preparation durations (the prep module's TE)
    "mge": "echo_times_ms",
    "unknown": "timings_ms",
}


#: Largest timing (ms) a sequence may have: 1e7 ms (nearly 3 h) is beyond any inversion, echo or
#: trigger time, so a larger one is a wrong unit or a damaged header (1e300 was accepted). ``inf``
#: stays allowed: it marks a frame without preparation (a non-inverted STONE frame).
MAX_TIMING_MS = 1e7

#: Kinds whose timings are inversion / saturation times, counted from the preparation to the
#: readout: never negative. A negative trigger time (perfusion, DCE, cine: frames before the
#: reference trigger) may be legitimate, so those kinds are not checked.
PREPARATION_KINDS = ("molli", "stone", "sasha", "ir")


class SequenceError(ValueError):
    """Raised when an array cannot be used as a quantitative cardiac sequence."""


@dataclasses.dataclass(frozen=True, eq=False)
class Sequence:
    """A motion-affected quantitative cardiac MR sequence.

    Parameters
    ----------
    frames : array_like, shape (N, H, W)
        Magnitude images, frame axis first. Converted to a new ``float32`` array: the
        caller's array is never modified or aliased.
    timings_ms : array_like of float, shape (N,), optional
        Inversion / saturation / trigger time of each frame in ms. ``inf`` marks a frame
        without preparation (STONE's reference frame).
    spacing_mm : tuple of float, optional
        Pixel spacing ``(dy, dx)`` in mm. Defaults to ``(1.0, 1.0)``.
    kind : str, optional
        One of :data:`SEQUENCE_KINDS`.
    name : str, optional
        Human-readable name (used for layer and file names).
    metadata : dict, optional
        Extra information carried along (e.g. source file, scanner fields).
    geometry : SliceGeometry or dict, optional
        Position and orientation of the slice in patient coordinates (from DICOM IOP/IPP or
        a NIfTI affine); carried into napari and every export. ``None`` when unknown.

    Raises
    ------
    SequenceError
        If the frames are not 3-D, have fewer than two frames, contain NaN/Inf, are all
        constant, if the timings do not match the number of frames, or if the spacing is
        not positive.
    """

    frames: np.ndarray
    timings_ms: np.ndarray | None = None
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    kind: str = "unknown"
    name: str = "sequence"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    geometry: SliceGeometry | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalise fields once, here
        set_(self, "frames", _validate_frames(self.frames, self.name))
        n = self.frames.shape[0]
        set_(self, "timings_ms", _validate_timings(self.timings_ms, n))
        set_(self, "spacing_mm", _validate_spacing(self.spacing_mm))
        kind = str(self.kind).lower()
        if kind not in SEQUENCE_KINDS:
            raise SequenceError(
                f"Unknown sequence kind {self.kind!r}; use one of {', '.join(SEQUENCE_KINDS)}."
            )
        set_(self, "kind", kind)
        _check_preparation_times(self.timings_ms, kind)
        set_(self, "metadata", dict(self.metadata))
        if self.geometry is not None:
            try:
                set_(self, "geometry", SliceGeometry.from_dict(self.geometry))
            except (KeyError, TypeError, ValueError) as exc:
                raise SequenceError(f"{self.name!r}: invalid slice geometry ({exc}).") from exc
        self.frames.flags.writeable = False  # the loaded data is read-only from here on

    # ------------------------------------------------------------------ properties
    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """In-plane shape ``(H, W)``."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def timing_name(self) -> str:
        return TIMING_NAMES[self.kind]

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> "Sequence":
        """Return a copy with some fields replaced (validated again)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        return Sequence(**fields)

    def permuted(self, order: np.ndarray) -> "Sequence":
        """Return the sequence with its frames (and timings) reordered by ``order``."""
        order = np.asarray(order, dtype=int)
        if sorted(order.tolist()) != list(range(self.n_frames)):
            raise SequenceError(f"order must be a permutation of 0..{self.n_frames - 1}")
        timings = None if self.timings_ms is None else self.timings_ms[order]
        return self.replace(frames=self.frames[order], timings_ms=timings)


# ---------------------------------------------------------------------- validation
def _validate_frames(frames: Any, name: str) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype.kind == "c":
        raise SequenceError(
            f"{name!r}: complex data given; pass magnitude images (np.abs) instead."
        )
    if array.ndim != 3:
        raise SequenceError(
            f"{name!r}: frames must be a 3-D array (N, H, W) with the frame axis first; "
            f"got {array.ndim}-D with shape {array.shape}."
        )
    n, h, w = array.shape
    if n < 2:
        raise SequenceError(
            f"{name!r}: a sequence needs at least 2 frames to register; got {n}."
        )
    if h < 8 or w < 8:
        raise SequenceError(
            f"{name!r}: frames of {h}x{w} pixels are too small; need at least 8x8. "
            "Is the frame axis first (N, H, W)?"
        )
    if array.dtype.kind in "fiu" and array.dtype.itemsize > 4 and array.size:
        # float64 (or int64) values beyond float32 become Inf in the conversion below: say so,
        # rather than blaming the data for NaN/Inf it does not contain
        magnitude = np.abs(array, dtype=np.float64) if array.dtype.kind == "f" else np.abs(array.astype(np.float64))
        limit = float(np.finfo(np.float32).max)
        too_large = np.isfinite(magnitude) & (magnitude > limit)
        if too_large.any():
            bad = np.unique(np.nonzero(too_large)[0]).tolist()
            raise SequenceError(
                f"{name!r}: frames {bad} hold values up to {float(magnitude[too_large].max()):.3g}, beyond the "
                f"float32 range (±{limit:.3g}) the frames are stored in (overflow); rescale the data "
                "first (e.g. divide by its maximum)."
            )
    array = np.array(array, dtype=np.float32, copy=True)
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.unique(np.nonzero(~finite)[0]).tolist()
        raise SequenceError(
            f"{name!r}: frames {bad} contain NaN or Inf values; replace them "
            "(e.g. np.nan_to_num) or drop those frames."
        )
    per_frame_range = np.ptp(array.reshape(n, -1), axis=1)
    if np.all(per_frame_range == 0):
        raise SequenceError(f"{name!r}: every frame is constant; nothing to register.")
    constant = np.nonzero(per_frame_range == 0)[0].tolist()
    if constant:
        raise SequenceError(
            f"{name!r}: frames {constant} are constant images; remove them before registering."
        )
    return array


def _validate_timings(timings: Any, n: int) -> np.ndarray | None:
    if timings is None:
        return None
    values = np.array(timings, dtype=np.float64, copy=True).reshape(-1)
    if values.size != n:
        raise SequenceError(
            f"{values.size} timings given for {n} frames; give exactly one timing (ms) per frame."
        )
    if np.isnan(values).any():
        raise SequenceError("timings contain NaN; use inf for a frame without preparation.")
    beyond = np.nonzero((values == -np.inf) | (np.isfinite(values) & (np.abs(values) > MAX_TIMING_MS)))[0]
    if beyond.size:
        k = int(beyond[0])
        raise SequenceError(
            f"frame {k} has a time of {values[k]:.6g} ms, beyond +-{MAX_TIMING_MS:g} ms: no inversion, echo or trigger "
            f"time is that long; give the times in ms with {arg('timings_ms')} (inf for a frame without preparation)."
        )
    values.flags.writeable = False
    return values


def _check_preparation_times(timings: np.ndarray | None, kind: str) -> None:
    """SequenceError when a kind whose timings are inversion / saturation times has a negative one."""
    if timings is None or kind not in PREPARATION_KINDS:
        return
    negative = np.nonzero(timings < 0)[0]
    if negative.size:
        shown = ", ".join(f"{timings[k]:g}" for k in negative[:4]) + (", ..." if negative.size > 4 else "")
        raise SequenceError(
            f"{negative.size} frame(s) have a negative time ({shown} ms), but the times of a {kind} sequence are "
            f"{TIMING_NAMES[kind].removesuffix('_ms').replace('_', ' ')} (0 ms or more, after the preparation); give "
            f"the right times in ms with {arg('timings_ms')}, or the right {arg('kind')} if it is not {kind}."
        )


#: Pixel spacings (mm) a sequence may have: every scanner pixel is inside, overflow is not.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-3, 1e3


def _validate_spacing(spacing: Any) -> tuple[float, float]:
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.size != 2:
        raise SequenceError(f"pixel spacing must be (dy, dx) in mm; got {values.tolist()}.")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise SequenceError(f"pixel spacing must be positive (mm); got {tuple(values.tolist())}.")
    if np.any(values < MIN_SPACING_MM) or np.any(values > MAX_SPACING_MM):
        # 1e300 mm overflows inside torch; no scanner pixel is outside this range
        raise SequenceError(
            f"pixel spacing {tuple(values.tolist())} mm is outside {MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm, no "
            f"image's pixel size; give the spacing in mm ({arg('spacing_mm')})."
        )
    return float(values[0]), float(values[1])
