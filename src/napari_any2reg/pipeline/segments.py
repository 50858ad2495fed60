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

__all__ = ["SegmentAnalysis", "SEGMENT_FILES", "analyse_segments", "segment_files", "segments_file"]

#: The files of a segment analysis.
SEGMENT_FILES = ("segments.csv", "bullseye.png")


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
    """

    segments: np.ndarray
    rows: list[dict[str, Any]]
    level: str
    quantity: str
    unit: str
    insertion_points: np.ndarray

    def figure(self, figure: Any = None) -> Any:
        """The bullseye (matplotlib Figure) with the segment means."""
        from ..core.bullseye import bullseye_figure

        return bullseye_figure({r["segment"]: r["mean"] for r in self.rows}, quantity=self.quantity, unit=self.unit,
                               level=self.level, figure=figure)

    def summary(self) -> dict[str, Any]:
        return {"level": self.level, "quantity": self.quantity, "unit": self.unit,
                "rv_insertion_yx": self.insertion_points.tolist(), "segments": self.rows}


def analyse_segments(values: Any, labels: Any, rv_insertion: Any, *, level: str = "mid", quantity: str = "T1",
                     unit: str = "ms") -> SegmentAnalysis:
    """Assign the AHA segments (``core.segments``) and compute the statistics of ``values``."""
    from ..core.segments import assign_segments, parse_insertion_points, segment_statistics

    values = np.asarray(values)
    labels = np.asarray(labels)
    if values.shape != labels.shape:
        from ..core.vocabulary import arg

        raise ValueError(f"{arg('mask')} has shape {labels.shape} but the map is {values.shape}; give one 2-D label "
                         "image on the map's grid.")
    points = parse_insertion_points(rv_insertion)
    segments = assign_segments(labels, points, level)
    rows = segment_statistics(values, segments, level)
    return SegmentAnalysis(segments=segments, rows=rows, level=str(level).lower(), quantity=quantity, unit=unit,
                           insertion_points=points)


def segment_files(analysis: SegmentAnalysis) -> dict[str, Callable[[Path], Any]]:
    """``{file name: writer(path)}`` for ``segments.csv`` and ``bullseye.png``."""
    from ..io.map_input import save_figure_png, write_segments_csv

    return {"segments.csv": lambda p: write_segments_csv(p, analysis.rows),
            "bullseye.png": lambda p: save_figure_png(p, analysis.figure())}


def segments_file(map_path: Any, outdir: Any, *, mask_path: Any, rv_insertion: Any, level: str = "mid",
                  overwrite: bool = False) -> SegmentAnalysis:
    """``any2reg segments``: read a 2-D map and its labels, write ``segments.csv`` and
    ``bullseye.png`` into ``outdir`` (all or nothing)."""
    from ..io import atomic_write_folder, check_output_folder
    from ..io.labels import read_label_image
    from ..io.map_input import read_map_image
    from .series import refuse_replacing_inputs

    image = read_map_image(map_path, flag="MAP")
    labels = read_label_image(mask_path, image.shape)
    quantity = str(image.info.get("quantity") or "value")
    unit = str(image.info.get("unit") or "")
    analysis = analyse_segments(image.values, labels, rv_insertion, level=level, quantity=quantity, unit=unit)
    outdir = Path(outdir)
    files = segment_files(analysis)
    refuse_replacing_inputs([outdir / name for name in files], [map_path, mask_path])
    check_output_folder(outdir, needed_bytes=2_000_000)

    def write(staging: Path) -> None:
        for name, writer in files.items():
            writer(staging / name)

    atomic_write_folder(outdir, write, expected=list(files), overwrite=overwrite)
    return analysis
