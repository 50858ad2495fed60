"""The engine contract: what an engine receives and returns, its registry and its options.

Everything an engine, :func:`.registration.register`, the CLI and the widgets must agree on is
declared here once:

* :class:`EngineOutput`, the :class:`Engine` protocol, the :data:`ENGINES` registry filled by
  :func:`register_engine`;
* :class:`Progress` (progress reporting and cooperative cancellation) and the one cancellation
  exception :class:`Cancelled`;
* :data:`ENGINE_OPTIONS`, every user-settable engine option with its type, default, range and
  help text, from which the CLI builds its flags and the registration dock its controls;
  :func:`options_for` and :func:`validate_engine_options` read it.

This module imports nothing else from the package but :mod:`.vocabulary` (which imports
nothing), so engines (``core/engines/*.py``) import
their contract from here and never from :mod:`.registration`, which imports the engines.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import threading
from typing import Any, Callable, Protocol

import torch

# the one cancellation exception, torch-free so that the widgets catch it without torch
from .cancellation import Cancelled
from .vocabulary import arg, interface

__all__ = [
    "Cancelled",
    "RegistrationCancelled",
    "Progress",
    "ProgressCallback",
    "EngineOutput",
    "Engine",
    "ENGINES",
    "register_engine",
    "BUILTIN_ENGINES",
    "EngineOption",
    "ENGINE_OPTIONS",
    "PROGRAMMATIC_OPTIONS",
    "EngineOptionError",
    "options_for",
    "check_option",
    "validate_engine_options",
]

#: The name callers used before there was one cancellation exception; the same class.
RegistrationCancelled = Cancelled

ProgressCallback = Callable[[float, str], None]


class Progress:
    """Progress reporting and cooperative cancellation for an engine.

    Parameters
    ----------
    callback : callable(fraction, message), optional
        Receives the overall fraction done (0–1) and a short message.
    cancel : threading.Event or callable returning bool, optional
        When set / true, the next :meth:`check` raises :class:`Cancelled`.
    """

    def __init__(self, callback: ProgressCallback | None = None, cancel: Any = None):
        self._callback = callback
        if cancel is None:
            self._cancelled: Callable[[], bool] = lambda: False
        elif isinstance(cancel, threading.Event):
            self._cancelled = cancel.is_set
        elif callable(cancel):
            self._cancelled = cancel
        else:
            raise TypeError("cancel must be a threading.Event or a callable returning bool")
        self._span = (0.0, 1.0)

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._cancelled():
            raise Cancelled("registration cancelled by the user")

    def report(self, fraction: float, message: str = "") -> None:
        """Report progress within the current stage span, then check for cancellation."""
        lo, hi = self._span
        if self._callback is not None:
            self._callback(float(lo + (hi - lo) * min(max(fraction, 0.0), 1.0)), message)
        self.check()

    def stage(self, start: float, stop: float) -> "Progress":
        """A child reporter mapping 0–1 onto ``[start, stop]`` of this one's span."""
        child = Progress.__new__(Progress)
        child._callback = self._callback
        child._cancelled = self._cancelled
        lo, hi = self._span
        child._span = (lo + (hi - lo) * start, lo + (hi - lo) * stop)
        return child


@dataclasses.dataclass
class EngineOutput:
    """What an engine returns to :func:`.registration.register`."""

    displacement: torch.Tensor  # (N, 2, H, W), pixels, pull-back
    loss_history: dict[str, list[float]]
    params: dict[str, Any]
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


class Engine(Protocol):
    def __call__(
        self,
        frames: torch.Tensor,
        *,
        progress: Progress,
        reference_frame: int | None,
        spacing_mm: tuple[float, float],
        **options: Any,
    ) -> EngineOutput: ...


ENGINES: dict[str, Engine] = {}


def register_engine(name: str) -> Callable[[Engine], Engine]:
    """Decorator adding an engine function to :data:`ENGINES` under ``name``."""

    def deco(fn: Engine) -> Engine:
        ENGINES[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------- engine options
#: The engines shipped with the package (``core/engines``, found there on first use), in the order
#: the docks list them. Declared here because the option table below names them before any
#: engine is imported; ``tests/core/test_engine_api.py`` checks it against what ``core/engines``
#: registers, so a new engine module that is not listed here fails the tests.
BUILTIN_ENGINES = ("any2reg", "any2reg-io", "groupwise", "xcoreg")

_NETWORK = ("any2reg", "any2reg-io")
_CLASSICAL = ("groupwise", "xcoreg")


@dataclasses.dataclass(frozen=True)
class EngineOption:
    """One user-settable engine option, declared once for the CLI, the docks and validation.

    Attributes
    ----------
    name : str
        The keyword argument of the engine function (CLI flag: ``--`` + name with ``-``).
    type : type
        ``bool``, ``int``, ``float`` or ``str`` (a path for ``weights``).
    default
        The engine's default; ``None`` where the engine chooses (e.g. the shipped weights).
    label : str
        Short name for a dock control.
    help : str
        One line for ``--help`` and tooltips.
    engines : tuple of str
        The engines that accept it.
    minimum, maximum : number, optional
        Inclusive range of numeric options.
    choices : tuple, optional
        The allowed values, when only a few are.
    """

    name: str
    type: type
    default: Any
    label: str
    help: str
    engines: tuple[str, ...] = BUILTIN_ENGINES
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--iterations-scale``."""
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        """The allowed values in words, for error messages and help."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}[self.type]
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} in [{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{kind} >= {self.minimum:g}"
        if self.maximum is not None:
            return f"{kind} <= {self.maximum:g}"
        return kind


#: Every user-settable engine option, declared once. ``reference_frame`` is an argument of
#: :func:`.registration.register` itself (all engines honour it); the rest are passed through
#: ``**engine_options`` to the engine function of the same keyword.
ENGINE_OPTIONS: tuple[EngineOption, ...] = (
    EngineOption(
        "reference_frame", int, None, "Reference frame",
        "keep this frame fixed (all-to-one, u_ref = 0); unset: groupwise (mean displacement zero)",
        engines=BUILTIN_ENGINES, minimum=0,
    ),
    EngineOption(
        "metric", str, "cte", "Metric",
        "groupwise similarity: cte (conditional template entropy, contrast-insensitive) or "
        "pca2 (variance outside the first two principal components)",
        engines=("groupwise",), choices=("cte", "pca2"),
    ),
    EngineOption(
        "iterations_scale", float, 1.0, "Iterations ×",
        "multiply every stage's iteration count (0.3 quick preview, 2 hard cases)",
        engines=_CLASSICAL, minimum=0.01, maximum=100.0,
    ),
    EngineOption(
        "regulariser_weight", float, 20.0, "Smoothness",
        "weight of the diffusion regulariser mean |grad u|^2 on the free-form stages",
        engines=_CLASSICAL, minimum=0.0, maximum=1e4,
    ),
    EngineOption(
        "nonrigid", bool, True, "Non-rigid",
        "false stops after the translation stages (rigid shifts only)",
        engines=_CLASSICAL,
    ),
    EngineOption(
        "bins", int, 24, "Histogram bins",
        "Parzen histogram bins of the CTE metric",
        engines=("groupwise",), minimum=4, maximum=256,
    ),
    EngineOption(
        "pca_components", int, 2, "PCA components",
        "principal components k kept by the pca2 metric",
        engines=("groupwise",), minimum=1, maximum=64,
    ),
    EngineOption(
        "n_classes", int, 6, "Tissue classes",
        "X-CoReg: tissue classes K of the latent common anatomy",
        engines=("xcoreg",), minimum=2, maximum=32,
    ),
    EngineOption(
        "n_levels", int, 24, "Intensity levels",
        "X-CoReg: intensity levels L per frame",
        engines=("xcoreg",), minimum=4, maximum=256,
    ),
    EngineOption(
        "em_steps", int, 1, "EM steps",
        "X-CoReg: EM iterations between gradient steps on the transforms",
        engines=("xcoreg",), minimum=1, maximum=50,
    ),
    EngineOption(
        "weights", str, None, "Weights",
        "a shipped weights name (e.g. any2reg-v1) or a best.pt / checkpoint.pt from "
        "'any2reg train' instead of the default weights",
        engines=_NETWORK,
    ),
    EngineOption(
        "io_steps", int, 30, "Refinement steps",
        "optimisation steps refining the network's field on this sequence (0: the network alone)",
        engines=("any2reg-io",), minimum=0, maximum=10000,
    ),
    EngineOption(
        "refinement", str, "classical", "Refinement",
        "classical: the groupwise engine's objective and FFD started from the network's field; "
        "instance: Adam on the training loss over a control grid",
        engines=("any2reg-io",), choices=("classical", "instance"),
    ),
    EngineOption(
        "io_learning_rate", float, 0.05, "Refinement step size",
        "Adam learning rate of the instance refinement (refinement=instance)",
        engines=("any2reg-io",), minimum=1e-6, maximum=10.0,
    ),
    EngineOption(
        "coarse", bool, True, "Coarse pre-alignment",
        "groupwise translation before the network when a frame is > 8 mm off (large breathing "
        "shifts); the network also runs without it and the field the objective prefers is kept",
        engines=_NETWORK,
    ),
    EngineOption(
        "orientations", int, 2, "Orientations",
        "test-time augmentation: mean of the fields predicted in 1, 2 or 4 orientations, in the "
        "coarse pass (every pass when none runs); each costs one network pass",
        engines=_NETWORK, choices=(1, 2, 4),
    ),
    EngineOption(
        "uncertainty_shifts", int, 0, "Uncertainty passes",
        "extra network passes on the input shifted by a few pixels (last pass only): with the "
        "orientations they give the per-pixel displacement SD in mm (0: the orientations alone)",
        engines=_NETWORK, minimum=0, maximum=8,
    ),
    EngineOption(
        "working_spacing_mm", float, None, "Working spacing (mm)",
        "isotropic pixel spacing the network runs at (unset: the scan's own grid; coarsened "
        "only where a frame exceeds 256 x 256 working pixels)",
        engines=_NETWORK, minimum=0.2, maximum=10.0,
    ),
    EngineOption(
        "passes", int, 1, "Network passes",
        "network passes at the working grid, each on the frames warped so far, fields composed",
        engines=_NETWORK, minimum=1, maximum=5,
    ),
    EngineOption(
        "coarse_pass_mm", float, 3.0, "Coarse pass (mm)",
        "spacing of a first network pass for large motion before the fine passes (0: none)",
        engines=_NETWORK, minimum=0.0, maximum=10.0,
    ),
    EngineOption(
        "fine_pass_orientations", int, 1, "Fine-pass orientations",
        "test-time orientations of the passes at the working grid when a coarse pass ran before "
        "them; the coarse pass (a fifth of the cost) and a schedule without one keep orientations",
        engines=_NETWORK, choices=(1, 2, 4),
    ),
    EngineOption(
        "do_no_harm", bool, True, "Do no harm",
        "return no motion when the field leaves the sequence objective worse than identity",
        engines=_NETWORK,
    ),
    EngineOption(
        "scores", bool, True, "Correspondence maps",
        "also compute the per-frame correspondence (AdaCS) maps",
        engines=_NETWORK,
    ),
)

#: Engine keywords set by code, not by users (arrays): accepted by
#: :func:`validate_engine_options` unchecked, never shown as flags or controls.
PROGRAMMATIC_OPTIONS = {
    "region_mask": ("groupwise", "xcoreg", "any2reg-io"),
    "auxiliary_features": _NETWORK,
}


class EngineOptionError(ValueError, TypeError):
    """An engine option that the engine does not take, or a value outside its allowed range.

    A ``ValueError`` for a bad value and a ``TypeError`` for an unknown keyword, as Python
    itself would raise; callers may catch either.
    """


def options_for(engine: str) -> list[EngineOption]:
    """The user-settable options of ``engine`` in :data:`ENGINE_OPTIONS` order."""
    return [option for option in ENGINE_OPTIONS if engine in option.engines]


def _check_value(engine: str, option: EngineOption, value: Any) -> Any:
    """``value`` converted to ``option.type``, or :class:`EngineOptionError` naming the fix."""

    def fail() -> EngineOptionError:
        return EngineOptionError(
            f"{engine}: option {arg(option.name)} got {value!r}; use {option.allowed()}"
            + (f" (default: {option.default!r})." if option.default is not None else ".")
        )

    if option.type in (int, float) and not isinstance(value, bool) and isinstance(value, numbers.Real):
        # inf / nan reach the engines as NaN fields (a segfault in the histogram code) and
        # int(inf) is an OverflowError: every number must be finite, whatever its range
        if not math.isfinite(float(value)):
            raise fail()
    if option.type is bool:
        if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
            raise fail()
        converted: Any = bool(value)
    elif option.type is int:
        # bool is an Integral but True as "1 step" is a mistake, not a count
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) != int(value):
            raise fail()
        converted = int(value)
    elif option.type is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
            raise fail()
        converted = float(value)
    else:
        if not isinstance(value, (str, os.PathLike)):
            raise fail()
        converted = value  # paths stay paths: the engine resolves them
    if option.choices is not None and converted not in option.choices:
        raise fail()
    if option.minimum is not None and converted < option.minimum:
        raise fail()
    if option.maximum is not None and converted > option.maximum:
        raise fail()
    return converted


def check_option(engine: str, name: str, value: Any) -> Any:
    """One option's value checked against its :data:`ENGINE_OPTIONS` row (any engine's:
    :func:`.registration.register` checks ``reference_frame`` this way for every engine)."""
    option = next(o for o in ENGINE_OPTIONS if o.name == name)
    return _check_value(engine, option, value)


def validate_engine_options(engine: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check engine options against :data:`ENGINE_OPTIONS`; return them converted.

    Parameters
    ----------
    engine : str
        The engine's name.
    options : dict
        Keyword options for the engine; ``None`` values mean "the engine's default" and are
        dropped (as the CLI leaves unset flags). Programmatic options
        (:data:`PROGRAMMATIC_OPTIONS`) pass unchecked.

    Returns
    -------
    dict
        The options with values converted to the declared types (``1`` -> ``1.0`` for a float).

    Raises
    ------
    EngineOptionError
        Naming the option, the allowed values and the fix.
    """
    declared = {option.name: option for option in options_for(engine)}
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if engine in PROGRAMMATIC_OPTIONS.get(name, ()):
            checked[name] = value
            continue
        option = declared.get(name)
        if option is None:
            takes = [o.engines for o in ENGINE_OPTIONS if o.name == name]
            hint = (
                f"it applies to the {', '.join(takes[0])} engine(s)"
                if takes
                else "it is not an engine option"
            )
            raise EngineOptionError(
                f"{engine}: unknown option {arg(name) if interface() == 'cli' else repr(name)} ({hint}); {engine} takes "
                f"{', '.join(arg(n) for n in sorted(declared)) or 'no options'}."
            )
        checked[name] = _check_value(engine, option, value)
    return checked
