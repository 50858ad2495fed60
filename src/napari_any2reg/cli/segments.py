"""``any2reg segments``: AHA segment statistics of a map and the bullseye."""

from __future__ import annotations

import argparse

#: Help of ``--rv-insertion`` (also used by ``fit`` and ``ecv``).
RV_INSERTION_HELP = ("RV insertion points 'Y1,X1;Y2,X2' in pixels (row, column) on the map's grid, anterior first; "
                     "the inferior one is optional (with one point, label 3 of --mask gives the septal side)")
LEVEL_HELP = "short-axis slice level: basal (segments 1-6), mid (7-12) or apical (13-16) (default: %(default)s)"
#: Help of ``--erode-px`` (also used by ``ecv``).
ERODE_HELP = ("leave the outer N pixel layers of the LV myocardium (label 2: N erosions) out of the statistics and "
              "segments, against partial volume with blood at the borders; the map is unchanged (default: %(default)s)")


def erode_px(text: str) -> int:
    """``--erode-px``: a whole number of pixels >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a whole number of pixels >= 0 (e.g. 1); got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ._common import _output_path

    parser = subparsers.add_parser(
        "segments",
        help="AHA segment statistics of a map (T1, ECV, T2, R2) and a bullseye",
        description=(
            "Assign every LV myocardium pixel (label 2 of --mask) to its AHA 17-segment model segment "
            "(basal 1-6, mid 7-12, apical 13-16; the anterior RV insertion is the boundary between the "
            "anterior and the anteroseptal segment, the septum spans the arc between the two insertion "
            "points through the RV side) and write OUT/segments.csv (segment,name,mean,sd,median,n_pixels,quantity,unit; "
            "pixels without a valid value are left out) and OUT/bullseye.png (the 16-segment bullseye with "
            "the given level filled), all or nothing."
        ),
    )
    parser.add_argument("map", metavar="MAP", help="2-D map (TIFF as written by fit/ecv, any 2-D TIFF, NIfTI, .npy, or a scanner map in DICOM: its file, or a folder holding only it)")
    parser.add_argument("-o", "--output", required=True, type=_output_path, metavar="OUT", help="output folder (created if missing)")
    parser.add_argument("--mask", required=True, metavar="LABELS", help="2-D label image on the map's grid (1 LV blood, 2 LV myocardium, 3 RV blood)")
    parser.add_argument("--rv-insertion", required=True, metavar="Y1,X1;Y2,X2", help=RV_INSERTION_HELP)
    parser.add_argument("--level", default="mid", choices=("basal", "mid", "apical"), help=LEVEL_HELP)
    parser.add_argument("--erode-px", type=erode_px, default=0, metavar="N", help=ERODE_HELP)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..pipeline.segments import segments_file

    analysis = segments_file(args.map, args.output, mask_path=args.mask, rv_insertion=args.rv_insertion,
                             level=args.level, overwrite=args.overwrite, erode_px=args.erode_px)
    if not args.quiet:
        means = ", ".join(f"{r['segment']}: {r['mean']:.4g}" if r["mean"] is not None else f"{r['segment']}: -"
                          for r in analysis.rows)
        print(f"{args.map}: {analysis.level} segments ({analysis.quantity}{' ' + analysis.unit if analysis.unit else ''}) "
              f"{means}; wrote {args.output}")
    return 0
