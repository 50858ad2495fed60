"""``any2reg tre``: landmark TRE before/after a saved registration (a thin mapping onto
:func:`napari_any2reg.pipeline.tre.tre_file`)."""

from __future__ import annotations

import argparse
import sys

from ._common import EXIT_OK, _add_verbosity, _output_path, _spacing


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``tre`` sub-command."""
    tre = subparsers.add_parser(
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
    tre.add_argument("--out", default=None, type=_output_path, metavar="JSON", help="also write the numbers to this JSON file")
    tre.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_verbosity(tre)
    return tre


def run(args: argparse.Namespace) -> int:
    """Print the TRE lines (and write ``--out``); the exit code."""
    from ..pipeline.tre import tre_file

    report = tre_file(args.displacement, args.landmarks, spacing_mm=args.spacing_mm, out=args.out, overwrite=args.overwrite)
    if report.spacing_source == "default":
        print("any2reg: note: no pixel spacing known (no mm columns, no --spacing-mm): distances are in pixels", file=sys.stderr)
    for line in report.lines():
        print(line)
    return EXIT_OK
