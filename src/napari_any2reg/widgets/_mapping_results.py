"""The T1 mapping dock's results section: ROI statistics table and R² survival curves."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QTabWidget, QWidget

from ._mapping_helpers import MappingOutcome
from ._plots import LazyFigure, ShowsPlot

__all__ = ["ResultsSection", "ROLES", "format_outcome"]

#: The two inputs the dock compares: (role, label in the UI).
ROLES = (("before", "Raw (before)"), ("after", "Registered (after)"))


class ResultsSection(ShowsPlot, QTabWidget):
    """Two tabs: the ROI statistics of a fit (``stats_table``) and its R² survival plot (``figure``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        headers = ["map", "ROI", "pixels", "T1 mean ± SD (ms)", "fit SD (ms)", "R² > thr", "failed"]
        self.stats_table = QTableWidget(0, len(headers))
        self.stats_table.setHorizontalHeaderLabels(headers)
        self.stats_table.verticalHeader().setVisible(False)
        self.stats_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.stats_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.stats_table.setMinimumHeight(140)
        # matplotlib is imported when the tab is first shown or a fit is drawn, not with the dock
        self._outcome: MappingOutcome | None = None
        self.survival = LazyFigure((4.0, 2.8), 220, on_created=lambda _: self.draw_survival(self._outcome),
                                   make_when_shown=True)
        self.addTab(self.stats_table, "ROI statistics")
        self.addTab(self.survival, "R² survival")
        self.plot_area = self.survival

    def show_outcome(self, outcome: MappingOutcome) -> None:
        self.fill_table(outcome)
        self.draw_survival(outcome)

    def fill_table(self, outcome: MappingOutcome) -> None:
        rows = [(role, row) for role, _ in ROLES for row in outcome.statistics.get(role, [])]
        quantity = next(iter(outcome.results.values())).quantity if outcome.results else "T1"  # T1, T2 or T2*
        self.stats_table.setHorizontalHeaderItem(3, QTableWidgetItem(f"{quantity} mean ± SD (ms)"))
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

    def draw_survival(self, outcome: MappingOutcome | None) -> None:
        self._outcome = outcome
        if outcome is None and not self.survival.created:
            return  # the empty state is drawn when the tab is first shown
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
        self.survival.draw_idle()


def format_outcome(outcome: MappingOutcome) -> str:
    """One-paragraph summary of a fit for the status label."""
    parts = []
    for role, _ in ROLES:
        result = outcome.results.get(role)
        if result is None:
            continue
        # counted where a reader looks (the ROI, else the body): background pixels fail by nature
        region, where = outcome.display.get(role, {}).get("counted", (result.mask, "fitted region"))
        region = np.asarray(region, dtype=bool) & result.mask
        t1 = result.t1_ms[region & np.isfinite(result.t1_ms)]
        q = result.quantity  # T1, T2 or T2*
        median = f"median {q} {np.median(t1):.0f} ms in the {where}" if t1.size else f"no valid {q} in the {where}"
        failed = int((result.failed & region).sum())
        text = (f"{role} ({outcome.sources[role]}): {median}, {failed} of {int(region.sum())} {where} "
                f"pixels failed, {result.seconds:.2f} s")
        note = outcome.exclusion.get(role, "")
        # the registered fit with the outlier exclusion says which frames it used; "no outlier
        # frames" (every frame fitted, as without the option) adds nothing to a full status line
        if note and not note.startswith("no outlier frames"):
            text += f"; {note}"
        parts.append(text)
    device = next(iter(outcome.results.values())).device
    return f"Done: {outcome.model} on {device}. " + "; ".join(parts) + "."
