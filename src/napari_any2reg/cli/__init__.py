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

The package is a dispatcher: each command is a module of it with ``add_parser(subparsers)``
(its flags, help and defaults) and ``run(args) -> exit code``, a thin mapping of its arguments
onto one :mod:`napari_any2reg.pipeline` function. What the modules share (argument types, the
engine-option flags, the progress bar) is in :mod:`._common`; logging and SIGTERM in
:mod:`._runtime`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence as Seq

from .._version import __version__
from ._common import (  # noqa: F401  (re-exported: the names scripts, tests and command modules import from here)
    _EXIT_CODES_TEXT,
    _NUMERIC_OPTIONS,
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    _add_engine_options,
    _add_verbosity,
    _cli_engine_options,
    _engine_settings,
    _float_list,
    _float_pair,
    _join_numeric_values,
    _LazyChoices,
    _note,
    _positive_float,
    _Progress,
    _read_input,
    _spacing,
    add_engine_option_flags,
)
from ._runtime import Terminated, _configure_logging, _SigtermAsException

#: The commands, in the order ``any2reg --help`` lists them: each is the module of this package
#: of that name, with ``add_parser(subparsers)`` and ``run(args) -> exit code`` (a module that sets
#: ``USES_ENGINE_FLAGS`` takes ``add_parser(subparsers, engine_flags)``). Add a command by adding
#: its module here.
COMMAND_MODULES: tuple[str, ...] = ("register", "tre", "apply", "sample", "fit", "engines", "batch",
                                    "ecv", "segments", "train")


def _command_module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def _uses_engine_flags(name: str | None) -> bool:
    """Whether command ``name`` has the registry's engine-option flags (they import torch)."""
    return name in COMMAND_MODULES and bool(getattr(_command_module(name), "USES_ENGINE_FLAGS", False))


def build_parser(engine_flags: bool = True) -> argparse.ArgumentParser:
    """The ``any2reg`` parser; ``engine_flags=False`` leaves out the engine-option flags of
    'register' and 'batch' (reading their registry imports torch: 2-3 s for ``--version``)."""
    from ..io._dispatch import input_help  # the reader table (no torch, no file parsers)

    parser = argparse.ArgumentParser(
        prog="any2reg",
        description=(
            "Groupwise motion correction for quantitative cardiac MRI (MOLLI, STONE, SASHA, "
            f"ASL, perfusion, cine). Reads {input_help()}; writes the registered stack, the "
            "displacement field and QC metrics."
        ),
        epilog="Run 'any2reg COMMAND --help' for the options of each command. " + _EXIT_CODES_TEXT,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # own dests: a sub-command's defaults would overwrite options of the same dest given before it
    parser.add_argument("-v", "--verbose", dest="global_verbose", action="count", default=0, help="more log output (-vv: debug); also after the command")
    parser.add_argument("-q", "--quiet", dest="global_quiet", action="store_true", help="no progress output, warnings and errors only; also after the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:  # each command module adds its own sub-parser
        module = _command_module(name)
        if getattr(module, "USES_ENGINE_FLAGS", False):
            module.add_parser(sub, engine_flags=engine_flags)
        else:
            module.add_parser(sub)
    return parser


def main(argv: Seq[str] | None = None) -> int:
    """Entry point of the ``any2reg`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # global options take no value, so the first other word is the command
    command = next((token for token in argv if not token.startswith("-")), None)
    engine_flags = _uses_engine_flags(command)
    parser = build_parser(engine_flags=engine_flags)
    numeric = _NUMERIC_OPTIONS
    if engine_flags:  # every numeric engine option too (--regulariser-weight -inf)
        numeric += tuple(option.flag for option in _cli_engine_options() if option.type in (int, float))
    args = parser.parse_args(_join_numeric_values(argv, numeric))
    args.argv = argv  # for the run record
    args.quiet = bool(getattr(args, "quiet", False) or args.global_quiet)
    args.verbose = int(getattr(args, "verbose", 0) or 0) + args.global_verbose
    _configure_logging(args.verbose, args.quiet)
    from ..core.vocabulary import speaking

    try:
        with _SigtermAsException(), speaking("cli"):  # errors name the flags, not the API arguments
            return _command_module(args.command).run(args)
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
