"""The "Review" dock widget: overlays, a per-frame QC table and a temporal profile of a run.

Thin by design: every number and map comes from :mod:`napari_any2reg.core.qc`; this module
only finds the layers, runs the heavy part in a worker, and turns results into layers.

* The picker lists registered layers (image layers whose metadata holds a ``displacement``,
  as the Registration widget makes them); the source layer is found by the metadata's
  ``source_layer`` name.
* Each overlay button adds a layer named ``"<registered> <overlay>"`` with the registered
  layer's scale and translate and the frame axis first, so it follows the frame slider. A
  second click updates the overlay the widget made before; user layers are never modified
  (the raw/registered toggle only changes which of the two is visible).
* The deformation grid shows the common grid's lines where they land in each *raw* frame
  (``x + u_i(x)``, see :mod:`core.qc`): overlay it on the source layer.
* The QC table (per frame; flagged rows highlighted with the reason) and the run summary are
  computed in a worker. Clicking a row moves the frame slider to that frame.
* Double-clicking a pixel in the viewer plots its intensity across frames, raw vs registered.

Tests drive it through the public methods (``show_grid``, ``show_jacobian``, ...,
``compute_review``, ``go_to_frame``, ``show_profile``) and :attr:`ReviewWidget.worker`.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from napari.layers import Image, Shapes, Vectors
from napari.qt.threading import FunctionWorker
from napari.utils.colormaps import Colormap
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core import qc
from ..core.spatial import jacobian_determinant
from ._dock import compact_combos, install_frame_label, scroll_body
from ._layers import axes_kwargs, beside_translate
from ._pickers import is_registered_layer
from ._relay import ActivityProgress, ProgressRelay

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["ReviewWidget", "OVERLAYS", "JACOBIAN_LIMITS", "FOLDING_COLORMAP"]

#: Overlay kind -> suffix of the layer name ("<registered> <suffix>").
OVERLAYS = {
    "grid": "grid",
    "quiver": "quiver",
    "jacobian": "Jacobian",
    "folding": "folding",
    "scores": "scores",
    "difference_before": "difference before",
    "difference_after": "difference after",
    "checkerboard": "checkerboard",
}

#: Widest display range of det J: 1 (volume kept) sits in the middle of the diverging map. The
#: overlay uses ``core.qc.jacobian_display_limits`` (1 ± the 99.5th percentile of |det J - 1|).
JACOBIAN_LIMITS = (0.0, 2.0)

#: The layer each overlay belongs on: the raw frames ("source") or the common grid ("registered").
#: The grid and the arrows show where common-grid points are found in each raw frame; the
#: difference before registration is of the raw frames.
OVERLAY_BASE = {"grid": "source", "quiver": "source", "difference_before": "source"}

#: Image overlays (opaque maps): a new one hides the others on the same layer position.
IMAGE_OVERLAYS = ("jacobian", "folding", "scores", "difference_before", "difference_after", "checkerboard")

#: Folded pixels in a loud colour; everything else transparent.
FOLDING_COLORMAP = Colormap([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]], name="any2reg folding")

#: Background of flagged rows in the QC table.
FLAG_COLOUR = QColor(160, 40, 40)

_OVERLAY_KEY = "any2reg_overlay"


@dataclasses.dataclass
class _Outcome:
    key: tuple[int, ...]
    review: qc.Review | None = None
    error: BaseException | None = None
    difference_limit: float = 1.0


@dataclasses.dataclass
class _Pair:
    """The registered layer under review, its source and the arrays the core needs."""

    registered: Image
    source: Image | None
    displacement: np.ndarray
    spacing_mm: tuple[float, float]
    info: dict[str, Any]

    @property
    def key(self) -> tuple[int, ...]:
        # a re-run replaces the metadata arrays: their identity tells a stale review apart
        return (id(self.registered), id(self.displacement), id(self.registered.data),
                id(self.source) if self.source is not None else 0,
                id(self.source.data) if self.source is not None else 0)


class ReviewWidget(QWidget):
    """Dock widget reviewing a registration result (overlays, QC table, temporal profile).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self.review: qc.Review | None = None
        self.table_data: qc.QCTable | None = None
        self.last_error: BaseException | None = None
        self.last_profile: dict[str, Any] | None = None
        self._review_key: tuple[int, ...] | None = None
        self._recompute = False  # the selection changed while a review was running
        self._pending: list[Callable[[qc.Review], None]] = []
        self._combo_layers: list[Image] = []
        self._watched: list[Any] = []
        self._tasks: dict[int, FunctionWorker] = {}
        self._task_done: dict[int, tuple[str, Callable[[Any], Any]]] = {}
        self._task_counter = 0
        self._running_tasks = 0
        self._finished_tasks = 0
        self._difference_limit = 1.0
        self.activity: ActivityProgress | None = None

        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)
        self._build_ui()
        self._connect_viewer()
        self.refresh_layers()
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        top = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("A registered layer (made by the Registration panel).")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        top.addRow("Registered", self.layer_combo)
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        top.addRow("Source", self.source_label)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_overlay_tab(), "Overlays")
        self.tabs.addTab(self._build_qc_tab(), "QC table")
        self.tabs.addTab(self._build_profile_tab(), "Profile")

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)

    def _build_overlay_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout()
        self.grid_spacing_spin = QDoubleSpinBox()
        self.grid_spacing_spin.setRange(0.5, 500.0)
        self.grid_spacing_spin.setDecimals(1)
        self.grid_spacing_spin.setValue(8.0)
        self.grid_unit_combo = QComboBox()
        self.grid_unit_combo.addItem("pixels", "px")
        self.grid_unit_combo.addItem("mm", "mm")
        spacing_row = QHBoxLayout()
        spacing_row.addWidget(self.grid_spacing_spin, 1)
        spacing_row.addWidget(self.grid_unit_combo)
        form.addRow("Grid spacing", spacing_row)
        self.quiver_step_spin = QSpinBox()
        self.quiver_step_spin.setRange(1, 64)
        self.quiver_step_spin.setValue(6)
        self.quiver_step_spin.setSuffix(" px")
        form.addRow("Arrow every", self.quiver_step_spin)
        self.tiles_spin = QSpinBox()
        self.tiles_spin.setRange(2, 32)
        self.tiles_spin.setValue(8)
        form.addRow("Checkerboard tiles", self.tiles_spin)

        buttons = QGridLayout()
        specs = [
            ("grid_button", "Deformation grid", self.show_grid,
             "Common-grid lines where they land in each raw frame (overlay the source), coloured by |u| in mm."),
            ("quiver_button", "Displacement arrows", self.show_quiver,
             "Arrows from common-grid points to where they are found in each raw frame."),
            ("jacobian_button", "Jacobian det", self.show_jacobian,
             "det(I + ∇u): blue compression, red expansion, 1 = volume kept (limits from the data)."),
            ("folding_button", "Folding", self.show_folding, "Pixels with det J ≤ 0 (the transform folds)."),
            ("scores_button", "Correspondence", self.show_scores,
             "Per-frame correspondence score in [0, 1] (high = the pixel matches the group)."),
            ("difference_button", "Difference to template", self.show_differences,
             "Frame minus the intensity-matched template, before and after registration."),
            ("checkerboard_button", "Checkerboard raw/reg.", self.show_checkerboard,
             "Raw and registered frames in alternating tiles."),
            ("toggle_button", "Toggle raw ↔ registered", self.toggle_raw_registered,
             "Show either the source or the registered layer (image overlays are hidden)."),
            ("side_button", "Side by side ↔ on top", self.side_by_side,
             "Put the registered frames beside the raw ones, or back on top of them."),
        ]
        for i, (attr, text, slot, tip) in enumerate(specs):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda *_, fn=slot: fn())
            setattr(self, attr, button)
            buttons.addWidget(button, i // 2, i % 2)
        layout = QVBoxLayout(tab)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addStretch(1)
        return tab

    def _build_qc_tab(self) -> QWidget:
        tab = QWidget()
        defaults = qc.QCThresholds()
        form = QFormLayout()
        self.folding_threshold_spin = _spin(0.0, 100.0, 2, defaults.max_folding_percent, " %")
        self.folding_threshold_spin.setToolTip("Flag frames with more folded pixels than this.")
        form.addRow("Flag folding above", self.folding_threshold_spin)
        self.score_threshold_spin = _spin(0.0, 1.0, 2, defaults.min_mean_score)
        self.score_threshold_spin.setToolTip("Flag frames whose mean correspondence score (ROI) is lower.")
        form.addRow("Flag score below", self.score_threshold_spin)
        self.correlation_threshold_spin = _spin(0.0, 1.0, 2, defaults.min_template_correlation)
        self.correlation_threshold_spin.setToolTip(
            "Flag frames whose |correlation| with the template (ROI) after registration is lower."
        )
        form.addRow("Flag |corr.| below", self.correlation_threshold_spin)
        for spin in (self.folding_threshold_spin, self.score_threshold_spin, self.correlation_threshold_spin):
            spin.valueChanged.connect(self._on_thresholds_changed)

        self.compute_button = QPushButton("Compute QC")
        self.compute_button.setToolTip("Recompute the per-frame table and the run summary.")
        self.compute_button.clicked.connect(lambda *_: self.compute_review(force=True))

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

        layout = QVBoxLayout(tab)
        layout.addLayout(form)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.table, 1)
        return tab

    def _build_profile_tab(self) -> QWidget:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        tab = QWidget()
        self.profile_radius_spin = QSpinBox()
        self.profile_radius_spin.setRange(0, 5)
        self.profile_radius_spin.setValue(0)
        self.profile_radius_spin.setToolTip("Average a (2r+1)² neighbourhood (0: the pixel alone).")
        form = QFormLayout()
        form.addRow("Radius (px)", self.profile_radius_spin)
        hint = QLabel("Double-click a pixel in the viewer to plot it across frames.")
        hint.setWordWrap(True)
        self.figure = Figure(figsize=(4.0, 2.8), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        layout = QVBoxLayout(tab)
        layout.addWidget(hint)
        layout.addLayout(form)
        layout.addWidget(self.canvas, 1)
        return tab

    # ------------------------------------------------------------------ viewer events
    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        for layer in layers:
            self._watch(layer)
        # viewer-level callback (the user's layers get nothing attached); a weak reference so a
        # closed widget does not keep receiving clicks. napari's own double-click zooms in: a
        # double-click on a pixel of the reviewed layers plots its profile *instead*, so our
        # callback takes the zoom's place and passes every other double-click on to it.
        callbacks = self.viewer.mouse_double_click_callbacks
        self._zoom_callback = next((cb for cb in callbacks if getattr(cb, "__name__", "") == "double_click_to_zoom"), None)
        self._double_click = _double_click_callback(self, self._zoom_callback)
        if self._zoom_callback is not None:
            callbacks[callbacks.index(self._zoom_callback)] = self._double_click
        else:
            callbacks.append(self._double_click)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        callbacks = self.viewer.mouse_double_click_callbacks
        if self._double_click in callbacks:
            index = callbacks.index(self._double_click)
            if self._zoom_callback is not None and self._zoom_callback not in callbacks:
                callbacks[index] = self._zoom_callback
            else:
                callbacks.remove(self._double_click)
        super().closeEvent(event)

    def _watch(self, layer: Any) -> None:
        if not any(layer is w for w in self._watched):
            layer.events.name.connect(self._on_layers_changed)
            layer.events.data.connect(self._on_layer_data)
            self._watched.append(layer)

    def _on_layer_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            self._watch(layer)
        self.refresh_layers()
        if layer is not None and is_registered_layer(layer):
            self._select(layer)

    def _on_layers_changed(self, event: Any = None) -> None:
        alive = list(self.viewer.layers)
        for layer in list(self._watched):
            if not any(layer is a for a in alive):
                layer.events.name.disconnect(self._on_layers_changed)
                layer.events.data.disconnect(self._on_layer_data)
                self._watched.remove(layer)
        self.refresh_layers()

    def _on_layer_data(self, event: Any = None) -> None:
        # a re-run (or an edit) of the layer under review: show nothing stale
        pair_layers = (self.selected_layer(), self._source_of(self.selected_layer()))
        if any(event is not None and getattr(event, "source", None) is layer for layer in pair_layers if layer):
            self._invalidate("The result changed; reviewing it again…")
            # the Registration widget sets the data, then the metadata: look once both are new
            QTimer.singleShot(0, self._auto_review)

    # ------------------------------------------------------------------ picker
    def eligible_layers(self) -> list[Image]:
        """Registered layers: image layers carrying a displacement in their metadata."""
        return [layer for layer in self.viewer.layers if is_registered_layer(layer)]

    def refresh_layers(self) -> None:
        current = self.selected_layer()
        layers = self.eligible_layers()
        self._combo_layers = layers
        self.layer_combo.blockSignals(True)
        try:
            self.layer_combo.clear()
            for layer in layers:
                self.layer_combo.addItem(layer.name, layer.name)
            index = next((i for i, la in enumerate(layers) if la is current), 0 if layers else -1)
            self.layer_combo.setCurrentIndex(index)
        finally:
            self.layer_combo.blockSignals(False)
        if self.selected_layer() is not current:
            self._on_layer_changed()
        else:
            self._update_source_label()
        self._update_enabled()

    def selected_layer(self) -> Image | None:
        index = self.layer_combo.currentIndex()
        layers = getattr(self, "_combo_layers", [])
        return layers[index] if 0 <= index < len(layers) else None

    def _select(self, layer: Image) -> None:
        index = next((i for i, la in enumerate(self._combo_layers) if la is layer), -1)
        if index >= 0:
            self.layer_combo.setCurrentIndex(index)

    def _on_layer_changed(self, *args: Any) -> None:
        self._invalidate("")
        if not self.busy():  # messages and the bar of the last action belong to another layer
            self.progress_bar.setValue(0)
            self.set_status("")
        self._update_source_label()
        self._update_enabled()
        layer = self.selected_layer()
        if layer is not None:
            self.summary_label.setText(_quick_summary(layer))
        self._auto_review()

    def _auto_review(self) -> None:
        """Compute the table for the selected layer when it has a source (what a reader wants first)."""
        layer = self.selected_layer()
        if layer is None or self._source_of(layer) is None or self.review is not None:
            return
        if self.worker is not None:
            self._recompute = True
        else:
            self.compute_review()

    def _source_of(self, layer: Image | None) -> Image | None:
        if layer is None:
            return None
        name = layer.metadata.get("source_layer")
        if name is None or name not in self.viewer.layers:
            return None
        source = self.viewer.layers[name]
        if isinstance(source, Image) and tuple(source.data.shape) == tuple(layer.data.shape):
            return source
        return None

    def _update_source_label(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self.source_label.setText("—")
            self.summary_label.setText("No registered layer: run the Registration panel first.")
            return
        source = self._source_of(layer)
        name = layer.metadata.get("source_layer", "?")
        self.source_label.setText(source.name if source is not None else f"{name!r} not found (reopen it)")

    def _update_enabled(self) -> None:
        has = self.selected_layer() is not None
        for button in (self.grid_button, self.quiver_button, self.jacobian_button, self.folding_button,
                       self.scores_button, self.difference_button, self.checkerboard_button,
                       self.toggle_button, self.side_button):
            button.setEnabled(has)
        self.compute_button.setEnabled(has and self.worker is None)

    # ------------------------------------------------------------------ review data
    def pair(self) -> _Pair:
        """The registered layer, its source and field; raises ``ValueError`` with the fix."""
        layer = self.selected_layer()
        if layer is None:
            raise ValueError("No registered layer to review; run the Registration panel first.")
        displacement = layer.metadata.get("displacement")
        n, h, w = layer.data.shape
        if displacement is None or tuple(np.shape(displacement)) != (n, 2, h, w):
            raise ValueError(f"{layer.name!r} carries no (N, 2, H, W) displacement; register its source again.")
        spacing = layer.metadata.get("spacing_mm")
        if spacing is None:
            spacing = tuple(float(s) for s in layer.scale[-2:])
        return _Pair(
            registered=layer,
            source=self._source_of(layer),
            displacement=np.asarray(displacement, dtype=np.float32),
            spacing_mm=tuple(float(s) for s in spacing),
            info=dict(layer.metadata.get("any2reg_result") or {}),
        )

    def _require_source(self, pair: _Pair) -> Image:
        if pair.source is None:
            name = pair.registered.metadata.get("source_layer", "?")
            raise ValueError(
                f"The source layer {name!r} of {pair.registered.name!r} is not in the viewer; "
                "open it again under that name to compare raw and registered frames."
            )
        return pair.source

    def _pair_and_source(self) -> tuple[_Pair, Image] | None:
        """The chosen registration and its source layer, or ``None`` once the reason is shown."""
        try:
            pair = self.pair()
            return pair, self._require_source(pair)
        except Exception as exc:
            self._report_error(str(exc), exc)
            return None

    def thresholds(self) -> qc.QCThresholds:
        """The flagging rules set in the QC tab."""
        return qc.QCThresholds(
            max_folding_percent=float(self.folding_threshold_spin.value()),
            min_mean_score=float(self.score_threshold_spin.value()),
            min_template_correlation=float(self.correlation_threshold_spin.value()),
        )

    def compute_review(self, force: bool = False, then: Callable[[qc.Review], None] | None = None) -> bool:
        """Compute the review (maps, table, summary) in a worker; ``then`` runs with it after.

        Returns ``True`` if a worker was started (or the review was already there and ``then``
        ran at once); ``False`` when it could not start (the reason is shown).
        """
        found = self._pair_and_source()
        if found is None:
            return False
        pair, source = found
        if then is not None:
            self._pending.append(then)
        if not force and self.review is not None and self._review_key == pair.key:
            self._flush_pending()
            return True
        if self.worker is not None:
            return True  # the running computation picks up the pending callbacks
        worker = FunctionWorker(
            _compute,
            source.data,
            pair.registered.data,
            pair.displacement,
            template=pair.registered.metadata.get("template"),
            scores=pair.registered.metadata.get("correspondence"),
            spacing_mm=pair.spacing_mm,
            info=pair.info,
            thresholds=self.thresholds(),
            relay=self._relay,
            key=pair.key,
            timings_ms=pair.registered.metadata.get("timings_ms"),
        )
        # bound methods (not lambdas): Qt drops them if the widget is closed mid-run
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._update_enabled()
        self.progress_bar.setValue(0)
        self.set_status(f"Reviewing {pair.registered.name!r}…")
        self.activity = ActivityProgress(f"Review of {pair.registered.name}")
        worker.start()
        return True

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress_bar.setValue(int(round(100 * min(max(fraction, 0.0), 1.0))))
        if message:
            self.set_status(f"Review: {message}…")
        if self.activity is not None:  # last: napari's bar may process events
            self.activity.set(fraction, message)

    def _on_returned(self, outcome: _Outcome) -> None:
        key = outcome.key
        if outcome.error is not None:
            self._pending.clear()
            self._report_error(f"Review failed: {outcome.error}", outcome.error)
            return
        try:
            current = self.pair().key
        except Exception:
            current = None
        if current != key:  # the user picked another layer meanwhile: recompute for that one
            self.review = None
            self._review_key = None
            self._recompute = True
            self.set_status("Selection changed during the review; computing again…")
            return
        self.review = outcome.review
        self._review_key = key
        self._difference_limit = outcome.difference_limit
        self._show_table(outcome.review.table.with_thresholds(self.thresholds()))
        self.summary_label.setText(outcome.review.summary.line())
        self.progress_bar.setValue(100)
        flagged = self.table_data.flagged_frames if self.table_data else []
        self.set_status(f"{len(flagged)} frame(s) flagged: {flagged}" if flagged else "No frame flagged.")
        self._flush_pending()

    def _on_finished(self) -> None:
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        self.worker = None
        self._update_enabled()
        if self._recompute:
            self._recompute = False
            if self.selected_layer() is not None and self._source_of(self.selected_layer()) is not None:
                self.compute_review()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for callback in pending:
            try:
                callback(self.review)
            except Exception as exc:
                self._report_error(f"Could not add the overlay: {exc}", exc)

    def _invalidate(self, message: str) -> None:
        self.review = None
        self._review_key = None
        self.table_data = None
        self.table.setRowCount(0)
        if message:
            self.set_status(message)

    # ------------------------------------------------------------------ QC table
    def _show_table(self, table: qc.QCTable) -> None:
        self.table_data = table
        rows = table.formatted()
        self.table.setRowCount(len(rows))
        for r, (values, row) in enumerate(zip(rows, table.rows)):
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                                      if c < len(values) - 1 else int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter))
                if row.flagged:
                    item.setBackground(QBrush(FLAG_COLOUR))
                    item.setForeground(QBrush(QColor("white")))
                    item.setToolTip("; ".join(row.reasons))
                self.table.setItem(r, c, item)

    def _on_thresholds_changed(self, *args: Any) -> None:
        if self.table_data is not None:
            self._show_table(self.table_data.with_thresholds(self.thresholds()))

    def _on_row_clicked(self, row: int) -> None:
        if self.table_data is not None and 0 <= row < len(self.table_data):
            self.go_to_frame(self.table_data.rows[row].frame)

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's frame slider to ``frame`` of the registered layer."""
        layer = self.selected_layer()
        if layer is None:
            return
        axis = self.viewer.dims.ndim - layer.ndim
        world = float(layer.data_to_world((float(frame), 0.0, 0.0))[0])
        self.viewer.dims.set_point(axis, world)

    # ------------------------------------------------------------------ background tasks
    def busy(self) -> bool:
        """Whether a review or an overlay is being computed in a worker."""
        return self.worker is not None or self._running_tasks > 0

    def _start_task(self, message: str, fn: Callable[[], Any], done: Callable[[Any], Any]) -> bool:
        """Run ``fn()`` in a worker (progress bar busy), then ``done(result)`` in the GUI thread."""
        self._task_counter += 1
        token = self._task_counter
        self._task_done[token] = (message, done)
        worker = FunctionWorker(_guarded, token, fn)
        self._tasks[token] = worker
        # bound methods (not lambdas): Qt drops them if the widget is closed mid-run
        worker.returned.connect(self._on_task_returned)
        worker.finished.connect(self._on_task_finished)
        self.progress_bar.setRange(0, 0)  # busy indicator: these steps report no fraction
        self.set_status(f"{message}…")
        self._running_tasks += 1
        worker.start()
        return True

    def _on_task_returned(self, outcome: tuple[int, Any, BaseException | None]) -> None:
        token, result, error = outcome
        message, done = self._task_done.pop(token, ("", None))
        self._tasks.pop(token, None)
        self._finished_tasks += 1
        if done is None:
            return
        if error is not None:
            self._report_error(f"{message} failed: {error}", error)
            return
        try:
            done(result)
        except Exception as exc:
            self._report_error(f"{message} failed: {exc}", exc)

    def _on_task_finished(self) -> None:
        self._running_tasks -= 1
        if self._running_tasks <= 0:
            self._running_tasks = 0
            self.progress_bar.setRange(0, 100)
            self.progress_bar.setValue(100)

    # ------------------------------------------------------------------ overlays
    def _overlay(self, kind: str, build: Callable[[_Pair], Any], message: str) -> bool:
        """Build an overlay layer with ``build`` in a worker and add it (or replace our previous one).

        ``build`` gets the pair and returns the layer (made from copies, off the GUI thread);
        it may set ``layer.metadata["status"]`` for the status line.
        """
        try:
            pair = self.pair()
        except Exception as exc:
            self._report_error(f"Could not show the {OVERLAYS[kind]}: {exc}", exc)
            return False

        def done(layer: Any) -> None:
            status = layer.metadata.get("status", "")
            self._put_layer(layer, self.pair(), kind)
            if status:
                self.set_status(status)
            else:
                self.set_status(f"Added {layer.name!r}.")

        return self._start_task(message, lambda: build(pair), done)

    def _base_of(self, pair: _Pair, kind: str) -> Image:
        """The layer an overlay of ``kind`` lies on (see :data:`OVERLAY_BASE`)."""
        if OVERLAY_BASE.get(kind) == "source" and pair.source is not None:
            return pair.source
        return pair.registered

    def _put_layer(self, new: Any, pair: _Pair, kind: str) -> Any:
        base = self._base_of(pair, kind)
        new.name = f"{pair.registered.name} {OVERLAYS[kind]}"
        new.scale = base.scale
        new.translate = base.translate
        new.metadata = {_OVERLAY_KEY: kind, "review_of": pair.registered.name}
        old = self._own_layer(new.name, kind)
        if old is not None:
            index = self.viewer.layers.index(old)
            self.viewer.layers.remove(old)
            self.viewer.layers.insert(index, new)
        else:
            self.viewer.layers.append(new)
        if kind in IMAGE_OVERLAYS:
            self._hide_covered(new, pair)
        return new

    def _overlays_of(self, pair: _Pair) -> list[Any]:
        return [la for la in self.viewer.layers
                if la.metadata.get(_OVERLAY_KEY) and la.metadata.get("review_of") == pair.registered.name]

    def _hide_covered(self, new: Any, pair: _Pair) -> None:
        """Show ``new`` with its colour bar; hide the other image overlays it would pile onto."""
        new.visible = True
        for layer in self._overlays_of(pair):
            if layer is new or layer.metadata.get(_OVERLAY_KEY) not in IMAGE_OVERLAYS:
                continue
            if np.allclose(np.asarray(layer.translate), np.asarray(new.translate)):
                layer.visible = False
                if hasattr(layer, "colorbar"):
                    layer.colorbar.visible = False
        if hasattr(new, "colorbar") and new.metadata.get(_OVERLAY_KEY) not in ("folding", "checkerboard"):
            new.colorbar.visible = True

    def _own_layer(self, name: str, kind: str) -> Any:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer.metadata.get(_OVERLAY_KEY) == kind:
                return layer
        return None

    def overlay_layer(self, kind: str) -> Any:
        """The overlay of ``kind`` this widget made for the selected layer, or ``None``."""
        layer = self.selected_layer()
        return None if layer is None else self._own_layer(f"{layer.name} {OVERLAYS[kind]}", kind)

    def show_grid(self) -> bool:
        """Add / update the deformation-grid Shapes layer (paths, frame axis first), built in a worker.

        Returns ``True`` when the work started; the layer arrives when it is done (:meth:`busy`).
        """
        spacing = float(self.grid_spacing_spin.value())
        unit = str(self.grid_unit_combo.currentData())

        def build(pair: _Pair) -> Shapes:
            grid = qc.deformation_grid(pair.displacement, spacing, unit=unit, spacing_mm=pair.spacing_mm,
                                       step=qc.grid_vertex_step(pair.displacement.shape[-2:]))
            top = max(float(grid.magnitude_mm.max()), 1e-3)
            layer = Shapes(
                grid.paths,
                ndim=3,
                shape_type="path",
                features={"magnitude_mm": grid.magnitude_mm, "frame": grid.frame,
                          "orientation": grid.orientation},
                edge_color="magnitude_mm",
                edge_colormap="plasma",
                edge_contrast_limits=(0.0, top),
                edge_width=qc.grid_line_width(pair.displacement.shape[-2:]),
                face_color="transparent",
                opacity=0.9,
                **axes_kwargs(3),
            )
            layer.metadata = {"status": f"Grid: {grid.lines_per_frame} lines per frame; colour = |u| 0–{top:.1f} mm "
                                        "(plasma). Lines show where the common grid lands in each raw frame."}
            return layer

        return self._overlay("grid", build, "Building the deformation grid")

    def show_quiver(self) -> bool:
        """Add / update the displacement arrows (Vectors layer, one set per frame), built in a worker.

        Arrows are drawn longer than the true displacement when that is too short to see (the
        factor is in the status line and the layer's ``length``); the data keep the true shift.
        """
        step = float(self.quiver_step_spin.value())

        def build(pair: _Pair) -> Vectors:
            quiver = qc.quiver_vectors(pair.displacement, step, spacing_mm=pair.spacing_mm)
            lengths_px = np.hypot(quiver.vectors[:, 1, 1], quiver.vectors[:, 1, 2])
            factor = qc.arrow_display_scale(lengths_px, step)
            top = max(float(quiver.magnitude_mm.max()), 1e-3)
            layer = Vectors(
                quiver.vectors,
                ndim=3,
                features={"magnitude_mm": quiver.magnitude_mm},
                edge_color="magnitude_mm",
                edge_colormap="plasma",
                edge_contrast_limits=(0.0, top),
                edge_width=qc.grid_line_width(pair.displacement.shape[-2:]),
                length=factor,
                vector_style="arrow",
                **axes_kwargs(3),
            )
            layer.metadata = {"status": f"Arrows drawn {factor:.1f}× their length; colour = |u| 0–{top:.1f} mm (plasma)."}
            return layer

        return self._overlay("quiver", build, "Computing the displacement arrows")

    def _image_overlay(self, kind: str, data_of: Callable[[qc.Review], np.ndarray], **kwargs: Any) -> bool:
        """Add an image overlay made from the review (computed in the worker when needed)."""
        try:
            self.pair()
        except Exception as exc:
            self._report_error(str(exc), exc)
            return False

        def add(review: qc.Review) -> None:
            pair = self.pair()
            self._put_layer(Image(np.asarray(data_of(review), dtype=np.float32), **kwargs, **axes_kwargs(3)),
                            pair, kind)

        return self.compute_review(then=add)

    def show_jacobian(self) -> bool:
        """Add / update det J per frame (diverging, centred at 1, limits from the data), in a worker."""

        def build(pair: _Pair) -> Image:
            det = np.asarray(jacobian_determinant(pair.displacement), dtype=np.float32)
            limits = qc.jacobian_display_limits(det)
            layer = Image(det, colormap="coolwarm", contrast_limits=limits, opacity=0.7, **axes_kwargs(3))
            layer.metadata = {"status": f"det J: blue < 1 (compression), red > 1 (expansion); "
                                        f"limits {limits[0]:.3f}–{limits[1]:.3f}."}
            return layer

        return self._overlay("jacobian", build, "Computing the Jacobian determinant")

    def show_folding(self) -> bool:
        """Add / update the folded pixels (det J ≤ 0) in magenta (from the field alone), in a worker."""

        def build(pair: _Pair) -> Image:
            folded = qc.folding_mask(pair.displacement)
            n = int(folded.reshape(len(folded), -1).any(axis=1).sum())
            layer = Image(folded.astype(np.float32), colormap=FOLDING_COLORMAP, contrast_limits=(0.0, 1.0),
                          **axes_kwargs(3))
            layer.metadata = {"status": f"Folding: {100 * folded.mean():.2f} % of the pixels, in {n} frame(s)."}
            return layer

        return self._overlay("folding", build, "Finding folded pixels")

    def show_scores(self) -> bool:
        """Add / update the per-frame correspondence scores in [0, 1]."""
        return self._image_overlay("scores", lambda r: r.scores, colormap="viridis",
                                   contrast_limits=(0.0, 1.0), opacity=0.6)

    def show_differences(self) -> bool:
        """Add / update the difference to the template, before and after (same limits)."""
        try:
            self.pair()
        except Exception as exc:
            self._report_error(str(exc), exc)
            return False

        def add(review: qc.Review) -> None:
            pair = self.pair()
            limit = self._difference_limit
            for kind, data in (("difference_before", review.difference_before),
                               ("difference_after", review.difference_after)):
                self._put_layer(Image(data, colormap="coolwarm", contrast_limits=(-limit, limit), **axes_kwargs(3)),
                                pair, kind)
            self.set_status(f"Difference to the template at each frame's contrast, ±{limit:.3g} "
                            "(blue below, red above); before on the raw frames, after on the registered.")

        return self.compute_review(then=add)

    def show_checkerboard(self) -> Any:
        """Add / update the raw | registered checkerboard of every frame."""
        try:
            pair = self.pair()
            source = self._require_source(pair)
            board = qc.checkerboard(source.data, pair.registered.data, int(self.tiles_spin.value()))
            layer = Image(board, colormap="gray", contrast_limits=tuple(source.contrast_limits), **axes_kwargs(3))
        except Exception as exc:
            self._report_error(f"Could not show the {OVERLAYS['checkerboard']}: {exc}", exc)
            return None
        self.set_status("Checkerboard: raw and registered frames in alternating tiles.")
        return self._put_layer(layer, pair, "checkerboard")

    def toggle_raw_registered(self) -> None:
        """Show the source or the registered layer (one at a time).

        The image overlays of this registration would cover either, so they are hidden (the
        deformation grid and the arrows stay); the status line says how many.
        """
        found = self._pair_and_source()
        if found is None:
            return
        pair, source = found
        show_raw = pair.registered.visible
        source.visible = show_raw
        pair.registered.visible = not show_raw
        hidden = 0
        for layer in self._overlays_of(pair):
            if layer.metadata.get(_OVERLAY_KEY) in IMAGE_OVERLAYS and layer.visible:
                layer.visible = False
                hidden += 1
        shown = source if show_raw else pair.registered
        text = f"Showing {'raw' if show_raw else 'registered'} frames ({shown.name!r})."
        if hidden:
            text += f" {hidden} image overlay(s) hidden."
        self.set_status(text)

    def side_by_side(self, beside: bool | None = None) -> bool:
        """Put the registered layer beside its source (``True``) or on top of it; toggles when ``None``.

        Overlays on the common grid move with the registered layer. Returns the new state.
        """
        found = self._pair_and_source()
        if found is None:
            return False
        pair, source = found
        on_top = np.allclose(np.asarray(pair.registered.translate), np.asarray(source.translate))
        beside = on_top if beside is None else bool(beside)
        target = (beside_translate(source.translate, source.scale, source.data.shape) if beside
                  else np.array(source.translate, dtype=float))
        pair.registered.translate = target
        for layer in self._overlays_of(pair):
            if OVERLAY_BASE.get(layer.metadata.get(_OVERLAY_KEY)) != "source":
                layer.translate = target
        pair.registered.visible = source.visible = True
        self.viewer.reset_view()
        self.set_status("Registered frames beside the raw ones." if beside else "Registered frames on top of the raw ones.")
        return beside

    # ------------------------------------------------------------------ temporal profile
    def show_profile(self, y: float, x: float) -> dict[str, Any] | None:
        """Plot pixel ``(y, x)`` (registered layer's data coordinates) across frames."""
        try:
            pair = self.pair()
            source = self._require_source(pair)
            raw, registered = qc.temporal_profile(source.data, pair.registered.data, y, x,
                                                  int(self.profile_radius_spin.value()))
        except Exception as exc:
            self._report_error(f"No profile: {exc}", exc)
            return None
        n = len(raw)
        timings = pair.registered.metadata.get("timings_ms")
        if timings is not None and len(timings) == n and np.all(np.isfinite(np.asarray(timings, float))):
            t, label = np.asarray(timings, float), "time (ms)"
        else:
            t, label = np.arange(n, dtype=float), "frame"
        order = np.argsort(t, kind="stable")
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        ax.plot(t[order], raw[order], "o--", color="0.55", label="raw")
        ax.plot(t[order], registered[order], "o-", color="tab:orange", label="registered")
        ax.set_xlabel(label)
        ax.set_ylabel("intensity")
        ax.set_title(f"pixel (y={int(round(y))}, x={int(round(x))})", fontsize=9)
        ax.legend(fontsize=8)
        self.canvas.draw_idle()
        self.tabs.setCurrentIndex(2)
        self.last_profile = {"y": int(round(y)), "x": int(round(x)), "raw": raw, "registered": registered, "t": t}
        return self.last_profile

    def _on_double_click(self, event: Any) -> bool:
        """Plot the profile of the double-clicked pixel (on the registered or the raw layer).

        Returns ``True`` when the click was on one of them (and so not a zoom).
        """
        layer = self.selected_layer()
        position = getattr(event, "position", None)
        if layer is None or position is None:
            return False
        for candidate in (layer, self._source_of(layer)):
            if candidate is None or not candidate.visible:
                continue
            data = np.asarray(candidate.world_to_data(position), dtype=float)
            y, x = data[-2], data[-1]
            h, w = candidate.data.shape[-2:]
            if 0 <= round(y) < h and 0 <= round(x) < w:
                self.show_profile(y, x)
                return True
        return False

    # ------------------------------------------------------------------ status
    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _report_error(self, message: str, exc: BaseException | None = None) -> None:
        self.last_error = exc
        self.set_status(message)
        show_error(message)


# ---------------------------------------------------------------------- helpers
def _compute(raw: np.ndarray, registered: np.ndarray, displacement: np.ndarray, *, template: Any, scores: Any,
             spacing_mm: tuple[float, float], info: dict[str, Any], thresholds: qc.QCThresholds,
             relay: ProgressRelay, key: tuple[int, ...], timings_ms: Any = None) -> _Outcome:
    """Worker body: every error is returned, to be shown in the GUI thread."""
    try:
        review = qc.review_registration(
            np.array(raw, dtype=np.float32),  # a copy: the user may edit the layer meanwhile
            np.array(registered, dtype=np.float32),
            displacement,
            template=template,
            scores=scores,
            spacing_mm=spacing_mm,
            info=info,
            thresholds=thresholds,
            progress=lambda fraction, message: relay.progress.emit(float(fraction), str(message)),
            timings_ms=None if timings_ms is None else [float(t) for t in timings_ms],
        )
        limit = qc.symmetric_limit(review.difference_before, 99.5, 1e-6)
    except Exception as exc:
        return _Outcome(key, error=exc)
    return _Outcome(key, review=review, difference_limit=limit)


def _guarded(token: int, fn: Callable[[], Any]) -> tuple[int, Any, BaseException | None]:
    """Worker body of an overlay task: the result or the error, shown in the GUI thread."""
    try:
        return token, fn(), None
    except Exception as exc:
        return token, None, exc


def _double_click_callback(widget: ReviewWidget, fallback: Callable[[Any, Any], None] | None
                           ) -> Callable[[Any, Any], None]:
    ref = weakref.ref(widget)

    def on_double_click(viewer: Any, event: Any) -> None:
        target = ref()
        handled = False
        if target is not None:
            try:
                handled = target._on_double_click(event)
            except RuntimeError:  # the Qt side of the widget was deleted
                handled = False
        if not handled and fallback is not None:
            fallback(viewer, event)

    return on_double_click


def _quick_summary(layer: Image) -> str:
    """Engine, device, time and folding from the stored summary (before the review runs)."""
    info = layer.metadata.get("any2reg_result") or {}
    if not info:
        return ""
    seconds = info.get("seconds")
    text = f"{info.get('engine', '?')} on {info.get('device', '?')}"
    if seconds is not None:
        text += f", {float(seconds):.1f} s"
    if info.get("folding_percent") is not None:
        text += f"; folding {float(info['folding_percent']):.2f} %"
    return text + "; alignment: computing…"


def _spin(lo: float, hi: float, decimals: int, value: float | None, suffix: str = "") -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setDecimals(decimals)
    spin.setSingleStep(10 ** -decimals * 5 if decimals else 1)
    spin.setValue(float(value) if value is not None else lo)
    if suffix:
        spin.setSuffix(suffix)
    return spin
