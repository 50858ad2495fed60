"""Take the guided tour's screenshots (``docs/tour/*.png``) in a real napari window.

Headless use (Xvfb gives the OpenGL context napari needs)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/tour/make_tour.py

It does what the README's guided tour tells a new user to do, in a 1280x800 window: every dock
is added as the Plugins menu adds it (``viewer.window.add_plugin_dock_widget``) and every
action is the dock's own button, pressed:

1. ``01_open.png``      File > Open Sample > MOLLI phantom, the five docks from Plugins;
2. ``02_register.png``  Registration: Run (raw and registered side by side);
3. ``03_review.png``    Review: the QC table, the deformation grid and det J overlays;
4. ``04_t1_fit.png``    T1 mapping: Fit (raw and registered T1 maps, ROI table);
5. ``05_landmarks.png`` Landmarks: New, the RV insertion points clicked on every frame, TRE;
6. ``06_ecv.png``       T1 mapping > ECV: native + post-contrast as one set, then AHA
                        segments: boundaries, numbers, bullseye and table;
7. ``07_t2.png``        the T2-prep sample registered and fitted (T2 map, ms);
8. ``08_export.png``    Export: every item of the MOLLI registration into a folder.

The clicks of step 5 and the RV insertion points of step 6 are placed where the phantom's
true landmarks are (``Points.add``, the call a click in add mode makes); the post-contrast
series and the labels of step 6 come from ``docs/tour/tour_data.py`` (opened with the plugin's
reader, as File > Open does). ``OUT/tour.json`` records, per step, the layers the viewer held
and what the docks showed (status lines, QC summary, TRE, ECV, exported files): the README's
tour quotes it. ``tests/test_guided_tour.py`` runs this on a 64x64 sample.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN = "napari-any2reg"
DOCKS = ("Registration", "Review", "T1 mapping", "Landmarks", "Export")
STEPS = ("01_open", "02_register", "03_review", "04_t1_fit", "05_landmarks", "06_ecv", "07_t2", "08_export")

sys.path.insert(0, str(HERE))
from tour_data import RV_INSERTION, tour_phantoms, write_tour_data  # noqa: E402


class TourError(RuntimeError):
    """A step did not give what the tour shows."""


class Tour:
    """The viewer, the docks and the record of one run of the tour."""

    def __init__(self, args: argparse.Namespace) -> None:
        import napari
        from qtpy.QtWidgets import QApplication

        self.args = args
        self.out: Path = args.output_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.viewer = napari.Viewer(title="napari-any2reg guided tour", show=True)
        self.viewer.window.resize(*args.window)
        self.app = QApplication.instance()
        self.record: dict[str, Any] = {"window": list(args.window), "sample_size": args.sample_size, "steps": {}}
        self.docks: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def wait(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        start = time.perf_counter()
        while not condition():
            self.app.processEvents()
            time.sleep(0.02)
            if time.perf_counter() - start > (timeout or self.args.timeout):
                raise TourError(f"timed out waiting for {what}")

    def settle(self, n: int = 20) -> None:
        for _ in range(n):
            self.app.processEvents()
            time.sleep(0.02)

    def dock(self, name: str) -> Any:
        """Add the dock ``name`` as the Plugins menu does (once) and bring it to the front."""
        if name not in self.docks:
            _, self.docks[name] = self.viewer.window.add_plugin_dock_widget(PLUGIN, name)
        from qtpy.QtWidgets import QDockWidget

        widget = self.docks[name]

        parent = widget.parent()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parent()
        if parent is not None:
            parent.raise_()
        self.settle(5)
        return widget

    def idle(self, widget: Any, what: str) -> None:
        self.wait(lambda: widget.worker is None, what)
        self.settle(5)

    def fit_visible(self, box: Any = None) -> None:
        """Reset the view, then zoom onto the visible layers (hidden maps below keep their place), or
        onto ``box`` (world ``(low, high)`` of the last two axes)."""
        import numpy as np

        self.viewer.reset_view()
        boxes = [np.asarray(layer.extent.world, float)[:, -2:] for layer in self.viewer.layers if layer.visible]
        every = [np.asarray(layer.extent.world, float)[:, -2:] for layer in self.viewer.layers]
        if box is not None:
            boxes = [np.asarray(box, float)]
        if not boxes:
            return
        low, high = np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)
        all_low, all_high = np.min([b[0] for b in every], 0), np.max([b[1] for b in every], 0)
        size, all_size = np.maximum(high - low, 1e-6), np.maximum(all_high - all_low, 1e-6)
        self.viewer.scene.camera.zoom = self.viewer.scene.camera.zoom * 0.95 * float(np.min(all_size / size))
        centre = list(self.viewer.scene.camera.center)
        centre[-2:] = (low + high) / 2
        self.viewer.scene.camera.center = tuple(centre)

    def show_only(self, *layers: Any) -> None:
        keep = {id(layer) for layer in layers}
        for layer in self.viewer.layers:
            layer.visible = id(layer) in keep

    def shot(self, step: str, box: Any = None, **facts: Any) -> None:
        """Save the window as ``OUT/<step>.png`` (downscaled, 256 colours) and record the step."""
        from PIL import Image

        self.fit_visible(box)
        self.settle(25)
        image = self.viewer.screenshot(canvas_only=False, flash=False)
        picture = Image.fromarray(image[..., :3])
        width = self.args.png_width
        if width and picture.width > width:
            picture = picture.resize((width, round(picture.height * width / picture.width)), Image.Resampling.LANCZOS)
        picture = picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        path = self.out / f"{step}.png"
        picture.save(path, optimize=True)
        self.record["steps"][step] = {"png": path.name, "layers": [layer.name for layer in self.viewer.layers],
                                      "visible": [layer.name for layer in self.viewer.layers if layer.visible],
                                      **facts}
        print(f"saved {path}")

    def layer(self, name: str) -> Any:
        if name not in self.viewer.layers:
            raise TourError(f"no layer {name!r}; the viewer holds {[la.name for la in self.viewer.layers]}")
        return self.viewer.layers[name]

    # ------------------------------------------------------------------ the steps
    def open_sample(self) -> None:
        (self.source,) = self.viewer.open_sample(PLUGIN, "molli")
        for name in DOCKS[::-1]:  # Plugins > Any2Reg cardiac motion correction > each dock: they share one tab bar
            self.dock(name)
        registration = self.dock("Registration")
        if self.args.engine:
            registration.engine_combo.setCurrentIndex(registration.engine_combo.findData(self.args.engine))
        registration.iterations_spin.setValue(self.args.iterations_scale)
        self.shot("01_open", sample=self.source.name, frames=int(self.source.data.shape[0]),
                  engine=str(registration.engine_combo.currentData()))

    def register(self) -> None:
        import numpy as np

        registration = self.dock("Registration")
        registration.run_button.click()
        self.idle(registration, "the registration")
        if registration.last_result is None:
            raise TourError(f"registration failed: {registration.status_label.text()}")
        self.registered = self.layer(f"{self.source.name} registered")
        displacement = np.asarray(self.registered.metadata["displacement"])
        self.frame = int(np.argmax(np.abs(displacement).reshape(len(displacement), -1).mean(1)))
        self.viewer.dims.set_current_step(0, self.frame)
        self.viewer.layers.selection.active = self.registered
        self.shot("02_register", status=registration.status_label.text(), frame=self.frame,
                  summary=registration.last_result.summary())

    def review(self) -> None:
        review = self.dock("Review")
        self.wait(lambda: review.worker is None and review.review is not None, "the QC table")
        for button, suffix in (("grid_button", "grid"), ("jacobian_button", "Jacobian")):
            getattr(review, button).click()
            self.wait(lambda suffix=suffix: f"{self.registered.name} {suffix}" in self.viewer.layers and not review.busy(),
                      f"the {suffix} overlay")
        review.tabs.setCurrentWidget(review.qc_section)
        review.go_to_frame(self.frame)
        self.shot("03_review", summary=review.summary_label.text(), qc_rows=review.table.rowCount(),
                  overlays=[f"{self.registered.name} grid", f"{self.registered.name} Jacobian"])

    def fit_t1(self) -> None:
        mapping = self.dock("T1 mapping")
        mapping.device_combo.setCurrentIndex(mapping.device_combo.findData("cpu"))
        mapping.select_layers(before=self.source, after=self.registered)
        for suffix in ("grid", "Jacobian", "folding"):
            name = f"{self.registered.name} {suffix}"
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
        mapping.run_button.click()
        self.wait(lambda: not mapping.busy(), "the T1 fit")
        maps = [self.layer(f"{name} T1") for name in (self.source.name, self.registered.name)]
        mapping.scroll_area.verticalScrollBar().setValue(0)
        self.shot("04_t1_fit", status=mapping.status_label.text(), maps=[m.name for m in maps],
                  table=_table_rows(mapping.stats_table))

    def landmarks(self) -> None:
        native, _ = self.phantoms
        landmarks = self.dock("Landmarks")
        landmarks.select(image=self.source)
        landmarks.new_button.click()
        points = landmarks.points_layer()
        if points is None:
            raise TourError(f"no landmarks layer: {landmarks.status_label.text()}")
        n_frames = int(self.source.data.shape[0])
        for _ in range(len(RV_INSERTION) * n_frames):  # one click per landmark and frame, as the dock asks
            frame, name = landmarks.current_frame(), landmarks.current_landmark()
            y, x = native.landmarks[name][frame]
            points.add([[frame, float(y), float(x)]])
            self.settle(3)
        if len(landmarks.placed()) != len(RV_INSERTION) * n_frames:
            raise TourError(f"landmarks not all placed: {landmarks.status_label.text()}")
        placed = landmarks.status_label.text()
        landmarks.select(registered=self.registered)
        landmarks.tre_button.click()
        self.idle(landmarks, "the TRE")
        report = landmarks.last_tre
        self.points = points
        self.show_only(self.source, self.registered, points)
        self.viewer.layers.selection.active = points
        self.viewer.dims.set_current_step(0, self.frame)
        self.shot("05_landmarks", placed=placed, status=landmarks.status_label.text(),
                  tre_before_mm=round(float(report.before["overall"]), 2),
                  tre_after_mm=round(float(report.after["overall"]), 2), table=_table_rows(landmarks.tre_table))

    def ecv(self) -> None:
        import numpy as np
        import tifffile

        mapping = self.dock("T1 mapping")
        (post,) = self.viewer.open(str(self.data["post.tif"]), plugin=PLUGIN)
        post.name = "post-contrast MOLLI"
        labels = self.viewer.add_labels(np.asarray(tifffile.imread(self.data["labels.tif"]), np.int32),
                                        name="labels", scale=self.source.scale[-2:], opacity=0.35,
                                        units=tuple(self.source.units[-2:]))
        section = mapping.ecv_section
        section.native_combo.set_layer(self.source)
        section.post_combo.set_layer(post)
        section.labels_combo.set_layer(labels)
        section.synthetic_check.setChecked(False)
        section.hematocrit_spin.setValue(0.42)
        section.run_button.click()
        self.idle(mapping, "the ECV")
        if section.last_outcome is None:
            raise TourError(f"ECV failed: {mapping.status_label.text()}")
        ecv = self.layer(f"{self.source.name} ECV")

        # the RV insertion points, clicked on the labels (the native grid; anterior first)
        native, _ = self.phantoms
        rv = np.array([native.common_landmarks[name] for name in RV_INSERTION], float)
        world = rv * np.asarray(labels.scale[-2:]) + np.asarray(labels.translate[-2:])
        insertion = self.viewer.add_points(np.zeros((0, 2)), name="RV insertion", size=3 * float(labels.scale[-1]),
                                           face_color="yellow", units=tuple(labels.units))
        for point in world:
            insertion.add([point])
        segments = mapping.segments_section
        segments.map_combo.set_layer(ecv)
        segments.labels_combo.set_layer(labels)
        segments.points_combo.set_layer(insertion)
        segments.run_button.click()
        self.settle(5)
        if segments.last_analysis is None:
            raise TourError(f"segments failed: {mapping.status_label.text()}")
        overlay = [self.layer(f"{ecv.name} AHA segments"), self.layer(f"{ecv.name} segment numbers")]
        self.show_only(ecv, *overlay)
        # zoom onto the heart of the ECV map: the segments, their numbers and the colour bar
        rows, cols = np.nonzero(np.asarray(labels.data) > 0)
        pixels = np.array([[rows.min(), cols.min()], [rows.max() + 1, cols.max() + 1]], float)
        heart = (pixels - 0.5) * np.asarray(ecv.scale[-2:]) + np.asarray(ecv.translate[-2:])
        margin = 0.6 * (heart[1] - heart[0])
        heart = np.array([heart[0] - margin, heart[1] + margin])
        mapping.scroll_area.ensureWidgetVisible(segments.canvas, 0, 0)
        outcome = section.last_outcome.ecv
        self.shot("06_ecv", box=heart, result=section.result_label.text(), hematocrit=float(outcome.hematocrit),
                  myocardial_ecv_percent=round(float(outcome.myocardial_mean()), 2),
                  segments=_table_rows(segments.table), post_layer=post.name)

    def t2(self) -> None:
        (t2prep,) = self.viewer.open_sample(PLUGIN, "t2prep")
        registration = self.dock("Registration")
        registration.run(t2prep)
        self.idle(registration, "the T2-prep registration")
        registered = self.layer(f"{t2prep.name} registered")
        mapping = self.dock("T1 mapping")
        mapping.select_layers(before=t2prep, after=registered)
        mapping.set_roi_layer(None)  # the MOLLI labels are not this phantom's anatomy: statistics of the body
        if mapping.model() != "t2":
            raise TourError(f"the Mapping dock chose {mapping.model()!r} for the T2-prep sample")
        mapping.run_button.click()
        self.wait(lambda: not mapping.busy(), "the T2 fit")
        maps = [self.layer(f"{name} T2") for name in (t2prep.name, registered.name)]
        self.show_only(t2prep, registered, *maps)
        self.viewer.dims.set_current_step(0, 0)  # the MOLLI frames went to 7; this series has 4
        mapping.scroll_area.verticalScrollBar().setValue(0)
        self.shot("07_t2", model=mapping.model(), times_ms=list(mapping.timings()), status=mapping.status_label.text(),
                  maps=[m.name for m in maps], table=_table_rows(mapping.stats_table))

    def export(self) -> None:
        export = self.dock("Export")
        export.select(registered=self.registered, points=self.points)
        folder = self.out / "export" if self.args.export_dir is None else self.args.export_dir
        export.folder_edit.setText(str(folder))
        export.overwrite_check.setChecked(True)
        export.export_button.click()
        self.idle(export, "the export")
        if export.last_result is None:
            raise TourError(f"export failed: {export.status_label.text()}")
        self.show_only(self.source, self.registered, self.points)
        status = export.status_label.text().replace(str(folder), "EXPORT_FOLDER")  # no temporary path in the record
        self.shot("08_export", status=status, items=list(export.last_result.items),
                  files=sorted(p.name for p in export.last_result.files))

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        from napari.utils.notifications import NotificationSeverity, notification_manager

        shown: list[Any] = []
        notification_manager.notification_ready.connect(shown.append)
        try:
            self.phantoms = tour_phantoms(self.args.sample_size)
            self.data = write_tour_data(self.args.data_dir or self.out / "data", self.args.sample_size)
            for step in (self.open_sample, self.register, self.review, self.fit_t1, self.landmarks, self.ecv, self.t2,
                         self.export):
                started = time.perf_counter()
                step()
                name = next(reversed(self.record["steps"]))
                self.record["steps"][name]["seconds"] = round(time.perf_counter() - started, 1)
        finally:
            notification_manager.notification_ready.disconnect(shown.append)
        self.record["notifications"] = [f"{n.severity}: {n.message}" for n in shown
                                        if n.severity >= NotificationSeverity.WARNING]
        return self.record

    def close(self) -> None:
        self.viewer.close()


def _table_rows(table: Any) -> list[list[str]]:
    """The cells of a QTableWidget as text."""
    return [[table.item(i, j).text() if table.item(i, j) else "" for j in range(table.columnCount())]
            for i in range(table.rowCount())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=HERE)
    parser.add_argument("--sample-size", type=int, default=192, help="sample size in pixels (default: 192, the plugin's)")
    parser.add_argument("--engine", default=None, help="registration engine (default: the dock's default)")
    parser.add_argument("--iterations-scale", type=float, default=1.0, help="iterations of the classical engines")
    parser.add_argument("--window", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"))
    parser.add_argument("--png-width", type=int, default=1024, help="width of the saved PNGs (0: the window's)")
    parser.add_argument("--export-dir", type=Path, default=None, help="export folder (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one action")
    args = parser.parse_args(argv)

    from napari_any2reg.widgets import _sample_data

    _sample_data.SAMPLE_SHAPE = (args.sample_size, args.sample_size)
    import shutil
    import tempfile

    scratch, args.data_dir = None, None
    if args.export_dir is None and args.output_dir.resolve() == HERE:  # the export and data are not docs
        scratch = Path(tempfile.mkdtemp(prefix="any2reg-tour-"))
        args.export_dir, args.data_dir = scratch / "export", scratch / "data"
    tour = Tour(args)
    try:
        record = tour.run()
    except TourError as exc:
        print(f"tour failed: {exc}", file=sys.stderr)
        return 1
    finally:
        tour.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    (args.output_dir / "tour.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"saved {args.output_dir / 'tour.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
