"""Import the plugin's heavy modules in a background thread once napari first calls into it.

napari imports a dock's module when the user opens it, on the GUI thread: the first dock that
draws a plot imports matplotlib's Qt backend (0.3-0.4 s on a 2-core machine), the first Run
imports the pipeline. A frozen window for that long is what a user notices (issue 23's stall
benchmark). Started when the first dock or sample is made, a daemon thread imports them while
the user looks at the window; Python's import lock makes a module the GUI thread asks for
before the thread is done wait for that import to finish (never imported twice, never worse
than importing it on the GUI thread). Nothing is imported that the plugin would not import
anyway, and no Qt object is created off the GUI thread.
"""

from __future__ import annotations

import importlib
import threading

__all__ = ["warm_up_in_background", "WARM_UP_MODULES"]

#: In the order a first session needs them: the Registration dock (the engines), the plots of
#: the Review and T1 docks, then what a Run and a review compute with.
WARM_UP_MODULES = (
    "napari_any2reg.core.registration",
    "matplotlib.figure",
    "matplotlib.backends.backend_qtagg",
    "napari_any2reg.pipeline.series",
    "napari_any2reg.core.qc",
    "napari_any2reg.core.mapping",
)

_started = threading.Lock()
_thread: threading.Thread | None = None


def warm_up_in_background() -> threading.Thread:
    """Start the warm-up thread (once per process) and return it."""
    global _thread
    with _started:
        if _thread is None:
            _thread = threading.Thread(target=_import_all, name="any2reg-warm-up", daemon=True)
            _thread.start()
        return _thread


def _import_all() -> None:
    for name in WARM_UP_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the import is repeated where the module is used,
            # and that import reports the error in the words of the action the user took
            continue
