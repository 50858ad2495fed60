"""Messages in the user's own vocabulary: one spelling of an argument per interface.

An error names the fix as the user must type it: ``--overwrite`` on the command line,
``overwrite=True`` in Python. Code that raises does not know which interface called it, so it
spells arguments through :func:`arg` and the interface in charge decides: the CLI runs its
commands inside :func:`speaking` ``("cli")``; everything else is the Python API (the default).

The setting is process-wide (not per thread): a command's worker threads (readers, the local
cohort cluster) raise errors the command prints, so they speak the command's language too.
This module imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

__all__ = ["INTERFACES", "interface", "speaking", "arg"]

INTERFACES = ("api", "cli")

#: Argument names whose command-line flag is not ``--`` + the name with dashes.
CLI_FLAGS = {
    "slice_index": "--slice",
    "timings_ms": "--times-ms",
    "output": "-o",
    "outdir": "-o",
    "labels": "--labels",
    "shape": "--size",  # make_phantom(shape=(S, S)) is `any2reg sample --size S`
}

_lock = threading.Lock()
_current = ["api"]

_UNSET = object()


def interface() -> str:
    """The interface whose vocabulary messages use now: ``"api"`` or ``"cli"``."""
    return _current[-1]


@contextlib.contextmanager
def speaking(name: str) -> Iterator[None]:
    """Within the block, :func:`arg` spells arguments for interface ``name``."""
    if name not in INTERFACES:
        raise ValueError(f"unknown interface {name!r}; one of {', '.join(INTERFACES)}")
    with _lock:
        _current.append(name)
    try:
        yield
    finally:
        with _lock:
            _current.pop()


def arg(name: str, value: Any = _UNSET) -> str:
    """The argument ``name`` (set to ``value``, if given) as the current interface spells it.

    ``arg("overwrite", True)`` is ``overwrite=True`` in Python and ``--overwrite`` on the
    command line; ``arg("reference_frame")`` is ``reference_frame`` / ``--reference-frame``;
    ``arg("coarse", False)`` is ``coarse=False`` / ``--no-coarse``; ``arg("size", 4096)`` is
    ``size=4096`` / ``--size 4096``.
    """
    if interface() == "cli":
        flag = CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
        if value is _UNSET or value is True:
            return flag
        if value is False:
            return "--no-" + flag[2:]
        return f"{flag} {value}"
    if value is _UNSET:
        return name
    return f"{name}={value!r}"
