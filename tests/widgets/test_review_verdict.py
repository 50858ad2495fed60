"""napari layer: the verdict, outlier frames and displacement SD in the Review and T1 mapping docks
(issue 27), in a real viewer with the docks added as the Plugins menu does.

A 48x48 MOLLI phantom (8 frames) with one injected bad frame (another slice position, frame 5)
is registered with the any2reg engine through the Registration dock; the Review dock's banner
must not say "good", frame 5 must be marked in its QC table and its reason's button must move
the frame slider there; the T1 mapping dock's "Exclude outlier frames" leaves frame 5 out of the
registered fit and says so. The same phantom without the bad frame is "good"; the network's
displacement SD is an overlay in mm, refused with the reason for the groupwise engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import capture_notifications, plugin_dock

pytestmark = pytest.mark.napari

TIMEOUT_MS = 120_000
BAD_FRAME = 5


@pytest.fixture(scope="module")
def phantom():
    from napari_any2reg.core.phantom import make_phantom

    # seed chosen among 48x48 phantoms: the clean series has no outlier frame under any2reg
    # (frame 1, near the null point, is the closest: score z 4.3 of the 6 needed)
    return make_phantom("molli", seed=20716, shape=(48, 48), spacing_mm=(6.0, 6.0), motion_mm=6.0)


@pytest.fixture
def errors(monkeypatch):
    from napari_any2reg.widgets import review

    return capture_notifications(monkeypatch, review)["error"]


@pytest.fixture
def docks(viewer, qtbot):
    """The Registration, Review and T1 mapping docks; every worker they start is waited for."""
    made = {name: plugin_dock(viewer, name) for name in ("Registration", "Review", "T1 mapping")}
    yield made
    for dock in made.values():
        if dock.worker is not None:
            dock.cancel()
        qtbot.waitUntil(lambda dock=dock: not dock.busy(), timeout=TIMEOUT_MS)


def register_in_viewer(viewer, docks, qtbot, phantom, frames, engine="any2reg"):
    """Open ``frames`` as the phantom's sequence and press Run in the Registration dock."""
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    data, kwargs, _ = sequence_to_layer_data(phantom.sequence.replace(frames=frames), name="molli")
    source = viewer.add_image(data, **kwargs)
    registration = docks["Registration"]
    registration.layer_combo.set_layer(source)
    registration.engine_combo.setCurrentIndex(registration.engine_combo.findData(engine))
    registration.device_combo.setCurrentIndex(registration.device_combo.findData("cpu"))
    if engine == "groupwise":
        registration.iterations_spin.setValue(0.3)
    registration.run_button.click()
    qtbot.waitUntil(lambda: registration.worker is None, timeout=TIMEOUT_MS)
    assert registration.last_result is not None, registration.status_label.text()
    review = docks["Review"]
    qtbot.waitUntil(lambda: review.worker is None and review.review is not None, timeout=TIMEOUT_MS)
    return source, viewer.layers[f"{source.name} registered"]


def wait_idle(qtbot, dock):
    qtbot.waitUntil(lambda: not dock.busy(), timeout=TIMEOUT_MS)


def test_bad_frame_is_flagged_linked_and_left_out_of_the_fit(viewer, docks, qtbot, phantom, errors):
    from qtpy.QtCore import Qt

    from napari_any2reg.core.phantom.bad_frames import inject_bad_frame
    from napari_any2reg.widgets._dock import LEGEND_KEY, legend_text

    source, registered = register_in_viewer(viewer, docks, qtbot, phantom, inject_bad_frame(phantom, BAD_FRAME, "other_slice"))
    review = docks["Review"]

    # the verdict: not good, in a banner coloured by level, its reason naming the bad frame
    assert review.verdict["level"] != "good", review.verdict
    assert review.outlier_frames == [BAD_FRAME]
    banner = review.verdict_banner
    assert banner.isVisibleTo(review) and banner.level == review.verdict["level"]
    assert any(f"frame {BAD_FRAME}" in label.text() for label in banner.reason_labels)
    assert [frame for frame, _ in banner.frame_buttons] == [BAD_FRAME]

    # the QC table marks that frame (and no other), the reason in its tool tip
    assert review.qc_section.outlier_rows() == [BAD_FRAME]
    cell = review.table.item(BAD_FRAME, 0)
    assert "Outlier frame" in cell.toolTip() and "low-rank residual" in cell.toolTip()

    # clicking the reason's frame moves the frame slider there
    viewer.dims.set_current_step(0, 0)
    _, button = banner.frame_buttons[0]
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert viewer.dims.current_step[0] == BAD_FRAME

    # the network's displacement SD as an overlay, with its legend and colour bar in mm
    assert review.displacement_sd_button.isEnabled()
    review.displacement_sd_button.click()
    qtbot.waitUntil(lambda: review.overlay_layer("displacement_sd") is not None and not review.busy(), timeout=TIMEOUT_MS)
    sd = review.overlay_layer("displacement_sd")
    np.testing.assert_allclose(sd.data, registered.metadata["displacement_sd_mm"])
    assert sd.metadata[LEGEND_KEY]["unit"] == "mm" and "displacement SD (mm)" in legend_text(sd)
    assert sd.colorbar.visible and sd.contrast_limits[0] == 0.0 < sd.contrast_limits[1]
    np.testing.assert_allclose(sd.scale, registered.scale)
    assert "mm" in review.status_label.text()

    # T1 mapping: the checkbox is on (8 frames leave 7, the MOLLI model needs 5) and frame 5 is left out
    mapping = docks["T1 mapping"]
    mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
    mapping.select_layers(source, registered)
    assert mapping.exclude_check.isEnabled() and mapping.exclude_check.isChecked()
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy() and mapping.last_result is not None, timeout=TIMEOUT_MS)
    kept = tuple(f for f in range(8) if f != BAD_FRAME)
    assert mapping.last_result.results["after"].frames_used == kept
    assert mapping.last_result.results["before"].frames_used == tuple(range(8))  # the raw fit keeps every frame
    status = mapping.status_label.text()
    assert f"outlier frame {BAD_FRAME} left out, 7 of 8 frames fitted" in status

    # unticked: every frame is fitted again
    mapping.exclude_check.click()
    assert not mapping.exclude_check.isChecked()
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy() and mapping.last_result is not None
                    and mapping.last_result.results["after"].frames_used == tuple(range(8)), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: mapping.status_label.text().startswith("Done"), timeout=TIMEOUT_MS)
    assert "left out" not in mapping.status_label.text()
    assert errors == []


def test_well_corrected_series_is_good_and_nothing_is_marked(viewer, docks, qtbot, phantom, errors):
    _, registered = register_in_viewer(viewer, docks, qtbot, phantom, phantom.sequence.frames)
    review = docks["Review"]
    assert review.verdict["level"] == "good", review.verdict
    assert review.verdict_banner.isVisibleTo(review) and review.verdict_banner.level == "good"
    assert review.verdict_banner.frame_buttons == [] and review.qc_section.outlier_rows() == []
    assert review.outlier_frames == []
    assert errors == []


def test_groupwise_run_refuses_the_displacement_sd_with_the_reason(viewer, docks, qtbot, phantom, errors):
    register_in_viewer(viewer, docks, qtbot, phantom, phantom.sequence.frames, engine="groupwise")
    review = docks["Review"]
    assert review.verdict is not None and review.assessment["displacement_sd"]["available"] is False
    button = review.displacement_sd_button
    assert not button.isEnabled() and "groupwise" in button.toolTip() and "network engines" in button.toolTip()
    assert review.show_displacement_sd() is False
    assert errors and "groupwise engine" in errors[-1] and "any2reg" in errors[-1]
    assert review.overlay_layer("displacement_sd") is None
    assert review.grid_button.isEnabled()  # the other overlays are offered as before


def test_exclusion_is_off_by_default_where_the_model_has_no_frame_to_spare(viewer, docks):
    from napari_any2reg.widgets._registered import RegisteredLayer

    mapping = docks["T1 mapping"]
    frames = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    raw = viewer.add_image(frames, name="short", metadata={"any2reg_kind": "molli", "timings_ms": [100, 180, 1100, 1180, 2100]})
    meta = RegisteredLayer(displacement=np.zeros((5, 2, 16, 16), np.float32), source_layer="short",
                           summary={"engine": "groupwise"}, base=dict(raw.metadata)).to_metadata()
    viewer.add_image(frames.copy(), name="short registered", metadata=meta)
    mapping.select_layers("short", "short registered")
    assert mapping.model() == "molli"
    # 5 frames: leaving one out keeps 4, fewer than the 5 (3 parameters + 2) the model needs
    assert mapping.exclude_check.isEnabled() and not mapping.exclude_check.isChecked()
    assert "no frame to spare" in mapping.exclude_check.toolTip()
    mapping.select_layers("short", None)
    assert not mapping.exclude_check.isEnabled()


def test_a_failed_verdict_leaves_the_qc_table_and_says_why(viewer, docks, qtbot, monkeypatch, errors):
    from napari_any2reg.widgets import review as review_module
    from napari_any2reg.widgets._registered import RegisteredLayer

    def refuse(*args, **kwargs):
        raise ValueError("frames must be (N, H, W) with N >= 3")

    monkeypatch.setattr(review_module, "assess_registration", refuse)
    frames = np.random.default_rng(1).random((6, 16, 16)).astype(np.float32)
    viewer.add_image(frames, name="raw")
    meta = RegisteredLayer(displacement=np.zeros((6, 2, 16, 16), np.float32), source_layer="raw",
                           summary={"engine": "groupwise", "device": "cpu"}).to_metadata()
    viewer.add_image(frames.copy(), name="raw registered", metadata=meta)
    review = docks["Review"]
    qtbot.waitUntil(lambda: review.worker is None and review.review is not None, timeout=TIMEOUT_MS)
    assert review.table.rowCount() == 6 and review.verdict is None and review.outlier_frames == []
    banner = review.verdict_banner
    assert banner.isVisibleTo(review) and banner.level is None
    assert banner.level_label.text() == "No verdict: frames must be (N, H, W) with N >= 3"
    assert errors == []


def test_the_verdict_reads_the_chosen_mask_as_metrics_json_does(viewer, docks, qtbot, phantom, errors, tmp_path):
    """``register --mask`` and the Review dock with the same Labels layer as its mask give the same
    verdict (level, reasons, what was checked), outlier frames and displacement SD; without the
    mask the SD is read in the central heart box instead of the LV myocardium."""
    import json

    from napari_any2reg.cli import main
    from napari_any2reg.core.phantom.bad_frames import inject_bad_frame
    from napari_any2reg.io import read_sequence, write_tiff
    from napari_any2reg.widgets._layers import sequence_to_layer_data
    from napari_any2reg.widgets._registered import RegisteredLayer

    write_tiff(tmp_path / "molli.tif", phantom.sequence.replace(frames=inject_bad_frame(phantom, BAD_FRAME, "other_slice")))
    labels = np.asarray(phantom.common_labels, np.int32)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "molli.tif"), "-o", str(out), "--engine", "any2reg", "--device", "cpu",
                 "--mask", str(tmp_path / "labels.npy"), "--export", "uncertainty", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["displacement_sd"]["region"] == "LV myocardium (label 2)"

    # the CLI's outputs as the layers the Registration dock makes
    data, kwargs, _ = sequence_to_layer_data(read_sequence(tmp_path / "molli.tif"), name="molli")
    source = viewer.add_image(data, **kwargs)
    meta = RegisteredLayer(displacement=np.load(out / "displacement.npy"), source_layer=source.name,
                           summary={"engine": metrics["engine"], "device": metrics["device"], "params": metrics["params"]},
                           correspondence=np.load(out / "correspondence.npy"),
                           displacement_sd=np.load(out / "displacement_sd.npy"), base=dict(source.metadata)).to_metadata()
    viewer.add_image(read_sequence(out / "registered.tif").frames, name="molli registered", metadata=meta, scale=source.scale)
    review = docks["Review"]
    wait_idle(qtbot, review)
    assert review.mask_layer() is None and review.verdict is not None
    assert review.assessment["displacement_sd"]["region"].startswith("heart box")

    mask = viewer.add_labels(labels, name="my labels", scale=source.scale[-2:])
    assert review.mask_layer() is not None and review.mask_layer().name == "my labels"  # the only one: chosen
    qtbot.waitUntil(lambda: not review.busy() and review.verdict is not None, timeout=TIMEOUT_MS)

    def as_json(value):
        return json.loads(json.dumps(value, default=float))

    verdict = review.verdict
    assert {k: verdict[k] for k in ("level", "reasons", "checked")} == \
        {k: metrics["verdict"][k] for k in ("level", "reasons", "checked")}
    assert verdict["level"] != "good" and f"frame {BAD_FRAME}" in verdict["reasons"][0]["text"]
    assert as_json(review.assessment["outlier_frames"]) == metrics["outlier_frames"]
    assert as_json(review.assessment["displacement_sd"]) == metrics["displacement_sd"]
    banner = [label.text() for label in review.verdict_banner.reason_labels]
    assert all(any(r["text"] in text for text in banner) for r in verdict["reasons"]), banner

    # "(none)": the central heart box again, a different SD summary; the choice is kept
    review.set_mask_layer(None)
    qtbot.waitUntil(lambda: not review.busy() and review.verdict is not None, timeout=TIMEOUT_MS)
    assert review.assessment["displacement_sd"]["region"].startswith("heart box")
    assert review.verdict["checked"] != metrics["verdict"]["checked"]
    viewer.add_labels(np.zeros_like(labels), name="scratch", scale=source.scale[-2:])
    assert review.mask_layer() is None
    review.set_mask_layer(mask)
    qtbot.waitUntil(lambda: not review.busy() and review.verdict is not None, timeout=TIMEOUT_MS)
    assert as_json(review.assessment["displacement_sd"]) == metrics["displacement_sd"]

    # a mask on another grid is not used, and the status says so
    viewer.add_labels(np.zeros((10, 10), np.int32), name="small")
    review.set_mask_layer("small")
    qtbot.waitUntil(lambda: not review.busy() and review.verdict is not None, timeout=TIMEOUT_MS)
    assert review.assessment["displacement_sd"]["region"].startswith("heart box")
    assert "'small' is (10, 10), not on the frames' grid (48, 48)" in review.status_label.text()
    assert errors == []
