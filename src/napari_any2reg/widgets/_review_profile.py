"""The Review dock's profile section: one pixel's intensity across frames, raw vs registered."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from ._plots import LazyFigure, ShowsPlot

__all__ = ["ProfileSection"]


class ProfileSection(ShowsPlot, QWidget):
    """Radius control and a matplotlib plot of a temporal profile (made at the first plot)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.profile_radius_spin = QSpinBox()
        self.profile_radius_spin.setRange(0, 5)
        self.profile_radius_spin.setValue(0)
        self.profile_radius_spin.setToolTip("Average a (2r+1)² neighbourhood (0: the pixel alone).")
        form = QFormLayout()
        form.addRow("Radius (px)", self.profile_radius_spin)
        hint = QLabel("Double-click a pixel in the viewer to plot it across frames.")
        hint.setWordWrap(True)
        self.plot_area = LazyFigure((4.0, 2.8), 200)  # matplotlib only once a profile is drawn
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addLayout(form)
        layout.addWidget(self.plot_area, 1)

    def radius(self) -> int:
        return int(self.profile_radius_spin.value())

    def plot(self, y: float, x: float, raw: np.ndarray, registered: np.ndarray, timings: Any) -> dict[str, Any]:
        """Plot the two curves against the timings (else the frame index); returns what was plotted."""
        n = len(raw)
        if timings is not None and len(timings) == n and np.all(np.isfinite(np.asarray(timings, float))):
            t, label = np.asarray(timings, float), "time (ms)"
        else:
            t, label = np.arange(n, dtype=float), "frame"
        order = np.argsort(t, kind="stable")
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        ax.plot(t[order], raw[order], "o--", color="0.55", label="raw")
        ax.plot(t[order], registered[order], "o-", color="tab:orange", label="registered")
        ax.set_xlabel(label)
        ax.set_ylabel("intensity")
        ax.set_title(f"pixel (y={int(round(y))}, x={int(round(x))})", fontsize=9)
        ax.legend(fontsize=8)
        self.plot_area.draw_idle()
        return {"y": int(round(y)), "x": int(round(x)), "raw": raw, "registered": registered, "t": t}
