"""2-D parameter maps as inputs (a T1 map for ``any2reg ecv``, any map for ``any2reg segments``),
and the files of the segment analysis (``segments.csv``, ``bullseye.png``).

A map is a 2-D float image (TIFF as written by :func:`.fields.save_map_tiff` or any 2-D TIFF,
NIfTI, ``.npy``, or a scanner's DICOM map: see :mod:`.dicom.maps`); :func:`read_map_or_sequence`
tells a map from a sequence by its shape. A DICOM map is one file whose ImageType marks a map
(``T1 MAP``, ``T1MAP``, Siemens ``MOCO`` + ``T1``), or a folder / file whose series is one image or
map images of one image; a MOLLI folder holding the scanner's maps beside its frames is a
sequence (name the map's file to read the map instead).
"""

from __future__ import annotations

import csv
import dataclasses
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..core.sequence import Sequence
from ._common import split_name

__all__ = ["MapImage", "read_map_image", "read_map_or_sequence", "write_segments_csv", "save_figure_png", "save_report",
           "SEGMENT_CSV_COLUMNS"]

#: Columns of ``segments.csv``.
SEGMENT_CSV_COLUMNS = ("segment", "name", "mean", "sd", "median", "n_pixels")

_TIFF = (".tif", ".tiff", ".ome.tif", ".ome.tiff")


@dataclasses.dataclass(frozen=True, eq=False)
class MapImage:
    """A 2-D map read from a file: ``values`` float32 (H, W), ``spacing_mm`` (dy, dx), the
    file's description (``info``: quantity, unit, ... when written by this package or read from
    a DICOM map's ImageType), ``geometry`` (the slice's :class:`SliceGeometry` of a DICOM map,
    else None)."""

    values: np.ndarray
    spacing_mm: tuple[float, float]
    info: dict[str, Any]
    path: str
    geometry: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])


def _squeezed_shape(file: Path, ext: str) -> tuple[int, ...] | None:
    """The image's shape without singleton axes, cheaply (``None``: not a file type maps come in)."""
    if ext in _TIFF:
        import tifffile

        with tifffile.TiffFile(file) as tif:
            series = tif.series[0]
            return tuple(s for s in series.shape if s != 1)
    if ext in (".nii", ".nii.gz"):
        import nibabel

        return tuple(s for s in nibabel.load(str(file)).shape if s != 1)
    if ext == ".npy":
        from ._common.errors import load_npy

        return tuple(s for s in load_npy(file, what="a 2-D map or a sequence", mmap_mode="r").shape if s != 1)
    return None


def _is_dicom_candidate(file: Path) -> bool:
    """A folder, or a file that is none of the map formats and looks like DICOM."""
    if file.is_dir():
        return True
    if not file.is_file() or split_name(file)[1] in _TIFF + (".nii", ".nii.gz", ".npy"):
        return False
    from .dicom import looks_like_dicom

    return looks_like_dicom(file)


def _dicom_map(file: Path, flag: str) -> tuple[MapImage | None, str]:
    """:func:`.dicom.maps.read_dicom_map` as a :class:`MapImage` (errors prefixed with ``flag``)."""
    from ._common import SequenceReadError
    from .dicom.maps import read_dicom_map

    try:
        found, note = read_dicom_map(file)
    except SequenceReadError as exc:
        raise SequenceReadError(f"{flag} {exc}") from None
    if found is None:
        return None, note
    return MapImage(values=found.values, spacing_mm=found.spacing_mm, info=dict(found.info), path=found.path,
                    geometry=found.geometry), ""


def read_map_image(path: Any, *, flag: str = "MAP") -> MapImage:
    """A 2-D map from TIFF, NIfTI (rows = j, like the sequence reader), ``.npy`` or DICOM (a map
    image's file, or a folder whose series is one map: :mod:`.dicom.maps`; values rescaled)."""
    file = Path(path)
    if _is_dicom_candidate(file):
        found, note = _dicom_map(file, flag)
        if found is not None:
            return found
        if file.is_dir() or "not DICOM" not in note:
            raise ValueError(f"{flag} {note}. That is not one 2-D map: give a map (a DICOM map image's file, "
                             "TIFF, NIfTI or .npy).")
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {file}: no such file; check the path.")
    ext = split_name(file)[1]
    try:
        shape = _squeezed_shape(file, ext)
    except Exception as exc:  # tifffile, nibabel and numpy raise many types for a damaged file
        raise ValueError(f"{flag} {file}: not a readable {ext} image ({type(exc).__name__}); give a 2-D map "
                         "(TIFF, NIfTI or .npy).") from None
    if shape is None:
        raise ValueError(f"{flag} {file}: unsupported type {ext or '(none)'!r}; give a 2-D map as TIFF, NIfTI or .npy.")
    if len(shape) != 2:
        raise ValueError(f"{flag} {file} has shape {shape}; give one 2-D map (rows x columns).")
    info: dict[str, Any] = {}
    spacing = (1.0, 1.0)
    if ext in _TIFF:
        from .fields import read_map_tiff

        values, info = read_map_tiff(file)
        if "spacing_mm" in info:
            spacing = tuple(float(s) for s in info["spacing_mm"])
    elif ext in (".nii", ".nii.gz"):
        import nibabel

        image = nibabel.load(str(file))
        values = np.squeeze(np.asanyarray(image.dataobj)).T
        zooms = image.header.get_zooms()
        spacing = (float(zooms[1]), float(zooms[0]))
    else:
        from ._common.errors import load_npy

        values = load_npy(file, what="a 2-D map")
    values = np.squeeze(np.asarray(values, dtype=np.float32))
    return MapImage(values=values, spacing_mm=spacing, info=dict(info), path=str(file))


def read_map_or_sequence(path: Any, *, flag: str = "INPUT", **sequence_options: Any) -> MapImage | Sequence:
    """A 2-D map (:class:`MapImage`) or a sequence (``Sequence``, frames first), by the file's shape.

    A DICOM map (a file whose ImageType marks a map, or a folder / file whose series is one
    image) is a map; other DICOM folders and files are sequences: a MOLLI series stays the
    sequence when the scanner's maps lie beside its frames (name a map's file to read it).
    A sequence's reader warnings are kept in ``metadata["read_warnings"]`` (not raised as
    Python warnings).
    """
    from ._common import SequenceReadWarning
    from ._dispatch import read_sequence

    file = Path(path)
    if _is_dicom_candidate(file):
        found, _ = _dicom_map(file, flag)
        if found is not None:
            return found
    if file.is_file():
        ext = split_name(file)[1]
        try:
            shape = _squeezed_shape(file, ext)
        except Exception:
            shape = None  # the sequence reader names what is wrong with the file
        if shape is not None and len(shape) == 2:
            return read_map_image(file, flag=flag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SequenceReadWarning)
        return read_sequence(path, **sequence_options)


def write_segments_csv(path: Any, rows: Iterable[Mapping[str, Any]]) -> Path:
    """``segment,name,mean,sd,median,n_pixels`` rows (empty cells for missing statistics)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SEGMENT_CSV_COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                             for c in SEGMENT_CSV_COLUMNS])
    return Path(path)


def save_report(path: Any, figure: Any, fmt: str | None = None, dpi: int = 110) -> Path:
    """Write the QC report ``figure`` as PNG or PDF (format from ``fmt`` or the file extension;
    encoded by :func:`napari_any2reg.core.report.report_bytes`)."""
    from ..core.report import report_bytes

    path = Path(path)
    path.write_bytes(report_bytes(figure, fmt or path.suffix.lstrip("."), dpi=dpi))
    return path


def save_figure_png(path: Any, figure: Any, dpi: int = 150) -> Path:
    """A matplotlib figure as PNG (Agg; no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(Path(path), format="png", dpi=dpi)
    return Path(path)
