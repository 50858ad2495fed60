"""The Apply registration dock in a real viewer: a registration's field applied to other layers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def registered_run():
    """A real groupwise registration of a small MOLLI phantom (shared by the tests here)."""
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.registration import register

    phantom = make_phantom("molli", seed=4, shape=(48, 48), spacing_mm=(6.0, 6.0))
    result = register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=0.2)
    return phantom, result


@pytest.fixture
def notes(monkeypatch):
    from napari_any2reg.widgets import apply

    return capture_notifications(monkeypatch, apply)


@pytest.fixture
def widget(viewer, qtbot):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Apply registration")
    yield w
    qtbot.waitUntil(lambda: not w.busy(), timeout=TIMEOUT_MS)


def add_run(viewer, registered_run):
    from napari_any2reg.widgets._layers import sequence_to_layer_data
    from napari_any2reg.widgets._registered import RegisteredLayer

    phantom, result = registered_run
    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name="molli")
    raw = viewer.add_image(data, **kwargs)
    reg = RegisteredLayer.from_result(result, raw.name, raw.metadata)
    translate = np.array(raw.translate, float) + [0.0, 0.0, 400.0]  # beside the raw frames
    registered = viewer.add_layer(reg.to_layer(result.registered.copy(), name="molli registered",
                                               scale=raw.scale, translate=translate))
    return raw, registered


def wait(qtbot, w):
    qtbot.waitUntil(lambda: not w.busy(), timeout=TIMEOUT_MS)


def test_own_field_on_its_source_gives_the_registered_layer(viewer, widget, qtbot, registered_run, notes):
    raw, registered = add_run(viewer, registered_run)
    # the newest registration is offered; registered layers are not targets
    assert widget.registration_combo.layer() == registered
    assert registered.name not in [widget.target_combo.itemText(i) for i in range(widget.target_combo.count())]
    widget.select(target=raw)
    assert widget.apply()
    wait(qtbot, widget)
    assert notes["error"] == [], notes
    out = viewer.layers["molli warped"]
    assert out == widget.last_layer
    np.testing.assert_allclose(out.data, registered.data, atol=1e-5)
    np.testing.assert_allclose(out.translate, registered.translate)  # it overlays the registered frames
    np.testing.assert_allclose(out.scale, registered.scale)
    assert raw.data is not out.data and "Added 'molli warped'" in widget.status_label.text()
    # the result is not offered as a target again
    assert "molli warped" not in [widget.target_combo.itemText(i) for i in range(widget.target_combo.count())]


def test_labels_nearest_and_points_follow_the_field(viewer, widget, qtbot, registered_run, notes):
    from napari_any2reg.core.landmarks import landmarks_to_common
    from napari_any2reg.core.spatial import warp_labels

    phantom, result = registered_run
    raw, registered = add_run(viewer, registered_run)
    labels = np.asarray(phantom.labels, dtype=np.int32) if getattr(phantom, "labels", None) is not None else \
        (raw.data > np.percentile(raw.data, 70)).astype(np.int32) * 2
    lab = viewer.add_labels(labels, name="myo", scale=raw.scale, translate=raw.translate)
    widget.select(target=lab)
    assert widget.apply()
    wait(qtbot, widget)
    warped = viewer.layers["myo warped"]
    assert warped.data.dtype == labels.dtype and set(np.unique(warped.data)) <= set(np.unique(labels))
    np.testing.assert_array_equal(warped.data, np.asarray(warp_labels(labels, result.displacement)).astype(labels.dtype))

    # landmarks clicked on the raw layer (world coordinates) go to the common grid
    pixels = np.array([[0, 20.0, 22.0], [3, 25.0, 18.0], [5, 24.0, 30.0]])
    points = viewer.add_points(pixels * raw.scale + raw.translate, ndim=3, name="marks",
                               features={"name": ["a", "b", "c"]})
    widget.select(target=points)
    assert widget.apply()
    wait(qtbot, widget)
    moved = viewer.layers["marks warped"]
    from napari_any2reg.widgets._points import points_to_table

    expected = landmarks_to_common(points_to_table(points, raw), result.displacement)
    np.testing.assert_allclose(moved.data[:, 1:], expected.points, atol=1e-4)
    assert list(moved.features["name"]) == ["a", "b", "c"]
    np.testing.assert_allclose(moved.translate, registered.translate)
    assert notes["error"] == [], notes


def test_field_file_and_mismatch_is_a_message(viewer, widget, qtbot, registered_run, tmp_path, notes):
    from napari_any2reg.io.fields import save_displacement

    phantom, result = registered_run
    raw, _ = add_run(viewer, registered_run)
    path = save_displacement(tmp_path / "displacement.npy", result.displacement, (6.0, 6.0))
    widget.select(registration="(none)", field_file=path, target=raw)
    assert widget.apply()
    wait(qtbot, widget)
    np.testing.assert_allclose(viewer.layers["molli warped"].data, result.registered, atol=1e-5)

    other = viewer.add_image(np.zeros((3, 48, 40), np.float32), name="other grid")
    widget.select(target=other)
    assert widget.apply()  # the shape check happens in the worker: an error message, no layer
    wait(qtbot, widget)
    assert notes["error"] and "registration's field" in notes["error"][-1]
    assert "other grid warped" not in viewer.layers
    # points on the field's own pixels (no raw layer chosen: the file case)
    from napari_any2reg.core.landmarks import LandmarkTable, landmarks_to_common

    pixels = np.array([[1, 20.0, 22.0], [4, 26.0, 19.0]])
    marks = viewer.add_points(pixels, ndim=3, name="pixel marks", features={"name": ["a", "b"]})
    widget.select(target=marks)
    assert widget.apply()
    wait(qtbot, widget)
    expected = landmarks_to_common(LandmarkTable(pixels[:, 0].astype(int), ["a", "b"], pixels[:, 1:]),
                                   result.displacement)
    np.testing.assert_allclose(viewer.layers["pixel marks warped"].data[:, 1:], expected.points, atol=1e-4)

    errors_before = len(notes["error"])
    widget.select(field_file=tmp_path / "missing.npy", target=raw)
    assert widget.apply()  # the file is read in the worker: its error comes back as a message
    wait(qtbot, widget)
    assert len(notes["error"]) == errors_before + 1 and "missing.npy" in notes["error"][-1]
    widget.select(field_file="")
    assert not widget.apply() and "choose a registered layer or a displacement file" in notes["error"][-1]
    assert viewer.layers["molli"].data.shape == (phantom.sequence.n_frames, 48, 48)  # the viewer lives
