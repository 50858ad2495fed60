"""napari layer: the "T1 mapping" widget in a real viewer (raw + registered → maps, ROI table, survival).

Like ``test_widgets.py``: small (64x64) phantoms, and every test waits for the worker it started.
The registered layer is made once per module with the core API (groupwise engine), then added
with the same metadata the Registration widget gives it.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

PLUGIN = "napari-any2reg"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def registered_phantom():
    import torch

    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.registration import register

    torch.manual_seed(0)
    phantom = make_phantom("molli", seed=0, shape=(64, 64), spacing_mm=(2.25, 2.25), motion_mm=10)
    result = register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=0.5)
    return phantom, result


@pytest.fixture
def notifications(monkeypatch):
    from napari_any2reg.widgets import mapping

    return capture_notifications(monkeypatch, mapping)


@pytest.fixture
def widget(mapping_dock):
    return mapping_dock


def wait_done(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None and w.run_button.isEnabled(), timeout=TIMEOUT_MS)


def add_layers(viewer, registered_phantom):
    from napari_any2reg.widgets._layers import sequence_to_layer_data
    from napari_any2reg.widgets._registered import RegisteredLayer

    phantom, result = registered_phantom
    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name="molli")
    raw = viewer.add_image(data, **kwargs)
    meta = RegisteredLayer.from_result(result, raw.name, raw.metadata).to_metadata()
    registered = viewer.add_image(result.registered.copy(), name="molli registered", scale=raw.scale, metadata=meta)
    return raw, registered


# ---------------------------------------------------------------------- the whole flow
def test_fit_raw_and_registered_with_labels_roi(viewer, widget, qtbot, notifications, registered_phantom):
    phantom, _ = registered_phantom
    raw, registered = add_layers(viewer, registered_phantom)
    labels = viewer.add_labels(phantom.common_labels.astype(np.int32), name="truth labels", scale=raw.scale[-2:])
    raw_before = raw.data.copy()
    meta_before = copy.deepcopy({k: v for k, v in raw.metadata.items()})

    # inputs pre-selected from the layers and their metadata
    assert widget.selected_layer("before") == raw
    assert widget.selected_layer("after") == registered
    assert widget.model() == "molli"
    np.testing.assert_allclose(widget.timings(), phantom.sequence.timings_ms)
    assert widget.timings_label.text().startswith("Inversion")
    widget.set_roi_layer(labels)
    assert widget.roi_layer() == labels

    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    qtbot.mouseClick(widget.run_button, _left())
    assert widget.worker is not None and not widget.run_button.isEnabled()
    assert widget.cancel_button.isEnabled() and not widget.raw_combo.isEnabled()
    wait_done(qtbot, widget)
    assert notifications["error"] == [], notifications
    outcome = widget.last_result
    assert outcome is not None and set(outcome.results) == {"before", "after"}

    h, w = raw.data.shape[1:]
    dy, dx = raw.scale[-2:]
    for source in (raw, registered):
        for suffix, colormap in ((" T1", "turbo"), (" R²", "viridis"), (" T1 SD", "magma")):
            layer = viewer.layers[f"{source.name}{suffix}"]
            assert layer.data.shape == (h, w) and layer.data.dtype == np.float32
            np.testing.assert_allclose(layer.scale, (dy, dx))
            assert layer.colormap.name == colormap
            assert layer.metadata["source_layer"] == source.name
    t1_raw, t1_reg = viewer.layers["molli T1"], viewer.layers["molli registered T1"]
    assert t1_raw.visible and not viewer.layers["molli R²"].visible
    assert tuple(t1_raw.contrast_limits) == (0.0, 2000.0)  # native T1 at 1.5 T
    assert t1_raw.metadata["t1_contrast"] == "native"
    # registered maps side by side: one image width (plus a gap) to the right
    np.testing.assert_allclose(t1_reg.translate[-1] - t1_raw.translate[-1], w * dx * 1.05)
    np.testing.assert_allclose(t1_reg.translate[-2], t1_raw.translate[-2])
    # linked display: changing one map's limits changes the other's
    t1_raw.contrast_limits = (100.0, 1900.0)
    assert tuple(t1_reg.contrast_limits) == (100.0, 1900.0)

    # ROI statistics: registration improves the myocardium (less blood / fat mixed in, better fits)
    stats = {role: {row["label"]: row for row in rows} for role, rows in outcome.statistics.items()}
    assert set(stats["before"]) == set(stats["after"]) == {1, 2, 3}
    myo_before, myo_after = stats["before"][2], stats["after"][2]
    assert myo_after["name"] == "LV myocardium" and myo_after["n_pixels"] == int((phantom.common_labels == 2).sum())
    assert myo_after["t1_sd_ms"] < myo_before["t1_sd_ms"], (myo_before, myo_after)
    assert abs(myo_after["t1_mean_ms"] - 1000.0) < 50.0
    assert myo_after["r2_above_fraction"] >= myo_before["r2_above_fraction"]
    assert widget.stats_table.rowCount() == 6
    assert widget.stats_table.item(0, 0).text().startswith("before")
    assert "±" in widget.stats_table.item(1, 3).text()

    # survival curves: one per ROI label and role, before dashed, after solid
    thresholds, fraction_after = outcome.survival["after"][2]
    _, fraction_before = outcome.survival["before"][2]
    assert thresholds[0] == pytest.approx(0.9) and thresholds[-1] == pytest.approx(1.0)
    assert fraction_after.sum() > fraction_before.sum()
    lines = widget.figure.axes[0].get_lines()
    assert len(lines) == 6
    assert sorted({line.get_linestyle() for line in lines}) == ["-", "--"]
    assert "Done: molli" in widget.status_label.text()

    # the source layers are untouched
    assert raw.data.tobytes() == raw_before.tobytes()
    assert raw.metadata.keys() == meta_before.keys()

    # a second fit updates the same layers instead of adding new ones
    n_layers = len(viewer.layers)
    assert widget.run()
    wait_done(qtbot, widget)
    assert len(viewer.layers) == n_layers and notifications["error"] == []


def test_shapes_roi_and_raw_only(viewer, widget, qtbot, notifications, registered_phantom):
    raw, _ = add_layers(viewer, registered_phantom)
    widget.select_layers(before=raw, after=None)
    assert widget.selected_layer("after") is None
    dy, dx = raw.scale[-2:]
    # a rectangle over rows 20..30, columns 10..25, drawn in world (mm) coordinates
    rectangle = np.array([[20, 10], [20, 25], [30, 25], [30, 10]], float) * [dy, dx]
    shapes = viewer.add_shapes([rectangle], shape_type="rectangle", name="roi")
    widget.set_roi_layer(shapes)
    roi = widget.roi_labels(raw.data.shape[1:], raw)
    assert roi.shape == raw.data.shape[1:] and set(np.unique(roi)) == {0, 1}
    ys, xs = np.nonzero(roi)
    assert ys.min() >= 19 and ys.max() <= 31 and xs.min() >= 9 and xs.max() <= 26

    assert widget.run()
    wait_done(qtbot, widget)
    assert notifications["error"] == []
    outcome = widget.last_result
    assert set(outcome.results) == {"before"}
    (row,) = outcome.statistics["before"]
    assert row["name"] == "LV blood pool" or row["label"] == 1
    assert row["n_pixels"] == int(roi.sum())
    assert len(widget.figure.axes[0].get_lines()) == 1
    assert "molli registered T1" not in viewer.layers
    t1 = viewer.layers["molli T1"]
    h = raw.data.shape[-2]
    # nothing to put beside; below the sequence, never covering its frames
    np.testing.assert_allclose(t1.translate, raw.translate[-2:] + [h * raw.scale[-2] * 1.05, 0.0])


def test_review_overlays_are_never_offered_as_roi(viewer, widget, qtbot, notifications, registered_phantom):
    """Issue 23 item 3: the Review's deformation grid (a Shapes layer of hundreds of lines) is not
    an ROI; a Shapes ROI the user draws is picked and rasterised in the fit's worker."""
    from conftest import plugin_dock

    from napari_any2reg.widgets._mapping_helpers import ShapesROI

    raw, registered = add_layers(viewer, registered_phantom)
    review = plugin_dock(viewer, "Review")
    review.grid_button.click()
    qtbot.waitUntil(lambda: f"{registered.name} grid" in viewer.layers and not review.busy(), timeout=TIMEOUT_MS)
    grid = viewer.layers[f"{registered.name} grid"]
    assert len(grid.data) > 50
    assert [widget.roi_combo.itemText(i) for i in range(widget.roi_combo.count())] == ["(none)"]
    assert widget.roi_layer() is None
    widget.run_button.click()
    wait_done(qtbot, widget)
    assert notifications["error"] == []
    assert [row["name"] for row in widget.last_result.statistics["before"]] == ["body (pixels with signal)"]

    dy, dx = raw.scale[-2:]
    rectangle = np.array([[20, 10], [20, 25], [30, 25], [30, 10]], float) * [dy, dx]
    shapes = viewer.add_shapes([rectangle], shape_type="rectangle", name="my roi")
    assert widget.roi_layer() == shapes  # the only ROI the user made is picked
    snapshot = widget.roi_input(raw.data.shape[1:], raw)
    assert isinstance(snapshot, ShapesROI)  # the GUI thread copies vertices; the worker rasterises
    labels = snapshot.rasterise()
    ys, xs = np.nonzero(labels)
    assert ys.min() >= 19 and ys.max() <= 31 and xs.min() >= 9 and xs.max() <= 26
    widget.run_button.click()
    wait_done(qtbot, widget)
    rows = {row["label"]: row for row in widget.last_result.statistics["after"]}
    assert set(rows) == {1} and rows[1]["n_pixels"] == int((labels == 1).sum())
    assert notifications["error"] == []
    qtbot.waitUntil(lambda: not review.busy(), timeout=TIMEOUT_MS)


def test_without_roi_the_table_summarises_the_body(viewer, widget, qtbot, notifications, registered_phantom):
    add_layers(viewer, registered_phantom)
    assert widget.roi_layer() is None
    assert widget.run()
    wait_done(qtbot, widget)
    assert notifications["error"] == []
    assert widget.stats_table.rowCount() == 2
    assert widget.stats_table.item(0, 1).text() == "body (pixels with signal)"  # not the air around it
    assert widget.last_result.survival == {"before": {}, "after": {}}


# ---------------------------------------------------------------------- inputs and errors
def test_model_and_timings_follow_the_layer_metadata(viewer, widget):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    for kind, model, label in (("stone", "stone", "Inversion"), ("sasha", "sasha", "Saturation")):
        data, kwargs, _ = sequence_to_layer_data(make_phantom(kind, seed=1, shape=(32, 32)).sequence, name=kind)
        layer = viewer.add_image(data, **kwargs)
        widget.select_layers(before=layer)
        assert widget.model() == model
        assert widget.timings_label.text().startswith(label)
        assert widget.timings_edit.text().startswith("inf, ")  # the non-prepared frame
    # edited timings survive unrelated layer events
    widget.timings_edit.setText("1, 2, 3")
    viewer.add_labels(np.zeros((32, 32), np.int32), name="empty")
    assert widget.timings_edit.text() == "1, 2, 3"
    cine, kwargs, _ = sequence_to_layer_data(make_phantom("cine", seed=0, shape=(32, 32), n_frames=5).sequence, name="cine")
    widget.select_layers(before=viewer.add_image(cine, **kwargs))
    assert "no T1 model" in widget.status_label.text()


def test_errors_are_reported_and_add_nothing(viewer, widget, qtbot, notifications, registered_phantom):
    assert not widget.run_button.isEnabled()
    assert not widget.run()
    assert notifications["error"] and "choose a raw" in notifications["error"][-1]

    raw, _ = add_layers(viewer, registered_phantom)
    n_layers = len(viewer.layers)
    widget.timings_edit.setText("100, 180, 1100")
    assert not widget.run()
    assert "3 times given" in notifications["error"][-1] and "8 frames" in notifications["error"][-1]
    widget.timings_edit.setText("100, abc")
    assert not widget.run()
    assert "'abc'" in notifications["error"][-1]
    widget.timings_edit.setText(", ".join(str(t) for t in raw.metadata["timings_ms"]))
    widget.set_roi_layer(viewer.add_labels(np.zeros((10, 10), np.int32), name="small"))
    assert not widget.run()
    assert "(10, 10)" in notifications["error"][-1]
    assert len(viewer.layers) == n_layers + 1  # only the labels layer we added
    assert widget.worker is None and widget.run_button.isEnabled()


def test_worker_exception_is_reported_and_ui_recovers(viewer, widget, qtbot, notifications, registered_phantom, monkeypatch):
    from napari_any2reg.widgets import mapping

    add_layers(viewer, registered_phantom)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated fit failure")

    monkeypatch.setattr(mapping, "fit_t1", broken)
    n_layers = len(viewer.layers)
    assert widget.run()
    wait_done(qtbot, widget)
    assert notifications["error"] and "simulated fit failure" in notifications["error"][-1]
    assert len(viewer.layers) == n_layers and widget.last_result is None
    assert widget.raw_combo.isEnabled() and not widget.cancel_button.isEnabled()


def test_cancel_stops_a_fit(viewer, widget, qtbot, notifications, registered_phantom, monkeypatch):
    from napari_any2reg.core.mapping import FitCancelled
    from napari_any2reg.widgets import mapping

    add_layers(viewer, registered_phantom)
    started = threading.Event()

    def slow_fit(*args, cancel=None, **kwargs):  # stands in for a long fit that checks the flag
        started.set()
        if not cancel.wait(30):
            raise AssertionError("cancel was never set")
        raise FitCancelled("T1 fit cancelled by the user")

    monkeypatch.setattr(mapping, "fit_t1", slow_fit)
    n_layers = len(viewer.layers)
    assert widget.run()
    assert started.wait(10)
    qtbot.mouseClick(widget.cancel_button, _left())
    wait_done(qtbot, widget)
    assert notifications["info"] == ["T1 fit cancelled."]
    assert notifications["error"] == []
    assert "cancelled" in widget.status_label.text()
    assert len(viewer.layers) == n_layers


def test_display_settings_native_and_post_contrast():
    from napari_any2reg.widgets.mapping import parse_timings, t1_display_settings

    good = np.ones((4, 4))
    native = t1_display_settings(np.full((4, 4), 1000.0), good)
    post = t1_display_settings(np.full((4, 4), 450.0), good)
    assert native["contrast"] == "native" and native["contrast_limits"] == (0.0, 2000.0)
    assert post["contrast"] == "post" and post["contrast_limits"] == (0.0, 1000.0)
    assert t1_display_settings(np.full((4, 4), 450.0), good, {"contrast": "native", "field_strength": 3.0})["contrast_limits"] == (0.0, 2500.0)
    assert native["colormap"] == "turbo"
    assert parse_timings("inf; 100 200,300") == [np.inf, 100.0, 200.0, 300.0]


def test_mapping_is_a_plugin_dock_widget(viewer):
    from napari_any2reg.widgets.mapping import MappingWidget

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "T1 mapping")
    assert isinstance(widget, MappingWidget)
    assert widget.raw_combo.count() == 1 and not widget.run_button.isEnabled()


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_maps_masked_below_the_sequence_with_readable_sd(viewer, widget, qtbot, notifications, registered_phantom):
    """Issue 11: the only ROI layer is picked; maps are masked to the signal, lie below their sequence
    (never covering it), carry mm units, and the SD map's contrast comes from well-fitted pixels."""
    from napari_any2reg.widgets.mapping import signal_mask

    phantom, _ = registered_phantom
    raw, registered = add_layers(viewer, registered_phantom)
    roi = viewer.add_labels(phantom.common_labels.astype(np.int32), name="roi", scale=raw.scale[-2:])
    assert widget.roi_layer() == roi
    assert widget.run()
    wait_done(qtbot, widget)
    assert notifications["error"] == []
    t1, sd = viewer.layers["molli T1"], viewer.layers["molli T1 SD"]
    fit = widget.last_result.results["before"]
    np.testing.assert_array_equal(np.isnan(t1.data), ~signal_mask(raw.data) | np.isnan(fit.t1_ms))
    assert np.isfinite(t1.data[phantom.common_labels == 2]).mean() > 0.9
    h, dy = raw.data.shape[-2], raw.scale[-2]
    assert t1.translate[-2] >= raw.translate[-2] + h * dy  # below the frames
    assert t1.axis_labels == ("y", "x") and str(t1.units[0]) == "millimeter"
    assert 0 < sd.contrast_limits[1] <= 500.0  # not 0-19 468 ms
    assert t1.colorbar.visible
