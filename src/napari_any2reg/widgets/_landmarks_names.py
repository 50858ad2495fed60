"""The Landmarks dock's first tab: the landmark names to click, the stepping order and CSV buttons."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from napari.layers import Points
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget

from ..core.landmarks import DEFAULT_LANDMARKS, LANDMARK_DESCRIPTIONS
from ..io.landmarks import read_landmarks_csv, write_landmarks_csv
from ..core.landmarks import LandmarkTable
from ._hosts import StatusHost
from ._points import spacing_of

__all__ = ["LandmarkNames", "LandmarkNamesHost", "STEP_ORDERS"]

#: Stepping orders: key -> label in the UI.
STEP_ORDERS = {
    "landmarks": "each landmark, then the next frame",
    "frames": "each frame, then the next landmark",
}


@runtime_checkable
class LandmarkNamesHost(StatusHost, Protocol):
    """What :class:`LandmarkNames` needs from the Landmarks dock (its public methods)."""

    def image_layer(self) -> Any:
        """The raw sequence chosen in the dock (``None`` when there is none)."""

    def points_layer(self) -> Points | None:
        """The Points layer chosen in the dock."""

    def table(self) -> LandmarkTable:
        """The clicked landmarks on the image's pixels (raises ``ValueError`` when there are none)."""

    def put_points(self, name: str, table: LandmarkTable, grid: Any, image: Any, own: bool = True) -> Points:
        """Add (or update the dock's own) Points layer ``name`` showing ``table`` on ``grid``."""

    def select(self, *, points: Any = None) -> None:
        """Choose a layer in the dock's pickers as a user would."""

    def update_status(self) -> None:
        """Rewrite the dock's status line (landmarks placed, the next one)."""


class LandmarkNames(QWidget):
    """The list of landmark names (the highlighted one is placed by the next click).

    Parameters
    ----------
    host : LandmarkNamesHost
        The dock: its layers, landmark table and status line; the CSV buttons go through it.
    parent : QWidget, optional
    """

    #: The highlighted landmark changed (or the list did).
    current_changed = Signal()

    def __init__(self, host: LandmarkNamesHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.names_list = QListWidget()
        self.names_list.setToolTip("Landmarks to click; the highlighted one is placed by the next click.")
        self.names_list.currentRowChanged.connect(lambda *_: self.current_changed.emit())
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
        self.import_button.setToolTip("Read a landmark CSV (frame,name,y,x) into a new Points layer on the image.")
        self.import_button.clicked.connect(lambda *_: self.import_dialog())
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Write the chosen Points layer as CSV (frame,name,y,x,y_mm,x_mm).")
        self.export_button.clicked.connect(lambda *_: self.export_dialog())
        csv_row = QHBoxLayout()
        csv_row.addWidget(self.import_button)
        csv_row.addWidget(self.export_button)
        for name in DEFAULT_LANDMARKS:
            self.add_landmark(name)
        self.names_list.setCurrentRow(0)
        click_layout = QVBoxLayout(self)
        click_layout.addWidget(self.names_list, 1)
        click_layout.addLayout(names_row)
        order_form = QFormLayout()
        order_form.addRow("After a click", self.order_combo)
        click_layout.addLayout(order_form)
        click_layout.addLayout(csv_row)

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
        self.current_changed.emit()

    def current_landmark(self) -> str | None:
        item = self.names_list.currentItem()
        return item.text() if item is not None else None

    def set_current_landmark(self, name: str) -> None:
        names = self.landmark_names()
        if name in names:
            self.names_list.setCurrentRow(names.index(name))

    # ------------------------------------------------------------------ CSV
    def import_csv(self, path: Any) -> Points | None:
        """Read a landmark CSV into a new Points layer on the image (names join the list)."""
        try:
            image = self.host.image_layer()
            if image is None:
                raise ValueError("choose the image the landmarks belong to first.")
            table = read_landmarks_csv(path, spacing_mm=spacing_of(image))
            if table.n_frames > image.data.shape[0]:
                raise ValueError(
                    f"{path}: a landmark is on frame {table.n_frames - 1} but {image.name!r} has "
                    f"{image.data.shape[0]} frames (frames are 0-based)."
                )
        except Exception as exc:
            self.host.report_error(f"Cannot import {path}: {exc}", exc)
            return None
        for name in table.landmark_names:
            self.add_landmark(name)
        layer = self.host.put_points(f"{Path(str(path)).stem}", table, image, image, own=False)
        self.host.select(points=layer)
        self.host.update_status()
        self.host.report_info(f"Imported {len(table)} landmark points from {path}.")
        return layer

    def export_csv(self, path: Any, overwrite: bool = False) -> Path | None:
        """Write the landmarks as CSV (``frame,name,y,x,y_mm,x_mm``); ``None`` on error (notified)."""
        try:
            written = write_landmarks_csv(path, self.host.table().sorted(), overwrite=overwrite)
        except Exception as exc:
            self.host.report_error(f"Cannot export the landmarks: {exc}", exc)
            return None
        self.host.set_status(f"Wrote {written}.")
        return written

    def import_dialog(self) -> Points | None:
        """"Import CSV…": ask for a file, then :meth:`import_csv` (``None`` when cancelled)."""
        path, _ = QFileDialog.getOpenFileName(self, "Import landmarks", "", "CSV (*.csv);;All files (*)")
        return self.import_csv(path) if path else None

    def export_dialog(self) -> Path | None:
        """"Export CSV…": ask where, then :meth:`export_csv` (``None`` when cancelled)."""
        points = self.host.points_layer()
        suggestion = f"{points.name}.csv" if points is not None else "landmarks.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export landmarks", suggestion, "CSV (*.csv)")
        return self.export_csv(path, overwrite=True) if path else None  # the dialog asked before replacing
