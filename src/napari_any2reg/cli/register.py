"""``any2reg register``: motion-correct one sequence (one slice, or every slice) into a folder.

A thin mapping of the flags onto :func:`napari_any2reg.pipeline.series.register_series`, the
same code path as every series of ``any2reg batch``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    _add_engine_options,
    _add_verbosity,
    _engine_settings,
    _float_list,
    _LazyChoices,
    _note,
    _output_path,
    _Progress,
    _read_input,
    _spacing,
)

#: ``add_parser`` takes ``engine_flags``: the registry's engine-option flags (reading it imports torch).
USES_ENGINE_FLAGS = True


def add_parser(subparsers, engine_flags: bool = True) -> argparse.ArgumentParser:
    """The ``register`` sub-command; ``engine_flags=False`` leaves out the engine-option flags."""
    from ..io._dispatch import input_help
    from ..pipeline.export import EXPORT_ITEMS  # the export table (no torch at import)

    engines = _LazyChoices("napari_any2reg.core.registration", "available_engines", call=True)
    devices = _LazyChoices("napari_any2reg.core.device", "DEVICE_CHOICES")
    kinds = _LazyChoices("napari_any2reg.core.sequence", "SEQUENCE_KINDS")
    reg = subparsers.add_parser(
        "register",
        help="motion-correct a sequence",
        description=(
            "Motion-correct INPUT and write OUTDIR/registered.tif (timings and spacing kept), "
            "OUTDIR/displacement.npy ((N,2,H,W) float32, pixels, (dy,dx), pull-back: "
            "registered_i(x) = frame_i(x + u_i(x))) and OUTDIR/metrics.json (engine, device, "
            "seconds, folding %, model-free alignment score before/after); the any2reg engines also "
            "write OUTDIR/correspondence.npy ((N,H,W) float32 in [0,1], per-frame AdaCS scores). "
            "--export adds NIfTI, NIfTI/npy displacement, Jacobian maps, T1 maps, QC (JSON, CSV), "
            "landmarks and TRE (CSV, with --landmarks), a one-page QC report and a run record "
            "(run.json); everything is written together or not at all."
        ),
    )
    reg.add_argument("input", help=input_help())
    reg.add_argument("-o", "--output", required=True, type=_output_path, help="output folder (created if missing)")
    _add_engine_options(reg, engines, devices, engine_flags)
    reg.add_argument("--kind", choices=kinds, default=None, metavar="KIND", help="override the sequence kind read from the file: %(choices)s")
    reg.add_argument("--times-ms", type=_float_list, default=None, metavar="T1,T2,...", help="per-frame inversion/saturation/trigger times (ms); 'inf' for no preparation")
    reg.add_argument("--spacing-mm", type=_spacing, default=None, metavar="DY,DX", help="override the pixel spacing (mm)")
    reg.add_argument("--slice", default=None, metavar="K|all", help="multi-slice input (several DICOM slice positions, NIfTI (I,J,Z,N), TIFF with Z and T): register slice K (0-based, along the slice normal) or every slice, each into OUTDIR/slice_K")
    reg.add_argument(
        "--export", default=None, metavar="ITEMS",
        help="also export, all or nothing: 'all' or a comma-separated list of "
             + ",".join(item for item in EXPORT_ITEMS if item != "dice")  # dice needs labels: napari only
             + " (maps, maps_nifti: T1/R2/SD before and after when the sequence has a T1 model; landmarks: needs --landmarks)",
    )
    reg.add_argument("--mask", default=None, metavar="FILE", help="2-D label image or mask (TIFF, NIfTI or .npy) on the image grid: only its non-zero region (e.g. the heart) drives the similarity (groupwise, xcoreg, any2reg-io)")
    reg.add_argument("--landmarks", default=None, metavar="CSV", help="landmarks clicked on the raw frames (frame,name,y,x in pixels) for TRE in the export")
    reg.add_argument("--rv-insertion", default=None, metavar="Y1,X1;Y2,X2", help="RV insertion points (pixels, anterior first) with --mask (label 2 = LV myocardium) and --export report: the QC report shows the AHA segments of the registered T1 map (bullseye and table)")
    reg.add_argument("--level", default="mid", choices=("basal", "mid", "apical"), help="slice level for --rv-insertion (default: %(default)s)")
    reg.add_argument("--report-format", choices=("png", "pdf"), default="png", help="format of the QC report with --export (default: %(default)s)")
    reg.add_argument("--overwrite", action="store_true", help="replace existing output files")
    reg.add_argument("--threads", type=int, default=None, metavar="K", help="CPU threads for torch (default: torch's choice; 1 is faster when other jobs share the cores)")
    reg.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_verbosity(reg)
    return reg


def run(args: argparse.Namespace) -> int:
    """Register INPUT (``--slice all``: each slice into OUTDIR/slice_K); the exit code."""
    from ..pipeline.series import set_torch_threads

    set_torch_threads(args.threads)
    _engine_settings(args)  # a bad engine option: one line now, before reading the input
    overrides = {}
    if args.kind is not None:
        overrides["kind"] = args.kind
    if args.times_ms is not None:
        overrides["timings_ms"] = args.times_ms
    if args.spacing_mm is not None:
        overrides["spacing_mm"] = args.spacing_mm
    choice = getattr(args, "slice", None)
    if choice is not None and str(choice).lower() == "all":
        from ..io import read_slices

        code = EXIT_OK
        for sequence in read_slices(args.input, **overrides):
            k = int(sequence.metadata.get("slice_index", 0))
            code = max(code, _register_one(args, sequence, Path(args.output) / f"slice_{k}"))
        return code
    if choice is not None:
        try:
            overrides["slice_index"] = int(choice)
        except ValueError:
            raise ValueError(f"--slice {choice!r}: give a slice number (0, 1, ...) or 'all'.") from None
    return _register_one(args, _read_input(args.input, **overrides), Path(args.output))


def _register_settings(args: argparse.Namespace):
    from ..pipeline.series import RegisterSettings

    return RegisterSettings(
        engine=args.engine, device=args.device, **_engine_settings(args),
        export=args.export, report_format=args.report_format,
    )


def _register_one(args: argparse.Namespace, sequence: Any, outdir: Path) -> int:
    """Register one sequence (one slice) into ``outdir`` and print its summary line."""
    from ..pipeline.series import register_series

    with _Progress(args.quiet) as progress:
        outcome = register_series(
            sequence, outdir, _register_settings(args), input_path=args.input, landmarks_path=args.landmarks,
            mask_path=args.mask, overwrite=args.overwrite, command=["any2reg"] + list(getattr(args, "argv", [])), progress=progress,
            rv_insertion=getattr(args, "rv_insertion", None), level=getattr(args, "level", "mid"),
        )
    result, metrics = outcome.result, outcome.metrics
    for item, why in outcome.skipped.items():
        if item != "dice" and not (item == "landmarks" and args.landmarks is None):
            _note("note", f"--export all: skipped {item}: {why}")  # the ones a user may have expected
    for note in result.notes():
        _note("note", note)
    if args.quiet:
        return EXIT_OK
    line = (
        f"{sequence.name}: {sequence.n_frames} frames, engine {result.engine} on {result.device}, "
        f"{result.seconds:.2f} s, folding {metrics['folding_percent']:.3f} %, alignment "
        f"{metrics['alignment_score_before']:.3f} -> {metrics['alignment_score_after']:.3f}"
    )
    if outcome.export is None:
        print(f"{line}; wrote {outdir}")
        _print_verdict(metrics)
        return EXIT_OK
    print(line)
    if outcome.export.tre is not None:
        print(f"TRE overall {outcome.export.tre.before['overall']:.2f} -> {outcome.export.tre.after['overall']:.2f} mm")
    summary = outcome.export.summary()
    if outcome.skipped:
        summary += "; skipped " + ", ".join(f"{k} ({v})" for k, v in outcome.skipped.items())
    print(summary)
    _print_verdict(metrics)
    return EXIT_OK


def _print_verdict(metrics: dict) -> None:
    """The verdict (metrics.json ``verdict``) as the last line: what a reader acts on."""
    from ..core.qc.verdict import verdict_line

    if metrics.get("verdict"):
        print(verdict_line(metrics["verdict"]))

