"""AHA segment statistics of a map and its bullseye: the code path of ``any2reg segments`` and of
``fit`` / ``ecv`` with ``--rv-insertion``, and of the Mapping dock's segments section.

:func:`analyse_segments` computes (core), :func:`segment_files` says which files it makes (the
callers write them in their own all-or-nothing unit), :func:`segments_file` is the whole command.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._requests import output_path

__all__ = ["SegmentAnalysis", "SEGMENT_FILES", "SEGMENT_TABLE_COLUMNS", "analyse_segments", "segments_csv_text",
           "write_segments_table", "segment_files", "segments_file"]

#: The files of a segment analysis.
SEGMENT_FILES = ("segments.csv", "bullseye.png")

#: Columns of ``segments.csv`` (and of the Mapping dock's copied table): the statistics, then
#: what they are of (``quantity`` as in ``ecv_stats.json``, e.g. "synthetic ECV"; ``unit``).
SEGMENT_TABLE_COLUMNS = ("segment", "name", "mean", "sd", "median", "n_pixels", "quantity", "unit")


@dataclasses.dataclass
class SegmentAnalysis:
    """Segments of one slice and the statistics of one map in them.

    Attributes
    ----------
    segments : ndarray int16 (H, W)
        AHA segment per LV myocardium pixel (0 elsewhere).
    rows : list of dict
        ``segment, name, mean, sd, median, n_pixels, n_excluded`` per segment of the level.
    level, quantity, unit : str
    insertion_points : ndarray (K, 2)
    erode_px : int
        Border pixels of the myocardium left out of the statistics (0: none).
    """

    segments: np.ndarray
    rows: list[dict[str, Any]]
    level: str
    quantity: str
    unit: str
    insertion_points: np.ndarray
    erode_px: int = 0

    def figure(self, figure: Any = None) -> Any:
        """The bullseye (matplotlib Figure) with the segment means."""
        from ..core.tissue.bullseye import bullseye_figure

        return bullseye_figure({r["segment"]: r["mean"] for r in self.rows}, quantity=self.quantity, unit=self.unit,
                               level=self.level, figure=figure)

    def summary(self) -> dict[str, Any]:
        return {"level": self.level, "quantity": self.quantity, "unit": self.unit,
                "rv_insertion_yx": self.insertion_points.tolist(), "erode_px": self.erode_px, "segments": self.rows}


def analyse_segments(values: Any, labels: Any, rv_insertion: Any, *, level: str = "mid", quantity: str = "T1",
                     unit: str = "ms", erode_px: int = 0) -> SegmentAnalysis:
    """Assign the AHA segments (``core.tissue.segments``) and compute the statistics of ``values``.

    ``erode_px`` > 0 leaves the myocardium's border pixels out of the statistics
    (:func:`napari_any2reg.core.tissue.segments.myocardium_core`: partial volume with blood); the
    segments themselves (overlay, ``segments``) still cover the whole label.
    """
    from ..core.tissue.segments import assign_segments, myocardium_core, parse_insertion_points, segment_statistics

    values = np.asarray(values)
    labels = np.asarray(labels)
    if values.shape != labels.shape:
        from ..core.vocabulary import arg

        raise ValueError(f"{arg('mask')} has shape {labels.shape} but the map is {values.shape}; give one 2-D label "
                         "image on the map's grid.")
    points = parse_insertion_points(rv_insertion)
    segments = assign_segments(labels, points, level)
    core = myocardium_core(labels, erode_px)
    rows = segment_statistics(values, np.where(core, segments, 0), level)
    return SegmentAnalysis(segments=segments, rows=rows, level=str(level).lower(), quantity=quantity, unit=unit,
                           insertion_points=points, erode_px=int(erode_px))


def segments_csv_text(analysis: SegmentAnalysis) -> str:
    """``segments.csv`` as text (:data:`SEGMENT_TABLE_COLUMNS`; statistics to 6 significant
    digits, empty cells where missing): what the file holds and the Mapping dock copies."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SEGMENT_TABLE_COLUMNS)
    for row in analysis.rows:
        cells = ["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                 for c in SEGMENT_TABLE_COLUMNS[:6]]
        writer.writerow(cells + [analysis.quantity, analysis.unit])
    return buffer.getvalue()


def write_segments_table(path: Any, analysis: SegmentAnalysis) -> Path:
    """Write :func:`segments_csv_text` to ``path`` (UTF-8)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(segments_csv_text(analysis))
    return Path(path)


def segment_files(analysis: SegmentAnalysis) -> dict[str, Callable[[Path], Any]]:
    """``{file name: writer(path)}`` for ``segments.csv`` and ``bullseye.png``."""
    from ..io.map_input import save_figure_png

    return {"segments.csv": lambda p: write_segments_table(p, analysis),
            "bullseye.png": lambda p: save_figure_png(p, analysis.figure())}


def segments_file(map_path: Any, outdir: Any, *, mask_path: Any, rv_insertion: Any, level: str = "mid",
                  overwrite: bool = False, erode_px: int = 0) -> SegmentAnalysis:
    """``any2reg segments``: read a 2-D map and its labels, write ``segments.csv`` and
    ``bullseye.png`` into ``outdir`` (all or nothing); ``erode_px`` as for :func:`analyse_segments`."""
    from ..io import atomic_write_folder, check_output_folder
    from ..io.labels import read_label_image
    from ..io.map_input import read_map_image
    from .preflight import refuse_replacing_inputs

    outdir = output_path(outdir, "outdir")
    image = read_map_image(map_path, flag="MAP")
    labels = read_label_image(mask_path, image.shape)
    quantity = str(image.info.get("quantity") or "value")
    unit = str(image.info.get("unit") or "")
    myocardium = np.asarray(labels) == 2
    if myocardium.any() and not np.isfinite(np.asarray(image.values, dtype=float)[myocardium]).any():
        # a table of "-" with exit 0 said nothing: a map of NaN / Inf there, or one that is not this mask's slice
        raise ValueError(
            f"{map_path}: no finite value of the map lies in the myocardium (label 2 of {mask_path}; "
            f"{int(myocardium.sum())} pixels, all NaN or Inf); check that the map and the mask belong together "
            "(same slice, same grid) and that the map was fitted there."
        )
    analysis = analyse_segments(image.values, labels, rv_insertion, level=level, quantity=quantity, unit=unit,
                                erode_px=erode_px)
    files = segment_files(analysis)
    refuse_replacing_inputs([outdir / name for name in files], [map_path, mask_path])
    check_output_folder(outdir, needed_bytes=2_000_000)

    def write(staging: Path) -> None:
        for name, writer in files.items():
            writer(staging / name)

    atomic_write_folder(outdir, write, expected=list(files), overwrite=overwrite)
    return analysis
