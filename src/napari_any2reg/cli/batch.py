"""``any2reg batch``: motion-correct a cohort on Dask (a thin mapping onto
:func:`napari_any2reg.pipeline.batch.run_batch`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import (_EXIT_CODES_TEXT, EXIT_OK, EXIT_SOME_FAILED, _add_engine_options, _add_verbosity, _engine_settings,
                      _LazyChoices, _output_path)

#: ``add_parser`` takes ``engine_flags``: the registry's engine-option flags (reading it imports torch).
USES_ENGINE_FLAGS = True


def add_parser(subparsers, engine_flags: bool = True) -> argparse.ArgumentParser:
    """The ``batch`` sub-command; ``engine_flags=False`` leaves out the engine-option flags."""
    engines = _LazyChoices("napari_any2reg.core.registration", "available_engines", call=True)
    devices = _LazyChoices("napari_any2reg.core.device", "DEVICE_CHOICES")
    batch = subparsers.add_parser(
        "batch",
        help="motion-correct a cohort (many files, DICOM trees or a CSV list) on Dask",
        description=(
            "Register every series of a study and summarise the cohort. INPUTS are sequence files, "
            "folders (searched recursively: each TIFF/NIfTI file and each DICOM series/slice is one "
            "series) or CSV lists (--list). Each series gets OUTDIR/<name>/ with the files of "
            "'any2reg register --export record,...' plus series.json; OUTDIR/summary.csv has one row "
            "per series and OUTDIR/cohort_qc.html (+ .png) the cohort QC page. Re-running the same "
            "command skips the finished series (checked by their run record) and retries the failed "
            "ones; a failed series never stops the cohort. Runs on a local Dask cluster (--jobs "
            "worker processes, --threads-per-job torch threads each) or on an existing Dask "
            "scheduler (--scheduler; its workers need napari-any2reg installed and the same paths)."
        ),
        epilog=_EXIT_CODES_TEXT,
    )
    batch.add_argument("inputs", nargs="*", metavar="INPUT", help="sequence files, folders to search, or CSV lists")
    batch.add_argument("--list", action="append", default=[], metavar="CSV",
                       help="CSV with a 'path' column and optional id, kind, timings_ms (';'-separated), "
                            "spacing_mm ('dy;dx'), mask (as register --mask, and the ROI of --fit) columns (relative "
                            "paths from the CSV's folder); repeatable")
    batch.add_argument("-o", "--output", required=True, type=_output_path, help="cohort output folder (created if missing)")
    _add_engine_options(batch, engines, devices, engine_flags)
    batch.add_argument("--export", default="qc,record", metavar="ITEMS",
                       help="export items per series ('record' is always added: it marks a finished series; default: %(default)s; "
                            "'all' adds NIfTI, Jacobian, report...)")
    batch.add_argument("--report-format", choices=("png", "pdf"), default="png", help="format of per-series QC reports (default: %(default)s)")
    batch.add_argument("--fit", action="store_true", help="also fit T1 before and after (series with a T1 model and timings): maps, ROI T1 mean/SD and R2 in the summary")
    batch.add_argument("--r2-threshold", type=float, default=0.9, metavar="R2", help="R2 above which a pixel's fit counts as good (default: %(default)s)")
    batch.add_argument("--jobs", type=int, default=None, metavar="K", help="local cluster: worker processes (default: CPU cores // threads per job)")
    batch.add_argument("--threads-per-job", "--threads", dest="threads", type=int, default=1, metavar="T", help="torch threads per job (default: %(default)s)")
    batch.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on this Dask scheduler (tcp://host:8786) instead of a local cluster")
    batch.add_argument("--overwrite", action="store_true", help="redo finished series (and series made with other settings)")
    batch.add_argument("--dry-run", action="store_true", help="list the series and their output folders, run nothing")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress output; warnings and errors only")
    _add_verbosity(batch)
    return batch


def run(args: argparse.Namespace) -> int:
    """Run the cohort (or list it with ``--dry-run``); exit 3 when some series failed."""
    import logging

    from ..pipeline.batch import BatchSettings, run_batch
    from ..pipeline.cohort import discover
    from ..pipeline.series import RegisterSettings

    log = logging.getLogger("napari_any2reg.batch")
    if not args.inputs and not args.list:
        raise ValueError("batch needs INPUTS (files, folders or CSV lists) or --list CSV.")
    from ..core.device import check_threads

    check_threads(args.threads, "threads_per_job")  # 10**9 threads or worker processes kill the machine
    if args.jobs is not None:
        check_threads(args.jobs, "jobs")
    if args.scheduler is not None and args.jobs is not None:
        raise ValueError("--jobs sets the size of the local cluster; with --scheduler the scheduler's workers run the series. Drop one of them.")
    if not 0.0 <= args.r2_threshold <= 1.0:
        raise ValueError(f"--r2-threshold must be between 0 and 1; got {args.r2_threshold}.")
    engine_settings = _engine_settings(args)  # a bad engine option: one line now, not one failure per series
    from ..pipeline.export import parse_export_items

    parse_export_items(args.export)  # likewise an unknown item
    outdir = Path(args.output)
    jobs = discover(args.inputs, args.list, exclude=[outdir])
    if not jobs:
        raise ValueError("no series found in the inputs; give TIFF/NIfTI files, folders with such files or DICOM images, or a CSV list.")
    if args.dry_run:
        for job in jobs:
            print(f"{job.name}\t{job.label}")
        return EXIT_OK
    settings = BatchSettings(
        register=RegisterSettings(
            engine=args.engine, device=args.device, **engine_settings,
            export=args.export, report_format=args.report_format,
        ),
        fit=args.fit, r2_threshold=args.r2_threshold, threads=args.threads, overwrite=args.overwrite,
    )
    from tqdm import tqdm

    # a bar on a terminal; in a log file (not a TTY) one line per series instead of carriage returns
    bar = tqdm(total=len(jobs), disable=True if args.quiet else None, file=sys.stderr, unit="series", dynamic_ncols=True)

    def on_result(row: dict, done: int, total: int) -> None:
        text = f"[{done}/{total}] {row['series']}: {row['this_run'] if row['status'] != 'failed' else 'FAILED'}"
        if row.get("status") == "ok" and row.get("this_run") == "ran":
            text += (f" {row.get('seconds_registration', 0):.2f} s, alignment {row['alignment_before']:.3f} -> "
                     f"{row['alignment_after']:.3f}")
        if row.get("status") == "failed":
            log.warning("%s: %s", row["series"], row.get("error"))
        if bar.disable:
            log.info(text)
        else:
            bar.update(1)
            bar.set_postfix_str(row["series"][-30:], refresh=True)

    try:
        report = run_batch(jobs, outdir, settings, n_jobs=args.jobs, scheduler=args.scheduler, on_result=on_result)
    finally:
        bar.close()
    if not args.quiet:
        print(report.line())
    return EXIT_SOME_FAILED if report.n_failed else EXIT_OK
