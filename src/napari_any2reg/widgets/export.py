"""The "Export" dock widget: write a registration and everything around it into a folder.

Thin by design: it gathers the layers — the registered layer (frames, displacement, run summary
in its metadata), its source (raw frames, for QC and the report), optionally a landmarks Points
layer, a Labels layer ``(N, H, W)``, the T1 / R² / SD maps the T1 mapping panel made and an
AHA segment analysis of its segments section (the report's bullseye and segment table; found
through the metadata of the boundary layers that section adds, the latest by default:
:func:`~._segments_section.latest_segments`) — and calls :func:`napari_any2reg.pipeline.export.export_registration` in a worker thread. What can be
written is listed as check boxes (see :data:`~napari_any2reg.pipeline.export.ITEMS`); items
whose input is missing are disabled, with the reason as tool tip.

The export is all or nothing, never replaces a file unless "Overwrite" is ticked, and reports
errors as notifications (and in the status line). Layers are never modified.

Tests drive it through :meth:`ExportWidget.export`, :attr:`ExportWidget.worker`,
:attr:`ExportWidget.last_result` / :attr:`ExportWidget.last_error` and the public controls.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..core.overlays import uncertainty_unavailable
from ..pipeline.export import EXPORT_ITEMS, MAP_ITEMS, ExportResult, export_registration
from ._dock import compact_combos, scroll_body
from ._layers import sequence_from_layer_fields
from ._base import WorkerDock
from ._pickers import LayerPicker, contains, is_registered_layer
from ._registered import RegisteredLayer
from ._segments_section import SEGMENTS_KEY, latest_segments, segment_layers

if TYPE_CHECKING:
    import napari

__all__ = ["ExportWidget", "gather_t1_maps"]


#: Name suffixes of the maps the T1 mapping panel adds ("<layer> T1", ...), by export key.
MAP_LAYER_SUFFIXES = {"t1": " T1", "r2": " R²", "t1_sd": " T1 SD"}


def gather_t1_maps(viewer: Any, layers: dict[str, Image | None], shape: tuple[int, int]) -> dict[str, dict[str, np.ndarray]]:
    """The T1 mapping panel's map layers for each role (``"raw"``, ``"registered"``) that has a T1 map."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for role, source in layers.items():
        if source is None:
            continue
        maps = {}
        for key, suffix in MAP_LAYER_SUFFIXES.items():
            name = f"{source.name}{suffix}"
            if name in viewer.layers:
                layer = viewer.layers[name]
                if isinstance(layer, Image) and tuple(layer.data.shape) == tuple(shape):
                    maps[key] = np.array(layer.data, dtype=np.float32, copy=True)
        if "t1" in maps:
            out[role] = maps
    return out


class ExportWidget(WorkerDock):
    """Dock widget exporting a registered layer (stack, NIfTI, field, Jacobian, maps, QC, report, record).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_result: ExportResult | None = None
        self._wanted: dict[str, bool] = {item: True for item in EXPORT_ITEMS}
        #: the latest segment analysis seen (a newer one becomes the choice)
        self._latest_segments: Any = None
        self._latest_summary: Any = None
        self._build_ui()
        self.watch_layers()
        self.refresh_layers()
        self.set_status("Choose a registered layer and a folder.")
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.registered_combo = LayerPicker(
            self.viewer, is_registered_layer,
            tooltip="A registered layer ('<name> registered') made by the Registration panel.")
        self.registered_combo.currentIndexChanged.connect(lambda *_: self._on_choice_changed())
        form.addRow("Registered", self.registered_combo)
        self.source_label = QLabel("—")
        form.addRow("Source", self.source_label)
        self.points_combo = LayerPicker(
            self.viewer, lambda la: isinstance(la, Points) and la.ndim == 3 and len(la.data) > 0, none=True,
            tooltip="Landmarks (Points layer with a 'name' feature) for landmarks.csv and the TRE.")
        self.points_combo.currentIndexChanged.connect(lambda *_: self._on_choice_changed())
        form.addRow("Landmarks", self.points_combo)
        self.labels_combo = LayerPicker(
            self.viewer, lambda la: isinstance(la, Labels) and la.ndim == 3, none=True,
            tooltip="Labels (N, H, W): a segmentation of every raw frame, for the all-pair Dice.")
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._on_choice_changed())
        form.addRow("Labels", self.labels_combo)
        self.segments_combo = LayerPicker(
            self.viewer, lambda la: contains(segment_layers(self.viewer), la), none=True,
            tooltip="AHA segments made in the T1 mapping dock's segments section: the report shows their "
                    "bullseye and table (the latest analysis unless you choose).")
        form.addRow("Segments", self.segments_combo)

        items_box = QGroupBox("Write")
        grid = QGridLayout(items_box)
        self.item_checks: dict[str, QCheckBox] = {}
        for k, (item, description) in enumerate(EXPORT_ITEMS.items()):
            check = QCheckBox(item)
            check.setChecked(True)
            check.setToolTip(description)
            check.clicked.connect(lambda checked, item=item: self._wanted.__setitem__(item, bool(checked)))
            grid.addWidget(check, k // 2, k % 2)
            self.item_checks[item] = check

        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("output folder (created if missing)")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(lambda *_: self._browse())
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.browse_button)
        options = QFormLayout()
        options.addRow("Folder", folder_row)
        self.format_combo = QComboBox()
        for fmt in ("png", "pdf"):
            self.format_combo.addItem(fmt.upper(), fmt)
        options.addRow("Report", self.format_combo)
        self.overwrite_check = QCheckBox("Overwrite existing files")
        self.overwrite_check.setToolTip("Without it, an export that would replace a file writes nothing.")
        options.addRow("", self.overwrite_check)

        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(lambda *_: self.export())
        self.make_progress_controls()
        self.dock_body(scroll_body(self), form, items_box, options, actions=(self.export_button,))
        self._inputs = [self.registered_combo, self.points_combo, self.labels_combo, self.segments_combo, self.folder_edit,
                        self.browse_button, self.format_combo, self.overwrite_check, *self.item_checks.values()]

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # ------------------------------------------------------------------ layers
    def refresh_layers(self) -> None:
        """Rebuild the pickers (keeping the choices); a new registered layer becomes the choice."""
        registered = self.registered_combo.layer()
        candidates = self.registered_combo.candidates()
        if registered is None or not contains(candidates, registered):
            registered = candidates[-1] if candidates else None
        self.registered_combo.refresh(prefer=registered)
        # exactly one suitable layer: pick it (a "(none)" would silently drop landmarks / Dice)
        for picker in (self.points_combo, self.labels_combo):
            options = picker.candidates()
            single = options[0] if len(options) == 1 and picker.layer() is None and not picker.none_chosen else None
            picker.refresh(prefer=single)
        latest = latest_segments(self.viewer)
        newer = latest is not None and not (self._latest_segments is latest and latest.metadata.get(SEGMENTS_KEY)
                                            is self._latest_summary)
        self.segments_combo.refresh(prefer=latest if newer else None)
        if newer:
            self.segments_combo.none_chosen = False
        self._latest_segments = latest
        self._latest_summary = None if latest is None else latest.metadata.get(SEGMENTS_KEY)
        self._update_available()

    def _on_choice_changed(self) -> None:
        if self.worker is None and self.progress_bar.value():
            # the last export's bar and message do not describe the new choice
            self.progress_bar.setValue(0)
            self.set_status("Choose what to write and a folder.")
        self._update_available()

    def registered_layer(self) -> Image | None:
        return self.registered_combo.layer()

    def points_layer(self) -> Points | None:
        return self.points_combo.layer()

    def labels_layer(self) -> Labels | None:
        return self.labels_combo.layer()

    def segments(self) -> dict[str, Any] | None:
        """The chosen AHA segment analysis (``SegmentAnalysis.summary()``) for the report, or ``None``."""
        layer = self.segments_combo.layer()
        summary = None if layer is None else (layer.metadata or {}).get(SEGMENTS_KEY)
        return dict(summary) if isinstance(summary, dict) else None

    def select(self, *, registered: Any = None, points: Any = None, labels: Any = None, segments: Any = None) -> None:
        """Choose layers (layers or names) as a user would; ``None`` leaves a choice unchanged.

        The string ``"(none)"`` chooses no landmarks / labels / segments.
        """
        for picker, layer in ((self.registered_combo, registered), (self.points_combo, points),
                              (self.labels_combo, labels), (self.segments_combo, segments)):
            if layer is not None:
                picker.set_layer(layer)

    def registration(self) -> RegisteredLayer | None:
        """The chosen registered layer's registration."""
        registered = self.registered_layer()
        return None if registered is None else RegisteredLayer.of(registered)

    def source_layer(self) -> Image | None:
        """The raw sequence the chosen registered layer came from (by its ``source_layer`` name)."""
        registration = self.registration()
        return None if registration is None else registration.source_in(self.viewer, self.registered_layer())

    def missing_inputs(self) -> dict[str, str]:
        """Items that cannot be written now, and why."""
        registered, source = self.registered_layer(), self.source_layer()
        missing: dict[str, str] = {}
        if registered is None:
            return {item: "no registered layer" for item in EXPORT_ITEMS}
        if source is None:
            why = f"the source layer {RegisteredLayer.source_name_of(registered)!r} is not open"
            missing["qc"] = missing["report"] = why
        shape = tuple(registered.data.shape[1:])
        if not gather_t1_maps(self.viewer, {"raw": source, "registered": registered}, shape):
            missing.update(dict.fromkeys(MAP_ITEMS, "no T1 maps: run the T1 mapping panel first"))
        if self.points_layer() is None:
            missing["landmarks"] = "choose a landmarks Points layer"
        labels = self.labels_layer()
        if labels is None or tuple(labels.data.shape) != tuple(registered.data.shape):
            missing["dice"] = "choose a Labels layer with a segmentation of every frame (N, H, W)"
        registration = self.registration()
        if registration is None or registration.displacement_sd is None:
            summary = {} if registration is None else registration.summary
            missing["uncertainty"] = uncertainty_unavailable(summary.get("engine"), (summary.get("params") or {}).get("uncertainty"))
        return missing

    def _update_available(self) -> None:
        source = self.source_layer()
        registered = self.registered_layer()
        if registered is None:
            self.source_label.setText("—")
        else:
            self.source_label.setText(source.name if source is not None else
                                      f"{RegisteredLayer.source_name_of(registered)!r} not open (QC and report need it)")
        missing = self.missing_inputs()
        for item, check in self.item_checks.items():
            reason = missing.get(item)
            check.setEnabled(reason is None and self.worker is None)
            # an item that cannot be written is shown unticked (the wish comes back with the input)
            check.setChecked(self._wanted[item] and reason is None)
            check.setToolTip(EXPORT_ITEMS[item] + (f" — unavailable: {reason}" if reason else ""))
        self.export_button.setEnabled(self.worker is None and registered is not None)

    def chosen_items(self) -> list[str]:
        """Ticked items that can be written now."""
        missing = self.missing_inputs()
        return [item for item in self.item_checks if self._wanted[item] and item not in missing]

    def set_items(self, items: list[str]) -> None:
        """Tick exactly ``items``."""
        unknown = [i for i in items if i not in self.item_checks]
        if unknown:
            raise ValueError(f"unknown export item(s) {unknown}; choose from {', '.join(EXPORT_ITEMS)}.")
        for item in self.item_checks:
            self._wanted[item] = item in items
        self._update_available()

    # ------------------------------------------------------------------ export
    def _gather(self) -> dict[str, Any]:
        """Everything the export needs, copied out of the layers (the worker never touches them)."""
        registered = self.registered_layer()
        if registered is None:
            raise ValueError("choose a registered layer (run the Registration panel first).")
        folder = self.folder_edit.text().strip()
        if not folder:
            raise ValueError("choose an output folder.")
        items = self.chosen_items()
        if not items:
            raise ValueError("tick at least one thing to write.")
        registration = RegisteredLayer.from_layer(registered)
        displacement = np.array(registration.displacement, dtype=np.float32, copy=True)
        registered_seq = sequence_from_layer_fields(registered.data, name=registered.name, scale=registered.scale,
                                                    metadata=registered.metadata, jsonable_only=True)
        source = self.source_layer()
        raw_seq = None
        input_path = None
        if source is not None:
            raw_seq = sequence_from_layer_fields(source.data, name=source.name, scale=source.scale,
                                                 metadata=source.metadata, jsonable_only=True)
            input_path = source.metadata.get("source") or getattr(getattr(source, "source", None), "path", None)
        landmarks = None
        if "landmarks" in items:
            from .landmarks import points_to_table

            landmarks = points_to_table(self.points_layer(), source if source is not None else registered)
        labels = None
        if "dice" in items:
            labels = np.array(self.labels_layer().data, copy=True)
        t1_maps = gather_t1_maps(self.viewer, {"raw": source, "registered": registered}, tuple(registered.data.shape[1:])) \
            if set(MAP_ITEMS) & set(items) else None
        return {
            "folder": Path(folder).expanduser(),
            "registered": registered_seq,
            "displacement": displacement,
            "raw": raw_seq,
            "items": items,
            "info": dict(registration.summary),
            "template": None if registration.template is None else np.array(registration.template, np.float32),
            "correspondence": None if registration.correspondence is None else np.array(registration.correspondence, np.float32),
            "displacement_sd": None if registration.displacement_sd is None or "uncertainty" not in items
            else np.array(registration.displacement_sd, np.float32),
            "landmarks": landmarks,
            "labels": labels,
            "t1_maps": t1_maps,
            "segments": self.segments() if "report" in items else None,
            "input_path": input_path,
            "report_format": str(self.format_combo.currentData()),
            "overwrite": self.overwrite_check.isChecked(),
        }

    def export(self) -> bool:
        """Start the export in a worker; returns ``True`` if it started (problems are notified)."""
        if self.worker is not None:
            return False
        try:
            job = self._gather()
        except Exception as exc:
            self.report_error(f"Cannot export: {exc}", exc)
            return False
        self.last_result = None
        self._skipped = {item: why for item, why in self.missing_inputs().items() if self._wanted[item]}
        return self.start_job(lambda work: _run_export(job, work), description="Export",
                              activity=f"Export to {job['folder'].name}", on_result=self._on_exported,
                              message=f"Exporting {', '.join(job['items'])} to {job['folder']}…",
                              error_prefix="Export failed, nothing was written", drop_when_cancelled=False)

    def on_running_changed(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self._update_available()

    def _on_exported(self, result: ExportResult) -> None:
        self.last_result = result
        self.progress_bar.setValue(100)
        text = result.summary()
        if result.tre is not None:
            text += f". TRE overall {result.tre.before['overall']:.2f} → {result.tre.after['overall']:.2f} mm"
        skipped = getattr(self, "_skipped", {})
        if skipped:
            text += ". Not written: " + "; ".join(f"{item} ({why})" for item, why in skipped.items())
        self.set_status(text[0].upper() + text[1:] + ".")
        show_info(f"Exported {len(result.files)} files to {result.folder}.")


def _run_export(job: dict[str, Any], work: Any) -> ExportResult:
    """Worker-thread body: the export (``work``: the dock's :class:`~._base.Job`).

    Cancel is honoured at the export's next progress report: the export stops there and, being
    all or nothing, leaves no file behind.
    """
    job = dict(job)
    folder = job.pop("folder")
    registered = job.pop("registered")
    displacement = job.pop("displacement")

    def progress(fraction: float, message: str) -> None:
        work.check()
        work.progress(fraction, f"Exporting: {message}…" if message else "")

    return export_registration(folder, registered, displacement, progress=progress, **job)
