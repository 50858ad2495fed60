"""The landmark CSV text ``frame,name,y,x,y_mm,x_mm``: made from a table and parsed back, with
the spacing taken from the mm columns when they are there (files are read and written in
:mod:`napari_any2reg.io.landmarks`)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from .table import _REQUIRED, CSV_COLUMNS, LandmarkError, LandmarkTable, _spacing


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
