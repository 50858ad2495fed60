"""Export everything a user needs to analyse a registration elsewhere.

One call, :func:`export_registration`, writes any of the items of :data:`ITEMS` into a folder.
Each item is declared once, as an :class:`ExportItem` row: its name (as the CLI's ``--export``
and the export dock's check boxes show it), a description, the files it writes, what it needs
(``available``) and how it writes them. Planning, availability and writing all read the table:

================  =====================================================================
item              files
================  =====================================================================
``stack``         ``registered.tif``: ImageJ TIFF, float32, timings and spacing kept
``nifti``         ``registered.nii.gz`` + ``registered.json`` sidecar (timings, spacing)
``displacement``  ``displacement.npy`` ``(N, 2, H, W)`` float32 pixels ``(dy, dx)``;
                  ``displacement.nii.gz`` (mm, vector in dim 5); ``displacement.json``
``itk``           ``displacement_itk_frame000.nii.gz`` ...: one 2-D ITK displacement field
                  per frame (mm), read by SimpleITK / ANTs as a DisplacementFieldTransform,
                  and beside each its elastix parameter file ``displacement_itk_frame000.txt``
                  (``transformix -tp``; it names the field relative to itself); a source with
                  a scanner geometry gives 3-D ``.mha`` fields in scanner (LPS) coordinates
``jacobian``      ``jacobian.tif``: ``det(I + ∇u)`` per frame ``(N, H, W)`` (overlay registry)
``uncertainty``   ``displacement_sd.npy``: the network engines' per-pixel displacement SD in
                  mm ``(N, H, W)`` (overlay registry)
``maps``          ``t1_raw.tif``, ``r2_raw.tif``, ``t1_sd_raw.tif`` and the same for
                  ``registered`` (T1 and SD in ms), for the fits given
``maps_nifti``    the same maps as NIfTI (``t1_raw.nii.gz``...) on the source's scanner
                  geometry, ``(I, J, 1)`` like the stacks: they overlay the images
``qc``            ``qc.json`` (run summary, Jacobian statistics, per-frame table and flags,
                  TRE and Dice when available) and ``qc_frames.csv``
``landmarks``     ``landmarks.csv`` (as clicked), ``landmarks_common.csv`` (mapped to the
                  common grid), ``tre.csv`` (per landmark before / after, mm)
``dice``          ``dice.csv``: all-pair Dice per label before / after
``report``        ``report.png`` or ``report.pdf``: the one-page QC report
``record``        ``run.json``: software version, engine, weights hash, parameters, device,
                  input, time stamp, environment and the SHA-256 of every exported file
================  =====================================================================

Each item is one row of the export table (:mod:`.export_table`), with its files, what it needs
and its writer; the overlay registry's entries with an ``export`` add theirs (``jacobian``,
``uncertainty``). ``items="all"`` writes every item whose inputs are there (the maps need T1 maps,
``landmarks`` a landmark table, ``dice`` labels, ``qc`` and ``report`` the raw frames) and
lists the others in :attr:`ExportResult.skipped`; naming an item whose input is missing is an
error that says what to pass.

Everything is computed first, then written through :func:`napari_any2reg.io.atomic_write_folder`:
the files appear together or not at all, an existing file is only replaced with
``overwrite=True``, and a failure (a writer error, a full disk, a folder that cannot be made)
leaves no partial file behind. Importing this module loads no torch (the CLI lists the items in
its help). The numbers themselves (QC metrics, run record) are computed in
:mod:`napari_any2reg.core.export`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from ..core.export import MAP_ROLES, qc_metrics, run_record, t1_maps_from_fit
from ..core.sequence import Sequence
from ..core.vocabulary import arg
from . import export_table as _table
from ._requests import request_from, output_path
from .export_table import (
    MAP_ITEMS,
    ExportContext,
    ExportItem,
    ExportPlan,
    export_items,
    items_by_name,
    overlay_inputs,
    parse_export_items,
    planned_files,
    resolve_items,
)

if TYPE_CHECKING:
    from ..core.landmarks import DiceReport, LandmarkTable, TREReport

__all__ = [
    "ExportItem",
    "ExportPlan",
    "ExportContext",
    "ExportRequest",
    "ITEMS",
    "EXPORT_ITEMS",
    "MAP_ITEMS",
    "ExportResult",
    "export_items",
    "overlay_inputs",
    "parse_export_items",
    "planned_files",
    "t1_maps_from_fit",
    "qc_metrics",
    "run_record",
    "export_registration",
    "export_result",
]


def __getattr__(name: str) -> Any:
    # ITEMS and EXPORT_ITEMS follow the overlay registry (an entry added later adds its item)
    if name in ("ITEMS", "EXPORT_ITEMS"):
        return getattr(_table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ====================================================================== requests and results
@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """How to export one registration, beside its data (the frames, the field, the maps).

    Attributes
    ----------
    items : "all", a comma-separated string, or a tuple of names
        See :data:`ITEMS`.
    report_format : {"png", "pdf"}
    input_path : str or list, optional
        For the run record (default: the raw sequence's source file).
    command : list of str, optional
        Command line for the run record.
    overwrite : bool
        Replace existing files. Default: refuse (``FileExistsError``) before writing anything.
    extra_files : dict name -> writer(path)
        More files written in the same all-or-nothing unit (the CLI's ``metrics.json``).
    """

    items: str | tuple[str, ...] = "all"
    report_format: str = "png"
    input_path: Any = None
    command: Any = None
    overwrite: bool = False
    extra_files: Mapping[str, Callable[[Path], None]] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.items, str):
            object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "extra_files", dict(self.extra_files or {}))


#: The keyword spellings of :class:`ExportRequest` in :func:`export_registration` and their defaults.
_REQUEST_KEYWORDS = {"items": "all", "report_format": "png", "input_path": None, "command": None,
                     "overwrite": False, "extra_files": None}


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_registration` wrote.

    Attributes
    ----------
    folder : Path
    files : list of Path
        Every written file, sorted by name.
    items : tuple of str
        The items written.
    skipped : dict of str to str
        Items left out of ``"all"`` and why.
    qc : dict or None
        The QC metrics (as in ``qc.json``) when computed.
    tre : TREReport or None
    dice : DiceReport or None
    record : dict or None
        The run record (as in ``run.json``).
    """

    folder: Path
    files: list[Path]
    items: tuple[str, ...]
    skipped: dict[str, str]
    qc: dict[str, Any] | None = None
    tre: TREReport | None = None
    dice: DiceReport | None = None
    record: dict[str, Any] | None = None

    def summary(self) -> str:
        """One line for a status bar or the terminal."""
        text = f"wrote {len(self.files)} files ({', '.join(self.items)}) to {self.folder}"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{k} ({v})" for k, v in self.skipped.items())
        return text



@dataclasses.dataclass(frozen=True)
class _ExportJob:
    """What one export writes, decided before anything is computed."""

    folder: Path
    chosen: tuple[str, ...]  # the items written, in table order
    skipped: dict[str, str]  # items left out of "all", and why
    planned: tuple[str, ...]  # every file name, the extra files included
    request: ExportRequest


# ====================================================================== the export
def _as_sequence(value: Any, name: str, like: Sequence | None = None) -> Sequence:
    if isinstance(value, Sequence):
        return value
    if like is not None:
        return like.replace(frames=np.asarray(value, np.float32), name=name)
    return Sequence(np.asarray(value, np.float32), name=name)


def export_registration(
    folder: Any,
    registered: Sequence | np.ndarray,
    displacement: Any,
    *,
    request: ExportRequest | None = None,
    raw: Sequence | np.ndarray | None = None,
    items: str | Iterable[str] = "all",
    info: Mapping[str, Any] | None = None,
    template: Any = None,
    correspondence: Any = None,
    displacement_sd: Any = None,
    landmarks: LandmarkTable | None = None,
    labels: Any = None,
    t1_maps: Mapping[str, Mapping[str, Any]] | None = None,
    input_path: Any = None,
    report_format: str = "png",
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    command: Any = None,
    overwrite: bool = False,
    progress: Callable[[float, str], None] | None = None,
    qc: tuple[dict[str, Any], Any, Any] | None = None,
    segments: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Write the chosen export items of one registration into ``folder`` (all or nothing).

    Parameters
    ----------
    folder : str or Path
        Output folder (created when missing; removed again if the export fails).
    registered : Sequence or array (N, H, W)
        The registered frames (a Sequence keeps timings, spacing and geometry in the files).
    displacement : array (N, 2, H, W)
        Pull-back field in pixels ``(dy, dx)``.
    request : ExportRequest, optional
        Which items, the report format, the run record's input and command, overwrite and the
        extra files, as one object; or give them as the keywords ``items``, ``report_format``,
        ``input_path``, ``command``, ``overwrite`` and ``extra_files`` (not both).
    raw : Sequence or array (N, H, W), optional
        The frames before registration (needed by ``qc`` and ``report``).
    items : "all", a comma-separated string, or a list of names
        See :data:`ITEMS`.
    info : dict, optional
        ``RegistrationResult.summary()``: engine, device, seconds, params (incl. ``weights_sha256``).
    template, correspondence : arrays, optional
        The run's template ``(H, W)`` and correspondence maps ``(N, H, W)`` (QC table).
    displacement_sd : array (N, H, W), optional
        Per-pixel SD of the displacement in mm (``uncertainty`` item; network engines).
    landmarks : LandmarkTable, optional
        Points clicked on the raw frames (``landmarks`` item; TRE in ``qc`` and ``report``).
        A point placed twice on one frame is an error.
    labels : array (N, H, W) of int, optional
        A segmentation of every raw frame (``dice`` item).
    t1_maps : dict, optional
        ``{"raw": {"t1": ..., "r2": ..., "t1_sd": ...}, "registered": {...}}`` (``maps`` and
        ``maps_nifti`` items; :func:`t1_maps_from_fit` converts a fit).
    input_path : str, optional
        For the run record (default: the raw sequence's source file).
    report_format : {"png", "pdf"}
    extra_files : dict name -> writer(path), optional
        More files written in the same all-or-nothing unit (the CLI's ``metrics.json``).
    command : list of str, optional
        Command line for the run record.
    overwrite : bool
        Replace existing files. Default: refuse (``FileExistsError``) before writing anything.
    progress : callable(fraction, message), optional
    qc : tuple, optional
        :func:`qc_metrics` of these inputs (``(metrics, table, summary)``), when the caller has
        already computed it: used instead of computing it again. Ignored with ``landmarks`` or
        ``labels`` (their TRE and Dice belong in the QC).
    segments : dict, optional
        AHA segment statistics of a map (``pipeline.segments.SegmentAnalysis.summary()``): the
        ``report`` shows their bullseye and table.

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        An unknown item, an item whose input is missing, shapes that do not match.
    TypeError
        ``request`` together with one of its keywords.
    FileExistsError, NotADirectoryError, PermissionError, OSError
        From the file system; nothing is left behind.
    """
    report = progress or (lambda fraction, message: None)
    request = request_from(ExportRequest, request, {
        "items": items, "report_format": report_format, "input_path": input_path, "command": command,
        "overwrite": overwrite, "extra_files": extra_files}, _REQUEST_KEYWORDS)
    context = _context(folder, registered, displacement, request, raw=raw, info=info, template=template,
                       correspondence=correspondence, displacement_sd=displacement_sd, landmarks=landmarks,
                       labels=labels, t1_maps=t1_maps, segments=segments)
    job = _plan(output_path(folder, "folder"), context, request, report)
    _compute(context, job, qc, report)
    files = _write(context, job, report)
    report(1.0, "done")
    return ExportResult(folder=job.folder, files=files, items=job.chosen, skipped=job.skipped, qc=context.qc,
                        tre=context.tre, dice=context.dice, record=context.record)


# ---------------------------------------------------------------- the steps
def _context(folder: Any, registered: Any, displacement: Any, request: ExportRequest, *, raw: Any,
             t1_maps: Mapping[str, Mapping[str, Any]] | None, **inputs: Any) -> ExportContext:
    """The inputs of the export, checked against each other (shapes, report format, map roles)."""
    from ..core.report import REPORT_FORMATS

    u = np.asarray(displacement, np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"displacement must be (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}.")
    registered = _as_sequence(registered, "registered")
    if registered.frames.shape != (u.shape[0],) + u.shape[2:]:
        raise ValueError(f"registered frames {registered.frames.shape} and displacement {u.shape} do not match.")
    if raw is not None:
        raw = _as_sequence(raw, "raw", like=registered)
        if raw.frames.shape != registered.frames.shape:
            raise ValueError(f"raw frames {raw.frames.shape} and registered frames {registered.frames.shape} do not match.")
    report_format = str(request.report_format).lower()
    if report_format not in REPORT_FORMATS:
        raise ValueError(f"report_format must be one of {', '.join(REPORT_FORMATS)}; got {report_format!r}.")
    maps = {role: dict(values) for role, values in (t1_maps or {}).items() if values}
    bad_roles = [role for role in maps if role not in MAP_ROLES]
    if bad_roles:
        raise ValueError(f"t1_maps roles are {', '.join(MAP_ROLES)}; got {', '.join(bad_roles)}.")
    return ExportContext(registered=registered, displacement=u, raw=raw, t1_maps=maps, input_path=request.input_path,
                         report_format=report_format, command=request.command, destination=Path(folder), **inputs)


def _plan(folder: Path, context: ExportContext, request: ExportRequest, report: Callable[[float, str], None]) -> _ExportJob:
    """The items to write and their files; refuses an existing file or a file in the folder's place."""
    chosen, skipped = resolve_items(parse_export_items(request.items), context)
    if not chosen and not request.extra_files:
        raise ValueError("nothing to export; choose at least one item.")
    report(0.0, "checking the output folder")
    known = items_by_name()
    planned = [name for item in chosen for name in known[item].files(context.plan)] + list(request.extra_files)
    if not request.overwrite and folder.is_dir():
        existing = [str(folder / n) for n in planned if (folder / n).exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} (Export dock: tick Overwrite) or choose another folder.")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot export into {folder}: it is a file, not a folder; choose another output folder.")
    return _ExportJob(folder=folder, chosen=chosen, skipped=skipped, planned=tuple(planned), request=request)


def _compute(context: ExportContext, job: _ExportJob, qc: tuple | None, report: Callable[[float, str], None]) -> None:
    """TRE, Dice, QC metrics and the report figure, before anything is written."""
    from ..core.landmarks import dice_before_after, tre_before_after

    u = context.displacement
    if context.landmarks is not None:
        report(0.05, "landmark TRE")
        context.tre = tre_before_after(context.landmarks, u, n_frames=u.shape[0])
    if context.labels is not None:
        report(0.1, "all-pair Dice")
        context.dice = dice_before_after(context.labels, u)
    if context.raw is not None and {"qc", "report", "record"} & set(job.chosen):
        report(0.15, "QC metrics")
        if qc is not None and context.landmarks is None and context.labels is None:
            context.qc, context.qc_table, context.run_summary = qc
        else:
            context.qc, context.qc_table, context.run_summary = qc_metrics(
                context.raw, context.registered, u, info=context.info, template=context.template,
                correspondence=context.correspondence, tre=context.tre, dice=context.dice)
    if "report" in job.chosen:
        if context.raw is not None and "verdict" not in (context.info or {}):
            report(0.3, "verdict")
            context.info = {**(context.info or {}), **_assessment(context)}
        report(0.35, "QC report")
        context.figure = _report_figure(context)


def _assessment(context: ExportContext) -> dict[str, Any]:
    """``outlier_frames``, ``displacement_sd`` and ``verdict`` for a report whose caller had none
    (the napari Export dock passes the run's summary; ``register`` passes its metrics.json), by the
    function that makes metrics.json's, so the report says what ``register`` would have written."""
    from ..core.overlays import uncertainty_note
    from ..core.qc.verdict import assess_registration

    info = context.info or {}
    note = uncertainty_note(info.get("engine"), (info.get("params") or {}).get("uncertainty"),
                            context.displacement_sd is not None)
    raw = context.raw
    assessment = assess_registration(
        raw.frames, context.registered.frames, context.displacement, scores=context.correspondence,
        spacing_mm=raw.spacing_mm, timings_ms=raw.timings_ms, labels=context.labels,
        displacement_sd_mm=context.displacement_sd, uncertainty_note=note)
    assessment.pop("_verdict_inputs")
    return assessment


def _write(context: ExportContext, job: _ExportJob, report: Callable[[float, str], None]) -> list[Path]:
    """Write the items, then the extra files, then the run record (it hashes the others), all or nothing."""
    from ..io import atomic_write_folder

    known = items_by_name()
    first = [known[name] for name in job.chosen if not known[name].hashes_files]
    last = [known[name] for name in job.chosen if known[name].hashes_files]
    context.items = job.chosen

    def write_all(staging: Path) -> None:
        steps = len(job.chosen) + 1
        for k, item in enumerate(first):
            report(0.5 + 0.45 * k / steps, f"writing {item.name}")
            item.write(context, staging)
        for name, writer in job.request.extra_files.items():
            writer(staging / name)
        for item in last:
            report(0.95, "run record" if item.name == "record" else f"writing {item.name}")
            item.write(context, staging)

    return atomic_write_folder(job.folder, write_all, expected=list(job.planned), overwrite=job.request.overwrite)


def _report_figure(context: ExportContext) -> Any:
    """The one-page QC report figure (drawn before writing, so a drawing error writes nothing)."""
    from .._version import __version__
    from ..core.report import report_figure

    raw, table = context.raw, context.qc_table
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source = raw.metadata.get("source")
    return report_figure(
        raw.frames, context.registered.frames, context.displacement, spacing_mm=context.spacing_mm, name=raw.name,
        kind=raw.kind, timings_ms=raw.timings_ms, info=context.info, summary=context.run_summary,
        flagged_frames=table.flagged_frames if table is not None else None, tre=context.tre, dice=context.dice,
        t1_maps=context.t1_maps, segments=context.segments, displacement_sd_mm=context.displacement_sd, footer=f"napari-any2reg {__version__} · {stamp}" + (f" · {source}" if source else ""),
    )


def export_result(result: Any, folder: Any, **kwargs: Any) -> ExportResult:
    """:func:`export_registration` for a :class:`~napari_any2reg.core.registration.RegistrationResult`.

    The raw frames, template, correspondence maps and run summary come from the result;
    keyword arguments are passed on (``items``, ``landmarks``, ``labels``, ``t1_maps``...).
    """
    kwargs.setdefault("raw", result.sequence)
    kwargs.setdefault("info", result.summary())
    kwargs.setdefault("template", result.template)
    kwargs.setdefault("correspondence", (result.extras or {}).get("correspondence"))
    kwargs.setdefault("displacement_sd", (result.extras or {}).get("displacement_sd_mm"))
    return export_registration(folder, result.registered_sequence(), result.displacement, **kwargs)
