"""The landmark table: the default landmarks and CSV columns, :class:`LandmarkError`,
:class:`LandmarkTable` (one row per placed point), and the checks of the displacement and the
frame index that the TRE, propagation and Dice modules share."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np


DEFAULT_LANDMARKS = ("rv_insertion_anterior", "rv_insertion_inferior")

#: Human-readable descriptions (tool tips, report).
LANDMARK_DESCRIPTIONS = {
    "rv_insertion_anterior": "anterior RV insertion point",
    "rv_insertion_inferior": "inferior RV insertion point",
    "lv_centre": "centre of the LV blood pool",
}

#: Columns written to a landmark CSV, in order (the first four are required on reading).
CSV_COLUMNS = ("frame", "name", "y", "x", "y_mm", "x_mm")

_REQUIRED = CSV_COLUMNS[:4]


class LandmarkError(ValueError):
    """Landmarks that cannot be used: a bad CSV, a duplicated point, a frame out of range..."""


# ====================================================================== the table
def _spacing(spacing_mm: Any) -> tuple[float, float]:
    values = [float(v) for v in np.asarray(spacing_mm, dtype=np.float64).reshape(-1)]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise LandmarkError(f"spacing_mm must be (dy, dx) in mm, two positive numbers; got {spacing_mm!r}.")
    return values[0], values[1]


@dataclasses.dataclass(frozen=True, eq=False)
class LandmarkTable:
    """Named points placed on the frames of a sequence (one row per point).

    Parameters
    ----------
    frames : array_like of int, shape (M,)
        0-based frame of each point.
    names : array_like of str, shape (M,)
        Landmark name of each point (the same name on every frame).
    points : array_like of float, shape (M, 2)
        ``(y, x)`` pixel position in that frame.
    spacing_mm : (dy, dx)
        Pixel spacing, for the mm columns and distances.
    spacing_source : str
        Where the spacing came from (``"argument"``, ``"csv"``, ``"default"``...), so callers can
        warn when distances are really in pixels.

    The arrays are copied; a table is never modified in place (methods return new tables).
    """

    frames: np.ndarray
    names: np.ndarray
    points: np.ndarray
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    spacing_source: str = "argument"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        frames = np.asarray(self.frames)
        points = np.array(self.points, dtype=np.float64, copy=True).reshape(-1, 2) if np.size(self.points) else np.zeros((0, 2))
        names = np.array([str(n) for n in np.asarray(self.names, dtype=object).reshape(-1)], dtype=object)
        if frames.size and (frames.dtype.kind == "f" and not np.all(frames == np.round(frames))):
            raise LandmarkError("landmark frames must be whole numbers (0-based frame indices).")
        frames = np.array(frames, dtype=np.int64, copy=True).reshape(-1)
        if not (len(frames) == len(names) == len(points)):
            raise LandmarkError(
                f"a landmark table needs one frame, name and (y, x) per point; got {len(frames)} frames, "
                f"{len(names)} names and {len(points)} points."
            )
        if np.any(frames < 0):
            raise LandmarkError(f"landmark frames must be 0 or more; got {int(frames.min())}.")
        if not np.all(np.isfinite(points)):
            raise LandmarkError("landmark positions must be finite numbers (no NaN / inf).")
        if any(not n.strip() for n in names):
            raise LandmarkError("every landmark needs a name; found an empty one.")
        for array in (frames, names, points):
            array.flags.writeable = False
        set_(self, "frames", frames)
        set_(self, "names", names)
        set_(self, "points", points)
        set_(self, "spacing_mm", _spacing(self.spacing_mm))

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.frames.size)

    @property
    def landmark_names(self) -> tuple[str, ...]:
        """Distinct names in order of first appearance."""
        return tuple(dict.fromkeys(self.names.tolist()))

    @property
    def n_frames(self) -> int:
        """One more than the largest frame index (0 for an empty table)."""
        return int(self.frames.max()) + 1 if len(self) else 0

    @property
    def points_mm(self) -> np.ndarray:
        """``(M, 2)`` positions in mm (``y * dy``, ``x * dx``)."""
        return self.points * np.asarray(self.spacing_mm)

    def duplicates(self) -> list[tuple[int, str]]:
        """``(frame, name)`` pairs placed more than once."""
        seen: set[tuple[int, str]] = set()
        repeated: list[tuple[int, str]] = []
        for key in zip(self.frames.tolist(), self.names.tolist()):
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
        return repeated

    def keep_last(self) -> "LandmarkTable":
        """The table with only the last point of each ``(frame, name)`` (a re-click replaces)."""
        last: dict[tuple[int, str], int] = {}
        for row, key in enumerate(zip(self.frames.tolist(), self.names.tolist())):
            last[key] = row
        return self.subset(sorted(last.values()))

    def subset(self, rows: Any) -> "LandmarkTable":
        """The table restricted to ``rows`` (indices or a boolean mask)."""
        index = np.arange(len(self))[np.asarray(rows)] if len(self) else np.zeros(0, int)
        return dataclasses.replace(self, frames=self.frames[index], names=self.names[index], points=self.points[index])

    def sorted(self) -> "LandmarkTable":
        """Rows ordered by frame, then by landmark (first-appearance order)."""
        order = {name: k for k, name in enumerate(self.landmark_names)}
        rows = sorted(range(len(self)), key=lambda r: (int(self.frames[r]), order[self.names[r]]))
        return self.subset(rows)

    def with_spacing(self, spacing_mm: Any, source: str = "argument") -> "LandmarkTable":
        return dataclasses.replace(self, spacing_mm=_spacing(spacing_mm), spacing_source=source)

    def positions(self, n_frames: int | None = None) -> dict[str, np.ndarray]:
        """Per landmark, the ``(N, 2)`` positions per frame (NaN where it was not placed).

        This is the form :func:`.metrics.landmark_tre` takes.

        Raises
        ------
        LandmarkError
            If a landmark is placed twice on one frame, or a frame is ``>= n_frames``.
        """
        n = self.n_frames if n_frames is None else int(n_frames)
        repeated = self.duplicates()
        if repeated:
            frame, name = repeated[0]
            raise LandmarkError(
                f"landmark {name!r} is placed more than once on frame {frame}; keep one point per "
                "landmark and frame (delete the extra point, or use keep_last())."
            )
        if len(self) and self.n_frames > n:
            raise LandmarkError(
                f"a landmark is placed on frame {self.n_frames - 1} but the sequence has {n} frames "
                f"(0..{n - 1}); check the frame column (it is 0-based)."
            )
        out = {name: np.full((n, 2), np.nan) for name in self.landmark_names}
        for frame, name, point in zip(self.frames, self.names, self.points):
            out[name][frame] = point
        return out

    @classmethod
    def from_positions(
        cls, positions: Mapping[str, Any], spacing_mm: Any = (1.0, 1.0), spacing_source: str = "argument"
    ) -> "LandmarkTable":
        """Build a table from ``{name: (N, 2)}`` positions per frame (NaN rows are skipped)."""
        frames, names, points = [], [], []
        for name, array in positions.items():
            array = np.asarray(array, dtype=np.float64)
            if array.ndim != 2 or array.shape[1] != 2:
                raise LandmarkError(f"landmark {name!r}: expected (N, 2) positions (y, x) per frame; got {array.shape}.")
            for frame, point in enumerate(array):
                if np.all(np.isfinite(point)):
                    frames.append(frame)
                    names.append(str(name))
                    points.append(point)
        table = cls(np.asarray(frames, np.int64), np.asarray(names, object), np.asarray(points).reshape(-1, 2),
                    spacing_mm, spacing_source)
        return table.sorted()

    def to_records(self) -> list[dict[str, Any]]:
        """JSON/CSV-friendly rows with the :data:`CSV_COLUMNS` keys."""
        mm = self.points_mm
        return [
            {"frame": int(f), "name": str(n), "y": float(p[0]), "x": float(p[1]), "y_mm": float(q[0]), "x_mm": float(q[1])}
            for f, n, p, q in zip(self.frames, self.names, self.points, mm)
        ]


def _as_field(displacement: Any) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise LandmarkError(
            f"displacement must be (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}. Use the "
            "registration's displacement.npy or the registered layer's metadata."
        )
    return u


def _frame_index(frame: Any, n_frames: int) -> int:
    k = int(frame)
    if not 0 <= k < n_frames:
        raise LandmarkError(f"frame {k} is outside 0..{n_frames - 1}.")
    return k
