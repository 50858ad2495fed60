"""napari layer: Registration widget, reader, writers, sample data and ``python -m napari_any2reg``.

Every test here opens a real napari viewer (Xvfb via pytest-xvfb) and runs the real engines on
small phantoms with few iterations. After starting a run, tests wait for the result *and* for
the Run button to be enabled again, so no worker thread outlives a test (ENVIRONMENT.md).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import SMALL_SAMPLE_SHAPE, capture_notifications

pytestmark = [pytest.mark.napari, pytest.mark.usefixtures("small_samples")]

PLUGIN = "napari-any2reg"
SMALL = SMALL_SAMPLE_SHAPE  # the samples' size (conftest.small_samples)
FAST = 0.2  # iterations_scale for quick runs
RUN_TIMEOUT_MS = 120_000


# ---------------------------------------------------------------------- fixtures / helpers


@pytest.fixture
def notifications(monkeypatch):
    """Capture the widget's show_error / show_info calls."""
    from napari_any2reg.widgets import registration

    return capture_notifications(monkeypatch, registration)


@pytest.fixture
def widget(viewer, qtbot):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Registration")
    w.iterations_spin.setValue(FAST)
    yield w
    if w.worker is not None:  # never leave a thread behind, even when a test failed
        w.cancel()
        qtbot.waitUntil(lambda: w.worker is None, timeout=RUN_TIMEOUT_MS)


def wait_done(qtbot, w, timeout=RUN_TIMEOUT_MS):
    qtbot.waitUntil(lambda: w.worker is None and w.run_button.isEnabled(), timeout=timeout)


def add_phantom(viewer, kind="molli", seed=0, shape=SMALL, **kwargs):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.widgets._layers import sequence_to_layer_data

    kwargs.setdefault("spacing_mm", (288.0 / shape[0], 288.0 / shape[1]))  # whole heart in view
    phantom = make_phantom(kind, seed=seed, shape=shape, **kwargs)
    data, meta, _ = sequence_to_layer_data(phantom.sequence)
    return viewer.add_image(data, **meta), phantom


def combo_items(combo):
    return [combo.itemText(i) for i in range(combo.count())]


# ---------------------------------------------------------------------- sample data
def test_samples_are_sequences_with_scale_and_timings(viewer):
    expected_frames = {"molli": 8, "stone": 11, "cine": 30, "t2prep": 4, "mge": 8}
    for key, n in expected_frames.items():
        layers = viewer.open_sample(PLUGIN, key)
        assert len(layers) == 1
        layer = layers[0]
        assert layer.data.shape == (n, *SMALL), key
        assert layer.data.dtype == np.float32
        meta = layer.metadata
        assert meta["any2reg_kind"] == key
        assert len(meta["timings_ms"]) == n
        dy, dx = meta["spacing_mm"]
        np.testing.assert_allclose(layer.scale, (1.0, dy, dx))
        lo, hi = layer.contrast_limits
        assert hi > lo


# ---------------------------------------------------------------------- registration
def test_run_on_sample_adds_registered_layer(viewer, widget, qtbot, notifications):
    from napari_any2reg.core.device import describe_device

    (source,) = viewer.open_sample(PLUGIN, "molli")
    assert widget.layer_combo.currentText() == source.name
    data_before = source.data.copy()
    meta_before = copy.deepcopy(source.metadata)
    n, h, w = source.data.shape

    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    qtbot.mouseClick(widget.run_button, qtbot_left_button())
    assert widget.worker is not None
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    assert not widget.layer_combo.isEnabled()
    # napari's own progress convention: the run also shows in the Activity dock / status bar
    from napari.utils import progress

    activity = widget.activity._bar
    assert activity in progress._all_instances and activity.desc.startswith(f"Registering {source.name}")
    wait_done(qtbot, widget)
    assert widget.activity is None and activity not in progress._all_instances

    assert notifications["error"] == [], notifications
    name = f"{source.name} registered"
    assert name in viewer.layers
    registered = viewer.layers[name]
    assert registered.data.shape == (n, h, w)
    np.testing.assert_allclose(registered.scale, source.scale)
    # beside the source by default (issue 11: not exactly on top of it), same rows
    np.testing.assert_allclose(registered.translate[:-1], source.translate[:-1])
    np.testing.assert_allclose(registered.translate[-1] - source.translate[-1], w * source.scale[-1] * 1.05)
    np.testing.assert_allclose(registered.contrast_limits, source.contrast_limits)
    assert registered.colormap.name == source.colormap.name
    meta = registered.metadata
    assert meta["displacement"].shape == (n, 2, h, w)
    assert meta["displacement"].dtype == np.float32
    assert meta["template"].shape == (h, w)
    assert meta["source_layer"] == source.name
    summary = meta["any2reg_result"]
    # the default engine is the trained network, with its per-frame correspondence maps
    assert summary["engine"] == "any2reg" and summary["reference_frame"] is None
    assert summary["params"]["weights_sha256"]
    assert meta["correspondence"].shape == (n, h, w)
    assert 0 <= meta["correspondence"].min() and meta["correspondence"].max() <= 1
    assert meta["timings_ms"] == meta_before["timings_ms"]  # source metadata carried over
    # groupwise centring: the mean displacement over frames is ~0
    assert np.abs(meta["displacement"].mean(axis=0)).max() < 0.5

    # the source layer is untouched
    assert source.data.tobytes() == data_before.tobytes()
    assert source.metadata.keys() == meta_before.keys()
    assert source.metadata == meta_before

    status = widget.status_label.text()
    assert "any2reg" in status and describe_device("cpu").split()[0] in status
    assert "folding" in status and " s" in status
    assert widget.progress_bar.value() == 100
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    # the picker keeps the source selected, not the result
    assert widget.layer_combo.currentText() == source.name

    # re-running (groupwise engine, fixed frame, PCA2) replaces the registered layer's data
    n_layers = len(viewer.layers)
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    widget.metric_combo.setCurrentIndex(widget.metric_combo.findData("pca2"))
    widget.reference_combo.setCurrentIndex(widget.reference_combo.findData("fixed"))
    widget.frame_spin.setValue(2)
    assert widget.run()
    wait_done(qtbot, widget)
    assert notifications["error"] == [], notifications
    assert len(viewer.layers) == n_layers
    assert viewer.layers[name] == registered
    summary = registered.metadata["any2reg_result"]
    assert summary["reference_frame"] == 2
    assert summary["params"]["metric"] == "pca2"
    assert summary["params"]["iterations_scale"] == pytest.approx(FAST)
    assert "correspondence" not in registered.metadata  # no stale maps from the first run
    assert np.abs(registered.metadata["displacement"][2]).max() < 1e-4
    assert "frame 2 fixed" in widget.status_label.text()
    assert source.data.tobytes() == data_before.tobytes()
    assert source.metadata == meta_before


def qtbot_left_button():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_cancel_stops_a_run(viewer, widget, qtbot, notifications):
    add_phantom(viewer, "molli", seed=3)
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    widget.iterations_spin.setValue(5.0)  # long enough to cancel mid-way
    assert widget.run()
    qtbot.waitUntil(lambda: widget.progress_bar.value() >= 2, timeout=RUN_TIMEOUT_MS)
    assert widget.worker is not None, "run finished before it could be cancelled"
    widget.cancel()
    assert "cancel" in widget.status_label.text().lower()
    wait_done(qtbot, widget, timeout=30_000)

    assert not any(layer.name.endswith(" registered") for layer in viewer.layers)
    assert "cancelled" in widget.status_label.text().lower()
    assert notifications["info"] and "cancel" in notifications["info"][0].lower()
    assert notifications["error"] == []
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.layer_combo.isEnabled() and widget.engine_combo.isEnabled()
    from napari_any2reg.core.registration import RegistrationCancelled

    assert isinstance(widget.last_error, RegistrationCancelled)


def test_invalid_layers_report_errors_without_new_layers(viewer, widget, qtbot, notifications):
    rng = np.random.default_rng(0)
    image2d = viewer.add_image(rng.random((32, 32)).astype(np.float32), name="single image")
    # 2-D layers are not offered by the picker ...
    assert "single image" not in combo_items(widget.layer_combo)
    assert not widget.run_button.isEnabled()  # nothing to register yet
    # ... and asking for one explicitly reports why it cannot be registered
    assert widget.run(image2d) is False
    assert len(notifications["error"]) == 1
    assert "3-D" in notifications["error"][0]
    assert "3-D" in widget.status_label.text()

    one_frame = viewer.add_image(rng.random((1, 32, 32)).astype(np.float32), name="one frame")
    assert widget.layer_combo.currentText() == "one frame"
    qtbot.mouseClick(widget.run_button, qtbot_left_button())
    assert len(notifications["error"]) == 2
    assert "at least 2 frames" in notifications["error"][1]

    frames = rng.random((4, 32, 32)).astype(np.float32)
    frames[1, 3, 4] = np.nan
    viewer.add_image(frames, name="with nan")
    assert widget.run("with nan") is False
    assert "NaN" in notifications["error"][2]

    assert widget.worker is None and widget.run_button.isEnabled()
    assert [layer.name for layer in viewer.layers] == ["single image", "one frame", "with nan"]


def test_worker_exception_is_reported_and_ui_recovers(viewer, widget, qtbot, notifications):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to provoke a device error in the worker")
    add_phantom(viewer, "molli", seed=1)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cuda"))
    assert widget.run()  # the error happens inside the worker thread
    wait_done(qtbot, widget)
    assert len(notifications["error"]) == 1
    assert "CUDA" in notifications["error"][0] and "failed" in notifications["error"][0]
    assert "CUDA" in widget.status_label.text()
    assert not any(layer.name.endswith(" registered") for layer in viewer.layers)
    assert widget.run_button.isEnabled() and widget.layer_combo.isEnabled()


def test_device_label_and_engine_defaults(widget):
    import torch

    from napari_any2reg.core.device import describe_device
    from napari_any2reg.core.registration import available_engines
    from napari_any2reg.widgets.registration import DEFAULT_ENGINE

    assert describe_device("auto") in widget.device_label.text()
    assert widget.device() == "auto"
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    assert describe_device("cpu") in widget.device_label.text()
    cuda_item = widget.device_combo.model().item(widget.device_combo.findData("cuda"))
    assert cuda_item.isEnabled() == torch.cuda.is_available()

    assert combo_items(widget.engine_combo) == available_engines()
    assert widget.engine() == DEFAULT_ENGINE == "any2reg"
    widget.options_form.set_option("working_spacing_mm", 2.0)
    assert widget.engine_options() == {"working_spacing_mm": 2.0}
    widget.options_form.set_option("working_spacing_mm", None)  # back to "auto": the scan's own grid
    assert widget.engine_options() == {}  # every option of the network at its default
    assert not widget.metric_combo.isEnabled() and not widget.iterations_spin.isEnabled()
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    assert widget.engine_options() == {"iterations_scale": FAST}  # only what differs from the defaults
    widget.metric_combo.setCurrentIndex(widget.metric_combo.findData("pca2"))
    assert widget.engine_options() == {"metric": "pca2", "iterations_scale": FAST}
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("xcoreg"))
    assert not widget.metric_combo.isEnabled()  # X-CoReg has no metric choice
    assert "metric" not in widget.engine_options()


def test_option_controls_come_from_the_engine_registry(viewer, widget, qtbot, notifications):
    """Issue 12: one control per ENGINE_OPTIONS entry, only the selected engine's on show."""
    from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

    from napari_any2reg.core.engine_api import ENGINE_OPTIONS, options_for

    form = widget.options_form
    declared = {o.name for o in ENGINE_OPTIONS} - {"reference_frame"}  # the Reference row sets that one
    assert set(form.controls) == declared
    for engine in combo_items(widget.engine_combo):
        widget.engine_combo.setCurrentIndex(widget.engine_combo.findData(engine))
        expected = [o.name for o in options_for(engine) if o.name != "reference_frame"]
        assert form.shown_options() == expected
        for name, control in form.controls.items():
            assert control.isVisibleTo(widget) == (name in expected), (engine, name)
            assert control.isEnabled() == (name in expected)
    kinds = {"nonrigid": QCheckBox, "orientations": QComboBox, "bins": QSpinBox, "io_learning_rate": QDoubleSpinBox,
             "weights": QLineEdit}
    for name, kind in kinds.items():
        assert isinstance(form.controls[name], kind)
    bins = next(o for o in ENGINE_OPTIONS if o.name == "bins")
    assert (form.controls["bins"].minimum(), form.controls["bins"].maximum()) == (bins.minimum, bins.maximum)
    assert bins.help in form.controls["bins"].toolTip()

    # the values reach the engine: a rigid-only groupwise run moves every pixel of a frame alike
    add_phantom(viewer, "molli", seed=2)
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    form.set_option("nonrigid", False)
    form.set_option("bins", 16)
    assert widget.engine_options() == {"iterations_scale": FAST, "nonrigid": False, "bins": 16}
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("any2reg"))
    assert "nonrigid" not in widget.engine_options()  # hidden options are not passed
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    assert widget.run()
    assert not form.controls["bins"].isEnabled()  # inputs are locked while it runs
    wait_done(qtbot, widget)
    assert notifications["error"] == [], notifications
    u = widget.last_result.displacement
    spread = (u - u.mean(axis=(2, 3), keepdims=True)).std()
    assert spread < 1e-3 * max(float(np.abs(u).max()), 1.0)
    assert form.controls["bins"].isEnabled()


def test_layer_picker_and_reference_frame_follow_the_viewer(viewer, widget):
    assert widget.layer_combo.count() == 0
    a, _ = add_phantom(viewer, "molli", seed=0)
    viewer.add_image(np.zeros((16, 16), np.float32), name="flat 2d")
    assert combo_items(widget.layer_combo) == [a.name]

    # a registered result is listed but never auto-selected; a new sequence is
    result = viewer.add_image(a.data.copy(), name=f"{a.name} registered", metadata={"any2reg_result": {}})
    assert widget.layer_combo.currentText() == a.name
    b, _ = add_phantom(viewer, "stone", seed=1)
    assert widget.layer_combo.currentText() == b.name
    assert set(combo_items(widget.layer_combo)) == {a.name, result.name, b.name}

    b.name = "renamed"
    assert "renamed" in combo_items(widget.layer_combo)
    assert widget.layer_combo.currentText() == "renamed"
    viewer.layers.remove(b)
    assert "renamed" not in combo_items(widget.layer_combo)
    assert widget.layer_combo.currentText() == a.name

    # the fixed-frame spin box defaults to the frame on screen
    assert widget.frame_spin.maximum() == a.data.shape[0] - 1
    assert not widget.frame_spin.isEnabled() and widget.reference_frame() is None
    viewer.dims.set_current_step(0, 3)
    widget.reference_combo.setCurrentIndex(widget.reference_combo.findData("fixed"))
    assert widget.frame_spin.isEnabled()
    assert widget.reference_frame() == 3


# ---------------------------------------------------------------------- reader / writers
def test_reader_opens_tiff_with_scale_and_timings(viewer, tmp_path):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io import write_tiff
    from napari_any2reg.widgets._reader import get_reader, read_layers

    seq = make_phantom("molli", seed=4, shape=SMALL, spacing_mm=(4.5, 4.5)).sequence
    path = write_tiff(tmp_path / "molli.tif", seq)
    assert get_reader(str(path)) is read_layers
    # what cannot be read gets a reader that says why (issue 24 item 13), not None ("refused the file")
    assert "no such file" in get_reader(str(tmp_path / "notes.txt")).reason
    assert "one DICOM series" in get_reader([str(path), str(path)]).reason  # two TIFFs are not one series
    assert get_reader([str(path)]) is read_layers

    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    np.testing.assert_allclose(layer.data, seq.frames, rtol=1e-6)
    np.testing.assert_allclose(layer.scale, (1.0, *seq.spacing_mm))
    np.testing.assert_allclose(layer.metadata["timings_ms"], seq.timings_ms)
    assert layer.metadata["any2reg_kind"] == "molli"
    assert layer.colormap.name == "gray"


def test_extension_less_dicom_opens_through_its_folder(viewer, tmp_path):
    """Issue 23 item 4: files without an extension are not claimed one by one (no "*" pattern);
    their folder opens through this plugin's directory reader."""
    from test_io import _dicom_series

    tis = [100.0, 180.0, 260.0, 1100.0]
    _dicom_series(tmp_path / "series", tis=tis, shape=(16, 12))
    for path in (tmp_path / "series").iterdir():
        path.rename(path.with_suffix(""))  # IM0000, IM0001, ... as scanners write them
    (layer,) = viewer.open(tmp_path / "series", plugin=PLUGIN)
    assert layer.data.shape == (4, 16, 12)
    np.testing.assert_allclose(layer.metadata["timings_ms"], tis)


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_writer_round_trip(viewer, tmp_path, suffix):
    from napari_any2reg.io import read_sequence

    layer, phantom = add_phantom(viewer, "sasha", seed=5)
    # a registered layer's metadata holds arrays: they must not break writing
    layer.metadata = {**layer.metadata, "displacement": np.zeros((2, 2), np.float32)}
    target = tmp_path / f"saved{suffix}"
    written = viewer.layers.save(str(target), selected=False, plugin=PLUGIN)
    assert str(written[0]) == str(target)
    if suffix == ".nii.gz":  # timings and kind travel in the BIDS-style JSON sidecar
        assert [str(p) for p in written[1:]] == [str(tmp_path / "saved.json")]
    back = read_sequence(target)
    seq = phantom.sequence
    np.testing.assert_allclose(back.frames, seq.frames, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back.timings_ms, seq.timings_ms)
    np.testing.assert_allclose(back.spacing_mm, seq.spacing_mm, rtol=1e-5)
    assert back.kind == seq.kind


# ---------------------------------------------------------------------- python -m napari_any2reg
def test_main_opens_sample_and_docks_widget(viewer):
    from napari_any2reg.__main__ import build_parser, setup_viewer
    from napari_any2reg.widgets.registration import RegistrationWidget

    args = build_parser().parse_args(["--sample", "stone", "--device", "cpu"])
    _, widget = setup_viewer(args, viewer=viewer)
    assert isinstance(widget, RegistrationWidget)
    assert [layer.data.shape[0] for layer in viewer.layers] == [11]
    assert widget.layer_combo.currentText() == viewer.layers[0].name
    assert widget.device() == "cpu"


def test_a_broken_cuda_install_leaves_the_registration_dock_on_cpu(viewer, monkeypatch):
    """torch.cuda raising (a broken driver) must not break the dock: CUDA is offered disabled."""
    import torch
    from conftest import plugin_dock

    def broken():
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "is_available", broken)
    widget = plugin_dock(viewer, "Registration")
    item = widget.device_combo.model().item(widget.device_combo.findData("cuda"))
    assert not item.isEnabled() and "No CUDA GPU" in item.toolTip()
    assert widget.device() == "auto" and widget.device_label.text().startswith("auto → cpu (")


def test_python_dash_m_runs_the_launcher():
    """``python -m napari_any2reg`` reaches main(): its help names the sample and the register flag."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "napari_any2reg", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--sample" in done.stdout and "--register" in done.stdout


# ---------------------------------------------------------------------- issue 11: usability
def test_five_panels_fit_a_1280x800_window(make_napari_viewer, qtbot):
    """Item 9: the five docks tab together and scroll, so the window can be 1280x800."""
    from napari_any2reg.widgets._dock import dock_of

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "molli")
    panels = {}
    for name in ("Registration", "Review", "T1 mapping", "Landmarks", "Export"):
        _, panels[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    main = panels["Registration"].window()  # Qt's top-level window: napari's main window
    first = dock_of(panels["Registration"])
    qtbot.waitUntil(lambda: len(main.tabifiedDockWidgets(first)) == 4, timeout=10_000)
    for name, panel in panels.items():
        assert panel.minimumSizeHint().height() <= 200, name  # scrolls instead of forcing the height
        assert panel.scroll_area.widget() is not None
    hint = main.minimumSizeHint()
    assert hint.height() <= 800 and hint.width() <= 1280, hint
    viewer.window.resize(1280, 800)
    qtbot.waitUntil(lambda: main.height() <= 800 and main.width() <= 1280, timeout=5_000)
    assert main.height() == 800 and main.width() == 1280
    # every panel is reachable: raising a tab shows it at a usable height
    dock = dock_of(panels["T1 mapping"])
    dock.raise_()
    qtbot.waitUntil(lambda: panels["T1 mapping"].isVisible(), timeout=5_000)
    assert panels["T1 mapping"].height() >= 300


def test_layers_say_frame_and_mm_and_show_the_inversion_time(viewer, widget):
    """Item 12: axis labels and units; the frame slider's frame and TI are shown on the canvas."""
    from napari_any2reg.widgets._dock import text_overlay

    (source,) = viewer.open_sample(PLUGIN, "molli")
    assert source.axis_labels == ("frame", "y", "x")
    assert [str(u) for u in source.units] == ["dimensionless", "millimeter", "millimeter"]
    assert viewer.dims.axis_labels == ("frame", "y", "x")
    viewer.dims.set_current_step(0, 2)
    ti = source.metadata["timings_ms"][2]
    label = text_overlay(viewer)
    assert label.visible and f"frame 2 / 7 · TI {ti:g} ms" in label.text


def test_dicom_folder_opens_in_a_worker_and_status_follows_the_layer(viewer, widget, qtbot, tmp_path, notifications):
    """Items 10 and 11: a DICOM folder is read off the GUI thread; messages do not go stale."""
    from test_io import _dicom_series

    tis = [100.0, 180.0, 260.0, 1100.0, 1180.0]
    _dicom_series(tmp_path / "series", tis=tis, shape=(24, 20))
    assert widget.open_path(tmp_path / "series")
    assert widget.read_worker is not None and not widget.open_folder_button.isEnabled()
    assert "Reading" in widget.status_label.text()
    qtbot.waitUntil(lambda: widget.read_worker is None, timeout=60_000)
    layer = viewer.layers[-1]
    assert layer.data.shape == (5, 24, 20) and widget.selected_layer() == layer
    np.testing.assert_allclose(layer.metadata["timings_ms"], tis)
    assert "Opened" in widget.status_label.text() and widget.open_folder_button.isEnabled()

    assert widget.open_path(tmp_path / "missing")  # errors come back as notifications
    qtbot.waitUntil(lambda: widget.read_worker is None, timeout=60_000)
    assert notifications["error"] and "Cannot open" in widget.status_label.text()
    assert len(viewer.layers) == 1

    # another layer chosen: the last message and bar are cleared, not left beside it
    other, _ = add_phantom(viewer)
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(other.name))
    assert "Cannot open" not in widget.status_label.text() and widget.progress_bar.value() == 0
