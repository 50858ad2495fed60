"""napari: the ECV and AHA-segments sections of the "T1 mapping" dock in a real viewer.

Native and post-contrast MOLLI phantoms of one patient, 64 x 64 px at 4.5 mm, the post series
13.5 mm (3 px) lower: the real "Compute ECV" button registers them as one set (any2reg, the
fastest engine on CPU), fits both maps and adds the ECV layer; then the real "Segments" button
adds the overlay, the bullseye and the table, which is copied and saved as CSV.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

TIMEOUT_MS = 120_000
TRUE_ECV = 100 * 0.58 * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1550)


@pytest.fixture(scope="module")
def pair():
    from napari_any2reg.core.phantom import make_phantom

    common = dict(seed=20002, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=1.0, snr=None)
    return (make_phantom("molli", **common),
            make_phantom("molli", contrast="post", breath_hold_offset_mm=(13.5, 0.0), **common))


@pytest.fixture
def notifications(monkeypatch):
    from napari_any2reg.widgets import _ecv_section, _segments_section, mapping

    calls = capture_notifications(monkeypatch, mapping)
    for module in (_ecv_section, _segments_section):
        monkeypatch.setattr(module, "show_error", lambda msg: calls["error"].append(str(msg)), raising=False)
    return calls


@pytest.fixture
def widget(mapping_dock):
    return mapping_dock


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_ecv_section_adds_the_ecv_map_and_segments(viewer, widget, qtbot, notifications, pair, tmp_path, monkeypatch):
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    native, post = pair
    data, kwargs, _ = sequence_to_layer_data(native.sequence, name="native")
    native_layer = viewer.add_image(data, **kwargs)
    data, kwargs, _ = sequence_to_layer_data(post.sequence, name="post")
    viewer.add_image(data, **kwargs)
    labels = viewer.add_labels(native.common_labels.astype(np.int32), name="labels", scale=native_layer.scale[-2:])
    section = widget.ecv_section
    section.native_combo.set_layer("native")
    section.post_combo.set_layer("post")
    section.labels_combo.set_layer(labels)
    section.synthetic_check.setChecked(True)
    assert not section.hematocrit_spin.isEnabled()
    section.engine_combo.setCurrentIndex(section.engine_combo.findData("any2reg"))
    section.erode_spin.setValue(1)  # the myocardium's border pixels out of its mean (partial volume)
    assert section.run_button.isEnabled()
    qtbot.mouseClick(section.run_button, _left())
    assert widget.worker is not None and not section.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert notifications["error"] == [], notifications

    layer = viewer.layers["native synthetic ECV"]
    ecv = layer.data
    assert ecv.shape == (64, 64) and ecv.dtype == np.float32
    assert layer.colorbar.visible and layer.metadata["unit"] == "%"
    from napari_any2reg.widgets._dock import legend_text

    # the colour bar's unit, under the frame label as for the T1 maps
    assert legend_text(layer).startswith("synthetic ECV (%): 0 – 60")
    assert layer.metadata["any2reg_ecv"]["quantity"] == "synthetic ECV"
    np.testing.assert_allclose(layer.scale, native_layer.scale[-2:])
    outcome = section.last_outcome
    hct = outcome.ecv.hematocrit
    assert hct == pytest.approx(866.0 / outcome.ecv.native_blood_t1_ms - 0.1232)
    from scipy import ndimage

    core = ndimage.binary_erosion(native.common_labels == 2)
    expected = TRUE_ECV / 0.58 * (1 - hct)
    assert abs(np.nanmean(ecv[core]) - expected) < 3.0  # 5 core pixels at 4.5 mm: partial volume (bench: 0.6)
    from napari_any2reg.pipeline.ecv import compute_ecv

    api = compute_ecv(native.sequence, post.sequence, native.common_labels, synthetic_hematocrit=True,
                      engine="any2reg", device="cpu", erode_px=1)  # the dock ran exactly this
    np.testing.assert_allclose(ecv, api.ecv.ecv_percent, atol=1e-4)
    assert outcome.ecv.erode_px == 1 and outcome.ecv.myocardial_mean() == pytest.approx(np.nanmean(ecv[core]), abs=1e-4)
    text = section.result_label.text()
    assert text.startswith("Myocardial synthetic ECV:") and "registered as one set (any2reg, 8 + 8 frames)" in text
    assert f"{outcome.ecv.myocardial_mean():.1f} % without its 1 border px" in text
    assert section.run_button.isEnabled()

    # the AHA segments of the ECV map
    seg = widget.segments_section
    points = native.common_landmarks
    rv = np.array([points["rv_insertion_anterior"], points["rv_insertion_inferior"]])
    viewer.add_points(rv * native_layer.scale[-2:], name="RV insertion")  # world (mm) coordinates
    seg.map_combo.set_layer(layer)
    seg.labels_combo.set_layer(labels)
    seg.points_combo.set_layer("RV insertion")
    np.testing.assert_allclose(seg.insertion_points(viewer.layers["RV insertion"], labels), rv, atol=1e-6)
    qtbot.mouseClick(seg.run_button, _left())
    assert notifications["error"] == [], notifications
    boundaries = viewer.layers["native synthetic ECV AHA segments"]
    assert set(np.unique(boundaries.data)) - {0} <= set(range(7, 13)) and boundaries.data.max() > 0
    numbers = viewer.layers["native synthetic ECV segment numbers"]
    assert sorted(numbers.features["segment"].tolist(), key=int) == [str(k) for k in range(7, 13)]
    assert seg.table.rowCount() == 6 and seg.table.item(1, 1).text() == "mid anteroseptal"
    assert [t.get_text().split("\n")[0] for t in seg.figure.axes[0].texts if "\n" in t.get_text()] == [
        str(k) for k in range(7, 13)]
    assert seg.figure.axes[1].get_ylabel() == "synthetic ECV (%)"
    qtbot.mouseClick(seg.copy_button, _left())
    from qtpy.QtWidgets import QApplication

    copied = QApplication.clipboard().text()
    lines = copied.splitlines()
    assert lines[0] == "segment,name,mean,sd,median,n_pixels,quantity,unit" and len(lines) == 7
    assert all(line.endswith(",synthetic ECV,%") for line in lines[1:])
    target = tmp_path / "table.csv"
    from napari_any2reg.widgets import _segments_section

    monkeypatch.setattr(_segments_section.QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "CSV (*.csv)"))
    qtbot.mouseClick(seg.save_button, _left())
    assert target.read_text(encoding="utf-8") == copied  # Copy and Save give the same table, same digits
    assert len(lines[1].split(",")[2]) > 5  # 6 significant digits, not the 4 of the table on screen
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["segment"]) for r in rows] == list(range(7, 13))
    from napari_any2reg.core.tissue.segments import assign_segments, segment_statistics

    truth = segment_statistics(ecv, assign_segments(native.common_labels, rv, "mid"), "mid")
    for row, known in zip(rows, truth):
        assert float(row["mean"]) == pytest.approx(known["mean"], rel=1e-5)
        assert int(row["n_pixels"]) == known["n_pixels"] and row["name"] == known["name"]


def test_ecv_section_reports_bad_input_and_adds_nothing(viewer, widget, qtbot, notifications, pair):
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    native, post = pair
    for seq, name in ((native.sequence, "native"), (post.sequence, "post")):
        data, kwargs, _ = sequence_to_layer_data(seq, name=name)
        viewer.add_image(data, **kwargs)
    viewer.add_labels(np.zeros((32, 32), np.int32), name="small labels")
    section = widget.ecv_section
    section.native_combo.set_layer("native")
    section.post_combo.set_layer("post")
    n_layers = len(viewer.layers)
    qtbot.mouseClick(section.run_button, _left())
    assert widget.worker is None and len(viewer.layers) == n_layers
    assert any("labels layer 'small labels'" in e for e in notifications["error"]), notifications
    # labels without the LV blood pool: refused in the worker, reported, the viewer lives on
    viewer.add_labels(np.where(native.common_labels == 1, 0, native.common_labels).astype(np.int32), name="no lv")
    section.labels_combo.set_layer("no lv")
    section.register_check.setChecked(False)
    qtbot.mouseClick(section.run_button, _left())
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert any("label 1" in e for e in notifications["error"]), notifications
    assert len(viewer.layers) == n_layers + 1


def test_the_ecv_pair_sample_gives_the_ecv_section_all_it_needs(viewer, widget, qtbot, notifications, monkeypatch):
    """File > Open Sample > the ECV pair: two MOLLI series 12 mm apart and the heart labels; the
    ECV section picks them up and its myocardial ECV is the phantom's (native 1000 / post 450 ms,
    blood 1550 / 300 ms)."""
    from napari_any2reg.widgets import _sample_data

    monkeypatch.setattr(_sample_data, "SAMPLE_SHAPE", (64, 64))
    layers = viewer.open_sample("napari-any2reg", "ecv_pair")
    assert [layer.name for layer in layers] == ["MOLLI native (ECV pair)", "MOLLI post-contrast (ECV pair)",
                                                "heart labels (ECV pair)", "RV insertion (ECV pair)"]
    native, post, labels, rv = layers
    assert native.data.shape == post.data.shape == (8, 64, 64) and labels.data.shape == (64, 64)
    assert set(np.unique(labels.data)) == {0, 1, 2, 3}
    np.testing.assert_allclose(labels.scale, native.scale[-2:])
    assert native.metadata["any2reg_kind"] == post.metadata["any2reg_kind"] == "molli"
    assert (native.metadata["contrast"], post.metadata["contrast"]) == ("native", "post")
    section = widget.ecv_section
    section.native_combo.set_layer(native.name)
    section.post_combo.set_layer(post.name)
    section.labels_combo.set_layer(labels)
    section.hematocrit_spin.setValue(0.42)
    section.engine_combo.setCurrentIndex(section.engine_combo.findData("any2reg"))
    section.erode_spin.setValue(1)
    qtbot.mouseClick(section.run_button, _left())
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert notifications["error"] == [], notifications
    truth = 100 * 0.58 * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1550)  # at hematocrit 0.42
    assert section.last_outcome.ecv.myocardial_mean() == pytest.approx(truth, abs=3.0)
    # the segments section takes the sample's RV insertion points as they are (world mm)
    seg = widget.segments_section
    seg.map_combo.set_layer(viewer.layers[f"{native.name} ECV"])
    seg.labels_combo.set_layer(labels)
    seg.points_combo.set_layer(rv)
    qtbot.mouseClick(seg.run_button, _left())
    assert notifications["error"] == [], notifications
    assert seg.table.rowCount() == 6 and seg.table.item(0, 1).text() == "mid anterior"
