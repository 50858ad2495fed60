"""``any2reg engines``: the registration engines, the network's weights check and the device
``auto`` picks."""

from __future__ import annotations

import argparse
import sys

from ._common import EXIT_ERROR, EXIT_OK, _add_verbosity


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``engines`` sub-command (no arguments)."""
    parser = subparsers.add_parser("engines", help="list the registration engines and the device auto picks")
    _add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print one line per engine and the device; exit 1 when the shipped weights are not usable."""
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

