"""The "Batch" dock: register a cohort (a folder of series) and show its summary.

The napari face of ``any2reg batch``: the series under an input folder are found by
:func:`napari_any2reg.pipeline.cohort.discover` and run by
:func:`napari_any2reg.pipeline.batch.run_batch` (a local Dask cluster; finished series of an
earlier run with the same settings are skipped) in a worker of :class:`~._base.WorkerDock`. Each
series' row appears in the table as it finishes; Cancel stops after the series being run (the
summary of what finished is still written). When the cohort is done the table shows
``summary.csv`` and "Open summary" opens the QC page (``summary.html``); double-clicking a
finished row opens its registered stack in the viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QUrl
from qtpy.QtGui import QBrush, QColor, QDesktopServices
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..core.device import DEVICE_CHOICES
from ._base import WorkerDock
from ._dock import compact_combos, scroll_body
from ._engine_options import EngineOptionsForm

if TYPE_CHECKING:
    import napari

__all__ = ["BatchWidget", "TABLE_COLUMNS"]

#: Columns of the table: (row key, header).
TABLE_COLUMNS = (("series", "series"), ("this_run", "this run"), ("status", "status"),
                 ("alignment_before", "align. before"), ("alignment_after", "align. after"),
                 ("folding_percent", "folding %"), ("error", "error"))

_FAILED = QColor(160, 40, 40)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class BatchWidget(WorkerDock):
    """Dock running a cohort through :func:`~napari_any2reg.pipeline.batch.run_batch`.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_report: Any = None
        self.rows: dict[str, dict[str, Any]] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.input_edit, input_row = self._folder_row("folder of series (TIFF, NIfTI, DICOM; searched recursively)",
                                                      "Cohort folder")
        form.addRow("Input", input_row)
        self.output_edit, output_row = self._folder_row("output folder (one sub-folder per series + summary)",
                                                        "Output folder")
        form.addRow("Output", output_row)
        # the Registration dock's engine section: every option of the registry, one code path
        self.options_form = EngineOptionsForm()
        self.engine_combo = self.options_form.engine_combo
        self.iterations_spin = self.options_form.iterations_spin
        form.addRow(self.options_form)
        self.device_combo = QComboBox()
        for name in DEVICE_CHOICES:
            self.device_combo.addItem(name, name)
        form.addRow("Device", self.device_combo)
        self.jobs_spin = QSpinBox()
        self.jobs_spin.setRange(1, 64)
        self.jobs_spin.setValue(1)
        self.jobs_spin.setToolTip("Series registered at once (worker processes of the local cluster).")
        form.addRow("Parallel series", self.jobs_spin)
        self.fit_check = QCheckBox("Fit T1 before and after (series with timings)")
        form.addRow("", self.fit_check)
        self.overwrite_check = QCheckBox("Redo finished series")
        self.overwrite_check.setToolTip("Without it, series finished by an earlier run with these settings are skipped.")
        form.addRow("", self.overwrite_check)

        self.run_button = QPushButton("Run cohort")
        self.run_button.clicked.connect(lambda *_: self.run())
        self.open_button = QPushButton("Open summary")
        self.open_button.setToolTip("Open summary.html (QC page of the cohort) in the web browser.")
        self.open_button.clicked.connect(lambda *_: self.open_summary())
        self.make_progress_controls()
        self.cancel_button.setToolTip("Stop after the series now running; the summary of the finished ones is written.")

        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([header for _, header in TABLE_COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.cellDoubleClicked.connect(lambda row, column: self.open_series(row))
        self.table.setMinimumHeight(160)

        self.dock_body(scroll_body(self), form, actions=(self.run_button, self.open_button), after=self.table)
        self._inputs = (self.input_edit, self.output_edit, self.device_combo, self.jobs_spin, self.fit_check, self.overwrite_check)
        self.on_running_changed(False)
        self.set_status("Choose a folder of series and an output folder.")
        compact_combos(self)

    def _folder_row(self, placeholder: str, title: str) -> tuple[QLineEdit, QHBoxLayout]:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        browse = QPushButton("Browse…")

        def choose() -> None:
            folder = QFileDialog.getExistingDirectory(self, title, edit.text())
            if folder:
                edit.setText(folder)

        browse.clicked.connect(lambda *_: choose())
        edit.textChanged.connect(lambda *_: self.on_running_changed(self.worker is not None))
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(browse)
        return edit, row

    # ------------------------------------------------------------------ state
    def on_running_changed(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self.options_form.set_running(running)
        ready = bool(self.input_edit.text().strip() and self.output_edit.text().strip())
        self.run_button.setEnabled(not running and ready)
        self.open_button.setEnabled(not running and self.summary_path() is not None)

    def summary_path(self) -> Path | None:
        """``summary.html`` of the output folder (``summary.csv`` without a QC page), if written."""
        text = self.output_edit.text().strip() if hasattr(self, "output_edit") else ""
        if not text:
            return None
        for name in ("summary.html", "summary.csv"):
            path = Path(text).expanduser() / name
            if path.is_file():
                return path
        return None

    def settings(self) -> Any:
        """The :class:`~napari_any2reg.pipeline.batch.BatchSettings` the controls describe."""
        from ..pipeline.batch import BatchSettings
        from ..pipeline.series import RegisterSettings

        register = RegisterSettings(engine=self.options_form.engine(), device=str(self.device_combo.currentData()),
                                    engine_options=self.options_form.options())
        return BatchSettings(register=register, fit=self.fit_check.isChecked(), overwrite=self.overwrite_check.isChecked())

    # ------------------------------------------------------------------ run
    def run(self) -> bool:
        """Find the series and run the cohort in a worker; ``True`` if it started (problems are shown)."""
        if self.worker is not None:
            return False
        from ..pipeline.batch import run_batch
        from ..pipeline.cohort import discover

        try:
            source = self.input_edit.text().strip()
            out = self.output_edit.text().strip()
            if not source or not out:
                raise ValueError("choose an input folder and an output folder.")
            source_path, outdir = Path(source).expanduser(), Path(out).expanduser()
            if not source_path.exists():
                raise ValueError(f"{source_path} does not exist.")
            settings = self.settings()
            jobs = discover([source_path], exclude=[outdir])
            if not jobs:
                raise ValueError(f"no series found in {source_path}; it needs TIFF/NIfTI files or DICOM images.")
        except Exception as exc:
            self.report_error(f"Cannot run the cohort: {exc}", exc)
            return False
        n_jobs = int(self.jobs_spin.value())
        self.rows = {job.name: {"series": job.name, "status": "pending", "this_run": "pending"} for job in jobs}
        self._fill_table()

        def work(job: Any) -> Any:
            def on_result(row: dict[str, Any], done: int, total: int) -> None:
                job.publish(dict(row))
                job.progress(done / total, f"{done}/{total}: {row.get('series')} {row.get('this_run')}")
                job.check()  # Cancel: stop here (run_batch closes its cluster and writes the summary)

            job.progress(0.0, f"starting {min(n_jobs, len(jobs))} worker(s) for {len(jobs)} series")
            return run_batch(jobs, outdir, settings, n_jobs=n_jobs, on_result=on_result)

        return self.start_job(work, description="Batch", activity=f"Cohort of {len(jobs)} series",
                              message=f"Running {len(jobs)} series into {outdir}…",
                              on_data=self._on_row, on_result=self._on_report, on_finished=self._after,
                              drop_when_cancelled=False)

    def _on_row(self, row: dict[str, Any]) -> None:
        self.rows[str(row.get("series"))] = row
        self._fill_table()

    def _on_report(self, report: Any) -> None:
        self.last_report = report
        for row in report.rows:
            self.rows[str(row.get("series"))] = row
        self._fill_table()
        self.set_status(report.line()[0].upper() + report.line()[1:] + ".")

    def _after(self) -> None:
        self.on_running_changed(False)

    def _fill_table(self) -> None:
        rows = list(self.rows.values())
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            failed = row.get("status") == "failed"
            for c, (key, _) in enumerate(TABLE_COLUMNS):
                item = QTableWidgetItem(_cell(row.get(key)))
                if failed:
                    item.setBackground(QBrush(_FAILED))
                    item.setForeground(QBrush(QColor("white")))
                    item.setToolTip(str(row.get("error", "")))
                self.table.setItem(r, c, item)

    def row_texts(self) -> list[dict[str, str]]:
        """The table as shown: one ``{column key: text}`` per series."""
        return [{key: self.table.item(r, c).text() for c, (key, _) in enumerate(TABLE_COLUMNS)}
                for r in range(self.table.rowCount())]

    # ------------------------------------------------------------------ results
    def open_summary(self) -> bool:
        """Open the cohort's summary page in the web browser (``False`` when not written yet)."""
        path = self.summary_path()
        if path is None:
            self.report_error("No summary yet: run the cohort first.")
            return False
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))

    def open_series(self, index: int) -> list[Any]:
        """Open the registered stack of the ``index``-th series in the viewer (its output folder)."""
        rows = list(self.rows.values())
        if not 0 <= index < len(rows) or rows[index].get("status") != "ok" or not rows[index].get("output"):
            return []
        folder = Path(rows[index]["output"])
        stacks = sorted(folder.glob("registered.*"))
        if not stacks:
            self.report_error(f"No registered stack in {folder}.")
            return []
        return self.viewer.open(str(stacks[0]), plugin="napari-any2reg")
