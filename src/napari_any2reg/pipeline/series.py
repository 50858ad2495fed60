"""One sequence from file to results: the code path of ``any2reg register`` and of each batch job.

Everything that can be checked (the input, the export items, the output folder, free disk space,
the network's weights) is checked before the registration runs; the outputs are written in one
all-or-nothing unit (:func:`napari_any2reg.io.atomic_write_folder`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Mapping
from typing import Sequence as Seq

import numpy as np

from ..core.vocabulary import arg
from ..io.labels import read_label_image  # re-exported: the pipeline API names it
from ._requests import request_from, output_path
from .preflight import (  # re-exported: the pipeline API has named them here
    check_weights,
    fit_problem_for,
    output_bytes,
    read_input,
    read_landmarks_for,
    refuse_replacing_inputs,
    resolve_export_items,
    scanner_map_files,
)

log = logging.getLogger(__name__)

__all__ = [
    "RegisterSettings",
    "RegisterOutcome",
    "SeriesRequest",
    "read_input",
    "resolve_export_items",
    "read_landmarks_for",
    "refuse_replacing_inputs",
    "check_weights",
    "scanner_map_files",
    "output_bytes",
    "register_series",
    "set_torch_threads",
    "read_label_image",
]


#: Options that were fields of :class:`RegisterSettings` before ``engine_options``: they keep
#: their place in :meth:`RegisterSettings.key`, so cohorts finished by earlier versions are
#: still recognised as finished.
_KEY_FIELDS = ("metric", "iterations_scale", "weights", "io_steps")


@dataclasses.dataclass(frozen=True)
class RegisterSettings:
    """How to register (the same for every series of a cohort).

    Attributes
    ----------
    engine : str, optional
        Registration engine; ``None`` = the default engine.
    device : {"auto", "cpu", "cuda"}
    reference_frame : int, optional
        Keep this frame fixed (all-to-one); ``None`` = groupwise.
    engine_options : dict
        Options of the engine (:data:`napari_any2reg.core.engine_api.ENGINE_OPTIONS`), checked
        and converted by :func:`~napari_any2reg.core.engine_api.validate_engine_options` when
        the settings are made; ``None`` values (the engine's default) are dropped.
    export : str, optional
        Export items (``"all"`` or ``"stack,qc,..."``); ``None`` = the plain outputs only.
    report_format : {"png", "pdf"}

    Raises
    ------
    EngineOptionError
        An option the engine does not take, or a value outside its range.
    """

    engine: str | None = None
    device: str = "auto"
    reference_frame: int | None = None
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    export: str | None = None
    report_format: str = "png"

    def __post_init__(self) -> None:
        options = {name: value for name, value in dict(self.engine_options).items() if value is not None}
        if "reference_frame" in options:
            # register() takes it as its own argument: one place for it, not two that may disagree
            raise ValueError("reference_frame is a field of RegisterSettings, not an engine option.")
        if options:  # validating needs the engine table (torch): only when there is something to check
            from ..core.engine_api import validate_engine_options

            options = validate_engine_options(self.engine_name(), options)
        object.__setattr__(self, "engine_options", options)

    @property
    def weights(self) -> str | None:
        """The ``weights`` option (the any2reg engines' network), ``None`` for the shipped one."""
        return self.engine_options.get("weights")

    def engine_name(self) -> str:
        if self.engine is not None:
            return self.engine
        from ..core.registration import DEFAULT_ENGINE

        return DEFAULT_ENGINE

    def key(self) -> dict[str, Any]:
        """What decides the results (a finished series made with another key is not reused)."""
        options = {name: _key_value(value) for name, value in self.engine_options.items()}
        key = {"engine": self.engine_name(), "reference_frame": self.reference_frame}
        key |= {name: options.pop(name, None) for name in _KEY_FIELDS}
        if options:
            key["engine_options"] = dict(sorted(options.items()))
        return key | {"export": self.export, "report_format": self.report_format}


def _key_value(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@dataclasses.dataclass
class RegisterOutcome:
    """What :func:`register_series` did."""

    sequence: Any
    result: Any
    metrics: dict[str, Any]
    outdir: Path
    export: Any = None  # pipeline.export.ExportResult with --export
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    # the export's QC metrics (as in qc.json), computed once before the extra files are made
    qc: dict[str, Any] | None = None
    fits: dict[str, Any] | None = None  # {"raw": T1FitResult, "registered": T1FitResult} with maps


def set_torch_threads(threads: int | None) -> None:
    """Pin torch's CPU threads (``None``: leave torch's choice).

    Two torch threads per job on a busy 2-core machine were 3-10x slower than one, so batch
    jobs use one. The OpenMP variables are set too, for libraries imported later.
    """
    if threads is None:
        return
    from ..core.device import check_threads

    threads = check_threads(threads)  # 10**9 would kill the process (libgomp out of memory)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(int(threads))


ExtraFiles = Callable[[RegisterOutcome], Mapping[str, Callable[[Path], None]]]


@dataclasses.dataclass(frozen=True)
class SeriesRequest:
    """What one registration reads beside its sequence, and how it writes its outputs.

    :class:`RegisterSettings` is what a cohort's series share; this is each series' own part.

    Attributes
    ----------
    input_path : str or list, optional
        What was read (metrics, run record, and never overwritten).
    landmarks_path : str, optional
        Landmark CSV for the ``landmarks`` export item and TRE.
    mask_path : str, optional
        2-D label image / mask (:func:`read_label_image`): only its non-zero region drives the
        similarity (``register(..., mask=)``; the plain ``any2reg`` pass notes it ignores it).
    rv_insertion : str or array_like, optional
        RV insertion points (``"Y1,X1;Y2,X2"``, pixels, anterior first) with ``mask_path``
        (label 2 = LV myocardium) and the ``report`` export item: the report shows the AHA
        segments (``level``) of the registered T1 map as a bullseye and a table
        (``metrics.json``: ``segments``).
    level : {"basal", "mid", "apical"}
    overwrite : bool
        Replace existing outputs; default: refuse before computing.
    command : list of str, optional
        Command line for the run record.
    extra_names : tuple of str
        Names of the files ``extra_files`` adds, checked for clashes before computing.
    """

    input_path: Any = None
    landmarks_path: str | None = None
    mask_path: str | None = None
    rv_insertion: Any = None
    level: str = "mid"
    overwrite: bool = False
    command: Seq[str] | None = None
    extra_names: Seq[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_names", tuple(self.extra_names))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))


#: The keyword spellings of :class:`SeriesRequest` in :func:`register_series` and their defaults.
_REQUEST_KEYWORDS = {field.name: field.default for field in dataclasses.fields(SeriesRequest)}


@dataclasses.dataclass(frozen=True)
class _SeriesPlan:
    """What one registration will write, decided and checked before it runs."""

    outdir: Path
    engine: str
    label: str  # the input as metrics.json and the run record name it
    export_items: tuple[str, ...] | None  # None: the plain outputs only
    skipped: dict[str, str]  # export items left out of "all", and why
    landmarks: Any  # LandmarkTable or None
    region: np.ndarray | None  # the mask's label image
    names: tuple[str, ...]  # every file written
    scanner_maps: dict[str, Callable[[Path], Any]]


def register_series(
    sequence: Any,
    outdir: Any,
    settings: RegisterSettings,
    request: SeriesRequest | None = None,
    *,
    input_path: Any = None,
    landmarks_path: str | None = None,
    mask_path: str | None = None,
    overwrite: bool = False,
    command: Seq[str] | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
    extra_files: ExtraFiles | None = None,
    extra_names: Seq[str] = (),
    rv_insertion: Any = None,
    level: str = "mid",
) -> RegisterOutcome:
    """Register one sequence and write its outputs into ``outdir`` (all or nothing).

    Writes ``registered.tif``, ``displacement.npy``, ``metrics.json`` (and
    ``correspondence.npy`` for the any2reg engines), or with ``settings.export`` the export
    items (:func:`napari_any2reg.pipeline.export.export_result`).

    Parameters
    ----------
    sequence : Sequence
        Read with :func:`read_input` (overrides of kind, timings, spacing already applied).
    outdir : str or Path
        Output folder (created when missing; nothing is left in it if the run fails).
    settings : RegisterSettings
    request : SeriesRequest, optional
        The series' own inputs and how to write, as one object; or give its fields as the
        keywords ``input_path``, ``landmarks_path``, ``mask_path``, ``overwrite``, ``command``,
        ``extra_names``, ``rv_insertion`` and ``level`` (described in :class:`SeriesRequest`;
        not both).
    progress, cancel :
        Passed to :func:`napari_any2reg.core.registration.register`.
    extra_files : callable(outcome) -> {name: writer(path)}, optional
        More files computed from the outcome and written in the same unit (batch:
        ``series.json``); their names are ``extra_names``.

    Returns
    -------
    RegisterOutcome

    Raises
    ------
    ValueError, OSError, FileExistsError, WeightsError
        Before computing, for anything that can be checked; nothing is written.
    TypeError
        ``request`` together with one of its keywords.
    """
    request = request_from(SeriesRequest, request, {
        "input_path": input_path, "landmarks_path": landmarks_path, "mask_path": mask_path,
        "rv_insertion": rv_insertion, "level": level, "overwrite": overwrite, "command": command,
        "extra_names": extra_names}, _REQUEST_KEYWORDS)
    plan = _plan(sequence, output_path(outdir, "outdir"), settings, request)
    result = _register(sequence, settings, plan, progress, cancel)
    outcome, verdict_inputs = _measure(sequence, result, plan, request)
    if plan.export_items is None:
        _write_plain(outcome, plan, request, extra_files)
    else:
        _export(outcome, plan, settings, request, verdict_inputs, extra_files)
    return outcome


# ---------------------------------------------------------------- the steps
def _plan(sequence: Any, outdir: Path, settings: RegisterSettings, request: SeriesRequest) -> _SeriesPlan:
    """Everything checked before registering: export items, landmarks, files, room, weights."""
    from ..io import check_output_folder

    engine = settings.engine_name()
    path = request.input_path
    label = str(path) if path is not None and not isinstance(path, (list, tuple)) else sequence.name
    export_items, skipped = resolve_export_items(
        settings.export, sequence, landmarks_given=request.landmarks_path is not None, input_label=label, engine=engine,
    )
    landmarks = read_landmarks_for(request.landmarks_path, sequence) if request.landmarks_path is not None else None
    _check_segments_request(sequence, request, export_items)
    if export_items is None and landmarks is not None:
        raise ValueError("--landmarks is used by the export; add --export all (or --export landmarks,...).")
    scanner_maps = scanner_map_files(sequence)
    names = _output_names(sequence, settings, engine, export_items, request.extra_names, scanner_maps)
    targets = [outdir / name for name in names]
    inputs = list(path) if isinstance(path, (list, tuple)) else [path]
    refuse_replacing_inputs(targets, inputs + [request.landmarks_path, request.mask_path, settings.weights])
    region = read_label_image(request.mask_path, sequence.shape) if request.mask_path is not None else None
    existing = [str(p) for p in targets if p.exists()]
    if existing and not request.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} to replace them")
    # registered + displacement (2) + correspondence: 16 bytes a voxel; the export adds NIfTI
    # copies and the Jacobian, and a report of a few MB
    check_output_folder(outdir, needed_bytes=output_bytes(sequence, 16) if export_items is None
                        else output_bytes(sequence, 32, 5_000_000))
    if engine.startswith("any2reg"):
        _refuse_special_weights(settings.weights)
        check_weights(settings.device, settings.weights)
    return _SeriesPlan(outdir=outdir, engine=engine, label=label, export_items=export_items, skipped=skipped,
                       landmarks=landmarks, region=region, names=tuple(names), scanner_maps=scanner_maps)


def _refuse_special_weights(weights: Any) -> None:
    """A weights path that is a FIFO, socket, device or folder: said so (reading a FIFO blocks
    forever, and the loader's fallback says "no such file" about a path that exists)."""
    from ..core.weights import WeightsError
    from ..io._common.errors import special_file_kind

    what = special_file_kind(weights) if weights is not None else None
    if what is not None:
        raise WeightsError(f"{arg('weights', str(weights))}: it is {what}, not a regular file; pass a best.pt / "
                           f"checkpoint.pt written by 'any2reg train', or omit {arg('weights')} to use the shipped weights.")


def _check_segments_request(sequence: Any, request: SeriesRequest, export_items: tuple[str, ...] | None) -> None:
    """AHA segments in the report need a mask, the report item and a T1 fit: checked before registering."""
    if request.rv_insertion is None:
        return
    from ..core.tissue.segments import parse_insertion_points

    parse_insertion_points(request.rv_insertion)
    if request.mask_path is None or export_items is None or "report" not in export_items or fit_problem_for(sequence):
        raise ValueError(f"{arg('rv_insertion')} puts the AHA segments of the registered T1 map in the QC report: it "
                         f"needs {arg('mask')} (label 2 = LV myocardium), the report export item and a sequence a "
                         "T1 map can be fitted to.")


def _output_names(sequence: Any, settings: RegisterSettings, engine: str, export_items: tuple[str, ...] | None,
                  extra_names: Seq[str], scanner_maps: Mapping[str, Any]) -> list[str]:
    """Every file the run writes, to refuse an overwrite (or a clash) before computing."""
    names = ["registered.tif", "displacement.npy", "metrics.json"]
    if engine.startswith("any2reg"):
        names.append("correspondence.npy")
    if export_items is not None:
        from .export import planned_files

        names += [name for name in planned_files(export_items, report_format=settings.report_format, n_frames=sequence.n_frames,
                                                   scanner_geometry=sequence.geometry is not None) if name not in names]
    names += [name for name in extra_names if name not in names]
    return names + [name for name in scanner_maps if name not in names]


def _register(sequence: Any, settings: RegisterSettings, plan: _SeriesPlan, progress: Any, cancel: Any):
    from ..core.registration import register

    return register(
        sequence,
        engine=plan.engine,
        device=settings.device,
        reference_frame=settings.reference_frame,
        progress=progress,
        cancel=cancel if cancel is not None else threading.Event(),
        **({"mask": plan.region} if plan.region is not None else {}),
        **settings.engine_options,
    )


def _measure(sequence: Any, result: Any, plan: _SeriesPlan, request: SeriesRequest) -> tuple[RegisterOutcome, dict[str, Any]]:
    """``metrics.json`` (run summary, alignment before/after, outliers, verdict) in a new outcome;
    also returns the verdict's inputs (a fit adds its R² to them)."""
    from ..core.metrics import alignment_score

    metrics = result.summary()
    if request.mask_path is not None:
        metrics["mask_path"] = str(request.mask_path)  # the run record's input.mask
    metrics.update(
        {
            "input": plan.label,
            "n_frames": sequence.n_frames,
            "shape": list(sequence.shape),
            "spacing_mm": list(sequence.spacing_mm),
            "spacing_source": sequence.metadata.get("spacing_source"),
            "kind": sequence.kind,
            "alignment_score_before": alignment_score(sequence.frames),
            "alignment_score_after": alignment_score(result.registered),
            "alignment_score_definition": "share of variance in the first 2 principal components, central ROI (higher = better aligned)",
            "displacement_convention": "pixels (dy, dx), pull-back: registered_i(x) = frame_i(x + u_i(x))",
        }
    )
    verdict_inputs = _assess(sequence, result, plan.region, metrics)
    if sequence.metadata.get("read_warnings"):
        metrics["read_warnings"] = list(sequence.metadata["read_warnings"])
    if plan.skipped:
        metrics["export_skipped"] = dict(plan.skipped)
    outcome = RegisterOutcome(sequence=sequence, result=result, metrics=metrics, outdir=plan.outdir, skipped=dict(plan.skipped))
    return outcome, verdict_inputs


def _assess(sequence: Any, result: Any, labels: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Add ``outlier_frames``, ``displacement_sd`` and ``verdict`` to ``metrics``; returns the
    verdict's inputs (a fit adds its R² to them)."""
    from ..core.overlays import uncertainty_note
    from ..core.qc.verdict import assess_registration

    sd = result.extras.get("displacement_sd_mm")
    note = uncertainty_note(result.engine, result.params.get("uncertainty"), sd is not None)
    assessment = assess_registration(
        sequence.frames, result.registered, result.displacement, scores=result.extras.get("correspondence"),
        spacing_mm=sequence.spacing_mm, timings_ms=sequence.timings_ms, labels=labels,
        displacement_sd_mm=sd, uncertainty_note=note,
    )
    inputs = assessment.pop("_verdict_inputs")
    metrics.update(assessment)
    return inputs


def _metrics_writer(metrics: dict[str, Any]) -> Callable[[Path], None]:
    # written last: the fit and the segments add to metrics after it is made
    return lambda p: p.write_text(json.dumps(metrics, indent=2, default=float))


def _write_plain(outcome: RegisterOutcome, plan: _SeriesPlan, request: SeriesRequest, extra_files: ExtraFiles | None) -> None:
    """The plain outputs (no export): stack, field, metrics, correspondence, scanner maps, extras."""
    from ..io import atomic_write_folder, write_tiff

    result, scores = outcome.result, outcome.result.extras.get("correspondence")
    more = {**plan.scanner_maps, **(dict(extra_files(outcome)) if extra_files is not None else {})}

    def write_outputs(staging: Path) -> None:
        write_tiff(staging / "registered.tif", result.registered_sequence())
        np.save(staging / "displacement.npy", result.displacement)
        _metrics_writer(outcome.metrics)(staging / "metrics.json")
        if scores is not None and "correspondence.npy" in plan.names:
            np.save(staging / "correspondence.npy", np.asarray(scores, np.float32))
        for name, writer in more.items():
            writer(staging / name)

    # the outputs appear together or not at all (full disk, Ctrl-C, SIGTERM)
    atomic_write_folder(plan.outdir, write_outputs, expected=list(plan.names), overwrite=request.overwrite)


def _export(outcome: RegisterOutcome, plan: _SeriesPlan, settings: RegisterSettings, request: SeriesRequest,
            verdict_inputs: dict[str, Any], extra_files: ExtraFiles | None) -> None:
    """The export items: T1 fits before/after (and the verdict with them), segments, QC once, files."""
    from .export import ExportRequest, export_result, t1_maps_from_fit

    t1_maps = _fit_maps(outcome, plan, settings, verdict_inputs)
    t1_maps = None if t1_maps is None else {role: t1_maps_from_fit(fit) for role, fit in t1_maps.items()}
    segments = _segments(outcome, plan, settings, request)
    result, scores = outcome.result, outcome.result.extras.get("correspondence")
    qc = None
    if {"qc", "report", "record"} & set(plan.export_items) and plan.landmarks is None:
        # computed here, once, so extra_files (the batch's summary row) can use it too
        from .export import qc_metrics

        qc = qc_metrics(outcome.sequence, result.registered_sequence(), result.displacement, info=outcome.metrics,
                        template=result.template, correspondence=scores)
        outcome.qc = qc[0]
    extra = {"metrics.json": _metrics_writer(outcome.metrics), **plan.scanner_maps}
    if scores is not None:
        extra["correspondence.npy"] = lambda p: np.save(p, np.asarray(scores, np.float32))
    if extra_files is not None:
        extra.update(extra_files(outcome))
    export_request = ExportRequest(items=plan.export_items, report_format=settings.report_format, input_path=plan.label,
                                   command=None if request.command is None else list(request.command),
                                   overwrite=request.overwrite, extra_files=extra)
    outcome.export = export_result(result, plan.outdir, request=export_request, landmarks=plan.landmarks,
                                   t1_maps=t1_maps, info=outcome.metrics, qc=qc, segments=segments)
    outcome.qc = outcome.export.qc


def _fit_maps(outcome: RegisterOutcome, plan: _SeriesPlan, settings: RegisterSettings,
              verdict_inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The T1 fits before and after (``outcome.fits``) when a map item is exported; the verdict
    then weighs their R² too. The registered fit leaves the outlier frames out."""
    from .export import MAP_ITEMS

    if not set(MAP_ITEMS) & set(plan.export_items):
        return None
    from ..core.mapping import fit_t1
    from ..core.qc.verdict import fit_evidence, make_verdict

    sequence, metrics = outcome.sequence, outcome.metrics
    exclude = _auto_exclusion(sequence, metrics)
    outcome.fits = {
        "raw": fit_t1(sequence, device=settings.device),
        "registered": fit_t1(outcome.result.registered_sequence(), device=settings.device, exclude_frames=exclude),
    }
    verdict_inputs.update(fit_evidence(outcome.fits["raw"], outcome.fits["registered"], plan.region))
    metrics["verdict"] = make_verdict(**verdict_inputs)
    return outcome.fits


def _auto_exclusion(sequence: Any, metrics: dict[str, Any]) -> tuple[int, ...]:
    """The outlier frames the registered fit leaves out (``--exclude-frames auto``), recorded
    in ``metrics["fit_frames"]``."""
    from ..core.mapping import T1_MODELS, model_for_kind
    from ..core.qc.outliers import auto_exclusion

    model = T1_MODELS[model_for_kind(sequence.kind)]
    exclude, note = auto_exclusion(metrics["outlier_frames"]["indices"], sequence.n_frames, model.n_params)
    metrics["fit_frames"] = {"excluded": list(exclude), "note": note}
    return exclude


def _segments(outcome: RegisterOutcome, plan: _SeriesPlan, settings: RegisterSettings,
              request: SeriesRequest) -> dict[str, Any] | None:
    """The AHA segments of the registered T1 map for the report (``metrics["segments"]``)."""
    if request.rv_insertion is None:
        return None
    from ..core.mapping import fit_t1
    from .segments import analyse_segments

    fitted = (outcome.fits or {}).get("registered") or fit_t1(outcome.result.registered_sequence(), device=settings.device)
    analysis = analyse_segments(fitted.t1_ms, plan.region, request.rv_insertion, level=request.level,
                                quantity=getattr(fitted, "quantity", "T1"), unit="ms")
    outcome.metrics["segments"] = analysis.summary()
    return outcome.metrics["segments"]
