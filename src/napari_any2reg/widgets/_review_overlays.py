"""The Review dock's overlays section: one button per entry of the overlay registry
(:data:`napari_any2reg.core.overlays.OVERLAYS`: grid, arrows, det J, folding, scores,
differences, checkerboard, displacement SD, and any entry a plugin adds), plus the
raw/registered toggle and the side-by-side placement.

Each overlay button adds a layer named ``"<registered> <suffix>"`` with its base layer's scale
and translate and the frame axis first, so it follows the frame slider; a second click updates
the overlay made before (user layers are never modified). The entry's compute function and the
layer builder of its ``kind`` (:data:`LAYER_BUILDERS`) run in a task of the dock
(:meth:`~._base.WorkerDock.start_job` with ``main=False``); entries that need the review maps
wait for it (:meth:`ReviewWidget.compute_review`). An entry whose input is missing (the
displacement SD of a classical engine) has its button disabled with the reason as tool tip.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
from napari.layers import Image, Shapes, Vectors
from napari.utils.colormaps import Colormap
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QHBoxLayout, QPushButton, QSpinBox, QVBoxLayout, QWidget

from ..core import qc
from ..core.overlays import FOLDING_COLOURS, OVERLAYS, Overlay, OverlayData, OverlayInputs, missing_input, overlay_groups
from ._dock import set_legend, show_colorbar
from ._hosts import JobHost
from ._layers import axes_kwargs, beside_translate
from ._pickers import OVERLAY_KEY, same_layer
from ._review_pair import ReviewPair


__all__ = ["OverlaySection", "LAYER_BUILDERS", "JACOBIAN_LIMITS", "FOLDING_COLORMAP", "OVERLAY_KEY", "overlay_suffixes"]

#: Widest display range of det J: 1 (volume kept) sits in the middle of the diverging map. The
#: overlay uses ``core.qc.jacobian_display_limits`` (1 ± the 99.5th percentile of |det J - 1|).
JACOBIAN_LIMITS = (0.0, 2.0)


def _colormap(overlay: Overlay) -> Any:
    """The entry's colour map: a name, or RGBA control points (a mask) as a napari Colormap."""
    if isinstance(overlay.colormap, str):
        return overlay.colormap
    return Colormap([list(c) for c in overlay.colormap], name=f"any2reg {overlay.name}")


#: Folded pixels in a loud colour; everything else transparent.
FOLDING_COLORMAP = Colormap([list(c) for c in FOLDING_COLOURS], name="any2reg folding")


def overlay_suffixes() -> dict[str, str]:
    """Overlay name -> suffix of its layer name (``"<registered> <suffix>"``), from the registry."""
    return {name: overlay.suffix for name, overlay in OVERLAYS.items()}


# ---------------------------------------------------------------------- layer builders
def _image_layer(overlay: Overlay, data: OverlayData, inputs: OverlayInputs) -> Image:
    return Image(np.asarray(data.values, dtype=np.float32), colormap=_colormap(overlay), contrast_limits=data.limits,
                 opacity=overlay.opacity, **axes_kwargs(3))


def _paths_layer(overlay: Overlay, data: OverlayData, inputs: OverlayInputs) -> Shapes:
    grid = data.values
    return Shapes(
        grid.paths,
        ndim=3,
        shape_type="path",
        features={"magnitude_mm": grid.magnitude_mm, "frame": grid.frame, "orientation": grid.orientation},
        edge_color="magnitude_mm",
        edge_colormap=_colormap(overlay),
        edge_contrast_limits=data.limits,
        edge_width=qc.grid_line_width(inputs.displacement.shape[-2:]),
        face_color="transparent",
        opacity=overlay.opacity,
        **axes_kwargs(3),
    )


def _vectors_layer(overlay: Overlay, data: OverlayData, inputs: OverlayInputs) -> Vectors:
    quiver = data.values
    return Vectors(
        quiver.vectors,
        ndim=3,
        features={"magnitude_mm": quiver.magnitude_mm},
        edge_color="magnitude_mm",
        edge_colormap=_colormap(overlay),
        edge_contrast_limits=data.limits,
        edge_width=qc.grid_line_width(inputs.displacement.shape[-2:]),
        length=float(data.hints.get("length", 1.0)),
        vector_style="arrow",
        opacity=overlay.opacity,
        **axes_kwargs(3),
    )


#: Overlay ``kind`` -> the function making its layer (worker side) from the computed overlay.
LAYER_BUILDERS: dict[str, Callable[[Overlay, OverlayData, OverlayInputs], Any]] = {
    "image": _image_layer,
    "paths": _paths_layer,
    "vectors": _vectors_layer,
}


class ReviewOverlayHost(JobHost, Protocol):
    """What the overlay section asks of the Review dock (:class:`~.review.ReviewWidget`)."""

    def selected_layer(self) -> Image | None:
        """The registered layer chosen in the dock."""

    def pair(self) -> "ReviewPair":
        """The chosen registered layer with its registration (raises with the fix if none)."""

    def require_source(self, pair: "ReviewPair") -> Image:
        """The raw source layer of ``pair`` (raises with the fix when it is not open)."""

    def pair_and_source(self) -> "tuple[ReviewPair, Image] | None":
        """Both, or ``None`` (the dock has said why)."""

    def compute_review(self, force: bool = False, then: Callable[[qc.Review], None] | None = None) -> bool:
        """Compute the review maps in the dock's worker (or reuse them), then call ``then``."""


class OverlaySection(QWidget):
    """Overlay controls and buttons of the Review dock (``host``: the :class:`ReviewWidget`,
    seen through :class:`ReviewOverlayHost`).

    Attributes
    ----------
    buttons : dict of str to QPushButton
        One per registry group (``"<key>_button"`` on the section and the dock as well).
    """

    def __init__(self, host: ReviewOverlayHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.groups = overlay_groups()  # the registry when the dock was made
        self.buttons: dict[str, QPushButton] = {}
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

        grid = QGridLayout()
        specs = [(f"{key}_button", members[0].button, lambda key=key: self.show(key), members[0].tooltip)
                 for key, members in self.groups.items()]
        specs += [
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
            grid.addWidget(button, i // 2, i % 2)
        self.buttons = {key: getattr(self, f"{key}_button") for key in self.groups}
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(grid)
        layout.addStretch(1)

    @property
    def button_names(self) -> tuple[str, ...]:
        """Attribute names of every button (overlays, toggle, side by side)."""
        return tuple(f"{key}_button" for key in self.groups) + ("toggle_button", "side_button")

    def choices(self) -> dict[str, str]:
        """The overlays offered: button key -> button text."""
        return {key: members[0].button for key, members in self.groups.items()}

    # ------------------------------------------------------------------ enabling
    def update_enabled(self, pair: "ReviewPair | None") -> None:
        """Enable the buttons for ``pair`` (``None``: no layer); a refused entry says why."""
        for key, button in self.buttons.items():
            members = self.groups[key]
            reason = None if pair is None else self._missing(members, pair)
            button.setEnabled(pair is not None and reason is None)
            button.setToolTip(members[0].tooltip + (f"\nUnavailable: {reason}." if reason else ""))
        for button in (self.toggle_button, self.side_button):
            button.setEnabled(pair is not None)

    def _missing(self, members: list[Overlay], pair: "ReviewPair") -> str | None:
        """Why the group cannot be shown for ``pair`` (inputs that never come: no SD), or ``None``.

        A missing source is not a reason here: it may be opened; the click says what to do.
        """
        inputs = self._inputs(pair, copy=False)
        for overlay in members:
            if "displacement_sd" in overlay.needs:
                reason = missing_input(overlay, inputs, review_pending=True)
                if reason:
                    return reason
        return None

    # ------------------------------------------------------------------ inputs
    def options(self, pair: "ReviewPair | None" = None) -> dict[str, Any]:
        """The reader's display choices the computations read (see :class:`OverlayInputs`)."""
        options: dict[str, Any] = {
            "grid_spacing": float(self.grid_spacing_spin.value()),
            "grid_unit": str(self.grid_unit_combo.currentData()),
            "quiver_step": float(self.quiver_step_spin.value()),
            "tiles": int(self.tiles_spin.value()),
        }
        if pair is not None and pair.source is not None:
            options["raw_limits"] = tuple(float(v) for v in pair.source.contrast_limits)
        return options

    def _inputs(self, pair: "ReviewPair", review: qc.Review | None = None, copy: bool = False,
                frames: bool = False) -> OverlayInputs:
        registration = pair.registration
        raw = registered = None
        if frames and pair.source is not None:  # copies made here: the worker never touches layer data
            raw = np.array(pair.source.data, dtype=np.float32, copy=True)
            registered = np.array(pair.registered.data, dtype=np.float32, copy=True)
        info = registration.summary
        return OverlayInputs(
            displacement=pair.displacement,
            spacing_mm=pair.spacing_mm,
            raw=raw,
            registered=registered,
            displacement_sd_mm=registration.displacement_sd,
            review=review,
            engine=info.get("engine"),
            uncertainty_note=(info.get("params") or {}).get("uncertainty"),
            options=self.options(pair) if copy else {},
        )

    # ------------------------------------------------------------------ showing
    def show(self, key: str) -> bool:
        """Add / update the overlay(s) of button ``key`` (a registry name or group), in a worker.

        Returns ``True`` when the work started (the layers arrive when it is done, :meth:`busy`);
        ``False`` when it cannot (the reason is shown).
        """
        members = self.groups.get(key) or ([OVERLAYS[key]] if key in OVERLAYS else [])
        if not members:
            raise KeyError(f"no overlay {key!r}; choose from {', '.join(self.groups)}.")
        label = members[0].button
        try:
            pair = self.host.pair()
            if any("raw" in o.needs for o in members):
                self.host.require_source(pair)
            reason = self._missing(members, pair)
            if reason:
                raise ValueError(reason)
        except Exception as exc:
            self.host.report_error(f"Could not show the {label}: {exc}", exc)
            return False
        if any("review" in o.needs for o in members):
            return self.host.compute_review(then=lambda review: self._start(members, review))
        return self._start(members, None)

    def _start(self, members: list[Overlay], review: qc.Review | None) -> bool:
        pair = self.host.pair()
        inputs = self._inputs(pair, review, copy=True, frames=any("raw" in o.needs for o in members))
        placements = {o.name: self._placement(pair, o) for o in members}

        def work(job: Any) -> list[tuple[Overlay, Any, str]]:
            built = []
            for overlay in members:
                data = overlay.compute(inputs)
                layer = LAYER_BUILDERS[overlay.kind](overlay, data, inputs)
                # placed here, in the worker: each scale / translate set re-slices the whole layer
                # (0.1-0.4 s of GUI time on a busy 2-core machine)
                layer.scale, layer.translate = placements[overlay.name]["scale"], placements[overlay.name]["translate"]
                built.append((overlay, layer, data.status))
            return built

        def done(built: list[tuple[Overlay, Any, str]]) -> None:
            # one layer per event-loop turn, and its colour bar / the layers it covers in the
            # next: napari needs ~0.2 s of GUI time per new layer and as much for its first draw
            shown: list[Any] = []
            steps: list[Callable[[], Any]] = []
            for overlay, layer, _ in built:
                steps.append(lambda overlay=overlay, layer=layer: shown.append(
                    self._put_layer(layer, self.host.pair(), overlay)))
                if overlay.kind == "image":
                    steps.append(lambda overlay=overlay: self._hide_covered(shown[-1], self.host.pair(), overlay))

            def finish() -> None:
                for layer in shown[:-1]:  # one scale for a group: one bar, not several identical ones
                    show_colorbar(layer, False)
                self.host.set_status(built[-1][2] or f"Added {shown[-1].name!r}.")

            self.host.run_in_turns([*steps, finish], error_prefix=f"Showing the {members[0].button.lower()} failed")

        message = f"Computing the {members[0].button.lower()}"
        return self.host.start_job(work, description=message, on_result=done, main=False,
                                   error_prefix=f"{message} failed")

    def _placement(self, pair: "ReviewPair", overlay: Overlay) -> dict[str, np.ndarray]:
        """``scale`` and ``translate`` of ``overlay`` (copies of its base layer's)."""
        base = self._base_of(pair, overlay)
        return {"scale": np.array(base.scale, dtype=float), "translate": np.array(base.translate, dtype=float)}

    @staticmethod
    def _base_of(pair: "ReviewPair", overlay: Overlay | None) -> Image:
        """The layer ``overlay`` lies on (its ``base``: the raw frames or the common grid)."""
        if overlay is not None and overlay.base == "source" and pair.source is not None:
            return pair.source
        return pair.registered

    def _put_layer(self, new: Any, pair: "ReviewPair", overlay: Overlay) -> Any:
        base = self._base_of(pair, overlay)
        new.name = f"{pair.registered.name} {overlay.suffix}"
        for attribute in ("scale", "translate"):  # set only when it changes: each set re-slices
            if not np.array_equal(np.asarray(getattr(new, attribute)), np.asarray(getattr(base, attribute))):
                setattr(new, attribute, getattr(base, attribute))
        new.metadata = {OVERLAY_KEY: overlay.name, "review_of": pair.registered.name}
        if overlay.legend is not None:
            set_legend(new, overlay.legend.quantity, overlay.legend.unit, overlay.legend.note)
        old = self._own_layer(new.name, overlay.name)
        if old is not None:
            index = self.host.viewer.layers.index(old)
            self.host.viewer.layers.remove(old)
            self.host.viewer.layers.insert(index, new)
        else:
            self.host.viewer.layers.append(new)
        return new

    def _overlays_of(self, pair: "ReviewPair") -> list[Any]:
        return [la for la in self.host.viewer.layers
                if la.metadata.get(OVERLAY_KEY) and la.metadata.get("review_of") == pair.registered.name]

    @staticmethod
    def _entry_of(layer: Any) -> Overlay | None:
        return OVERLAYS.get(layer.metadata.get(OVERLAY_KEY))

    def _hide_covered(self, new: Any, pair: "ReviewPair", overlay: Overlay) -> None:
        """Show ``new`` with its colour bar; hide the other image overlays it would pile onto."""
        new.visible = True
        for layer in self._overlays_of(pair):
            entry = self._entry_of(layer)
            if same_layer(layer, new) or entry is None or entry.kind != "image":
                continue
            if np.allclose(np.asarray(layer.translate), np.asarray(new.translate)):
                layer.visible = False
                show_colorbar(layer, False)
        show_colorbar(new, overlay.colorbar)

    def _own_layer(self, name: str, kind: str) -> Any:
        if name in self.host.viewer.layers:
            layer = self.host.viewer.layers[name]
            if layer.metadata.get(OVERLAY_KEY) == kind:
                return layer
        return None

    def overlay_layer(self, kind: str) -> Any:
        """The overlay ``kind`` (a registry name) this widget made for the selected layer, or ``None``."""
        layer = self.host.selected_layer()
        if layer is None or kind not in OVERLAYS:
            return None
        return self._own_layer(f"{layer.name} {OVERLAYS[kind].suffix}", kind)

    # ------------------------------------------------------------------ the built-in buttons by name
    def show_grid(self) -> bool:
        """Add / update the deformation-grid Shapes layer (paths, frame axis first), built in a worker."""
        return self.show("grid")

    def show_quiver(self) -> bool:
        """Add / update the displacement arrows (Vectors layer, one set per frame), built in a worker.

        Arrows are drawn longer than the true displacement when that is too short to see (the
        factor is in the status line and the layer's ``length``); the data keep the true shift.
        """
        return self.show("quiver")

    def show_jacobian(self) -> bool:
        """Add / update det J per frame (diverging, centred at 1, limits from the data), in a worker."""
        return self.show("jacobian")

    def show_folding(self) -> bool:
        """Add / update the folded pixels (det J ≤ 0) in magenta (from the field alone), in a worker."""
        return self.show("folding")

    def show_scores(self) -> bool:
        """Add / update the per-frame correspondence scores in [0, 1] (from the review)."""
        return self.show("scores")

    def show_differences(self) -> bool:
        """Add / update the difference to the template, before and after (same limits)."""
        return self.show("difference")

    def show_checkerboard(self) -> bool | None:
        """Add / update the raw | registered checkerboard of every frame, built in a worker.

        Returns ``True`` when the work started, ``None`` when it could not (the source is
        missing: reported).
        """
        return self.show("checkerboard") or None

    def show_displacement_sd(self) -> bool:
        """Add / update the network's per-pixel displacement SD in mm (refused, with the reason,
        for a run without one: the classical engines)."""
        return self.show("displacement_sd")

    # ------------------------------------------------------------------ views
    def toggle_raw_registered(self) -> None:
        """Show the source or the registered layer (one at a time).

        The image overlays of this registration would cover either, so they are hidden (the
        deformation grid and the arrows stay); the status line says how many.
        """
        found = self.host.pair_and_source()
        if found is None:
            return
        pair, source = found
        show_raw = pair.registered.visible
        source.visible = show_raw
        pair.registered.visible = not show_raw
        hidden = 0
        for layer in self._overlays_of(pair):
            entry = self._entry_of(layer)
            if entry is not None and entry.kind == "image" and layer.visible:
                layer.visible = False
                hidden += 1
        shown = source if show_raw else pair.registered
        text = f"Showing {'raw' if show_raw else 'registered'} frames ({shown.name!r})."
        if hidden:
            text += f" {hidden} image overlay(s) hidden."
        self.host.set_status(text)

    def side_by_side(self, beside: bool | None = None) -> bool:
        """Put the registered layer beside its source (``True``) or on top of it; toggles when ``None``.

        Overlays on the common grid move with the registered layer. Returns the new state.
        """
        found = self.host.pair_and_source()
        if found is None:
            return False
        pair, source = found
        on_top = np.allclose(np.asarray(pair.registered.translate), np.asarray(source.translate))
        beside = on_top if beside is None else bool(beside)
        target = (beside_translate(source.translate, source.scale, source.data.shape) if beside
                  else np.array(source.translate, dtype=float))
        pair.registered.translate = target
        for layer in self._overlays_of(pair):
            entry = self._entry_of(layer)
            if entry is None or entry.base != "source":
                layer.translate = target
        pair.registered.visible = source.visible = True
        self.host.viewer.reset_view()
        self.host.set_status("Registered frames beside the raw ones." if beside else "Registered frames on top of the raw ones.")
        return beside
