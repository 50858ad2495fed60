"""The AHA 16-segment bullseye (matplotlib ``Figure``, no pyplot: safe in worker threads; no files).

Standard layout (Cerqueira et al. 2002): basal ring outside, mid ring, apical disc inside;
anterior at the top, septum on the left, lateral wall on the right. The segments of the slice's
level are filled with their value on a colour scale (colour bar with the map's unit); the others
are drawn empty. :func:`bullseye_figure` returns the figure, :func:`figure_rgba` its pixels;
``pipeline.segments`` writes the PNG.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .segments import LEVEL_SEGMENTS

__all__ = ["bullseye_figure", "draw_bullseye", "figure_rgba", "segment_wedges"]

# ring radii (outer, inner) of each level
_RINGS = {"basal": (1.0, 0.7), "mid": (0.7, 0.4), "apical": (0.4, 0.1)}


def segment_wedges() -> dict[int, tuple[float, float, float, float]]:
    """``{segment: (theta1_deg, theta2_deg, r_outer, r_inner)}`` in the plot's angles
    (counter-clockwise from the right, 90 = top = anterior, 180 = left = septum)."""
    wedges = {}
    for level in ("basal", "mid"):
        outer, inner = _RINGS[level]
        for k, number in enumerate(LEVEL_SEGMENTS[level]):
            # 1 anterior centred on the top, then anteroseptal, inferoseptal ... counter-clockwise
            centre = 90.0 + 60.0 * k
            wedges[number] = (centre - 30.0, centre + 30.0, outer, inner)
    outer, inner = _RINGS["apical"]
    for k, number in enumerate(LEVEL_SEGMENTS["apical"]):
        centre = 90.0 + 90.0 * k  # 13 anterior top, 14 septal left, 15 inferior bottom, 16 lateral right
        wedges[number] = (centre - 45.0, centre + 45.0, outer, inner)
    return wedges


def draw_bullseye(axes: Any, values: Mapping[int, float | None], *, limits: tuple[float, float] | None = None,
                  cmap: str = "viridis", fontsize: float = 6.5) -> Any:
    """Draw the 16 segments into ``axes``; returns the ``ScalarMappable`` for a colour bar.

    ``values`` maps a segment to its value (filled); ``None`` / NaN: hatched (no valid pixel);
    segments not in ``values`` (other levels) are drawn empty.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Wedge

    finite = [float(v) for v in values.values() if v is not None and np.isfinite(v)]
    if limits is None:
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 1.0, hi + 1.0
    else:
        lo, hi = (float(v) for v in limits)
    norm = Normalize(lo, hi)
    colours = colormaps[cmap]
    for number, (t1, t2, r_out, r_in) in segment_wedges().items():
        value = values.get(number)
        filled = value is not None and np.isfinite(value)
        face = colours(norm(value)) if filled else ("white" if number not in values else "0.85")
        axes.add_patch(Wedge((0, 0), r_out, t1, t2, width=r_out - r_in, facecolor=face, edgecolor="black",
                             linewidth=0.8, hatch=None if filled or number not in values else "//"))
        middle = np.radians((t1 + t2) / 2.0)
        radius = (r_out + r_in) / 2.0
        text = str(number) if not filled else f"{number}\n{value:.0f}" if abs(value) >= 100 else f"{number}\n{value:.3g}"
        shade = colours(norm(value)) if filled else (1, 1, 1, 1)
        dark = filled and (0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]) < 0.5
        axes.text(radius * np.cos(middle), radius * np.sin(middle), text, ha="center", va="center",
                  fontsize=fontsize, color="white" if dark else "black")
    axes.set_xlim(-1.05, 1.05)
    axes.set_ylim(-1.05, 1.05)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.text(0, 1.02, "anterior", ha="center", va="bottom", fontsize=fontsize - 0.5)
    axes.text(-1.04, 0, "septal", ha="right", va="center", fontsize=fontsize - 0.5, rotation=90)
    axes.text(1.04, 0, "lateral", ha="left", va="center", fontsize=fontsize - 0.5, rotation=270)
    return ScalarMappable(norm=norm, cmap=colours)


def bullseye_figure(values: Mapping[int, float | None], *, quantity: str = "T1", unit: str = "ms",
                    level: str | None = None, limits: tuple[float, float] | None = None,
                    cmap: str = "viridis", title: str | None = None, figure: Any = None) -> Any:
    """Draw the 16-segment bullseye.

    Parameters
    ----------
    values : mapping segment -> value
        The segments to fill (e.g. the mean of each segment of the slice's level); ``None`` or
        NaN values are drawn hatched (no valid pixel).
    quantity, unit : str
        For the colour bar label, e.g. ``"synthetic ECV"``, ``"%"``.
    level : str, optional
        Named in the title.
    limits : (low, high), optional
        Colour scale; default: the range of the values.
    figure : matplotlib Figure, optional
        Draw into this figure (cleared), e.g. a dock's canvas figure; default: a new one.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.6), dpi=100) if figure is None else figure
    fig.clear()
    axes = fig.add_axes([0.02, 0.05, 0.72, 0.85])
    mappable = draw_bullseye(axes, values, limits=limits, cmap=cmap)
    colour_axes = fig.add_axes([0.80, 0.15, 0.04, 0.65])
    bar = fig.colorbar(mappable, cax=colour_axes)
    bar.set_label(f"{quantity} ({unit})" if unit else quantity, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    heading = title or f"AHA segments: {quantity}" + (f", {level} slice" if level else "")
    fig.suptitle(heading, fontsize=8)
    return fig


def figure_rgba(figure: Any) -> np.ndarray:
    """The figure rendered by Agg as ``uint8 (H, W, 4)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()

