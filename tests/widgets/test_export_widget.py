"""napari layer: the Export widget (and the landmarks CSV writer) in a real viewer.

64x64 phantom registered once per module with the groupwise engine; the layers are added the
way the Registration, T1 mapping and Landmarks panels make them. Every test waits for the
export worker it started.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

PLUGIN = "napari-any2reg"
TIMEOUT_MS = 60_000
SPACING = (4.5, 4.5)


@pytest.fixture(scope="module")
def phantom_run():
    import torch

    from napari_any2reg.core.mapping import fit_t1
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.registration import register

    torch.manual_seed(0)
    phantom = make_phantom("molli", seed=0, shape=(64, 64), spacing_mm=SPACING, motion_mm=10)
    result = register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=0.3)
    fits = {"molli": fit_t1(phantom.sequence, device="cpu"), "molli registered": fit_t1(result.registered_sequence(), device="cpu")}
    return phantom, result, fits


@pytest.fixture
def notes(monkeypatch):
    from napari_any2reg.widgets import export

    return capture_notifications(monkeypatch, export)


@pytest.fixture
def widget(viewer, qtbot):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Export")
    yield w
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)


def wait_done(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None and w.export_button.isEnabled(), timeout=TIMEOUT_MS)


def add_run(viewer, phantom_run, *, with_source=True, maps=True, points=True, labels=True):
    from napari_any2reg.widgets._layers import sequence_to_layer_data
    from napari_any2reg.widgets._registered import RegisteredLayer

    phantom, result, fits = phantom_run
    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name="molli")
    kwargs["metadata"]["source"] = "/scans/molli.tif"
    raw = viewer.add_image(data, **kwargs)
    meta = RegisteredLayer.from_result(result, raw.name, raw.metadata).to_metadata()
    registered = viewer.add_image(result.registered.copy(), name="molli registered", scale=raw.scale, metadata=meta)
    out = {"raw": raw, "registered": registered}
    if maps:  # what the T1 mapping panel adds
        for name, fit in fits.items():
            for suffix, array in ((" T1", fit.t1_ms), (" R²", fit.r_squared), (" T1 SD", fit.t1_sd_ms)):
                viewer.add_image(array, name=f"{name}{suffix}", scale=raw.scale[-2:], visible=False)
    if points:  # what the Landmarks panel makes
        names = list(phantom.landmarks)
        coords = [[f, *phantom.landmarks[n][f]] for f in range(8) for n in names]
        out["points"] = viewer.add_points(np.array(coords), ndim=3, name="molli landmarks", scale=raw.scale,
                                          features={"name": [n for _ in range(8) for n in names]})
    if labels:
        out["labels"] = viewer.add_labels(phantom.labels.astype(np.int32), name="segmentation", scale=raw.scale)
    if not with_source:
        viewer.layers.remove(raw)
    return out


def test_export_everything_from_the_viewer(viewer, widget, qtbot, tmp_path, phantom_run, notes):
    from napari_any2reg.io import read_map_tiff, read_sequence
    from napari_any2reg.io.landmarks import read_landmarks_csv

    phantom, result, fits = phantom_run
    layers = add_run(viewer, phantom_run)
    raw_before = layers["raw"].data.copy()
    assert widget.registered_layer() == layers["registered"] and widget.source_label.text() == "molli"
    widget.select(points=layers["points"], labels=layers["labels"])
    # a groupwise run has no displacement SD: that item alone is unavailable, and says why
    assert list(widget.missing_inputs()) == ["uncertainty"] and "network engines" in widget.missing_inputs()["uncertainty"]
    assert all(check.isEnabled() for item, check in widget.item_checks.items() if item != "uncertainty")
    folder = tmp_path / "export"
    widget.folder_edit.setText(str(folder))
    assert widget.export()
    assert widget.worker is not None and not widget.export_button.isEnabled()
    wait_done(qtbot, widget)
    assert notes["error"] == [], notes
    result_files = {p.name for p in widget.last_result.files}
    assert {"registered.tif", "registered.nii.gz", "displacement.npy", "jacobian.tif", "t1_raw.tif", "t1_registered.tif",
            "qc.json", "landmarks.csv", "tre.csv", "dice.csv", "report.png", "run.json"} <= result_files
    assert sorted(p.name for p in folder.iterdir()) == sorted(result_files)
    assert "TRE overall" in widget.status_label.text() and notes["info"]

    back = read_sequence(folder / "registered.tif")
    np.testing.assert_array_equal(back.frames, layers["registered"].data)
    np.testing.assert_array_equal(back.timings_ms, phantom.sequence.timings_ms)
    assert back.spacing_mm == pytest.approx(SPACING)
    np.testing.assert_array_equal(np.load(folder / "displacement.npy"), result.displacement)
    t1, _ = read_map_tiff(folder / "t1_registered.tif")
    np.testing.assert_array_equal(t1, fits["molli registered"].t1_ms)
    landmarks = read_landmarks_csv(folder / "landmarks.csv")
    np.testing.assert_allclose(landmarks.positions(8)["lv_centre"], phantom.landmarks["lv_centre"], atol=1e-5)
    record = json.loads((folder / "run.json").read_text())
    assert record["engine"] == "groupwise" and record["input"]["path"] == "/scans/molli.tif"
    assert record["input"]["name"] == "molli"
    dice = widget.last_result.dice
    assert all(dice.after[v] > dice.before[v] for v in (1, 2, 3))
    assert layers["raw"].data.tobytes() == raw_before.tobytes()

    # again: refused, nothing changed; with "Overwrite" ticked it goes through
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert widget.export()
    wait_done(qtbot, widget)
    assert "already exist" in notes["error"][-1] and isinstance(widget.last_error, FileExistsError)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    widget.overwrite_check.setChecked(True)
    widget.set_items(["jacobian", "record"])
    assert widget.export()
    wait_done(qtbot, widget)
    assert widget.last_result.items == ("jacobian", "record") and len(notes["error"]) == 1


def test_missing_inputs_disable_items(viewer, widget, qtbot, tmp_path, phantom_run, notes):
    assert not widget.export_button.isEnabled()
    layers = add_run(viewer, phantom_run, with_source=False, maps=False, points=False, labels=False)
    assert widget.registered_layer() == layers["registered"]
    missing = widget.missing_inputs()
    assert set(missing) == {"qc", "report", "maps", "maps_nifti", "landmarks", "dice", "uncertainty"}
    assert "not open" in widget.source_label.text()
    assert not widget.item_checks["qc"].isEnabled() and "unavailable" in widget.item_checks["qc"].toolTip()
    assert widget.chosen_items() == ["stack", "nifti", "displacement", "itk", "jacobian", "record"]
    assert not widget.export() and "choose an output folder" in notes["error"][-1]
    widget.folder_edit.setText(str(tmp_path / "o"))
    widget.set_items(["nifti"])
    assert widget.export()
    wait_done(qtbot, widget)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["registered.json", "registered.nii.gz"]
    with pytest.raises(ValueError, match="unknown export item"):
        widget.set_items(["tiff"])


def test_a_failed_export_writes_nothing(viewer, widget, qtbot, tmp_path, phantom_run, notes, monkeypatch):
    add_run(viewer, phantom_run, points=False, labels=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    widget.folder_edit.setText(str(blocker / "out"))
    assert widget.export()
    wait_done(qtbot, widget)
    assert "is a file" in notes["error"][-1] and "nothing was written" in notes["error"][-1]

    from napari_any2reg.io import map_input

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(map_input, "save_report", broken)
    folder = tmp_path / "out"
    widget.folder_edit.setText(str(folder))
    assert widget.export()
    wait_done(qtbot, widget)
    assert "No space left" in notes["error"][-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no folder, no partial files
    assert widget.export_button.isEnabled() and widget.item_checks["stack"].isEnabled()


def test_landmarks_layer_saves_as_csv_through_the_writer(viewer, tmp_path, phantom_run):
    from napari_any2reg.io.landmarks import read_landmarks_csv

    phantom, _, _ = phantom_run
    layers = add_run(viewer, phantom_run, maps=False, labels=False)
    written = layers["points"].save(str(tmp_path / "clicks.csv"), plugin=PLUGIN)
    assert [str(p) for p in written] == [str(tmp_path / "clicks.csv")]
    table = read_landmarks_csv(tmp_path / "clicks.csv")
    assert table.spacing_mm == pytest.approx(SPACING)
    for name, truth in phantom.landmarks.items():
        np.testing.assert_allclose(table.positions(8)[name], truth, atol=1e-5)


def test_single_landmarks_and_labels_layers_are_picked(viewer, widget, qtbot, tmp_path, phantom_run, notes):
    """Issue 11: with exactly one suitable layer the pickers choose it (no silent "(none)"), and an
    item that cannot be written is shown unticked, not ticked-but-dropped."""
    layers = add_run(viewer, phantom_run, maps=False, points=False, labels=False)
    assert widget.points_layer() is None
    landmarks = widget.item_checks["landmarks"]
    assert not landmarks.isEnabled() and not landmarks.isChecked()
    assert "landmarks" not in widget.chosen_items()

    phantom = phantom_run[0]
    names = list(phantom.landmarks)
    coords = [[f, *phantom.landmarks[n][f]] for f in range(8) for n in names]
    points = viewer.add_points(np.array(coords), ndim=3, name="clicks", scale=layers["raw"].scale,
                               features={"name": [n for _ in range(8) for n in names]})
    labels = viewer.add_labels(phantom.labels.astype(np.int32), name="seg", scale=layers["raw"].scale)
    assert widget.points_layer() == points and widget.labels_layer() == labels
    assert landmarks.isEnabled() and landmarks.isChecked() and widget.item_checks["dice"].isChecked()
    assert {"landmarks", "dice"} <= set(widget.chosen_items())

    # a user's explicit "(none)" is respected, and the export says what it did not write
    widget.select(points="(none)")
    assert widget.points_layer() is None and "landmarks" not in widget.chosen_items()
    viewer.add_image(np.zeros((4, 4), np.float32), name="unrelated")  # a refresh keeps "(none)"
    assert widget.points_layer() is None
    widget.set_items(["jacobian", "landmarks"])
    widget.folder_edit.setText(str(tmp_path / "o"))
    assert widget.export()
    wait_done(qtbot, widget)
    assert "Not written: landmarks" in widget.status_label.text()
    assert widget.progress_bar.value() == 100
    widget.select(labels="(none)")  # another choice: last run's bar and message are cleared
    assert widget.progress_bar.value() == 0 and "Not written" not in widget.status_label.text()


def test_cancel_leaves_no_file(viewer, widget, qtbot, phantom_run, tmp_path, notes):
    add_run(viewer, phantom_run)
    folder = tmp_path / "cancelled"
    widget.folder_edit.setText(str(folder))
    assert widget.export()
    widget.cancel()  # the export stops at its next step; all or nothing: no file stays
    assert not widget.cancel_button.isEnabled()
    wait_done(qtbot, widget)
    assert "cancelled" in widget.status_label.text() and notes["error"] == []
    assert widget.last_result is None
    assert not folder.exists() or not any(folder.iterdir())
    assert widget.export_button.isEnabled() and widget.registered_combo.isEnabled()



def test_network_run_exports_its_displacement_sd(viewer, widget, qtbot, tmp_path, notes):
    """Issue 27: the network's per-pixel displacement SD travels on the registered layer and the
    "Displacement SD" item writes it (mm, one map per frame, what the run computed)."""
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.registration import register
    from napari_any2reg.widgets._layers import sequence_to_layer_data
    from napari_any2reg.widgets._registered import RegisteredLayer

    phantom = make_phantom("molli", seed=3, shape=(48, 48), spacing_mm=SPACING, motion_mm=6)
    result = register(phantom.sequence, engine="any2reg", device="cpu", uncertainty_shifts=1)
    sd = result.extras["displacement_sd_mm"]
    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name="molli")
    raw = viewer.add_image(data, **kwargs)
    meta = RegisteredLayer.from_result(result, raw.name, raw.metadata).to_metadata()
    viewer.add_image(result.registered.copy(), name="molli registered", scale=raw.scale, metadata=meta)
    assert "uncertainty" not in widget.missing_inputs() and widget.item_checks["uncertainty"].isEnabled()
    widget.set_items(["uncertainty", "record"])
    widget.folder_edit.setText(str(tmp_path / "sd"))
    assert widget.export()
    wait_done(qtbot, widget)
    assert notes["error"] == [], notes
    written = np.load(tmp_path / "sd" / "displacement_sd.npy")
    assert written.shape == phantom.sequence.frames.shape and np.isfinite(written).all() and (written >= 0).all()
    np.testing.assert_allclose(written, sd, rtol=1e-6)


def test_report_shows_the_last_segment_analysis_of_the_mapping_dock(viewer, widget, mapping_dock, qtbot, tmp_path,
                                                                    phantom_run, notes, monkeypatch):
    """The Mapping dock's segments section, pressed twice (mid, then basal with the border left
    out); the Export dock picks the last analysis and its report draws its bullseye and table."""
    from qtpy.QtCore import Qt

    from napari_any2reg.core import report

    phantom, _, _ = phantom_run
    layers = add_run(viewer, phantom_run, points=False, labels=False)
    scale = layers["raw"].scale[-2:]
    labels = viewer.add_labels(phantom.common_labels.astype(np.int32), name="heart labels", scale=scale)
    marks = phantom.common_landmarks
    viewer.add_points(np.array([marks["rv_insertion_anterior"], marks["rv_insertion_inferior"]]) * scale,
                      name="RV insertion")
    assert widget.segments_combo.layer() is None and widget.segments() is None  # no analysis yet
    seg = mapping_dock.segments_section
    seg.map_combo.set_layer("molli registered T1")
    seg.labels_combo.set_layer(labels)
    seg.points_combo.set_layer("RV insertion")
    qtbot.mouseClick(seg.run_button, Qt.MouseButton.LeftButton)
    boundaries = viewer.layers["molli registered T1 AHA segments"]
    assert widget.segments_combo.layer() is boundaries and widget.segments()["level"] == "mid"
    seg.level_combo.setCurrentIndex(seg.level_combo.findData("basal"))
    seg.erode_spin.setValue(1)
    qtbot.mouseClick(seg.run_button, Qt.MouseButton.LeftButton)
    chosen = widget.segments()
    assert chosen["level"] == "basal" and chosen["erode_px"] == 1
    assert chosen["segments"] == seg.last_analysis.rows and [r["segment"] for r in chosen["segments"]] == [1, 2, 3, 4, 5, 6]

    seen: dict = {}
    original = report.report_figure

    def spy(*args, **kwargs):
        seen["segments"] = kwargs.get("segments")
        figure = original(*args, **kwargs)
        seen["texts"] = [ax.get_title() for ax in figure.axes] + [t.get_text() for ax in figure.axes for t in ax.texts]
        return figure

    monkeypatch.setattr(report, "report_figure", spy)
    widget.set_items(["report"])
    widget.folder_edit.setText(str(tmp_path / "export"))
    qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
    wait_done(qtbot, widget)
    assert notes["error"] == [], notes
    assert (tmp_path / "export" / "report.png").stat().st_size > 10_000
    assert seen["segments"] == chosen
    assert any(t.startswith("AHA segments, basal slice") for t in seen["texts"]), seen["texts"]
    # "(none)": the report has no bullseye
    widget.select(segments="(none)")
    assert widget.segments() is None
