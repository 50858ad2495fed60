"""The one Qt object every dock widget uses to carry worker progress to the GUI thread."""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal

__all__ = ["ProgressRelay"]


class ProgressRelay(QObject):
    """Carries ``(fraction, message)`` from a worker thread to the GUI thread.

    Emitting a signal from the worker and connecting it to a widget slot gives a queued
    connection, so the slot always runs in the GUI thread.
    """

    progress = Signal(float, str)
