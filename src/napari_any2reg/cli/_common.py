"""What the ``any2reg`` command modules share: argument types, lazily read choices, the
engine-option flags of the registry, verbosity flags, the progress bar and one-line notes.

Nothing here imports torch at import time (``any2reg --help`` answers at once); the command
modules import what they need from here, and the package re-exports the names that scripts and
tests used before the commands had their own modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from typing import Sequence as Seq

import numpy as np

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
EXIT_SOME_FAILED = 3  # batch: the cohort ran, but some series failed (listed in summary.csv)
EXIT_TERMINATED = 128 + 15  # the shell's code for a process ended by SIGTERM


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


def _output_path(text: str) -> str:
    """An output path (``-o`` / ``--out``) as given; an empty or blank one is refused, as
    ``-o ''`` wrote the outputs into the current folder with exit 0."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"the output path is empty ({text!r}); give the folder or file to write")
    return text


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


class _Progress:
    """Progress bar on stderr (tqdm) for one computation, as a ``(fraction, message)`` callback.

    Shown only on a terminal: in a log file (stderr not a TTY) the carriage returns of a bar are
    noise, so nothing is written there (tqdm's ``disable=None``). ``-q`` hides it everywhere. The
    bar opens at the first report, so the notes a command prints while it reads and checks its
    inputs are not drawn across an empty bar.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __enter__(self):
        return self

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, disable=None, file=sys.stderr, leave=False,
                            bar_format="{l_bar}{bar}| {elapsed}", dynamic_ncols=True)
        if self.bar.disable:
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

