"""Find the series of a study and give each a stable output folder name.

A cohort is given as any mix of

* sequence files (TIFF / OME-TIFF / NIfTI, or a DICOM file: its series is read);
* folders, searched recursively: every TIFF / NIfTI file is a series, and the DICOM images are
  grouped into one series per SeriesInstanceUID and slice position
  (:func:`napari_any2reg.io.dicom.find_dicom_series`); a file ``X_mask.tif`` (or
  ``X_labels.*``) next to ``X.tif`` is the mask of ``X`` (as ``any2reg register --mask``, and
  the ROI of the T1 statistics), not a series;
* CSV lists with a ``path`` column and optional ``id`` (the output folder name), ``kind``,
  ``timings_ms`` (``;``- or space-separated, ``inf`` allowed), ``spacing_mm`` (``dy;dx`` or one
  value) and ``mask`` columns; relative paths are taken from the CSV's folder.

Names are derived from the paths as given (relative to the searched folder), so re-running the
same command finds the same output folders; two series that would share a name get a short hash
of their path appended.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

__all__ = ["SeriesJob", "discover", "read_cohort_csv"]

_MASK_SUFFIXES = ("_mask", "_labels")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class SeriesJob:
    """One series of the cohort: what to read, with which overrides, and where to write.

    Attributes
    ----------
    name : str
        Output folder name (``OUTDIR/<name>/``), stable across runs.
    source : str or tuple of str
        A file or folder for :func:`napari_any2reg.io.read_sequence`, or the DICOM files of one
        series / slice.
    label : str
        Human-readable origin for messages and the summary.
    kind, timings_ms, spacing_mm :
        Overrides of what the file says (from the CSV); ``None``: as read.
    mask : str, optional
        2-D label image / mask (TIFF, NIfTI or .npy): its non-zero region drives the similarity
        (``register(..., mask=)``, as ``any2reg register --mask``) and it is the ROI of the T1
        statistics.
    """

    name: str
    source: Any
    label: str
    kind: str | None = None
    timings_ms: tuple[float, ...] | None = None
    spacing_mm: tuple[float, float] | None = None
    mask: str | None = None

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for :func:`napari_any2reg.io.read_sequence`."""
        out: dict[str, Any] = {}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.timings_ms is not None:
            out["timings_ms"] = list(self.timings_ms)
        if self.spacing_mm is not None:
            out["spacing_mm"] = tuple(self.spacing_mm)
        return out

    def identity(self) -> dict[str, Any]:
        """What was read (kept in series.json; a finished series is reused only for the same input)."""
        source = list(self.source) if isinstance(self.source, tuple) else self.source
        return {"source": source, "kind": self.kind, "timings_ms": None if self.timings_ms is None else list(self.timings_ms),
                "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm), "mask": self.mask,
                # a mask drives the registration too (earlier versions used it for the T1 ROI only):
                # series those made with a mask are not taken for finished ones
                **({"mask_use": "registration and T1 ROI"} if self.mask is not None else {})}


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._-") or "series"


def _stem(path: Path) -> str:
    from ..io._common import split_name

    return split_name(path)[0]


def _numbers(text: str, what: str, where: str) -> tuple[float, ...]:
    parts = [p for p in re.split(r"[;\s]+", text.strip()) if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not a list of numbers; separate values with ';' or spaces (e.g. 100;180;260).") from None


def read_cohort_csv(path: Any) -> list[SeriesJob]:
    """Series listed in a cohort CSV (see the module notes for the columns).

    Raises
    ------
    ValueError
        No ``path`` column, or a value that is not a number where numbers are expected; the
        message names the file, the row and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--list {path}: no such file; check the path.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        if "path" not in columns:
            raise ValueError(
                f"--list {path}: no 'path' column (found: {', '.join(columns) or 'none'}); the first row must name "
                "the columns, e.g. path,id,kind,timings_ms,spacing_mm,mask."
            )
        jobs = []
        for number, row in enumerate(reader, start=2):
            def cell(name: str) -> str:
                return (row.get(columns[name]) or "").strip() if name in columns else ""

            where = f"{path} row {number}"
            if not cell("path"):
                continue
            source = Path(cell("path"))
            source = source if source.is_absolute() else path.parent / source
            mask = cell("mask")
            spacing = _numbers(cell("spacing_mm"), "spacing_mm", where) if cell("spacing_mm") else None
            if spacing is not None and len(spacing) == 1:
                spacing = spacing * 2
            if spacing is not None and len(spacing) != 2:
                raise ValueError(f"{where}: spacing_mm needs 'dy;dx' (or one value); got {cell('spacing_mm')!r}.")
            jobs.append(SeriesJob(
                name=_safe(cell("id")) if cell("id") else "",
                source=str(source),
                label=f"{source} ({path.name} row {number})",
                kind=cell("kind").lower() or None,
                timings_ms=_numbers(cell("timings_ms"), "timings_ms", where) if cell("timings_ms") else None,
                spacing_mm=spacing,
                mask=None if not mask else str(Path(mask) if Path(mask).is_absolute() else path.parent / mask),
            ))
    return jobs


def _is_mask_name(stem: str) -> bool:
    return stem.lower().endswith(_MASK_SUFFIXES)


def _search_folder(root: Path, exclude: Iterable[Path]) -> list[SeriesJob]:
    """Sequence files and DICOM series under ``root``, named by their path relative to it."""
    import os

    from ..io._common import FILE_EXTENSIONS
    from ..io.dicom import find_dicom_series

    skip = {Path(p).resolve() for p in exclude}
    files_ext = tuple(e for e in FILE_EXTENSIONS if e not in (".dcm", ".ima"))
    jobs: list[SeriesJob] = []
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and (here / d).resolve() not in skip)
        stems = {}
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(files_ext):
                continue
            stems[_stem(here / name)] = here / name
        for stem, file in stems.items():
            if _is_mask_name(stem):
                continue
            mask = next((stems[stem + s] for s in _MASK_SUFFIXES if stem + s in stems), None)
            relative = file.relative_to(root)
            name = "_".join(list(relative.parent.parts) + [stem])
            jobs.append(SeriesJob(name=_safe(name), source=str(file), label=str(file), mask=None if mask is None else str(mask)))
    for series in find_dicom_series(root, exclude=skip):
        relative = series["folder"].relative_to(root)
        parts = list(relative.parts) or [root.resolve().name]
        number = series["series_number"]
        name = "_".join(parts) + (f"_s{number}" if number is not None else "")
        label = f"{series['folder']} series {number if number is not None else '?'}"
        if series["description"]:
            label += f" '{series['description']}'"
        if series["n_slices"] > 1:
            name += f"_sl{series['slice_index'] + 1}"
            label += f" slice {series['slice_index'] + 1}/{series['n_slices']}"
        jobs.append(SeriesJob(name=_safe(name), source=tuple(str(f) for f in series["files"]), label=label))
    if not jobs:
        log.warning("%s: no TIFF, NIfTI or DICOM series found in this folder or below", root)
    return jobs


def _unique_names(jobs: list[SeriesJob]) -> list[SeriesJob]:
    """Give every job a distinct name: a short hash of its source settles a clash."""
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.name] = counts.get(job.name, 0) + 1
    out, seen = [], set()
    for job in jobs:
        name = job.name
        if counts[name] > 1 or name in seen:
            digest = hashlib.sha1(repr(job.identity()).encode()).hexdigest()[:8]
            name = f"{name}-{digest}"
        seen.add(name)
        out.append(dataclasses.replace(job, name=name))
    return out


def discover(inputs: Iterable[Any], lists: Iterable[Any] = (), *, exclude: Iterable[Any] = ()) -> list[SeriesJob]:
    """The series of a cohort, each with a stable, unique output folder name.

    Parameters
    ----------
    inputs : iterable of paths
        Sequence files, folders (searched recursively) and CSV lists (``.csv``).
    lists : iterable of paths
        More CSV lists.
    exclude : iterable of paths
        Folders not to search (the batch output folder, when it lies inside an input folder).

    Returns
    -------
    list of SeriesJob
        In the order given (folders: sorted by path). A path that does not exist is kept as a
        job (it fails when read, with a clear message, and shows in the summary).
    """
    jobs: list[SeriesJob] = []
    exclude = [Path(p) for p in exclude]
    for item in list(inputs):
        path = Path(item)
        if path.suffix.lower() == ".csv":
            jobs += read_cohort_csv(path)
        elif path.is_dir():
            jobs += _search_folder(path, exclude)
        else:
            jobs.append(SeriesJob(name=_safe(_stem(path)), source=str(path), label=str(path)))
    for item in lists:
        jobs += read_cohort_csv(item)
    jobs = [job if job.name else dataclasses.replace(job, name=_safe(_stem(Path(job.source)))) for job in jobs]
    return _unique_names(jobs)
