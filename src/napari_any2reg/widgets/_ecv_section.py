"""The Mapping dock's ECV section: native + post-contrast layers -> ECV map (``pipeline.ecv``).

The user picks the native and the post-contrast layer (sequences, registered as one set, or
2-D T1 maps, aligned), the labels (1 LV blood for the blood T1s, 2 LV myocardium, 3 RV blood,
drawn on the native grid) and the hematocrit (measured, or synthetic from the native blood T1);
:func:`napari_any2reg.pipeline.ecv.compute_ecv` runs in the dock's worker (progress, Cancel) and
the result becomes an Image layer ``"<native> ECV"`` (``"<native> synthetic ECV"``) in percent
with a colour bar, beside the native layer; the myocardial mean shows in the section.

The section gets the Mapping dock as an :class:`EcvHost` (viewer, jobs, status line and the
device chosen in the dock), nothing more.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QPushButton, QSpinBox

from ._dock import set_legend, show_colorbar
from ._hosts import JobHost
from ._layers import axes_kwargs, beside_translate, sequence_from_layer
from ._pickers import LayerPicker, is_overlay_layer

__all__ = ["EcvSection", "EcvHost", "is_t1_input_layer", "ECV_KEY"]

#: Metadata key of an ECV map layer (its summary: hematocrit, blood T1s, ROI statistics).
ECV_KEY = "any2reg_ecv"

#: Colour scale of the ECV map (%): normal myocardium ~25, fibrosis / amyloid well above 40.
ECV_LIMITS = (0.0, 60.0)


def is_t1_input_layer(layer: Any) -> bool:
    """A grey-level 3-D sequence or 2-D map layer (not an overlay of this plugin)."""
    return (isinstance(layer, Image) and layer.ndim in (2, 3) and not layer.rgb and not layer.multiscale
            and not is_overlay_layer(layer))


def labels_frame(layer: Any, viewer: Any, shape: tuple[int, int]) -> np.ndarray:
    """A Labels layer as an ``(H, W)`` int64 copy (a stack: the frame on screen), checked against ``shape``."""
    data = np.asarray(layer.data)
    if data.ndim == 3:
        frame = int(np.clip(viewer.dims.current_step[0], 0, data.shape[0] - 1)) if viewer.dims.ndim >= 3 else 0
        data = data[frame]
    if data.shape != tuple(shape):
        raise ValueError(f"labels layer {layer.name!r} is {data.shape} but the images are {tuple(shape)}; draw the "
                         "labels on the native layer's grid.")
    return np.array(data, dtype=np.int64)


@runtime_checkable
class EcvHost(JobHost, Protocol):
    """What :class:`EcvSection` needs from the Mapping dock."""

    def device(self) -> str:
        """The compute device chosen in the dock ("cpu", "cuda", ...)."""


class EcvSection(QGroupBox):
    """ECV inputs and the button; runs as a job of its host (:meth:`~._base.WorkerDock.start_job`).

    Parameters
    ----------
    host : EcvHost
        The dock: viewer, jobs, status line and device.
    """

    def __init__(self, host: EcvHost) -> None:
        super().__init__("ECV (native + post-contrast)")
        self.host = host
        self.viewer = host.viewer
        self.last_outcome: Any = None
        form = QFormLayout(self)
        self.native_combo = LayerPicker(self.viewer, is_t1_input_layer,
                                        tooltip="Native T1 series (registered with the post one as one set) or T1 map (ms).")
        form.addRow("Native", self.native_combo)
        self.post_combo = LayerPicker(self.viewer, is_t1_input_layer,
                                      tooltip="Post-contrast T1 series or T1 map (ms) of the same slice.")
        form.addRow("Post-contrast", self.post_combo)
        self.labels_combo = LayerPicker(self.viewer, lambda la: isinstance(la, Labels) and not is_overlay_layer(la),
                                        tooltip="Labels on the native grid: 1 LV blood (blood T1), 2 LV myocardium, 3 RV blood.")
        form.addRow("Labels", self.labels_combo)
        self.hematocrit_spin = QDoubleSpinBox()
        self.hematocrit_spin.setRange(0.05, 0.95)
        self.hematocrit_spin.setDecimals(3)
        self.hematocrit_spin.setSingleStep(0.01)
        self.hematocrit_spin.setValue(0.42)
        self.hematocrit_spin.setToolTip("Measured hematocrit (fraction of blood volume).")
        form.addRow("Hematocrit", self.hematocrit_spin)
        self.synthetic_check = QCheckBox("Synthetic (from native blood T1; 1.5 T MOLLI)")
        self.synthetic_check.setToolTip("Hct = 866.0 / T1blood[ms] - 0.1232 (Treibel et al. 2016); the result is "
                                        "'synthetic ECV'.")
        self.synthetic_check.toggled.connect(lambda on: self.hematocrit_spin.setEnabled(not on))
        form.addRow("", self.synthetic_check)
        self.register_check = QCheckBox("Register native + post as one set")
        self.register_check.setChecked(True)
        form.addRow("", self.register_check)
        self.engine_combo = QComboBox()
        from ..core.registration import available_engines

        self.engine_combo.addItem("auto (any2reg for series, groupwise for maps)", None)
        for name in available_engines():
            self.engine_combo.addItem(name, name)
        self.register_check.toggled.connect(self.engine_combo.setEnabled)
        form.addRow("Engine", self.engine_combo)
        self.erode_spin = QSpinBox()
        self.erode_spin.setRange(0, 5)
        self.erode_spin.setValue(0)
        self.erode_spin.setSuffix(" px")
        self.erode_spin.setToolTip("Leave the outer pixel layers of the LV myocardium (label 2) out of its mean and "
                                   "the segments: border pixels mix with blood (partial volume). 0: the whole label.")
        form.addRow("Exclude border", self.erode_spin)
        self.run_button = QPushButton("Compute ECV")
        self.run_button.setToolTip("Register, fit both T1 maps and compute ECV in the background; adds the ECV map.")
        self.run_button.clicked.connect(lambda *_: self.run())
        form.addRow(self.run_button)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        form.addRow(self.result_label)
        self._inputs = (self.native_combo, self.post_combo, self.labels_combo, self.hematocrit_spin,
                        self.synthetic_check, self.register_check, self.engine_combo, self.erode_spin)
        self.refresh_layers()

    # ------------------------------------------------------------------ layers
    def refresh_layers(self) -> None:
        native = self.native_combo.layer()
        self.native_combo.refresh()
        candidates = self.post_combo.candidates()
        other = next((la for la in candidates if native is None or la.name != native.name), None)
        self.post_combo.refresh(prefer=None if self.post_combo.layer() is not None else other)
        self.labels_combo.refresh()
        self.set_running(self.host.is_running())

    def set_running(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running and (widget is not self.engine_combo or self.register_check.isChecked())
                              and (widget is not self.hematocrit_spin or not self.synthetic_check.isChecked()))
        ready = all(c.layer() is not None for c in (self.native_combo, self.post_combo, self.labels_combo))
        self.run_button.setEnabled(not running and ready)

    # ------------------------------------------------------------------ run
    def _input(self, layer: Any) -> Any:
        data = np.asarray(layer.data)
        if data.ndim == 2:
            return np.array(data, dtype=np.float64)  # a T1 map (ms); the worker never touches layer data
        return sequence_from_layer(np.array(data, dtype=np.float32), name=layer.name, scale=layer.scale,
                                   metadata=dict(layer.metadata))

    def run(self) -> bool:
        """Start the ECV computation; problems found before it starts are shown, nothing is added."""
        if self.host.is_running():
            return False
        try:
            native_layer, post_layer, labels_layer = (c.layer() for c in (self.native_combo, self.post_combo,
                                                                           self.labels_combo))
            if native_layer is None or post_layer is None or labels_layer is None:
                raise ValueError("choose the native and the post-contrast layer and the labels.")
            if native_layer.name == post_layer.name:
                raise ValueError("the native and the post-contrast layer are the same layer; choose two.")
            native, post = self._input(native_layer), self._input(post_layer)
            shape = tuple(np.shape(native_layer.data)[-2:])
            labels = labels_frame(labels_layer, self.viewer, shape)
        except Exception as exc:
            self.host.report_error(f"Cannot compute ECV: {exc}", exc)
            return False
        synthetic = self.synthetic_check.isChecked()
        hematocrit = None if synthetic else float(self.hematocrit_spin.value())
        register = self.register_check.isChecked()
        engine = self.engine_combo.currentData()  # None: the default of register_pair
        device = self.host.device()
        erode = int(self.erode_spin.value())
        series = np.ndim(native_layer.data) == 3 and np.ndim(post_layer.data) == 3
        place = {"name": native_layer.name, "scale": np.array(native_layer.scale[-2:], float),
                 "translate": np.array(native_layer.translate[-2:], float), "shape": shape}

        def work(job: Any) -> Any:
            from ..pipeline.ecv import compute_ecv

            return compute_ecv(native, post, labels, hematocrit=hematocrit, synthetic_hematocrit=synthetic,
                               register=register, engine=engine, device=device, progress=job.progress,
                               cancel=job.cancel, spacing_mm=tuple(place["scale"]), erode_px=erode)

        return self.host.start_job(work, description="ECV", activity="ECV",
                                   on_result=lambda outcome: self._show(outcome, place),
                                   message=f"ECV of {native_layer.name!r} and {post_layer.name!r}"
                                           f"{'' if not register else ' (registered as one set)' if series else ' (maps aligned)'}…",
                                   error_prefix="ECV failed")

    # ------------------------------------------------------------------ result
    def _show(self, outcome: Any, place: dict[str, Any]) -> None:
        self.last_outcome = outcome
        ecv = outcome.ecv
        name = f"{place['name']} {ecv.label}"
        translate = beside_translate(place["translate"], place["scale"], place["shape"])
        metadata = {ECV_KEY: ecv.summary(), "any2reg_map": "ecv", "unit": "%", "quantity": ecv.label,
                    "spacing_mm": place["scale"].tolist()}
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Image):
            layer = self.viewer.layers[name]
            layer.data = ecv.ecv_percent
            layer.metadata = metadata
        else:
            layer = self.viewer.add_image(ecv.ecv_percent, name=name, scale=place["scale"], translate=translate,
                                          colormap="inferno", contrast_limits=ECV_LIMITS, metadata=metadata,
                                          **axes_kwargs(2))
        # the unit under the frame label, as for the T1 maps (napari's colour bar has no title)
        set_legend(layer, ecv.label, "%", f"{ecv.erode_px} border px left out of the means" if ecv.erode_px else "")
        show_colorbar(layer)  # the colour bar's range is the layer's contrast limits, in %
        mean = ecv.myocardial_mean()
        text = (f"Myocardial {ecv.label}: {mean:.1f} %" if mean is not None
                else f"No valid {ecv.label} in the LV myocardium (label 2).")
        if ecv.erode_px:
            text += f" without its {ecv.erode_px} border px"
        text += (f" (hematocrit {ecv.hematocrit:.3f}{' synthetic' if ecv.synthetic else ''}; blood T1 "
                 f"{ecv.native_blood_t1_ms:.0f} / {ecv.post_blood_t1_ms:.0f} ms; "
                 f"{outcome.description()}; "
                 f"{ecv.n_invalid_labelled} labelled pixels without a valid T1, {ecv.n_invalid} in the image)")
        self.result_label.setText(text)
        self.host.set_status(f"Added {name!r} ({ecv.label} in %).")
