"""The "Landmarks" dock widget: click named landmarks on every frame, TRE, propagation and Dice.

Thin by design: the numbers come from :mod:`napari_any2reg.core.landmarks`; this module finds
the layers, turns a Points layer into a :class:`~napari_any2reg.core.landmarks.LandmarkTable`
and results back into layers and tables.

Clicking landmarks
------------------
* Choose the raw sequence ("Image") and a Points layer with the frame axis ("New" makes
  ``"<image> landmarks"`` on the image's grid, in add mode). Every point carries a ``name``
  feature (shown as text) — the landmark it marks; the same name is used on every frame.
* The list holds the landmarks to click (defaults: anterior and inferior RV insertion points;
  add your own). The highlighted one is what the next click places. After each click the widget
  moves to the next landmark not yet placed — all landmarks on a frame, then the next frame (or,
  with "each frame, then the next landmark", one landmark through all frames) — and moves the
  frame slider there.
* Clicking a landmark again on a frame moves it: the earlier point of that landmark and frame is
  removed. Moving and deleting points work as usual in napari (select mode, Delete key).
* Import / Export CSV use the columns ``frame,name,y,x,y_mm,x_mm`` (pixels of the image,
  frame 0-based), the format ``any2reg tre`` reads. Import adds a new Points layer.

With a registration ("<image> registered", from the Registration panel)
-------------------------------------------------------------------------
* **TRE**: before and after, per landmark and overall, in mm (``docs/design.md`` §9).
* **Show on registered**: the landmarks mapped to the common grid, as a Points layer on the
  registered layer (after a good registration each landmark stays put from frame to frame).
* **Propagate points**: the landmarks of the current frame carried to every raw frame (new
  Points layer ``"<image> landmarks (propagated)"``), so a reader clicks one frame and corrects.
* **Propagate mask**: the current frame of a Labels layer carried to every raw frame (new
  Labels layer ``"<labels> propagated"``).
* **All-pair Dice** per label (LV blood pool, LV myocardium, RV blood pool) of a Labels layer
  ``(N, H, W)``, before and after warping to the common grid.

User layers are never modified, except the chosen Points layer, by the user's own clicks (and
the removal of a re-clicked landmark's earlier point).

Coordinates: the Points layer may have its own scale / translate; positions go through world
coordinates (scale and translate; rotation and shear are not supported) to the image's pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.landmarks import DiceReport, LandmarkTable, TREReport
from ._base import WorkerDock
from ._dock import compact_combos, install_frame_label, scroll_body
from ._landmarks_names import STEP_ORDERS, LandmarkNames
from ._landmarks_tools import OWN_KEY, RegistrationTools
from ._layers import axes_kwargs
from ._pickers import LayerPicker, contains, is_registered_layer, is_sequence_layer, same_layer
from ._points import NAME_FEATURE, TAG_FEATURE, landmark_tag, points_in_image_pixels, points_to_table, table_points_data
from ._registered import RegisteredLayer

if TYPE_CHECKING:
    import napari

__all__ = ["LandmarksWidget", "STEP_ORDERS", "NAME_FEATURE", "points_to_table"]

#: Canvas label of a point: its short tag (``landmark_tag``), not the full name that would cover
#: the anatomy; the dock lists the names.
_TEXT = {"string": "{%s}" % TAG_FEATURE, "size": 8, "color": "yellow", "anchor": "upper_left"}

#: Point diameter in image pixels.
_POINT_SIZE = 3.0

#: On-screen diameter limits (canvas pixels): a point stays big enough to see and to click at
#: any zoom (3 image pixels are 3 screen pixels when the view fits a small window).
_CANVAS_SIZE_LIMITS = (9.0, 40.0)


class LandmarksWidget(WorkerDock):
    """Dock widget to click named landmarks on every frame and score a registration with them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self._connected: Points | None = None
        self._busy = False  # our own edits of the points layer: do not step
        self._pending_removal: list[tuple[Points, int, str]] = []
        self._build_ui()
        self.watch_layers()
        self.refresh_layers()
        self.update_status()
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.make_progress_controls()
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.image_combo = LayerPicker(
            self.viewer, lambda la: is_sequence_layer(la) and RegisteredLayer.of(la) is None,
            tooltip="The raw sequence (frames, rows, columns) the landmarks are clicked on.")
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        form.addRow("Image", self.image_combo)
        self.points_combo = LayerPicker(
            self.viewer, lambda la: isinstance(la, Points) and la.ndim == 3 and OWN_KEY not in la.metadata, none=True,
            tooltip="Points layer (frame, y, x) holding the landmarks; each point has a 'name'.")
        self.points_combo.currentIndexChanged.connect(self._on_points_changed)
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Add a Points layer '<image> landmarks' on the image's grid, ready to click.")
        self.new_button.clicked.connect(lambda *_: self.new_points_layer())
        row = QHBoxLayout()
        row.addWidget(self.points_combo, 1)
        row.addWidget(self.new_button)
        form.addRow("Points", row)
        self.registered_combo = LayerPicker(
            self.viewer, is_registered_layer, none=True,
            tooltip="Registered layer ('<image> registered') whose displacement maps the landmarks.")
        form.addRow("Registration", self.registered_combo)

        # --- tab 1: define and click (the sections get this dock as their host protocol)
        self.names = LandmarkNames(self)
        for name in ("names_list", "name_edit", "add_button", "remove_button", "order_combo", "import_button",
                     "export_button", "landmark_names", "add_landmark", "remove_landmark", "current_landmark",
                     "set_current_landmark", "import_csv", "export_csv"):
            setattr(self, name, getattr(self.names, name))
        self.names.current_changed.connect(self._on_current_landmark)

        # --- tabs 2 and 3: with a registration
        self.tools = RegistrationTools(self)
        for name in ("tre_button", "common_button", "tre_table", "labels_combo", "propagate_points_button",
                     "propagate_mask_button", "dice_button", "dice_table"):
            setattr(self, name, getattr(self.tools, name))

        self.tabs = QTabWidget()
        self.tabs.addTab(self.names, "Landmarks")
        self.tabs.addTab(self.tools.tre_tab, "TRE")
        self.tabs.addTab(self.tools.prop_tab, "Propagate / Dice")

        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.cancel_button)
        layout.addLayout(progress)
        layout.addWidget(self.tabs, 1)

    def show_page(self, page: QWidget) -> None:
        """Bring the tab holding ``page`` (a section's tab) to the front."""
        self.tabs.setCurrentWidget(page)

    @property
    def last_tre(self) -> TREReport | None:
        """The last TRE computed (kept by the registration tools section)."""
        return self.tools.last_tre

    @property
    def last_dice(self) -> DiceReport | None:
        """The last all-pair Dice computed (kept by the registration tools section)."""
        return self.tools.last_dice

    # ------------------------------------------------------------------ layers
    def refresh_layers(self) -> None:
        """Rebuild the layer pickers, keeping the choices; follow a new registration of the image."""
        image, points, registered = self.image_layer(), self.points_layer(), self.registered_layer()
        images = self.image_combo.candidates()
        if image is None or not contains(images, image):
            image = images[0] if images else None
        all_points = self.points_combo.candidates()
        if points is None or not contains(all_points, points):
            points = next((p for p in all_points if p.metadata.get("image_layer") == getattr(image, "name", None)), None)
            points = points or (all_points[0] if all_points else None)
        if registered is None or not contains(self.registered_combo.candidates(), registered):
            registered = self._registration_of(image)
        labels = self.labels_combo.candidates()
        single = labels[0] if len(labels) == 1 and self.labels_layer() is None and not self.labels_combo.none_chosen \
            else None  # the only Labels layer: "(none)" would look like a bug
        self.image_combo.refresh(prefer=image)
        self.points_combo.refresh(prefer=points)
        self.registered_combo.refresh(prefer=registered)
        self.labels_combo.refresh(prefer=single)
        self._connect_points()
        self._update_enabled()
        self.update_status()

    def _registration_of(self, image: Image | None) -> Image | None:
        if image is None:
            return None
        for layer in self.registered_combo.candidates():
            registration = RegisteredLayer.of(layer)
            if registration is not None and registration.source_layer == image.name \
                    and tuple(layer.data.shape) == tuple(image.data.shape):
                return layer
        return None

    def image_layer(self) -> Image | None:
        return self.image_combo.layer()

    def points_layer(self) -> Points | None:
        return self.points_combo.layer()

    def registered_layer(self) -> Image | None:
        return self.registered_combo.layer()

    def labels_layer(self) -> Labels | None:
        return self.labels_combo.layer()

    def select(self, *, image: Any = None, points: Any = None, registered: Any = None, labels: Any = None) -> None:
        """Choose layers (layers or names) as a user would; ``None`` leaves a choice unchanged."""
        for picker, layer in ((self.image_combo, image), (self.points_combo, points),
                              (self.registered_combo, registered), (self.labels_combo, labels)):
            if layer is not None:
                picker.set_layer(layer)

    def _on_image_changed(self, *args: Any) -> None:
        image = self.image_layer()
        registered = self._registration_of(image)
        if registered is not None:
            self.registered_combo.refresh(prefer=registered)
        self._update_enabled()
        self.update_status()

    def _on_points_changed(self, *args: Any) -> None:
        self._connect_points()
        self.update_status()

    def _connect_points(self) -> None:
        points = self.points_layer()
        if same_layer(points, self._connected):
            return
        if self._connected is not None:
            try:
                self._connected.events.data.disconnect(self._on_points_data)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._connected = points
        if points is not None:
            points.events.data.connect(self._on_points_data)

    def _update_enabled(self) -> None:
        has_image = self.image_layer() is not None
        has_field = self.registered_layer() is not None
        self.new_button.setEnabled(has_image)
        for button in (self.tre_button, self.common_button, self.propagate_points_button, self.propagate_mask_button):
            button.setEnabled(has_image and has_field)
        self.dice_button.setEnabled(has_field and self.worker is None)
        self.import_button.setEnabled(self.worker is None)
        if self.worker is not None:
            for button in (self.tre_button, self.common_button, self.propagate_points_button, self.propagate_mask_button):
                button.setEnabled(False)

    def _on_current_landmark(self) -> None:
        points = self.points_layer()
        name = self.current_landmark()
        if points is not None and name is not None:
            self._set_default_name(points, name)
        self.update_status()

    @staticmethod
    def _set_default_name(points: Points, name: str) -> None:
        # napari refuses defaults for columns the layer lacks (a Points layer a user made
        # without 'New'): name what the layer can hold; update_status says what is missing
        defaults = {NAME_FEATURE: name, TAG_FEATURE: landmark_tag(name)}
        present = {key: value for key, value in defaults.items() if key in points.features.columns}
        if present:
            points.feature_defaults = present

    # ------------------------------------------------------------------ frames
    def _frame_axis(self) -> int:
        return self.viewer.dims.ndim - 3

    def current_frame(self) -> int:
        """The image frame on screen."""
        image = self.image_layer()
        if image is None or self.viewer.dims.ndim < 3:
            return 0
        data = np.asarray(image.world_to_data(np.asarray(self.viewer.dims.point, float)[-3:]))
        return int(np.clip(round(float(data[0])), 0, image.data.shape[0] - 1))

    def go_to_frame(self, frame: int) -> None:
        image = self.image_layer()
        if image is None or self.viewer.dims.ndim < 3:
            return
        world = np.asarray(image.data_to_world(np.array([float(frame), 0.0, 0.0])), float)
        self.viewer.dims.set_point(self._frame_axis(), float(world[0]))

    # ------------------------------------------------------------------ clicking
    def new_points_layer(self) -> Points | None:
        """Add ``"<image> landmarks"`` (frame, y, x) on the image's grid, in add mode, and choose it."""
        image = self.image_layer()
        if image is None:
            self.report_error("Choose the raw image first (a 3-D sequence).")
            return None
        name = self.current_landmark() or (self.landmark_names() or ["landmark"])[0]
        layer = self.viewer.add_points(
            np.zeros((0, 3)),
            ndim=3,
            name=f"{image.name} landmarks",
            scale=np.asarray(image.scale)[-3:],
            translate=np.asarray(image.translate)[-3:],
            features={NAME_FEATURE: np.array([], dtype=object), TAG_FEATURE: np.array([], dtype=object)},
            **axes_kwargs(3),
            feature_defaults={NAME_FEATURE: name, TAG_FEATURE: landmark_tag(name)},
            text=_TEXT,
            size=_POINT_SIZE,
            canvas_size_limits=_CANVAS_SIZE_LIMITS,
            face_color="yellow",
            border_color="black",
            metadata={"image_layer": image.name, "any2reg_landmarks": True},
        )
        self.select(points=layer)
        layer.mode = "add"
        self.viewer.layers.selection.active = layer
        names = self.landmark_names()
        if names:  # start at the beginning: first landmark on the first frame
            self.set_current_landmark(names[0])
            self.go_to_frame(0)
        self.update_status()
        return layer

    def _on_points_data(self, event: Any) -> None:
        action = str(getattr(event, "action", ""))
        points = self._connected
        if points is None or self._busy:
            return
        if action.endswith("adding"):
            name = self.current_landmark()
            if name is not None:
                self._set_default_name(points, name)
        elif action.endswith("added"):
            indices = [int(i) % len(points.data) for i in getattr(event, "data_indices", ()) if len(points.data)]
            self._after_click(points, indices)
        else:
            self.update_status()

    def _after_click(self, points: Points, indices: list[int]) -> None:
        """A point was placed: schedule removal of the landmark's earlier point there, then step on."""
        image = self.image_layer()
        if image is None or NAME_FEATURE not in points.features.columns or not indices:
            self.update_status()
            return
        coords = points_in_image_pixels(points, image)
        names = points.features[NAME_FEATURE].astype(str).to_numpy()
        for index in indices:
            frame = int(round(coords[index, 0]))
            self._pending_removal.append((points, frame, names[index]))
        # napari selects the new point after this event: edit the layer once it is done
        QTimer.singleShot(0, self._remove_replaced)
        self.advance()

    def _remove_replaced(self) -> None:
        pending, self._pending_removal = self._pending_removal, []
        for points, frame, name in pending:
            if not contains(list(self.viewer.layers), points):
                continue
            image = self.image_layer()
            if image is None or NAME_FEATURE not in points.features.columns:
                continue
            coords = points_in_image_pixels(points, image)
            names = points.features[NAME_FEATURE].astype(str).to_numpy()
            same = np.flatnonzero((np.round(coords[:, 0]) == frame) & (names == name)) if len(coords) else []
            if len(same) > 1:
                self._busy = True
                try:
                    points.remove(list(same[:-1]))  # keep the newest
                finally:
                    self._busy = False
        self.update_status()

    def placed(self) -> set[tuple[int, str]]:
        """``(frame, name)`` of the landmarks placed so far."""
        points, image = self.points_layer(), self.image_layer()
        if points is None or image is None or NAME_FEATURE not in points.features.columns or not len(points.data):
            return set()
        coords = points_in_image_pixels(points, image)
        names = points.features[NAME_FEATURE].astype(str).tolist()
        return {(int(round(c[0])), n) for c, n in zip(coords, names)}

    def advance(self) -> tuple[int, str] | None:
        """Go to the next landmark / frame not placed yet (in the chosen order); ``None`` when all are."""
        image = self.image_layer()
        names = self.landmark_names()
        if image is None or not names:
            return None
        n_frames = int(image.data.shape[0])
        frame, name = self.current_frame(), self.current_landmark() or names[0]
        if self.order_combo.currentData() == "frames":
            order = [(f, n) for n in names for f in range(n_frames)]
        else:
            order = [(f, n) for f in range(n_frames) for n in names]
        start = order.index((frame, name)) if (frame, name) in order else -1
        done = self.placed()
        for k in range(1, len(order) + 1):
            candidate = order[(start + k) % len(order)]
            if candidate not in done:
                self.set_current_landmark(candidate[1])
                if candidate[0] != frame:
                    self.go_to_frame(candidate[0])
                self.update_status()
                return candidate
        self.update_status()
        return None

    def update_status(self) -> None:
        image, points = self.image_layer(), self.points_layer()
        if image is None:
            self.set_status("Open a sequence (frames, rows, columns) to click landmarks on.")
            return
        if points is None:
            self.set_status("Press 'New' for a landmarks layer, or import a CSV.")
            return
        if not {NAME_FEATURE, "id", "label"} & set(points.features.columns):  # what points_to_table reads
            self.set_status(f"{points.name!r} has no 'name' feature, so its points name no landmark: "
                            "press 'New' for a landmarks layer, or import a CSV.")
            return
        names = self.landmark_names()
        total = len(names) * int(image.data.shape[0])
        done = len({key for key in self.placed() if key[1] in names})
        name = self.current_landmark()
        text = f"{done} of {total} placed."
        if done >= total and total:
            text = f"All {total} landmarks placed: compute the TRE or export the CSV."
        elif name is not None:
            text += f" Next: {name} on frame {self.current_frame()}."
        self.set_status(text)

    # ------------------------------------------------------------------ tables
    def table(self) -> LandmarkTable:
        """The chosen Points layer as a landmark table on the image's pixels (raises ``ValueError``)."""
        image, points = self.image_layer(), self.points_layer()
        if image is None:
            raise ValueError("choose the raw image (a 3-D sequence) first.")
        if points is None:
            raise ValueError("choose or create a Points layer with the landmarks first.")
        table = points_to_table(points, image)
        if not len(table):
            raise ValueError(f"{points.name!r} has no points yet; click the landmarks on the frames.")
        return table

    # ------------------------------------------------------------------ with a registration
    def registration_field(self) -> tuple[Image, np.ndarray]:
        registered = self.registered_layer()
        if registered is None:
            raise ValueError("choose a registered layer (run the Registration panel on the image first).")
        field = RegisteredLayer.from_layer(registered).displacement
        image = self.image_layer()
        if image is not None and field.shape[0] != image.data.shape[0]:
            raise ValueError(f"{registered.name!r} has {field.shape[0]} frames but {image.name!r} has {image.data.shape[0]}.")
        return registered, field

    # ------------------------------------------------------------------ with a registration (RegistrationTools)
    def on_running_changed(self, running: bool) -> None:
        self._update_enabled()

    def compute_tre(self) -> bool:
        """TRE before / after per landmark and overall (mm), in a worker (see :attr:`last_tre`)."""
        return self.tools.compute_tre()

    def show_common_landmarks(self) -> bool:
        """The landmarks mapped to the common grid, on the registered layer (in a worker)."""
        return self.tools.show_common_landmarks()

    def propagate_points(self) -> bool:
        """The current frame's landmarks carried to every raw frame (in a worker)."""
        return self.tools.propagate_points()

    def propagate_mask(self) -> bool:
        """The Labels layer's current frame carried to every raw frame (in a worker)."""
        return self.tools.propagate_mask()

    def compute_dice(self) -> bool:
        """All-pair Dice per label, before and after warping (in a worker; see :attr:`last_dice`)."""
        return self.tools.compute_dice()

    def put_points(self, name: str, table: LandmarkTable, grid: Image, image: Image | None, own: bool = True) -> Points:
        """Add (or, for a layer this widget made, update) a Points layer showing ``table`` on ``grid``'s pixels."""
        coords, features = table_points_data(table)
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if own and isinstance(existing, Points) and existing.metadata.get(OWN_KEY):
            self._busy = True
            try:
                existing.data = coords
                existing.features = features
                existing.scale = np.asarray(grid.scale)[-3:]
                existing.translate = np.asarray(grid.translate)[-3:]
            finally:
                self._busy = False
            return existing
        meta = {"image_layer": (image or grid).name}
        if own:
            meta[OWN_KEY] = "points"
        return self.viewer.add_points(
            coords, ndim=3, name=name, scale=np.asarray(grid.scale)[-3:], translate=np.asarray(grid.translate)[-3:],
            features=features, text=_TEXT, size=_POINT_SIZE, canvas_size_limits=_CANVAS_SIZE_LIMITS,
            face_color="cyan" if own else "yellow", border_color="black",
            metadata=meta, **axes_kwargs(3),
        )

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if self._connected is not None:
            try:
                self._connected.events.data.disconnect(self._on_points_data)
            except (TypeError, ValueError, RuntimeError):
                pass
            self._connected = None
        super().closeEvent(event)
