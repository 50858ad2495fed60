"""``any2reg fit``: T1, T2 or T2* maps of a sequence file (a thin mapping onto
:func:`napari_any2reg.pipeline.fit.fit_series`)."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, _add_verbosity, _float_list, _LazyChoices, _note, _output_path, _Progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``fit`` sub-command."""
    from ..io._dispatch import input_help

    models = _LazyChoices("napari_any2reg.core.mapping", "T1_MODELS")
    devices = _LazyChoices("napari_any2reg.core.device", "DEVICE_CHOICES")
    fit = subparsers.add_parser(
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
    fit.add_argument("input", help=input_help())
    fit.add_argument("-o", "--output", required=True, type=_output_path, help="output folder (created if missing)")
    fit.add_argument("--model", choices=models, default=None, metavar="MODEL", help="fit model: %(choices)s; stone2/sasha2 are the 2-parameter T1 forms, t2 / t2c (with a constant offset) fit T2 over T2-prep durations or spin-echo TEs, t2star T2* over gradient-echo TEs (default: from the sequence kind)")
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
    fit.add_argument("--device", default="auto", choices=devices, metavar="DEVICE", help="compute device: %(choices)s; auto = CUDA when present (default: %(default)s)")
    fit.add_argument("--overwrite", action="store_true", help="replace existing output files")
    fit.add_argument("--threads", type=int, default=None, metavar="K", help="CPU threads for torch (default: torch's choice; 1 is faster when other jobs share the cores)")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_verbosity(fit)
    return fit


def run(args: argparse.Namespace) -> int:
    """Fit the maps into OUTDIR and print the summary line; the exit code."""
    from ..core.mapping import T1_MODELS
    from ..pipeline.fit import fit_series
    from ..pipeline.series import set_torch_threads

    set_torch_threads(args.threads)

    def on_note(kind: str, text: str) -> None:
        # the reader's warnings and unusable pixels concern the results: shown even with -q
        if kind == "read_warning":
            _note("warning", text)
        elif kind != "exclusion" or not args.quiet:
            _note("note", text)

    with _Progress(args.quiet) as progress:
        outcome = fit_series(
            args.input, args.output, model=args.model, timings_ms=args.times_ms, noise_floor=args.noise_floor,
            mask=args.mask, rv_insertion=getattr(args, "rv_insertion", None), level=args.level,
            r2_threshold=args.r2_threshold, exclude_frames=args.exclude_frames, device=args.device,
            overwrite=args.overwrite, progress=progress, on_note=on_note,
        )
    if not args.quiet:
        sequence, result = outcome.sequence, outcome.result
        spec = T1_MODELS[result.model]
        median = outcome.stats[f"{spec.map_name}_median_ms"]
        median_text = f"median {spec.quantity} {median:.0f} ms" if median is not None else f"no valid {spec.quantity}"
        print(
            f"{sequence.name}: {result.model} fit of {sequence.shape[0]}x{sequence.shape[1]} pixels in "
            f"{result.seconds:.2f} s on {result.device}; {median_text}; {result.n_failed} failed "
            f"pixels; wrote {outcome.outdir}"
        )
    return EXIT_OK
