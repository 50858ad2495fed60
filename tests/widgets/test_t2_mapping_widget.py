"""napari layer: the Mapping dock fits T2 and T2* maps (issue 26 §3) in a real viewer.

The dock is added as the Plugins menu does (``conftest.plugin_dock``) and driven by its real
buttons; the inputs are the t2prep and mge phantoms (64x64) with known T2 / T2* maps.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import capture_notifications
from scipy import ndimage

pytestmark = pytest.mark.napari

TIMEOUT_MS = 60_000
STILL = dict(shape=(64, 64), spacing_mm=(4.0, 4.0), motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0)


@pytest.fixture
def notifications(monkeypatch):
    from napari_any2reg.widgets import mapping

    return capture_notifications(monkeypatch, mapping)


@pytest.fixture
def widget(mapping_dock):
    return mapping_dock


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _add(viewer, kind, name):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    phantom = make_phantom(kind, seed=5, **STILL)
    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name=name)
    return phantom, viewer.add_image(data, **kwargs)


def test_dock_fits_t2_and_t2star_maps(viewer, widget, qtbot, notifications):
    phantom, layer = _add(viewer, "t2prep", "t2prep")
    labels = viewer.add_labels(phantom.common_labels.astype(np.int32), name="labels", scale=layer.scale[-2:])

    # the model and the echo times follow the layer; the noise floor is a decay-model option
    assert widget.selected_layer("before") == layer
    assert widget.model() == "t2"
    assert widget.timings_label.text() == "Echo times (ms)"
    np.testing.assert_allclose(widget.timings(), [0.0, 25.0, 40.0, 55.0])
    assert widget.noise_floor_spin.isEnabled()
    widget.set_roi_layer(labels)

    qtbot.mouseClick(widget.run_button, _left())
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.isEnabled(), timeout=TIMEOUT_MS)
    assert notifications["error"] == [], notifications
    outcome = widget.last_result
    assert outcome.model == "t2" and outcome.results["before"].quantity == "T2"
    t2 = viewer.layers["t2prep T2"]
    assert t2.visible and t2.data.shape == (64, 64) and tuple(t2.contrast_limits) == (0.0, 120.0)
    assert "t2prep T2 SD" in viewer.layers and "t2prep R²" in viewer.layers
    assert "t2prep T1" not in viewer.layers
    myo = ndimage.binary_erosion(phantom.common_labels == 2)
    assert abs(np.nanmedian(t2.data[myo]) / 50.0 - 1.0) < 0.05  # the known myocardial T2
    stats = {row["label"]: row for row in outcome.statistics["before"]}
    # the whole label, edge pixels with blood (T2 250 ms) partial volume included
    assert abs(stats[2]["t1_median_ms"] / 50.0 - 1.0) < 0.1 and stats[2]["t1_mean_ms"] > 45.0
    assert widget.stats_table.horizontalHeaderItem(3).text() == "T2 mean ± SD (ms)"
    assert "median T2" in widget.status_label.text()

    # a T1 model has no noise floor
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("molli"))
    assert not widget.noise_floor_spin.isEnabled() and widget.noise_floor() is None

    # the multi-gradient-echo series: T2* with echoes truncated at a noise floor
    phantom, mge = _add(viewer, "mge", "mge")
    widget.select_layers(before=mge, after=None)
    assert widget.model() == "t2star" and widget.noise_floor_spin.isEnabled()
    widget.noise_floor_spin.setValue(0.05)
    assert widget.noise_floor() == pytest.approx(0.05)
    qtbot.mouseClick(widget.run_button, _left())
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.isEnabled(), timeout=TIMEOUT_MS)
    assert notifications["error"] == [], notifications
    result = widget.last_result.results["before"]
    assert result.quantity == "T2*" and result.noise_floor == pytest.approx(0.05)
    assert result.n_echoes_used is not None and result.n_echoes_used.min() >= 3
    t2star = viewer.layers["mge T2*"]
    assert "mge T2* SD" in viewer.layers
    myo = ndimage.binary_erosion(phantom.common_labels == 2)
    assert abs(np.nanmedian(t2star.data[myo]) / 35.0 - 1.0) < 0.05  # the known myocardial T2*
    assert t2star.metadata["any2reg_fit"]["quantity"] == "T2*"


def test_infinite_echo_time_is_reported_and_adds_nothing(viewer, widget, qtbot, notifications):
    _, layer = _add(viewer, "t2prep", "t2prep")
    n_layers = len(viewer.layers)
    widget.timings_edit.setText("0, 25, 40, inf")
    qtbot.mouseClick(widget.run_button, _left())
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.isEnabled(), timeout=TIMEOUT_MS)
    assert any("echo times must be finite" in message for message in notifications["error"]), notifications
    assert len(viewer.layers) == n_layers
