"""A matplotlib figure in a dock, made when it is first drawn.

Importing matplotlib's Qt backend takes 0.3-0.4 s on a 2-core machine, on the GUI thread: built
with the dock, it froze the window each time a user opened the first dock with a plot (issue 23's
stall benchmark: "add dock Review" 472 ms). A :class:`LazyFigure` is an empty placeholder until
something reads :attr:`~LazyFigure.figure` (to draw) or, if asked, its tab is first shown, so
opening a dock never imports matplotlib; the first plot of a session pays for it once.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QVBoxLayout, QWidget

__all__ = ["LazyFigure", "ShowsPlot", "import_plotting"]


def import_plotting() -> None:
    """Import matplotlib's figure and Qt canvas modules now (no Qt object is made).

    Called at the start of a worker whose result is plotted (the T1 fit): the import then
    overlaps the fit instead of freezing the window when the result arrives.
    """
    import matplotlib.backends.backend_qtagg  # noqa: F401
    import matplotlib.figure  # noqa: F401


class ShowsPlot:
    """Mixin for a widget with one plot: ``figure`` and ``canvas`` are those of its ``plot_area``
    (a :class:`LazyFigure`, or a section that shows the plot), made on first use."""

    plot_area: Any

    @property
    def figure(self) -> Any:
        """The plot's matplotlib figure (made on first use)."""
        return self.plot_area.figure

    @property
    def canvas(self) -> Any:
        """The plot's Qt canvas (made on first use)."""
        return self.plot_area.canvas


class LazyFigure(QWidget):
    """Placeholder for a ``matplotlib.figure.Figure`` and its Qt canvas.

    Parameters
    ----------
    figsize : (float, float)
        The figure's size in inches (as ``Figure(figsize=...)``).
    min_height : int
        Minimum height of the canvas (and of the placeholder) in pixels.
    tight_layout : bool
    on_created : callable(figure), optional
        Called once the figure exists (e.g. to draw the empty state when the tab is first shown).
    make_when_shown : bool
        Also make the figure when the placeholder is first shown (for a plot on a tab of its own
        whose empty state tells the user what to do; a plot always on screen stays empty until
        drawn, or opening its dock would import matplotlib after all).
    """

    def __init__(self, figsize: tuple[float, float], min_height: int, *, tight_layout: bool = True,
                 on_created: Any = None, make_when_shown: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._figsize, self._min_height, self._tight = figsize, int(min_height), bool(tight_layout)
        self._on_created = on_created
        self._make_when_shown = bool(make_when_shown)
        self._figure: Any = None
        self._canvas: Any = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.setMinimumHeight(self._min_height)

    @property
    def created(self) -> bool:
        """Whether the figure (and matplotlib) has been made."""
        return self._figure is not None

    @property
    def figure(self) -> Any:
        """The ``Figure`` (made now if it was not)."""
        self._ensure()
        return self._figure

    @property
    def canvas(self) -> Any:
        """The ``FigureCanvasQTAgg`` (made now if it was not)."""
        self._ensure()
        return self._canvas

    def draw_idle(self) -> None:
        """Redraw when Qt is idle (nothing to do before the figure exists)."""
        if self._canvas is not None:
            self._canvas.draw_idle()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        # shown on screen (its tab chosen): make it, so an empty state can be drawn
        if self._make_when_shown:
            self._ensure()
        super().showEvent(event)

    def _ensure(self) -> None:
        if self._figure is not None:
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        # (matplotlib takes any tight_layout other than None, False included, as "on")
        self._figure = Figure(figsize=self._figsize, tight_layout=True if self._tight else None)
        self._canvas = FigureCanvasQTAgg(self._figure)
        self._canvas.setMinimumHeight(self._min_height)
        self.layout().addWidget(self._canvas)
        if self._on_created is not None:
            self._on_created(self._figure)
