"""The Landmarks dock's registration section: TRE, landmarks on the common grid, propagation of
points and masks, and the all-pair Dice. Each computation runs as a job of the dock
(:class:`~._base.WorkerDock`, a busy bar: the core reports no fraction).

The section gets its dock as a :class:`RegistrationToolsHost`: the layers and the landmark table
the dock holds, the dock's jobs and status line, and a way to bring a tab to the front. It keeps
its own results (:attr:`RegistrationTools.last_tre`, :attr:`RegistrationTools.last_dice`)."""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.landmarks import (
    DiceReport,
    LandmarkTable,
    TREReport,
    dice_before_after,
    landmarks_to_common,
    propagate_labels,
    propagate_landmarks,
    tre_before_after,
)
from ._hosts import JobHost
from ._layers import axes_kwargs
from ._pickers import LayerPicker

__all__ = ["RegistrationTools", "RegistrationToolsHost", "OWN_KEY"]

#: Metadata key of the layers the Landmarks dock made (updated, not duplicated, on a re-run).
OWN_KEY = "any2reg_landmarks_output"
_OWN_KEY = OWN_KEY


@runtime_checkable
class RegistrationToolsHost(JobHost, Protocol):
    """What :class:`RegistrationTools` needs from the Landmarks dock (its public methods)."""

    def image_layer(self) -> Image | None:
        """The raw sequence chosen in the dock."""

    def table(self) -> LandmarkTable:
        """The clicked landmarks on the image's pixels (raises ``ValueError`` when there are none)."""

    def registration_field(self) -> tuple[Image, np.ndarray]:
        """The registered layer and its displacement field (raises ``ValueError`` without one)."""

    def current_frame(self) -> int:
        """The image frame on screen."""

    def put_points(self, name: str, table: LandmarkTable, grid: Image, image: Image | None,
                   own: bool = True) -> Any:
        """Add (or update the dock's own) Points layer ``name`` showing ``table`` on ``grid``."""

    def show_page(self, page: QWidget) -> None:
        """Bring the dock's tab holding ``page`` to the front."""


class RegistrationTools:
    """The TRE tab and the propagation / Dice tab of the Landmarks dock.

    Parameters
    ----------
    host : RegistrationToolsHost
        The dock: layers, landmark table, jobs and status line.

    Attributes
    ----------
    last_tre : TREReport or None
        The last TRE computed.
    last_dice : DiceReport or None
        The last all-pair Dice computed.
    """

    def __init__(self, host: RegistrationToolsHost) -> None:
        self.host = host
        self.last_tre: TREReport | None = None
        self.last_dice: DiceReport | None = None
        self.tre_tab = QWidget()
        self.prop_tab = QWidget()
        self._build()

    def _build(self) -> None:
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
        tre_layout = QVBoxLayout(self.tre_tab)
        tre_layout.addLayout(tre_buttons)
        tre_layout.addWidget(self.tre_table, 1)

        # --- tab 3: propagation and Dice
        self.labels_combo = LayerPicker(
            self.host.viewer, lambda la: isinstance(la, Labels) and la.ndim in (2, 3), none=True,
            tooltip="Labels layer: a mask on the current frame to propagate, or (N, H, W) labels for Dice.")
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
        prop_layout = QVBoxLayout(self.prop_tab)
        prop_form = QFormLayout()
        prop_form.addRow("Labels", self.labels_combo)
        prop_layout.addLayout(prop_form)
        prop_layout.addWidget(self.propagate_points_button)
        prop_layout.addWidget(self.propagate_mask_button)
        prop_layout.addWidget(self.dice_button)
        prop_layout.addWidget(self.dice_table, 1)


    def _start(self, message: str, fn: Any, done: Any) -> bool:
        """Run ``fn()`` as the dock's job (busy bar), then ``done(result)`` in the GUI thread."""
        return self.host.start_job(lambda job: fn(), description=message, on_result=done, busy=True)

    def compute_tre(self) -> bool:
        """TRE before / after per landmark and overall (mm), in a worker; shown in the TRE table.

        Returns ``True`` when the computation started (the report lands in :attr:`last_tre`).
        """
        try:
            table = self.host.table()
            _, field = self.host.registration_field()
        except Exception as exc:
            self.host.report_error(f"Cannot compute the TRE: {exc}", exc)
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
        self.host.show_page(self.tre_tab)
        self.host.set_status(
            f"TRE overall {_fmt(report.before['overall'])} mm before, {_fmt(report.after['overall'])} mm after registration."
        )

    def show_common_landmarks(self) -> bool:
        """Add (or update) ``"<registered> landmarks (common grid)"``: the points mapped by the inverse field.

        The inversion runs in a worker; returns ``True`` when it started.
        """
        try:
            table = self.host.table()
            registered, field = self.host.registration_field()
            image = self.host.image_layer()
        except Exception as exc:
            self.host.report_error(f"Cannot map the landmarks: {exc}", exc)
            return False

        def done(common: LandmarkTable) -> None:
            self.host.put_points(f"{registered.name} landmarks (common grid)", common, registered, image)
            self.host.set_status(f"Landmarks on the common grid shown on {registered.name!r}.")

        return self._start("Mapping the landmarks to the common grid", lambda: landmarks_to_common(table, field), done)

    def propagate_points(self) -> bool:
        """The current frame's landmarks carried to every raw frame (new / updated Points layer), in a worker."""
        try:
            image = self.host.image_layer()
            table = self.host.table()
            _, field = self.host.registration_field()
            frame = self.host.current_frame()
        except Exception as exc:
            self.host.report_error(f"Cannot propagate the points: {exc}", exc)
            return False

        def done(propagated: LandmarkTable) -> None:
            self.host.put_points(f"{image.name} landmarks (propagated)", propagated, image, image)
            self.host.set_status(
                f"Propagated {len(propagated.landmark_names)} landmark(s) from frame {frame} to "
                f"{field.shape[0]} frames: check them frame by frame, and move the ones that are off."
            )

        return self._start("Propagating the points", lambda: propagate_landmarks(table, frame, field), done)

    def _labels_frame(self, labels: Labels, image: Image) -> np.ndarray:
        data = np.asarray(labels.data)
        if data.ndim == 3:
            if data.shape[0] != image.data.shape[0]:
                raise ValueError(f"{labels.name!r} has {data.shape[0]} frames but {image.name!r} has {image.data.shape[0]}.")
            data = data[self.host.current_frame()]
        if data.shape != tuple(image.data.shape[1:]):
            raise ValueError(f"{labels.name!r} is {data.shape} but the frames are {tuple(image.data.shape[1:])}; draw on the image grid.")
        if not data.any():
            raise ValueError(f"{labels.name!r} is empty on frame {self.host.current_frame()}; paint the mask on this frame first.")
        return np.array(data, copy=True)

    def propagate_mask(self) -> bool:
        """The Labels layer's current frame carried to every raw frame (new / updated Labels layer), in a worker."""
        try:
            image = self.host.image_layer()
            labels = self.labels_combo.layer()
            if image is None or labels is None:
                raise ValueError("choose the image and a Labels layer with a mask on the current frame.")
            mask = self._labels_frame(labels, image)
            _, field = self.host.registration_field()
            frame = self.host.current_frame()
        except Exception as exc:
            self.host.report_error(f"Cannot propagate the mask: {exc}", exc)
            return False
        return self._start("Propagating the mask", lambda: propagate_labels(mask, frame, field),
                           lambda stack: self._put_propagated(stack, labels, image, frame))

    def _put_propagated(self, stack: np.ndarray, labels: Labels, image: Image, frame: int) -> Labels:
        name = f"{labels.name} propagated"
        viewer = self.host.viewer
        existing = viewer.layers[name] if name in viewer.layers else None
        meta = {_OWN_KEY: "labels", "source_frame": frame, "image_layer": image.name}
        if isinstance(existing, Labels) and existing.metadata.get(_OWN_KEY) and existing.data.shape == stack.shape:
            existing.data = stack
            existing.metadata = meta
            layer = existing
        else:
            layer = viewer.add_labels(stack, name=name, scale=np.asarray(image.scale)[-3:],
                                      translate=np.asarray(image.translate)[-3:], metadata=meta, opacity=0.5,
                                      **axes_kwargs(3))
        self.host.set_status(f"Propagated {labels.name!r} from frame {frame} to {stack.shape[0]} frames.")
        return layer

    def compute_dice(self) -> bool:
        """All-pair Dice per label of the chosen Labels layer ``(N, H, W)``, before and after warping (worker)."""
        try:
            labels = self.labels_combo.layer()
            if labels is None:
                raise ValueError("choose a Labels layer (N, H, W) with a segmentation of every frame (e.g. a propagated mask).")
            _, field = self.host.registration_field()
            data = np.asarray(labels.data)
            if data.ndim != 3 or data.shape[0] != field.shape[0] or data.shape[1:] != field.shape[2:]:
                raise ValueError(
                    f"{labels.name!r} is {data.shape}; all-pair Dice needs labels of every frame on the image grid, "
                    f"{(field.shape[0],) + field.shape[2:]} (propagate a mask first)."
                )
            data = np.array(data, copy=True)  # the user may paint while the worker runs
        except Exception as exc:
            self.host.report_error(f"Cannot compute the Dice: {exc}", exc)
            return False
        return self._start("Computing the all-pair Dice", lambda: dice_before_after(data, field), self._show_dice)

    def _show_dice(self, report: DiceReport) -> None:
        self.last_dice = report
        rows = report.rows()
        self.dice_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for column, text in enumerate((f"{row['label']}: {row['name']}", _fmt(row["dice_before"]), _fmt(row["dice_after"]))):
                self.dice_table.setItem(i, column, QTableWidgetItem(text))
        self.host.set_status("All-pair Dice per label: raw frames (before) vs warped to the common grid (after).")



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
