"""The "Apply registration" dock: bring another layer onto a registration's common grid.

A registration's displacement (from a registered layer, or a saved ``displacement.npy`` /
``displacement.nii.gz`` / ITK field) is applied, without registering again, to

* an Image layer ``(N, H, W)`` of the same frames (another echo or contrast): bilinear,
* a Labels layer ``(N, H, W)`` or ``(H, W)`` drawn on the raw frames: nearest neighbour,
* a Points layer ``(frame, y, x)`` of landmarks clicked on the raw frames,

through :mod:`napari_any2reg.pipeline.apply` (the functions behind ``any2reg apply``). The result
is a new layer ``"<layer> warped"`` placed like the registered layer, so it overlays the
registered frames. The work runs in a worker (:class:`~._base.WorkerDock`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from qtpy.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QWidget

from ..pipeline.apply import apply_to_labels, apply_to_points, apply_to_sequence
from ._base import WorkerDock
from ._dock import compact_combos, scroll_body
from ._layers import axes_kwargs, jsonable_metadata
from ._pickers import LayerPicker, is_registered_layer
from ._points import points_to_table, table_points_data
from ._registered import RegisteredLayer

if TYPE_CHECKING:
    import napari

__all__ = ["ApplyWidget", "WARPED_SUFFIX", "can_be_warped"]

#: Suffix of the result layer: ``"<layer> warped"``.
WARPED_SUFFIX = " warped"

#: Metadata key marking a layer this dock made (what it was warped with).
_APPLIED_KEY = "any2reg_applied"


def can_be_warped(layer: Any) -> bool:
    """Layers a field can be applied to: 3-D images, 2-D / 3-D labels, 3-D points."""
    if isinstance(layer, Labels):
        return layer.ndim in (2, 3)
    if isinstance(layer, Image):
        return layer.ndim == 3 and not layer.rgb and not layer.multiscale
    return isinstance(layer, Points) and layer.ndim == 3


@dataclasses.dataclass
class _Field:
    """The displacement to apply and the grid its result is shown on."""

    label: str  # the registered layer's name, or the field file
    grid: Any  # layer whose scale / translate the result takes (None: the target's own)
    reference: Any  # the raw layer points were clicked on (None: the points' own pixels)
    displacement: np.ndarray | None = None  # None: read from the file ``label`` (in the worker)

    def load(self) -> np.ndarray:
        """The field ``(N, 2, H, W)`` (reads the file the first time; worker side)."""
        if self.displacement is None:
            from ..io.fields import read_displacement

            self.displacement = np.asarray(read_displacement(self.label)[0], np.float32)
        return self.displacement


@dataclasses.dataclass
class _PixelPoints:
    """Points whose data coordinates are the field's pixels (no raw image open), copied."""

    data: np.ndarray
    names: np.ndarray
    spacing_mm: tuple[float, float]
    layer_name: str

    @classmethod
    def of(cls, points: Points) -> "_PixelPoints":
        from ._points import NAME_FEATURE

        if NAME_FEATURE not in points.features.columns:
            raise ValueError(f"Points layer {points.name!r} has no 'name' feature (one landmark name per point).")
        return cls(np.array(points.data, float), points.features[NAME_FEATURE].astype(str).to_numpy(dtype=object),
                   tuple(float(s) for s in points.scale[-2:]), points.name)

    def table(self, n_frames: int) -> Any:
        from ..core.landmarks import LandmarkTable

        frames = np.round(self.data[:, 0]).astype(np.int64)
        if ((frames < 0) | (frames >= n_frames)).any():
            raise ValueError(f"points of {self.layer_name!r} lie outside the field's frames 0..{n_frames - 1}.")
        return LandmarkTable(frames, self.names, self.data[:, 1:], self.spacing_mm, "layer")


class ApplyWidget(WorkerDock):
    """Dock applying a registration's displacement to another Image, Labels or Points layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_layer: Any = None
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.registration_combo = LayerPicker(
            self.viewer, is_registered_layer, none=True,
            tooltip="The registered layer whose displacement is applied ((none): use the field file below).")
        form.addRow("Registration", self.registration_combo)
        self.field_edit = QLineEdit()
        self.field_edit.setPlaceholderText("or a saved displacement (.npy, .nii.gz, ITK)")
        self.field_edit.setToolTip("A displacement written by an export or `any2reg register` "
                                   "(N, 2, H, W pixels); used when no registered layer is chosen.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda *_: self._browse())
        field_row = QHBoxLayout()
        field_row.addWidget(self.field_edit, 1)
        field_row.addWidget(browse)
        form.addRow("Field file", field_row)
        self.target_combo = LayerPicker(
            self.viewer, lambda layer: can_be_warped(layer) and not is_registered_layer(layer)
            and _APPLIED_KEY not in layer.metadata,
            tooltip="Image (bilinear), Labels (nearest) or Points on the raw frames' grid.")
        form.addRow("Apply to", self.target_combo)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Warp the chosen layer onto the registration's common grid (a new layer).")
        self.apply_button.clicked.connect(lambda *_: self.apply())
        self.make_progress_controls()
        self.dock_body(scroll_body(self), form, actions=(self.apply_button,))
        self._inputs = (self.registration_combo, self.field_edit, browse, self.target_combo)
        self.watch_layers()
        self.refresh_layers()
        self.set_status("Choose a registration (or a field file) and a layer on the raw frames.")
        compact_combos(self)

    # ------------------------------------------------------------------ inputs
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Displacement field", "",
                                              "Fields (*.npy *.nii *.nii.gz);;All files (*)")
        if path:
            self.field_edit.setText(path)

    def refresh_layers(self) -> None:
        self.registration_combo.refresh(prefer=self._newest(self.registration_combo))
        self.target_combo.refresh()
        self.on_running_changed(self.worker is not None)

    @staticmethod
    def _newest(picker: LayerPicker) -> Any:
        if picker.layer() is not None or picker.none_chosen:
            return None
        candidates = picker.candidates()
        return candidates[-1] if candidates else None

    def select(self, *, registration: Any = None, target: Any = None, field_file: Any = None) -> None:
        """Choose inputs as a user would (layers or names; ``None`` leaves a choice unchanged)."""
        if registration is not None:
            self.registration_combo.set_layer(registration)
        if target is not None:
            self.target_combo.set_layer(target)
        if field_file is not None:
            self.field_edit.setText(str(field_file))

    def on_running_changed(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self.apply_button.setEnabled(not running and self.target_combo.layer() is not None)

    def _field(self) -> _Field:
        """The chosen registration, or the field file (read by the worker)."""
        registered = self.registration_combo.layer()
        path = self.field_edit.text().strip()
        if registered is not None:
            reg = RegisteredLayer.from_layer(registered)
            return _Field(repr(registered.name), registered, reg.source_in(self.viewer, registered), reg.displacement)
        if path:
            return _Field(path, None, None)
        raise ValueError("choose a registered layer or a displacement file.")

    # ------------------------------------------------------------------ apply
    def apply(self) -> bool:
        """Warp the chosen layer in a worker; returns ``True`` if it started (problems are shown)."""
        if self.worker is not None:
            return False
        target = self.target_combo.layer()
        try:
            if target is None:
                raise ValueError("choose an Image, Labels or Points layer to apply the registration to.")
            field = self._field()
            if isinstance(target, Points):
                data: Any = points_to_table(target, field.reference) if field.reference is not None else \
                    _PixelPoints.of(target)
                kind = "points"
            else:
                data = np.array(target.data, copy=True)  # the worker never touches the layer
                kind = "labels" if isinstance(target, Labels) else "image"
        except Exception as exc:
            self.report_error(f"Cannot apply: {exc}", exc)
            return False
        functions = {"image": apply_to_sequence, "labels": apply_to_labels, "points": apply_to_points}

        def work(job: Any) -> Any:
            job.progress(0.05, "reading the field")
            displacement = field.load()
            job.check()
            job.progress(0.1, f"warping {kind}")
            points = data.table(displacement.shape[0]) if isinstance(data, _PixelPoints) else data
            out = functions[kind](points, displacement)
            job.progress(1.0, "done")
            return out

        return self.start_job(
            work, description="Apply", activity=f"Applying {field.label} to {target.name}",
            message=f"Applying {field.label} to {target.name!r} ({kind})…",
            on_result=lambda out: self._show(out, target, kind, field))

    def _show(self, out: Any, target: Any, kind: str, field: _Field) -> None:
        grid = field.grid if field.grid is not None else target
        scale = np.asarray(grid.scale, float)[-3:]
        translate = np.asarray(grid.translate, float)[-3:]
        name = f"{target.name}{WARPED_SUFFIX}"
        meta = {_APPLIED_KEY: {"field": field.label, "from_layer": target.name, "kind": kind}}
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and _APPLIED_KEY in existing.metadata:
            self.viewer.layers.remove(existing)
        common = {"name": name, "scale": scale, "translate": translate, **axes_kwargs(3)}
        if kind == "points":
            coords, features = table_points_data(out)
            layer = self.viewer.add_points(coords, ndim=3, features=features, text={"string": "{name}", "size": 8},
                                           size=getattr(target, "size", 3.0), face_color="cyan",
                                           metadata={**meta, "image_layer": grid.name}, **common)
            what = f"{len(out)} point(s)"
        elif kind == "labels":
            layer = self.viewer.add_labels(out, metadata=meta, **common)
            what = f"labels {out.shape}"
        else:
            layer = self.viewer.add_image(out, metadata={**jsonable_metadata(target.metadata), **meta},
                                          colormap=target.colormap, contrast_limits=tuple(target.contrast_limits),
                                          **common)
            what = f"{out.shape[0]} frames"
        self.last_layer = layer
        self.set_status(f"Added {name!r}: {what} warped with {field.label}.")
