"""The Review dock's QC section (flagging thresholds and the per-frame QC table) and its
verdict banner.

The table shows :class:`napari_any2reg.core.qc.QCTable` rows (flagged rows highlighted, the
reasons as tool tip); outlier frames (:mod:`napari_any2reg.core.qc.outliers`) carry a mark in the
frame column with their reasons as its tool tip. Changing a threshold re-flags the rows at
once, clicking a row emits :attr:`QCSection.frame_clicked` (the dock moves the frame slider
there). :class:`VerdictBanner` shows the verdict (:mod:`napari_any2reg.core.qc.verdict`) in the
colour of its level, each reason that names frames with one button per frame.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence as SequenceType

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import qc

__all__ = ["QCSection", "VerdictBanner", "FLAG_COLOUR", "OUTLIER_COLOUR", "OUTLIER_MARK", "VERDICT_COLOURS", "spin"]

#: Background of flagged rows in the QC table.
FLAG_COLOUR = QColor(160, 40, 40)

#: Background of an outlier frame's frame cell, and the mark after its number.
OUTLIER_COLOUR = QColor(215, 120, 0)
OUTLIER_MARK = "⚑"

#: Banner colours (background, text) by verdict level.
VERDICT_COLOURS = {"good": ("#2e7d32", "white"), "check": ("#f9a825", "black"), "poor": ("#c62828", "white")}


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
        #: outlier frame -> its reasons (marked in the frame column)
        self.outliers: dict[int, list[str]] = {}
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

    def show_table(self, table: qc.QCTable, outliers: Mapping[int, SequenceType[str]] | None = None) -> None:
        """Show ``table`` flagged with the current thresholds; ``outliers`` (frame -> reasons)
        are marked in the frame column (kept when only the thresholds change: ``None``)."""
        if outliers is not None:
            self.outliers = {int(k): list(v) for k, v in outliers.items()}
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
                if c == 0 and int(row.frame) in self.outliers:
                    # the frame itself disagrees with the rest: a mark of its own, beside the QC flags
                    item.setText(f"{text} {OUTLIER_MARK}")
                    item.setBackground(QBrush(OUTLIER_COLOUR))
                    item.setForeground(QBrush(QColor("black")))
                    why = "; ".join(self.outliers[int(row.frame)]) or "disagrees with the other frames"
                    item.setToolTip(f"Outlier frame: {why}" + (f"\nQC flags: {'; '.join(row.reasons)}" if row.reasons else ""))
                self.table.setItem(r, c, item)

    def outlier_rows(self) -> list[int]:
        """Rows whose frame is marked as an outlier."""
        return [r for r in range(self.table.rowCount())
                if self.table.item(r, 0) is not None and self.table.item(r, 0).text().endswith(OUTLIER_MARK)]

    def clear(self) -> None:
        self.table_data = None
        self.outliers = {}
        self.table.setRowCount(0)

    def _on_thresholds_changed(self, *args: Any) -> None:
        if self.table_data is not None:
            self.show_table(self.table_data)

    def _on_row_clicked(self, row: int) -> None:
        if self.table_data is not None and 0 <= row < len(self.table_data):
            self.frame_clicked.emit(int(self.table_data.rows[row].frame))


class VerdictBanner(QFrame):
    """The verdict of a review: its level and reasons in the level's colour, a button per frame
    a reason names (:attr:`frame_clicked` carries the frame). Hidden without a verdict.

    Attributes
    ----------
    level_label : QLabel
    frame_buttons : list of (int, QPushButton)
        The frame each button jumps to, in the order shown.
    """

    #: A frame button was pressed: the frame it names.
    frame_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("any2regVerdict")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.level_label = QLabel()
        self.level_label.setWordWrap(True)
        self.level_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._reasons = QVBoxLayout()
        self._reasons.setContentsMargins(0, 0, 0, 0)
        self._reasons.setSpacing(2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addWidget(self.level_label)
        layout.addLayout(self._reasons)
        self.level: str | None = None
        self.frame_buttons: list[tuple[int, QPushButton]] = []
        self.reason_labels: list[QLabel] = []
        self.setVisible(False)

    def show_message(self, text: str) -> None:
        """Say why there is no verdict (grey, no reasons)."""
        self.show_verdict(None)
        self.setStyleSheet("QFrame#any2regVerdict { background-color: #616161; border-radius: 4px; } "
                           "QFrame#any2regVerdict QLabel { color: white; }")
        self.level_label.setText(text)
        self.setVisible(True)

    def show_verdict(self, verdict: Mapping[str, Any] | None) -> None:
        """Show ``verdict`` (``{"level", "reasons": [{"level", "text", "frames"}]}``); ``None`` hides it."""
        while self._reasons.count():
            item = self._reasons.takeAt(0)
            row = item.layout()
            if row is not None:
                while row.count():
                    widget = row.takeAt(0).widget()
                    if widget is not None:
                        widget.deleteLater()
                row.deleteLater()
            elif item.widget() is not None:
                item.widget().deleteLater()
        self.frame_buttons, self.reason_labels = [], []
        self.level = None if verdict is None else str(verdict.get("level"))
        if verdict is None:
            self.setVisible(False)
            return
        background, foreground = VERDICT_COLOURS.get(self.level, ("#616161", "white"))
        self.setStyleSheet(f"QFrame#any2regVerdict {{ background-color: {background}; border-radius: 4px; }} "
                           f"QFrame#any2regVerdict QLabel {{ color: {foreground}; }}")
        reasons = list(verdict.get("reasons") or [])
        title = {"good": "Good: the correction can be trusted", "check": "Check: look at the reasons below",
                 "poor": "Poor: do not report the corrected map as it is"}.get(self.level, f"Verdict: {self.level}")
        self.level_label.setText(f"<b>{title}</b>")
        self.level_label.setToolTip("Verdict from stated thresholds (docs/verdict.md), as in metrics.json.")
        for reason in reasons:
            row = QHBoxLayout()
            row.setSpacing(4)
            label = QLabel(f"{'•' if reason.get('level') == 'good' else reason.get('level', '') + ':'} {reason.get('text', '')}")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            row.addWidget(label, 1)
            self.reason_labels.append(label)
            for frame in reason.get("frames") or ():
                button = QPushButton(f"frame {int(frame)}")
                button.setToolTip(f"Show frame {int(frame)}.")
                button.setFlat(True)
                button.setCursor(Qt.CursorShape.PointingHandCursor)
                button.setStyleSheet(f"color: {foreground}; text-decoration: underline;")
                button.clicked.connect(lambda *_, f=int(frame): self.frame_clicked.emit(f))
                row.addWidget(button)
                self.frame_buttons.append((int(frame), button))
            self._reasons.addLayout(row)
        self.setVisible(True)
