"""The Review dock's QC section: flagging thresholds and the per-frame QC table.

The table shows :class:`napari_any2reg.core.qc.QCTable` rows (flagged rows highlighted, the
reasons as tool tip); changing a threshold re-flags the rows at once, clicking a row emits
:attr:`QCSection.frame_clicked` (the dock moves the frame slider there).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import qc

__all__ = ["QCSection", "FLAG_COLOUR", "spin"]

#: Background of flagged rows in the QC table.
FLAG_COLOUR = QColor(160, 40, 40)


def spin(lo: float, hi: float, decimals: int, value: float | None, suffix: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setDecimals(decimals)
    box.setSingleStep(10 ** -decimals * 5 if decimals else 1)
    box.setValue(float(value) if value is not None else lo)
    if suffix:
        box.setSuffix(suffix)
    return box


class QCSection(QWidget):
    """Thresholds, "Compute QC" and the per-frame table.

    Attributes
    ----------
    table_data : the QC table shown (with the current thresholds), or ``None``
    """

    #: A row was clicked: the frame it describes.
    frame_clicked = Signal(int)
    #: "Compute QC" was pressed.
    compute_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table_data: qc.QCTable | None = None
        defaults = qc.QCThresholds()
        form = QFormLayout()
        self.folding_threshold_spin = spin(0.0, 100.0, 2, defaults.max_folding_percent, " %")
        self.folding_threshold_spin.setToolTip("Flag frames with more folded pixels than this.")
        form.addRow("Flag folding above", self.folding_threshold_spin)
        self.score_threshold_spin = spin(0.0, 1.0, 2, defaults.min_mean_score)
        self.score_threshold_spin.setToolTip("Flag frames whose mean correspondence score (ROI) is lower.")
        form.addRow("Flag score below", self.score_threshold_spin)
        self.correlation_threshold_spin = spin(0.0, 1.0, 2, defaults.min_template_correlation)
        self.correlation_threshold_spin.setToolTip(
            "Flag frames whose |correlation| with the template (ROI) after registration is lower.")
        form.addRow("Flag |corr.| below", self.correlation_threshold_spin)
        for box in (self.folding_threshold_spin, self.score_threshold_spin, self.correlation_threshold_spin):
            box.valueChanged.connect(self._on_thresholds_changed)

        self.compute_button = QPushButton("Compute QC")
        self.compute_button.setToolTip("Recompute the per-frame table and the run summary.")
        self.compute_button.clicked.connect(lambda *_: self.compute_requested.emit())

        headers = [header for _, header, _ in qc.QCTable.COLUMNS] + ["flag"]
        self.table = QTableWidget(0, len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.cellClicked.connect(lambda row, column: self._on_row_clicked(row))
        self.table.setMinimumHeight(180)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.table, 1)

    def thresholds(self) -> qc.QCThresholds:
        """The flagging rules set here."""
        return qc.QCThresholds(
            max_folding_percent=float(self.folding_threshold_spin.value()),
            min_mean_score=float(self.score_threshold_spin.value()),
            min_template_correlation=float(self.correlation_threshold_spin.value()),
        )

    def show_table(self, table: qc.QCTable) -> None:
        """Show ``table`` flagged with the current thresholds."""
        table = table.with_thresholds(self.thresholds())
        self.table_data = table
        rows = table.formatted()
        self.table.setRowCount(len(rows))
        right = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        left = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for r, (values, row) in enumerate(zip(rows, table.rows)):
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setTextAlignment(right if c < len(values) - 1 else left)
                if row.flagged:
                    item.setBackground(QBrush(FLAG_COLOUR))
                    item.setForeground(QBrush(QColor("white")))
                    item.setToolTip("; ".join(row.reasons))
                self.table.setItem(r, c, item)

    def clear(self) -> None:
        self.table_data = None
        self.table.setRowCount(0)

    def _on_thresholds_changed(self, *args: Any) -> None:
        if self.table_data is not None:
            self.show_table(self.table_data)

    def _on_row_clicked(self, row: int) -> None:
        if self.table_data is not None and 0 <= row < len(self.table_data):
            self.frame_clicked.emit(int(self.table_data.rows[row].frame))
