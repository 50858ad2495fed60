"""napari layer: the Landmarks widget in a real viewer (click on frames, TRE, CSV, propagation, Dice).

64x64 phantom; points are "clicked" with ``layer.add`` at the frame the widget put on screen,
exactly what napari's add mode does on a mouse click. Two registrations are used: the phantom's
true field (exact expectations) and a quick groupwise run (improvement expectations).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

SPACING = (4.5, 4.5)


@pytest.fixture(scope="module")
def phantom_run():
    import torch

    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.registration import register

    torch.manual_seed(0)
    phantom = make_phantom("molli", seed=0, shape=(64, 64), spacing_mm=SPACING, motion_mm=10)
    result = register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=1.0)
    return phantom, result


@pytest.fixture
def notes(monkeypatch):
    from napari_any2reg.widgets import landmarks

    return capture_notifications(monkeypatch, landmarks)


@pytest.fixture
def widget(viewer):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Landmarks")
    return w


def done(qtbot, widget, started):
    """Wait for the worker a call started; returns what it started."""
    assert started
    qtbot.waitUntil(lambda: not widget.busy(), timeout=60_000)
    return started


def add_raw(viewer, phantom):
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name="molli")
    return viewer.add_image(data, **kwargs)


def add_registered(viewer, raw, result, name="molli registered", displacement=None):
    from napari_any2reg.widgets._registered import RegisteredLayer

    meta = RegisteredLayer.from_result(result, raw.name, raw.metadata).to_metadata()
    if displacement is not None:
        meta["displacement"] = np.asarray(displacement, np.float32)
    return viewer.add_image(result.registered.copy(), name=name, scale=raw.scale, metadata=meta)


# ---------------------------------------------------------------------- clicking
def test_clicking_steps_through_landmarks_and_frames(viewer, widget, qtbot, phantom_run, notes):
    phantom, _ = phantom_run
    raw = add_raw(viewer, phantom)
    raw_before = raw.data.copy()
    assert widget.image_layer() is raw and widget.points_layer() is None
    assert widget.landmark_names() == ["rv_insertion_anterior", "rv_insertion_inferior"]
    assert "Press 'New'" in widget.status_label.text()

    points = widget.new_points_layer()
    assert points.name == "molli landmarks" and points.ndim == 3 and points.mode == "add"
    np.testing.assert_allclose(points.scale, raw.scale)
    assert widget.points_layer() == points and viewer.layers.selection.active == points
    assert widget.current_frame() == 0 and widget.current_landmark() == "rv_insertion_anterior"

    # click both RV insertion points on frames 0..2: the widget walks landmark, landmark, next frame
    for frame in range(3):
        for name in ("rv_insertion_anterior", "rv_insertion_inferior"):
            assert (widget.current_frame(), widget.current_landmark()) == (frame, name)
            y, x = phantom.landmarks[name][frame]
            points.add([widget.current_frame(), y, x])
    assert widget.current_frame() == 3 and widget.current_landmark() == "rv_insertion_anterior"
    assert viewer.dims.current_step[0] == 3
    assert points.features["name"].tolist() == ["rv_insertion_anterior", "rv_insertion_inferior"] * 3
    assert "6 of 16 placed" in widget.status_label.text()
    table = widget.table()
    for name in ("rv_insertion_anterior", "rv_insertion_inferior"):
        np.testing.assert_allclose(table.positions(8)[name][:3], phantom.landmarks[name][:3], atol=1e-5)

    # clicking a landmark again on a frame moves it (the earlier point goes)
    widget.set_current_landmark("rv_insertion_inferior")
    widget.go_to_frame(1)
    points.add([1, 30.0, 30.0])
    qtbot.waitUntil(lambda: len(points.data) == 6, timeout=5000)
    np.testing.assert_allclose(widget.table().positions(8)["rv_insertion_inferior"][1], [30.0, 30.0])
    assert (widget.current_frame(), widget.current_landmark()) == (3, "rv_insertion_anterior")  # next missing

    # a landmark of one's own, and the other stepping order: one landmark through the frames
    assert widget.add_landmark("lv centre") and widget.landmark_names()[-1] == "lv_centre"
    assert not widget.add_landmark("lv_centre")  # already there
    widget.order_combo.setCurrentIndex(widget.order_combo.findData("frames"))
    widget.set_current_landmark("lv_centre")
    widget.go_to_frame(0)
    for frame in range(3):
        assert (widget.current_frame(), widget.current_landmark()) == (frame, "lv_centre")
        points.add([frame, *phantom.landmarks["lv_centre"][frame]])
    assert widget.current_frame() == 3 and widget.current_landmark() == "lv_centre"
    assert widget.table().positions(8)["lv_centre"][:3] == pytest.approx(phantom.landmarks["lv_centre"][:3], abs=1e-5)

    # deleting a point (napari's own editing) updates the count
    widget.remove_landmark("lv_centre")
    assert "lv_centre" not in widget.landmark_names()
    points.selected_data = {0}
    points.remove_selected()
    assert "5 of 16 placed" in widget.status_label.text()
    assert notes["error"] == []
    assert raw.data.tobytes() == raw_before.tobytes()


def test_a_points_layer_without_landmark_names_is_explained_not_broken(viewer, widget, phantom_run, notes):
    """A Points layer the user made with napari's own button has no 'name' feature: choosing it
    tells the user to press 'New' or import a CSV, and stepping landmarks raises nothing."""
    phantom, _ = phantom_run
    add_raw(viewer, phantom)
    plain = viewer.add_points(np.zeros((0, 3)), name="my points")
    widget.select(points="my points")
    assert widget.points_layer().name == "my points"
    assert "has no 'name' feature" in widget.status_label.text() and "press 'New'" in widget.status_label.text()
    widget.set_current_landmark("rv_insertion_inferior")  # sets the next point's name where it can
    plain.add([0, 20.0, 20.0])
    assert len(plain.data) == 1 and list(plain.features.columns) == []
    with pytest.raises(ValueError, match="no 'name' feature"):
        widget.table()
    # a layer with names but no tag column gets the name default only
    named = viewer.add_points(np.zeros((0, 3)), name="named", features={"name": np.array([], dtype=object)})
    widget.select(points="named")
    widget.set_current_landmark("rv_insertion_anterior")
    named.add([0, 21.0, 22.0])
    assert named.features["name"].tolist() == ["rv_insertion_anterior"]
    assert "1 of 16 placed" in widget.status_label.text()
    assert notes["error"] == []


# ---------------------------------------------------------------------- TRE, common grid, CSV
def test_tre_table_common_grid_and_csv_round_trip(viewer, widget, qtbot, tmp_path, phantom_run, notes):
    from napari_any2reg.core.landmarks import LandmarkTable, landmarks_to_common, tre_before_after
    from napari_any2reg.io.landmarks import read_landmarks_csv, write_landmarks_csv

    phantom, result = phantom_run
    raw = add_raw(viewer, phantom)
    truth = LandmarkTable.from_positions(phantom.landmarks, SPACING)
    path = write_landmarks_csv(tmp_path / "clicks.csv", truth)
    assert widget.compute_tre() is False and "choose or create a Points layer" in notes["error"][-1]

    points = widget.import_csv(path)
    assert points is not None and points.name == "clicks" and widget.points_layer() == points
    assert "lv_centre" in widget.landmark_names() and notes["info"]
    assert widget.compute_tre() is False and "registered layer" in notes["error"][-1]

    registered = add_registered(viewer, raw, result)
    assert widget.registered_layer() == registered  # picked as the registration of the image
    started = widget.compute_tre()
    assert widget.busy() and not widget.tre_button.isEnabled()  # off the GUI thread, with a busy bar
    done(qtbot, widget, started)
    report = widget.last_tre
    assert widget.tre_button.isEnabled() and widget.progress_bar.value() == 100
    expected = tre_before_after(truth, result.displacement)
    assert report.after["overall"] == pytest.approx(expected.after["overall"], abs=1e-4)
    assert report.after["overall"] < 0.8 * report.before["overall"]
    assert widget.tre_table.rowCount() == 4
    assert widget.tre_table.item(3, 0).text() == "overall"
    assert float(widget.tre_table.item(3, 2).text()) == pytest.approx(report.before["overall"], abs=0.01)
    assert "TRE overall" in widget.status_label.text()

    done(qtbot, widget, widget.show_common_landmarks())
    common = viewer.layers["molli registered landmarks (common grid)"]
    assert common.name == "molli registered landmarks (common grid)"
    np.testing.assert_allclose(common.scale, registered.scale)
    mapped = landmarks_to_common(widget.table(), result.displacement)
    np.testing.assert_allclose(common.data[:, 1:], mapped.points, atol=1e-4)
    assert common.features["name"].tolist() == mapped.names.tolist()
    done(qtbot, widget, widget.show_common_landmarks())
    assert viewer.layers["molli registered landmarks (common grid)"] == common  # updated, not duplicated
    assert common not in widget.points_combo.layers  # outputs are not offered as the clicking layer

    out = widget.export_csv(tmp_path / "out.csv")
    back = read_landmarks_csv(out)
    assert back.spacing_mm == pytest.approx(SPACING)
    np.testing.assert_allclose(back.sorted().points, truth.sorted().points, atol=1e-6)
    assert widget.export_csv(tmp_path / "out.csv") is None and "already exists" in notes["error"][-1]
    assert widget.export_csv(tmp_path / "out.csv", overwrite=True) is not None

    n_layers = len(viewer.layers)
    (tmp_path / "bad.csv").write_text("frame,name,y\n0,a,1\n")
    assert widget.import_csv(tmp_path / "bad.csv") is None
    assert "missing column(s) x" in notes["error"][-1] and len(viewer.layers) == n_layers


def test_import_and_export_csv_buttons_round_trip(viewer, widget, qtbot, tmp_path, phantom_run, notes, monkeypatch):
    """Issue 23 item 2: the "Import CSV…" / "Export CSV…" buttons ask for a file and round-trip."""
    from qtpy.QtWidgets import QFileDialog

    from napari_any2reg.core.landmarks import LandmarkTable
    from napari_any2reg.io.landmarks import read_landmarks_csv, write_landmarks_csv

    phantom, _ = phantom_run
    add_raw(viewer, phantom)
    truth = LandmarkTable.from_positions(phantom.landmarks, SPACING)
    source = write_landmarks_csv(tmp_path / "clicked.csv", truth)
    asked: list[str] = []

    def answer(path):
        def dialog(parent, title, *args, **kwargs):
            asked.append(title)
            return str(path), "CSV (*.csv)"
        return dialog

    # a cancelled dialog changes nothing
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(answer("")))
    n_layers = len(viewer.layers)
    widget.import_button.click()
    assert len(viewer.layers) == n_layers and notes["error"] == []

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(answer(source)))
    widget.import_button.click()
    points = viewer.layers["clicked"]
    assert widget.points_layer() == points and len(points.data) == len(truth)
    assert set(truth.names) <= set(widget.landmark_names())

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(answer(tmp_path / "out.csv")))
    widget.export_button.click()
    back = read_landmarks_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(back.sorted().points, truth.sorted().points, atol=1e-6)
    assert back.sorted().names.tolist() == truth.sorted().names.tolist()
    assert "Wrote" in widget.status_label.text()
    widget.export_button.click()  # the dialog asked before replacing: the file is overwritten
    assert asked == ["Import landmarks", "Import landmarks", "Export landmarks", "Export landmarks"]
    assert notes["error"] == []


# ---------------------------------------------------------------------- propagation and Dice
def test_propagate_points_and_mask_then_all_pair_dice(viewer, widget, qtbot, phantom_run, notes):
    from napari_any2reg.core.landmarks import LandmarkTable, propagate_labels
    from napari_any2reg.core.metrics import dice

    phantom, result = phantom_run
    raw = add_raw(viewer, phantom)
    truth_layer = add_registered(viewer, raw, result, name="molli truth", displacement=phantom.displacement)
    widget.select(registered=truth_layer)
    points = widget.new_points_layer()
    k = 3
    widget.go_to_frame(k)
    for name in ("rv_insertion_anterior", "rv_insertion_inferior"):
        points.add([k, *phantom.landmarks[name][k]])
    assert widget.current_frame() == k + 1  # stepped on after the last landmark of frame 3
    widget.go_to_frame(k)

    done(qtbot, widget, widget.propagate_points())
    propagated = viewer.layers["molli landmarks (propagated)"]
    assert propagated.name == "molli landmarks (propagated)" and len(propagated.data) == 16
    table = LandmarkTable(np.round(propagated.data[:, 0]).astype(int), propagated.features["name"], propagated.data[:, 1:])
    for name in ("rv_insertion_anterior", "rv_insertion_inferior"):
        assert np.abs(table.positions(8)[name] - phantom.landmarks[name]).max() < 0.1
    assert "check them frame by frame" in widget.status_label.text()

    # a mask painted on frame 3 (2-D Labels layer) carried to every frame
    painted = viewer.add_labels(phantom.labels[k].astype(np.int32), name="mask", scale=raw.scale[-2:])
    assert widget.labels_layer() == painted  # the only Labels layer is picked, not left on "(none)"
    done(qtbot, widget, widget.propagate_mask())
    stack_layer = viewer.layers["mask propagated"]
    assert stack_layer.name == "mask propagated" and stack_layer.data.shape == phantom.labels.shape
    np.testing.assert_array_equal(stack_layer.data[k], phantom.labels[k])
    np.testing.assert_array_equal(stack_layer.data, propagate_labels(phantom.labels[k], k, phantom.displacement))
    myocardium = np.mean([dice(stack_layer.data[i] == 2, phantom.labels[i] == 2) for i in range(8)])
    assert myocardium > 0.85
    done(qtbot, widget, widget.propagate_mask())
    assert viewer.layers["mask propagated"] == stack_layer  # updated in place
    np.testing.assert_array_equal(painted.data, phantom.labels[k])  # the painted layer is untouched

    # all-pair Dice of a segmentation of every frame, with the estimated registration
    estimated = add_registered(viewer, raw, result, name="molli registered")
    widget.select(registered=estimated)
    segmentation = viewer.add_labels(phantom.labels.astype(np.int32), name="segmentation", scale=raw.scale)
    widget.select(labels=segmentation)
    done(qtbot, widget, widget.compute_dice())
    report = widget.last_dice
    assert list(report.before) == [1, 2, 3]
    assert all(report.after[v] > report.before[v] for v in (1, 2, 3))
    assert widget.dice_table.rowCount() == 3 and widget.dice_table.item(1, 0).text() == "2: LV myocardium"

    widget.select(labels=painted)  # 2-D: no Dice
    assert widget.compute_dice() is False and "labels of every frame" in notes["error"][-1]
    empty = viewer.add_labels(np.zeros((64, 64), np.int32), name="empty")
    widget.select(labels=empty)
    assert widget.propagate_mask() is False and "empty on frame 3" in notes["error"][-1]
