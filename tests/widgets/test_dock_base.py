"""The docks' base (worker lifecycle, errors, cancel), the layer picker and RegisteredLayer.

A minimal dock built on :class:`WorkerDock` runs real jobs in napari thread workers inside a real
viewer; tests wait on the worker state with ``qtbot.waitUntil`` (no sleeps in the GUI thread).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

TIMEOUT_MS = 20_000


@pytest.fixture
def notifications(monkeypatch):
    from napari_any2reg.widgets import _base

    return capture_notifications(monkeypatch, _base)


@pytest.fixture
def dock(viewer, qtbot):
    from qtpy.QtWidgets import QVBoxLayout

    from napari_any2reg.widgets._base import WorkerDock

    class Dock(WorkerDock):
        def __init__(self, viewer):
            super().__init__(viewer)
            self.make_progress_controls()
            self.running_states = []
            layout = QVBoxLayout(self)
            layout.addWidget(self.progress_bar)
            layout.addWidget(self.status_label)
            layout.addWidget(self.cancel_button)

        def on_running_changed(self, running):
            self.running_states.append(running)

    w = Dock(viewer)
    viewer.window.add_dock_widget(w, name="base test")
    yield w
    w.cancel_all()
    qtbot.waitUntil(lambda: not w.busy(), timeout=TIMEOUT_MS)


def test_result_arrives_in_gui_thread_with_progress(dock, qtbot, viewer):
    threads, results = [], []

    def work(job):
        threads.append(threading.current_thread())
        for i in range(5):
            job.progress((i + 1) / 5, f"step {i + 1}")
        return np.ones((3, 8, 8), np.float32)

    def done(data):
        results.append(threading.current_thread())
        viewer.add_image(data, name="made")

    assert dock.start_job(work, description="Making", on_result=done)
    assert dock.is_running() and dock.cancel_button.isEnabled()
    assert not dock.start_job(work, description="Again")  # one main job at a time
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert threads[0] is not threading.main_thread()
    assert results == [threading.main_thread()]
    assert "made" in viewer.layers
    assert dock.worker is None and dock.activity is None and not dock.cancel_button.isEnabled()
    assert dock.progress_bar.value() == 100
    assert dock.running_states == [True, False]


def test_error_in_worker_is_a_message_and_the_viewer_lives(dock, qtbot, viewer, notifications):
    def work(job):
        raise ZeroDivisionError("the core failed here")

    added = []
    assert dock.start_job(work, description="Computing", on_result=added.append)
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert added == []
    assert "Computing failed: the core failed here" in dock.status_label.text()
    assert notifications["error"] and "the core failed here" in notifications["error"][-1]
    assert isinstance(dock.last_error, ZeroDivisionError)
    # the viewer and the dock still work: a new job runs
    viewer.add_image(np.zeros((2, 4, 4)), name="still alive")
    assert dock.start_job(lambda job: 7, description="Next", on_result=added.append)
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert added == [7]


def test_error_while_adding_the_result_is_a_message(dock, qtbot, notifications):
    def done(result):
        raise ValueError("cannot add that layer")

    dock.start_job(lambda job: 1, description="Adding", on_result=done)
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert "cannot add that layer" in dock.status_label.text()
    assert notifications["error"]


def test_cancel_stops_the_job_and_adds_nothing(dock, qtbot, notifications):
    started = threading.Event()
    added = []

    def work(job):
        started.set()
        for _ in range(2000):  # ~20 s unless cancelled
            job.check()
            job.cancel.wait(0.01)
        return "finished"

    dock.start_job(work, description="Long job", on_result=added.append)
    qtbot.waitUntil(started.is_set, timeout=TIMEOUT_MS)
    dock.cancel()
    assert dock.status_label.text() == "Cancelling…" and not dock.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not dock.busy(), timeout=5_000)
    assert added == []
    assert "cancelled" in dock.status_label.text()
    assert notifications["info"] and not notifications["error"]


def test_core_cancellation_counts_as_cancel(dock, qtbot, notifications):
    from napari_any2reg.core.registration import RegistrationCancelled

    def work(job):
        raise RegistrationCancelled("stopped")

    dock.start_job(work, description="Registering")
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert "cancelled" in dock.status_label.text() and not notifications["error"]


def test_tasks_run_beside_the_main_job(dock, qtbot):
    gate = threading.Event()
    results = []
    dock.start_job(lambda job: gate.wait(10) and "main", description="Main", on_result=results.append)
    dock.start_job(lambda job: "task", description="Task", on_result=results.append, main=False)
    qtbot.waitUntil(lambda: "task" in results, timeout=TIMEOUT_MS)
    assert dock.is_running()
    gate.set()
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert results == ["task", "main"]


# ---------------------------------------------------------------------- picker
def test_layer_picker_keeps_choice_and_offers_none(viewer, qtbot):
    from napari.layers import Image

    from napari_any2reg.widgets._pickers import NONE_ITEM, LayerPicker

    picker = LayerPicker(viewer, lambda la: isinstance(la, Image) and la.ndim == 3, none=True)
    qtbot.addWidget(picker)
    a = viewer.add_image(np.zeros((2, 4, 4)), name="a")
    viewer.add_image(np.zeros((4, 4)), name="flat")
    b = viewer.add_image(np.zeros((2, 4, 4)), name="b")
    picker.refresh()
    assert [picker.itemText(i) for i in range(picker.count())] == [NONE_ITEM, "a", "b"]
    assert picker.layer() is None
    picker.set_layer("b")
    assert picker.layer() is b
    viewer.layers.remove(a)
    picker.refresh()
    assert picker.layer() is b
    picker.set_layer(NONE_ITEM)
    assert picker.layer() is None and picker.none_chosen
    with pytest.raises(ValueError):
        picker.set_layer("flat")


# ---------------------------------------------------------------------- RegisteredLayer
def _result(n=3, h=10, w=12, scores=True):
    from napari_any2reg.core.registration import RegistrationResult

    rng = np.random.default_rng(0)
    extras = {"correspondence": rng.random((n, h, w)).astype(np.float32)} if scores else {}
    return RegistrationResult(registered=rng.random((n, h, w)).astype(np.float32),
                              displacement=rng.normal(size=(n, 2, h, w)).astype(np.float32),
                              template=rng.random((h, w)).astype(np.float32), weights=np.ones(n, np.float32),
                              engine="groupwise", params={}, device="cpu", seconds=1.5,
                              loss_history={"loss": [1.0, 0.5]}, extras=extras)


def test_registered_layer_round_trip(viewer):
    from napari_any2reg.widgets._pickers import is_registered_layer
    from napari_any2reg.widgets._registered import NotRegisteredError, RegisteredLayer

    result = _result()
    source_meta = {"timings_ms": [100.0, 200.0, 300.0], "spacing_mm": [1.5, 2.0], "any2reg_kind": "molli",
                   "correspondence": np.zeros((3, 10, 12), np.float32)}
    reg = RegisteredLayer.from_result(result, "raw", source_meta)
    assert np.array_equal(reg.correspondence, result.extras["correspondence"])  # not the stale source map
    layer = viewer.add_layer(reg.to_layer(result.registered, name="raw registered"))
    assert is_registered_layer(layer)
    back = RegisteredLayer.from_layer(layer)
    assert np.array_equal(back.displacement, result.displacement) and back.displacement.dtype == np.float32
    assert np.array_equal(back.template, result.template)
    assert np.array_equal(back.correspondence, result.extras["correspondence"])
    assert back.source_layer == "raw" and back.summary == result.summary()
    assert back.timings_ms == [100.0, 200.0, 300.0] and back.spacing_mm() == (1.5, 2.0)
    assert back.base["any2reg_kind"] == "molli"
    again = RegisteredLayer.from_metadata(back.to_metadata())
    assert again.source_layer == back.source_layer and again.base == back.base
    assert np.array_equal(again.displacement, back.displacement)
    # the source is found in the viewer only when its shape matches
    assert back.source_in(viewer, layer) is None
    raw = viewer.add_image(np.zeros((3, 10, 12), np.float32), name="raw")
    assert back.source_in(viewer, layer) is raw

    plain = viewer.add_image(np.zeros((3, 10, 12), np.float32), name="plain")
    assert RegisteredLayer.of(plain) is None and not is_registered_layer(plain)
    with pytest.raises(NotRegisteredError, match="plain"):
        RegisteredLayer.from_layer(plain)
    bad = viewer.add_image(np.zeros((3, 10, 11), np.float32), name="bad", metadata=reg.to_metadata())
    with pytest.raises(NotRegisteredError, match="does not match"):
        RegisteredLayer.from_layer(bad)
    assert RegisteredLayer.is_result(bad) and not is_registered_layer(bad)


def test_jsonable_metadata_drops_the_registration_arrays():
    from napari_any2reg.widgets._layers import jsonable_metadata
    from napari_any2reg.widgets._registered import RegisteredLayer

    meta = RegisteredLayer.from_result(_result(), "raw", {"spacing_mm": [1.0, 1.0]}).to_metadata()
    kept = jsonable_metadata(meta)
    assert not {"displacement", "template", "correspondence"} & set(kept)
    assert kept["source_layer"] == "raw"


def test_frame_label_names_the_time_by_the_t1_model():
    """TI / TS from the kind's T1 model (``timing_name``); trigger time ``t`` for kinds without one."""
    from types import SimpleNamespace

    from napari_any2reg.core.mapping import T1_MODELS, model_for_kind
    from napari_any2reg.widgets._dock import frame_label_text, timing_label

    assert T1_MODELS[model_for_kind("sasha")].timing_name == "saturation_times_ms"
    assert [timing_label(kind) for kind in ("molli", "stone", "ir", "sasha", "cine", "perfusion", "unknown", None)] == \
        ["TI", "TI", "TI", "TS", "t", "t", "t", "t"]
    layer = SimpleNamespace(name="s", data=np.zeros((3, 8, 8)), metadata={"any2reg_kind": "sasha", "timings_ms": [np.inf, 300.0, 600.0]})
    assert frame_label_text(layer, 1) == "s: frame 1 / 2 · TS 300 ms"
    assert frame_label_text(layer, 0) == "s: frame 0 / 2 · TS ∞ (no preparation)"
    layer.metadata = {"kind": "cine", "timings_ms": [0.0, 40.0, 80.0]}
    assert frame_label_text(layer, 2) == "s: frame 2 / 2 · t 80 ms"
    layer.metadata = {}
    assert frame_label_text(layer, 2) == "s: frame 2 / 2"


def test_run_in_turns_runs_each_step_in_its_own_event_loop_turn(dock, qtbot, notifications):
    """A result put on screen in steps (a layer, then its colour bar): in order, one step per
    event-loop turn (a timer fires between two steps), busy until the last one."""
    from qtpy.QtCore import QTimer

    order, ticks = [], []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(len(order)))
    timer.start(1)
    dock.run_in_turns([lambda i=i: order.append(i) for i in range(3)])
    assert dock.busy() and order == []  # nothing runs inside the call
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    timer.stop()
    assert order == [0, 1, 2]
    assert {1, 2} <= set(ticks), ticks  # the event loop ran between the steps
    assert notifications["error"] == []


def test_run_in_turns_reports_a_failing_step_and_skips_the_rest(dock, qtbot, notifications):
    order = []

    def fail():
        raise ValueError("layer refused")

    dock.run_in_turns([lambda: order.append("a"), fail, lambda: order.append("c")], error_prefix="Showing the map failed")
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)
    assert order == ["a"]
    assert "Showing the map failed: layer refused" in dock.status_label.text()
    assert len(notifications["error"]) == 1
