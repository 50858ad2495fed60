"""The "T1 mapping" dock widget: fit T1 (or T2, T2*) maps before and after registration and compare them.

With a decay model (``t2``, ``t2c``, ``t2star``) the maps are ``"<name> T2"`` / ``"<name> T2*"``
with their SD map, the times are echo times (T2-prep durations, TEs) and a noise floor can
truncate each pixel's echoes (:func:`~napari_any2reg.core.mapping.fit_t1` ``noise_floor=``).

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

"Exclude outliers" leaves the frames that disagree with the rest of the registered set
(:mod:`napari_any2reg.core.qc.outliers`, found in the worker as for ``metrics.json``) out of the
registered fit, as ``any2reg fit --exclude-frames auto`` does (only while the model keeps
enough frames: :func:`~napari_any2reg.core.qc.outliers.auto_exclusion`); the status line says
which frames were fitted. It is on by default where the model can spare a frame.

Tests drive it through :meth:`MappingWidget.run`, :meth:`MappingWidget.cancel`,
:attr:`MappingWidget.worker`, :attr:`MappingWidget.last_result` and the public Qt controls.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from ..core.device import DEVICE_CHOICES
from ..core.mapping import T1_MODELS, DecayModel, T1FitResult, fit_t1, model_for_kind
from ..core.mapping.roi import DEFAULT_R2_THRESHOLD
from ._base import WorkerDock
from ._ecv_section import EcvSection
from ._dock import LEGEND_KEY, compact_combos, fit_view_to, install_frame_label, scroll_body, show_colorbar
from ._layers import REGISTERED_SUFFIX, axes_kwargs
from ._mapping_helpers import (
    MapJob,
    MappingOutcome,
    OutlierCheck,
    ShapesROI,
    display_maps,
    format_timings,
    link_maps,
    parse_timings,
    run_fits,
    sd_display_limits,
    signal_mask,
    t1_display_settings,
)
from ._mapping_results import ROLES, ResultsSection, format_outcome
from ._pickers import LayerPicker, cuda_available, index_of, is_roi_layer, is_sequence_layer, layer_key, same_layer
from ._plots import ShowsPlot, import_plotting
from ._registered import SOURCE_KEY, RegisteredLayer
from ._segments_section import SegmentsSection

if TYPE_CHECKING:
    import napari

__all__ = ["MappingWidget", "MappingOutcome", "ROLES", "MAP_SUFFIXES", "t1_display_settings", "parse_timings",
           "format_timings", "sd_display_limits", "signal_mask"]

#: Output layer names are ``"<source name><suffix>"``.
MAP_SUFFIXES = {"t1": " T1", "r2": " R²", "t1_sd": " T1 SD"}

_SIDE_BY_SIDE_GAP = 0.05  # fraction of the image width between raw and registered maps


class MappingWidget(ShowsPlot, WorkerDock):
    """Dock widget fitting T1 maps of a raw and/or registered sequence and comparing them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are listed and to which the maps are added.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_result: MappingOutcome | None = None
        self._staging: list[Any] = []  # map layers still to add, one per event-loop turn
        self._jobs: list[MapJob] = []
        # once the user picks a layer (or "(none)") in a combo, layer events stop auto-picking
        self._raw_touched = False
        self._registered_touched = False
        self._exclude_touched = False  # once the user ticks or unticks it, the default stops following
        self._filled_for: tuple[int, int] | None = None  # layers the model/timings were read from
        self._build_ui()
        self.watch_layers()
        self.refresh_layers()
        self.on_running_changed(False)
        self.set_status("Ready.")
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.raw_combo = LayerPicker(self.viewer, is_sequence_layer, none=True,
                                     tooltip="Sequence before registration (or (none)).")
        self.raw_combo.currentIndexChanged.connect(self._on_raw_changed)
        form.addRow("Raw (before)", self.raw_combo)
        self.registered_combo = LayerPicker(self.viewer, is_sequence_layer, none=True,
                                            tooltip="Registered sequence ('<name> registered'), or (none).")
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

        self.noise_floor_spin = QDoubleSpinBox()
        self.noise_floor_spin.setRange(0.0, 1e9)
        self.noise_floor_spin.setDecimals(3)
        self.noise_floor_spin.setSpecialValueText("off")  # 0: every echo is fitted
        self.noise_floor_spin.setToolTip(
            "T2 / T2* models: per pixel, leave out the echoes from the first one at or below this signal "
            "level (e.g. 2-3x the mean background); off: fit every echo.")
        form.addRow("Noise floor", self.noise_floor_spin)

        self.roi_combo = LayerPicker(
            self.viewer, is_roi_layer, none=True,
            tooltip="Labels (1 LV blood, 2 LV myocardium, 3 RV blood, or any integers) or Shapes layer for "
                    "ROI statistics and R² survival curves. A 3-D Labels layer uses the frame on screen.")
        form.addRow("ROI", self.roi_combo)

        self.r2_spin = QDoubleSpinBox()
        self.r2_spin.setRange(0.0, 0.999)
        self.r2_spin.setDecimals(3)
        self.r2_spin.setSingleStep(0.01)
        self.r2_spin.setValue(DEFAULT_R2_THRESHOLD)
        self.r2_spin.setToolTip("A pixel's fit counts as good when R² is above this value.")

        self.device_combo = QComboBox()
        for name in DEVICE_CHOICES:
            self.device_combo.addItem(name, name)
        if not cuda_available():
            item = self.device_combo.model().item(self.device_combo.findData("cuda"))
            if item is not None:
                item.setEnabled(False)
                item.setToolTip("No CUDA GPU is available on this machine.")
        # R² threshold and device share a row: with the outlier option the ROI table must stay
        # in view in a 1280x800 window (tests/widgets/test_new_user_window.py)
        fit_row = QHBoxLayout()
        fit_row.addWidget(self.r2_spin, 1)
        fit_row.addWidget(QLabel("Device"))
        fit_row.addWidget(self.device_combo, 1)
        form.addRow("Good fit: R² >", fit_row)

        self.exclude_check = QCheckBox("Exclude outliers")
        self.exclude_check.setChecked(True)
        self.exclude_check.clicked.connect(self._on_exclude_clicked)

        self.side_by_side_check = QCheckBox("Maps side by side")
        self.side_by_side_check.setChecked(True)
        self.side_by_side_check.setToolTip(
            "Shift the registered maps right by one image width so raw and registered are side by side."
        )
        # one row for both: the ROI table must stay in view in a 1280x800 window
        options = QHBoxLayout()
        options.addWidget(self.exclude_check)
        options.addWidget(self.side_by_side_check)
        options.addStretch(1)
        form.addRow("Registered", options)

        self.run_button = QPushButton("Fit")
        self.run_button.setToolTip("Fit T1 maps of the chosen layers; results are added as new layers.")
        self.run_button.clicked.connect(lambda *_: self.run())
        self.make_progress_controls()

        self.results = ResultsSection()
        self.plot_area = self.results  # the R² survival plot
        self.tabs = self.results
        self.stats_table = self.results.stats_table  # (figure, canvas: properties, made on first use)

        layout = self.dock_body(scroll_body(self), form, actions=(self.run_button,), after=self.results)
        # tissue characterisation on the maps: ECV from native + post, AHA segments and bullseye
        self.ecv_section, self.segments_section = EcvSection(self), SegmentsSection(self)
        layout.addWidget(self.ecv_section)
        layout.addWidget(self.segments_section)
        self._inputs = (self.raw_combo, self.registered_combo, self.model_combo, self.timings_edit, self.roi_combo,
                        self.r2_spin, self.device_combo, self.side_by_side_check, self.noise_floor_spin,
                        self.exclude_check)
        self._on_model_changed()

    # ------------------------------------------------------------------ viewer events
    def on_layer_inserted(self, layer: Any) -> None:
        if self.worker is not None or not is_sequence_layer(layer):
            return
        raw = self.selected_layer("before")
        if RegisteredLayer.is_result(layer):
            # a new registration of the raw layer becomes the "after" input
            if raw is not None and _is_registration_of(layer, raw):
                self._select("after", layer)
        elif raw is None:
            self._select("before", layer)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self._staging.clear()
        super().closeEvent(event)

    # ------------------------------------------------------------------ layer pickers
    def refresh_layers(self) -> None:
        """Rebuild the layer lists, keeping the current choices (followed through renames)."""
        before, after = self.selected_layer("before"), self.selected_layer("after")
        roi = None
        candidates = self.roi_combo.candidates()
        if self.roi_layer() is None and len(candidates) == 1 and not self.roi_combo.none_chosen:
            roi = candidates[0]  # the only ROI layer: "(none)" would silently drop the statistics
        sequences = self.raw_combo.candidates()
        sources = [layer for layer in sequences if not RegisteredLayer.is_result(layer)]
        if before is None and sources and not self._raw_touched:
            before = sources[0]
        if after is None and before is not None and not self._registered_touched:
            after = next((layer for layer in sequences if _is_registration_of(layer, before)), None)
        self.raw_combo.refresh(prefer=before)
        self.registered_combo.refresh(prefer=after)
        self.roi_combo.refresh(prefer=roi)
        self._fill_from_metadata()
        self._update_run_enabled()
        self.ecv_section.refresh_layers()
        self.segments_section.refresh_layers()

    def _combo_for(self, role: str) -> LayerPicker:
        return self.raw_combo if role == "before" else self.registered_combo

    def selected_layer(self, role: str) -> Image | None:
        """The layer chosen for ``role`` (``"before"`` or ``"after"``), or ``None``."""
        return self._combo_for(role).layer()

    def roi_layer(self) -> Any:
        """The Labels / Shapes layer chosen as ROI, or ``None``."""
        return self.roi_combo.layer()

    def _select(self, role: str, layer: Any) -> None:
        """Programmatic choice (not a user's): the other combo keeps following automatically."""
        combo = self._combo_for(role)
        index = index_of(combo.layers, layer)
        if index < 0:
            return
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
        self.roi_combo.set_layer(layer)

    def _on_raw_changed(self, *args: Any) -> None:
        self._raw_touched = True
        raw = self.selected_layer("before")
        if not self._registered_touched:
            # the registered input follows the raw one until the user picks it
            match = None
            if raw is not None:
                match = next((layer for layer in self.registered_combo.layers if _is_registration_of(layer, raw)), None)
            self.registered_combo.blockSignals(True)
            index = index_of(self.registered_combo.layers, match)
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
        key = tuple(None if la is None else layer_key(la) for la in (self.selected_layer("before"), self.selected_layer("after")))
        if layer is None or key == self._filled_for:
            return  # unchanged inputs: keep what the user typed
        self._filled_for = key
        meta = layer.metadata  # the sequence's own entries (._layers.sequence_layer_metadata)
        model = model_for_kind(meta.get("any2reg_kind"))
        if model is not None:
            self.model_combo.setCurrentIndex(max(self.model_combo.findData(model), 0))
        self.timings_edit.setText(format_timings(meta.get("timings_ms")))
        if model is None and meta.get("any2reg_kind") not in (None, "unknown"):
            self.set_status(f"Sequence kind {meta.get('any2reg_kind')!r} has no T1 model; choose one.")

    def _on_model_changed(self, *args: Any) -> None:
        spec = T1_MODELS[self.model()]
        self.timings_label.setText(f"{spec.timing_label.capitalize()} (ms)")
        decay = isinstance(spec, DecayModel)
        self.noise_floor_spin.setEnabled(decay and self.worker is None)
        self.run_button.setToolTip(f"Fit {spec.quantity} maps of the chosen layers; results are added as new layers.")
        self._update_exclude()

    # ------------------------------------------------------------------ outlier frames
    def _on_exclude_clicked(self, *args: Any) -> None:
        self._exclude_touched = True

    def _registration_after(self) -> RegisteredLayer | None:
        """The registration carried by the "after" layer (``None``: not a registration result)."""
        layer = self.selected_layer("after")
        return None if layer is None else RegisteredLayer.of(layer)

    def _update_exclude(self) -> None:
        """Enable the checkbox for a registered "after" layer; default on where the model can
        spare a frame (``n_params + 2`` frames must remain, as ``--exclude-frames auto``)."""
        layer = self.selected_layer("after")
        registered = self._registration_after() is not None
        spec = T1_MODELS[self.model()]
        minimum = spec.n_params + 2
        tip = ("Exclude outlier frames: leave the frames that disagree with the rest of the registered set (a mistriggered frame, a failed "
               f"breath-hold, an artefact) out of the registered fit, as 'any2reg fit --exclude-frames auto': only "
               f"while at least {minimum} frames remain for the {self.model()} model.")
        if layer is None or not registered:
            tip += "\nUnavailable: choose a registered layer (made by the Registration panel) as 'Registered (after)'."
        spare = layer is not None and int(layer.data.shape[0]) - 1 >= minimum
        if layer is not None and registered and not spare:
            tip += (f"\nOff by default: {int(layer.data.shape[0])} frames leave no frame to spare "
                    f"(the model needs {minimum}).")
        self.exclude_check.setToolTip(tip)
        self.exclude_check.setEnabled(registered and self.worker is None and not self._staging)
        if not self._exclude_touched:
            self.exclude_check.setChecked(bool(registered and spare))

    def _outlier_checks(self, jobs: list[MapJob]) -> dict[str, OutlierCheck]:
        """The outlier check of the "after" job (copies of what it needs), when ticked."""
        layer, registration = self.selected_layer("after"), self._registration_after()
        if not self.exclude_check.isChecked() or registration is None or not any(j.role == "after" for j in jobs):
            return {}
        return {"after": OutlierCheck.of(registration, layer, registration.source_in(self.viewer, layer))}

    # ------------------------------------------------------------------ options
    def model(self) -> str:
        return str(self.model_combo.currentData())

    def device(self) -> str:
        return str(self.device_combo.currentData())

    def noise_floor(self) -> float | None:
        """The noise floor of a T2 / T2* fit (``None``: off, or a T1 model)."""
        value = float(self.noise_floor_spin.value())
        return value if value > 0 and isinstance(T1_MODELS[self.model()], DecayModel) else None

    def timings(self) -> list[float]:
        """The timings typed in the editor (raises ``ValueError`` for unreadable text)."""
        return parse_timings(self.timings_edit.text())

    def on_running_changed(self, running: bool) -> None:
        self.ecv_section.set_running(running)
        self.segments_section.set_running(running)
        if not running and self._staging:
            return  # the last staged layer re-enables the panel
        for widget in self._inputs:
            widget.setEnabled(not running)
        if not running:
            self._on_model_changed()  # the noise floor only for the decay models
        self._update_run_enabled()

    def _update_run_enabled(self) -> None:
        chosen = self.selected_layer("before") is not None or self.selected_layer("after") is not None
        self.run_button.setEnabled(self.worker is None and not self._staging and chosen)
        self._update_exclude()

    # ------------------------------------------------------------------ ROI
    def roi_labels(self, shape: tuple[int, int], reference: Image) -> np.ndarray | None:
        """The ROI as an ``(H, W)`` integer label image on ``reference``'s grid (``None``: no ROI)."""
        roi = self.roi_input(shape, reference)
        return roi.rasterise() if isinstance(roi, ShapesROI) else roi

    def roi_input(self, shape: tuple[int, int], reference: Image) -> "np.ndarray | ShapesROI | None":
        """What the fit worker needs of the ROI: a Labels frame (copied), or a Shapes layer's
        :class:`ShapesROI` snapshot that the worker rasterises (``None``: no ROI)."""
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
        return ShapesROI.from_layer(layer, reference, shape)

    # ------------------------------------------------------------------ run / cancel
    def run(self) -> bool:
        """Start fitting the chosen layers; returns ``True`` if a fit was started.

        Problems found before starting (no layer, bad timings, a timing count that does not match
        the frames, an ROI on another grid) are reported with ``show_error`` and in the status
        label; nothing is added to the viewer.
        """
        if self.worker is not None or self._staging:
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
            rois = {job.role: self.roi_input(job.frames.shape[1:], self._layer_named(job.name)) for job in jobs}
            checks = self._outlier_checks(jobs)
        except Exception as exc:
            self.report_error(f"Cannot fit: {exc}", exc)
            return False
        model, device, threshold = self.model(), self.device(), float(self.r2_spin.value())
        self._jobs = jobs
        self.last_result = None
        fit = fit_t1  # looked up now: tests replace it in this module
        floor = self.noise_floor()
        if floor is not None:
            fit = functools.partial(fit, noise_floor=floor)
        quantity = T1_MODELS[model].quantity
        names = " and ".join(repr(job.name) for job in jobs)

        def work(job: Any) -> Any:
            import_plotting()  # the R² survival plot's first draw then costs no import on the GUI thread
            return run_fits(jobs, timings=timings, model=model, device=device, rois=rois,
                            r2_threshold=threshold, fit=fit, job=job, outlier_checks=checks)

        return self.start_job(
            work,
            description=f"{quantity} fit", activity=f"{quantity} fit ({model})", on_result=self._show_outcome,
            message=f"Fitting {model} {quantity} maps of {names} on {device}…", error_prefix=f"{quantity} fit failed")

    def _layer_named(self, name: str) -> Image:
        return self.viewer.layers[name]

    def _collect_jobs(self) -> list[MapJob]:
        jobs = []
        for role, _ in ROLES:
            layer = self.selected_layer(role)
            if layer is None:
                continue
            frames = np.asarray(layer.data, dtype=np.float32)
            jobs.append(
                MapJob(
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

    # ------------------------------------------------------------------ results
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
            display = outcome.display.get(job.role) or display_maps(result, job, outcome.r2_threshold)
            for key in MAP_SUFFIXES:
                def step(job=job, result=result, translate=translate, display=display, key=key) -> None:
                    layers = self._add_maps(job, result, translate, outcome.r2_threshold, display, only=key,
                                            colorbars=self._staging)
                    added[key].append(layers[key])
                steps.append(step)

        def finish() -> None:
            if side_by_side:
                link_maps(added)
            # the maps lie below the sequences: fit the view when they are off-screen
            fit_view_to(self.viewer, [layer for layers in added.values() for layer in layers if layer.visible])
            self.progress_bar.setValue(100)
            self.set_status(format_outcome(outcome))

        self.results.show_outcome(outcome)
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
            self.report_error(f"Could not add the T1 maps: {exc}", exc)
        if self._staging:
            QTimer.singleShot(0, self._stage_next)
        elif self.worker is None:
            self.on_running_changed(False)

    def busy(self) -> bool:
        """Whether a fit runs or its maps are still being added."""
        return self.worker is not None or bool(self._staging)

    def _add_maps(self, job: MapJob, result: T1FitResult, translate: np.ndarray, r2_threshold: float,
                  display: dict[str, Any], only: str | None = None, colorbars: list | None = None) -> dict[str, Any]:
        """Add (or update) the map layers; ``colorbars``: a staging queue the colour bar of a new
        layer goes to the front of (its next event-loop turn: vispy's first colour bar takes
        0.3-0.5 s, as long as the layer itself), else it is shown at once."""
        t1_view = display["t1_view"]
        base_meta = {SOURCE_KEY: job.name, "any2reg_fit": result.summary(), "spacing_mm": job.scale.tolist(),
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
            # " T1" / " T1 SD" name T1 maps; a decay model's are " T2" / " T2*" (and their SD)
            name = f"{job.name}{MAP_SUFFIXES[key].replace('T1', result.quantity)}"
            metadata = dict(base_meta, any2reg_map=key)
            legend = {k: v.replace("T1", result.quantity) if isinstance(v, str) else v for k, v in MAP_LEGENDS[key].items()}
            metadata[LEGEND_KEY] = legend  # quantity and unit under the frame label
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
                show = (lambda layer=layers[key], on=key == "t1" and job.role == "before": show_colorbar(layer, on))
                if colorbars is None:
                    show()
                else:
                    colorbars.insert(0, show)
        return layers

#: What each map's colours mean (see ``_dock.legend_text``; the range is the layer's contrast).
MAP_LEGENDS = {
    "t1": {"quantity": "T1", "unit": "ms", "note": ""},
    "r2": {"quantity": "R² of the fit", "unit": "", "note": ""},
    "t1_sd": {"quantity": "T1 SD", "unit": "ms", "note": ""},
}


def _is_registration_of(layer: Any, source: Any) -> bool:
    return not same_layer(layer, source) and (
        RegisteredLayer.is_result(layer) and RegisteredLayer.source_name_of(layer) == source.name
        or layer.name == f"{source.name}{REGISTERED_SUFFIX}"
    )
