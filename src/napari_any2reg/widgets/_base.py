"""The base of every Any2Reg dock: worker lifecycle, progress, cancel, status and errors.

A dock derives from :class:`WorkerDock` and runs its core work with :meth:`WorkerDock.start_job`:

* the job function runs in a napari ``thread_worker`` and receives a :class:`Job` (``job.progress``
  reports ``(fraction, message)``, throttled and relayed to the GUI thread; ``job.cancel`` is a
  :class:`threading.Event` to hand to the core; ``job.check()`` raises :class:`JobCancelled`);
* its result goes to ``on_result`` in the GUI thread; an exception (in the job or in
  ``on_result``) becomes a message in the dock's status line and a napari notification, and
  never reaches Qt (the viewer stays alive);
* a cancelled job says so and adds nothing. Cancellation is one exception type,
  :class:`napari_any2reg.core.cancellation.Cancelled` (re-exported as ``core.engine_api.Cancelled``):
  the core's registration, T1 fit and training raise it or a subclass, :class:`JobCancelled` is
  one too, and :func:`is_cancellation` tells it by ``isinstance``;
* the dock's progress bar, napari's Activity bar and the Cancel button follow the job.

One *main* job runs at a time (``dock.worker``); *tasks* (``main=False``: overlays and other short
steps with a busy bar) may run beside it. :meth:`WorkerDock.busy` tells whether anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import weakref
from typing import Any, Callable

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..core.cancellation import Cancelled
from ._pickers import same_layer
from ._relay import ActivityProgress, ProgressRelay

__all__ = ["WorkerDock", "Job", "JobCancelled", "is_cancellation"]


class JobCancelled(Cancelled):
    """Raised in a job (by :meth:`Job.check`) once the user pressed Cancel.

    A :class:`~napari_any2reg.core.cancellation.Cancelled`, so that a dock catches one type whether
    the job itself or the core (registration, fit, training) noticed the cancel flag.
    """


def is_cancellation(error: BaseException) -> bool:
    """Whether ``error`` means "the user cancelled".

    Parameters
    ----------
    error : BaseException
        What a job raised.

    Returns
    -------
    bool
        ``True`` for :class:`~napari_any2reg.core.cancellation.Cancelled` and its subclasses
        (:class:`JobCancelled`, the T1 fit's ``FitCancelled``); a class that merely has
        "Cancelled" in its name is an error like any other.
    """
    return isinstance(error, Cancelled)


class Job:
    """What a job function gets in the worker thread: progress reporting and the cancel flag."""

    #: Smallest change of fraction relayed (the GUI is not flooded by a fast loop).
    STEP = 0.01

    def __init__(self, token: int, relay: ProgressRelay, cancel: threading.Event) -> None:
        self.token = token
        self.cancel = cancel
        self._relay = relay
        self._last = (-1.0, "")

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1] (thread-safe; throttled to :attr:`STEP` unless the message changes)."""
        fraction, message = float(fraction), str(message)
        last_fraction, last_message = self._last
        if fraction - last_fraction >= self.STEP or message != last_message or fraction >= 1.0:
            self._last = (fraction, message)
            self._relay.job_progress.emit(self.token, fraction, message)

    def publish(self, data: Any) -> None:
        """Hand a partial result to the dock's ``on_data`` (in the GUI thread), e.g. one row per series."""
        self._relay.job_data.emit(self.token, data)

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` when Cancel was pressed."""
        if self.cancel.is_set():
            raise JobCancelled("cancelled")


@dataclasses.dataclass
class _Outcome:
    token: int
    result: Any = None
    error: BaseException | None = None


@dataclasses.dataclass
class _Running:
    token: int
    worker: Any
    job: Job
    description: str
    on_result: Callable[[Any], Any] | None
    on_finished: Callable[[], Any] | None
    on_data: Callable[[Any], Any] | None
    main: bool
    activity: ActivityProgress | None
    error_prefix: str = ""
    drop_when_cancelled: bool = True
    failed: bool = False


def _guarded(token: int, fn: Callable[[Job], Any], job: Job) -> _Outcome:
    """Worker body: the job's result, or its exception (shown in the GUI thread)."""
    try:
        return _Outcome(token, result=fn(job))
    except Exception as exc:  # every failure is the dock's to show
        return _Outcome(token, error=exc)


_run_in_thread = thread_worker(_guarded, start_thread=False)


def _weak_slot(method: Callable[..., Any], *args: Any) -> Callable[..., None]:
    """A slot calling ``method(*args)`` while its object lives (a closed dock gets nothing)."""
    ref = weakref.WeakMethod(method)

    def slot(*_: Any) -> None:
        bound = ref()
        if bound is None:
            return
        try:
            bound(*args)
        except RuntimeError as exc:  # the Qt side of the dock was deleted meanwhile
            if "deleted" not in str(exc):
                raise

    return slot


#: Pause between the steps of :meth:`WorkerDock.run_in_turns` (ms). With 0 the next step runs in
#: the same event-loop pass as the repaint the last one asked for, and the two stall as one;
#: a few ms let the window paint (and take input) in between.
_TURN_GAP_MS = 15


class WorkerDock(QWidget):
    """A dock panel running its work through :meth:`start_job`.

    Subclasses create the standard controls with :meth:`make_progress_controls` and may override
    :meth:`on_running_changed` to enable or disable their inputs.

    Attributes
    ----------
    viewer : napari.Viewer
    worker : the running main job's worker, or ``None``
    activity : the napari Activity bar of the main job, or ``None``
    last_error : the last exception shown, or ``None``
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.activity: ActivityProgress | None = None
        self.last_error: BaseException | None = None
        self._running: dict[int, _Running] = {}
        #: token of the last job started (see :meth:`job_worker`)
        self.last_token: int | None = None
        self._main_token: int | None = None
        self._tokens = itertools.count(1)
        self._relay = ProgressRelay(self)
        self._relay.job_progress.connect(self._on_job_progress)
        self._relay.job_data.connect(self._on_job_data)
        self.progress_bar: QProgressBar | None = None
        self.status_label: QLabel | None = None
        self.cancel_button: QPushButton | None = None
        self._turns_pending = 0

    # ------------------------------------------------------------------ controls
    def make_progress_controls(self, cancel: bool = True) -> None:
        """Create ``progress_bar``, ``status_label`` and (``cancel``) ``cancel_button``; the
        subclass lays them out."""
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if cancel:
            self.cancel_button = QPushButton("Cancel")
            self.cancel_button.setToolTip("Stop the running computation at its next check; nothing is added.")
            self.cancel_button.clicked.connect(lambda *_: self.cancel())
            self.cancel_button.setEnabled(False)

    def dock_body(self, body: QWidget, *sections: QWidget | QLayout, actions: tuple[QPushButton, ...],
                  after: QWidget | None = None) -> QVBoxLayout:
        """Lay out the usual dock: ``sections`` (forms, boxes), the ``actions`` buttons beside
        Cancel, the progress bar and the status line, then ``after`` (a table or results area that
        takes the spare height) or a stretch. Call :meth:`make_progress_controls` first."""
        buttons = QHBoxLayout()
        for button in actions:
            buttons.addWidget(button)
        if self.cancel_button is not None:
            buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(body)
        for section in sections:
            if isinstance(section, QLayout):
                layout.addLayout(section)
            else:
                layout.addWidget(section)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        if after is not None:
            layout.addWidget(after, 1)
        else:
            layout.addStretch(1)
        return layout

    def set_status(self, text: str) -> None:
        if self.status_label is not None:
            self.status_label.setText(text)

    def report_error(self, message: str, exc: BaseException | None = None) -> None:
        """Show ``message`` in the status line and as a napari error notification."""
        if exc is not None:
            self.last_error = exc
        self.set_status(message)
        if self.progress_bar is not None and not self.busy():
            self.progress_bar.setValue(0)  # no stale "done" bar beside an error
        show_error(message)

    def report_info(self, message: str) -> None:
        """A napari info notification (the status line is the caller's)."""
        show_info(message)

    # ------------------------------------------------------------------ layers
    def watch_layers(self, *, data: bool = False) -> None:
        """Call :meth:`refresh_layers` when layers are added, removed, moved or renamed (and,
        with ``data``, :meth:`on_layer_data` when a layer's data change); a new layer also goes
        to :meth:`on_layer_inserted`."""
        self._watched: list[Any] = []
        self._watch_data = data
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted_event)
        layers.events.removed.connect(self._on_layers_event)
        layers.events.moved.connect(self._on_layers_event)
        for layer in layers:
            self._watch(layer)

    def refresh_layers(self) -> None:
        """Hook: re-list the layers in the pickers."""

    def on_layer_inserted(self, layer: Any) -> None:
        """Hook: ``layer`` was added (after :meth:`refresh_layers`)."""

    def on_layer_data(self, layer: Any) -> None:
        """Hook: ``layer``'s data changed (only with ``watch_layers(data=True)``)."""

    def _watch(self, layer: Any) -> None:
        if not any(same_layer(layer, w) for w in self._watched):
            layer.events.name.connect(self._on_layers_event)
            if self._watch_data:
                layer.events.data.connect(self._on_layer_data_event)
            self._watched.append(layer)

    def _on_layer_inserted_event(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            self._watch(layer)
        self.refresh_layers()
        if layer is not None:
            self.on_layer_inserted(layer)

    def _on_layers_event(self, event: Any = None) -> None:
        alive = list(self.viewer.layers)
        for layer in list(self._watched):
            if not any(same_layer(layer, a) for a in alive):
                layer.events.name.disconnect(self._on_layers_event)
                if self._watch_data:
                    layer.events.data.disconnect(self._on_layer_data_event)
                self._watched.remove(layer)
        self.refresh_layers()

    def _on_layer_data_event(self, event: Any = None) -> None:
        layer = getattr(event, "source", None)
        if layer is not None:
            self.on_layer_data(layer)

    # ------------------------------------------------------------------ state
    def is_running(self) -> bool:
        """Whether the main job runs."""
        return self.worker is not None

    def busy(self) -> bool:
        """Whether any job (main or task) runs, or its result is still being put on screen
        (:meth:`run_in_turns`)."""
        return bool(self._running) or self._turns_pending > 0

    def run_in_turns(self, steps: "list[Callable[[], Any]]", error_prefix: str = "Showing the result failed") -> None:
        """Run ``steps`` on the GUI thread, one per event-loop turn, in order.

        napari needs ~0.2 s of GUI time for a new layer and about as much again for its first
        draw (vispy builds the visual's shaders); doing several such things in one turn freezes
        the window for their sum. Split, each costs its own stall and the window repaints and
        takes input in between. A step that raises stops the rest and is reported (status line
        and notification), never raised into Qt. :meth:`busy` stays ``True`` until the last step
        has run, so a caller waiting for "not busy" sees the finished result.
        """
        queue = list(steps)
        if not queue:
            return
        self._turns_pending += 1

        def next_step() -> None:
            try:
                self.objectName()
            except RuntimeError:  # the dock was closed (its Qt side deleted) between turns
                return
            step = queue.pop(0)
            try:
                step()
            except Exception as exc:  # shown, never raised into Qt
                queue.clear()
                self.report_error(f"{error_prefix}: {exc}", exc)
            if queue:
                QTimer.singleShot(_TURN_GAP_MS, next_step)
            else:
                self._turns_pending -= 1

        QTimer.singleShot(_TURN_GAP_MS, next_step)

    def job_worker(self, token: int | None) -> Any:
        """The worker of a running job (``None`` once it finished)."""
        running = self._running.get(token) if token is not None else None
        return None if running is None else running.worker

    def on_running_changed(self, running: bool) -> None:
        """Hook: the main job started (``True``) or ended (``False``); enable inputs here."""

    # ------------------------------------------------------------------ jobs
    def start_job(
        self,
        fn: Callable[[Job], Any],
        *,
        description: str,
        on_result: Callable[[Any], Any] | None = None,
        on_finished: Callable[[], Any] | None = None,
        message: str | None = None,
        main: bool = True,
        busy: bool = False,
        error_prefix: str | None = None,
        activity: str | None = None,
        on_data: Callable[[Any], Any] | None = None,
        drop_when_cancelled: bool = True,
    ) -> bool:
        """Run ``fn(job)`` in a napari ``thread_worker``; ``on_result(result)`` in the GUI thread.

        Parameters
        ----------
        fn : callable(Job) -> result
            The work. It must not touch layers (copy what it needs before).
        description : str
            What runs ("Registration"): the start of the messages ("<description> failed: ...",
            "<description> cancelled.").
        on_result, on_finished : callables, optional
            Called in the GUI thread with the result / once the worker is done (always).
        message : str, optional
            Status line while it runs (default ``description + "…"``).
        main : bool
            The dock's main job (one at a time, Cancel button, fraction progress) or a task.
        busy : bool
            The job reports no fraction: a busy bar.
        error_prefix : str, optional
            Start of the error message (default ``description + " failed"``).
        activity : str, optional
            Text of napari's Activity bar (default ``description``).
        on_data : callable, optional
            Receives, in the GUI thread, what the job hands to :meth:`Job.publish`.
        drop_when_cancelled : bool
            A result that arrives after Cancel was pressed is dropped (nothing is added). Pass
            ``False`` for work whose effect is already done when it returns (files written).

        Returns ``False`` (with a message) when a main job is already running.
        """
        if main and self.worker is not None:
            self.report_error(f"{self._running[self._main_token].description} is running; "
                              "wait for it or cancel it.")
            return False
        token = next(self._tokens)
        job = Job(token, self._relay, threading.Event())
        worker = _run_in_thread(token, fn, job)
        bar = ActivityProgress(activity or description, busy=busy) if main else None
        running = _Running(token, worker, job, description, on_result, on_finished, on_data, main, bar,
                           error_prefix or f"{description} failed", drop_when_cancelled)
        self._running[token] = running
        self.last_token = token
        # bound methods (not lambdas): Qt drops them if the dock is closed mid-run
        worker.returned.connect(self._on_job_returned)
        worker.finished.connect(_weak_slot(self._on_job_finished, token))
        if self.progress_bar is not None:
            if busy or not main:
                self.progress_bar.setRange(0, 0)
            elif self.worker is None and not self._tasks_running():
                self.progress_bar.setRange(0, 100)
                self.progress_bar.setValue(0)
        if main:
            self.worker = worker
            self.activity = bar
            self._main_token = token
            self.last_error = None
            if self.cancel_button is not None:
                self.cancel_button.setEnabled(True)
            self.on_running_changed(True)
        self.set_status(message if message is not None else f"{description}…")
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask the running main job to stop at its next check (nothing is added)."""
        running = self._running.get(self._main_token) if self._main_token is not None else None
        if running is None:
            return
        running.job.cancel.set()
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)
        self.set_status("Cancelling…")

    def cancel_all(self) -> None:
        """Cancel every running job (the dock is closing)."""
        for running in self._running.values():
            running.job.cancel.set()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.cancel_all()
        super().closeEvent(event)

    def _tasks_running(self) -> bool:
        return any(not r.main for r in self._running.values())

    def _on_job_progress(self, token: int, fraction: float, message: str) -> None:
        running = self._running.get(token)
        if running is None or not running.main:
            return
        if self.progress_bar is not None and self.progress_bar.maximum() > 0:
            self.progress_bar.setValue(int(round(100 * min(max(fraction, 0.0), 1.0))))
        if message and not running.job.cancelled():
            self.set_status(f"{message} ({100 * fraction:.0f} %)")
        if running.activity is not None:  # last: napari's bar may process events
            running.activity.set(fraction, message)

    def _on_job_data(self, token: int, data: Any) -> None:
        running = self._running.get(token)
        if running is None or running.on_data is None:
            return
        try:
            running.on_data(data)
        except Exception as exc:  # shown, never raised into Qt
            self.report_error(f"{running.description}: {exc}", exc)

    def _on_job_returned(self, outcome: _Outcome) -> None:
        running = self._running.get(outcome.token)
        if running is None:
            return
        error = outcome.error
        if error is None and running.job.cancelled() and running.drop_when_cancelled:
            error = JobCancelled("cancelled")  # pressed while the last step ran: its result is dropped
        if error is None and running.on_result is not None:
            try:
                running.on_result(outcome.result)
            except Exception as exc:  # adding the result failed: shown, never raised into Qt
                error = exc
            else:
                return
        if error is None:
            return
        running.failed = True
        if is_cancellation(error):
            self.last_error = error
            self.set_status(f"{running.description} cancelled; nothing was added.")
            show_info(f"{running.description} cancelled.")
        else:
            self.report_error(f"{running.error_prefix}: {error}", error)

    def _on_job_finished(self, token: int) -> None:
        running = self._running.pop(token, None)
        if running is None:
            return
        if running.activity is not None:
            running.activity.close()
        if running.main:
            self.worker = None
            self.activity = None
            self._main_token = None
            if self.cancel_button is not None:
                self.cancel_button.setEnabled(False)
        if self.progress_bar is not None and not self._running:
            self.progress_bar.setRange(0, 100)
            self.progress_bar.setValue(0 if running.failed else 100)
        if running.on_finished is not None:
            try:
                running.on_finished()
            except Exception as exc:
                self.report_error(f"{running.description}: {exc}", exc)
        if running.main:
            self.on_running_changed(False)
