"""The "T1 mapping" dock widget: fit T1 maps before and after registration and compare them.

The widget is thin: it collects the layers (a raw sequence and/or its ``"<name> registered"``
result), the model (pre-selected from the layer's ``any2reg_kind``), the inversion /
saturation times (from the layer metadata, editable) and an optional ROI (a Labels or Shapes
layer); it calls :func:`napari_any2reg.core.mapping.fit_t1` in a worker thread and turns the
results into layers — ``"<name> T1"``, ``"<name> R²"`` and ``"<name> T1 SD"`` with the source's
pixel spacing — plus an ROI statistics table and the R² survival curves (before vs after) drawn
with matplotlib. Source layers are never modified.

When both a raw and a registered layer are fitted, the registered maps are shifted right by one
image width (plus a small gap) so the two maps sit side by side, and their colormaps and
contrast limits are linked.

Tests drive it through :meth:`MappingWidget.run`, :meth:`MappingWidget.cancel`,
:attr:`MappingWidget.worker`, :attr:`MappingWidget.last_result` and the public Qt controls.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import FunctionWorker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.device import DEVICE_CHOICES
from ..core.mapping import T1_MODELS, FitCancelled, T1FitResult, fit_t1, model_for_kind
from ..core.mapping_roi import DEFAULT_R2_THRESHOLD, r2_survival, roi_masks, roi_statistics, survival_thresholds
from ._dock import compact_combos, install_frame_label, scroll_body
from ._layers import REGISTERED_SUFFIX, axes_kwargs
from ._pickers import cuda_available, index_of, is_sequence_layer
from ._relay import ActivityProgress, ProgressRelay

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["MappingWidget", "MappingOutcome", "ROLES", "MAP_SUFFIXES", "t1_display_settings", "parse_timings"]

#: The two inputs the widget compares: (role, label in the UI).
ROLES = (("before", "Raw (before)"), ("after", "Registered (after)"))

#: Output layer names are ``"<source name><suffix>"``.
MAP_SUFFIXES = {"t1": " T1", "r2": " R²", "t1_sd": " T1 SD"}

#: T1 display range (ms) by contrast state and field strength (tissue tables in core.phantom).
T1_LIMITS_MS = {("native", 1.5): (0.0, 2000.0), ("native", 3.0): (0.0, 2500.0), ("post", 1.5): (0.0, 1000.0), ("post", 3.0): (0.0, 1000.0)}

#: Below this median T1 (ms) of well-fitted pixels a map is shown with the post-contrast range.
POST_CONTRAST_MEDIAN_MS = 700.0

_NONE = "(none)"
_SIDE_BY_SIDE_GAP = 0.05  # fraction of the image width between raw and registered maps


@dataclasses.dataclass
class MappingOutcome:
    """Results of one Fit: per role (``"before"`` / ``"after"``) the fit, its statistics and curves.

    Attributes
    ----------
    results : dict of str to T1FitResult
    sources : dict of str to str
        Source layer name per role.
    statistics : dict of str to list of dict
        :func:`~napari_any2reg.core.mapping_roi.roi_statistics` rows per role (ROI labels, or
        one row "fitted pixels" without an ROI).
    survival : dict of str to dict of int to (thresholds, fraction)
        R² survival curve per role and ROI label (empty without an ROI).
    model : str
    r2_threshold : float
    """

    results: dict[str, T1FitResult]
    sources: dict[str, str]
    statistics: dict[str, list[dict[str, Any]]]
    survival: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]
    model: str
    r2_threshold: float
    error: BaseException | None = None
    display: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Job:
    role: str
    name: str
    frames: np.ndarray
    scale: np.ndarray  # (dy, dx)
    translate: np.ndarray  # (ty, tx)
    metadata: dict[str, Any]


# ====================================================================== pure helpers
def parse_timings(text: str) -> list[float]:
    """Parse ``"100, 180, 260"`` (commas, semicolons or spaces; ``inf`` allowed) into floats."""
    tokens = [t for t in text.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            raise ValueError(f"cannot read {token!r} as a time in ms; write numbers separated by commas (inf allowed).") from None
    return values


def format_timings(timings: Any) -> str:
    """Timings as the editable text: ``"100, 180, inf"``."""
    if timings is None:
        return ""
    return ", ".join("inf" if math.isinf(float(t)) else f"{float(t):g}" for t in timings)


def t1_display_settings(t1_ms: np.ndarray, r_squared: np.ndarray, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Colormap and contrast limits for a T1 map: native or post-contrast, 1.5 or 3 T.

    The contrast state comes from the layer metadata (``contrast``: ``native`` / ``post``) when
    present, else from the median T1 of well-fitted pixels (below
    :data:`POST_CONTRAST_MEDIAN_MS` -> post-contrast).
    """
    metadata = metadata or {}
    field = 3.0 if float(metadata.get("field_strength", 1.5) or 1.5) > 2.0 else 1.5
    contrast = str(metadata.get("contrast", "")).lower()
    if contrast not in ("native", "post"):
        with np.errstate(invalid="ignore"):
            good = t1_ms[np.isfinite(t1_ms) & (r_squared > 0.9)]
        contrast = "post" if good.size and float(np.median(good)) < POST_CONTRAST_MEDIAN_MS else "native"
    return {"colormap": "turbo", "contrast_limits": T1_LIMITS_MS[(contrast, field)], "contrast": contrast}


def sd_display_limits(t1_sd_ms: np.ndarray, r_squared: np.ndarray, r2_threshold: float = 0.9,
                      t1_limits: tuple[float, float] = (0.0, 2000.0)) -> tuple[float, float]:
    """Contrast limits of a T1 SD map: 0 to the 95th percentile over well-fitted pixels.

    Badly fitted background pixels have SDs of 10^4 ms and more; a percentile over all pixels
    makes the whole heart one colour. Capped at a quarter of the T1 display range.
    """
    sd = np.asarray(t1_sd_ms, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        good = sd[np.isfinite(sd) & (np.asarray(r_squared) > r2_threshold)]
    cap = 0.25 * float(t1_limits[1] - t1_limits[0])
    top = float(np.percentile(good, 95)) if good.size else cap
    return 0.0, float(min(max(top, 1.0), cap))


def signal_mask(frames: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Pixels with signal: max |intensity| over frames above ``fraction`` of its 99th percentile.

    Air and lungs have no T1 worth showing; outside this mask the displayed maps are NaN.
    """
    peak = np.nanmax(np.abs(np.asarray(frames, dtype=np.float32)), axis=0)
    finite = peak[np.isfinite(peak)]
    if finite.size == 0:
        return np.zeros(peak.shape, dtype=bool)
    return peak > fraction * float(np.percentile(finite, 99))


# ====================================================================== widget
class MappingWidget(QWidget):
    """Dock widget fitting T1 maps of a raw and/or registered sequence and comparing them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are listed and to which the maps are added.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self.last_result: MappingOutcome | None = None
        self.last_error: BaseException | None = None
        self._cancel_event: threading.Event | None = None
        self.activity: ActivityProgress | None = None
        self._staging: list[Any] = []  # map layers still to add, one per event-loop turn
        self._jobs: list[_Job] = []
        self._watched_layers: list[Any] = []
        self._sequence_layers: list[Image] = []
        self._roi_layers: list[Any] = []
        # once the user picks a layer (or "(none)") in a combo, layer events stop auto-picking
        self._raw_touched = False
        self._registered_touched = False
        self._filled_for: tuple[int, int] | None = None  # layers the model/timings were read from

        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)

        self._build_ui()
        self._connect_viewer()
        self.refresh_layers()
        self._set_running(False)
        self.set_status("Ready.")
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.raw_combo = QComboBox()
        self.raw_combo.setToolTip("Sequence before registration (or (none)).")
        self.raw_combo.currentIndexChanged.connect(self._on_raw_changed)
        form.addRow("Raw (before)", self.raw_combo)
        self.registered_combo = QComboBox()
        self.registered_combo.setToolTip("Registered sequence ('<name> registered'), or (none).")
        self.registered_combo.currentIndexChanged.connect(self._on_registered_changed)
        form.addRow("Registered (after)", self.registered_combo)

        self.model_combo = QComboBox()
        for name, spec in T1_MODELS.items():
            self.model_combo.addItem(f"{name}: {spec.description}", name)
        self.model_combo.setToolTip("Signal model; pre-selected from the layer's sequence kind.")
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        form.addRow("Model", self.model_combo)

        self.timings_edit = QLineEdit()
        self.timings_edit.setPlaceholderText("e.g. 100, 180, 1100, 1180, ... (inf: no preparation)")
        self.timings_edit.setToolTip("One time per frame in ms, in frame order; read from the layer metadata.")
        self.timings_label = QLabel("Inversion times (ms)")
        form.addRow(self.timings_label, self.timings_edit)

        self.roi_combo = QComboBox()
        self.roi_combo.setToolTip(
            "Labels (1 LV blood, 2 LV myocardium, 3 RV blood, or any integers) or Shapes layer for "
            "ROI statistics and R² survival curves. A 3-D Labels layer uses the frame on screen."
        )
        form.addRow("ROI", self.roi_combo)
        self.roi_combo.activated.connect(lambda index: setattr(self, "_roi_none_chosen", index == 0))

        self.r2_spin = QDoubleSpinBox()
        self.r2_spin.setRange(0.0, 0.999)
        self.r2_spin.setDecimals(3)
        self.r2_spin.setSingleStep(0.01)
        self.r2_spin.setValue(DEFAULT_R2_THRESHOLD)
        self.r2_spin.setToolTip("A pixel's fit counts as good when R² is above this value.")
        form.addRow("Good fit: R² >", self.r2_spin)

        self.device_combo = QComboBox()
        for name in DEVICE_CHOICES:
            self.device_combo.addItem(name, name)
        if not cuda_available():
            item = self.device_combo.model().item(self.device_combo.findData("cuda"))
            if item is not None:
                item.setEnabled(False)
                item.setToolTip("No CUDA GPU is available on this machine.")
        form.addRow("Device", self.device_combo)

        self.side_by_side_check = QCheckBox("Registered maps beside the raw ones")
        self.side_by_side_check.setChecked(True)
        self.side_by_side_check.setToolTip(
            "Shift the registered maps right by one image width so raw and registered are side by side."
        )
        form.addRow("Layout", self.side_by_side_check)

        self.run_button = QPushButton("Fit")
        self.run_button.setToolTip("Fit T1 maps of the chosen layers; results are added as new layers.")
        self.run_button.clicked.connect(lambda *_: self.run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        headers = ["map", "ROI", "pixels", "T1 mean ± SD (ms)", "fit SD (ms)", "R² > thr", "failed"]
        self.stats_table = QTableWidget(0, len(headers))
        self.stats_table.setHorizontalHeaderLabels(headers)
        self.stats_table.verticalHeader().setVisible(False)
        self.stats_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.stats_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.stats_table.setMinimumHeight(140)

        self.figure = Figure(figsize=(4.0, 2.8), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.stats_table, "ROI statistics")
        self.tabs.addTab(self.canvas, "R² survival")

        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.tabs, 1)

        self._inputs = (
            self.raw_combo,
            self.registered_combo,
            self.model_combo,
            self.timings_edit,
            self.roi_combo,
            self.r2_spin,
            self.device_combo,
            self.side_by_side_check,
        )
        self._draw_survival(None)

    # ------------------------------------------------------------------ viewer events
    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        for layer in layers:
            self._watch(layer)

    def _watch(self, layer: Any) -> None:
        if not any(layer is w for w in self._watched_layers):
            layer.events.name.connect(self._on_layers_changed)
            self._watched_layers.append(layer)

    def _on_layer_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            self._watch(layer)
        self.refresh_layers()
        if layer is None or self.worker is not None or not is_sequence_layer(layer):
            return
        raw = self.selected_layer("before")
        if "any2reg_result" in layer.metadata:
            # a new registration of the raw layer becomes the "after" input
            if raw is not None and _is_registration_of(layer, raw):
                self._select("after", layer)
        elif raw is None:
            self._select("before", layer)

    def _on_layers_changed(self, event: Any = None) -> None:
        alive = list(self.viewer.layers)
        for layer in list(self._watched_layers):
            if not any(layer is a for a in alive):
                layer.events.name.disconnect(self._on_layers_changed)
                self._watched_layers.remove(layer)
        self.refresh_layers()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.cancel()
        self._staging.clear()
        super().closeEvent(event)

    # ------------------------------------------------------------------ layer pickers
    def refresh_layers(self) -> None:
        """Rebuild the layer lists, keeping the current choices (followed through renames)."""
        before, after, roi = self.selected_layer("before"), self.selected_layer("after"), self.roi_layer()
        candidates = [layer for layer in self.viewer.layers if isinstance(layer, (Labels, Shapes))]
        if roi is None and len(candidates) == 1 and not getattr(self, "_roi_none_chosen", False):
            roi = candidates[0]  # the only ROI layer: "(none)" would silently drop the statistics
        sequences = [layer for layer in self.viewer.layers if is_sequence_layer(layer)]
        self._sequence_layers = sequences
        self._roi_layers = [layer for layer in self.viewer.layers if isinstance(layer, (Labels, Shapes))]
        sources = [layer for layer in sequences if "any2reg_result" not in layer.metadata]
        if before is None and sources and not self._raw_touched:
            before = sources[0]
        if after is None and before is not None and not self._registered_touched:
            after = next((layer for layer in sequences if _is_registration_of(layer, before)), None)
        for combo, layers, chosen in (
            (self.raw_combo, sequences, before),
            (self.registered_combo, sequences, after),
            (self.roi_combo, self._roi_layers, roi),
        ):
            combo.blockSignals(True)
            try:
                combo.clear()
                combo.addItem(_NONE, None)
                for layer in layers:
                    combo.addItem(layer.name, layer.name)
                index = index_of(layers, chosen)
                combo.setCurrentIndex(index + 1 if index >= 0 else 0)
            finally:
                combo.blockSignals(False)
        self._fill_from_metadata()
        self._update_run_enabled()

    def _combo_for(self, role: str) -> QComboBox:
        return self.raw_combo if role == "before" else self.registered_combo

    def selected_layer(self, role: str) -> Image | None:
        """The layer chosen for ``role`` (``"before"`` or ``"after"``), or ``None``."""
        index = self._combo_for(role).currentIndex() - 1
        layers = self._sequence_layers
        return layers[index] if 0 <= index < len(layers) else None

    def roi_layer(self) -> Any:
        """The Labels / Shapes layer chosen as ROI, or ``None``."""
        index = self.roi_combo.currentIndex() - 1
        layers = self._roi_layers
        return layers[index] if 0 <= index < len(layers) else None

    def _select(self, role: str, layer: Any) -> None:
        """Programmatic choice (not a user's): the other combo keeps following automatically."""
        index = index_of(self._sequence_layers, layer)
        if index < 0:
            return
        combo = self._combo_for(role)
        combo.blockSignals(True)
        combo.setCurrentIndex(index + 1)
        combo.blockSignals(False)
        self._fill_from_metadata()
        self._update_run_enabled()

    def select_layers(self, before: Any = None, after: Any = None) -> None:
        """Choose the raw and registered inputs (layers or names; ``None`` for none), as a user would."""
        for combo, layer in ((self.raw_combo, before), (self.registered_combo, after)):
            name = getattr(layer, "name", layer)
            index = combo.findData(name) if name is not None else 0
            if index < 0:
                raise ValueError(f"{name!r} is not a 3-D image layer of this viewer.")
            combo.setCurrentIndex(index)
            # setCurrentIndex does not signal when the index is unchanged: mark the choice anyway
            if combo is self.raw_combo:
                self._raw_touched = True
            else:
                self._registered_touched = True
        self._fill_from_metadata()
        self._update_run_enabled()

    def set_roi_layer(self, layer: Any) -> None:
        """Choose ``layer`` (a Labels or Shapes layer in the viewer) as the ROI."""
        index = index_of(self._roi_layers, layer)
        self.roi_combo.setCurrentIndex(index + 1 if index >= 0 else 0)

    def _on_raw_changed(self, *args: Any) -> None:
        self._raw_touched = True
        raw = self.selected_layer("before")
        if not self._registered_touched:
            # the registered input follows the raw one until the user picks it
            match = None
            if raw is not None:
                match = next((layer for layer in self._sequence_layers if _is_registration_of(layer, raw)), None)
            self.registered_combo.blockSignals(True)
            index = index_of(self._sequence_layers, match)
            self.registered_combo.setCurrentIndex(index + 1 if index >= 0 else 0)
            self.registered_combo.blockSignals(False)
        self._fill_from_metadata()
        self._update_run_enabled()

    def _on_registered_changed(self, *args: Any) -> None:
        self._registered_touched = True
        self._fill_from_metadata()
        self._update_run_enabled()

    def _fill_from_metadata(self) -> None:
        """Pre-select the model and the timings from the chosen layers' metadata."""
        layer = self.selected_layer("before") or self.selected_layer("after")
        key = (id(self.selected_layer("before")), id(self.selected_layer("after")))
        if layer is None or key == self._filled_for:
            return  # unchanged inputs: keep what the user typed
        self._filled_for = key
        meta = layer.metadata
        model = model_for_kind(meta.get("any2reg_kind"))
        if model is not None:
            self.model_combo.setCurrentIndex(max(self.model_combo.findData(model), 0))
        self.timings_edit.setText(format_timings(meta.get("timings_ms")))
        if model is None and meta.get("any2reg_kind") not in (None, "unknown"):
            self.set_status(f"Sequence kind {meta.get('any2reg_kind')!r} has no T1 model; choose one.")

    def _on_model_changed(self, *args: Any) -> None:
        spec = T1_MODELS[self.model()]
        self.timings_label.setText("Saturation times (ms)" if spec.timing_name.startswith("saturation") else "Inversion times (ms)")

    # ------------------------------------------------------------------ options
    def model(self) -> str:
        return str(self.model_combo.currentData())

    def device(self) -> str:
        return str(self.device_combo.currentData())

    def timings(self) -> list[float]:
        """The timings typed in the editor (raises ``ValueError`` for unreadable text)."""
        return parse_timings(self.timings_edit.text())

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def is_running(self) -> bool:
        return self.worker is not None

    def _set_running(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self._update_run_enabled()

    def _update_run_enabled(self) -> None:
        chosen = self.selected_layer("before") is not None or self.selected_layer("after") is not None
        self.run_button.setEnabled(self.worker is None and not self._staging and chosen)

    # ------------------------------------------------------------------ ROI
    def roi_labels(self, shape: tuple[int, int], reference: Image) -> np.ndarray | None:
        """The ROI as an ``(H, W)`` integer label image on ``reference``'s grid (``None``: no ROI)."""
        layer = self.roi_layer()
        if layer is None:
            return None
        if isinstance(layer, Labels):
            data = np.asarray(layer.data)
            if data.ndim == 3:
                frame = int(np.clip(self.viewer.dims.current_step[0], 0, data.shape[0] - 1)) if self.viewer.dims.ndim >= 3 else 0
                data = data[frame]
            if data.shape != tuple(shape):
                raise ValueError(
                    f"ROI layer {layer.name!r} is {data.shape} but the images are {tuple(shape)}; use a "
                    "Labels layer on the image grid."
                )
            return np.array(data, dtype=np.int64)
        return _shapes_to_labels(layer, reference, shape)

    # ------------------------------------------------------------------ run / cancel
    def run(self) -> bool:
        """Start fitting the chosen layers; returns ``True`` if a fit was started.

        Problems found before starting (no layer, bad timings, a timing count that does not match
        the frames, an ROI on another grid) are reported with ``show_error`` and in the status
        label; nothing is added to the viewer.
        """
        if self.worker is not None:
            return False
        try:
            jobs = self._collect_jobs()
            timings = self.timings()
            for job in jobs:
                if len(timings) != job.frames.shape[0]:
                    raise ValueError(
                        f"{len(timings)} times given but {job.name!r} has {job.frames.shape[0]} frames; "
                        "give exactly one time (ms) per frame."
                    )
            rois = {job.role: self.roi_labels(job.frames.shape[1:], self._layer_named(job.name)) for job in jobs}
        except Exception as exc:
            self._report_error(f"Cannot fit: {exc}", exc)
            return False
        model = self.model()
        device = self.device()
        threshold = float(self.r2_spin.value())
        self._jobs = jobs
        self.last_result = None
        self.last_error = None
        cancel_event = threading.Event()
        self._cancel_event = cancel_event
        worker = FunctionWorker(
            _run_fits,
            jobs,
            timings=timings,
            model=model,
            device=device,
            rois=rois,
            r2_threshold=threshold,
            cancel=cancel_event,
            relay=self._relay,
        )
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_running(True)
        self.progress_bar.setValue(0)
        names = " and ".join(repr(job.name) for job in jobs)
        self.set_status(f"Fitting {model} T1 maps of {names} on {device}…")
        self.activity = ActivityProgress(f"T1 fit ({model})")
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask a running fit to stop at its next check (no layer is added)."""
        if self.worker is None or self._cancel_event is None:
            return
        self._cancel_event.set()
        self.cancel_button.setEnabled(False)
        self.set_status("Cancelling…")

    def _layer_named(self, name: str) -> Image:
        return self.viewer.layers[name]

    def _collect_jobs(self) -> list[_Job]:
        jobs = []
        for role, _ in ROLES:
            layer = self.selected_layer(role)
            if layer is None:
                continue
            frames = np.asarray(layer.data, dtype=np.float32)
            jobs.append(
                _Job(
                    role=role,
                    name=layer.name,
                    frames=np.array(frames, copy=True),  # the worker never touches layer data
                    scale=np.array(layer.scale[-2:], dtype=float),
                    translate=np.array(layer.translate[-2:], dtype=float),
                    metadata={k: v for k, v in layer.metadata.items() if not isinstance(v, np.ndarray)},
                )
            )
        if not jobs:
            raise ValueError("choose a raw and/or a registered 3-D image layer (frames, rows, columns).")
        if len(jobs) == 2 and jobs[0].name == jobs[1].name:
            jobs = jobs[:1]
        return jobs

    # ------------------------------------------------------------------ worker callbacks
    def _on_progress(self, fraction: float, message: str) -> None:
        if self.worker is None:
            return
        self.progress_bar.setValue(int(round(100 * min(max(fraction, 0.0), 1.0))))
        if message and self._cancel_event is not None and not self._cancel_event.is_set():
            self.set_status(f"{message} ({100 * fraction:.0f} %)")
        if self.activity is not None:  # last: napari's bar may process events (and finish the run)
            self.activity.set(fraction, message)

    def _on_returned(self, outcome: MappingOutcome) -> None:
        if outcome.error is not None:
            self.last_error = outcome.error
            if isinstance(outcome.error, FitCancelled):
                self.set_status("T1 fit cancelled; no layer was added.")
                show_info("T1 fit cancelled.")
            else:
                self._report_error(f"T1 fit failed: {outcome.error}", outcome.error)
            return
        try:
            self._show_outcome(outcome)
        except Exception as exc:
            self._report_error(f"Could not add the T1 maps: {exc}", exc)

    def _on_finished(self) -> None:
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        self.worker = None
        self._cancel_event = None
        if not self._staging:  # else the last staged layer re-enables the panel
            self._set_running(False)

    def _show_outcome(self, outcome: MappingOutcome) -> None:
        self.last_result = outcome
        side_by_side = self.side_by_side_check.isChecked() and len(outcome.results) == 2
        added: dict[str, list[Any]] = {key: [] for key in MAP_SUFFIXES}
        translates = {job.role: job.translate.copy() for job in self._jobs}
        if side_by_side and np.allclose(translates.get("before", 0), translates.get("after", 0)):
            # the sequences overlap: put the registered maps right of the raw ones
            width = next(iter(outcome.results.values())).t1_ms.shape[-1] * self._jobs[-1].scale[-1]
            translates["after"][-1] += width * (1.0 + _SIDE_BY_SIDE_GAP)
        steps = []
        for job in self._jobs:
            result = outcome.results[job.role]
            # below the sequence, so the maps never cover the frames
            translate = translates[job.role]
            translate[-2] += result.t1_ms.shape[-2] * job.scale[-2] * (1.0 + _SIDE_BY_SIDE_GAP)
            display = outcome.display.get(job.role) or _display_maps(result, job, outcome.r2_threshold)
            for key in MAP_SUFFIXES:
                def step(job=job, result=result, translate=translate, display=display, key=key) -> None:
                    layers = self._add_maps(job, result, translate, outcome.r2_threshold, display, only=key)
                    added[key].append(layers[key])
                steps.append(step)

        def finish() -> None:
            if side_by_side:
                _link(added)
            self.progress_bar.setValue(100)
            self.set_status(format_outcome(outcome))

        self._fill_table(outcome)
        self._draw_survival(outcome)
        self.set_status("Adding the maps…")
        # napari needs ~0.1-0.3 s of GUI time per new layer: one layer per event-loop turn keeps
        # the window responsive instead of freezing for all six at once
        self._staging = steps + [finish]
        QTimer.singleShot(0, self._stage_next)

    def _stage_next(self) -> None:
        if not self._staging:
            return
        step = self._staging.pop(0)
        try:
            step()
        except Exception as exc:
            self._staging.clear()
            self._report_error(f"Could not add the T1 maps: {exc}", exc)
        if self._staging:
            QTimer.singleShot(0, self._stage_next)
        elif self.worker is None:
            self._set_running(False)

    def busy(self) -> bool:
        """Whether a fit runs or its maps are still being added."""
        return self.worker is not None or bool(self._staging)

    def _add_maps(self, job: _Job, result: T1FitResult, translate: np.ndarray, r2_threshold: float,
                  display: dict[str, Any], only: str | None = None) -> dict[str, Any]:
        t1_view = display["t1_view"]
        base_meta = {"source_layer": job.name, "any2reg_fit": result.summary(), "spacing_mm": job.scale.tolist(),
                     "masked_pixels": display["masked_pixels"]}
        specs = {
            "t1": (display["t1"], {"colormap": t1_view["colormap"], "contrast_limits": t1_view["contrast_limits"], "visible": True}),
            "r2": (display["r2"], {"colormap": "viridis", "contrast_limits": (max(0.0, r2_threshold - 0.1), 1.0), "visible": False}),
            "t1_sd": (display["t1_sd"], {"colormap": "magma", "contrast_limits": display["sd_limits"], "visible": False}),
        }
        layers = {}
        for key, (data, view) in specs.items():
            if only is not None and key != only:
                continue
            name = f"{job.name}{MAP_SUFFIXES[key]}"
            metadata = dict(base_meta, any2reg_map=key)
            if key == "t1":
                metadata["t1_contrast"] = t1_view["contrast"]
            existing = self.viewer.layers[name] if name in self.viewer.layers else None
            if isinstance(existing, Image) and existing.ndim == 2:
                existing.data = data
                existing.scale = job.scale
                existing.translate = translate
                existing.metadata = metadata
                existing.contrast_limits = view["contrast_limits"]
                layers[key] = existing
            else:
                layers[key] = self.viewer.add_image(
                    data,
                    name=name,
                    scale=job.scale,
                    translate=translate,
                    colormap=view["colormap"],
                    contrast_limits=view["contrast_limits"],
                    visible=view["visible"],
                    metadata=metadata,
                    **axes_kwargs(2),
                )
                layers[key].colorbar.visible = key == "t1" and job.role == "before"
        return layers

    def _fill_table(self, outcome: MappingOutcome) -> None:
        rows = [(role, row) for role, _ in ROLES for row in outcome.statistics.get(role, [])]
        self.stats_table.setRowCount(len(rows))
        for i, (role, row) in enumerate(rows):
            mean, sd = row["t1_mean_ms"], row["t1_sd_ms"]
            t1_text = "—" if mean is None else f"{mean:.0f} ± {sd:.0f}" if sd is not None else f"{mean:.0f}"
            fit_sd = row["fit_sd_mean_ms"]
            above = row["r2_above_fraction"]
            cells = [
                f"{role}: {outcome.sources[role]}",
                row["name"],
                str(row["n_pixels"]),
                t1_text,
                "—" if fit_sd is None else f"{fit_sd:.1f}",
                "—" if above is None else f"{100 * above:.1f} %",
                str(row["n_failed"]),
            ]
            for column, text in enumerate(cells):
                self.stats_table.setItem(i, column, QTableWidgetItem(text))

    def _draw_survival(self, outcome: MappingOutcome | None) -> None:
        self.figure.clear()
        axes = self.figure.add_subplot(111)
        axes.set_xlabel("R² threshold t")
        axes.set_ylabel("fraction of ROI pixels with R² > t")
        axes.set_xlim(0.9, 1.0)
        axes.set_ylim(0.0, 1.02)
        curves = 0
        if outcome is not None:
            colours = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")
            for role, _ in ROLES:
                names = {row["label"]: row["name"] for row in outcome.statistics.get(role, [])}
                for j, (label, (thresholds, fraction)) in enumerate(sorted(outcome.survival.get(role, {}).items())):
                    axes.plot(
                        thresholds, fraction, color=colours[j % len(colours)],
                        linestyle="--" if role == "before" else "-",
                        label=f"{names.get(label, label)} ({role})",
                    )
                    curves += 1
        if curves:
            axes.legend(fontsize="small", loc="lower left")
            axes.set_title("R² survival: dashed before, solid after registration", fontsize="small")
        else:
            axes.text(0.95, 0.5, "Choose an ROI (Labels or Shapes)\nand fit to see the curves.", ha="center", va="center", fontsize="small")
        self.canvas.draw_idle()

    def _report_error(self, message: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.last_error = exc
        self.set_status(message)
        show_error(message)


def format_outcome(outcome: MappingOutcome) -> str:
    """One-paragraph summary of a fit for the status label."""
    parts = []
    for role, _ in ROLES:
        result = outcome.results.get(role)
        if result is None:
            continue
        t1 = result.t1_ms[np.isfinite(result.t1_ms)]
        median = f"median T1 {np.median(t1):.0f} ms" if t1.size else "no valid T1"
        parts.append(f"{role} ({outcome.sources[role]}): {median}, {result.n_failed} failed pixels, {result.seconds:.2f} s")
    device = next(iter(outcome.results.values())).device
    return f"Done: {outcome.model} on {device}. " + "; ".join(parts) + "."


# ====================================================================== worker body
def _run_fits(
    jobs: list[_Job],
    *,
    timings: list[float],
    model: str,
    device: str,
    rois: dict[str, np.ndarray | None],
    r2_threshold: float,
    cancel: threading.Event,
    relay: ProgressRelay,
) -> MappingOutcome:
    """Worker-thread body: fit each job, then ROI statistics and survival curves."""
    outcome = MappingOutcome(results={}, sources={}, statistics={}, survival={}, model=model, r2_threshold=r2_threshold)
    try:
        for i, job in enumerate(jobs):
            def progress(fraction: float, message: str, i: int = i, name: str = job.name) -> None:
                relay.progress.emit((i + fraction) / len(jobs), f"{name}: {message}")

            result = fit_t1(job.frames, timings, model, device=device, progress=progress, cancel=cancel)
            outcome.results[job.role] = result
            outcome.sources[job.role] = job.name
            outcome.display[job.role] = _display_maps(result, job, r2_threshold)
            labels = rois.get(job.role)
            if labels is None:
                rows = roi_statistics(result.t1_ms, result.mask, t1_sd_ms=result.t1_sd_ms, r_squared=result.r_squared,
                                      r2_threshold=r2_threshold, label_names={1: "fitted pixels"})
                outcome.statistics[job.role] = rows
                outcome.survival[job.role] = {}
                continue
            outcome.statistics[job.role] = roi_statistics(
                result.t1_ms, labels, t1_sd_ms=result.t1_sd_ms, r_squared=result.r_squared, r2_threshold=r2_threshold
            )
            thresholds = survival_thresholds()
            outcome.survival[job.role] = {
                value: r2_survival(result.r_squared, roi, thresholds) for value, (_, roi) in roi_masks(labels).items()
            }
    except Exception as exc:  # handed to the GUI thread, shown there
        outcome.error = exc
    return outcome


# ====================================================================== small helpers
def _display_maps(result: T1FitResult, job: _Job, r2_threshold: float) -> dict[str, Any]:
    """What the layers show (worker side): maps masked to the heart's signal, and their limits."""
    mask = signal_mask(job.frames)
    t1_view = t1_display_settings(result.t1_ms, result.r_squared, job.metadata)

    def masked(values: np.ndarray) -> np.ndarray:
        out = np.array(values, dtype=np.float32, copy=True)
        out[~mask] = np.nan
        return out

    return {
        "t1": masked(result.t1_ms),
        "r2": masked(result.r_squared),
        "t1_sd": masked(result.t1_sd_ms),
        "t1_view": t1_view,
        "sd_limits": sd_display_limits(result.t1_sd_ms, result.r_squared, r2_threshold, t1_view["contrast_limits"]),
        "masked_pixels": int((~mask).sum()),
    }


def _shapes_to_labels(layer: Shapes, reference: Image, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a Shapes layer onto ``reference``'s (rows, columns) grid; shape i gets label i+1.

    Vertices go through world coordinates, so a Shapes layer drawn with another scale or
    translation (or in 3-D, on a frame) still lands on the right pixels.
    """
    if len(layer.data) == 0:
        raise ValueError(f"Shapes layer {layer.name!r} has no shapes; draw an ROI first.")
    polygons = []
    for vertices in layer.data:
        points = []
        for vertex in np.asarray(vertices, dtype=float):
            world = np.asarray(layer.data_to_world(vertex), dtype=float)
            if world.size < reference.ndim:
                world = np.concatenate([np.zeros(reference.ndim - world.size), world])
            points.append(np.asarray(reference.world_to_data(world), dtype=float)[-2:])
        polygons.append(np.array(points))
    flat = Shapes(polygons, shape_type=list(layer.shape_type), ndim=2)
    return np.asarray(flat.to_labels(labels_shape=tuple(shape)), dtype=np.int64)


def _link(added: dict[str, list[Any]]) -> None:
    """Link colormap and contrast limits of the raw and registered maps of each kind."""
    try:
        from napari.experimental import link_layers, unlink_layers
    except ImportError:  # pragma: no cover - older napari
        return
    for layers in added.values():
        if len(layers) == 2:
            try:
                unlink_layers(layers)
                link_layers(layers, ("colormap", "contrast_limits"))
            except Exception:  # pragma: no cover - linking is a convenience only
                pass


def _is_registration_of(layer: Any, source: Any) -> bool:
    meta = getattr(layer, "metadata", {})
    return layer is not source and (
        meta.get("source_layer") == source.name and "any2reg_result" in meta
        or layer.name == f"{source.name}{REGISTERED_SUFFIX}"
    )
