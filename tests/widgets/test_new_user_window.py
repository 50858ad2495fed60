"""A new user's first session in a real 1280x800 napari window (issue 23, items 6-11).

Every dock is added as the Plugins menu adds it (``plugin_dock``: napari hands the dock a
public-only proxy of the viewer), every action is a pressed button; 64x64 phantoms and a quick
groupwise run keep it short. What is checked is what the user sees: where the view is, what the
colour bars and status lines say, what fits the window.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMALL_SAMPLE_SHAPE
from conftest import capture_notifications, plugin_dock

pytestmark = [pytest.mark.napari, pytest.mark.usefixtures("small_samples")]

PLUGIN = "napari-any2reg"
SMALL = SMALL_SAMPLE_SHAPE  # the samples' size (conftest.small_samples)
FAST = 0.2
TIMEOUT_MS = 120_000
WINDOW = (1280, 800)


@pytest.fixture
def window(make_napari_viewer, qtbot):
    """A shown viewer at 1280x800 (the small laptop screen the issue was tried on)."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*WINDOW)
    qtbot.waitUntil(lambda: viewer.window.geometry()[2:] == WINDOW, timeout=5_000)
    return viewer


@pytest.fixture
def errors(monkeypatch):
    from napari_any2reg.widgets import mapping, registration, review

    calls = [capture_notifications(monkeypatch, module)["error"] for module in (registration, review, mapping)]
    return calls


def register(viewer, qtbot, registration, source=None):
    """Press Run on ``source`` (default: the MOLLI sample, opened now; quick groupwise);
    returns (source, registered)."""
    if source is None:
        (source,) = viewer.open_sample(PLUGIN, "molli")
    registration.engine_combo.setCurrentIndex(registration.engine_combo.findData("groupwise"))
    registration.iterations_spin.setValue(FAST)
    registration.run_button.click()
    qtbot.waitUntil(lambda: registration.worker is None, timeout=TIMEOUT_MS)
    assert registration.last_result is not None, registration.status_label.text()
    return source, viewer.layers[f"{source.name} registered"]


def shown_rect(viewer):
    """(y0, x0, y1, x1) of the world the canvas shows, from the camera and the canvas size."""
    camera = viewer.scene.camera
    (cy, cx), zoom = camera.center[-2:], camera.zoom
    h, w = viewer.canvas.size
    return cy - h / (2 * zoom), cx - w / (2 * zoom), cy + h / (2 * zoom), cx + w / (2 * zoom)


def fully_shown(layer, viewer) -> bool:
    y0, x0, y1, x1 = shown_rect(viewer)
    (ly0, lx0), (ly1, lx1) = np.asarray(layer.extent.world, float)[:, -2:] + [[0.5], [-0.5]] * np.asarray(layer.scale[-2:])
    return ly0 >= y0 and lx0 >= x0 and ly1 <= y1 and lx1 <= x1


# ---------------------------------------------------------------------- item 6
def test_results_placed_beside_or_below_are_brought_into_view(window, qtbot, errors):
    viewer = window
    registration = plugin_dock(viewer, "Registration")
    mapping = plugin_dock(viewer, "T1 mapping")
    assert registration.placement_combo.currentData() == "beside"
    (source,) = viewer.open_sample(PLUGIN, "molli")
    viewer.reset_view()
    viewer.scene.camera.zoom *= 1.5  # the user looks closer at the raw frames: the right side is cut
    assert not fully_shown(source, viewer)
    source, registered = register(viewer, qtbot, registration, source)
    assert registered.translate[-1] > source.translate[-1]  # beside
    assert fully_shown(registered, viewer) and fully_shown(source, viewer)

    viewer.scene.camera.zoom *= 2  # the user looks closer again: the maps below would be off-screen
    zoom = viewer.scene.camera.zoom
    mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy(), timeout=TIMEOUT_MS)
    maps = [viewer.layers[f"{name} T1"] for name in (source.name, registered.name)]
    assert all(layer.translate[-2] > source.translate[-2] for layer in maps)  # below the frames
    assert all(fully_shown(layer, viewer) for layer in maps)
    assert viewer.scene.camera.zoom < zoom  # it refitted to take the maps in
    assert fully_shown(source, viewer) and fully_shown(registered, viewer)

    # a view that already shows the new layer is left as the user set it
    viewer.scene.camera.zoom *= 0.5
    zoom = viewer.scene.camera.zoom
    registration.run_button.click()
    qtbot.waitUntil(lambda: registration.worker is None, timeout=TIMEOUT_MS)
    assert viewer.scene.camera.zoom == pytest.approx(zoom)
    assert errors == [[], [], []]


# ---------------------------------------------------------------------- item 8
def test_t1_status_counts_failures_in_the_body_or_the_roi(window, qtbot, errors):
    """Air and lungs fail to fit by nature: the status line and the ROI table count the body
    (pixels with signal) without an ROI, the ROI with one; never the background."""
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.widgets._layers import sequence_to_layer_data
    from napari_any2reg.widgets._mapping_helpers import BODY_ROW, signal_mask

    viewer = window
    phantom = make_phantom("molli", seed=0, shape=SMALL, spacing_mm=(4.5, 4.5))
    data, kwargs, _ = sequence_to_layer_data(phantom.sequence, name="molli")
    raw = viewer.add_image(data, **kwargs)
    mapping = plugin_dock(viewer, "T1 mapping")
    mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy(), timeout=TIMEOUT_MS)
    result = mapping.last_result.results["before"]
    body = signal_mask(raw.data) & result.mask
    background_failures = int((result.failed & ~body).sum())
    assert background_failures > 0  # the background does fail: that must not be what is reported
    text = mapping.status_label.text()
    assert f"{int((result.failed & body).sum())} of {int(body.sum())} body pixels failed" in text, text
    median = np.median(result.t1_ms[body & np.isfinite(result.t1_ms)])
    assert f"median T1 {median:.0f} ms in the body" in text
    assert f"{result.n_failed} " not in text.split(":", 1)[1].split(" of ")[0]
    table = mapping.results.stats_table
    assert table.rowCount() == 1 and BODY_ROW in table.item(0, 1).text()
    assert table.item(0, 2).text() == str(int(body.sum()))

    # with the truth labels as ROI: the ROI's pixels, and the myocardium near its true T1
    labels = viewer.add_labels(phantom.common_labels.astype(np.int32), name="truth labels", scale=raw.scale[-2:])
    mapping.set_roi_layer(labels)
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy(), timeout=TIMEOUT_MS)
    result = mapping.last_result.results["before"]
    roi = phantom.common_labels > 0
    text = mapping.status_label.text()
    assert f"{int((result.failed & roi).sum())} of {int(roi.sum())} ROI pixels failed" in text, text
    assert errors == [[], [], []]


# ---------------------------------------------------------------------- item 7
def test_every_colour_map_shows_its_quantity_unit_and_range(window, qtbot, errors):
    """The frame label (top left) names frame and TI first, then the layer, then what each
    visible colour map means with its unit and range; colour bars sit bottom right, clear of
    it, and the before/after differences share one bar."""
    from napari_any2reg.widgets._dock import COLORBAR_POSITION, text_overlay

    viewer = window
    registration = plugin_dock(viewer, "Registration")
    review = plugin_dock(viewer, "Review")
    mapping = plugin_dock(viewer, "T1 mapping")
    source, registered = register(viewer, qtbot, registration)
    qtbot.waitUntil(lambda: review.worker is None and review.review is not None, timeout=TIMEOUT_MS)

    def label():
        return text_overlay(viewer).text.split("\n")

    viewer.dims.set_current_step(0, 3)
    ti = source.metadata["timings_ms"][3]
    assert label()[0] == f"frame 3 / 7 · TI {ti:g} ms"  # first: a narrow canvas cuts line ends
    review.grid_button.click()
    qtbot.waitUntil(lambda: f"{registered.name} grid" in viewer.layers and not review.busy(), timeout=TIMEOUT_MS)
    grid = viewer.layers[f"{registered.name} grid"]
    top = float(grid.features["magnitude_mm"].max())
    assert any(line.startswith("grid colour |u| (mm): 0 – ") and f"{top:.3g}" in line for line in label()), label()

    review.jacobian_button.click()
    qtbot.waitUntil(lambda: f"{registered.name} Jacobian" in viewer.layers and not review.busy(), timeout=TIMEOUT_MS)
    jacobian = viewer.layers[f"{registered.name} Jacobian"]
    low, high = jacobian.contrast_limits
    assert f"det J (no unit): {low:.3g} – {high:.3g} · blue shrinks, 1 kept, red grows" in label(), label()
    assert jacobian.colorbar.visible and jacobian.colorbar.position == COLORBAR_POSITION
    jacobian.contrast_limits = (0.5, 1.5)  # the user widens the range: the legend follows
    assert "det J (no unit): 0.5 – 1.5 · blue shrinks, 1 kept, red grows" in label()
    jacobian.visible = False  # hidden: no legend for it
    assert not any(line.startswith("det J") for line in label())

    review.difference_button.click()
    qtbot.waitUntil(lambda: f"{registered.name} difference after" in viewer.layers and not review.busy(),
                    timeout=TIMEOUT_MS)
    before, after = (viewer.layers[f"{registered.name} difference {w}"] for w in ("before", "after"))
    assert before.visible and after.visible and tuple(before.contrast_limits) == tuple(after.contrast_limits)
    assert [before.colorbar.visible, after.colorbar.visible] == [False, True]  # one bar for one scale
    assert sum(line.startswith("frame − template (signal): ") for line in label()) == 1

    mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy(), timeout=TIMEOUT_MS)
    t1 = viewer.layers[f"{source.name} T1"]
    low, high = t1.contrast_limits
    assert f"T1 (ms): {low:.0f} – {high:.0f}" in label(), label()
    assert t1.colorbar.visible and t1.colorbar.position == COLORBAR_POSITION
    assert errors == [[], [], []]


# ---------------------------------------------------------------------- item 11
def test_a_layer_added_with_napari_defaults_takes_our_units(window):
    """napari's default units (pixel) next to our mm layers made it warn "Inconsistent units
    across layers" and draw without units; a new layer in our world takes mm."""
    viewer = window
    plugin_dock(viewer, "Registration")
    (source,) = viewer.open_sample(PLUGIN, "molli")
    labels = viewer.add_labels(np.zeros(SMALL, np.int32), scale=source.scale[-2:], name="my ROI")
    points = viewer.add_points(np.zeros((0, 3)), ndim=3, scale=source.scale, name="my points")
    assert [str(u) for u in labels.units] == ["millimeter", "millimeter"]
    assert [str(u) for u in points.units] == ["dimensionless", "millimeter", "millimeter"]
    assert viewer.layers.extent.units is not None  # None is what napari warns about
    own = viewer.add_image(np.zeros(SMALL), units=("micrometer", "micrometer"), name="own units")
    assert [str(u) for u in own.units] == ["micrometer", "micrometer"]  # units a user chose are kept


def test_landmark_points_are_visible_and_labelled_with_short_tags(window, qtbot):
    from napari_any2reg.widgets._points import landmark_tag

    viewer = window
    landmarks = plugin_dock(viewer, "Landmarks")
    (source,) = viewer.open_sample(PLUGIN, "molli")
    landmarks.new_button.click()
    points = landmarks.points_layer()
    assert points is not None and points.canvas_size_limits[0] >= 9  # never a 3-pixel dot
    viewer.layers.selection.active = points
    points.add(np.array([[0.0, 30.0, 30.0]]) * np.asarray(points.scale) + np.asarray(points.translate))
    name = points.features["name"].iloc[-1]
    assert name == "rv_insertion_anterior" and points.features["tag"].iloc[-1] == "RIA"
    assert list(points.text.values) == ["RIA"]  # the canvas shows the tag, the dock the full name
    assert landmark_tag("apex") == "apex" and landmark_tag("rv_insertion_inferior") == "RII"


# ---------------------------------------------------------------------- item 10
def test_opening_a_sample_keeps_the_window_responsive(window, monkeypatch):
    """File > Open Sample: the phantom is made in a thread while the event loop runs (the first
    time it imports torch: seconds of frozen window before). The work is slowed down here so
    the test sees the window's timers fire during it, which a GUI-thread call cannot allow."""
    import time

    from qtpy.QtCore import QTimer

    import napari_any2reg.core.phantom  # noqa: F401 (loading torch's library holds the GIL ~0.4 s once)
    from napari_any2reg.widgets import _sample_data

    viewer = window
    real = _sample_data.phantom_layer
    made = []

    def slow(key):
        time.sleep(0.6)
        layer = real(key)
        made.append(time.perf_counter())  # after this, napari adds the layer (its own cost)
        return layer

    monkeypatch.setattr(_sample_data, "phantom_layer", slow)
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    (menu,) = [a.menu() for a in viewer.window.file_menu.actions() if a.text() == "Open Sample"]
    (ours,) = [a.menu() for a in menu.actions() if a.text() == "Any2Reg cardiac motion correction"]
    (molli,) = [a for a in ours.actions() if a.text() == "Phantom MOLLI 5(3)3 with motion"]
    start = time.perf_counter()
    molli.trigger()
    end = time.perf_counter()
    timer.stop()
    during = [t for t in ticks if start < t < made[0]]
    assert made[0] - start >= 0.6 and len(during) >= 10, (made[0] - start, len(during))
    gaps = np.diff([start, *during, made[0]])
    assert gaps.max() < 0.25, gaps.max()  # no stall beyond a quarter second while it works
    (layer,) = viewer.layers
    assert layer.name == "MOLLI 5(3)3 phantom" and layer.data.shape == (8, *SMALL)


# ---------------------------------------------------------------------- item 9
def _within_viewport(widget, panel) -> bool:
    """``widget`` is shown inside ``panel``'s scroll viewport without scrolling."""
    from qtpy.QtCore import QPoint

    viewport = panel.scroll_area.viewport()
    top = widget.mapTo(viewport, QPoint(0, 0)).y()
    return widget.isVisible() and panel.scroll_area.verticalScrollBar().value() == 0 and \
        top >= 0 and top + widget.height() <= viewport.height()


def test_every_dock_shows_its_controls_and_result_at_1280x800(window, qtbot, tmp_path):
    """The five docks tabbed in a 1280x800 window: full tab titles, and each dock's main
    action, status line and result visible without scrolling; a screenshot of the window."""
    from qtpy.QtWidgets import QTabBar

    from napari_any2reg.widgets._dock import dock_of

    viewer = window
    names = ("Registration", "Review", "T1 mapping", "Landmarks", "Export")
    panels = {name: plugin_dock(viewer, name) for name in names}
    main = panels["Registration"].window()
    qtbot.waitUntil(lambda: len(main.tabifiedDockWidgets(dock_of(panels["Registration"]))) == 4, timeout=10_000)
    assert [dock_of(panels[name]).windowTitle() for name in names] == list(names)
    (bar,) = [b for b in main.findChildren(QTabBar) if b.isVisible() and "Review" in
              [b.tabText(i) for i in range(b.count())]]
    assert [bar.tabText(i) for i in range(bar.count())] == list(names)
    assert bar.sizeHint().width() <= bar.width(), (bar.sizeHint().width(), bar.width())  # nothing elided

    registration, review, mapping = panels["Registration"], panels["Review"], panels["T1 mapping"]
    source, registered = register(viewer, qtbot, registration)
    qtbot.waitUntil(lambda: review.worker is None and review.review is not None, timeout=TIMEOUT_MS)
    mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
    dock_of(mapping).raise_()
    qtbot.waitUntil(mapping.isVisible, timeout=5_000)
    mapping.run_button.click()
    qtbot.waitUntil(lambda: not mapping.busy(), timeout=TIMEOUT_MS)

    results = {"Registration": registration.status_label, "Review": review.table, "T1 mapping": mapping.stats_table,
               "Landmarks": panels["Landmarks"].status_label, "Export": panels["Export"].status_label}
    actions = {"Registration": registration.run_button, "Review": review.grid_button,
               "T1 mapping": mapping.run_button, "Landmarks": panels["Landmarks"].new_button,
               "Export": panels["Export"].export_button}
    for name in names:
        dock_of(panels[name]).raise_()
        qtbot.waitUntil(panels[name].isVisible, timeout=5_000)
        qtbot.wait(50)
        assert _within_viewport(actions[name], panels[name]), name
        if name == "Review":  # the overlay buttons on one tab, the QC table on the next
            review.tabs.setCurrentWidget(review.qc_section)
            qtbot.wait(50)
        assert _within_viewport(results[name], panels[name]), name
    # the ROI table shows both rows (before, after), not one
    table = mapping.stats_table
    assert table.rowViewportPosition(1) + table.rowHeight(1) <= table.viewport().height()

    path = tmp_path / "window_1280x800.png"
    image = viewer.screenshot(str(path), canvas_only=False, flash=False)
    ratio = main.devicePixelRatio()
    assert image.shape[:2] == (round(800 * ratio), round(1280 * ratio)) and path.stat().st_size > 10_000


def test_a_review_dock_opened_after_a_registration_joins_the_tabs(window, qtbot, errors):
    """The reader registers first and opens Review afterwards: the review starts at once on the
    registration (its constructor lets the event loop run before napari has docked it), and
    the dock still lands in a tab beside the others instead of squashing them."""
    from napari_any2reg.widgets._dock import dock_of

    viewer = window
    registration = plugin_dock(viewer, "Registration")
    mapping = plugin_dock(viewer, "T1 mapping")
    main = registration.window()
    qtbot.waitUntil(lambda: dock_of(mapping) in main.tabifiedDockWidgets(dock_of(registration)), timeout=10_000)
    register(viewer, qtbot, registration)

    review = plugin_dock(viewer, "Review")
    qtbot.waitUntil(lambda: dock_of(review) in main.tabifiedDockWidgets(dock_of(registration)), timeout=10_000)
    assert dock_of(review).windowTitle() == "Review"  # napari's " (napari-any2reg)" dropped, as for the others
    qtbot.waitUntil(lambda: review.worker is None and review.review is not None, timeout=TIMEOUT_MS)
    assert not any(call for call in errors)


# ---------------------------------------------------------------------- the whole session
def test_a_whole_first_session_raises_no_error_or_warning(window, qtbot, tmp_path, monkeypatch):
    """Done-when of issue 23: register the sample, open Review (its QC table fills, nothing left
    "computing"), the overlays appear, Export / Import CSV round-trip landmarks, the T1 fit
    never offers an overlay as ROI; napari shows no warning or error notification throughout."""
    from napari.utils.notifications import NotificationSeverity, notification_manager
    from qtpy.QtWidgets import QFileDialog

    from napari_any2reg.io.landmarks import read_landmarks_csv

    shown = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        viewer = window
        panels = {name: plugin_dock(viewer, name) for name in ("Registration", "Review", "T1 mapping", "Landmarks")}
        registration, review, mapping, landmarks = panels.values()
        source, registered = register(viewer, qtbot, registration)
        qtbot.waitUntil(lambda: review.worker is None and review.review is not None, timeout=TIMEOUT_MS)
        assert review.table.rowCount() == source.data.shape[0]
        assert "computing" not in review.status_label.text().lower()
        for button, suffix in (("grid_button", "grid"), ("scores_button", "scores"),
                               ("difference_button", "difference after")):
            getattr(review, button).click()
            qtbot.waitUntil(lambda suffix=suffix: f"{registered.name} {suffix}" in viewer.layers and not review.busy(),
                            timeout=TIMEOUT_MS)

        landmarks.select(image=source)
        landmarks.new_button.click()
        points = landmarks.points_layer()
        for frame in range(source.data.shape[0]):
            points.add(np.array([[frame, 20.0 + frame, 30.0]]))
        out = tmp_path / "landmarks.csv"
        monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "CSV (*.csv)")))
        landmarks.export_button.click()
        table = read_landmarks_csv(out)
        assert len(table) == source.data.shape[0]
        monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(out), "CSV (*.csv)")))
        landmarks.import_button.click()
        qtbot.waitUntil(lambda: "landmarks" in viewer.layers, timeout=10_000)
        back = viewer.layers["landmarks"]
        np.testing.assert_allclose(np.sort(back.data, axis=0), np.sort(points.data, axis=0), atol=1e-6)

        offered = [mapping.roi_combo.itemText(i) for i in range(mapping.roi_combo.count())]
        assert offered == ["(none)"]  # the grid (Shapes) and the points are not ROIs a user drew
        mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
        mapping.run_button.click()
        qtbot.waitUntil(lambda: not mapping.busy(), timeout=TIMEOUT_MS)
        assert mapping.last_result is not None
    finally:
        notification_manager.notification_ready.disconnect(shown.append)
    loud = [f"{n.severity}: {n.message}" for n in shown if n.severity >= NotificationSeverity.WARNING]
    assert loud == []
