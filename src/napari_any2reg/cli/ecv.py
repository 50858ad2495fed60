"""``any2reg ecv``: ECV from a native and a post-contrast acquisition registered as one set."""

from __future__ import annotations

import argparse

from .segments import ERODE_HELP, LEVEL_HELP, RV_INSERTION_HELP, erode_px


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the hematocrit is a fraction between 0 and 1 (e.g. 0.42); got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ._common import _LazyChoices, _output_path

    engines = _LazyChoices("napari_any2reg.core.registration", "available_engines", call=True)
    devices = _LazyChoices("napari_any2reg.core.device", "DEVICE_CHOICES")
    parser = subparsers.add_parser(
        "ecv",
        help="ECV map from a native and a post-contrast T1 series (or map), registered as one set",
        description=(
            "Register the frames of NATIVE and POST (two series of the same slice from different breath-holds, "
            "each with its own inversion times) as one set, split them back, fit both T1 maps on that grid "
            "(the native frames' mean position, where --mask is drawn) and compute "
            "ECV = 100 (1 - Hct) (1/T1post - 1/T1native) / (1/T1post,blood - 1/T1native,blood) per pixel, the "
            "blood T1s the medians of label 1. NATIVE and POST may also be 2-D T1 maps (ms): the post map is "
            "aligned to the native one. Writes OUT/ecv.tif (percent), OUT/native_t1.tif, OUT/post_t1.tif (ms, "
            "aligned) and OUT/ecv_stats.json (hematocrit and whether synthetic, blood T1s, statistics per label "
            "and per AHA segment with --rv-insertion, then also OUT/segments.csv and OUT/bullseye.png), all or "
            "nothing. Pixels without a valid fit in either map are NaN and counted. With "
            "--synthetic-hematocrit the hematocrit is 866.0 / T1blood[ms] - 0.1232 (Treibel et al. 2016, 1.5 T "
            "MOLLI) and the result is 'synthetic ECV'."
        ),
    )
    parser.add_argument("native", metavar="NATIVE", help="native T1 series (TIFF, NIfTI, DICOM folder) or 2-D T1 map in ms (TIFF, NIfTI, .npy, or a scanner T1 map in DICOM: its file, or a folder holding only it)")
    parser.add_argument("post", metavar="POST", help="post-contrast T1 series or 2-D T1 map (ms), same slice and matrix")
    parser.add_argument("-o", "--output", required=True, type=_output_path, metavar="OUT", help="output folder (created if missing)")
    parser.add_argument("--mask", required=True, metavar="LABELS", help="2-D label image on the native grid (1 LV blood, 2 LV myocardium, 3 RV blood)")
    hct = parser.add_mutually_exclusive_group(required=True)
    hct.add_argument("--hematocrit", type=_fraction, default=None, metavar="H", help="measured hematocrit, a fraction (e.g. 0.42)")
    hct.add_argument("--synthetic-hematocrit", action="store_true", help="estimate it from the native blood T1 (1.5 T MOLLI relation; 'synthetic ECV')")
    parser.add_argument("--engine", default=None, choices=engines, metavar="ENGINE", help="registration engine: %(choices)s (default: any2reg for two series, groupwise for two T1 maps)")
    parser.add_argument("--no-register", dest="register", action="store_false", help="use the inputs as they are (no motion correction)")
    parser.add_argument("--device", default="auto", choices=devices, metavar="DEVICE", help="compute device: %(choices)s (default: %(default)s)")
    parser.add_argument("--rv-insertion", default=None, metavar="Y1,X1;Y2,X2", help=RV_INSERTION_HELP + "; adds segments.csv and bullseye.png")
    parser.add_argument("--level", default="mid", choices=("basal", "mid", "apical"), help=LEVEL_HELP)
    parser.add_argument("--erode-px", type=erode_px, default=0, metavar="N", help=ERODE_HELP)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--threads", type=int, default=None, metavar="K", help="CPU threads for torch")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..pipeline.ecv import ecv_file
    from ..pipeline.series import set_torch_threads
    from ._common import _Progress

    set_torch_threads(args.threads)
    with _Progress(args.quiet) as progress:
        outcome = ecv_file(args.native, args.post, args.output, mask_path=args.mask, hematocrit=args.hematocrit,
                           synthetic_hematocrit=args.synthetic_hematocrit, register=args.register, engine=args.engine,
                           device=args.device, rv_insertion=args.rv_insertion, level=args.level,
                           overwrite=args.overwrite, progress=progress,
                           erode_px=args.erode_px)
    if not args.quiet:
        ecv = outcome.ecv
        mean = ecv.myocardial_mean()
        mean_text = f"myocardial {ecv.label} {mean:.1f} %" if mean is not None else f"no valid {ecv.label} in the myocardium"
        how = outcome.description()
        if ecv.erode_px:
            mean_text += f" ({ecv.erode_px} border px of the myocardium left out)"
        print(f"{mean_text} (hematocrit {ecv.hematocrit:.3f}{' synthetic' if ecv.synthetic else ''}; blood T1 "
              f"{ecv.native_blood_t1_ms:.0f} / {ecv.post_blood_t1_ms:.0f} ms; {how}); {ecv.n_invalid_labelled} labelled pixels "
              f"({ecv.n_invalid} in the image) without a valid T1 (NaN); wrote {args.output}")
    return 0
