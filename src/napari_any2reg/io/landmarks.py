"""Landmark CSV files: ``frame,name,y,x,y_mm,x_mm`` (see :mod:`napari_any2reg.core.landmarks`).

The text is made and parsed in core (:func:`~napari_any2reg.core.landmarks.landmarks_csv_text`,
:func:`~napari_any2reg.core.landmarks.parse_landmarks_csv`); here the file is read, or written
atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.landmarks import LandmarkError, LandmarkTable, landmarks_csv_text, parse_landmarks_csv
from ._atomic import atomic_write
from ._common.errors import special_file_kind

__all__ = ["read_landmarks_csv", "write_landmarks_csv"]


def read_landmarks_csv(path: Any, spacing_mm: Any = None, *, text: str | None = None) -> LandmarkTable:
    """Read a landmark CSV (``frame,name,y,x`` in pixels, optional ``y_mm,x_mm``).

    Parameters
    ----------
    path : str or Path
        The CSV file (also used in error messages when ``text`` is given).
    spacing_mm : (dy, dx), optional
        Pixel spacing. Default: derived from the ``y_mm`` / ``x_mm`` columns when present, else
        ``(1, 1)`` with ``spacing_source = "default"`` (distances are then in pixels).
    text : str, optional
        CSV content to parse instead of reading ``path``.

    Returns
    -------
    LandmarkTable

    Raises
    ------
    LandmarkError
        Naming the file, line and problem (see
        :func:`~napari_any2reg.core.landmarks.parse_landmarks_csv`), or a file that cannot be
        read as UTF-8 text.
    FileNotFoundError
        If the file does not exist.
    """
    if text is None:
        file = Path(path)
        what = special_file_kind(file)
        if what is not None:  # a FIFO would block forever; "no such file" would be false
            raise ValueError(f"{file} is {what}, not a landmark CSV file; give a CSV file with the columns frame,name,y,x.")
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such landmark CSV; check the path.")
        try:
            # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise LandmarkError(f"{file}: cannot read the landmark CSV ({exc}).") from exc
    return parse_landmarks_csv(text, spacing_mm, source=str(path))


def write_landmarks_csv(path: Any, table: LandmarkTable, *, overwrite: bool = False) -> Path:
    """Write ``table`` as a landmark CSV, atomically (see :func:`._atomic.atomic_write`).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    text = landmarks_csv_text(table)
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"), overwrite=overwrite)
