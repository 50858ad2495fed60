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
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.device import DEVICE_CHOICES, describe_device
from ..core.registration import RegistrationResult, register
from ._base import WorkerDock
from ._dock import compact_combos, fit_view_to, install_frame_label, scroll_body
from ._engine_options import DEFAULT_ENGINE, DEFAULT_ITERATIONS_SCALE, METRICS, EngineOptionsForm, engine_option_names
from ._layers import REGISTERED_SUFFIX, axes_kwargs, beside_translate, sequence_from_layer_fields
from ._pickers import LayerPicker, cuda_available, is_sequence_layer
from ._registered import RegisteredLayer

if TYPE_CHECKING:
    import napari

__all__ = ["RegistrationWidget", "DEFAULT_ENGINE", "METRICS", "REFERENCE_MODES", "DEFAULT_ITERATIONS_SCALE",
           "engine_option_names"]

#: Reference modes: (label, value). "fixed" keeps one frame still (all-to-one, ``u_ref = 0``).
REFERENCE_MODES = (("groupwise (implicit mean)", "groupwise"), ("fixed frame", "fixed"))

#: Where the registered layer is placed: (label, value). "beside" shifts it right of the source
#: by one image width plus a small gap, so raw and registered frames are seen side by side.
PLACEMENTS = (("beside the source", "beside"), ("on top of the source", "on_top"))


@dataclasses.dataclass
class _SourceInfo:
    """Display fields of the source layer, captured when Run is pressed."""

    name: str
    scale: np.ndarray
    translate: np.ndarray
    colormap: Any
    contrast_limits: tuple[float, float]
    metadata: dict[str, Any]


class RegistrationWidget(WorkerDock):
    """Dock widget running groupwise registration on a 3-D (frames, rows, columns) image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are listed and to which the result is added.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_result: RegistrationResult | None = None
        self._source: _SourceInfo | None = None
        self._read_token: int | None = None
        self._build_ui()
        self.watch_layers()
        self.viewer.dims.events.current_step.connect(self._on_current_step)
        self.refresh_layers()
        self._on_reference_mode_changed()
        self.on_running_changed(False)
        self.set_status("Ready.")
        if self.options_form.load_error is not None:
            self.set_status(f"Engines could not be loaded: {self.options_form.load_error}")
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.layer_combo = LayerPicker(self.viewer, is_sequence_layer,
                                       tooltip="3-D image layer (frames, rows, columns) to motion-correct.")
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

        self.options_form = EngineOptionsForm()
        self.engine_combo = self.options_form.engine_combo
        self.metric_combo = self.options_form.metric_combo
        self.iterations_spin = self.options_form.iterations_spin
        self.options_form.changed.connect(self._update_run_enabled)
        form.addRow(self.options_form)

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

        self.mask_combo = LayerPicker(
            self.viewer, lambda layer: isinstance(layer, Labels), none=True,
            tooltip="Optional Labels layer (heart or body region, on the sequence's grid): only its pixels\n"
                    "drive the similarity (groupwise, xcoreg, any2reg-io; any2reg's single pass ignores it).")
        form.addRow("Mask", self.mask_combo)

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Register the selected layer; the result is added as a new layer.")
        self.run_button.clicked.connect(lambda *_: self.run())
        self.make_progress_controls()
        self.dock_body(scroll_body(self), form, actions=(self.run_button,))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._inputs = (self.layer_combo, self.device_combo, self.reference_combo, self.frame_spin,
                        self.placement_combo, self.mask_combo)
        self._update_device_label()

    # ------------------------------------------------------------------ viewer events
    def on_layer_inserted(self, layer: Any) -> None:
        # a newly loaded sequence becomes the target; our own results never do
        if is_sequence_layer(layer) and not RegisteredLayer.is_result(layer) and self.worker is None:
            self._select_layer(layer)

    def _on_current_step(self, event: Any = None) -> None:
        # the frame spin box follows the frame on screen until a fixed reference is chosen
        if self.reference_mode() != "fixed":
            self._reset_frame_spin()

    # ------------------------------------------------------------------ layer picker
    def eligible_layers(self) -> list[Image]:
        """Image layers that can be registered: 3-D, not RGB, not multiscale."""
        return self.layer_combo.candidates()

    def mask_array(self) -> np.ndarray | None:
        """A copy of the chosen Labels layer's data (``None``: no mask)."""
        layer = self.mask_combo.layer()
        return None if layer is None else np.array(layer.data, copy=True)  # never the live layer

    def refresh_layers(self) -> None:
        """Rebuild the layer lists, keeping the current choices (followed through renames)."""
        self.mask_combo.refresh()
        current = self.selected_layer()
        prefer = None
        if current is None:  # prefer a source sequence over a registered result
            prefer = next((la for la in self.layer_combo.candidates() if not RegisteredLayer.is_result(la)), None)
        if self.layer_combo.refresh(prefer=prefer):
            self._on_layer_changed()
        self._update_run_enabled()

    def _select_layer(self, layer: Image) -> None:
        try:
            self.layer_combo.set_layer(layer)
        except ValueError:
            pass

    def selected_layer(self) -> Image | None:
        """The image layer chosen in the picker, or ``None``."""
        return self.layer_combo.layer()

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
        world_axis = max(dims.ndim - layer.ndim, 0)  # napari's dims always hold every layer's axes
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
        return self.options_form.engine()

    def engine_options(self) -> dict[str, Any]:
        """Options for the selected engine from the controls it understands."""
        return self.options_form.options()

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
    def on_running_changed(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self.options_form.set_running(running)
        if not running:
            self._on_reference_mode_changed()
        self._update_run_enabled()

    def _update_run_enabled(self) -> None:
        self.run_button.setEnabled(self.worker is None and self.layer_combo.count() > 0
                                   and self.options_form.has_engines())

    # ------------------------------------------------------------------ open in the background
    def _open_dialog(self, folder: bool) -> None:
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Open a DICOM series folder")
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Open a cardiac sequence", "", "Sequences (*.tif *.tiff *.nii *.nii.gz *.dcm);;All files (*)")
        if path:
            self.open_path(path)

    @property
    def read_worker(self) -> Any:
        """The worker reading a file (``None`` when none is being read)."""
        return self.job_worker(self._read_token)

    def open_path(self, path: Any) -> bool:
        """Read a sequence file or DICOM folder in a worker and add it as a layer (it becomes the target).

        Returns ``True`` when reading started; errors are notified and add nothing.
        """
        if self.read_worker is not None:
            self.report_error("A file is being read; wait for it to finish.")
            return False
        from ._reader import read_layers

        path = str(path)

        def done(data: Any) -> None:
            array, kwargs, _ = data
            layer = self.viewer.add_image(array, **kwargs)
            self._select_layer(layer)
            self.set_status(f"Opened {path} as {layer.name!r}: {array.shape[0]} frames of "
                            f"{array.shape[1]}×{array.shape[2]}.")

        def finished() -> None:
            self._read_token = None
            self.open_file_button.setEnabled(True)
            self.open_folder_button.setEnabled(True)
            if self.last_error is not None or self.worker is None:
                self.progress_bar.setValue(0)

        self.open_file_button.setEnabled(False)
        self.open_folder_button.setEnabled(False)
        self.start_job(lambda job: read_layers(path)[0], description=f"Reading {path}", main=False,
                       on_result=done, on_finished=finished, error_prefix=f"Cannot open {path}")
        self._read_token = self.last_token
        return True

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
            self.report_error("Select a 3-D image layer (frames, rows, columns) to register.")
            return False
        engine = self.engine()
        try:
            if not isinstance(layer, Image):
                raise TypeError(f"{type(layer).__name__} layers cannot be registered; use an image layer.")
            sequence = sequence_from_layer_fields(layer.data, name=layer.name, scale=layer.scale,
                                                  metadata=layer.metadata)
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
            self.report_error(f"Cannot register {layer.name!r}: {exc}", exc)
            return False
        reference = self.reference_frame()
        device = self.device()
        self._source = source
        self.last_result = None
        mode = "groupwise" if reference is None else f"frame {reference} fixed"

        def work(job: Any) -> RegistrationResult:
            return register(sequence, engine=engine, device=device, reference_frame=reference,
                            progress=job.progress, cancel=job.cancel, **options)

        return self.start_job(
            work, description="Registration", activity=f"Registering {layer.name}", on_result=self._show_result,
            message=f"Registering {layer.name!r}: {sequence.n_frames} frames, {engine}, {mode}, {device}…")

    # ------------------------------------------------------------------ result
    def _show_result(self, result: RegistrationResult) -> None:
        source = self._source
        assert source is not None
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
            layer = existing
        else:
            layer = self.viewer.add_image(
                result.registered,
                name=name,
                scale=source.scale,
                translate=translate,
                colormap=source.colormap,
                contrast_limits=source.contrast_limits,
                metadata=metadata,
                **axes_kwargs(len(source.scale)),
            )
        fit_view_to(self.viewer, [layer])  # "beside the source" lies off-screen on a small window
        self.last_result = result
        self.progress_bar.setValue(100)
        self.set_status(format_summary(result))


def format_summary(result: RegistrationResult) -> str:
    """One-paragraph summary of a run for the status label."""
    summary = result.summary()
    reference = summary.get("reference_frame")
    mode = "implicit reference" if reference is None else f"frame {reference} fixed"
    return (
        f"Done: {summary['engine']} ({mode}) on {summary['device']} in "
        f"{summary['seconds']:.1f} s; folding {summary['folding_percent']:.2f} %; "
        f"max |u| {summary['max_displacement_px']:.1f} px."
    ) + "".join(f"\n{note[:1].upper()}{note[1:]}." for note in result.notes())
