"""The Review dock's overlays section: deformation grid, arrows, det J, folding, scores,
differences, checkerboard, raw/registered toggle and side-by-side placement.

Each overlay button adds a layer named ``"<registered> <overlay>"`` with the layer's scale and
translate and the frame axis first, so it follows the frame slider; a second click updates the
overlay made before (user layers are never modified). Heavy overlays are built in a task of the
dock (:meth:`~._base.WorkerDock.start_job` with ``main=False``); those made from the review (the
QC maps) wait for it (:meth:`ReviewWidget.compute_review`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from napari.layers import Image, Shapes, Vectors
from napari.utils.colormaps import Colormap
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QHBoxLayout, QPushButton, QSpinBox, QVBoxLayout, QWidget

from ..core import qc
from ..core.spatial import jacobian_determinant
from ._dock import set_legend, show_colorbar
from ._layers import axes_kwargs, beside_translate
from ._pickers import OVERLAY_KEY, same_layer

if TYPE_CHECKING:  # pragma: no cover
    from .review import ReviewWidget, _Pair

__all__ = ["OverlaySection", "OVERLAYS", "OVERLAY_BASE", "IMAGE_OVERLAYS", "JACOBIAN_LIMITS", "FOLDING_COLORMAP",
           "OVERLAY_KEY"]

#: Overlay kind -> suffix of the layer name ("<registered> <suffix>").
OVERLAYS = {
    "grid": "grid",
    "quiver": "quiver",
    "jacobian": "Jacobian",
    "folding": "folding",
    "scores": "scores",
    "difference_before": "difference before",
    "difference_after": "difference after",
    "checkerboard": "checkerboard",
}

#: Widest display range of det J: 1 (volume kept) sits in the middle of the diverging map. The
#: overlay uses ``core.qc.jacobian_display_limits`` (1 ± the 99.5th percentile of |det J - 1|).
JACOBIAN_LIMITS = (0.0, 2.0)

#: The layer each overlay belongs on: the raw frames ("source") or the common grid ("registered").
#: The grid and the arrows show where common-grid points are found in each raw frame; the
#: difference before registration is of the raw frames.
OVERLAY_BASE = {"grid": "source", "quiver": "source", "difference_before": "source"}

#: Image overlays (opaque maps): a new one hides the others on the same layer position.
IMAGE_OVERLAYS = ("jacobian", "folding", "scores", "difference_before", "difference_after", "checkerboard")

#: Folded pixels in a loud colour; everything else transparent.
FOLDING_COLORMAP = Colormap([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]], name="any2reg folding")

_OVERLAY_KEY = OVERLAY_KEY

#: What each overlay's colours mean (quantity, unit, note), shown under the frame label; the
#: range is the layer's own (contrast limits, or the colour limits of the grid and arrows).
OVERLAY_LEGENDS = {
    "grid": ("grid colour |u|", "mm", "plasma"),
    "quiver": ("arrow colour |u|", "mm", "plasma"),
    "jacobian": ("det J", "", "blue shrinks, 1 kept, red grows"),
    "folding": ("folded pixels, det J ≤ 0", "", "magenta"),
    "scores": ("correspondence score", "", "1 = matches the group"),
    "difference_before": ("frame − template", "signal", "before: raw, after: reg."),
    "difference_after": ("frame − template", "signal", "before: raw, after: reg."),
}




class OverlaySection(QWidget):
    """Overlay controls and buttons of the Review dock (``dock``: the :class:`ReviewWidget`)."""

    def __init__(self, dock: "ReviewWidget", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dock = dock
        self._build()

    def _build(self) -> None:
        form = QFormLayout()
        self.grid_spacing_spin = QDoubleSpinBox()
        self.grid_spacing_spin.setRange(0.5, 500.0)
        self.grid_spacing_spin.setDecimals(1)
        self.grid_spacing_spin.setValue(8.0)
        self.grid_unit_combo = QComboBox()
        self.grid_unit_combo.addItem("pixels", "px")
        self.grid_unit_combo.addItem("mm", "mm")
        spacing_row = QHBoxLayout()
        spacing_row.addWidget(self.grid_spacing_spin, 1)
        spacing_row.addWidget(self.grid_unit_combo)
        form.addRow("Grid spacing", spacing_row)
        self.quiver_step_spin = QSpinBox()
        self.quiver_step_spin.setRange(1, 64)
        self.quiver_step_spin.setValue(6)
        self.quiver_step_spin.setSuffix(" px")
        form.addRow("Arrow every", self.quiver_step_spin)
        self.tiles_spin = QSpinBox()
        self.tiles_spin.setRange(2, 32)
        self.tiles_spin.setValue(8)
        form.addRow("Checkerboard tiles", self.tiles_spin)

        buttons = QGridLayout()
        specs = [
            ("grid_button", "Deformation grid", self.show_grid,
             "Common-grid lines where they land in each raw frame (overlay the source), coloured by |u| in mm."),
            ("quiver_button", "Displacement arrows", self.show_quiver,
             "Arrows from common-grid points to where they are found in each raw frame."),
            ("jacobian_button", "Jacobian det", self.show_jacobian,
             "det(I + ∇u): blue compression, red expansion, 1 = volume kept (limits from the data)."),
            ("folding_button", "Folding", self.show_folding, "Pixels with det J ≤ 0 (the transform folds)."),
            ("scores_button", "Correspondence", self.show_scores,
             "Per-frame correspondence score in [0, 1] (high = the pixel matches the group)."),
            ("difference_button", "Difference to template", self.show_differences,
             "Frame minus the intensity-matched template, before and after registration."),
            ("checkerboard_button", "Checkerboard raw/reg.", self.show_checkerboard,
             "Raw and registered frames in alternating tiles."),
            ("toggle_button", "Toggle raw ↔ registered", self.toggle_raw_registered,
             "Show either the source or the registered layer (image overlays are hidden)."),
            ("side_button", "Side by side ↔ on top", self.side_by_side,
             "Put the registered frames beside the raw ones, or back on top of them."),
        ]
        for i, (attr, text, slot, tip) in enumerate(specs):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda *_, fn=slot: fn())
            setattr(self, attr, button)
            buttons.addWidget(button, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addStretch(1)

    # ------------------------------------------------------------------ overlays
    def _overlay(self, kind: str, build: Callable[[_Pair], Any], message: str) -> bool:
        """Build an overlay layer with ``build`` in a worker and add it (or replace our previous one).

        ``build`` gets the pair and returns the layer (made from copies, off the GUI thread);
        it may set ``layer.metadata["status"]`` for the status line.
        """
        try:
            pair = self.dock.pair()
        except Exception as exc:
            self.dock.report_error(f"Could not show the {OVERLAYS[kind]}: {exc}", exc)
            return False

        def done(layer: Any) -> None:
            status = layer.metadata.get("status", "")
            self._put_layer(layer, self.dock.pair(), kind)
            if status:
                self.dock.set_status(status)
            else:
                self.dock.set_status(f"Added {layer.name!r}.")

        placement = self._placement(pair, kind)

        def work(job: Any) -> Any:
            layer = build(pair)
            # placed here, in the worker: each scale / translate set re-slices the whole layer
            # (0.1-0.4 s of GUI time on a busy 2-core machine)
            layer.scale, layer.translate = placement["scale"], placement["translate"]
            return layer

        return self.dock.start_job(work, description=message, on_result=done, main=False,
                                   error_prefix=f"{message} failed")

    def _placement(self, pair: _Pair, kind: str) -> dict[str, np.ndarray]:
        """``scale`` and ``translate`` of an overlay of ``kind`` (copies of its base layer's)."""
        base = self._base_of(pair, kind)
        return {"scale": np.array(base.scale, dtype=float), "translate": np.array(base.translate, dtype=float)}

    def _base_of(self, pair: _Pair, kind: str) -> Image:
        """The layer an overlay of ``kind`` lies on (see :data:`OVERLAY_BASE`)."""
        if OVERLAY_BASE.get(kind) == "source" and pair.source is not None:
            return pair.source
        return pair.registered

    def _put_layer(self, new: Any, pair: _Pair, kind: str) -> Any:
        base = self._base_of(pair, kind)
        new.name = f"{pair.registered.name} {OVERLAYS[kind]}"
        for attribute in ("scale", "translate"):  # set only when it changes: each set re-slices
            if not np.array_equal(np.asarray(getattr(new, attribute)), np.asarray(getattr(base, attribute))):
                setattr(new, attribute, getattr(base, attribute))
        new.metadata = {_OVERLAY_KEY: kind, "review_of": pair.registered.name}
        if kind in OVERLAY_LEGENDS:
            set_legend(new, *OVERLAY_LEGENDS[kind])
        old = self._own_layer(new.name, kind)
        if old is not None:
            index = self.dock.viewer.layers.index(old)
            self.dock.viewer.layers.remove(old)
            self.dock.viewer.layers.insert(index, new)
        else:
            self.dock.viewer.layers.append(new)
        if kind in IMAGE_OVERLAYS:
            self._hide_covered(new, pair)
        return new

    def _overlays_of(self, pair: _Pair) -> list[Any]:
        return [la for la in self.dock.viewer.layers
                if la.metadata.get(_OVERLAY_KEY) and la.metadata.get("review_of") == pair.registered.name]

    def _hide_covered(self, new: Any, pair: _Pair) -> None:
        """Show ``new`` with its colour bar; hide the other image overlays it would pile onto."""
        new.visible = True
        for layer in self._overlays_of(pair):
            if same_layer(layer, new) or layer.metadata.get(_OVERLAY_KEY) not in IMAGE_OVERLAYS:
                continue
            if np.allclose(np.asarray(layer.translate), np.asarray(new.translate)):
                layer.visible = False
                show_colorbar(layer, False)
        show_colorbar(new, new.metadata.get(_OVERLAY_KEY) not in ("folding", "checkerboard"))

    def _own_layer(self, name: str, kind: str) -> Any:
        if name in self.dock.viewer.layers:
            layer = self.dock.viewer.layers[name]
            if layer.metadata.get(_OVERLAY_KEY) == kind:
                return layer
        return None

    def overlay_layer(self, kind: str) -> Any:
        """The overlay of ``kind`` this widget made for the selected layer, or ``None``."""
        layer = self.dock.selected_layer()
        return None if layer is None else self._own_layer(f"{layer.name} {OVERLAYS[kind]}", kind)

    def show_grid(self) -> bool:
        """Add / update the deformation-grid Shapes layer (paths, frame axis first), built in a worker.

        Returns ``True`` when the work started; the layer arrives when it is done (:meth:`busy`).
        """
        spacing = float(self.grid_spacing_spin.value())
        unit = str(self.grid_unit_combo.currentData())

        def build(pair: _Pair) -> Shapes:
            grid = qc.deformation_grid(pair.displacement, spacing, unit=unit, spacing_mm=pair.spacing_mm,
                                       step=qc.grid_vertex_step(pair.displacement.shape[-2:]))
            top = max(float(grid.magnitude_mm.max()), 1e-3)
            layer = Shapes(
                grid.paths,
                ndim=3,
                shape_type="path",
                features={"magnitude_mm": grid.magnitude_mm, "frame": grid.frame,
                          "orientation": grid.orientation},
                edge_color="magnitude_mm",
                edge_colormap="plasma",
                edge_contrast_limits=(0.0, top),
                edge_width=qc.grid_line_width(pair.displacement.shape[-2:]),
                face_color="transparent",
                opacity=0.9,
                **axes_kwargs(3),
            )
            layer.metadata = {"status": f"Grid: {grid.lines_per_frame} lines per frame; colour = |u| 0–{top:.1f} mm "
                                        "(plasma). Lines show where the common grid lands in each raw frame."}
            return layer

        return self._overlay("grid", build, "Building the deformation grid")

    def show_quiver(self) -> bool:
        """Add / update the displacement arrows (Vectors layer, one set per frame), built in a worker.

        Arrows are drawn longer than the true displacement when that is too short to see (the
        factor is in the status line and the layer's ``length``); the data keep the true shift.
        """
        step = float(self.quiver_step_spin.value())

        def build(pair: _Pair) -> Vectors:
            quiver = qc.quiver_vectors(pair.displacement, step, spacing_mm=pair.spacing_mm)
            lengths_px = np.hypot(quiver.vectors[:, 1, 1], quiver.vectors[:, 1, 2])
            factor = qc.arrow_display_scale(lengths_px, step)
            top = max(float(quiver.magnitude_mm.max()), 1e-3)
            layer = Vectors(
                quiver.vectors,
                ndim=3,
                features={"magnitude_mm": quiver.magnitude_mm},
                edge_color="magnitude_mm",
                edge_colormap="plasma",
                edge_contrast_limits=(0.0, top),
                edge_width=qc.grid_line_width(pair.displacement.shape[-2:]),
                length=factor,
                vector_style="arrow",
                **axes_kwargs(3),
            )
            layer.metadata = {"status": f"Arrows drawn {factor:.1f}× their length; colour = |u| 0–{top:.1f} mm (plasma)."}
            return layer

        return self._overlay("quiver", build, "Computing the displacement arrows")

    def _with_review(self, add: Callable[[qc.Review], None]) -> bool:
        """Run ``add(review)`` once the review is there (computed in the worker when needed)."""
        try:
            self.dock.pair()
        except Exception as exc:
            self.dock.report_error(str(exc), exc)
            return False
        return self.dock.compute_review(then=add)

    def _image_overlay(self, kind: str, data_of: Callable[[qc.Review], np.ndarray], **kwargs: Any) -> bool:
        """Add an image overlay made from the review."""

        def add(review: qc.Review) -> None:
            pair = self.dock.pair()
            self._put_layer(Image(np.asarray(data_of(review), dtype=np.float32), **kwargs, **axes_kwargs(3),
                                  **self._placement(pair, kind)), pair, kind)

        return self._with_review(add)

    def show_jacobian(self) -> bool:
        """Add / update det J per frame (diverging, centred at 1, limits from the data), in a worker."""

        def build(pair: _Pair) -> Image:
            det = np.asarray(jacobian_determinant(pair.displacement), dtype=np.float32)
            limits = qc.jacobian_display_limits(det)
            layer = Image(det, colormap="coolwarm", contrast_limits=limits, opacity=0.7, **axes_kwargs(3))
            layer.metadata = {"status": f"det J: blue < 1 (compression), red > 1 (expansion); "
                                        f"limits {limits[0]:.3f}–{limits[1]:.3f}."}
            return layer

        return self._overlay("jacobian", build, "Computing the Jacobian determinant")

    def show_folding(self) -> bool:
        """Add / update the folded pixels (det J ≤ 0) in magenta (from the field alone), in a worker."""

        def build(pair: _Pair) -> Image:
            folded = qc.folding_mask(pair.displacement)
            n = int(folded.reshape(len(folded), -1).any(axis=1).sum())
            layer = Image(folded.astype(np.float32), colormap=FOLDING_COLORMAP, contrast_limits=(0.0, 1.0),
                          **axes_kwargs(3))
            layer.metadata = {"status": f"Folding: {100 * folded.mean():.2f} % of the pixels, in {n} frame(s)."}
            return layer

        return self._overlay("folding", build, "Finding folded pixels")

    def show_scores(self) -> bool:
        """Add / update the per-frame correspondence scores in [0, 1]."""
        return self._image_overlay("scores", lambda r: r.scores, colormap="viridis",
                                   contrast_limits=(0.0, 1.0), opacity=0.6)

    def show_differences(self) -> bool:
        """Add / update the difference to the template, before and after (same limits)."""

        def add(review: qc.Review) -> None:
            pair = self.dock.pair()
            limit = self.dock.difference_limit
            def put(kind: str, data: np.ndarray) -> Any:
                return self._put_layer(Image(data, colormap="coolwarm", contrast_limits=(-limit, limit),
                                             **axes_kwargs(3), **self._placement(pair, kind)), pair, kind)

            before = put("difference_before", review.difference_before)

            def after() -> None:
                put("difference_after", review.difference_after)
                show_colorbar(before, False)  # one scale for both: one bar, not two identical ones
                self.dock.set_status(f"Difference to the template at each frame's contrast, ±{limit:.3g} "
                                     "(blue below, red above); before on the raw frames, after on the registered.")

            # napari needs ~0.2 s of GUI time per new layer: one layer per event-loop turn
            QTimer.singleShot(0, after)

        return self._with_review(add)

    def show_checkerboard(self) -> bool | None:
        """Add / update the raw | registered checkerboard of every frame, built in a worker.

        Returns ``True`` when the work started, ``None`` when the source is missing (reported).
        """
        try:
            pair = self.dock.pair()
            source = self.dock.require_source(pair)
        except Exception as exc:
            self.dock.report_error(f"Could not show the {OVERLAYS['checkerboard']}: {exc}", exc)
            return None
        # copies made here: the worker never touches layer data
        raw, registered = np.array(source.data, copy=True), np.array(pair.registered.data, copy=True)
        limits, tiles = tuple(source.contrast_limits), int(self.tiles_spin.value())

        def build(pair: _Pair) -> Image:
            board = qc.checkerboard(raw, registered, tiles)
            layer = Image(board, colormap="gray", contrast_limits=limits, **axes_kwargs(3))
            layer.metadata = {"status": "Checkerboard: raw and registered frames in alternating tiles."}
            return layer

        return self._overlay("checkerboard", build, "Building the checkerboard") or None

    def toggle_raw_registered(self) -> None:
        """Show the source or the registered layer (one at a time).

        The image overlays of this registration would cover either, so they are hidden (the
        deformation grid and the arrows stay); the status line says how many.
        """
        found = self.dock.pair_and_source()
        if found is None:
            return
        pair, source = found
        show_raw = pair.registered.visible
        source.visible = show_raw
        pair.registered.visible = not show_raw
        hidden = 0
        for layer in self._overlays_of(pair):
            if layer.metadata.get(_OVERLAY_KEY) in IMAGE_OVERLAYS and layer.visible:
                layer.visible = False
                hidden += 1
        shown = source if show_raw else pair.registered
        text = f"Showing {'raw' if show_raw else 'registered'} frames ({shown.name!r})."
        if hidden:
            text += f" {hidden} image overlay(s) hidden."
        self.dock.set_status(text)

    def side_by_side(self, beside: bool | None = None) -> bool:
        """Put the registered layer beside its source (``True``) or on top of it; toggles when ``None``.

        Overlays on the common grid move with the registered layer. Returns the new state.
        """
        found = self.dock.pair_and_source()
        if found is None:
            return False
        pair, source = found
        on_top = np.allclose(np.asarray(pair.registered.translate), np.asarray(source.translate))
        beside = on_top if beside is None else bool(beside)
        target = (beside_translate(source.translate, source.scale, source.data.shape) if beside
                  else np.array(source.translate, dtype=float))
        pair.registered.translate = target
        for layer in self._overlays_of(pair):
            if OVERLAY_BASE.get(layer.metadata.get(_OVERLAY_KEY)) != "source":
                layer.translate = target
        pair.registered.visible = source.visible = True
        self.dock.viewer.reset_view()
        self.dock.set_status("Registered frames beside the raw ones." if beside else "Registered frames on top of the raw ones.")
        return beside
