"""Landmarks, target registration error, propagation through a registration, and all-pair Dice.

Readers check a motion correction by clicking the same anatomical point (e.g. the anterior
and inferior RV insertion points) on every frame; researchers report the target registration
error (TRE) and the Dice overlap of segmentations. Everything here is numpy in, numpy out, with
no Qt / napari: the Landmarks widget, the CLI (``any2reg tre``) and the export call it.

Conventions (``docs/design.md`` §2, §9)
----------------------------------------
* A landmark table holds one row per placed point: ``frame`` (0-based, napari's frame
  slider), ``name``, and the pixel position ``(y, x)`` in that *raw* frame (pixel centres at
  integers, like napari's data coordinates of the image). The pixel spacing ``(dy, dx)`` in mm
  gives the ``y_mm, x_mm`` columns.
* The displacement ``u`` ``(N, 2, H, W)`` is a pull-back: ``registered_i(x) = frame_i(x + u_i(x))``.
  So the common-grid point ``x`` is seen at ``x + u_i(x)`` in raw frame ``i`` (*common →
  frame i needs no inversion*), while a point ``p`` clicked on raw frame ``i`` sits at the
  ``x`` solving ``x + u_i(x) = p`` on the common grid (*frame i → common is an inversion*,
  done by fixed-point iteration in :func:`.spatial.map_points_to_common`).

CSV format
----------
``frame,name,y,x,y_mm,x_mm`` — one header line, then one row per point, positions in pixels
and in mm. Only ``frame,name,y,x`` are required on reading; ``y_mm, x_mm`` (when present) give
the spacing. The Landmarks widget and ``any2reg tre`` read and write exactly this format
(:mod:`napari_any2reg.io.landmarks` reads and writes the files; the text is made and parsed here).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .metrics import all_pair_dice, landmark_tre
from .spatial import (
    compose_displacements,
    invert_displacement,
    map_points_to_common,
    sample_displacement_at_points,
    warp,
    warp_labels,
)

__all__ = [
    "DEFAULT_LANDMARKS",
    "LANDMARK_DESCRIPTIONS",
    "CSV_COLUMNS",
    "LandmarkError",
    "LandmarkTable",
    "TREReport",
    "DiceReport",
    "parse_landmarks_csv",
    "landmarks_csv_text",
    "landmarks_to_common",
    "tre_before_after",
    "propagate_points",
    "propagate_landmarks",
    "propagate_labels",
    "label_field_from_frame",
    "dice_before_after",
]

#: The landmarks offered by default: where the RV free wall meets the interventricular septum.
#: Reproducible on every short-axis frame whatever the contrast, hence the standard for TRE.
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


# ====================================================================== CSV
def landmarks_csv_text(table: LandmarkTable) -> str:
    """The CSV text of ``table`` (:data:`CSV_COLUMNS`; floats written so they read back exactly)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in table.to_records():
        writer.writerow([row["frame"], row["name"]] + [repr(row[k]) for k in CSV_COLUMNS[2:]])
    return buffer.getvalue()


def _number(value: str, column: str, line: int, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LandmarkError(f"{source}, line {line}: {column} = {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise LandmarkError(f"{source}, line {line}: {column} = {value!r} is not a finite number.")
    return number


def _spacing_from_mm(pixels: np.ndarray, mm: np.ndarray, column: str, source: str) -> float | None:
    """The single spacing that turns ``pixels`` into ``mm`` (``None`` when no row tells)."""
    usable = np.abs(pixels) > 0.5
    if not usable.any():
        return None
    ratios = mm[usable] / pixels[usable]
    spacing = float(np.median(ratios))
    if not spacing > 0 or np.max(np.abs(ratios - spacing)) > 1e-3 * spacing + 1e-6:
        raise LandmarkError(
            f"{source}: the {column}_mm column is not {column} times one pixel spacing; fix the column, "
            "delete it, or pass the spacing explicitly (spacing_mm / --spacing-mm)."
        )
    return spacing


def parse_landmarks_csv(text: str, spacing_mm: Any = None, *, source: str = "<landmark CSV>") -> LandmarkTable:
    """Parse landmark CSV text (``frame,name,y,x`` in pixels, optional ``y_mm,x_mm``).

    Reading the file is :func:`napari_any2reg.io.landmarks.read_landmarks_csv`; this is the
    parsing and checking, so that any text (a file, a clipboard, a test) gives the same table.

    Parameters
    ----------
    text : str
        The CSV content; blank lines and lines starting with ``#`` are ignored.
    spacing_mm : (dy, dx), optional
        Pixel spacing. Default: derived from the ``y_mm`` / ``x_mm`` columns when present, else
        ``(1, 1)`` with ``spacing_source = "default"`` (distances are then in pixels).
    source : str
        The file name (or another label) used in error messages.

    Returns
    -------
    LandmarkTable

    Raises
    ------
    LandmarkError
        Naming the source, line and problem: missing columns, a frame that is not a whole
        number >= 0, a position that is not a number, an empty name, a landmark placed twice on
        a frame, mm columns that disagree with the pixel columns.
    """
    lines = [(k + 1, line) for k, line in enumerate(text.splitlines()) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise LandmarkError(f"{source}: the landmark CSV is empty; expected a header 'frame,name,y,x' and one row per point.")
    reader = csv.reader([line for _, line in lines])
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise LandmarkError(
            f"{source}: missing column(s) {', '.join(missing)}; a landmark CSV starts with the header "
            f"'{','.join(CSV_COLUMNS)}' (positions in pixels; y_mm, x_mm optional)."
        )
    col = {name: header.index(name) for name in CSV_COLUMNS if name in header}
    has_mm = "y_mm" in col and "x_mm" in col
    frames, names, points, mm = [], [], [], []
    for (line, _), row in zip(lines[1:], reader):
        if len(row) < len(header):
            raise LandmarkError(f"{source}, line {line}: {len(row)} values for {len(header)} columns ({','.join(header)}).")
        frame = _number(row[col["frame"]], "frame", line, source)
        if frame != round(frame) or frame < 0:
            raise LandmarkError(f"{source}, line {line}: frame = {row[col['frame']]!r}; frames are whole numbers from 0.")
        name = row[col["name"]].strip()
        if not name:
            raise LandmarkError(f"{source}, line {line}: the name is empty; give every point a landmark name.")
        frames.append(int(frame))
        names.append(name)
        points.append((_number(row[col["y"]], "y", line, source), _number(row[col["x"]], "x", line, source)))
        if has_mm:
            mm.append((_number(row[col["y_mm"]], "y_mm", line, source), _number(row[col["x_mm"]], "x_mm", line, source)))
    if not points:
        raise LandmarkError(f"{source}: the landmark CSV has a header but no points.")
    points_array = np.asarray(points, dtype=np.float64)
    if spacing_mm is not None:
        spacing, spacing_source = _spacing(spacing_mm), "argument"
    elif has_mm:
        mm_array = np.asarray(mm, dtype=np.float64)
        dy = _spacing_from_mm(points_array[:, 0], mm_array[:, 0], "y", source)
        dx = _spacing_from_mm(points_array[:, 1], mm_array[:, 1], "x", source)
        dy, dx = dy or dx or 1.0, dx or dy or 1.0
        spacing, spacing_source = (dy, dx), f"{source} (mm columns)"
    else:
        spacing, spacing_source = (1.0, 1.0), "default"
    table = LandmarkTable(np.asarray(frames), np.asarray(names, object), points_array, spacing, spacing_source)
    repeated = table.duplicates()
    if repeated:
        frame, name = repeated[0]
        raise LandmarkError(f"{source}: landmark {name!r} appears more than once on frame {frame}; keep one row per landmark and frame.")
    return table


# ====================================================================== common grid and TRE
def _as_field(displacement: Any) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise LandmarkError(
            f"displacement must be (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}. Use the "
            "registration's displacement.npy or the registered layer's metadata."
        )
    return u


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


# ====================================================================== propagation
def propagate_points(points: Any, source_frame: int, displacement: Any) -> np.ndarray:
    """Carry points clicked on one raw frame to every raw frame through the registration.

    A point ``p`` on frame ``k`` is first mapped to the common grid (``x + u_k(x) = p``, by
    inversion), then to frame ``i`` by ``x + u_i(x)`` (no inversion needed: the field is a
    pull-back from the common grid).

    Parameters
    ----------
    points : array_like (P, 2)
        ``(y, x)`` pixel positions on frame ``source_frame``.
    source_frame : int
    displacement : ndarray (N, 2, H, W)

    Returns
    -------
    ndarray (N, P, 2) float64
        Positions on every frame; row ``source_frame`` equals the input.
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(p)):
        raise LandmarkError("points to propagate must be finite (y, x) positions.")
    field = torch.as_tensor(u)
    common = torch.as_tensor(map_points_to_common(u, k, p.astype(np.float32)))
    out = np.empty((u.shape[0], len(p), 2))
    for i in range(u.shape[0]):
        out[i] = (common + sample_displacement_at_points(field[i], common)).numpy()
    out[k] = p  # exact on the annotated frame (the round trip is only accurate to ~1e-3 px)
    return out


def propagate_landmarks(table: LandmarkTable, source_frame: int, displacement: Any) -> LandmarkTable:
    """The landmarks placed on ``source_frame``, propagated to every frame (:func:`propagate_points`).

    Points on other frames are ignored; the result has one row per landmark and frame.
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    rows = table.subset(table.frames == k).keep_last()
    if not len(rows):
        raise LandmarkError(f"no landmark is placed on frame {k}; place points on that frame first.")
    moved = propagate_points(rows.points, k, u)  # (N, P, 2)
    positions = {name: moved[:, j] for j, name in enumerate(rows.names.tolist())}
    return LandmarkTable.from_positions(positions, table.spacing_mm, table.spacing_source)


def label_field_from_frame(displacement: Any, source_frame: int, iterations: int = 30) -> np.ndarray:
    """Pull-back fields ``w_i`` that resample raw frame ``k`` onto every raw frame ``i``.

    Raw frame ``i`` shows at pixel ``y`` the anatomy of common-grid point ``y + v_i(y)``
    (``v_i`` the inverse of ``u_i``), which raw frame ``k`` shows at ``z + u_k(z)`` with
    ``z = y + v_i(y)``. So ``frame_k -> frame_i`` is the single pull-back
    ``w_i(y) = v_i(y) + u_k(y + v_i(y))`` (:func:`.spatial.compose_displacements`); composing
    the fields first means the labels are resampled once, not twice. ``w_k = 0`` exactly.

    Returns
    -------
    ndarray (N, 2, H, W) float32
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    inverse = invert_displacement(u, iterations=iterations)
    source = np.repeat(u[k : k + 1], u.shape[0], axis=0)
    w = np.asarray(compose_displacements(source, inverse), dtype=np.float32)
    w[k] = 0.0
    return w


def _resample_labels(labels: np.ndarray, field: np.ndarray, method: str) -> np.ndarray:
    """Pull-back resampling of integer labels ``(N, H, W)`` by ``field`` ``(N, 2, H, W)``.

    ``"linear"``: each label's indicator is warped bilinearly and the label with the largest
    share wins (smooth, sub-pixel boundaries: better Dice than nearest for small structures
    such as the myocardium). ``"nearest"``: :func:`.spatial.warp_labels`.
    """
    if method == "nearest":
        return np.asarray(warp_labels(labels, field)).astype(labels.dtype)
    if method != "linear":
        raise ValueError(f"method must be 'linear' or 'nearest'; got {method!r}.")
    values = np.unique(labels)
    onehot = torch.as_tensor(np.stack([labels == v for v in values], axis=1).astype(np.float32))  # (N, C, H, W)
    warped = warp(onehot, torch.as_tensor(field), "bilinear", "border")
    winner = warped.argmax(dim=1).numpy()
    return values[winner].astype(labels.dtype)


def propagate_labels(labels: Any, source_frame: int, displacement: Any, *, method: str = "linear") -> np.ndarray:
    """Carry a label mask drawn on one raw frame to every raw frame through the registration.

    Parameters
    ----------
    labels : array_like (H, W) of int, or (N, H, W)
        The mask on frame ``source_frame`` (for a stack, its ``source_frame`` slice is used).
    source_frame : int
    displacement : ndarray (N, 2, H, W)
    method : {"linear", "nearest"}
        How labels are resampled (see :func:`_resample_labels`).

    Returns
    -------
    ndarray (N, H, W), the input's integer dtype
        Frame ``source_frame`` is an exact copy of the mask.

    Notes
    -----
    The mask is pulled into each frame with one resampling by the composed field of
    :func:`label_field_from_frame` (common grid ← frame ``k`` through ``u_k``, frame ``i`` ←
    common grid through the inverse ``v_i``).
    """
    u = _as_field(displacement)
    k = _frame_index(source_frame, u.shape[0])
    mask = np.asarray(labels)
    if mask.ndim == 3:
        if mask.shape[0] != u.shape[0]:
            raise LandmarkError(f"the labels have {mask.shape[0]} frames but the registration has {u.shape[0]}.")
        mask = mask[k]
    if mask.ndim != 2 or mask.shape != u.shape[-2:]:
        raise LandmarkError(
            f"labels must be (H, W) = {tuple(u.shape[-2:])} (or (N, H, W)) on the image grid; got {np.shape(labels)}."
        )
    if mask.dtype.kind not in "iub":
        if not np.all(mask == np.round(mask)):
            raise LandmarkError("labels must be whole numbers (0 = background).")
        mask = mask.astype(np.int64)
    field = label_field_from_frame(u, k)
    stack = np.repeat(mask[None], u.shape[0], axis=0)
    out = _resample_labels(stack, field, method)
    out[k] = mask
    return out


# ====================================================================== Dice
@dataclasses.dataclass(frozen=True)
class DiceReport:
    """All-pair Dice per label of raw labels (before) and of labels warped to the common grid (after).

    Attributes
    ----------
    before, after : dict of int to float
        Mean Dice over frame pairs ``i < j`` per label value.
    names : dict of int to str
        Display name per label (LV blood pool, LV myocardium, RV blood pool, or ``label k``).
    """

    before: dict[int, float]
    after: dict[int, float]
    names: dict[int, str]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"label": value, "name": self.names[value], "dice_before": self.before[value], "dice_after": self.after.get(value, float("nan"))}
            for value in self.before
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "definition": "mean Dice over all frame pairs i < j, per label; after = labels warped to the common grid",
            "labels": [{**row, "dice_after": row["dice_after"] if math.isfinite(row["dice_after"]) else None} for row in self.rows()],
        }

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["label", "name", "dice_before", "dice_after"])
        for row in self.rows():
            writer.writerow([row["label"], row["name"], repr(float(row["dice_before"])),
                             repr(float(row["dice_after"])) if math.isfinite(row["dice_after"]) else ""])
        return buffer.getvalue()


def dice_before_after(
    labels: Any,
    displacement: Any = None,
    label_values: Iterable[int] | None = None,
    *,
    method: str = "linear",
) -> DiceReport:
    """All-pair Dice per label before and after warping raw-frame labels to the common grid.

    Parameters
    ----------
    labels : array_like (N, H, W) of int
        A segmentation of every raw frame (0 background; 1 LV blood pool, 2 LV myocardium,
        3 RV blood pool by convention).
    displacement : ndarray (N, 2, H, W), optional
        Pull-back field; the labels are warped like the frames (``labels_i(x + u_i(x))``).
    label_values : iterable of int, optional
        Labels to score; default: every non-zero value present.
    method : {"linear", "nearest"}
        Label resampling: ``"linear"`` (default) warps each label's indicator bilinearly and
        keeps the largest share, so thin structures (the myocardium) are not eroded by
        nearest-neighbour rounding; ``"nearest"`` is :func:`.spatial.warp_labels`.
    """
    from .mapping_roi import LABEL_NAMES

    stack = np.asarray(labels)
    if stack.ndim != 3 or stack.shape[0] < 2:
        raise LandmarkError(
            f"all-pair Dice needs labels for every frame, (N, H, W) with N >= 2; got shape {stack.shape}. "
            "Propagate a mask drawn on one frame first (propagate_labels)."
        )
    if stack.dtype.kind not in "iub":
        if not np.all(stack == np.round(stack)):
            raise LandmarkError("labels must be whole numbers (0 = background).")
        stack = stack.astype(np.int64)
    values = sorted(int(v) for v in np.unique(stack) if v != 0) if label_values is None else [int(v) for v in label_values]
    if not values:
        raise LandmarkError("the labels are empty (all 0); paint LV, myocardium and/or RV first.")
    names = {v: LABEL_NAMES.get(v, f"label {v}") for v in values}
    before = all_pair_dice(stack, values)
    after: dict[int, float] = {}
    if displacement is not None:
        u = _as_field(displacement)
        if u.shape[0] != stack.shape[0] or u.shape[-2:] != stack.shape[-2:]:
            raise LandmarkError(f"labels {stack.shape} and displacement {u.shape} are not on the same frames and grid.")
        after = all_pair_dice(_resample_labels(stack, u, method), values)
    return DiceReport(before, after, names)


def _frame_index(frame: Any, n_frames: int) -> int:
    k = int(frame)
    if not 0 <= k < n_frames:
        raise LandmarkError(f"frame {k} is outside 0..{n_frames - 1}.")
    return k
