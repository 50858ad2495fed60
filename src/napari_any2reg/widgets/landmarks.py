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

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from napari.qt.threading import FunctionWorker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.landmarks import (
    DEFAULT_LANDMARKS,
    LANDMARK_DESCRIPTIONS,
    DiceReport,
    LandmarkTable,
    TREReport,
    dice_before_after,
    landmarks_to_common,
    propagate_labels,
    propagate_landmarks,
    tre_before_after,
)
from ..io.landmarks import read_landmarks_csv, write_landmarks_csv
from ._dock import compact_combos, install_frame_label, scroll_body
from ._layers import axes_kwargs
from ._points import NAME_FEATURE, points_in_image_pixels, points_to_table, spacing_of
from ._pickers import chosen_layer, contains, fill_combo, is_registered_layer, is_sequence_layer

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["LandmarksWidget", "STEP_ORDERS", "NAME_FEATURE", "points_to_table"]

#: The feature every landmark point carries.

#: Stepping orders: key -> label in the UI.
STEP_ORDERS = {
    "landmarks": "each landmark, then the next frame",
    "frames": "each frame, then the next landmark",
}

#: Metadata key marking the layers this widget made (they may be updated in place).
_OWN_KEY = "any2reg_landmarks_output"

_TEXT = {"string": "{name}", "size": 8, "color": "yellow", "anchor": "upper_left"}

#: Point diameter in image pixels.
_POINT_SIZE = 3.0


class LandmarksWidget(QWidget):
    """Dock widget to click named landmarks on every frame and score a registration with them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.last_tre: TREReport | None = None
        self.last_dice: DiceReport | None = None
        self.last_error: BaseException | None = None
        self._images: list[Image] = []
        self._points: list[Points] = []
        self._registered: list[Image] = []
        self._labels: list[Labels] = []
        self._connected: Points | None = None
        self._busy = False  # our own edits of the points layer: do not step
        self._pending_removal: list[tuple[Points, int, str]] = []
        self.worker: FunctionWorker | None = None
        self._task: tuple[str, Any] | None = None
        self._labels_none_chosen = False
        self._build_ui()
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        self.refresh_layers()
        self._update_status()
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The raw sequence (frames, rows, columns) the landmarks are clicked on.")
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        form.addRow("Image", self.image_combo)
        self.points_combo = QComboBox()
        self.points_combo.setToolTip("Points layer (frame, y, x) holding the landmarks; each point has a 'name'.")
        self.points_combo.currentIndexChanged.connect(self._on_points_changed)
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Add a Points layer '<image> landmarks' on the image's grid, ready to click.")
        self.new_button.clicked.connect(lambda *_: self.new_points_layer())
        row = QHBoxLayout()
        row.addWidget(self.points_combo, 1)
        row.addWidget(self.new_button)
        form.addRow("Points", row)
        self.registered_combo = QComboBox()
        self.registered_combo.setToolTip("Registered layer ('<image> registered') whose displacement maps the landmarks.")
        form.addRow("Registration", self.registered_combo)

        # --- tab 1: define and click
        self.names_list = QListWidget()
        self.names_list.setToolTip("Landmarks to click; the highlighted one is placed by the next click.")
        self.names_list.currentRowChanged.connect(lambda *_: self._on_current_landmark())
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("new landmark name, e.g. lv_centre")
        self.name_edit.returnPressed.connect(lambda: self.add_landmark(self.name_edit.text()))
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(lambda *_: self.add_landmark(self.name_edit.text()))
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the highlighted name from the list (its points stay).")
        self.remove_button.clicked.connect(lambda *_: self.remove_landmark(self.current_landmark()))
        names_row = QHBoxLayout()
        names_row.addWidget(self.name_edit, 1)
        names_row.addWidget(self.add_button)
        names_row.addWidget(self.remove_button)
        self.order_combo = QComboBox()
        for key, label in STEP_ORDERS.items():
            self.order_combo.addItem(label, key)
        self.order_combo.setToolTip("Where the widget goes after each click.")
        self.import_button = QPushButton("Import CSV…")
        self.import_button.clicked.connect(lambda *_: self._import_dialog())
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(lambda *_: self._export_dialog())
        csv_row = QHBoxLayout()
        csv_row.addWidget(self.import_button)
        csv_row.addWidget(self.export_button)
        for name in DEFAULT_LANDMARKS:
            self.add_landmark(name)
        self.names_list.setCurrentRow(0)
        click_tab = QWidget()
        click_layout = QVBoxLayout(click_tab)
        click_layout.addWidget(self.names_list, 1)
        click_layout.addLayout(names_row)
        order_form = QFormLayout()
        order_form.addRow("After a click", self.order_combo)
        click_layout.addLayout(order_form)
        click_layout.addLayout(csv_row)

        # --- tab 2: TRE
        self.tre_button = QPushButton("Compute TRE")
        self.tre_button.setToolTip("Target registration error per landmark, before and after (mm).")
        self.tre_button.clicked.connect(lambda *_: self.compute_tre())
        self.common_button = QPushButton("Show on registered")
        self.common_button.setToolTip("Add the landmarks mapped to the common grid on the registered layer.")
        self.common_button.clicked.connect(lambda *_: self.show_common_landmarks())
        tre_buttons = QHBoxLayout()
        tre_buttons.addWidget(self.tre_button)
        tre_buttons.addWidget(self.common_button)
        self.tre_table = _table(["landmark", "frames", "before (mm)", "after (mm)"])
        tre_tab = QWidget()
        tre_layout = QVBoxLayout(tre_tab)
        tre_layout.addLayout(tre_buttons)
        tre_layout.addWidget(self.tre_table, 1)

        # --- tab 3: propagation and Dice
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Labels layer: a mask on the current frame to propagate, or (N, H, W) labels for Dice.")
        self.propagate_points_button = QPushButton("Propagate points from this frame")
        self.propagate_points_button.setToolTip("Carry the landmarks of the current frame to every raw frame (new Points layer).")
        self.propagate_points_button.clicked.connect(lambda *_: self.propagate_points())
        self.propagate_mask_button = QPushButton("Propagate mask from this frame")
        self.propagate_mask_button.setToolTip("Carry the current frame of the Labels layer to every raw frame (new Labels layer).")
        self.propagate_mask_button.clicked.connect(lambda *_: self.propagate_mask())
        self.dice_button = QPushButton("All-pair Dice")
        self.dice_button.setToolTip("Mean Dice over frame pairs per label, raw vs warped to the common grid.")
        self.dice_button.clicked.connect(lambda *_: self.compute_dice())
        self.dice_table = _table(["label", "Dice before", "Dice after"])
        prop_tab = QWidget()
        prop_layout = QVBoxLayout(prop_tab)
        prop_form = QFormLayout()
        prop_form.addRow("Labels", self.labels_combo)
        prop_layout.addLayout(prop_form)
        prop_layout.addWidget(self.propagate_points_button)
        prop_layout.addWidget(self.propagate_mask_button)
        prop_layout.addWidget(self.dice_button)
        prop_layout.addWidget(self.dice_table, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(click_tab, "Landmarks")
        self.tabs.addTab(tre_tab, "TRE")
        self.tabs.addTab(prop_tab, "Propagate / Dice")

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.labels_combo.activated.connect(lambda index: setattr(self, "_labels_none_chosen", index == 0))

        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.tabs, 1)

    # ------------------------------------------------------------------ layers
    def _on_layers_changed(self, event: Any = None) -> None:
        self.refresh_layers()

    def refresh_layers(self) -> None:
        """Rebuild the layer pickers, keeping the choices; follow a new registration of the image."""
        image, points, registered, labels = self.image_layer(), self.points_layer(), self.registered_layer(), self.labels_layer()
        layers = list(self.viewer.layers)
        self._images = [la for la in layers if is_sequence_layer(la) and "displacement" not in la.metadata]
        self._points = [la for la in layers if isinstance(la, Points) and la.ndim == 3 and _OWN_KEY not in la.metadata]
        self._registered = [la for la in layers if is_registered_layer(la)]
        self._labels = [la for la in layers if isinstance(la, Labels) and la.ndim in (2, 3)]
        if image is None or not contains(self._images, image):
            image = self._images[0] if self._images else None
        if points is None or not contains(self._points, points):
            points = next((p for p in self._points if p.metadata.get("image_layer") == getattr(image, "name", None)), None)
            points = points or (self._points[0] if self._points else None)
        if registered is None or not contains(self._registered, registered):
            registered = self._registration_of(image)
        if labels is not None and not contains(self._labels, labels):
            labels = None
        if labels is None and len(self._labels) == 1 and not self._labels_none_chosen:
            labels = self._labels[0]  # the only Labels layer: "(none)" would look like a bug
        for combo, items, chosen, none in (
            (self.image_combo, self._images, image, False),
            (self.points_combo, self._points, points, True),
            (self.registered_combo, self._registered, registered, True),
            (self.labels_combo, self._labels, labels, True),
        ):
            fill_combo(combo, items, chosen, none)
        self._connect_points()
        self._update_enabled()
        self._update_status()

    def _registration_of(self, image: Image | None) -> Image | None:
        if image is None:
            return None
        for layer in self._registered:
            meta = layer.metadata
            if meta.get("source_layer") == image.name and tuple(layer.data.shape) == tuple(image.data.shape):
                return layer
        return None

    def image_layer(self) -> Image | None:
        return chosen_layer(self.image_combo, getattr(self, "_images", []), none=False)

    def points_layer(self) -> Points | None:
        return chosen_layer(self.points_combo, getattr(self, "_points", []), none=True)

    def registered_layer(self) -> Image | None:
        return chosen_layer(self.registered_combo, getattr(self, "_registered", []), none=True)

    def labels_layer(self) -> Labels | None:
        return chosen_layer(self.labels_combo, getattr(self, "_labels", []), none=True)

    def select(self, *, image: Any = None, points: Any = None, registered: Any = None, labels: Any = None) -> None:
        """Choose layers (layers or names) as a user would; ``None`` leaves a choice unchanged."""
        for combo, layer, none in ((self.image_combo, image, False), (self.points_combo, points, True),
                                   (self.registered_combo, registered, True), (self.labels_combo, labels, True)):
            if layer is None:
                continue
            name = getattr(layer, "name", layer)
            index = combo.findData(name)
            if index < 0:
                raise ValueError(f"{name!r} is not a layer this picker offers.")
            combo.setCurrentIndex(index)

    def _on_image_changed(self, *args: Any) -> None:
        image = self.image_layer()
        registered = self._registration_of(image)
        if registered is not None:
            fill_combo(self.registered_combo, self._registered, registered, True)
        self._update_enabled()
        self._update_status()

    def _on_points_changed(self, *args: Any) -> None:
        self._connect_points()
        self._update_status()

    def _connect_points(self) -> None:
        points = self.points_layer()
        if points is self._connected:
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
        if self.worker is not None:
            for button in (self.tre_button, self.common_button, self.propagate_points_button, self.propagate_mask_button):
                button.setEnabled(False)

    # ------------------------------------------------------------------ landmark names
    def landmark_names(self) -> list[str]:
        return [self.names_list.item(i).text() for i in range(self.names_list.count())]

    def add_landmark(self, name: str) -> bool:
        """Add a landmark name to the list (spaces become underscores); returns ``False`` if not added."""
        name = "_".join(str(name).split())
        if not name:
            return False
        if name in self.landmark_names():
            self.set_current_landmark(name)
            return False
        self.names_list.addItem(name)
        item = self.names_list.item(self.names_list.count() - 1)
        item.setToolTip(LANDMARK_DESCRIPTIONS.get(name, name))
        if hasattr(self, "name_edit"):
            self.name_edit.clear()
        if self.names_list.currentRow() < 0:
            self.names_list.setCurrentRow(0)
        return True

    def remove_landmark(self, name: str | None) -> None:
        """Remove ``name`` from the list (points already placed keep their name)."""
        names = self.landmark_names()
        if name in names:
            self.names_list.takeItem(names.index(name))
        self._update_status()

    def current_landmark(self) -> str | None:
        item = self.names_list.currentItem()
        return item.text() if item is not None else None

    def set_current_landmark(self, name: str) -> None:
        names = self.landmark_names()
        if name in names:
            self.names_list.setCurrentRow(names.index(name))

    def _on_current_landmark(self) -> None:
        points = self.points_layer()
        name = self.current_landmark()
        if points is not None and name is not None:
            self._set_default_name(points, name)
        self._update_status()

    @staticmethod
    def _set_default_name(points: Points, name: str) -> None:
        try:
            points.feature_defaults = {NAME_FEATURE: name}
        except Exception:  # pragma: no cover - a layer without a name feature
            pass

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
            self._report("Choose the raw image first (a 3-D sequence).")
            return None
        name = self.current_landmark() or (self.landmark_names() or ["landmark"])[0]
        layer = self.viewer.add_points(
            np.zeros((0, 3)),
            ndim=3,
            name=f"{image.name} landmarks",
            scale=np.asarray(image.scale)[-3:],
            translate=np.asarray(image.translate)[-3:],
            features={NAME_FEATURE: np.array([], dtype=object)},
            **axes_kwargs(3),
            feature_defaults={NAME_FEATURE: name},
            text=_TEXT,
            size=_POINT_SIZE,
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
        self._update_status()
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
            self._update_status()

    def _after_click(self, points: Points, indices: list[int]) -> None:
        """A point was placed: schedule removal of the landmark's earlier point there, then step on."""
        image = self.image_layer()
        if image is None or NAME_FEATURE not in points.features.columns or not indices:
            self._update_status()
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
        self._update_status()

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
                self._update_status()
                return candidate
        self._update_status()
        return None

    def _update_status(self) -> None:
        image, points = self.image_layer(), self.points_layer()
        if image is None:
            self.status_label.setText("Open a sequence (frames, rows, columns) to click landmarks on.")
            return
        if points is None:
            self.status_label.setText("Press 'New' for a landmarks layer, or import a CSV.")
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
        self.status_label.setText(text)

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

    def import_csv(self, path: Any) -> Points | None:
        """Read a landmark CSV into a new Points layer on the image (names join the list)."""
        try:
            image = self.image_layer()
            if image is None:
                raise ValueError("choose the image the landmarks belong to first.")
            table = read_landmarks_csv(path, spacing_mm=spacing_of(image))
            if table.n_frames > image.data.shape[0]:
                raise ValueError(
                    f"{path}: a landmark is on frame {table.n_frames - 1} but {image.name!r} has "
                    f"{image.data.shape[0]} frames (frames are 0-based)."
                )
        except Exception as exc:
            self._report(f"Cannot import {path}: {exc}", exc)
            return None
        for name in table.landmark_names:
            self.add_landmark(name)
        layer = self._put_points(f"{Path(str(path)).stem}", table, image, image, own=False)
        self.select(points=layer)
        self._update_status()
        show_info(f"Imported {len(table)} landmark points from {path}.")
        return layer

    def export_csv(self, path: Any, overwrite: bool = False) -> Path | None:
        """Write the landmarks as CSV (``frame,name,y,x,y_mm,x_mm``); ``None`` on error (notified)."""
        try:
            written = write_landmarks_csv(path, self.table().sorted(), overwrite=overwrite)
        except Exception as exc:
            self._report(f"Cannot export the landmarks: {exc}", exc)
            return None
        self.status_label.setText(f"Wrote {written}.")
        return written

    def _import_dialog(self) -> None:  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Import landmarks", "", "CSV (*.csv);;All files (*)")
        if path:
            self.import_csv(path)

    def _export_dialog(self) -> None:  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, "Export landmarks", "landmarks.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path, overwrite=True)  # the dialog asked before replacing

    # ------------------------------------------------------------------ with a registration
    def _field(self) -> tuple[Image, np.ndarray]:
        registered = self.registered_layer()
        if registered is None:
            raise ValueError("choose a registered layer (run the Registration panel on the image first).")
        field = np.asarray(registered.metadata["displacement"], np.float32)
        image = self.image_layer()
        if image is not None and field.shape[0] != image.data.shape[0]:
            raise ValueError(f"{registered.name!r} has {field.shape[0]} frames but {image.name!r} has {image.data.shape[0]}.")
        return registered, field

    # ------------------------------------------------------------------ worker
    def busy(self) -> bool:
        """Whether a TRE, propagation or Dice computation is running in a worker."""
        return self.worker is not None

    def _start(self, message: str, fn: Any, done: Any) -> bool:
        """Run ``fn()`` in a worker (busy progress bar), then ``done(result)`` in the GUI thread."""
        if self.worker is not None:
            self._report("Another computation is running; try again when it is done.")
            return False
        self._task = (message, done)
        worker = FunctionWorker(_guarded, fn)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress_bar.setRange(0, 0)
        self.status_label.setText(f"{message}…")
        self._update_enabled()
        worker.start()
        return True

    def _on_returned(self, outcome: tuple[Any, BaseException | None]) -> None:
        result, error = outcome
        message, done = self._task or ("", None)
        self._task = None
        if error is not None:
            self._report(f"{message} failed: {error}", error)
            return
        try:
            done(result)
        except Exception as exc:
            self._report(f"{message} failed: {exc}", exc)

    def _on_finished(self) -> None:
        self.worker = None
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(100)
        self._update_enabled()

    def compute_tre(self) -> bool:
        """TRE before / after per landmark and overall (mm), in a worker; shown in the TRE table.

        Returns ``True`` when the computation started (the report lands in :attr:`last_tre`).
        """
        try:
            table = self.table()
            _, field = self._field()
        except Exception as exc:
            self._report(f"Cannot compute the TRE: {exc}", exc)
            return False
        return self._start("Computing the TRE", lambda: tre_before_after(table, field, n_frames=field.shape[0]),
                           self._show_tre)

    def _show_tre(self, report: TREReport) -> None:
        self.last_tre = report
        rows = report.rows()
        self.tre_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            cells = [row["landmark"], "" if row["n_frames"] is None else str(row["n_frames"]),
                     _fmt(row["tre_before_mm"]), _fmt(row["tre_after_mm"])]
            for column, text in enumerate(cells):
                self.tre_table.setItem(i, column, QTableWidgetItem(text))
        self.tabs.setCurrentIndex(1)
        self.status_label.setText(
            f"TRE overall {_fmt(report.before['overall'])} mm before, {_fmt(report.after['overall'])} mm after registration."
        )

    def show_common_landmarks(self) -> bool:
        """Add (or update) ``"<registered> landmarks (common grid)"``: the points mapped by the inverse field.

        The inversion runs in a worker; returns ``True`` when it started.
        """
        try:
            table = self.table()
            registered, field = self._field()
            image = self.image_layer()
        except Exception as exc:
            self._report(f"Cannot map the landmarks: {exc}", exc)
            return False

        def done(common: LandmarkTable) -> None:
            self._put_points(f"{registered.name} landmarks (common grid)", common, registered, image)
            self.status_label.setText(f"Landmarks on the common grid shown on {registered.name!r}.")

        return self._start("Mapping the landmarks to the common grid", lambda: landmarks_to_common(table, field), done)

    def propagate_points(self) -> bool:
        """The current frame's landmarks carried to every raw frame (new / updated Points layer), in a worker."""
        try:
            image = self.image_layer()
            table = self.table()
            _, field = self._field()
            frame = self.current_frame()
        except Exception as exc:
            self._report(f"Cannot propagate the points: {exc}", exc)
            return False

        def done(propagated: LandmarkTable) -> None:
            self._put_points(f"{image.name} landmarks (propagated)", propagated, image, image)
            self.status_label.setText(
                f"Propagated {len(propagated.landmark_names)} landmark(s) from frame {frame} to "
                f"{field.shape[0]} frames: check them frame by frame, and move the ones that are off."
            )

        return self._start("Propagating the points", lambda: propagate_landmarks(table, frame, field), done)

    def _labels_frame(self, labels: Labels, image: Image) -> np.ndarray:
        data = np.asarray(labels.data)
        if data.ndim == 3:
            if data.shape[0] != image.data.shape[0]:
                raise ValueError(f"{labels.name!r} has {data.shape[0]} frames but {image.name!r} has {image.data.shape[0]}.")
            data = data[self.current_frame()]
        if data.shape != tuple(image.data.shape[1:]):
            raise ValueError(f"{labels.name!r} is {data.shape} but the frames are {tuple(image.data.shape[1:])}; draw on the image grid.")
        if not data.any():
            raise ValueError(f"{labels.name!r} is empty on frame {self.current_frame()}; paint the mask on this frame first.")
        return np.array(data, copy=True)

    def propagate_mask(self) -> bool:
        """The Labels layer's current frame carried to every raw frame (new / updated Labels layer), in a worker."""
        try:
            image = self.image_layer()
            labels = self.labels_layer()
            if image is None or labels is None:
                raise ValueError("choose the image and a Labels layer with a mask on the current frame.")
            mask = self._labels_frame(labels, image)
            _, field = self._field()
            frame = self.current_frame()
        except Exception as exc:
            self._report(f"Cannot propagate the mask: {exc}", exc)
            return False
        return self._start("Propagating the mask", lambda: propagate_labels(mask, frame, field),
                           lambda stack: self._put_propagated(stack, labels, image, frame))

    def _put_propagated(self, stack: np.ndarray, labels: Labels, image: Image, frame: int) -> Labels:
        name = f"{labels.name} propagated"
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        meta = {_OWN_KEY: "labels", "source_frame": frame, "image_layer": image.name}
        if isinstance(existing, Labels) and existing.metadata.get(_OWN_KEY) and existing.data.shape == stack.shape:
            existing.data = stack
            existing.metadata = meta
            layer = existing
        else:
            layer = self.viewer.add_labels(stack, name=name, scale=np.asarray(image.scale)[-3:],
                                           translate=np.asarray(image.translate)[-3:], metadata=meta, opacity=0.5,
                                           **axes_kwargs(3))
        self.status_label.setText(f"Propagated {labels.name!r} from frame {frame} to {stack.shape[0]} frames.")
        return layer

    def compute_dice(self) -> bool:
        """All-pair Dice per label of the chosen Labels layer ``(N, H, W)``, before and after warping (worker)."""
        try:
            labels = self.labels_layer()
            if labels is None:
                raise ValueError("choose a Labels layer (N, H, W) with a segmentation of every frame (e.g. a propagated mask).")
            _, field = self._field()
            data = np.asarray(labels.data)
            if data.ndim != 3 or data.shape[0] != field.shape[0] or data.shape[1:] != field.shape[2:]:
                raise ValueError(
                    f"{labels.name!r} is {data.shape}; all-pair Dice needs labels of every frame on the image grid, "
                    f"{(field.shape[0],) + field.shape[2:]} (propagate a mask first)."
                )
            data = np.array(data, copy=True)  # the user may paint while the worker runs
        except Exception as exc:
            self._report(f"Cannot compute the Dice: {exc}", exc)
            return False
        return self._start("Computing the all-pair Dice", lambda: dice_before_after(data, field), self._show_dice)

    def _show_dice(self, report: DiceReport) -> None:
        self.last_dice = report
        rows = report.rows()
        self.dice_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for column, text in enumerate((f"{row['label']}: {row['name']}", _fmt(row["dice_before"]), _fmt(row["dice_after"]))):
                self.dice_table.setItem(i, column, QTableWidgetItem(text))
        self.status_label.setText("All-pair Dice per label: raw frames (before) vs warped to the common grid (after).")

    def _put_points(self, name: str, table: LandmarkTable, grid: Image, image: Image | None, own: bool = True) -> Points:
        """Add (or, for a layer this widget made, update) a Points layer showing ``table`` on ``grid``'s pixels."""
        coords = np.column_stack([table.frames.astype(float), table.points]) if len(table) else np.zeros((0, 3))
        features = {NAME_FEATURE: table.names.astype(object)}
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if own and isinstance(existing, Points) and existing.metadata.get(_OWN_KEY):
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
            meta[_OWN_KEY] = "points"
        return self.viewer.add_points(
            coords, ndim=3, name=name, scale=np.asarray(grid.scale)[-3:], translate=np.asarray(grid.translate)[-3:],
            features=features, text=_TEXT, size=_POINT_SIZE, face_color="cyan" if own else "yellow", border_color="black",
            metadata=meta, **axes_kwargs(3),
        )

    def _report(self, message: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.last_error = exc
        self.status_label.setText(message)
        if self.worker is None:
            self.progress_bar.setValue(0)  # no stale "done" bar beside an error
        show_error(message)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if self._connected is not None:
            try:
                self._connected.events.data.disconnect(self._on_points_data)
            except (TypeError, ValueError, RuntimeError):
                pass
            self._connected = None
        super().closeEvent(event)


# ====================================================================== small helpers
def _guarded(fn: Any) -> tuple[Any, BaseException | None]:
    """Worker body: the result or the error, shown in the GUI thread."""
    try:
        return fn(), None
    except Exception as exc:
        return None, exc


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.setMinimumHeight(120)
    return table


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value is not None and math.isfinite(value) else "—"
