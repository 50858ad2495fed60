"""``any2reg sample``: write a built-in phantom (a thin mapping onto
:func:`napari_any2reg.pipeline.sample.write_sample`)."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, _add_verbosity, _output_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``sample`` sub-command."""

    sample = subparsers.add_parser(
        "sample",
        help="write a built-in phantom sequence",
        description="Write a seeded cardiac phantom (with known motion) as a TIFF with timings.",
    )
    sample.add_argument("kind", choices=("molli", "stone", "sasha", "cine", "t2prep", "mge"), help="sequence type (t2prep: T2-prepared bSSFP, 4 preparations 0-55 ms, known T2; mge: multi-gradient echo, 8 echoes 2.6-18.7 ms, known T2*)")
    sample.add_argument("-o", "--output", required=True, type=_output_path, help="output .tif path")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--size", type=int, default=192, help="image size in pixels (default: %(default)s)")
    sample.add_argument("--truth", action="store_true", help="also write the true displacement next to it (<stem>_true_displacement.npy)")
    sample.add_argument("--overwrite", action="store_true")
    _add_verbosity(sample)
    return sample


def run(args: argparse.Namespace) -> int:
    """Write the phantom (and with ``--truth`` its displacement); the exit code."""
    from ..pipeline.sample import write_sample

    phantom = write_sample(args.kind, args.output, seed=args.seed, size=args.size, truth=args.truth,
                           overwrite=args.overwrite)
    print(f"wrote {args.output} ({phantom.sequence.n_frames} frames, {args.kind}, seed {args.seed})")
    return EXIT_OK
