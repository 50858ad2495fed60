"""The "Registration" dock widget: pick a 3-D image layer, choose an engine, run, review.

The widget is thin: it builds a :class:`~napari_any2reg.core.sequence.Sequence` from the
layer, calls :func:`napari_any2reg.core.registration.register` in a worker thread (progress is
relayed through a Qt signal, cancellation through a :class:`threading.Event`), and adds the
result as an image layer ``"<name> registered"`` whose metadata carries the displacement
``(N, 2, H, W)`` and the run's summary. The source layer is never modified.

Tests drive it through :meth:`RegistrationWidget.run`, :meth:`RegistrationWidget.cancel`,
:attr:`RegistrationWidget.worker` and the public Qt controls (``run_button``, ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import FunctionWorker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.device import DEVICE_CHOICES, describe_device
from ..core.registration import DEFAULT_ENGINE as CORE_DEFAULT_ENGINE
from ..core.registration import (
    ENGINES,
    RegistrationCancelled,
    RegistrationResult,
    available_engines,
    register,
)
from ..core.sequence import Sequence
from ._dock import compact_combos, install_frame_label, scroll_body
from ._layers import REGISTERED_SUFFIX, axes_kwargs, beside_translate, sequence_from_layer_fields
from ._registered import RegisteredLayer
from ._pickers import cuda_available, index_of, is_sequence_layer
from ._relay import ActivityProgress, ProgressRelay

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["RegistrationWidget", "DEFAULT_ENGINE", "METRICS", "REFERENCE_MODES"]

#: Engine selected when the widget opens (becomes "any2reg" once its weights ship).
DEFAULT_ENGINE = CORE_DEFAULT_ENGINE

#: Similarity metrics offered for engines that take a ``metric`` option: (label, value).
METRICS = (("CTE (conditional template entropy)", "cte"), ("PCA2 (low-rank residual)", "pca2"))

#: Reference modes: (label, value). "fixed" keeps one frame still (all-to-one, ``u_ref = 0``).
REFERENCE_MODES = (("groupwise (implicit mean)", "groupwise"), ("fixed frame", "fixed"))

#: Where the registered layer is placed: (label, value). "beside" shifts it right of the source
#: by one image width plus a small gap, so raw and registered frames are seen side by side.
PLACEMENTS = (("beside the source", "beside"), ("on top of the source", "on_top"))

#: Default of the speed/quality control (engine option ``iterations_scale``).
DEFAULT_ITERATIONS_SCALE = 1.0


@dataclasses.dataclass
class _Outcome:
    """What the worker returns: the result, or the exception (so every error is ours to show)."""

    result: RegistrationResult | None = None
    error: BaseException | None = None


@dataclasses.dataclass
class _SourceInfo:
    """Display fields of the source layer, captured when Run is pressed."""

    name: str
    scale: np.ndarray
    translate: np.ndarray
    colormap: Any
    contrast_limits: tuple[float, float]
    metadata: dict[str, Any]


def engine_option_names(engine: str) -> set[str]:
    """The keyword options an engine names explicitly in its signature."""
    available_engines()  # make sure the built-in engines are registered
    fn = ENGINES.get(engine)
    if fn is None:
        return set()
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins / C functions
        return set()
    return {
        name
        for name, p in params.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


class RegistrationWidget(QWidget):
    """Dock widget running groupwise registration on a 3-D (frames, rows, columns) image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are listed and to which the result is added.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self.read_worker: FunctionWorker | None = None
        self.activity: ActivityProgress | None = None
        self.last_result: RegistrationResult | None = None
        self.last_error: BaseException | None = None
        self._cancel_event: threading.Event | None = None
        self._source: _SourceInfo | None = None
        self._watched_layers: list[Any] = []
        self._combo_layers: list[Image] = []

        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)

        self._build_ui()
        self._connect_viewer()
        self.refresh_layers()
        self._on_engine_changed()
        self._on_reference_mode_changed()
        self._set_running(False)
        self.set_status("Ready.")
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("3-D image layer (frames, rows, columns) to motion-correct.")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.open_file_button = QPushButton("File…")
        self.open_file_button.setToolTip("Open a TIFF / NIfTI / DICOM file in the background (progress below).")
        self.open_file_button.clicked.connect(lambda *_: self._open_dialog(folder=False))
        self.open_folder_button = QPushButton("DICOM folder…")
        self.open_folder_button.setToolTip("Read a DICOM series folder in the background (progress below); "
                                           "napari's File > Open reads it while the window waits.")
        self.open_folder_button.clicked.connect(lambda *_: self._open_dialog(folder=True))
        image_row = QVBoxLayout()
        image_row.setContentsMargins(0, 0, 0, 0)
        image_row.addWidget(self.layer_combo)
        open_row = QHBoxLayout()
        open_row.setContentsMargins(0, 0, 0, 0)
        open_row.addWidget(self.open_file_button)
        open_row.addWidget(self.open_folder_button)
        image_row.addLayout(open_row)
        form.addRow("Image", image_row)

        self.engine_combo = QComboBox()
        try:
            engines = available_engines()
            engines_error = None
        except Exception as exc:  # an engine failing to import must not kill the widget
            engines, engines_error = [], exc
        for name in engines:
            self.engine_combo.addItem(name, name)
        default = self.engine_combo.findData(DEFAULT_ENGINE)
        self.engine_combo.setCurrentIndex(default if default >= 0 else 0)
        self.engine_combo.currentIndexChanged.connect(self._on_engine_changed)
        form.addRow("Engine", self.engine_combo)

        self.metric_combo = QComboBox()
        for label, value in METRICS:
            self.metric_combo.addItem(label, value)
        self.metric_combo.setToolTip(
            "CTE suits any contrast change (T1 mapping); PCA2 suits smooth relaxation series."
        )
        form.addRow("Metric", self.metric_combo)

        self.iterations_spin = QDoubleSpinBox()
        self.iterations_spin.setRange(0.05, 5.0)
        self.iterations_spin.setSingleStep(0.1)
        self.iterations_spin.setDecimals(2)
        self.iterations_spin.setValue(DEFAULT_ITERATIONS_SCALE)
        self.iterations_spin.setPrefix("× ")
        self.iterations_spin.setToolTip(
            "Speed ↔ quality: scales the optimiser's iteration counts "
            "(0.2 quick preview, 1 default, 2 for hard cases)."
        )
        form.addRow("Iterations", self.iterations_spin)

        self.device_combo = QComboBox()
        self._cuda_available = cuda_available()
        for name in DEVICE_CHOICES:
            self.device_combo.addItem(name, name)
        if not self._cuda_available:
            item = self.device_combo.model().item(self.device_combo.findData("cuda"))
            if item is not None:
                item.setEnabled(False)
                item.setToolTip("No CUDA GPU is available on this machine.")
        self.device_combo.currentIndexChanged.connect(self._update_device_label)
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        device_row = QVBoxLayout()
        device_row.setContentsMargins(0, 0, 0, 0)
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_label)
        form.addRow("Device", device_row)

        self.reference_combo = QComboBox()
        for label, value in REFERENCE_MODES:
            self.reference_combo.addItem(label, value)
        self.reference_combo.setToolTip(
            "Groupwise: all frames move to an implicit common frame (mean displacement 0).\n"
            "Fixed frame: the chosen frame stays still and the others align to it."
        )
        self.reference_combo.currentIndexChanged.connect(self._on_reference_mode_changed)
        self.frame_spin = QSpinBox()
        self.frame_spin.setRange(0, 0)
        self.frame_spin.setToolTip("Frame kept fixed (defaults to the frame on screen).")
        ref_row = QHBoxLayout()
        ref_row.setContentsMargins(0, 0, 0, 0)
        ref_row.addWidget(self.reference_combo, 1)
        ref_row.addWidget(self.frame_spin)
        form.addRow("Reference", ref_row)

        self.placement_combo = QComboBox()
        for label, value in PLACEMENTS:
            self.placement_combo.addItem(label, value)
        self.placement_combo.setToolTip(
            "Beside: the registered frames appear right of the raw ones (compare side by side).\n"
            "On top: exactly over the raw frames (toggle or use the Review overlays)."
        )
        form.addRow("Result", self.placement_combo)

        self.mask_combo = QComboBox()
        self.mask_combo.addItem("none", None)
        self.mask_combo.setToolTip(
            "Optional Labels layer (heart or body region, on the sequence's grid): only its pixels\n"
            "drive the similarity (groupwise, xcoreg, any2reg-io; any2reg's single pass ignores it)."
        )
        form.addRow("Mask", self.mask_combo)

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Register the selected layer; the result is added as a new layer.")
        self.run_button.clicked.connect(lambda *_: self.run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self._inputs = (
            self.layer_combo,
            self.engine_combo,
            self.metric_combo,
            self.iterations_spin,
            self.device_combo,
            self.reference_combo,
            self.frame_spin,
            self.placement_combo,
            self.mask_combo,
        )
        self._update_device_label()
        if engines_error is not None:
            self.set_status(f"Engines could not be loaded: {engines_error}")

    # ------------------------------------------------------------------ viewer events
    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        self.viewer.dims.events.current_step.connect(self._on_current_step)
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
        # a newly loaded sequence becomes the target; our own results never do
        if layer is not None and is_sequence_layer(layer) and "any2reg_result" not in layer.metadata:
            if self.worker is None:
                self._select_layer(layer)

    def _on_layers_changed(self, event: Any = None) -> None:
        alive = list(self.viewer.layers)
        for layer in list(self._watched_layers):
            if not any(layer is a for a in alive):
                layer.events.name.disconnect(self._on_layers_changed)
                self._watched_layers.remove(layer)
        self.refresh_layers()

    def _on_current_step(self, event: Any = None) -> None:
        # the frame spin box follows the frame on screen until a fixed reference is chosen
        if self.reference_mode() != "fixed":
            self._reset_frame_spin()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        # stop a running registration; napari drops our event callbacks once we are deleted
        self.cancel()
        super().closeEvent(event)

    # ------------------------------------------------------------------ layer picker
    def eligible_layers(self) -> list[Image]:
        """Image layers that can be registered: 3-D, not RGB, not multiscale."""
        return [layer for layer in self.viewer.layers if is_sequence_layer(layer)]

    def refresh_masks(self) -> None:
        """Rebuild the mask list (Labels layers), keeping the current choice by name."""
        current = self.mask_combo.currentData()
        names = [layer.name for layer in self.viewer.layers if type(layer).__name__ == "Labels"]
        self.mask_combo.blockSignals(True)
        try:
            self.mask_combo.clear()
            self.mask_combo.addItem("none", None)
            for name in names:
                self.mask_combo.addItem(name, name)
            self.mask_combo.setCurrentIndex(names.index(current) + 1 if current in names else 0)
        finally:
            self.mask_combo.blockSignals(False)

    def mask_array(self) -> np.ndarray | None:
        """A copy of the chosen Labels layer's data (``None``: no mask)."""
        name = self.mask_combo.currentData()
        if name is None or name not in self.viewer.layers:
            return None
        return np.array(self.viewer.layers[name].data, copy=True)  # never hand the worker the live layer

    def refresh_layers(self) -> None:
        """Rebuild the layer list, keeping the current choice (followed through renames)."""
        self.refresh_masks()
        current = self.selected_layer()
        layers = self.eligible_layers()
        self._combo_layers = layers
        self.layer_combo.blockSignals(True)
        try:
            self.layer_combo.clear()
            for layer in layers:
                self.layer_combo.addItem(layer.name, layer.name)
            index = index_of(layers, current)
            if index < 0 and layers:
                # prefer a source sequence over a registered result
                sources = [i for i, la in enumerate(layers) if "any2reg_result" not in la.metadata]
                index = sources[0] if sources else 0
            self.layer_combo.setCurrentIndex(index)
        finally:
            self.layer_combo.blockSignals(False)
        if self.selected_layer() is not current:
            self._on_layer_changed()
        self._update_run_enabled()

    def _select_layer(self, layer: Image) -> None:
        index = index_of(self._combo_layers, layer)
        if index >= 0:
            self.layer_combo.setCurrentIndex(index)

    def selected_layer(self) -> Image | None:
        """The image layer chosen in the picker, or ``None``."""
        index = self.layer_combo.currentIndex()
        layers = getattr(self, "_combo_layers", [])
        if 0 <= index < len(layers):
            return layers[index]
        return None

    def _on_layer_changed(self, *args: Any) -> None:
        layer = self.selected_layer()
        if self.worker is None:  # the last run's message and bar belong to another layer
            self.progress_bar.setValue(0)
            self.set_status(f"Ready to register {layer.name!r}." if layer is not None else "Ready.")
        n = int(layer.data.shape[0]) if layer is not None else 1
        self.frame_spin.setRange(0, max(n - 1, 0))
        self._reset_frame_spin()
        self._update_run_enabled()

    # ------------------------------------------------------------------ options
    def current_frame(self, layer: Image | None = None) -> int:
        """Index (along the layer's frame axis) of the frame shown in the viewer."""
        layer = layer if layer is not None else self.selected_layer()
        if layer is None:
            return 0
        n = int(layer.data.shape[0])
        dims = self.viewer.dims
        world_axis = dims.ndim - layer.ndim
        if world_axis < 0:  # pragma: no cover - a layer always fits the viewer's dims
            return 0
        point = float(dims.point[world_axis])
        index = int(round((point - float(layer.translate[0])) / float(layer.scale[0])))
        return int(np.clip(index, 0, max(n - 1, 0)))

    def _reset_frame_spin(self) -> None:
        self.frame_spin.setValue(self.current_frame())

    def reference_mode(self) -> str:
        return str(self.reference_combo.currentData())

    def reference_frame(self) -> int | None:
        """``None`` for groupwise, else the fixed frame's index."""
        return int(self.frame_spin.value()) if self.reference_mode() == "fixed" else None

    def _on_reference_mode_changed(self, *args: Any) -> None:
        fixed = self.reference_mode() == "fixed"
        if fixed:
            self._reset_frame_spin()
        self.frame_spin.setEnabled(fixed and self.worker is None)

    def engine(self) -> str:
        return str(self.engine_combo.currentData())

    def engine_options(self) -> dict[str, Any]:
        """Options for the selected engine from the controls it understands."""
        names = engine_option_names(self.engine()) if self.engine_combo.count() else set()
        options: dict[str, Any] = {}
        if "metric" in names:
            options["metric"] = str(self.metric_combo.currentData())
        if "iterations_scale" in names:
            options["iterations_scale"] = float(self.iterations_spin.value())
        return options

    def _on_engine_changed(self, *args: Any) -> None:
        names = engine_option_names(self.engine()) if self.engine_combo.count() else set()
        running = self.worker is not None
        self.metric_combo.setEnabled("metric" in names and not running)
        self.iterations_spin.setEnabled("iterations_scale" in names and not running)

    def device(self) -> str:
        return str(self.device_combo.currentData())

    def _update_device_label(self, *args: Any) -> None:
        choice = self.device()
        try:
            text = describe_device(choice)
        except ValueError as exc:
            text = str(exc)
        self.device_label.setText(f"{choice} → {text}")

    # ------------------------------------------------------------------ state
    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def is_running(self) -> bool:
        return self.worker is not None

    def _set_running(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if not running:
            self._on_engine_changed()
            self._on_reference_mode_changed()
        self._update_run_enabled()

    def _update_run_enabled(self) -> None:
        self.run_button.setEnabled(
            self.worker is None and self.layer_combo.count() > 0 and self.engine_combo.count() > 0
        )

    # ------------------------------------------------------------------ open in the background
    def _open_dialog(self, folder: bool) -> None:  # pragma: no cover - needs a user
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Open a DICOM series folder")
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Open a cardiac sequence", "", "Sequences (*.tif *.tiff *.nii *.nii.gz *.dcm);;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path: Any) -> bool:
        """Read a sequence file or DICOM folder in a worker and add it as a layer (it becomes the target).

        Returns ``True`` when reading started; errors are notified and add nothing.
        """
        if self.read_worker is not None:
            self._report_error("A file is being read; wait for it to finish.")
            return False
        worker = FunctionWorker(_read_layer_data, str(path))
        worker.returned.connect(self._on_read)
        worker.finished.connect(self._on_read_finished)
        self.read_worker = worker
        self.open_file_button.setEnabled(False)
        self.open_folder_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)  # reading reports no fraction: a busy bar
        self.set_status(f"Reading {path}…")
        worker.start()
        return True

    def _on_read(self, outcome: tuple[Any, BaseException | None, str]) -> None:
        data, error, path = outcome
        if error is not None:
            self._report_error(f"Cannot open {path}: {error}", error)
            return
        array, kwargs, _ = data
        layer = self.viewer.add_image(array, **kwargs)
        self._select_layer(layer)
        self.set_status(f"Opened {path} as {layer.name!r}: {array.shape[0]} frames of {array.shape[1]}×{array.shape[2]}.")

    def _on_read_finished(self) -> None:
        self.read_worker = None
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.open_file_button.setEnabled(True)
        self.open_folder_button.setEnabled(True)

    # ------------------------------------------------------------------ run / cancel
    def run(self, layer: Image | str | None = None) -> bool:
        """Start registering a layer; returns ``True`` if a run was started.

        Parameters
        ----------
        layer : napari Image layer or layer name, optional
            What to register; defaults to the layer chosen in the picker. (The picker lists
            3-D layers only; passing another layer here reports why it cannot be registered.)

        Problems found before starting (no layer, a 2-D layer, one frame, NaNs, ...) are
        reported with ``show_error`` and in the status label; nothing is added to the viewer.
        """
        if self.worker is not None:
            return False
        if isinstance(layer, str):
            layer = self.viewer.layers[layer] if layer in self.viewer.layers else None
        elif layer is None:
            layer = self.selected_layer()
        if layer is None:
            self._report_error("Select a 3-D image layer (frames, rows, columns) to register.")
            return False
        engine = self.engine()
        try:
            if not isinstance(layer, Image):
                raise TypeError(f"{type(layer).__name__} layers cannot be registered; use an image layer.")
            sequence = sequence_from_layer_fields(
                layer.data, name=layer.name, scale=layer.scale, metadata=layer.metadata
            )
            options = self.engine_options()
            mask = self.mask_array()
            if mask is not None:
                options["mask"] = mask
            source = _SourceInfo(
                name=layer.name,
                scale=np.array(layer.scale, dtype=float),
                translate=np.array(layer.translate, dtype=float),
                colormap=layer.colormap,
                contrast_limits=tuple(float(c) for c in layer.contrast_limits),
                metadata=layer.metadata,
            )
        except Exception as exc:
            self._report_error(f"Cannot register {layer.name!r}: {exc}", exc)
            return False
        reference = self.reference_frame()
        device = self.device()

        self._source = source
        self.last_result = None
        self.last_error = None
        cancel_event = threading.Event()
        self._cancel_event = cancel_event
        worker = FunctionWorker(
            _run_registration,
            sequence,
            engine=engine,
            device=device,
            reference_frame=reference,
            cancel=cancel_event,
            relay=self._relay,
            options=options,
        )
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_running(True)
        self.progress_bar.setValue(0)
        mode = "groupwise" if reference is None else f"frame {reference} fixed"
        self.set_status(
            f"Registering {layer.name!r}: {sequence.n_frames} frames, {engine}, {mode}, {device}…"
        )
        self.activity = ActivityProgress(f"Registering {layer.name}")
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask a running registration to stop at its next check (no layer is added)."""
        if self.worker is None or self._cancel_event is None:
            return
        self._cancel_event.set()
        self.cancel_button.setEnabled(False)
        self.set_status("Cancelling…")

    # ------------------------------------------------------------------ worker callbacks
    def _on_progress(self, fraction: float, message: str) -> None:
        if self.worker is None:
            return
        self.progress_bar.setValue(int(round(100 * min(max(fraction, 0.0), 1.0))))
        if message and self._cancel_event is not None and not self._cancel_event.is_set():
            self.set_status(f"{message} ({100 * fraction:.0f} %)")
        if self.activity is not None:  # last: napari's bar may process events (and finish the run)
            self.activity.set(fraction, message)

    def _on_returned(self, outcome: _Outcome) -> None:
        if outcome.error is not None:
            self.last_error = outcome.error
            if isinstance(outcome.error, RegistrationCancelled):
                self.set_status("Registration cancelled; no layer was added.")
                show_info("Registration cancelled.")
            else:
                self._report_error(f"Registration failed: {outcome.error}", outcome.error)
            return
        try:
            self._show_result(outcome.result)
        except Exception as exc:
            self._report_error(f"Could not add the registered layer: {exc}", exc)

    def _on_finished(self) -> None:
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        self.worker = None
        self._cancel_event = None
        self._set_running(False)

    def _show_result(self, result: RegistrationResult) -> None:
        source = self._source
        assert source is not None
        self.last_result = result
        name = f"{source.name}{REGISTERED_SUFFIX}"
        metadata = RegisteredLayer.from_result(result, source.name, source.metadata).to_metadata()
        translate = np.array(source.translate, dtype=float)
        if self.placement_combo.currentData() == "beside":
            translate = beside_translate(source.translate, source.scale, result.registered.shape)
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(existing, Image):
            existing.data = result.registered
            existing.metadata = metadata
            existing.scale = source.scale
            existing.translate = translate
            existing.contrast_limits = source.contrast_limits
        else:
            self.viewer.add_image(
                result.registered,
                name=name,
                scale=source.scale,
                translate=translate,
                colormap=source.colormap,
                contrast_limits=source.contrast_limits,
                metadata=metadata,
                **axes_kwargs(len(source.scale)),
            )
        self.progress_bar.setValue(100)
        self.set_status(format_summary(result))

    def _report_error(self, message: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.last_error = exc
        self.set_status(message)
        show_error(message)


def format_summary(result: RegistrationResult) -> str:
    """One-paragraph summary of a run for the status label."""
    summary = result.summary()
    reference = summary.get("reference_frame")
    mode = "implicit reference" if reference is None else f"frame {reference} fixed"
    return (
        f"Done: {summary['engine']} ({mode}) on {summary['device']} in "
        f"{summary['seconds']:.1f} s; folding {summary['folding_percent']:.2f} %; "
        f"max |u| {summary['max_displacement_px']:.1f} px."
    )


def _read_layer_data(path: str) -> tuple[Any, BaseException | None, str]:
    """Worker body of "Open": the reader's layer data, or the error (shown in the GUI thread)."""
    from ._reader import read_layers

    try:
        return read_layers(path)[0], None, path
    except Exception as exc:
        return None, exc, path


def _run_registration(
    sequence: Sequence,
    *,
    engine: str,
    device: str,
    reference_frame: int | None,
    cancel: threading.Event,
    relay: ProgressRelay,
    options: dict[str, Any],
) -> _Outcome:
    """Worker-thread body: run :func:`register`, relaying throttled progress to the GUI."""
    last = [-1.0, ""]

    def progress(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.01 or message != last[1] or fraction >= 1.0:
            last[0], last[1] = fraction, message
            relay.progress.emit(float(fraction), str(message))

    try:
        result = register(
            sequence,
            engine=engine,
            device=device,
            reference_frame=reference_frame,
            progress=progress,
            cancel=cancel,
            **options,
        )
    except Exception as exc:  # handed to the GUI thread, shown there
        return _Outcome(error=exc)
    return _Outcome(result=result)
