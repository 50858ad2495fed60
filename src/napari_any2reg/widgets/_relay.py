"""The Qt object every dock widget uses to carry worker progress to the GUI thread, and the
napari progress bar that mirrors it in napari's Activity dock / status bar."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, Signal

__all__ = ["ProgressRelay", "ActivityProgress"]


class ProgressRelay(QObject):
    """Carries ``(fraction, message)`` from a worker thread to the GUI thread.

    Emitting a signal from the worker and connecting it to a widget slot gives a queued
    connection, so the slot always runs in the GUI thread.
    """

    #: ``(job token, fraction, message)`` of a :class:`~._base.WorkerDock` job.
    job_progress = Signal(int, float, str)
    #: ``(job token, object)``: a partial result a job publishes while it runs.
    job_data = Signal(int, object)


class ActivityProgress:
    """A :class:`napari.utils.progress` bar for one background job (napari's own convention:
    it shows in the Activity dock and the status bar, beside the panel's bar).

    Created, updated and closed in the GUI thread only. ``total=0`` gives a busy bar for a step
    that reports no fraction.
    """

    def __init__(self, description: str, busy: bool = False) -> None:
        from napari.utils import progress

        self.description = description
        self._bar: Any = progress(total=0 if busy else 100, desc=description)

    def set(self, fraction: float, message: str = "") -> None:
        """Move to ``fraction`` in [0, 1]; ``message`` extends the description."""
        bar = self._bar
        if bar is None or not bar.total:
            return
        target = int(round(100 * min(max(float(fraction), 0.0), 1.0)))
        if target > bar.n:
            bar.update(target - bar.n)
        if message:
            bar.set_description(f"{self.description}: {message}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def closed(self) -> bool:
        return self._bar is None
