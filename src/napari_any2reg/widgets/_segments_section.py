"""The Mapping dock's AHA segments section: segment boundaries and numbers on a map, the
bullseye, and the per-segment table (copy, save as CSV).

Inputs: a 2-D map layer (T1, ECV, T2, R², ...), the Labels layer (2 = LV myocardium, 1 / 3 for
the centre and the septal side) and a Points layer with the RV insertion points (anterior
first, optionally the inferior one), drawn on the labels' grid. The segments are computed by
:func:`napari_any2reg.pipeline.segments.analyse_segments` (milliseconds, so no worker); the
boundaries are added as a Labels layer and the segment numbers as a Points layer with text, on
the map's position. Both layers carry the analysis in their metadata (:data:`SEGMENTS_KEY`, the
``SegmentAnalysis.summary()`` the QC report draws; :data:`SEGMENTS_ORDER_KEY`, which analysis is
the latest): that is how the Export dock finds the last analysis for its report
(:func:`latest_segments`), without asking this dock.

The section gets the Mapping dock as a :class:`~._hosts.JobHost` (viewer, status line, whether
its job runs), nothing more.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points
from qtpy.QtWidgets import (QAbstractItemView, QApplication, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                            QHBoxLayout, QHeaderView, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem)

from ._ecv_section import labels_frame
from ._hosts import JobHost
from ._layers import axes_kwargs
from ._pickers import LayerPicker, is_overlay_layer
from ._plots import LazyFigure, ShowsPlot

__all__ = ["SegmentsSection", "map_quantity", "SEGMENTS_KEY", "SEGMENTS_ORDER_KEY", "segment_layers",
           "latest_segments"]

#: Metadata key of the segment overlay layers (the analysis summary).
SEGMENTS_KEY = "any2reg_segments"
#: Metadata key of the segment overlay layers: the analysis' place in this session's order
#: (a larger number is a later analysis).
SEGMENTS_ORDER_KEY = "any2reg_segments_order"
_ORDER = itertools.count(1)


def segment_layers(viewer: Any) -> list[Any]:
    """The segment boundary layers (one per analysed map) the section added, with an analysis."""
    return [layer for layer in viewer.layers
            if isinstance(layer, Labels) and isinstance((layer.metadata or {}).get(SEGMENTS_KEY), dict)]


def latest_segments(viewer: Any) -> Any:
    """The boundary layer of the last segment analysis made (``None`` without any)."""
    layers = segment_layers(viewer)
    return max(layers, key=lambda la: la.metadata.get(SEGMENTS_ORDER_KEY, 0)) if layers else None

_MAP_QUANTITIES = {"t1": ("T1", "ms"), "r2": ("R²", ""), "t1_sd": ("T1 SD", "ms"), "t2": ("T2", "ms"),
                   "t2star": ("T2*", "ms")}


def map_quantity(layer: Any) -> tuple[str, str]:
    """``(quantity, unit)`` of a map layer, from its metadata."""
    meta = layer.metadata or {}
    if meta.get("quantity"):
        return str(meta["quantity"]), str(meta.get("unit", ""))
    return _MAP_QUANTITIES.get(str(meta.get("any2reg_map")), ("value", ""))


def _is_map_layer(layer: Any) -> bool:
    return isinstance(layer, Image) and layer.ndim == 2 and not layer.rgb and not is_overlay_layer(layer)


class SegmentsSection(ShowsPlot, QGroupBox):
    """AHA segments of a map: overlay, bullseye and table.

    Parameters
    ----------
    host : JobHost
        The dock: viewer and status line (the section's inputs wait while its job runs).
    """

    COLUMNS = ("segment", "name", "mean", "sd", "median", "n_pixels")

    def __init__(self, host: JobHost) -> None:
        super().__init__("AHA segments")
        self.host = host
        self.viewer = host.viewer
        self.last_analysis: Any = None
        form = QFormLayout(self)
        self.map_combo = LayerPicker(self.viewer, _is_map_layer, tooltip="2-D map (T1, ECV, T2, R²...).")
        form.addRow("Map", self.map_combo)
        self.labels_combo = LayerPicker(self.viewer, lambda la: isinstance(la, Labels) and not is_overlay_layer(la),
                                        tooltip="Labels on the map's grid: 2 LV myocardium (1 LV blood, 3 RV blood).")
        form.addRow("Labels", self.labels_combo)
        self.points_combo = LayerPicker(self.viewer, lambda la: isinstance(la, Points) and not is_overlay_layer(la),
                                        tooltip="RV insertion points on the labels' grid: anterior first, then "
                                                "(optional) inferior.")
        form.addRow("RV insertion", self.points_combo)
        self.level_combo = QComboBox()
        for level in ("basal", "mid", "apical"):
            self.level_combo.addItem(level, level)
        self.level_combo.setCurrentIndex(1)
        form.addRow("Slice level", self.level_combo)
        self.erode_spin = QSpinBox()
        self.erode_spin.setRange(0, 5)
        self.erode_spin.setSuffix(" px")
        self.erode_spin.setToolTip("Leave the outer pixel layers of the LV myocardium out of the segment statistics "
                                   "(partial volume with blood). 0: the whole label.")
        form.addRow("Exclude border", self.erode_spin)
        self.run_button = QPushButton("Segments")
        self.run_button.setToolTip("Assign the AHA segments, add their boundaries and numbers, draw the bullseye.")
        self.run_button.clicked.connect(lambda *_: self.run())
        form.addRow(self.run_button)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(120)
        form.addRow(self.table)
        buttons = QHBoxLayout()
        self.copy_button = QPushButton("Copy table")
        self.copy_button.clicked.connect(lambda *_: self.copy_table())
        self.save_button = QPushButton("Save CSV…")
        self.save_button.clicked.connect(lambda *_: self.save_csv())
        for button in (self.copy_button, self.save_button):
            button.setEnabled(False)
            buttons.addWidget(button)
        form.addRow(buttons)
        self.plot_area = LazyFigure((4.2, 3.6), 260, tight_layout=False)  # matplotlib at the first bullseye
        form.addRow(self.plot_area)
        self.refresh_layers()

    def refresh_layers(self) -> None:
        for combo in (self.map_combo, self.labels_combo, self.points_combo):
            combo.refresh()
        self.set_running(self.host.is_running())

    def set_running(self, running: bool) -> None:
        ready = all(c.layer() is not None for c in (self.map_combo, self.labels_combo, self.points_combo))
        self.run_button.setEnabled(not running and ready)

    # ------------------------------------------------------------------ run
    def insertion_points(self, points_layer: Any, labels_layer: Any) -> np.ndarray:
        """The Points layer's points as ``(y, x)`` pixels of the labels layer (through world coordinates)."""
        rows = []
        for point in np.asarray(points_layer.data, float)[:2]:
            world = np.asarray(points_layer.data_to_world(point), float)
            pixel = np.asarray(labels_layer.world_to_data(world[-labels_layer.ndim:]), float)
            rows.append(pixel[-2:])
        if not rows:
            raise ValueError(f"the points layer {points_layer.name!r} is empty; click the anterior RV insertion point "
                             "(then, optionally, the inferior one).")
        return np.array(rows)

    def run(self) -> bool:
        """Compute and show the segments; a problem is shown in the dock, nothing is added."""
        from ..pipeline.segments import analyse_segments

        try:
            map_layer, labels_layer, points_layer = (c.layer() for c in (self.map_combo, self.labels_combo,
                                                                          self.points_combo))
            if map_layer is None or labels_layer is None or points_layer is None:
                raise ValueError("choose a map, the labels and the RV insertion points.")
            values = np.asarray(map_layer.data, dtype=np.float64)
            labels = labels_frame(labels_layer, self.viewer, values.shape)
            points = self.insertion_points(points_layer, labels_layer)
            quantity, unit = map_quantity(map_layer)
            analysis = analyse_segments(values, labels, points, level=str(self.level_combo.currentData()),
                                        quantity=quantity, unit=unit, erode_px=int(self.erode_spin.value()))
        except Exception as exc:
            self.host.report_error(f"Cannot assign the segments: {exc}", exc)
            return False
        self.last_analysis = analysis
        self._add_overlay(analysis, map_layer)
        self._fill_table(analysis)
        analysis.figure(figure=self.figure)
        self.plot_area.draw_idle()
        self.host.set_status(f"AHA {analysis.level} segments of {map_layer.name!r}.")
        return True

    def _add_overlay(self, analysis: Any, map_layer: Any) -> None:
        from ..core.tissue.segments import segment_boundaries, segment_label_positions

        place = {"scale": np.array(map_layer.scale[-2:], float), "translate": np.array(map_layer.translate[-2:], float)}
        meta = {SEGMENTS_KEY: analysis.summary(), SEGMENTS_ORDER_KEY: next(_ORDER)}
        name = f"{map_layer.name} AHA segments"
        edges = segment_boundaries(analysis.segments)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = edges
            self.viewer.layers[name].metadata = dict(meta)  # the new analysis, before the numbers layer's events
        else:
            self.viewer.add_labels(edges, name=name, metadata=meta, opacity=0.9, **place, **axes_kwargs(2))
        positions = segment_label_positions(analysis.segments)
        numbers = np.array(list(positions.values()), float).reshape(-1, 2)
        text = [str(k) for k in positions]
        name = f"{map_layer.name} segment numbers"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_points(numbers, name=name, size=0.1, metadata=meta, features={"segment": text},
                               text={"string": "{segment}", "color": "white", "size": 10}, **place, **axes_kwargs(2))

    def _fill_table(self, analysis: Any) -> None:
        self.table.setRowCount(len(analysis.rows))
        for i, row in enumerate(analysis.rows):
            for j, column in enumerate(self.COLUMNS):
                value = row[column]
                text = "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
                self.table.setItem(i, j, QTableWidgetItem(text))
        for button in (self.copy_button, self.save_button):
            button.setEnabled(True)

    # ------------------------------------------------------------------ table out
    def table_csv(self) -> str:
        """The last analysis as CSV text: exactly what :meth:`save_csv` writes (``segments.csv``)."""
        from ..pipeline.segments import segments_csv_text

        return "" if self.last_analysis is None else segments_csv_text(self.last_analysis)

    def copy_table(self) -> None:
        QApplication.clipboard().setText(self.table_csv())
        self.host.set_status("Segment table copied (CSV).")

    def save_csv(self, path: str | None = None) -> bool:
        """Write the table as ``segments.csv`` columns (asks for the file unless ``path`` is given)."""
        if self.last_analysis is None:
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save segment table", "segments.csv", "CSV (*.csv)")
            if not path:
                return False
        try:
            from ..io import atomic_write
            from ..pipeline.segments import write_segments_table

            analysis = self.last_analysis
            atomic_write(path, lambda p: write_segments_table(p, analysis), overwrite=True)
        except OSError as exc:
            self.host.report_error(f"Could not save the segment table: {exc}", exc)
            return False
        self.host.set_status(f"Saved {path}.")
        return True
