"""Target registration error: clicked raw-frame points mapped to the common grid, and the TRE
per landmark and overall before and after a registration (:class:`TREReport`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Mapping

import numpy as np

from ..metrics import landmark_tre
from ..spatial import map_points_to_common
from .table import LandmarkError, LandmarkTable, _as_field


def landmarks_to_common(table: LandmarkTable, displacement: Any) -> LandmarkTable:
    """Map every point to the common (registered) grid: solve ``x + u_i(x) = p`` (``docs/design.md`` §9).

    Rows keep their frame and name; after a perfect registration every frame's point of one
    landmark maps to the same common-grid position. Duplicated ``(frame, name)`` rows are mapped
    like the others.
    """
    u = _as_field(displacement)
    if len(table) and table.n_frames > u.shape[0]:
        raise LandmarkError(
            f"a landmark is placed on frame {table.n_frames - 1} but the registration has {u.shape[0]} frames."
        )
    mapped = np.array(table.points, copy=True)
    for frame in np.unique(table.frames):
        rows = table.frames == frame
        mapped[rows] = map_points_to_common(u, int(frame), table.points[rows].astype(np.float32))
    return dataclasses.replace(table, points=mapped)


@dataclasses.dataclass(frozen=True)
class TREReport:
    """Groupwise TRE per landmark before and after registration (mm).

    Attributes
    ----------
    before, after : dict of str to float
        :func:`.metrics.landmark_tre` results: per landmark and ``"overall"`` (mean over
        landmarks). ``after`` is empty when no displacement was given.
    n_frames : dict of str to int
        Frames on which each landmark is placed (the pairs are over these).
    spacing_mm : (dy, dx)
    spacing_source : str
    """

    before: dict[str, float]
    after: dict[str, float]
    n_frames: dict[str, int]
    spacing_mm: tuple[float, float]
    spacing_source: str = "argument"

    @property
    def landmark_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.before if name != "overall")

    def rows(self) -> list[dict[str, Any]]:
        """One row per landmark, then ``overall``: ``landmark, n_frames, tre_before_mm, tre_after_mm``."""
        out = []
        for name in self.landmark_names + ("overall",):
            out.append(
                {
                    "landmark": name,
                    "n_frames": self.n_frames.get(name, max(self.n_frames.values(), default=0)) if name != "overall" else None,
                    "tre_before_mm": self.before.get(name, float("nan")),
                    "tre_after_mm": self.after.get(name, float("nan")),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (NaN → ``None``)."""
        def clean(values: dict[str, float]) -> dict[str, float | None]:
            return {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}

        return {
            "definition": "mean over frame pairs of the distance (mm) between a landmark's positions mapped "
                          "to the common grid by inverting x + u_i(x) = p_i (before: raw positions)",
            "spacing_mm": list(self.spacing_mm),
            "spacing_source": self.spacing_source,
            "before_mm": clean(self.before),
            "after_mm": clean(self.after),
            "n_frames": dict(self.n_frames),
        }

    def csv_text(self) -> str:
        """``landmark,n_frames,tre_before_mm,tre_after_mm`` (empty cells for missing values)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["landmark", "n_frames", "tre_before_mm", "tre_after_mm"])
        for row in self.rows():
            cells = [row["landmark"], "" if row["n_frames"] is None else row["n_frames"]]
            for key in ("tre_before_mm", "tre_after_mm"):
                value = row[key]
                cells.append(repr(float(value)) if math.isfinite(value) else "")
            writer.writerow(cells)
        return buffer.getvalue()

    def lines(self) -> list[str]:
        """A plain-text table for the terminal."""
        width = max([len("landmark"), len("overall")] + [len(n) for n in self.landmark_names])
        unit = "mm" if self.spacing_source != "default" else "px"
        out = [f"{'landmark':<{width}}  frames  before ({unit})  after ({unit})"]
        for row in self.rows():
            frames = "" if row["n_frames"] is None else str(row["n_frames"])
            before = _fmt(row["tre_before_mm"])
            after = _fmt(row["tre_after_mm"])
            out.append(f"{row['landmark']:<{width}}  {frames:>6}  {before:>11}  {after:>10}")
        return out


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "—"


def tre_before_after(
    landmarks: LandmarkTable | Mapping[str, Any],
    displacement: Any = None,
    spacing_mm: Any = None,
    n_frames: int | None = None,
) -> TREReport:
    """TRE per landmark and overall, on the raw positions (before) and through ``displacement`` (after).

    Parameters
    ----------
    landmarks : LandmarkTable or dict name -> (N, 2)
        Points clicked on the raw frames (a table with a point placed twice on one frame is an
        error: see :meth:`LandmarkTable.keep_last`).
    displacement : ndarray (N, 2, H, W), optional
        The registration's pull-back field; without it only ``before`` is computed.
    spacing_mm : (dy, dx), optional
        Overrides the table's spacing.
    n_frames : int, optional
        Frames of the sequence (default: the displacement's, else the table's).

    Returns
    -------
    TREReport
    """
    if not isinstance(landmarks, LandmarkTable):
        landmarks = LandmarkTable.from_positions(landmarks, spacing_mm if spacing_mm is not None else (1.0, 1.0))
    if spacing_mm is not None:
        landmarks = landmarks.with_spacing(spacing_mm, "argument")
    if not len(landmarks):
        raise LandmarkError("no landmarks placed yet; click each landmark on the frames first.")
    u = None if displacement is None else _as_field(displacement)
    n = n_frames if n_frames is not None else (u.shape[0] if u is not None else landmarks.n_frames)
    if u is not None and n != u.shape[0]:
        raise LandmarkError(f"the sequence has {n} frames but the displacement has {u.shape[0]}.")
    positions = landmarks.positions(n)
    counts = {name: int(np.isfinite(p).all(axis=1).sum()) for name, p in positions.items()}
    before = landmark_tre(positions, None, landmarks.spacing_mm)
    after = landmark_tre(positions, u, landmarks.spacing_mm) if u is not None else {}
    return TREReport(before, after, counts, landmarks.spacing_mm, landmarks.spacing_source)
