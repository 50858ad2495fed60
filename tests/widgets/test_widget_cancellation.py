"""Cancellation is one exception type, and dock sections reach their dock through a protocol.

* ``widgets._base`` recognises cancellation by ``isinstance`` of
  :class:`napari_any2reg.core.cancellation.Cancelled` (``engine_api.Cancelled``): the dock's own
  :class:`JobCancelled`, the registration's and the T1 fit's errors are subclasses or the class
  itself, and a class merely *named* ``...Cancelled`` is an error like any other.
* Pressing a dock's real Cancel button while a slow registration runs says "cancelled", shows
  no error and adds nothing.
* The docks satisfy the host protocols their sections are typed with (widgets/_hosts.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import capture_notifications, plugin_dock
from qtpy.QtCore import Qt

pytestmark = pytest.mark.napari

RUN_TIMEOUT_MS = 120_000


def test_one_cancellation_type_everywhere():
    from napari_any2reg.core import cancellation, engine_api, registration
    from napari_any2reg.core.mapping import FitCancelled
    from napari_any2reg.widgets._base import JobCancelled, is_cancellation

    assert engine_api.Cancelled is cancellation.Cancelled is registration.RegistrationCancelled
    for error in (cancellation.Cancelled("x"), JobCancelled("x"), FitCancelled("x"), engine_api.RegistrationCancelled("x")):
        assert is_cancellation(error), type(error)

    class UploadCancelled(RuntimeError):
        """A name that ends in "Cancelled" but is not the cancellation type."""

    assert not is_cancellation(UploadCancelled("network gone"))
    assert not is_cancellation(RuntimeError("cancelled"))  # nor is a message


def test_the_core_raises_the_one_type_when_cancelled():
    from napari_any2reg.core.cancellation import Cancelled
    from napari_any2reg.core.engine_api import Progress

    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        Progress(cancel=flag).check()


def test_a_class_named_cancelled_is_reported_as_an_error(viewer, qtbot, monkeypatch):
    """No name matching: an error class ending in "Cancelled" is shown as an error."""
    from napari_any2reg.widgets import registration

    notes = capture_notifications(monkeypatch, registration)
    dock = plugin_dock(viewer, "Registration")

    class ServerCancelled(RuntimeError):
        pass

    def job(_):
        raise ServerCancelled("the server dropped the connection")

    assert dock.start_job(job, description="Upload")
    qtbot.waitUntil(lambda: not dock.busy(), timeout=RUN_TIMEOUT_MS)
    assert "server dropped" in dock.status_label.text() and "cancelled" not in dock.status_label.text()
    assert notes["error"] and isinstance(dock.last_error, ServerCancelled)


def _add_sequence(viewer):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    phantom = make_phantom("molli", seed=3, shape=(64, 64), spacing_mm=(4.5, 4.5))
    data, meta, _ = sequence_to_layer_data(phantom.sequence)
    return viewer.add_image(data, **meta)


def test_pressing_cancel_during_a_slow_registration_says_cancelled(viewer, qtbot, monkeypatch):
    from napari_any2reg.core.cancellation import Cancelled
    from napari_any2reg.widgets import registration

    notes = capture_notifications(monkeypatch, registration)
    dock = plugin_dock(viewer, "Registration")
    _add_sequence(viewer)
    dock.engine_combo.setCurrentIndex(dock.engine_combo.findData("groupwise"))
    dock.iterations_spin.setValue(5.0)  # long enough to press Cancel mid-way
    try:
        qtbot.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dock.progress_bar.value() >= 2, timeout=RUN_TIMEOUT_MS)
        assert dock.worker is not None and dock.cancel_button.isEnabled(), "the run ended before Cancel"
        qtbot.mouseClick(dock.cancel_button, Qt.MouseButton.LeftButton)
        assert dock.status_label.text() == "Cancelling…"
        qtbot.waitUntil(lambda: dock.worker is None and dock.run_button.isEnabled(), timeout=30_000)
    finally:
        if dock.worker is not None:  # never leave a thread behind
            dock.cancel()
            qtbot.waitUntil(lambda: dock.worker is None, timeout=RUN_TIMEOUT_MS)

    assert "cancelled" in dock.status_label.text().lower()
    assert notes["error"] == [] and any("cancel" in message.lower() for message in notes["info"])
    assert isinstance(dock.last_error, Cancelled)
    assert not any(layer.name.endswith(" registered") for layer in viewer.layers)
    assert not dock.cancel_button.isEnabled() and dock.progress_bar.value() == 0


def test_the_landmarks_dock_is_the_host_its_sections_expect(viewer):
    from napari_any2reg.widgets._hosts import JobHost, StatusHost
    from napari_any2reg.widgets._landmarks_names import LandmarkNamesHost
    from napari_any2reg.widgets._landmarks_tools import RegistrationToolsHost

    dock = plugin_dock(viewer, "Landmarks")
    for protocol in (StatusHost, JobHost, LandmarkNamesHost, RegistrationToolsHost):
        assert isinstance(dock, protocol), protocol.__name__
    assert dock.names.host is dock and dock.tools.host is dock
    # the tools section keeps its results; the dock shows them under the old names
    assert dock.last_tre is None and dock.last_dice is None
    dock.show_page(dock.tools.prop_tab)
    assert dock.tabs.currentWidget() is dock.tools.prop_tab


def test_the_mapping_dock_is_the_host_its_sections_expect(viewer):
    from napari_any2reg.widgets._ecv_section import EcvHost
    from napari_any2reg.widgets._hosts import JobHost

    dock = plugin_dock(viewer, "T1 mapping")
    assert isinstance(dock, EcvHost) and isinstance(dock, JobHost)
    assert dock.ecv_section.host is dock and dock.segments_section.host is dock
    assert not isinstance(object(), JobHost)  # the protocol asks for something


def test_a_cancelled_ecv_section_job_adds_nothing(viewer, qtbot, monkeypatch):
    """The ECV section runs as its host's job: Cancel there is the dock's Cancel."""
    from napari_any2reg.core.cancellation import Cancelled
    from napari_any2reg.widgets import _base

    notes = capture_notifications(monkeypatch, _base)
    dock = plugin_dock(viewer, "T1 mapping")
    started = threading.Event()

    def slow(job):
        started.set()
        for _ in range(2000):  # ~20 s unless cancelled
            job.check()
            job.cancel.wait(0.01)
        return np.zeros(1)

    assert dock.ecv_section.host.start_job(slow, description="ECV")
    qtbot.waitUntil(started.is_set, timeout=RUN_TIMEOUT_MS)
    qtbot.mouseClick(dock.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dock.busy(), timeout=30_000)
    assert "ECV cancelled" in dock.status_label.text() and notes["error"] == []
    assert isinstance(dock.last_error, Cancelled)
