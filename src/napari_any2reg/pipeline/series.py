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
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping
from typing import Sequence as Seq

import numpy as np

from ..io.labels import read_label_image  # re-exported: the pipeline API names it
from ..core.vocabulary import arg

log = logging.getLogger(__name__)

__all__ = [
    "RegisterSettings",
    "RegisterOutcome",
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
    if threads < 1:
        raise ValueError(f"--threads must be at least 1; got {threads}.")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(int(threads))


def read_input(source: Any, **options: Any):
    """``read_sequence`` with its warnings kept in ``metadata["read_warnings"]`` only.

    Callers show them in their own form (one line each on the command line, a column in the
    batch summary), so the Python warnings are silenced here.
    """
    from ..io import SequenceReadWarning, read_sequence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SequenceReadWarning)
        return read_sequence(source, **options)


def refuse_replacing_inputs(targets: Seq[Path], inputs: Seq[Any]) -> None:
    """Never let an output (even with overwrite) replace a file this run reads.

    ``any2reg register out/registered.tif -o out --overwrite`` would otherwise replace the very
    data being processed (and a NIfTI input's JSON sidecar is as much input as the image).
    """
    from ..io._common import find_sidecar

    read: list[Path] = []
    for name in inputs:
        if name is None or isinstance(name, (list, tuple)) or not Path(name).is_file():
            continue
        read.append(Path(name))
        sidecar = find_sidecar(Path(name))
        if sidecar is not None:
            read.append(sidecar)
    for target in targets:
        if not target.is_file():
            continue
        for source in read:
            if os.path.samefile(target, source):
                alias = "" if Path(os.path.abspath(source)) == Path(os.path.abspath(target)) else f" (as {source})"
                raise ValueError(
                    f"{target} is also read by this run{alias}; writing the outputs there would "
                    "replace it. Choose another output folder or file name."
                )


def scanner_map_files(sequence: Any) -> dict[str, Callable[[Path], Any]]:
    """``{file name: writer(path)}`` of the scanner's own maps that the reader left out of the
    frames (``metadata["scanner_maps"]``, e.g. a Philips MOLLI's T1 MAP images): written beside
    the registration (``scanner_t1_map.tif``) so a reader can compare them with a fit after
    correction."""
    from ..io import save_map_tiff

    maps = sequence.metadata.get("scanner_maps") or {}
    files = {}
    for label, array in maps.items():
        stem = "_".join("".join(c if c.isalnum() else " " for c in label.lower()).split())
        files[f"{stem}.tif"] = (lambda p, a=np.asarray(array, np.float32), text=label:
                                save_map_tiff(p, a, sequence.spacing_mm, {"map": text, "source": "scanner (DICOM)"},
                                              axes="YX"))
    return files


def check_weights(device: str, weights: str | None) -> None:
    """Load the network the any2reg engines will use now, so a weights problem stops the run
    before any work, with one line that says what to do (the loaded network is cached, so a
    batch worker that calls this once serves every later series from memory)."""
    from ..core.device import resolve_device
    from ..core.engines.any2reg import load_pretrained, shipped_weights_name
    from ..core.weights import WeightsError

    device = resolve_device(device)
    if shipped_weights_name(weights) is not None:  # the default, or a shipped file by name
        load_pretrained(device, weights)  # its WeightsError already names the file and the fix
        return
    # the interface's words (core.vocabulary): --weights on the command line, weights= in Python
    named = arg("weights", str(weights))
    fix = f"pass a best.pt / checkpoint.pt written by 'any2reg train', or omit {arg('weights')} to use the shipped weights."
    import zipfile

    if Path(weights).is_file() and not zipfile.is_zipfile(weights):
        # torch's own message for this case is a page about weights_only that misleads
        raise WeightsError(f"{named}: not a PyTorch checkpoint (those are zip archives); {fix}")
    try:
        load_pretrained(device, weights)
    except Exception as exc:  # torch and the checkpoint layout raise many types for a wrong file
        if not Path(weights).is_file():
            raise WeightsError(f"{named}: no such file; {fix}") from exc
        cause = " ".join(str(exc).split())
        for spelling in {str(weights), str(Path(weights).resolve())}:
            cause = cause.replace(f"Weights file {spelling} ", "").replace(f"{spelling}: ", "").replace(spelling, "the file")
        cause = cause if len(cause) <= 160 else cause[:157] + "..."  # torch's messages run to pages
        if not isinstance(exc, WeightsError):
            cause = f"{type(exc).__name__}: {cause}"
        raise WeightsError(f"{named}: not a usable any2reg network ({cause}); {fix}") from exc


def output_bytes(sequence: Any, per_voxel: int, extra: int = 0) -> int:
    """Rough size of the outputs, to refuse a disk that cannot hold them before computing."""
    return sequence.n_frames * sequence.shape[0] * sequence.shape[1] * per_voxel + extra


def fit_problem_for(sequence: Any) -> str | None:
    """Why no T1 map can be fitted to ``sequence`` (``None``: it can)."""
    from ..core.mapping import T1_MODELS, fit_problem, model_for_kind

    model = model_for_kind(sequence.kind)
    if model is None:
        return f"no T1 model for a {sequence.kind!r} sequence (pass {arg('kind')} molli|stone|sasha if it is one)"
    quantity = T1_MODELS[model].quantity
    if quantity != "T1":  # the export's map items are T1 maps (t1_*.tif); T2 / T2* come from 'fit'
        return (f"a {sequence.kind!r} sequence gives a {quantity} map, not a T1 map: fit it from the registered "
                f"stack with 'any2reg fit registered.tif --model {model}' (or fit_t1(..., model={model!r}))")
    if sequence.timings_ms is None:
        return f"no inversion/saturation times (pass {arg('timings_ms')})"
    return fit_problem(sequence.timings_ms, sequence.n_frames, model)


def resolve_export_items(
    export: str | None, sequence: Any, *, landmarks_given: bool, input_label: str = "the input",
    engine: str | None = None,
) -> tuple[tuple[str, ...] | None, dict[str, str]]:
    """The export items requested, resolved against what this run can provide.

    Returns the items (``None`` without an export) and, for ``all``, the items left out and why
    (printed and kept in metrics.json). An item named explicitly whose input is missing is an
    error, raised here, before the registration runs.
    """
    from .export import EXPORT_ITEMS, MAP_ITEMS, parse_export_items

    if export is None:
        return None, {}
    requested = parse_export_items(export)
    if not requested:
        raise ValueError("--export needs 'all' or a comma-separated list of items.")
    no_fit = fit_problem_for(sequence)
    if requested == ("all",):
        skipped = {"dice": "needs labels of every frame; export from napari or with pipeline.export"}
        if not landmarks_given:
            skipped["landmarks"] = "no --landmarks CSV"
        if no_fit is not None:
            skipped.update(dict.fromkeys(MAP_ITEMS, f"no T1 fit possible: {no_fit}"))
        if engine is not None and not engine.startswith("any2reg"):
            skipped["uncertainty"] = f"the {engine} engine gives no per-pixel uncertainty (the network engines do)"
        return tuple(item for item in EXPORT_ITEMS if item not in skipped), skipped
    if "dice" in requested:
        raise ValueError("--export dice needs labels of every frame; export from napari (Export panel) or with pipeline.export.")
    if "uncertainty" in requested and engine is not None and not engine.startswith("any2reg"):
        raise ValueError(f"--export uncertainty: the {engine} engine gives no per-pixel uncertainty; use --engine any2reg "
                         "or any2reg-io, or leave uncertainty out of --export.")
    if "landmarks" in requested and not landmarks_given:
        raise ValueError("--export landmarks needs --landmarks CSV (frame,name,y,x in pixels).")
    if set(MAP_ITEMS) & set(requested) and no_fit is not None:
        raise ValueError(f"--export maps: no T1 fit is possible for {input_label}: {no_fit}")
    # the plain outputs (registered.tif, displacement.npy) are always part of an export
    return tuple(item for item in EXPORT_ITEMS if item in set(requested) | {"stack", "displacement"}), {}


def read_landmarks_for(path: str, sequence: Any):
    """A landmark CSV checked against the sequence's frames (before registering)."""
    from ..io.landmarks import read_landmarks_csv

    table = read_landmarks_csv(path, spacing_mm=sequence.spacing_mm)
    if table.n_frames > sequence.n_frames:
        raise ValueError(
            f"--landmarks {path}: a point is on frame {table.n_frames - 1} but {sequence.name!r} has "
            f"{sequence.n_frames} frames (0..{sequence.n_frames - 1}); frames are 0-based."
        )
    table.positions(sequence.n_frames)  # a landmark placed twice on a frame: fail before registering
    return table


ExtraFiles = Callable[[RegisterOutcome], Mapping[str, Callable[[Path], None]]]


def _assess(sequence: Any, result: Any, labels: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Add ``outlier_frames``, ``displacement_sd`` and ``verdict`` to ``metrics``; returns the
    verdict's inputs (a fit adds its R² to them)."""
    from ..core.verdict import assess_registration

    note = result.params.get("uncertainty")
    if note is None:
        note = (f"none: the {result.engine} engine optimises one field per sequence and has no spread to "
                "report; the network engines (any2reg, any2reg-io) give displacement_sd")
    assessment = assess_registration(
        sequence.frames, result.registered, result.displacement, scores=result.extras.get("correspondence"),
        spacing_mm=sequence.spacing_mm, timings_ms=sequence.timings_ms, labels=labels,
        displacement_sd_mm=result.extras.get("displacement_sd_mm"), uncertainty_note=note,
    )
    inputs = assessment.pop("_verdict_inputs")
    metrics.update(assessment)
    return inputs


def _auto_exclusion(sequence: Any, metrics: dict[str, Any]) -> tuple[int, ...]:
    """The outlier frames the registered fit leaves out (``--exclude-frames auto``), recorded
    in ``metrics["fit_frames"]``."""
    from ..core.mapping import T1_MODELS, model_for_kind
    from ..core.outliers import auto_exclusion

    model = T1_MODELS[model_for_kind(sequence.kind)]
    exclude, note = auto_exclusion(metrics["outlier_frames"]["indices"], sequence.n_frames, model.n_params)
    metrics["fit_frames"] = {"excluded": list(exclude), "note": note}
    return exclude


def register_series(
    sequence: Any,
    outdir: Any,
    settings: RegisterSettings,
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
    input_path : str or list, optional
        What was read (metrics, run record, and never overwritten).
    landmarks_path : str, optional
        Landmark CSV for the ``landmarks`` export item and TRE.
    mask_path : str, optional
        2-D label image / mask (:func:`read_label_image`): only its non-zero region drives the
        similarity (``register(..., mask=)``; the plain ``any2reg`` pass notes it ignores it).
    overwrite : bool
        Replace existing outputs; default: refuse before computing.
    command : list of str, optional
        Command line for the run record.
    progress, cancel :
        Passed to :func:`napari_any2reg.core.registration.register`.
    extra_files : callable(outcome) -> {name: writer(path)}, optional
        More files computed from the outcome and written in the same unit (batch: ``series.json``).
    extra_names : list of str
        Their names, checked for clashes before computing.
    rv_insertion : str or array_like, optional
        RV insertion points (``"Y1,X1;Y2,X2"``, pixels, anterior first) with ``mask_path``
        (label 2 = LV myocardium) and the ``report`` export item: the report shows the AHA
        segments (``level``) of the registered T1 map as a bullseye and a table
        (``metrics.json``: ``segments``).

    Returns
    -------
    RegisterOutcome

    Raises
    ------
    ValueError, OSError, FileExistsError, WeightsError
        Before computing, for anything that can be checked; nothing is written.
    """
    from ..core.metrics import alignment_score
    from ..core.registration import register
    from ..io import atomic_write_folder, check_output_folder, write_tiff

    outdir = Path(outdir)
    engine = settings.engine_name()
    label = str(input_path) if input_path is not None and not isinstance(input_path, (list, tuple)) else sequence.name
    export_items, skipped = resolve_export_items(
        settings.export, sequence, landmarks_given=landmarks_path is not None, input_label=label, engine=engine,
    )
    landmarks = read_landmarks_for(landmarks_path, sequence) if landmarks_path is not None else None
    if rv_insertion is not None:  # AHA segments in the report: checked before registering
        from ..core.segments import parse_insertion_points

        parse_insertion_points(rv_insertion)
        if mask_path is None or export_items is None or "report" not in export_items or fit_problem_for(sequence):
            raise ValueError(f"{arg('rv_insertion')} puts the AHA segments of the registered T1 map in the QC report: it "
                             f"needs {arg('mask')} (label 2 = LV myocardium), the report export item and a sequence a "
                             "T1 map can be fitted to.")
    if export_items is None and landmarks is not None:
        raise ValueError("--landmarks is used by the export; add --export all (or --export landmarks,...).")
    names = ["registered.tif", "displacement.npy", "metrics.json"]
    if engine.startswith("any2reg"):
        names.append("correspondence.npy")
    if export_items is not None:
        from .export import planned_files

        names += [name for name in planned_files(export_items, report_format=settings.report_format, n_frames=sequence.n_frames,
                                                   scanner_geometry=sequence.geometry is not None) if name not in names]
    names += [name for name in extra_names if name not in names]
    scanner_maps = scanner_map_files(sequence)
    names += [name for name in scanner_maps if name not in names]
    targets = [outdir / name for name in names]
    inputs = list(input_path) if isinstance(input_path, (list, tuple)) else [input_path]
    refuse_replacing_inputs(targets, inputs + [landmarks_path, mask_path, settings.weights])
    region = read_label_image(mask_path, sequence.shape) if mask_path is not None else None
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} to replace them")
    # registered + displacement (2) + correspondence: 16 bytes a voxel; the export adds NIfTI
    # copies and the Jacobian, and a report of a few MB
    check_output_folder(outdir, needed_bytes=output_bytes(sequence, 16) if export_items is None
                        else output_bytes(sequence, 32, 5_000_000))
    if engine.startswith("any2reg"):
        check_weights(settings.device, settings.weights)

    result = register(
        sequence,
        engine=engine,
        device=settings.device,
        reference_frame=settings.reference_frame,
        progress=progress,
        cancel=cancel if cancel is not None else threading.Event(),
        **({"mask": region} if region is not None else {}),
        **settings.engine_options,
    )
    metrics = result.summary()
    if mask_path is not None:
        metrics["mask_path"] = str(mask_path)  # the run record's input.mask
    metrics.update(
        {
            "input": label,
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
    verdict_inputs = _assess(sequence, result, region, metrics)
    if sequence.metadata.get("read_warnings"):
        metrics["read_warnings"] = list(sequence.metadata["read_warnings"])
    if skipped:
        metrics["export_skipped"] = dict(skipped)
    outcome = RegisterOutcome(sequence=sequence, result=result, metrics=metrics, outdir=outdir, skipped=dict(skipped))
    scores = result.extras.get("correspondence")
    metrics_writer = {"metrics.json": lambda p: p.write_text(json.dumps(metrics, indent=2, default=float))}

    if export_items is not None:
        from .export import MAP_ITEMS, export_result, t1_maps_from_fit

        t1_maps = None
        if set(MAP_ITEMS) & set(export_items):
            from ..core.mapping import fit_t1

            exclude = _auto_exclusion(sequence, metrics)
            outcome.fits = {
                "raw": fit_t1(sequence, device=settings.device),
                "registered": fit_t1(result.registered_sequence(), device=settings.device, exclude_frames=exclude),
            }
            from ..core.verdict import fit_evidence, make_verdict

            verdict_inputs.update(fit_evidence(outcome.fits["raw"], outcome.fits["registered"], region))
            metrics["verdict"] = make_verdict(**verdict_inputs)
            t1_maps = {role: t1_maps_from_fit(fit) for role, fit in outcome.fits.items()}
        segments = None
        if rv_insertion is not None:
            from ..core.mapping import fit_t1
            from .segments import analyse_segments

            fitted = (outcome.fits or {}).get("registered") or fit_t1(result.registered_sequence(), device=settings.device)
            analysis = analyse_segments(fitted.t1_ms, region, rv_insertion, level=level,
                                        quantity=getattr(fitted, "quantity", "T1"), unit="ms")
            segments = metrics["segments"] = analysis.summary()
        qc = None
        if {"qc", "report", "record"} & set(export_items) and landmarks is None:
            # computed here, once, so extra_files (the batch's summary row) can use it too
            from .export import qc_metrics

            qc = qc_metrics(sequence, result.registered_sequence(), result.displacement, info=metrics,
                            template=result.template, correspondence=scores)
            outcome.qc = qc[0]
        extra = {**metrics_writer, **scanner_maps}
        if scores is not None:
            extra["correspondence.npy"] = lambda p: np.save(p, np.asarray(scores, np.float32))
        if extra_files is not None:
            extra.update(extra_files(outcome))
        outcome.export = export_result(
            result, outdir, items=export_items, landmarks=landmarks, t1_maps=t1_maps, info=metrics,
            input_path=label, report_format=settings.report_format, extra_files=extra,
            command=None if command is None else list(command), overwrite=overwrite, qc=qc, segments=segments,
        )
        outcome.qc = outcome.export.qc
        return outcome

    more = {**scanner_maps, **(dict(extra_files(outcome)) if extra_files is not None else {})}

    def write_outputs(staging: Path) -> None:
        write_tiff(staging / "registered.tif", result.registered_sequence())
        np.save(staging / "displacement.npy", result.displacement)
        metrics_writer["metrics.json"](staging / "metrics.json")
        if scores is not None and "correspondence.npy" in names:
            np.save(staging / "correspondence.npy", np.asarray(scores, np.float32))
        for name, writer in more.items():
            writer(staging / name)

    # the outputs appear together or not at all (full disk, Ctrl-C, SIGTERM)
    atomic_write_folder(outdir, write_outputs, expected=names, overwrite=overwrite)
    return outcome


