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
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Sequence as Seq

import numpy as np

from ._version import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


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


def _join_numeric_values(argv: Seq[str]) -> list[str]:
    out: list[str] = []
    tokens = list(argv)
    k = 0
    while k < len(tokens):
        token = tokens[k]
        following = tokens[k + 1] if k + 1 < len(tokens) else ""
        if token in _NUMERIC_OPTIONS and following[:1] == "-" and following[1:2] in tuple("0123456789.") + ("i", "n", "I", "N"):
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


def build_parser() -> argparse.ArgumentParser:
    from .core.device import DEVICE_CHOICES
    from .core.mapping import T1_MODELS
    from .core.registration import DEFAULT_ENGINE, available_engines
    from .core.sequence import SEQUENCE_KINDS

    parser = argparse.ArgumentParser(
        prog="any2reg",
        description=(
            "Groupwise motion correction for quantitative cardiac MRI (MOLLI, STONE, SASHA, "
            "ASL, perfusion, cine). Reads TIFF/OME-TIFF, NIfTI (.nii, .nii.gz) and DICOM series "
            "folders; writes the registered stack, the displacement field and QC metrics."
        ),
        epilog="Run 'any2reg COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    reg = sub.add_parser(
        "register",
        help="motion-correct a sequence",
        description=(
            "Motion-correct INPUT and write OUTDIR/registered.tif (timings and spacing kept), "
            "OUTDIR/displacement.npy ((N,2,H,W) float32, pixels, (dy,dx), pull-back: "
            "registered_i(x) = frame_i(x + u_i(x))) and OUTDIR/metrics.json (engine, device, "
            "seconds, folding %%, model-free alignment score before/after); the any2reg engines also "
            "write OUTDIR/correspondence.npy ((N,H,W) float32 in [0,1], per-frame AdaCS scores). "
            "--export adds NIfTI, NIfTI/npy displacement, Jacobian maps, T1 maps, QC (JSON, CSV), "
            "landmarks and TRE (CSV, with --landmarks), a one-page QC report and a run record "
            "(run.json); everything is written together or not at all."
        ),
    )
    reg.add_argument("input", help="TIFF/OME-TIFF, NIfTI file, or DICOM series folder")
    reg.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    reg.add_argument("--engine", default=DEFAULT_ENGINE, choices=available_engines(), help="registration engine (default: %(default)s)")
    reg.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device; auto = CUDA when present (default: %(default)s)")
    reg.add_argument("--reference-frame", type=int, default=None, metavar="I", help="keep frame I fixed (all-to-one); default: groupwise")
    reg.add_argument("--metric", choices=("cte", "pca2"), default=None, help="similarity for the groupwise engine (default: cte)")
    reg.add_argument("--iterations-scale", type=_positive_float, default=None, metavar="S", help="multiply iteration counts (0.3 quick preview, 2 hard cases)")
    reg.add_argument("--kind", choices=SEQUENCE_KINDS, default=None, help="override the sequence kind read from the file")
    reg.add_argument("--times-ms", type=_float_list, default=None, metavar="T1,T2,...", help="per-frame inversion/saturation/trigger times (ms); 'inf' for no preparation")
    reg.add_argument("--spacing-mm", type=_spacing, default=None, metavar="DY,DX", help="override the pixel spacing (mm)")
    reg.add_argument("--weights", default=None, metavar="FILE", help="any2reg engines: a shipped weights name (e.g. any2reg-v1, the previous release) or a best.pt / checkpoint.pt from 'any2reg train' instead of the default weights")
    reg.add_argument("--io-steps", type=int, default=None, metavar="K", help="any2reg-io: instance-optimisation steps (default: 30)")
    reg.add_argument(
        "--export", default=None, metavar="ITEMS",
        help="also export, all or nothing: 'all' or a comma-separated list of "
             "stack,nifti,displacement,jacobian,maps,qc,landmarks,report,record (maps: T1/R2/SD "
             "before and after when the sequence has a T1 model; landmarks: needs --landmarks)",
    )
    reg.add_argument("--landmarks", default=None, metavar="CSV", help="landmarks clicked on the raw frames (frame,name,y,x in pixels) for TRE in the export")
    reg.add_argument("--report-format", choices=("png", "pdf"), default="png", help="format of the QC report with --export (default: %(default)s)")
    reg.add_argument("--overwrite", action="store_true", help="replace existing output files")
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

    sample = sub.add_parser(
        "sample",
        help="write a built-in phantom sequence",
        description="Write a seeded cardiac phantom (with known motion) as a TIFF with timings.",
    )
    sample.add_argument("kind", choices=("molli", "stone", "sasha", "cine"), help="sequence type")
    sample.add_argument("-o", "--output", required=True, help="output .tif path")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--size", type=int, default=192, help="image size in pixels (default: %(default)s)")
    sample.add_argument("--truth", action="store_true", help="also write the true displacement next to it (<stem>_true_displacement.npy)")
    sample.add_argument("--overwrite", action="store_true")

    fit = sub.add_parser(
        "fit",
        help="fit a T1 map (MOLLI, STONE, SASHA, inversion recovery)",
        description=(
            "Fit a T1 model to every pixel of INPUT (raw or registered) and write OUTDIR/t1.tif "
            "(ms), OUTDIR/r2.tif, OUTDIR/t1_sd.tif (ms, from the fit covariance), "
            "OUTDIR/params.tif (model parameters, one page each) and OUTDIR/stats.json (model, "
            "timings, failed pixels, ROI statistics and R2 survival curves with --mask). Pixels "
            "where the fit fails are NaN in every map and counted in stats.json."
        ),
    )
    fit.add_argument("input", help="TIFF/OME-TIFF, NIfTI file, or DICOM series folder")
    fit.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    fit.add_argument("--model", choices=tuple(T1_MODELS), default=None, help="T1 model; stone2/sasha2 are the 2-parameter forms (default: from the sequence kind)")
    fit.add_argument("--times-ms", type=_float_list, default=None, metavar="T1,T2,...", help="per-frame inversion/saturation times (ms), 'inf' for no preparation (default: from the file's metadata)")
    fit.add_argument("--mask", default=None, metavar="FILE", help="2-D label image or mask (TIFF, NIfTI or .npy) on the image grid, for ROI statistics (labels: 1 LV blood, 2 LV myocardium, 3 RV blood)")
    fit.add_argument("--r2-threshold", type=float, default=0.9, metavar="R2", help="R2 above which a pixel's fit counts as good in the ROI statistics (default: %(default)s)")
    fit.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device; auto = CUDA when present (default: %(default)s)")
    fit.add_argument("--overwrite", action="store_true", help="replace existing output files")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    sub.add_parser("engines", help="list the registration engines and the device auto picks")

    tr = sub.add_parser(
        "train",
        help="train the Any2Reg network on simulated phantoms",
        description=(
            "Unsupervised training of the Any2Reg network on random cardiac phantoms (CTE + "
            "regulariser + CAR contrast invariance), with the AdaCS correspondence scorer trained "
            "alternately after a warm-up. Writes OUT/checkpoint.pt (resumable), "
            "OUT/train_log.jsonl (one line per step) and OUT/best.pt (lowest validation EPE "
            "ratio on held-out phantoms). The field of view is 288 mm, so --size sets the "
            "pixel spacing (96 -> 3 mm, 128 -> 2.25 mm). Ctrl-C checkpoints and stops."
        ),
    )
    tr.add_argument("--out", required=True, help="output folder (created if missing)")
    tr.add_argument("--steps", type=int, default=None, help="total number of steps (default: 6000, about 1 h at --size 96 on 2 CPU cores)")
    tr.add_argument("--seed", type=int, default=None, help="training seed (default: 0)")
    tr.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="continue from OUT/checkpoint.pt when present (default: yes)")
    tr.add_argument("--size", type=int, default=None, metavar="PX", help="training crop size in pixels over a 288 mm field of view (default: 96)")
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate, cosine-decayed (default: 2e-3)")
    tr.add_argument("--lambda-reg", type=float, default=None, help="weight of mean|grad u|^2 in training-grid pixels (default: 10)")
    tr.add_argument("--base-channels", type=int, default=None, help="network width (default: 16)")
    tr.add_argument("--aggregation", choices=("pca", "mean"), default=None, help="set aggregation: correlation-guided eigenvector (default) or mean (ablation)")
    tr.add_argument("--auxiliary", action=argparse.BooleanOptionalAction, default=None, help="auxiliary MIND stream (default: yes; --no-auxiliary for the ablation)")
    tr.add_argument("--validate-every", type=int, default=None, metavar="N", help="validation interval in steps (default: 100)")
    tr.add_argument("--checkpoint-every", type=int, default=None, metavar="N", help="checkpoint interval in steps (default: 50)")
    tr.add_argument("--log-every", type=int, default=None, metavar="N", help="print a progress line every N steps (default: 10)")
    tr.add_argument("--adacs", action=argparse.BooleanOptionalAction, default=True, help="train the AdaCS correspondence scorer alternately with the network (default: yes)")
    tr.add_argument("--adacs-start", type=int, default=None, metavar="STEP", help="registration-only warm-up before the scorer starts (default: 3500)")
    tr.add_argument("--user-data", default=None, metavar="DIR", help="folder of unlabelled sequences mixed into training")
    tr.add_argument("--user-data-probability", type=float, default=0.25, help="share of steps drawn from --user-data (default: %(default)s)")
    tr.add_argument("--init-weights", default=None, metavar="FILE", help="fine-tune: start a fresh run from this weights file / checkpoint (same network config)")
    tr.add_argument("--lambda-supervised", type=float, default=None, help="weight of the supervised end-point term on sequences with known motion (phantoms, semi-synthetic real; default: 0 = unsupervised)")
    tr.add_argument("--zero-motion-probability", type=float, default=None, help="share of phantom / semi-synthetic sequences drawn without motion (do-no-harm; default: 0)")
    tr.add_argument("--motion-mm", type=_float_pair, default=None, metavar="LO,HI", help="phantom breathing motion range in mm (default: 3,15)")
    tr.add_argument("--real-data", action="append", default=None, metavar="FILE", help="a real sequence used semi-synthetically (pre-aligned, then moved by known motion); repeat for several")
    tr.add_argument("--real-data-probability", type=float, default=0.3, help="share of steps drawn from --real-data (default: %(default)s)")
    tr.add_argument("--real-motion-mm", type=_float_pair, default=None, metavar="LO,HI", help="injected motion range on real data in mm (default: 3,20)")
    tr.add_argument("--validation-still-seed", type=int, default=None, metavar="SEED", help="log the spurious motion on a motion-free MOLLI phantom of this seed (>= 10000)")
    tr.add_argument("--device", default="cpu", choices=DEVICE_CHOICES, help="compute device (default: %(default)s)")
    tr.add_argument("--threads", type=int, default=None, metavar="K", help="CPU threads for torch (default: torch's choice; 1 is faster when other jobs share the cores)")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return parser


class _ProgressPrinter:
    """One-line progress bar on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.last = -1

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        percent = int(fraction * 100)
        if percent == self.last:
            return
        self.last = percent
        bar = "#" * (percent // 4)
        sys.stderr.write(f"\r[{bar:<25}] {percent:3d}% {message[:40]:<40}")
        if percent >= 100:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _note(kind: str, text: str) -> None:
    """A one-line message on stderr that is not an error (shown even with -q: it concerns the results)."""
    print(f"any2reg: {kind}: {' '.join(str(text).split())}", file=sys.stderr)


def _read_input(path: str, **options):
    """``read_sequence`` with its warnings (a pixel size replaced by 1 mm, ...) printed as one line each."""
    import warnings

    from .io import SequenceReadWarning, read_sequence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SequenceReadWarning)  # printed below, once, in CLI form
        sequence = read_sequence(path, **options)
    for text in sequence.metadata.get("read_warnings", ()):
        _note("warning", text)
    return sequence


def _refuse_replacing_inputs(targets: Seq[Path], inputs: Seq[str | None]) -> None:
    """Never let an output (even with --overwrite) replace a file this run reads.

    ``any2reg register out/registered.tif -o out --overwrite`` would otherwise replace the very
    data being processed (and a NIfTI input's JSON sidecar is as much input as the image).
    """
    import os

    from .io._common import find_sidecar

    read: list[Path] = []
    for name in inputs:
        if name is None or not Path(name).is_file():
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


def _check_weights(args: argparse.Namespace) -> None:
    """Load the network the any2reg engines will use now, so a weights problem stops the run
    before any work, with one line that says what to do (the loaded network is cached)."""
    from .core.device import resolve_device
    from .core.engines.any2reg import load_pretrained, shipped_weights_name
    from .core.weights import WeightsError

    device = resolve_device(args.device)
    if shipped_weights_name(args.weights) is not None:  # the default, or a shipped file by name
        load_pretrained(device, args.weights)  # its WeightsError already names the file and the fix
        return
    fix = "pass a best.pt / checkpoint.pt written by 'any2reg train', or omit --weights to use the shipped weights."
    import zipfile

    if Path(args.weights).is_file() and not zipfile.is_zipfile(args.weights):
        # torch's own message for this case is a page about weights_only that misleads
        raise WeightsError(f"--weights {args.weights}: not a PyTorch checkpoint (those are zip archives); {fix}")
    try:
        load_pretrained(device, args.weights)
    except Exception as exc:  # torch and the checkpoint layout raise many types for a wrong file
        if not Path(args.weights).is_file():
            raise WeightsError(f"--weights {args.weights}: no such file; {fix}") from exc
        cause = " ".join(str(exc).split())
        for spelling in {str(args.weights), str(Path(args.weights).resolve())}:
            cause = cause.replace(f"Weights file {spelling} ", "").replace(f"{spelling}: ", "").replace(spelling, "the file")
        cause = cause if len(cause) <= 160 else cause[:157] + "..."  # torch's messages run to pages
        if not isinstance(exc, WeightsError):
            cause = f"{type(exc).__name__}: {cause}"
        raise WeightsError(f"--weights {args.weights}: not a usable any2reg network ({cause}); {fix}") from exc


def _output_bytes(sequence, per_voxel: int, extra: int = 0) -> int:
    """Rough size of the outputs, to refuse a disk that cannot hold them before computing."""
    return sequence.n_frames * sequence.shape[0] * sequence.shape[1] * per_voxel + extra


def _cmd_register(args: argparse.Namespace) -> int:
    from .core.metrics import alignment_score
    from .core.registration import register
    from .io import atomic_write_folder, check_output_folder, write_tiff

    overrides = {}
    if args.kind is not None:
        overrides["kind"] = args.kind
    if args.times_ms is not None:
        overrides["timings_ms"] = args.times_ms
    if args.spacing_mm is not None:
        overrides["spacing_mm"] = args.spacing_mm
    sequence = _read_input(args.input, **overrides)

    # everything that can be checked is checked before the registration runs
    outdir = Path(args.output)
    export_items, skipped = _export_items(args, sequence)
    landmarks = _read_landmarks_for(args.landmarks, sequence) if args.landmarks is not None else None
    if export_items is None and landmarks is not None:
        raise ValueError("--landmarks is used by the export; add --export all (or --export landmarks,...).")
    names = ["registered.tif", "displacement.npy", "metrics.json"]
    if args.engine.startswith("any2reg"):
        names.append("correspondence.npy")
    if export_items is not None:
        from .core.export import planned_files

        names += [name for name in planned_files(export_items, report_format=args.report_format) if name not in names]
    targets = [outdir / name for name in names]
    _refuse_replacing_inputs(targets, [args.input, args.landmarks, args.weights])
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --overwrite to replace them")
    # registered + displacement (2) + correspondence: 16 bytes a voxel; the export adds NIfTI
    # copies and the Jacobian, and a report of a few MB
    check_output_folder(outdir, needed_bytes=_output_bytes(sequence, 16) if export_items is None
                        else _output_bytes(sequence, 32, 5_000_000))
    if args.engine.startswith("any2reg"):
        _check_weights(args)
    elif args.weights is not None or args.io_steps is not None:
        raise ValueError(f"--weights and --io-steps are options of the any2reg engines, not of {args.engine!r}; drop them or use --engine any2reg / any2reg-io.")

    options = {}
    if args.metric is not None:
        options["metric"] = args.metric
    if args.iterations_scale is not None:
        options["iterations_scale"] = args.iterations_scale
    if args.weights is not None:
        options["weights"] = args.weights
    if args.io_steps is not None:
        options["io_steps"] = args.io_steps
    result = register(
        sequence,
        engine=args.engine,
        device=args.device,
        reference_frame=args.reference_frame,
        progress=_ProgressPrinter(args.quiet),
        cancel=threading.Event(),
        **options,
    )
    metrics = result.summary()
    metrics.update(
        {
            "input": str(args.input),
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
    if sequence.metadata.get("read_warnings"):
        metrics["read_warnings"] = list(sequence.metadata["read_warnings"])
    if skipped:
        metrics["export_skipped"] = dict(skipped)
    if export_items is not None:
        _export_registration(args, sequence, result, metrics, export_items, landmarks, outdir, skipped)
        return EXIT_OK
    scores = result.extras.get("correspondence")

    def write_outputs(staging: Path) -> None:
        write_tiff(staging / "registered.tif", result.registered_sequence())
        np.save(staging / "displacement.npy", result.displacement)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        if scores is not None and "correspondence.npy" in names:
            np.save(staging / "correspondence.npy", np.asarray(scores, np.float32))

    # the outputs appear together or not at all (full disk, Ctrl-C, SIGTERM)
    atomic_write_folder(outdir, write_outputs, expected=names, overwrite=args.overwrite)
    if not args.quiet:
        print(
            f"{sequence.name}: {sequence.n_frames} frames, engine {result.engine} on {result.device}, "
            f"{result.seconds:.2f} s, folding {metrics['folding_percent']:.3f} %, alignment "
            f"{metrics['alignment_score_before']:.3f} -> {metrics['alignment_score_after']:.3f}; "
            f"wrote {outdir}"
        )
    return EXIT_OK


def _export_items(args: argparse.Namespace, sequence) -> tuple[tuple[str, ...] | None, dict[str, str]]:
    """The export items of ``register --export`` resolved against what this run can provide.

    Returns the items and, for ``--export all``, the items left out and why (printed and kept in
    metrics.json). An item named explicitly whose input is missing is an error, raised here,
    before the registration runs.
    """
    from .core.export import EXPORT_ITEMS, parse_export_items
    from .core.mapping import fit_problem, model_for_kind

    if args.export is None:
        return None, {}
    requested = parse_export_items(args.export)
    if not requested:
        raise ValueError("--export needs 'all' or a comma-separated list of items.")
    model = model_for_kind(sequence.kind)
    if model is None:
        no_fit = f"no T1 model for a {sequence.kind!r} sequence (pass --kind molli|stone|sasha if it is one)"
    elif sequence.timings_ms is None:
        no_fit = "no inversion/saturation times (pass --times-ms)"
    else:
        no_fit = fit_problem(sequence.timings_ms, sequence.n_frames, model)
    if requested == ("all",):
        skipped = {"dice": "needs labels of every frame; export from napari or with core.export"}
        if args.landmarks is None:
            skipped["landmarks"] = "no --landmarks CSV"
        if no_fit is not None:
            skipped["maps"] = f"no T1 fit possible: {no_fit}"
        return tuple(item for item in EXPORT_ITEMS if item not in skipped), skipped
    if "dice" in requested:
        raise ValueError("--export dice needs labels of every frame; export from napari (Export panel) or with core.export.")
    if "landmarks" in requested and args.landmarks is None:
        raise ValueError("--export landmarks needs --landmarks CSV (frame,name,y,x in pixels).")
    if "maps" in requested and no_fit is not None:
        raise ValueError(f"--export maps: no T1 fit is possible for {args.input}: {no_fit}")
    # the plain outputs (registered.tif, displacement.npy) are always part of an export
    return tuple(item for item in EXPORT_ITEMS if item in set(requested) | {"stack", "displacement"}), {}


def _read_landmarks_for(path: str, sequence):
    from .core.landmarks import read_landmarks_csv

    table = read_landmarks_csv(path, spacing_mm=sequence.spacing_mm)
    if table.n_frames > sequence.n_frames:
        raise ValueError(
            f"--landmarks {path}: a point is on frame {table.n_frames - 1} but {sequence.name!r} has "
            f"{sequence.n_frames} frames (0..{sequence.n_frames - 1}); frames are 0-based."
        )
    table.positions(sequence.n_frames)  # a landmark placed twice on a frame: fail before registering
    return table


def _export_registration(args, sequence, result, metrics, items, landmarks, outdir: Path, skipped=None) -> None:
    """``register --export``: the plain outputs and the export items in one all-or-nothing write."""
    from .core.export import export_result, t1_maps_from_fit

    t1_maps = None
    if "maps" in items:
        from .core.mapping import fit_t1

        t1_maps = {
            "raw": t1_maps_from_fit(fit_t1(sequence, device=args.device)),
            "registered": t1_maps_from_fit(fit_t1(result.registered_sequence(), device=args.device)),
        }
    extra = {"metrics.json": lambda p: p.write_text(json.dumps(metrics, indent=2, default=float))}
    scores = result.extras.get("correspondence")
    if scores is not None:
        extra["correspondence.npy"] = lambda p: np.save(p, np.asarray(scores, np.float32))
    outcome = export_result(
        result, outdir, items=items, landmarks=landmarks, t1_maps=t1_maps, input_path=str(args.input),
        report_format=args.report_format, extra_files=extra, command=["any2reg"] + list(getattr(args, "argv", [])),
        overwrite=args.overwrite,
    )
    for item, why in (skipped or {}).items():
        if item != "dice" and not (item == "landmarks" and args.landmarks is None):
            _note("note", f"--export all: skipped {item}: {why}")  # the ones a user may have expected
    if not args.quiet:
        print(
            f"{sequence.name}: {sequence.n_frames} frames, engine {result.engine} on {result.device}, "
            f"{result.seconds:.2f} s, folding {metrics['folding_percent']:.3f} %, alignment "
            f"{metrics['alignment_score_before']:.3f} -> {metrics['alignment_score_after']:.3f}"
        )
        if outcome.tre is not None:
            print(f"TRE overall {outcome.tre.before['overall']:.2f} -> {outcome.tre.after['overall']:.2f} mm")
        summary = outcome.summary()
        if skipped:
            summary += "; skipped " + ", ".join(f"{k} ({v})" for k, v in skipped.items())
        print(summary)


def _cmd_tre(args: argparse.Namespace) -> int:
    from .core.landmarks import read_landmarks_csv, tre_before_after
    from .io import atomic_write, read_displacement

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


def _cmd_sample(args: argparse.Namespace) -> int:
    from .core.phantom import make_phantom
    from .io import atomic_write_all, write_tiff

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
    """A 2-D label image or mask from TIFF, NIfTI (rows = j, like the sequence reader) or .npy."""
    from .io._common import split_name

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--mask {file}: no such file; check the path.")
    ext = split_name(file)[1]
    if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        import tifffile

        data = np.squeeze(tifffile.imread(file))
    elif ext in (".nii", ".nii.gz"):
        import nibabel

        data = np.squeeze(np.asanyarray(nibabel.load(str(file)).dataobj))
        data = data.T if data.ndim == 2 else data  # NIfTI (i, j) -> (rows = j, columns = i)
    elif ext == ".npy":
        data = np.squeeze(np.load(file, allow_pickle=False))
    else:
        raise ValueError(f"--mask {file}: unsupported type {ext or '(none)'!r}; use a TIFF, NIfTI or .npy file.")
    if data.shape != tuple(shape):
        raise ValueError(
            f"--mask {file} has shape {data.shape} but the images are {tuple(shape)}; give one 2-D "
            "label image on the same grid (draw it on the registered series for registered input)."
        )
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError(f"--mask {file}: labels must be integers (0 = background) or 0/1.")
        data = data.astype(np.int64)
    return data


def _write_map_tiff(path: Path, array: np.ndarray, spacing_mm: tuple[float, float], info: dict) -> None:
    from .io import save_map_tiff

    save_map_tiff(path, array, spacing_mm, info)


def _cmd_fit(args: argparse.Namespace) -> int:
    from .core.mapping import T1_MODELS, fit_t1, model_for_kind
    from .core.mapping_roi import roi_masks, survival_thresholds
    from .io import atomic_write_folder, check_output_folder

    # fit_t1 skips pixels with NaN/Inf samples (NaN in the maps, counted as failed), so such
    # pixels are no reason to refuse the file here, unlike for registration
    sequence = _read_input(args.input, nonfinite="mask")
    if args.times_ms is not None:
        if len(args.times_ms) != sequence.n_frames:
            raise ValueError(
                f"--times-ms has {len(args.times_ms)} values but {args.input} has {sequence.n_frames} "
                "frames; give exactly one time (ms) per frame, in frame order."
            )
        sequence = sequence.replace(timings_ms=args.times_ms)
    if sequence.timings_ms is None:
        raise ValueError(
            f"{args.input} has no inversion/saturation times in its metadata; pass --times-ms "
            f"with {sequence.n_frames} values (ms)."
        )
    model = args.model or model_for_kind(sequence.kind)
    if model is None:
        raise ValueError(
            f"{args.input} is a {sequence.kind!r} sequence, which has no default T1 model; pass "
            f"--model ({', '.join(T1_MODELS)})."
        )
    if not 0.0 <= args.r2_threshold <= 1.0:
        raise ValueError(f"--r2-threshold must be between 0 and 1; got {args.r2_threshold}.")
    labels = _read_label_image(args.mask, sequence.shape) if args.mask is not None else None

    outdir = Path(args.output)
    names = ("t1.tif", "r2.tif", "t1_sd.tif", "params.tif", "stats.json")
    targets = [outdir / name for name in names]
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
    result = fit_t1(frames, sequence.timings_ms, model, device=args.device, progress=_ProgressPrinter(args.quiet))
    stats = result.summary()
    stats.update(
        {
            "input": str(args.input),
            "name": sequence.name,
            "kind": sequence.kind,
            "n_frames": sequence.n_frames,
            "shape": list(sequence.shape),
            "spacing_mm": list(sequence.spacing_mm),
            "files": {"t1.tif": "T1 (ms)", "r2.tif": "R2", "t1_sd.tif": "SD of T1 (ms) from s2 (J^T J)^-1",
                      "params.tif": f"parameters, one page each: {', '.join(result.param_names)}"},
        }
    )
    if labels is not None:
        rows = result.roi_statistics(labels, r2_threshold=args.r2_threshold)
        thresholds = survival_thresholds()
        for row, (value, (_, roi)) in zip(rows, roi_masks(labels).items()):
            row["r2_survival"] = result.r2_survival(roi, thresholds)[1].round(6).tolist()
        stats.update({"mask": str(args.mask), "roi": rows, "r2_survival_thresholds": thresholds.round(6).tolist()})

    base = {"model": result.model, "spacing_mm": list(sequence.spacing_mm), "source": str(args.input)}
    maps = [
        (result.t1_ms, {"quantity": "T1", "unit": "ms"}),
        (result.r_squared, {"quantity": "R2", "unit": ""}),
        (result.t1_sd_ms, {"quantity": "T1 SD", "unit": "ms"}),
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

    atomic_write_folder(outdir, write_outputs, expected=names, overwrite=args.overwrite)
    if not args.quiet:
        median = stats["t1_median_ms"]
        median_text = f"median T1 {median:.0f} ms" if median is not None else "no valid T1"
        print(
            f"{sequence.name}: {result.model} fit of {sequence.shape[0]}x{sequence.shape[1]} pixels in "
            f"{result.seconds:.2f} s on {result.device}; {median_text}; {result.n_failed} failed "
            f"pixels; wrote {outdir}"
        )
    return EXIT_OK


def _cmd_engines(args: argparse.Namespace) -> int:
    from .core.device import describe_device
    from .core.engines.any2reg import DEFAULT_WEIGHTS
    from .core.registration import DEFAULT_ENGINE, available_engines
    from .core.weights import weights_problem

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


def _cmd_train(args: argparse.Namespace) -> int:
    from .core.training import TrainingConfig, train

    changes: dict = {"device": args.device}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.size is not None:
        if args.size < 16:
            raise ValueError(f"--size must be at least 16 pixels; got {args.size}")
        spacing = round(288.0 / args.size, 6)
        changes.update(shape=(args.size, args.size), spacing_mm=(spacing, spacing))
    if args.lr is not None:
        changes["learning_rate"] = args.lr
    if args.lambda_reg is not None:
        changes["lambda_reg"] = args.lambda_reg
    net = dict(TrainingConfig().net)
    if args.base_channels is not None:
        net["base_channels"] = args.base_channels
    if args.aggregation is not None:
        net["aggregation"] = args.aggregation
    if args.auxiliary is not None:
        net["use_auxiliary"] = bool(args.auxiliary)
    if net != TrainingConfig().net:
        changes["net"] = net
    for name in ("validate_every", "checkpoint_every", "log_every"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    changes["adacs"] = bool(args.adacs)
    if args.threads is not None:
        changes["num_threads"] = args.threads
    if args.adacs_start is not None:
        changes["adacs_start_step"] = args.adacs_start
    if args.user_data is not None:
        changes.update(user_data_dir=str(args.user_data), user_data_probability=args.user_data_probability)
    for name, field in (("lambda_supervised", "lambda_supervised"),
                        ("zero_motion_probability", "zero_motion_probability"), ("motion_mm", "motion_mm_range"),
                        ("real_motion_mm", "real_motion_mm_range"), ("validation_still_seed", "validation_still_seed")):
        if getattr(args, name) is not None:
            changes[field] = getattr(args, name)
    if args.init_weights is not None:
        changes["init_weights"] = str(Path(args.init_weights).resolve())
    real_sequences = None
    if args.real_data:
        from .io import read_sequence

        changes.update(real_data_paths=tuple(str(Path(p).resolve()) for p in args.real_data),
                       real_data_probability=args.real_data_probability)
        real_sequences = [read_sequence(p) for p in args.real_data]
    config = TrainingConfig(**changes)

    recent: list[dict] = []  # entries since the last printed line
    recent_scores: list[dict] = []

    def show(entry: dict) -> None:
        if args.quiet:
            return
        recent.append(entry)
        recent_scores.append(entry)
        step = entry["step"]
        validation = "val_epe_ratio" in entry
        if step % config.log_every and step != config.steps and not validation:
            return
        mean = {key: sum(e[key] for e in recent) / len(recent) for key in ("loss", "cte", "reg", "contrast", "step_seconds")}
        recent.clear()
        line = (
            f"step {step}/{config.steps}  loss {mean['loss']:.4f} (cte {mean['cte']:.4f} reg {mean['reg']:.5f} "
            f"contrast {mean['contrast']:.3f})  {mean['step_seconds']:.2f} s/step  {entry['seconds'] / 60:.1f} min"
        )
        scored = [e["score_mean"] for e in recent_scores if "score_mean" in e]
        recent_scores.clear()
        if scored:
            line += f"  score {sum(scored) / len(scored):.3f}"
        if validation:
            line += f"  val EPE ratio {entry['val_epe_ratio']:.3f}{' *best*' if entry.get('best') else ''}"
        print(line, flush=True)

    out = Path(args.out)
    summary = train(config, out, resume=args.resume, log=show, real_sequences=real_sequences)
    if not args.quiet:
        best = summary["best_validation"]
        best_text = f"best val EPE ratio {best['epe_ratio']:.3f} at step {best['step']}" if best else "no validation yet"
        print(
            f"trained steps {summary['start_step']}..{summary['step']} of {config.steps} "
            f"({summary['elapsed_seconds'] / 60:.1f} min in total); {best_text}; "
            f"checkpoint {summary['checkpoint']}, log {summary['log']}"
            + (f", best {summary['best']}" if summary["best"] else "")
        )
    return EXIT_OK


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
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_join_numeric_values(argv))
    args.argv = argv  # for the run record
    handlers = {"register": _cmd_register, "sample": _cmd_sample, "engines": _cmd_engines, "train": _cmd_train, "fit": _cmd_fit,
                "tre": _cmd_tre}
    try:
        with _SigtermAsException():
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
        from .core.weights import WeightsError

        if isinstance(exc, WeightsError):  # missing, altered or unreadable weights: the user's to fix
            return _error(exc)
        raise  # anything else is a bug: keep the traceback


def _error(exc: BaseException) -> int:
    message = " ".join(str(exc).split())  # one line
    print(f"any2reg: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
