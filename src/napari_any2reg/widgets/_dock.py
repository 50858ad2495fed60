"""Layout helpers shared by the dock panels: a scrollable body, tabbed docking, frame label.

* :func:`scroll_body` puts a panel's controls in a :class:`QScrollArea`, so a panel's minimum
  height is a few lines, not the height of all its controls: five panels docked together still
  fit a 1280x800 screen (each scrolls instead of forcing the window taller).
* Once docked, a panel joins the other Any2Reg panels of the same dock area as a **tab**
  (:func:`tabify_panel`, napari's ``add_dock_widget(..., tabify=True)`` does the same for the
  first one), so the docks do not stack up.
* :func:`install_frame_label` shows "frame k / N · TI t ms" of the frame on screen in the
  viewer's text overlay (napari's slider only shows the index).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget

__all__ = ["compact_combos", "scroll_body", "tabify_panel", "shorten_tab_title", "dock_of", "install_frame_label",
           "frame_label_text",
           "text_overlay", "visible_world_rect", "fit_view_to", "LEGEND_KEY", "set_legend", "show_colorbar",
           "legend_text", "legend_lines", "adopt_world_units"]

#: Live panels (weak), so a newly docked panel finds the others to tab with.
_PANELS: "weakref.WeakSet[QWidget]" = weakref.WeakSet()

#: Viewers whose text overlay already shows the frame label.
_LABELLED: list["weakref.ref[Any]"] = []


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically only: as wide as the controls need, as short as a few lines."""

    #: Minimum height of a panel (px): a couple of rows; the rest scrolls.
    MIN_HEIGHT = 120

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 (Qt name)
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        # the controls changed (a combo filled, a label rewritten): the dock re-reads our hints
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def _width(self) -> int:
        body = self.widget()
        width = body.minimumSizeHint().width() if body is not None else 0
        bar = max(self.verticalScrollBar().sizeHint().width(), self.style().pixelMetric(
            self.style().PixelMetric.PM_ScrollBarExtent))
        return width + bar + 2 * self.frameWidth() + 2

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        return QSize(self._width(), self.MIN_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        body = self.widget()
        height = body.sizeHint().height() + 2 * self.frameWidth() + 4 if body is not None else self.MIN_HEIGHT
        return QSize(self._width(), max(height, self.MIN_HEIGHT))


def scroll_body(panel: QWidget) -> QWidget:
    """Fill ``panel`` with a frameless scroll area and return the widget to lay controls on.

    Also schedules :func:`tabify_panel` for when the panel has been docked.
    """
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _VerticalScrollArea(panel)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setFrameShape(QFrame.Shape.NoFrame)
    body = QWidget()
    area.setWidget(body)
    outer.addWidget(area)
    panel.scroll_area = area
    _PANELS.add(panel)
    ref = weakref.ref(panel)
    QTimer.singleShot(0, lambda: _tabify_later(ref))
    return body


def compact_combos(panel: QWidget, characters: int = 16) -> None:
    """Let the panel's combo boxes be narrower than their longest item (it shows in the popup),
    so a long layer or model name does not make the dock wider than a small screen allows."""
    for combo in panel.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(characters)


#: How long a new panel waits to be docked before it gives up on tabbing (tries x interval).
_TABIFY_TRIES, _TABIFY_INTERVAL_MS = 40, 25


def _tabify_later(ref: "weakref.ref[QWidget]", tries: int = _TABIFY_TRIES) -> None:
    panel = ref()
    if panel is None:
        return
    try:
        if dock_of(panel) is None:
            # Not docked yet: a panel whose constructor lets the event loop run (a review that
            # starts at once on an existing registration) sees this timer fire before napari
            # has put it in its dock. Try again shortly rather than leave it untabbed.
            if tries > 0:
                QTimer.singleShot(_TABIFY_INTERVAL_MS, lambda: _tabify_later(ref, tries - 1))
            return
        shorten_tab_title(panel)
        tabify_panel(panel)
    except RuntimeError:  # the Qt side was deleted before the timer fired
        pass


def shorten_tab_title(panel: QWidget) -> str | None:
    """Drop napari's ``" (napari-any2reg)"`` from the dock's tab text ("Registration", not
    "Registration (n…" when five tabs share a 1280 px window); the dock's own title bar keeps
    the full name. Returns the new title (``None``: not docked)."""
    dock = dock_of(panel)
    if dock is None:
        return None
    title = dock.windowTitle()
    short = title.rsplit(" (", 1)[0] if title.endswith(")") else title
    if short and short != title:
        dock.setWindowTitle(short)
    return short


def dock_of(widget: QWidget) -> QDockWidget | None:
    """The dock widget holding ``widget`` (``None`` when it is not docked)."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def tabify_panel(panel: QWidget) -> bool:
    """Put ``panel``'s dock in a tab beside another Any2Reg panel's dock in the same area.

    Returns ``True`` if it was tabified (``False``: not docked, floating, or alone).
    """
    dock = dock_of(panel)
    if dock is None or dock.isFloating():
        return False
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow):
        return False
    area = window.dockWidgetArea(dock)
    for other in list(_PANELS):
        if other is panel:
            continue
        try:
            other_dock = dock_of(other)
        except RuntimeError:  # deleted on the Qt side
            continue
        if (other_dock is None or other_dock is dock or other_dock.isFloating()
                or other_dock.parentWidget() is not window or window.dockWidgetArea(other_dock) != area
                or other_dock.isHidden()):
            continue
        if dock in window.tabifiedDockWidgets(other_dock):
            return True
        window.tabifyDockWidget(other_dock, dock)
        dock.show()
        dock.raise_()
        return True
    return False


# ---------------------------------------------------------------------- view
def visible_world_rect(viewer: Any) -> tuple[float, float, float, float]:
    """``(y0, x0, y1, x1)``: the part of the 2-D world the canvas shows now (world units, mm).

    From napari's public camera (``scene.camera``: centre, zoom = canvas pixels per world unit)
    and the canvas size in pixels.
    """
    camera = viewer.scene.camera
    cy, cx = (float(c) for c in camera.center[-2:])
    height, width = (float(v) for v in viewer.canvas.size)
    zoom = float(camera.zoom)
    half_h, half_w = height / (2.0 * zoom), width / (2.0 * zoom)
    return cy - half_h, cx - half_w, cy + half_h, cx + half_w


def fit_view_to(viewer: Any, layers: Any) -> bool:
    """Fit the view (napari's Home button) when part of ``layers`` lies outside what the canvas shows.

    Results placed beside or below their source (registered frames, T1 maps) are otherwise
    off-screen on a small window until the user finds the Home button; a view the user zoomed
    into that already shows the new layers is left as it is. Returns ``True`` when it refitted.
    """
    if viewer.dims.ndisplay != 2:
        return False
    y0, x0, y1, x1 = visible_world_rect(viewer)
    for layer in layers:
        extent = np.asarray(layer.extent.world, dtype=float)[:, -2:]
        # half a pixel of slack: napari's extent runs to the pixel edges, its fit to the centres
        slack = 0.5 * np.abs(np.asarray(layer.scale, dtype=float)[-2:])
        (ly0, lx0), (ly1, lx1) = extent[0] + slack, extent[1] - slack
        if ly0 < y0 or lx0 < x0 or ly1 > y1 or lx1 > x1:
            viewer.reset_view()
            return True
    return False


# ---------------------------------------------------------------------- frame label
#: Short labels of the per-frame timings, by timing name (``T1Model.timing_name``).
_TIMING_LABELS = {"inversion_times_ms": "TI", "saturation_times_ms": "TS", "echo_times_ms": "TE"}


def timing_label(kind: Any) -> str:
    """The short label of a sequence kind's per-frame time: its T1 model's ``timing_name``
    (``TI`` inversion, ``TS`` saturation), ``t`` (trigger time) for kinds without a T1 model.

    The T1 models declare what their times are, so a new model labels its frames without a
    change here.
    """
    from ..core.mapping import T1_MODELS, model_for_kind

    model = model_for_kind(str(kind or ""))
    return _TIMING_LABELS.get(T1_MODELS[model].timing_name, "t") if model is not None else "t"


#: Layer-metadata key of a colour-mapped layer's legend: ``{"quantity": ..., "unit": ...,
#: "note": ...}`` (unit ``""``: dimensionless); the range is read live from the layer.
LEGEND_KEY = "any2reg_legend"

#: Where our colour bars go: the bottom right corner, clear of the frame label (top left),
#: which a 1280 px wide window leaves little room beside.
COLORBAR_POSITION = "bottom_right"


def set_legend(layer: Any, quantity: str, unit: str = "", note: str = "") -> Any:
    """Give ``layer`` the legend the frame label shows (quantity, unit, range, note); returns it."""
    layer.metadata = {**dict(layer.metadata), LEGEND_KEY: {"quantity": quantity, "unit": unit, "note": note}}
    return layer


def show_colorbar(layer: Any, visible: bool = True) -> None:
    """Show (or hide) ``layer``'s napari colour bar, in :data:`COLORBAR_POSITION`."""
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is None:
        return
    colorbar.position = COLORBAR_POSITION
    colorbar.visible = bool(visible)


def _colour_range(layer: Any) -> tuple[float, float] | None:
    for attribute in ("contrast_limits", "edge_contrast_limits"):  # images; shapes / vectors by feature
        limits = getattr(layer, attribute, None)
        if limits is not None:
            try:
                low, high = (float(v) for v in limits)
            except (TypeError, ValueError):
                continue
            return low, high
    return None


def _number(value: float) -> str:
    """3 significant digits, never an exponent a reader has to decode (2000, not 2e+03)."""
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.1e}"


def legend_text(layer: Any) -> str | None:
    """``"det J (no unit): 0.842 – 1.16 · 1 = area kept"``: what a layer's colours mean, or ``None``."""
    legend = (getattr(layer, "metadata", None) or {}).get(LEGEND_KEY)
    if not legend:
        return None
    unit = legend.get("unit") or "no unit"
    text = f"{legend['quantity']} ({unit})"
    limits = _colour_range(layer)
    if limits is not None:
        text += f": {_number(limits[0])} – {_number(limits[1])}"
    if legend.get("note"):
        text += f" · {legend['note']}"
    return text


def legend_lines(viewer: Any, limit: int = 5) -> list[str]:
    """Legends of the visible colour-mapped layers, top layer first, each once (at most ``limit``)."""
    lines: list[str] = []
    for layer in reversed(list(viewer.layers)):
        if not layer.visible:
            continue
        text = legend_text(layer)
        if text is not None and text not in lines:
            lines.append(text)
    return lines[:limit]


def frame_label_text(layer: Any, frame: int) -> str:
    """``"<layer>: frame k / N · TI t ms"`` for a sequence layer (timings from its metadata)."""
    n = int(layer.data.shape[0])
    text = f"{layer.name}: frame {frame} / {n - 1}"
    meta = getattr(layer, "metadata", None) or {}
    timings = meta.get("timings_ms")
    if timings is not None and len(timings) == n:
        t = float(timings[frame])
        label = timing_label(meta.get("any2reg_kind", meta.get("kind")))
        text += f" · {label} " + ("∞ (no preparation)" if math.isinf(t) else f"{t:g} ms")
    return text


def text_overlay(viewer: Any) -> Any:
    """The viewer's text overlay (``viewer.canvas.overlays.text`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and "text" in overlays:
        return overlays["text"]
    return viewer.text_overlay


def adopt_world_units(viewer: Any, layer: Any) -> bool:
    """Give a layer added with napari's default units (pixel) the units of the others (mm).

    Our layers say their scale is in mm; a layer the user adds from napari's layer buttons or
    a plain ``add_labels`` gets "pixel", and napari then warns "Inconsistent units across layers"
    and draws without units. The new layer lies in the same world, so it takes the units of the
    widest other layer with units, axis by axis from the last. Done as the layer is inserted,
    before napari checks at the next draw. Returns ``True`` when it set units.
    """
    units = [str(u) for u in layer.units]
    if any(u != "pixel" for u in units):
        return False
    others = [other for other in viewer.layers if other is not layer and any(str(u) != "pixel" for u in other.units)]
    if not others:
        return False
    widest = max(others, key=lambda other: other.ndim)
    if widest.ndim < layer.ndim:
        return False
    layer.units = tuple(widest.units)[widest.ndim - layer.ndim:]
    return True


#: the frame label's first draw waits this long after its dock is added (see install_frame_label)
FRAME_LABEL_DELAY_MS = 300


def install_frame_label(viewer: Any) -> None:
    """Show the frame and its inversion time in the viewer's text overlay (once per viewer).

    It follows the frame slider and the selected layer (else the top visible sequence). Layers
    added later with napari's default units take ours (:func:`adopt_world_units`).
    """
    global _LABELLED
    _LABELLED = [r for r in _LABELLED if r() is not None]
    if any(r() is viewer for r in _LABELLED):
        return
    from ._pickers import is_sequence_layer

    ref = weakref.ref(viewer)

    def update(event: Any = None) -> None:
        v = ref()
        if v is None:
            return
        overlay = text_overlay(v)
        active = v.layers.selection.active
        layers = [active] if active is not None and is_sequence_layer(active) else []
        layers += [la for la in reversed(list(v.layers)) if is_sequence_layer(la) and la.visible]
        if not layers:
            overlay.visible = False
            return
        layer = layers[0]
        legends = legend_lines(v)
        # the layer's own frame under the slider (napari's dims hold every layer's axes)
        frame = int(round(float(layer.world_to_data(v.dims.point)[0])))
        frame = min(max(frame, 0), int(layer.data.shape[0]) - 1)
        # frame and TI first, then the layer's name on its own line: a narrow canvas cuts a
        # line's end, not what the slider means; then what the visible colours mean
        frame_text = frame_label_text(layer, frame)[len(layer.name) + 2:]
        overlay.text = "\n".join([frame_text, layer.name, *legends])
        overlay.visible = True

    def follow(layer: Any) -> None:
        # a layer's legend range and visibility change after insertion (contrast, eye button)
        for name in ("visible", "contrast_limits", "edge_contrast_limits"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(update)

    for existing in list(viewer.layers):
        follow(existing)
    def units_of_new(event: Any) -> None:
        v = ref()
        if v is not None:
            adopt_world_units(v, event.value)

    viewer.layers.events.inserted.connect(units_of_new)
    viewer.layers.events.inserted.connect(lambda event: follow(event.value))
    viewer.dims.events.current_step.connect(update)
    viewer.layers.events.inserted.connect(update)
    viewer.layers.events.removed.connect(update)
    viewer.layers.selection.events.active.connect(update)
    overlay = text_overlay(viewer)
    overlay.position = "top_left"
    overlay.font_size = 10
    _LABELLED.append(weakref.ref(viewer))
    # Why later: napari's first text overlay renders every glyph on the GUI thread (~300-500 ms
    # here); drawn in the same turn as the new dock's layout the window froze for both. After
    # the dock has been painted, the label costs one shorter stall of its own.
    from qtpy.QtCore import QTimer

    QTimer.singleShot(FRAME_LABEL_DELAY_MS, update)
