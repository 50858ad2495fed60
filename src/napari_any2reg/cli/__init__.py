"""``any2reg``: headless motion correction of quantitative cardiac MR sequences.

Examples
--------
Write a built-in phantom, register it, and look at the numbers::

    any2reg sample molli -o molli.tif
    any2reg register molli.tif -o out/ --engine groupwise
    cat out/metrics.json
    any2reg fit out/registered.tif -o t1/          # T1, R², SD and parameter maps
    any2reg register molli.tif -o out/ --export all --landmarks clicks.csv
    any2reg tre out/displacement.npy clicks.csv    # landmark TRE before/after (mm)
    any2reg apply out/displacement.npy echo2.tif -o echo2_registered.tif   # reuse the registration
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
from pathlib import Path
from typing import Any
from typing import Sequence as Seq

import numpy as np

from .._version import __version__

# Commands that live in their own module of this package: each module has
# ``add_parser(subparsers)`` (its flags, help and defaults) and ``run(args) -> exit code``,
# and maps its arguments onto one ``pipeline`` function. Add a command by adding its module here.
COMMAND_MODULES: tuple[str, ...] = ("ecv", "segments", "train")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
EXIT_SOME_FAILED = 3  # batch: the cohort ran, but some series failed (listed in summary.csv)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _spacing(text: str) -> tuple[float, float]:
    values = _float_list(text)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError("spacing is 'dy,dx' in mm (or one value for both)")
    if not all(np.isfinite(values)) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be positive mm ('dy,dx'); got {text!r}")
    from ..core.sequence import MAX_SPACING_MM, MIN_SPACING_MM

    if min(values) < MIN_SPACING_MM or max(values) > MAX_SPACING_MM:
        raise argparse.ArgumentTypeError(f"spacing is a pixel size in mm, {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g}; got {text!r}")
    return values[0], values[1]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number (e.g. 0.3 for a quick preview, 2 for hard cases); got {text!r}")
    return value


#: Options whose value is a number or a list of numbers. argparse takes a value that starts with
#: '-' and is not a plain negative number (``--spacing-mm -1,2``) for an option and reports a
#: missing value; joining them (``--spacing-mm=-1,2``) lets the value's own check say what is wrong.
_NUMERIC_OPTIONS = ("--spacing-mm", "--times-ms", "--iterations-scale", "--reference-frame", "--io-steps",
                    "--r2-threshold", "--seed", "--size")


def _join_numeric_values(argv: Seq[str], numeric: Seq[str] = _NUMERIC_OPTIONS) -> list[str]:
    out: list[str] = []
    tokens = list(argv)
    k = 0
    while k < len(tokens):
        token = tokens[k]
        following = tokens[k + 1] if k + 1 < len(tokens) else ""
        if token in numeric and following[:1] == "-" and following[1:2] in tuple("0123456789.") + ("i", "n", "I", "N"):
            out.append(f"{token}={following}")
            k += 2
            continue
        out.append(token)
        k += 1
    return out


def _float_pair(text: str) -> tuple[float, float]:
    values = _float_list(text)
    if len(values) != 2 or values[0] < 0 or values[1] < values[0]:
        raise argparse.ArgumentTypeError("a range is 'LO,HI' with 0 <= LO <= HI")
    return values[0], values[1]


class _LazyChoices:
    """Choices read from the core on first use (parsing that option, or its command's help).

    The core's constants live in modules that import torch (6-8 s on a busy machine); building
    the parser must not, so that ``any2reg --help`` and ``--version`` answer at once. Options
    with lazy choices carry a metavar, because argparse lists the choices of options without
    one while adding them.
    """

    def __init__(self, module: str, name: str, call: bool = False):
        self.module, self.name, self.call = module, name, call
        self._values: tuple | None = None

    def _load(self) -> tuple:
        if self._values is None:
            import importlib

            value = getattr(importlib.import_module(self.module), self.name)
            self._values = tuple(value() if self.call else value)
        return self._values

    def __contains__(self, item) -> bool:
        return item in self._load()

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


_EXIT_CODES_TEXT = (
    "Exit codes: 0 success; 1 error (one line on stderr: the problem and the fix); 2 usage error; "
    "3 batch finished but some series failed (see OUTDIR/summary.csv); 130 cancelled (Ctrl-C); "
    "143 terminated (SIGTERM). Outputs are written all or nothing, so a failed or interrupted "
    "run leaves no partial file."
)


#: Flag details the registry leaves to the command line: the metavars, and the parse
#: function of --iterations-scale (a usage error, exit 2, naming quick and hard-case values).
_ENGINE_FLAG_METAVARS = {"reference_frame": "I", "iterations_scale": "S", "io_steps": "K", "weights": "FILE",
                         "regulariser_weight": "W", "bins": "B", "pca_components": "K", "n_classes": "K",
                         "n_levels": "L", "em_steps": "K", "io_learning_rate": "LR"}
_ENGINE_FLAG_TYPES = {"iterations_scale": _positive_float}


def _cli_engine_options() -> list:
    """The :data:`.core.engine_api.ENGINE_OPTIONS` that ``register`` and ``batch`` pass on: all
    of them (the programmatic options, arrays set by code, are not in that table).

    A run's engine options travel in :class:`.pipeline.series.RegisterSettings`
    (``reference_frame`` as its own field, the rest in ``engine_options``), which is also the
    batch's resume key; the flags themselves (spelling, type, choices, range, help) come from
    the registry.
    """
    from ..core.engine_api import ENGINE_OPTIONS

    return list(ENGINE_OPTIONS)


def add_engine_option_flags(parser: argparse.ArgumentParser, options) -> None:
    """One flag per :class:`.core.engine_api.EngineOption`: ``--name-with-dashes``.

    Unset flags stay ``None`` (the engine's default); values are checked against the
    registry's range by :func:`.core.engine_api.validate_engine_options` before any work. A
    ``bool`` option gets ``--name`` / ``--no-name``.
    """
    from ..core.engine_api import BUILTIN_ENGINES

    for option in options:
        scope = "" if set(option.engines) >= set(BUILTIN_ENGINES) else f"{', '.join(option.engines)}: "
        default = "" if option.default is None else f" (default: {option.default})"
        text = (scope + option.help + default).replace("%", "%%")
        if option.type is bool:
            parser.add_argument(option.flag, dest=option.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        parser.add_argument(
            option.flag, dest=option.name, default=None,
            type=_ENGINE_FLAG_TYPES.get(option.name, option.type),
            choices=option.choices,
            metavar=_ENGINE_FLAG_METAVARS.get(option.name, option.name.upper()) if option.choices is None else None,
            help=text,
        )


def _add_engine_options(parser: argparse.ArgumentParser, engines, devices, with_options: bool = True) -> None:
    """Registration options shared by 'register' and 'batch' (engine options from the registry)."""
    parser.add_argument("--engine", default=None, choices=engines, metavar="ENGINE", help="registration engine: %(choices)s (default: any2reg, the trained network)")
    parser.add_argument("--device", default="auto", choices=devices, metavar="DEVICE", help="compute device: %(choices)s; auto = CUDA when present (default: %(default)s)")
    if with_options:  # the registry imports torch: only for the command that uses it
        add_engine_option_flags(parser, _cli_engine_options())


def _engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``RegisterSettings`` keywords of the engine flags given (``reference_frame`` and
    ``engine_options``), checked against the registry (one-line error)."""
    from ..core.engine_api import validate_engine_options
    from ..core.registration import DEFAULT_ENGINE

    values = {option.name: getattr(args, option.name, None) for option in _cli_engine_options()}
    options = validate_engine_options(args.engine or DEFAULT_ENGINE, values)
    return {"reference_frame": options.pop("reference_frame", None), "engine_options": options}


def _add_verbosity(parser: argparse.ArgumentParser, quiet_help: str | None = None) -> None:
    """-v (more log lines; twice: debug) and -q (no progress, warnings and errors only)."""
    existing = {s for action in parser._actions for s in action.option_strings}
    if "-v" not in existing:
        parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (-vv: debug)")
    if "-q" not in existing:
        parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help or "no progress output; warnings and errors only")


def build_parser(engine_flags: bool = True) -> argparse.ArgumentParser:
    """The ``any2reg`` parser; ``engine_flags=False`` leaves out the engine-option flags of
    'register' and 'batch' (reading their registry imports torch: 2-3 s for ``--version``)."""
    # lazily resolved: building the parser imports no torch (fast --help / --version)
    DEVICE_CHOICES = _LazyChoices("napari_any2reg.core.device", "DEVICE_CHOICES")
    T1_MODELS = _LazyChoices("napari_any2reg.core.mapping", "T1_MODELS")
    ENGINES = _LazyChoices("napari_any2reg.core.registration", "available_engines", call=True)
    SEQUENCE_KINDS = _LazyChoices("napari_any2reg.core.sequence", "SEQUENCE_KINDS")
    from ..pipeline.export import EXPORT_ITEMS  # the export table (no torch at import)
    from ..io._dispatch import input_help  # the reader table (no torch, no file parsers)

    _INPUT_HELP = input_help()

    parser = argparse.ArgumentParser(
        prog="any2reg",
        description=(
            "Groupwise motion correction for quantitative cardiac MRI (MOLLI, STONE, SASHA, "
            f"ASL, perfusion, cine). Reads {_INPUT_HELP}; writes the registered stack, the "
            "displacement field and QC metrics."
        ),
        epilog="Run 'any2reg COMMAND --help' for the options of each command. " + _EXIT_CODES_TEXT,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # own dests: a sub-command's defaults would overwrite options of the same dest given before it
    parser.add_argument("-v", "--verbose", dest="global_verbose", action="count", default=0, help="more log output (-vv: debug); also after the command")
    parser.add_argument("-q", "--quiet", dest="global_quiet", action="store_true", help="no progress output, warnings and errors only; also after the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    reg = sub.add_parser(
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
    reg.add_argument("input", help=_INPUT_HELP)
    reg.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    _add_engine_options(reg, ENGINES, DEVICE_CHOICES, engine_flags)
    reg.add_argument("--kind", choices=SEQUENCE_KINDS, default=None, metavar="KIND", help="override the sequence kind read from the file: %(choices)s")
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

    tre = sub.add_parser(
        "tre",
        help="landmark TRE before/after a registration (mm)",
        description=(
            "Target registration error of landmarks clicked on every raw frame: each point is mapped "
            "to the common grid by inverting x + u_i(x) = p_i, and the TRE of a landmark is the mean "
            "distance over frame pairs (mm). 'before' uses the raw positions. LANDMARKS is a CSV with "
            "columns frame,name,y,x (pixels, frame 0-based; y_mm,x_mm optional), as the napari "
            "Landmarks widget writes it."
        ),
    )
    tre.add_argument("displacement", metavar="DISPLACEMENT", help="displacement.npy (N,2,H,W pixels) or the exported displacement.nii.gz")
    tre.add_argument("landmarks", metavar="LANDMARKS", help="landmark CSV (frame,name,y,x)")
    tre.add_argument("--spacing-mm", type=_spacing, default=None, metavar="DY,DX", help="pixel spacing (default: the CSV's mm columns, else the field's NIfTI header or sidecar, else 1 = pixels)")
    tre.add_argument("--out", default=None, metavar="JSON", help="also write the numbers to this JSON file")
    tre.add_argument("--overwrite", action="store_true", help="replace an existing --out file")

    app = sub.add_parser(
        "apply",
        help="apply a saved registration to another series, a label image or landmarks",
        description=(
            "Bring INPUT onto the registered grid with the displacement FIELD of an earlier "
            "registration (displacement.npy, displacement.nii.gz or the ITK per-frame fields "
            "displacement_itk_frameKKK.nii.gz) without registering again. An image series (same "
            "frames and matrix as the registered one) is warped bilinearly, keeping its timings, "
            "spacing and geometry (OUT: .tif, .ome.tif, .nii, .nii.gz); a label image (--labels: "
            "a (N,H,W) stack, or one 2-D image applied to every frame) by nearest neighbour, so "
            "labels stay integer (OUT: .tif or .npy); a landmark CSV (frame,name,y,x on the raw "
            "frames) is moved to the common grid by solving x + u_frame(x) = p (OUT: .csv). The "
            "output is written atomically."
        ),
        epilog=_EXIT_CODES_TEXT,
    )
    app.add_argument("field", metavar="FIELD", help="displacement.npy (N,2,H,W pixels), displacement.nii.gz, or an ITK field (base name or one _frameKKK file)")
    app.add_argument("input", metavar="INPUT", help=f"{_INPUT_HELP}; a label image with --labels; a landmark CSV (frame,name,y,x)")
    app.add_argument("-o", "--output", required=True, metavar="OUT", help="output file; its extension picks the format")
    app.add_argument("--labels", action="store_true", help="INPUT is a label image or stack: nearest-neighbour warping, integer output")
    app.add_argument("--slice", type=int, default=None, metavar="K", help="multi-slice image input: the slice the field belongs to (0-based)")
    app.add_argument("--spacing-mm", type=_spacing, default=None, metavar="DY,DX", help="landmarks: spacing of the mm columns (default: the CSV's, else the field's)")
    app.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    sample = sub.add_parser(
        "sample",
        help="write a built-in phantom sequence",
        description="Write a seeded cardiac phantom (with known motion) as a TIFF with timings.",
    )
    sample.add_argument("kind", choices=("molli", "stone", "sasha", "cine", "t2prep", "mge"), help="sequence type (t2prep: T2-prepared bSSFP, 4 preparations 0-55 ms, known T2; mge: multi-gradient echo, 8 echoes 2.6-18.7 ms, known T2*)")
    sample.add_argument("-o", "--output", required=True, help="output .tif path")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--size", type=int, default=192, help="image size in pixels (default: %(default)s)")
    sample.add_argument("--truth", action="store_true", help="also write the true displacement next to it (<stem>_true_displacement.npy)")
    sample.add_argument("--overwrite", action="store_true")

    fit = sub.add_parser(
        "fit",
        help="fit a T1, T2 or T2* map (MOLLI, STONE, SASHA, inversion recovery, T2-prep, multi-echo)",
        description=(
            "Fit a T1 model to every pixel of INPUT (raw or registered) and write OUTDIR/t1.tif "
            "(ms), OUTDIR/r2.tif, OUTDIR/t1_sd.tif (ms, from the fit covariance), "
            "(a T2 model --model t2|t2c: OUTDIR/t2.tif and t2_sd.tif; t2star: t2star.tif and "
            "t2star_sd.tif), "
            "OUTDIR/params.tif (model parameters, one page each) and OUTDIR/stats.json (model, "
            "timings, failed pixels, ROI statistics and R2 survival curves with --mask). Pixels "
            "where the fit fails are NaN in every map and counted in stats.json."
        ),
    )
    fit.add_argument("input", help=_INPUT_HELP)
    fit.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    fit.add_argument("--model", choices=T1_MODELS, default=None, metavar="MODEL", help="fit model: %(choices)s; stone2/sasha2 are the 2-parameter T1 forms, t2 / t2c (with a constant offset) fit T2 over T2-prep durations or spin-echo TEs, t2star T2* over gradient-echo TEs (default: from the sequence kind)")
    fit.add_argument("--times-ms", type=_float_list, default=None, metavar="T1,T2,...", help="per-frame inversion/saturation times (ms), 'inf' for no preparation; echo times (T2-prep durations, TEs) for t2, t2c, t2star (default: from the file's metadata, DICOM EchoTime for a multi-echo series)")
    fit.add_argument("--noise-floor", type=float, default=None, metavar="LEVEL", help="t2 / t2c / t2star: per pixel, leave out the echoes from the first one at or below this signal level (e.g. 2-3x the mean background); default: fit every echo")
    fit.add_argument("--mask", default=None, metavar="FILE", help="2-D label image or mask (TIFF, NIfTI or .npy) on the image grid, for ROI statistics (labels: 1 LV blood, 2 LV myocardium, 3 RV blood)")
    fit.add_argument("--rv-insertion", default=None, metavar="Y1,X1;Y2,X2", help="RV insertion points (pixels, anterior first) with --mask: also write OUTDIR/segments.csv and OUTDIR/bullseye.png (AHA segments of the T1 map)")
    fit.add_argument("--level", default="mid", choices=("basal", "mid", "apical"), help="slice level for --rv-insertion (default: %(default)s)")
    fit.add_argument("--r2-threshold", type=float, default=0.9, metavar="R2", help="R2 above which a pixel's fit counts as good in the ROI statistics (default: %(default)s)")
    fit.add_argument("--exclude-frames", default="auto", metavar="auto|none|I,J",
                     help="frames left out of the fit: auto = the outlier frames in the metrics.json beside INPUT "
                          "(written by 'register'), when the model keeps enough frames; none; or 0-based frames 3,7 "
                          "(default: %(default)s)")
    fit.add_argument("--device", default="auto", choices=DEVICE_CHOICES, metavar="DEVICE", help="compute device: %(choices)s; auto = CUDA when present (default: %(default)s)")
    fit.add_argument("--overwrite", action="store_true", help="replace existing output files")
    fit.add_argument("--threads", type=int, default=None, metavar="K", help="CPU threads for torch (default: torch's choice; 1 is faster when other jobs share the cores)")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    sub.add_parser("engines", help="list the registration engines and the device auto picks")

    _add_batch_parser(sub, ENGINES, DEVICE_CHOICES, engine_flags)
    for command in sub.choices.values():
        _add_verbosity(command)
    for name in COMMAND_MODULES:  # each command module adds its own sub-parser
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _add_batch_parser(sub, engines, devices, engine_flags: bool = True) -> None:
    batch = sub.add_parser(
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
    batch.add_argument("-o", "--output", required=True, help="cohort output folder (created if missing)")
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


class _Progress:
    """Progress bar on stderr (tqdm) for one computation, as a ``(fraction, message)`` callback.

    Shown only on a terminal: in a log file (stderr not a TTY) the carriage returns of a bar are
    noise, so nothing is written there (tqdm's ``disable=None``). ``-q`` hides it everywhere.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=100, disable=True if self.quiet else None, file=sys.stderr, leave=False,
                        bar_format="{l_bar}{bar}| {elapsed}", dynamic_ncols=True)
        return self

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is None or self.bar.disable:
            return
        percent = max(0, min(100, int(fraction * 100)))
        if percent != self.bar.n:
            self.bar.update(percent - self.bar.n)
        self.bar.set_description_str(message[:40], refresh=False)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def _note(kind: str, text: str) -> None:
    """A one-line message on stderr that is not an error (shown even with -q: it concerns the results)."""
    print(f"any2reg: {kind}: {' '.join(str(text).split())}", file=sys.stderr)


def _read_input(path: str, **options):
    """``read_sequence`` with its warnings (a pixel size replaced by 1 mm, ...) printed as one line each."""
    from ..pipeline.series import read_input

    sequence = read_input(path, **options)
    for text in sequence.metadata.get("read_warnings", ()):
        _note("warning", text)
    return sequence


def _refuse_replacing_inputs(targets: Seq[Path], inputs: Seq[str | None]) -> None:
    """Never let an output (even with --overwrite) replace a file this run reads (see pipeline.series)."""
    from ..pipeline.series import refuse_replacing_inputs

    refuse_replacing_inputs(targets, inputs)


def _output_bytes(sequence, per_voxel: int, extra: int = 0) -> int:
    from ..pipeline.series import output_bytes

    return output_bytes(sequence, per_voxel, extra)


def _register_settings(args: argparse.Namespace):
    from ..pipeline.series import RegisterSettings

    return RegisterSettings(
        engine=args.engine, device=args.device, **_engine_settings(args),
        export=args.export, report_format=args.report_format,
    )


def _cmd_register(args: argparse.Namespace) -> int:
    # the same code path as every series of 'any2reg batch' (pipeline.series)
    from ..pipeline.series import register_series

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
    from ..core.verdict import verdict_line

    if metrics.get("verdict"):
        print(verdict_line(metrics["verdict"]))


def _cmd_tre(args: argparse.Namespace) -> int:
    from ..core.landmarks import tre_before_after
    from ..io import atomic_write, read_displacement
    from ..io.landmarks import read_landmarks_csv

    if args.out is not None:
        _refuse_replacing_inputs([Path(args.out)], [args.displacement, args.landmarks])
    displacement, field_spacing = read_displacement(args.displacement)
    table = read_landmarks_csv(args.landmarks, spacing_mm=args.spacing_mm)
    if args.spacing_mm is None and table.spacing_source == "default" and field_spacing is not None:
        table = table.with_spacing(field_spacing, f"{args.displacement} (header)")
    report = tre_before_after(table, displacement)
    if report.spacing_source == "default":
        print("any2reg: note: no pixel spacing known (no mm columns, no --spacing-mm): distances are in pixels", file=sys.stderr)
    for line in report.lines():
        print(line)
    if args.out is not None:
        content = {"displacement": str(args.displacement), "landmarks": str(args.landmarks), **report.to_dict()}
        text = json.dumps(content, indent=2, allow_nan=False) + "\n"
        atomic_write(Path(args.out), lambda p: p.write_text(text, encoding="utf-8"), overwrite=args.overwrite)
    return EXIT_OK


def _cmd_apply(args: argparse.Namespace) -> int:
    from ..pipeline.apply import apply_file

    kind = "labels" if args.labels else "auto"
    outcome = apply_file(args.field, args.input, args.output, kind=kind, slice_index=args.slice,
                         spacing_mm=args.spacing_mm, overwrite=args.overwrite)
    if not args.quiet:
        what = {"image": "frames", "labels": "label frames", "points": "landmark rows"}[outcome.kind]
        count = outcome.shape[0]
        print(f"{args.input}: {count} {what} moved by {args.field} ({outcome.n_frames} frames); wrote {outcome.output}")
    return EXIT_OK


def _cmd_sample(args: argparse.Namespace) -> int:
    from ..core.phantom import make_phantom
    from ..io import atomic_write_all, write_tiff

    phantom = make_phantom(args.kind, seed=args.seed, shape=(args.size, args.size))
    out = Path(args.output)
    items = [(out, lambda p: write_tiff(p, phantom.sequence, overwrite=True))]  # p: the reserved temp file
    if args.truth:
        truth = out.with_name(out.name.split(".")[0] + "_true_displacement.npy")
        items.append((truth, lambda p: np.save(p, phantom.displacement)))
    atomic_write_all(items, overwrite=args.overwrite)  # the stack and its truth together, or neither
    print(f"wrote {out} ({phantom.sequence.n_frames} frames, {args.kind}, seed {args.seed})")
    return EXIT_OK


def _read_label_image(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D label image or mask from TIFF, NIfTI or .npy (see pipeline.series.read_label_image)."""
    from ..pipeline.series import read_label_image

    return read_label_image(path, shape)


def _write_map_tiff(path: Path, array: np.ndarray, spacing_mm: tuple[float, float], info: dict) -> None:
    from ..io import save_map_tiff

    save_map_tiff(path, array, spacing_mm, info)


def _frames_to_exclude(args: argparse.Namespace, sequence: Any, model: str) -> tuple[tuple[int, ...], str]:
    """``--exclude-frames``: the frames left out of the fit and a sentence saying which."""
    from ..core.mapping import T1_MODELS
    from ..core.outliers import auto_exclusion, parse_exclude_frames

    choice = parse_exclude_frames(args.exclude_frames, sequence.n_frames)
    if choice != "auto":
        return choice, (f"frames {', '.join(map(str, choice))} left out of the fit (--exclude-frames)" if choice else "")
    metrics_path = Path(args.input).parent / "metrics.json"
    try:
        outliers = json.loads(metrics_path.read_text())["outlier_frames"]["indices"]
    except (OSError, ValueError, KeyError, TypeError):
        return (), ""  # not a registration's output: nothing known to leave out
    if any(not 0 <= int(i) < sequence.n_frames for i in outliers):
        return (), f"{metrics_path} names frames outside 0..{sequence.n_frames - 1}; every frame is fitted"
    exclude, note = auto_exclusion(outliers, sequence.n_frames, T1_MODELS[model].n_params)
    return exclude, f"--exclude-frames auto ({metrics_path.name}): {note}"


def _cmd_fit(args: argparse.Namespace) -> int:
    from ..core.mapping import T1_MODELS, fit_t1, model_for_kind
    from ..core.mapping_roi import roi_masks, survival_thresholds
    from ..io import atomic_write_folder, check_output_folder

    # fit_t1 skips pixels with NaN/Inf samples (NaN in the maps, counted as failed), so such
    # pixels are no reason to refuse the file here, unlike for registration
    sequence = _read_input(args.input, nonfinite="mask")
    model = args.model or model_for_kind(sequence.kind)
    if args.times_ms is not None:
        if len(args.times_ms) != sequence.n_frames:
            raise ValueError(
                f"--times-ms has {len(args.times_ms)} values but {args.input} has {sequence.n_frames} "
                "frames; give exactly one time (ms) per frame, in frame order."
            )
        sequence = sequence.replace(timings_ms=args.times_ms)
    if sequence.timings_ms is None:
        what = T1_MODELS[model].timing_label if model is not None else "inversion/saturation/echo times"
        raise ValueError(
            f"{args.input} has no {what} in its metadata; pass --times-ms "
            f"with {sequence.n_frames} values (ms)."
        )
    if model is None:
        raise ValueError(
            f"{args.input} is a {sequence.kind!r} sequence, which has no default T1 model; pass "
            f"--model ({', '.join(T1_MODELS)})."
        )
    if not 0.0 <= args.r2_threshold <= 1.0:
        raise ValueError(f"--r2-threshold must be between 0 and 1; got {args.r2_threshold}.")
    labels = _read_label_image(args.mask, sequence.shape) if args.mask is not None else None
    rv_insertion = getattr(args, "rv_insertion", None)
    if rv_insertion is not None and labels is None:
        raise ValueError("--rv-insertion needs --mask (label 2: the LV myocardium the segments divide).")
    if rv_insertion is not None:
        from ..core.segments import parse_insertion_points

        parse_insertion_points(rv_insertion)  # a malformed value fails before the fit

    spec = T1_MODELS[model]
    outdir = Path(args.output)
    stem = spec.map_name  # t1, t2 or t2star
    names = (f"{stem}.tif", "r2.tif", f"{stem}_sd.tif", "params.tif", "stats.json")
    from ..pipeline.segments import SEGMENT_FILES

    targets = [outdir / name for name in names + (SEGMENT_FILES if rv_insertion is not None else ())]
    _refuse_replacing_inputs(targets, [args.input, args.mask])
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --overwrite to replace them")
    check_output_folder(outdir, needed_bytes=_output_bytes(sequence, 0, sequence.shape[0] * sequence.shape[1] * 4 * 8))

    frames = sequence.frames
    nonfinite = sequence.metadata.get("nonfinite_mask")
    if nonfinite is not None:
        frames = frames.copy()
        frames[:, nonfinite] = np.nan  # the reader set them to 0; fit_t1 must see them as unusable
        _note("note", f"{int(nonfinite.sum())} pixels of {args.input} have NaN/Inf values; they are not fitted (NaN in the maps, counted as failed)")
    exclude, exclusion_note = _frames_to_exclude(args, sequence, model)
    if exclusion_note and not args.quiet:
        _note("note", exclusion_note)
    with _Progress(args.quiet) as progress:
        result = fit_t1(frames, sequence.timings_ms, model, device=args.device, noise_floor=args.noise_floor, progress=progress,
                        exclude_frames=exclude)
    stats = result.summary()
    stats["exclude_frames"] = {"requested": str(args.exclude_frames), "excluded": list(exclude), "note": exclusion_note}
    stats.update(
        {
            "input": str(args.input),
            "name": sequence.name,
            "kind": sequence.kind,
            "n_frames": sequence.n_frames,
            "shape": list(sequence.shape),
            "spacing_mm": list(sequence.spacing_mm),
            "files": {names[0]: f"{spec.quantity} (ms)", "r2.tif": "R2", names[2]: f"SD of {spec.quantity} (ms) from s2 (J^T J)^-1",
                      "params.tif": f"parameters, one page each: {', '.join(result.param_names)}"},
        }
    )
    if labels is not None:
        rows = result.roi_statistics(labels, r2_threshold=args.r2_threshold)
        thresholds = survival_thresholds()
        for row, (value, (_, roi)) in zip(rows, roi_masks(labels).items()):
            row["r2_survival"] = result.r2_survival(roi, thresholds)[1].round(6).tolist()
        stats.update({"mask": str(args.mask), "roi": rows, "r2_survival_thresholds": thresholds.round(6).tolist()})
    segment_writers = {}
    if rv_insertion is not None:  # the AHA segments of the T1 map (pipeline.segments)
        from ..pipeline.segments import analyse_segments, segment_files

        analysis = analyse_segments(result.t1_ms, labels, rv_insertion, level=args.level, quantity=result.quantity, unit="ms")
        stats["segments"] = analysis.summary()
        segment_writers = segment_files(analysis)

    base = {"model": result.model, "spacing_mm": list(sequence.spacing_mm), "source": str(args.input)}
    maps = [
        (result.t1_ms, {"quantity": spec.quantity, "unit": "ms"}),
        (result.r_squared, {"quantity": "R2", "unit": ""}),
        (result.t1_sd_ms, {"quantity": f"{spec.quantity} SD", "unit": "ms"}),
        (result.params_stack(), {"quantity": "parameters", "param_names": list(result.param_names)}),
    ]
    if sequence.metadata.get("read_warnings"):
        stats["read_warnings"] = list(sequence.metadata["read_warnings"])
    if nonfinite is not None:
        stats["nonfinite_input_pixels"] = int(nonfinite.sum())

    def write_outputs(staging: Path) -> None:
        for name, (array, info) in zip(names, maps):
            _write_map_tiff(staging / name, array, sequence.spacing_mm, {**base, **info})
        (staging / "stats.json").write_text(json.dumps(stats, indent=2, default=float))
        for name, writer in segment_writers.items():
            writer(staging / name)

    atomic_write_folder(outdir, write_outputs, expected=names + tuple(segment_writers), overwrite=args.overwrite)
    if not args.quiet:
        median = stats[f"{stem}_median_ms"]
        median_text = f"median {spec.quantity} {median:.0f} ms" if median is not None else f"no valid {spec.quantity}"
        print(
            f"{sequence.name}: {result.model} fit of {sequence.shape[0]}x{sequence.shape[1]} pixels in "
            f"{result.seconds:.2f} s on {result.device}; {median_text}; {result.n_failed} failed "
            f"pixels; wrote {outdir}"
        )
    return EXIT_OK


def _cmd_engines(args: argparse.Namespace) -> int:
    from ..core.device import describe_device
    from ..core.engines.any2reg import DEFAULT_WEIGHTS
    from ..core.registration import DEFAULT_ENGINE, available_engines
    from ..io.model_io import weights_problem

    # the file is hashed, not only looked up in the manifest: a missing or altered file is
    # reported here rather than as a failure of the first registration
    problem = weights_problem(DEFAULT_WEIGHTS)
    for name in available_engines():
        notes = []
        if name == DEFAULT_ENGINE:
            notes.append("default")
        if name.startswith("any2reg"):
            notes.append(f"weights {DEFAULT_WEIGHTS}, SHA-256 verified" if problem is None else "weights NOT USABLE")
        print(name + (f"  ({', '.join(notes)})" if notes else ""))
    print(f"device auto -> {describe_device('auto')}")
    if problem is not None:
        print(f"any2reg: error: {' '.join(problem.split())}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


class _LogFormatter:
    """``any2reg: warning: text`` for warnings and errors (like the CLI's other messages), plain
    ``text`` for information, and the logger's name with -vv."""

    def __init__(self, debug: bool):
        import logging

        self.debug = debug
        self.plain = logging.Formatter("%(message)s")

    def format(self, record) -> str:
        import logging

        text = self.plain.format(record)
        if self.debug:
            return f"{record.levelname.lower()} {record.name}: {text}"
        if record.levelno >= logging.WARNING:
            return f"any2reg: {record.levelname.lower()}: {text}"
        return text


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Log records of napari_any2reg to stderr: warnings with -q, information by default, debug with -vv.

    The handler is replaced on every call (tests call ``main`` many times, each with its own stderr).
    """
    import logging

    logger = logging.getLogger("napari_any2reg")
    for handler in [h for h in logger.handlers if getattr(h, "_any2reg_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._any2reg_cli = True
    handler.setFormatter(_LogFormatter(debug=verbose >= 2))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO)
    logger.propagate = False


def _cmd_batch(args: argparse.Namespace) -> int:
    import logging

    from ..pipeline.batch import BatchSettings, run_batch
    from ..pipeline.cohort import discover
    from ..pipeline.series import RegisterSettings

    log = logging.getLogger("napari_any2reg.batch")
    if not args.inputs and not args.list:
        raise ValueError("batch needs INPUTS (files, folders or CSV lists) or --list CSV.")
    if args.threads < 1:
        raise ValueError(f"--threads-per-job must be at least 1; got {args.threads}.")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1; got {args.jobs}.")
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler, a closing terminal), raised in the main thread.

    A KeyboardInterrupt so that it unwinds like Ctrl-C: the atomic writers catch it, delete
    their temporary and staging files and remove folders they created, and nothing half
    written is left behind.
    """


EXIT_TERMINATED = 128 + 15  # the shell's code for a process ended by SIGTERM


class _SigtermAsException:
    """Turn SIGTERM into :class:`Terminated` while the command runs; restore the handler after.

    Only the first SIGTERM raises; later ones are ignored so the clean-up itself is not cut
    short (SIGKILL still stops the process at once).
    """

    def __enter__(self):
        import signal

        self.previous = None
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be installed from the main thread
        self.fired = False

        def handler(signum, frame):
            if self.fired:
                return
            self.fired = True
            raise Terminated()

        self.previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def main(argv: Seq[str] | None = None) -> int:
    """Entry point of the ``any2reg`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # global options take no value, so the first other word is the command
    command = next((token for token in argv if not token.startswith("-")), None)
    parser = build_parser(engine_flags=command in ("register", "batch"))
    numeric = _NUMERIC_OPTIONS
    if command in ("register", "batch"):  # every numeric engine option too (--regulariser-weight -inf)
        numeric += tuple(option.flag for option in _cli_engine_options() if option.type in (int, float))
    args = parser.parse_args(_join_numeric_values(argv, numeric))
    args.argv = argv  # for the run record
    args.quiet = bool(getattr(args, "quiet", False) or args.global_quiet)
    args.verbose = int(getattr(args, "verbose", 0) or 0) + args.global_verbose
    _configure_logging(args.verbose, args.quiet)
    handlers = {"register": _cmd_register, "sample": _cmd_sample, "engines": _cmd_engines, "fit": _cmd_fit,
                "tre": _cmd_tre, "batch": _cmd_batch, "apply": _cmd_apply}
    if args.command not in handlers:  # a command in its own module (see COMMAND_MODULES)
        handlers[args.command] = importlib.import_module(f"{__name__}.{args.command}").run
    from ..core.vocabulary import speaking

    try:
        with _SigtermAsException(), speaking("cli"):  # errors name the flags, not the API arguments
            if args.command in ("register", "fit"):
                from ..pipeline.series import set_torch_threads

                set_torch_threads(args.threads)
            return handlers[args.command](args)
    except Terminated:
        print("any2reg: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("any2reg: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (ValueError, OSError, TypeError) as exc:  # SequenceError/ReadError are ValueErrors
        return _error(exc)
    except RuntimeError as exc:
        from ..core.weights import WeightsError
        from ..pipeline.batch import CohortLocked

        if isinstance(exc, (WeightsError, CohortLocked)):  # damaged weights, a busy output folder: the user's to fix
            return _error(exc)
        raise  # anything else is a bug: keep the traceback


def _error(exc: BaseException) -> int:
    message = " ".join(str(exc).split())  # one line
    print(f"any2reg: error: {message}", file=sys.stderr)
    return EXIT_ERROR


