"""``any2reg apply``: reuse a saved registration on another series, a label image or landmarks
(a thin mapping onto :func:`napari_any2reg.pipeline.apply.apply_file`)."""

from __future__ import annotations

import argparse

from ._common import _EXIT_CODES_TEXT, EXIT_OK, _add_verbosity, _output_path, _spacing


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``apply`` sub-command."""
    from ..io._dispatch import input_help

    app = subparsers.add_parser(
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
    app.add_argument("input", metavar="INPUT", help=f"{input_help()}; a label image with --labels; a landmark CSV (frame,name,y,x)")
    app.add_argument("-o", "--output", required=True, type=_output_path, metavar="OUT", help="output file; its extension picks the format")
    app.add_argument("--labels", action="store_true", help="INPUT is a label image or stack: nearest-neighbour warping, integer output")
    app.add_argument("--slice", type=int, default=None, metavar="K", help="multi-slice image input: the slice the field belongs to (0-based)")
    app.add_argument("--spacing-mm", type=_spacing, default=None, metavar="DY,DX", help="landmarks: spacing of the mm columns (default: the CSV's, else the field's)")
    app.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_verbosity(app)
    return app


def run(args: argparse.Namespace) -> int:
    """Warp INPUT with FIELD and write OUT; the exit code."""
    from ..pipeline.apply import apply_file

    kind = "labels" if args.labels else "auto"
    outcome = apply_file(args.field, args.input, args.output, kind=kind, slice_index=args.slice,
                         spacing_mm=args.spacing_mm, overwrite=args.overwrite)
    if not args.quiet:
        what = {"image": "frames", "labels": "label frames", "points": "landmark rows"}[outcome.kind]
        count = outcome.shape[0]
        print(f"{args.input}: {count} {what} moved by {args.field} ({outcome.n_frames} frames); wrote {outcome.output}")
    return EXIT_OK
