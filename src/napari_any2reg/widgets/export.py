"""The "Export" dock widget: write a registration and everything around it into a folder.

Thin by design: it gathers the layers — the registered layer (frames, displacement, run summary
in its metadata), its source (raw frames, for QC and the report), optionally a landmarks Points
layer, a Labels layer ``(N, H, W)`` and the T1 / R² / SD maps the T1 mapping panel made — and
calls :func:`napari_any2reg.pipeline.export.export_registration` in a worker thread. What can be
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
from napari.qt.threading import FunctionWorker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
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
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..pipeline.export import EXPORT_ITEMS, MAP_ITEMS, ExportResult, export_registration
from ._dock import compact_combos, scroll_body
from ._layers import sequence_from_layer_fields
from ._pickers import NONE_ITEM, chosen_layer, contains, fill_combo, is_registered_layer
from ._relay import ActivityProgress, ProgressRelay

if TYPE_CHECKING:  # pragma: no cover
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


class ExportWidget(QWidget):
    """Dock widget exporting a registered layer (stack, NIfTI, field, Jacobian, maps, QC, report, record).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self.last_result: ExportResult | None = None
        self.last_error: BaseException | None = None
        self._registered: list[Image] = []
        self._points: list[Points] = []
        self._labels: list[Labels] = []
        self._wanted: dict[str, bool] = {item: True for item in EXPORT_ITEMS}
        # the user chose "(none)" by hand: a single candidate layer is then not picked for them
        self._none_chosen = {"points": False, "labels": False}
        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)
        self.activity: ActivityProgress | None = None
        self._build_ui()
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        self.refresh_layers()
        self.set_status("Choose a registered layer and a folder.")
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.registered_combo = QComboBox()
        self.registered_combo.setToolTip("A registered layer ('<name> registered') made by the Registration panel.")
        self.registered_combo.currentIndexChanged.connect(lambda *_: self._on_choice_changed())
        form.addRow("Registered", self.registered_combo)
        self.source_label = QLabel("—")
        form.addRow("Source", self.source_label)
        self.points_combo = QComboBox()
        self.points_combo.setToolTip("Landmarks (Points layer with a 'name' feature) for landmarks.csv and the TRE.")
        self.points_combo.currentIndexChanged.connect(lambda *_: self._on_choice_changed())
        self.points_combo.activated.connect(lambda index: self._user_chose("points", index))
        form.addRow("Landmarks", self.points_combo)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Labels (N, H, W): a segmentation of every raw frame, for the all-pair Dice.")
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._on_choice_changed())
        self.labels_combo.activated.connect(lambda index: self._user_chose("labels", index))
        form.addRow("Labels", self.labels_combo)

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
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(form)
        layout.addWidget(items_box)
        layout.addLayout(options)
        layout.addWidget(self.export_button)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self._inputs = [self.registered_combo, self.points_combo, self.labels_combo, self.folder_edit,
                        self.browse_button, self.format_combo, self.overwrite_check, *self.item_checks.values()]

    def _browse(self) -> None:  # pragma: no cover - needs a user
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # ------------------------------------------------------------------ layers
    def _on_layers_changed(self, event: Any = None) -> None:
        self.refresh_layers()

    def refresh_layers(self) -> None:
        """Rebuild the pickers (keeping the choices); a new registered layer becomes the choice."""
        registered, points, labels = self.registered_layer(), self.points_layer(), self.labels_layer()
        layers = list(self.viewer.layers)
        self._registered = [la for la in layers if is_registered_layer(la)]
        self._points = [la for la in layers if isinstance(la, Points) and la.ndim == 3 and len(la.data)]
        self._labels = [la for la in layers if isinstance(la, Labels) and la.ndim == 3]
        if registered is None or not contains(self._registered, registered):
            registered = self._registered[-1] if self._registered else None
        if points is not None and not contains(self._points, points):
            points = None
        if labels is not None and not contains(self._labels, labels):
            labels = None
        # exactly one suitable layer: pick it (a "(none)" would silently drop landmarks / Dice)
        if points is None and len(self._points) == 1 and not self._none_chosen["points"]:
            points = self._points[0]
        if labels is None and len(self._labels) == 1 and not self._none_chosen["labels"]:
            labels = self._labels[0]
        fill_combo(self.registered_combo, self._registered, registered, none=False)
        fill_combo(self.points_combo, self._points, points, none=True)
        fill_combo(self.labels_combo, self._labels, labels, none=True)
        self._update_available()

    def _on_choice_changed(self) -> None:
        if self.worker is None and self.progress_bar.value():
            # the last export's bar and message do not describe the new choice
            self.progress_bar.setValue(0)
            self.set_status("Choose what to write and a folder.")
        self._update_available()

    def _user_chose(self, which: str, index: int) -> None:
        self._none_chosen[which] = index == 0

    def registered_layer(self) -> Image | None:
        return chosen_layer(self.registered_combo, getattr(self, "_registered", []), none=False)

    def points_layer(self) -> Points | None:
        return chosen_layer(self.points_combo, getattr(self, "_points", []), none=True)

    def labels_layer(self) -> Labels | None:
        return chosen_layer(self.labels_combo, getattr(self, "_labels", []), none=True)

    def select(self, *, registered: Any = None, points: Any = None, labels: Any = None) -> None:
        """Choose layers (layers or names) as a user would; ``None`` leaves a choice unchanged.

        The string ``"(none)"`` chooses no landmarks / labels.
        """
        for which, combo, layer in (("registered", self.registered_combo, registered), ("points", self.points_combo, points),
                                    ("labels", self.labels_combo, labels)):
            if layer is None:
                continue
            name = getattr(layer, "name", layer)
            index = 0 if name == NONE_ITEM and which != "registered" else combo.findData(name)
            if index < 0:
                raise ValueError(f"{name!r} is not offered by this picker.")
            combo.setCurrentIndex(index)
            if which != "registered":
                self._none_chosen[which] = index == 0

    def source_layer(self) -> Image | None:
        """The raw sequence the chosen registered layer came from (by its ``source_layer`` name)."""
        registered = self.registered_layer()
        if registered is None:
            return None
        name = registered.metadata.get("source_layer")
        if name is None or name not in self.viewer.layers:
            return None
        source = self.viewer.layers[name]
        if isinstance(source, Image) and tuple(source.data.shape) == tuple(registered.data.shape):
            return source
        return None

    def missing_inputs(self) -> dict[str, str]:
        """Items that cannot be written now, and why."""
        registered, source = self.registered_layer(), self.source_layer()
        missing: dict[str, str] = {}
        if registered is None:
            return {item: "no registered layer" for item in EXPORT_ITEMS}
        if source is None:
            why = f"the source layer {registered.metadata.get('source_layer', '?')!r} is not open"
            missing["qc"] = missing["report"] = why
        shape = tuple(registered.data.shape[1:])
        if not gather_t1_maps(self.viewer, {"raw": source, "registered": registered}, shape):
            missing.update(dict.fromkeys(MAP_ITEMS, "no T1 maps: run the T1 mapping panel first"))
        if self.points_layer() is None:
            missing["landmarks"] = "choose a landmarks Points layer"
        labels = self.labels_layer()
        if labels is None or tuple(labels.data.shape) != tuple(registered.data.shape):
            missing["dice"] = "choose a Labels layer with a segmentation of every frame (N, H, W)"
        return missing

    def _update_available(self) -> None:
        source = self.source_layer()
        registered = self.registered_layer()
        if registered is None:
            self.source_label.setText("—")
        else:
            self.source_label.setText(source.name if source is not None else
                                      f"{registered.metadata.get('source_layer', '?')!r} not open (QC and report need it)")
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

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

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
        meta = registered.metadata
        displacement = np.array(meta["displacement"], dtype=np.float32, copy=True)
        registered_seq = sequence_from_layer_fields(registered.data, name=registered.name, scale=registered.scale,
                                                    metadata=meta, jsonable_only=True)
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
            "info": dict(meta.get("any2reg_result") or {}),
            "template": None if meta.get("template") is None else np.array(meta["template"], np.float32),
            "correspondence": None if meta.get("correspondence") is None else np.array(meta["correspondence"], np.float32),
            "landmarks": landmarks,
            "labels": labels,
            "t1_maps": t1_maps,
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
            self._report(f"Cannot export: {exc}", exc)
            return False
        self.last_result = None
        self.last_error = None
        self._skipped = {item: why for item, why in self.missing_inputs().items() if self._wanted[item]}
        worker = FunctionWorker(_run_export, job, self._relay)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_running(True)
        self.progress_bar.setValue(0)
        self.set_status(f"Exporting {', '.join(job['items'])} to {job['folder']}…")
        self.activity = ActivityProgress(f"Export to {job['folder'].name}")
        worker.start()
        return True

    def _set_running(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self._update_available()

    def _on_progress(self, fraction: float, message: str) -> None:
        if self.worker is not None:
            self.progress_bar.setValue(int(round(100 * min(max(fraction, 0.0), 1.0))))
            if message:
                self.set_status(f"Exporting: {message}…")
            if self.activity is not None:  # last: napari's bar may process events
                self.activity.set(fraction, message)

    def _on_returned(self, outcome: tuple[ExportResult | None, BaseException | None]) -> None:
        result, error = outcome
        if error is not None:
            self._report(f"Export failed, nothing was written: {error}", error)
            return
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

    def _on_finished(self) -> None:
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        self.worker = None
        self._set_running(False)

    def _report(self, message: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.last_error = exc
        self.set_status(message)
        show_error(message)


def _run_export(job: dict[str, Any], relay: ProgressRelay) -> tuple[ExportResult | None, BaseException | None]:
    """Worker-thread body: the export, with errors handed back to the GUI thread."""
    job = dict(job)
    folder = job.pop("folder")
    registered = job.pop("registered")
    displacement = job.pop("displacement")
    try:
        result = export_registration(folder, registered, displacement,
                                     progress=lambda f, m: relay.progress.emit(float(f), str(m)), **job)
    except Exception as exc:  # shown in the GUI thread
        return None, exc
    return result, None


# ====================================================================== small helpers
