"""napari layer: the Review widget in a real viewer (sample → register → overlays, QC table, profile).

Like ``test_widgets.py``: 64x64 phantoms, real engines with few iterations, and every test waits
for the workers it started (registration and review) before it ends.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest

pytestmark = [pytest.mark.napari, pytest.mark.usefixtures("small_samples")]

PLUGIN = "napari-any2reg"
FAST = 0.2
TIMEOUT_MS = 120_000


def default_engine_ready() -> bool:
    """The shipped network's weights are listed in ``weights/manifest.json``."""
    from napari_any2reg.io.model_io import read_manifest

    try:
        from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS

        return DEFAULT_WEIGHTS in read_manifest()
    except Exception:
        return False


@pytest.fixture
def errors(monkeypatch):
    """Capture the Review widget's error notifications."""
    from conftest import capture_notifications

    from napari_any2reg.widgets import review

    return capture_notifications(monkeypatch, review)["error"]


@pytest.fixture
def registration(viewer, qtbot):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Registration")
    yield w
    if w.worker is not None:
        w.cancel()
        qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)


@pytest.fixture
def review(viewer, qtbot):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Review")
    yield w
    qtbot.waitUntil(lambda: not w.busy(), timeout=TIMEOUT_MS)  # no overlay or review thread outlives a test


def register_sample(viewer, registration, qtbot, key="molli"):
    (source,) = viewer.open_sample(PLUGIN, key)
    if not default_engine_ready():  # until the network ships, a quick classical run
        registration.engine_combo.setCurrentIndex(registration.engine_combo.findData("groupwise"))
        registration.iterations_spin.setValue(FAST)
    assert registration.run(source)
    qtbot.waitUntil(lambda: registration.worker is None, timeout=TIMEOUT_MS)
    assert registration.last_result is not None, registration.status_label.text()
    return source, viewer.layers[f"{source.name} registered"]


def wait_review(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None and w.review is not None, timeout=TIMEOUT_MS)


def wait_idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.busy(), timeout=TIMEOUT_MS)


def in_view(layer, viewer):
    """Indices of the shapes / vectors on the frame the slider shows (public API: the slider's
    world point mapped into the layer's data coordinates)."""
    frame = int(round(float(layer.world_to_data(viewer.dims.point)[0])))
    from napari.layers import Vectors

    if isinstance(layer, Vectors):  # (M, 2, 3): position, direction
        return np.flatnonzero(np.round(np.asarray(layer.data)[:, 0, 0]) == frame)
    return np.array([i for i, path in enumerate(layer.data) if np.all(np.round(path[:, 0]) == frame)], dtype=int)


# ---------------------------------------------------------------------- the whole flow
def test_review_flow_in_a_real_viewer(viewer, registration, review, qtbot, errors):
    from qtpy.QtCore import Qt

    source, registered = register_sample(viewer, registration, qtbot)
    data_before = source.data.copy()
    registered_before = registered.data.copy()
    meta_before = copy.deepcopy({k: v for k, v in source.metadata.items()})
    n, h, w = registered.data.shape
    scale = np.asarray(registered.scale)

    # the new registered layer is picked up and its QC computed in a worker
    assert review.layer_combo.currentText() == registered.name
    assert review.source_label.text() == source.name
    wait_review(qtbot, review)
    assert errors == []
    assert review.table.rowCount() == n
    assert review.table.columnCount() == len(review.table_data.COLUMNS) + 1
    summary = review.summary_label.text()
    engine = registered.metadata["any2reg_result"]["engine"]
    assert engine in summary and "folding" in summary and "→" in summary

    # clicking a row moves the frame slider to that frame
    viewer.dims.set_current_step(0, 0)
    item = review.table.item(5, 0)
    qtbot.mouseClick(review.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=review.table.visualItemRect(item).center())
    assert viewer.dims.current_step[0] == 5
    review.go_to_frame(2)
    assert viewer.dims.current_step[0] == 2

    # deformation grid: one path per line and frame, frame axis first, follows the slider
    assert review.show_grid()
    wait_idle(qtbot, review)
    grid = viewer.layers[f"{registered.name} grid"]
    assert grid.ndim == 3 and len(grid.data) % n == 0
    per_frame = len(grid.data) // n
    np.testing.assert_allclose(grid.scale, scale)
    np.testing.assert_allclose(grid.translate, source.translate)  # drawn on the raw frames
    assert all(s == "path" for s in grid.shape_type)
    frames = np.array([path[0, 0] for path in grid.data])
    assert all(np.all(path[:, 0] == path[0, 0]) for path in grid.data)
    np.testing.assert_array_equal(np.bincount(frames.astype(int)), [per_frame] * n)
    viewer.dims.set_current_step(0, 3)
    shown = in_view(grid, viewer)
    assert len(shown) == per_frame and np.all(frames[shown] == 3)
    # a second click replaces the overlay, it does not pile up
    review.grid_spacing_spin.setValue(16.0)
    assert review.show_grid()
    wait_idle(qtbot, review)
    grid2 = viewer.layers[f"{registered.name} grid"]
    assert grid2 != grid and len(grid2.data) < len(grid.data)
    assert sum(layer.name.startswith(f"{registered.name} grid") for layer in viewer.layers) == 1

    assert review.show_quiver()
    wait_idle(qtbot, review)
    quiver = review.overlay_layer("quiver")
    assert quiver.data.shape[1:] == (2, 3)
    np.testing.assert_allclose(quiver.scale, scale)
    assert np.all(quiver.data[:, 1, 0] == 0)  # arrows stay on their frame
    assert np.all(quiver.data[in_view(quiver, viewer), 0, 0] == 3)

    # image overlays: (N, H, W) with the registered layer's scale
    assert review.show_jacobian() and review.show_folding()
    assert review.show_scores() and review.show_differences()
    assert review.show_checkerboard()  # built in a worker
    qtbot.waitUntil(lambda: f"{registered.name} difference after" in viewer.layers, timeout=TIMEOUT_MS)
    wait_idle(qtbot, review)
    checker = viewer.layers[f"{registered.name} checkerboard"]
    for suffix in ("Jacobian", "folding", "scores", "difference before", "difference after", "checkerboard"):
        layer = viewer.layers[f"{registered.name} {suffix}"]
        assert layer.data.shape == (n, h, w), suffix
        np.testing.assert_allclose(layer.scale, scale)
        base = source if suffix == "difference before" else registered
        np.testing.assert_allclose(layer.translate, base.translate)
    jac = viewer.layers[f"{registered.name} Jacobian"]
    lo, hi = jac.contrast_limits
    assert 0.0 < lo < 1.0 < hi < 2.0 and lo + hi == pytest.approx(2.0)  # centred at 1, from the data
    assert np.all(jac.data > 0)  # a smooth registration does not fold ...
    assert not viewer.layers[f"{registered.name} folding"].data.any()  # ... so nothing is marked
    scores = viewer.layers[f"{registered.name} scores"].data
    assert 0 <= scores.min() and scores.max() <= 1
    if "correspondence" in registered.metadata:  # the network's own maps are shown as they are
        np.testing.assert_allclose(scores, registered.metadata["correspondence"])
    tiles = review.tiles_spin.value()
    np.testing.assert_array_equal(checker.data[:, 0, 0], source.data[:, 0, 0])
    np.testing.assert_array_equal(checker.data[:, 0, w // tiles], registered.data[:, 0, w // tiles])

    # the overlays are not sequences: the Registration panel neither lists nor picks them
    listed = [registration.layer_combo.itemText(i) for i in range(registration.layer_combo.count())]
    assert listed == [source.name, registered.name]
    assert registration.layer_combo.currentText() == source.name

    # toggle raw <-> registered changes only visibility
    assert registered.visible
    review.toggle_raw_registered()
    assert source.visible and not registered.visible
    review.toggle_raw_registered()
    assert registered.visible and not source.visible
    source.visible = True

    # temporal profile: programmatic and via the viewer's double-click
    profile = review.show_profile(30, 25)
    np.testing.assert_allclose(profile["raw"], source.data[:, 30, 25])
    np.testing.assert_allclose(profile["registered"], registered.data[:, 30, 25])
    np.testing.assert_allclose(np.sort(profile["t"]), np.sort(source.metadata["timings_ms"]))
    assert len(review.figure.axes) == 1 and len(review.figure.axes[0].lines) == 2
    world = registered.data_to_world((3, 40, 20))
    review._on_double_click(types.SimpleNamespace(position=tuple(world)))
    assert (review.last_profile["y"], review.last_profile["x"]) == (40, 20)

    assert errors == []
    # the user's layers are untouched
    assert source.data.tobytes() == data_before.tobytes()
    assert registered.data.tobytes() == registered_before.tobytes()
    assert source.metadata.keys() == meta_before.keys()


def test_thresholds_flag_rows_and_reasons(viewer, registration, review, qtbot, errors):
    _, registered = register_sample(viewer, registration, qtbot)
    wait_review(qtbot, review)
    n = registered.data.shape[0]
    reason_column = review.table.columnCount() - 1
    review.score_threshold_spin.setValue(1.0)  # every frame is below a perfect score
    assert review.table_data.flagged_frames == list(range(n))
    assert all("score" in review.table.item(r, reason_column).text() for r in range(n))
    flagged_colour = review.table.item(0, 0).background().color()
    review.score_threshold_spin.setValue(0.0)
    review.correlation_threshold_spin.setValue(0.0)
    review.folding_threshold_spin.setValue(100.0)
    assert review.table_data.flagged_frames == []
    assert review.table.item(0, reason_column).text() == ""
    assert review.table.item(0, 0).background().color() != flagged_colour

    # a re-run replaces the registered layer's data: the review is redone, never left stale
    old = review.review
    source = viewer.layers[registered.metadata["source_layer"]]
    registration.reference_combo.setCurrentIndex(registration.reference_combo.findData("fixed"))
    registration.frame_spin.setValue(0)
    assert registration.run(source)
    qtbot.waitUntil(lambda: registration.worker is None, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: review.worker is None and review.review is not None and review.review is not old,
                    timeout=TIMEOUT_MS)
    assert review.table_data.rows[0].max_displacement_mm == pytest.approx(0.0, abs=1e-3)  # the fixed frame
    assert review.table.rowCount() == n
    assert errors == []

    # Cancel drops a review being computed (as in every dock): the table shown stays
    shown = review.review
    assert review.compute_review(force=True) and review.cancel_button.isEnabled()
    review.cancel()
    wait_idle(qtbot, review)
    assert "cancelled" in review.status_label.text() and review.review is shown
    assert review.table.rowCount() == n and not review.cancel_button.isEnabled()
    assert errors == []


def test_review_without_source_or_result_reports_errors(viewer, review, qtbot, errors):
    rng = np.random.default_rng(0)
    assert review.layer_combo.count() == 0
    assert review.show_jacobian() is False and review.show_scores() is False
    assert errors and "Registration" in errors[-1]

    # a registered layer whose source is gone: overlays from the field still work,
    # raw-vs-registered views explain what is missing
    frames = rng.random((4, 32, 32)).astype(np.float32)
    meta = {"displacement": np.zeros((4, 2, 32, 32), np.float32), "source_layer": "gone",
            "any2reg_result": {"engine": "groupwise", "device": "cpu", "seconds": 1.0, "folding_percent": 0.0}}
    layer = viewer.add_image(frames, name="gone registered", metadata=meta, scale=(1, 2, 2))
    assert review.layer_combo.currentText() == layer.name
    assert "not found" in review.source_label.text()
    assert review.worker is None  # nothing to compute against
    assert review.show_grid() and review.show_jacobian()
    wait_idle(qtbot, review)
    grid = review.overlay_layer("grid")
    assert grid is not None and len(grid.data) % 4 == 0
    jacobian = review.overlay_layer("jacobian")
    np.testing.assert_allclose(jacobian.data, 1.0)  # zero field
    np.testing.assert_allclose(jacobian.scale, (1, 2, 2))
    n_errors = len(errors)
    assert review.show_checkerboard() is None
    assert len(errors) == n_errors + 1 and "'gone'" in errors[-1] and "open it again" in errors[-1]
    assert review.show_profile(3, 3) is None
    assert sorted(la.name for la in viewer.layers) == ["gone registered", "gone registered Jacobian",
                                                       "gone registered grid"]


def test_review_is_a_plugin_dock_widget(viewer):
    from napari_any2reg.widgets.review import ReviewWidget

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Review")
    assert isinstance(widget, ReviewWidget)
    assert widget.layer_combo.count() == 0 and not widget.grid_button.isEnabled()


# ---------------------------------------------------------------------- issue 11: usability
def test_overlays_in_workers_readable_and_not_piled(viewer, registration, review, qtbot, errors):
    """Items 10-12: overlays are built off the GUI thread; the display is readable; a new image
    overlay hides the ones it would pile onto; the toggle is not hidden behind overlays; the QC
    table has a TI column and lengths in mm; side by side and back."""
    from napari_any2reg.core import qc
    from napari_any2reg.widgets._layers import beside_translate

    source, registered = register_sample(viewer, registration, qtbot)
    wait_review(qtbot, review)
    n, h, w = registered.data.shape
    np.testing.assert_allclose(registered.translate, beside_translate(source.translate, source.scale, (n, h, w)))

    headers = [review.table.horizontalHeaderItem(c).text() for c in range(review.table.columnCount())]
    assert headers[1] == "TI (ms)" and "|∇J| (1/mm)" in headers and not any("px" in t for t in headers)
    times = [float(review.table.item(r, 1).text()) for r in range(n)]
    np.testing.assert_allclose(times, source.metadata["timings_ms"])

    # item 10: the grid is built in a worker; the panel answers at once and the layer follows
    assert review.show_grid()
    assert review.busy() and review.overlay_layer("grid") is None and review.progress_bar.maximum() == 0
    wait_idle(qtbot, review)
    grid = review.overlay_layer("grid")
    assert grid.edge_width[0] == pytest.approx(qc.grid_line_width((h, w)))
    assert review.progress_bar.maximum() == 100

    step = review.quiver_step_spin.value()
    assert review.show_quiver()
    wait_idle(qtbot, review)
    quiver = review.overlay_layer("quiver")
    lengths = np.hypot(quiver.data[:, 1, 1], quiver.data[:, 1, 2])
    assert quiver.length == pytest.approx(qc.arrow_display_scale(lengths, step)) and quiver.length >= 1
    assert np.percentile(lengths * quiver.length, 95) >= 0.8 * step - 1e-3  # visible arrows
    assert "×" in review.status_label.text()

    # one image overlay at a time per position, each with a colour bar
    assert review.show_jacobian()
    wait_idle(qtbot, review)
    jacobian = review.overlay_layer("jacobian")
    assert jacobian.visible and jacobian.colorbar.visible
    assert review.show_scores()
    # the layer arrives in one event-loop turn, its colour bar in the next (run_in_turns)
    qtbot.waitUntil(lambda: review.overlay_layer("scores") is not None and not review.busy(), timeout=TIMEOUT_MS)
    scores = review.overlay_layer("scores")
    assert scores.visible and scores.colorbar.visible
    assert not jacobian.visible and not jacobian.colorbar.visible
    assert grid.visible and quiver.visible  # line overlays stay

    # item 11: the toggle shows the chosen layer, not the overlays on top of it
    review.side_by_side(False)
    np.testing.assert_allclose(registered.translate, source.translate)
    np.testing.assert_allclose(scores.translate, registered.translate)  # follows the registered layer
    np.testing.assert_allclose(grid.translate, source.translate)  # stays on the raw frames
    review.toggle_raw_registered()
    assert source.visible and not registered.visible and not scores.visible
    assert "hidden" in review.status_label.text()
    review.toggle_raw_registered()
    assert registered.visible and not source.visible
    review.side_by_side(True)
    np.testing.assert_allclose(registered.translate, beside_translate(source.translate, source.scale, (n, h, w)))
    assert source.visible and registered.visible
    assert errors == []


def test_double_click_plots_the_profile_without_zooming(viewer, registration, review, qtbot, errors):
    """Item 11: napari's double-click zoom is replaced on the reviewed layers, kept elsewhere."""
    from napari.utils.interactions import mouse_double_click_callbacks

    source, registered = register_sample(viewer, registration, qtbot)
    wait_review(qtbot, review)
    viewer.layers.selection.active = registered  # pan/zoom mode: napari would zoom
    zoom = viewer.scene.camera.zoom

    def double_click(world):
        mouse_double_click_callbacks(viewer, types.SimpleNamespace(position=tuple(world), modifiers=[],
                                                                    view_direction=None, dims_displayed=[1, 2]))

    double_click(registered.data_to_world((3, 40, 20)))
    assert (review.last_profile["y"], review.last_profile["x"]) == (40, 20)
    assert viewer.scene.camera.zoom == pytest.approx(zoom)
    double_click(source.data_to_world((3, 10, 12)))  # the raw layer (beside) works as well
    assert (review.last_profile["y"], review.last_profile["x"]) == (10, 12)
    assert viewer.scene.camera.zoom == pytest.approx(zoom)
    outside = np.asarray(registered.data_to_world((3, 40, 20)), float)
    outside[-2] += 10 * registered.data.shape[-2] * registered.scale[-2]
    review.last_profile = None
    double_click(outside)  # not on an image: napari's zoom as usual
    assert review.last_profile is None and viewer.scene.camera.zoom == pytest.approx(2 * zoom)

    # closing the panel gives napari its zoom back
    review.close()
    callbacks = viewer.mouse_double_click_callbacks
    assert any(getattr(cb, "__name__", "") == "double_click_to_zoom" for cb in callbacks)
    assert errors == []
