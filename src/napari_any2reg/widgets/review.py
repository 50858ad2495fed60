"""The "Review" dock widget: overlays, a per-frame QC table and a temporal profile of a run.

Thin by design: every number and map comes from :mod:`napari_any2reg.core.qc`; this module
only finds the layers, runs the heavy part in a worker (:class:`~._base.WorkerDock`), and turns
results into layers. Its three sections are their own widgets: overlays
(:mod:`._review_overlays`), the QC table (:mod:`._review_qc`) and the profile
(:mod:`._review_profile`).

* The picker lists registered layers (:class:`~._registered.RegisteredLayer`: image layers
  whose metadata holds a matching displacement); the source layer is found by its
  ``source_layer`` name.
* The QC table (per frame; flagged rows highlighted with the reason) and the run summary are
  computed in a worker. Clicking a row moves the frame slider to that frame.
* Double-clicking a pixel in the viewer plots its intensity across frames, raw vs registered.
* The verdict (:func:`napari_any2reg.core.qc.verdict.assess_registration`, the same function
  ``metrics.json`` comes from) is computed in the review's worker from what the registered
  layer carries and shown as a banner above the overlays, coloured by level; a reason that
  names frames has a button per frame that moves the frame slider there. The outlier frames
  (:mod:`napari_any2reg.core.qc.outliers`) are marked in the QC table. The "Mask" picker offers the
  Labels layers a user made (1 LV blood, 2 LV myocardium, 3 RV blood; never this plugin's
  overlays; the only one is chosen for you, as the T1 mapping dock's ROI): the verdict reads it
  as ``register --mask`` does (outliers in its labels, the displacement SD in label 2), so the
  same series and mask give the same verdict as ``metrics.json``.

Tests drive it through the public methods (``show_grid``, ``show_jacobian``, ...,
``show_overlay``, ``compute_review``, ``go_to_frame``, ``show_profile``) and
:attr:`ReviewWidget.worker`.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QTabWidget, QVBoxLayout, QWidget

from ..core import qc
from ..core.overlays import OVERLAYS, uncertainty_note
from ..core.qc.verdict import assess_registration
from ._base import WorkerDock
from ._dock import compact_combos, install_frame_label, scroll_body
from ._pickers import LayerPicker, is_overlay_layer, is_registered_layer, layer_key, same_layer
from ._plots import ShowsPlot
from ._registered import RegisteredLayer
from ._review_pair import ReviewPair
from ._review_overlays import FOLDING_COLORMAP, JACOBIAN_LIMITS, OverlaySection
from ._review_profile import ProfileSection
from ._review_qc import QCSection, VerdictBanner

if TYPE_CHECKING:
    import napari

__all__ = ["ReviewWidget", "OVERLAYS", "JACOBIAN_LIMITS", "FOLDING_COLORMAP"]

#: Controls of the sections, reachable on the dock under the same names (the overlay buttons,
#: one per registry entry, are added from the section's ``button_names``).
_SECTION_CONTROLS = {
    "overlays": ("grid_spacing_spin", "grid_unit_combo", "quiver_step_spin", "tiles_spin"),
    "qc_section": ("folding_threshold_spin", "score_threshold_spin", "correlation_threshold_spin",
                   "compute_button", "table"),
    "profile": ("profile_radius_spin",),
}


@dataclasses.dataclass
class _Outcome:
    key: tuple[int, ...]
    review: qc.Review
    difference_limit: float = 1.0
    assessment: dict[str, Any] | None = None  # outlier_frames, displacement_sd, verdict
    assessment_problem: str | None = None  # why there is no verdict
    mask_note: str | None = None  # why the chosen mask was not used


class ReviewWidget(ShowsPlot, WorkerDock):
    """Dock widget reviewing a registration result (overlays, QC table, temporal profile).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.review: qc.Review | None = None
        #: ``outlier_frames``, ``displacement_sd`` and ``verdict`` of the reviewed layer (as in
        #: ``metrics.json``), or ``None``
        self.assessment: dict[str, Any] | None = None
        self.last_profile: dict[str, Any] | None = None
        self.difference_limit = 1.0
        self._review_key: tuple[int, ...] | None = None
        self._recompute = False  # the selection changed while a review was running
        self._pending: list[Callable[[qc.Review], None]] = []
        self._build_ui()
        self.watch_layers(data=True)
        self._connect_double_click()
        self.refresh_layers()
        install_frame_label(self.viewer)
        compact_combos(self)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        top = QFormLayout()
        self.layer_combo = LayerPicker(self.viewer, is_registered_layer,
                                       tooltip="A registered layer (made by the Registration panel).")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        top.addRow("Registered", self.layer_combo)
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        top.addRow("Source", self.source_label)
        self.mask_combo = LayerPicker(
            self.viewer, is_mask_layer, none=True,
            tooltip="Labels (1 LV blood, 2 LV myocardium, 3 RV blood) the verdict reads, as register --mask: "
                    "outlier frames in its labels, the displacement SD in the LV myocardium (label 2). "
                    "(none): the central heart box.")
        self.mask_combo.currentIndexChanged.connect(self._on_mask_changed)
        top.addRow("Mask", self.mask_combo)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.verdict_banner = VerdictBanner()
        self.verdict_banner.frame_clicked.connect(self.go_to_frame)
        self.overlays = OverlaySection(self)
        self.qc_section = QCSection()
        self.qc_section.compute_requested.connect(lambda: self.compute_review(force=True))
        self.qc_section.frame_clicked.connect(self.go_to_frame)
        self.profile = ProfileSection()
        self.plot_area = self.profile  # the temporal profile plot
        controls = dict(_SECTION_CONTROLS, overlays=_SECTION_CONTROLS["overlays"] + self.overlays.button_names)
        for section, names in controls.items():
            for name in names:
                setattr(self, name, getattr(getattr(self, section), name))
        self.tabs = QTabWidget()
        self.tabs.addTab(self.overlays, "Overlays")
        self.tabs.addTab(self.qc_section, "QC table")
        self.tabs.addTab(self.profile, "Profile")

        self.make_progress_controls()
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.cancel_button)
        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.verdict_banner)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(progress)
        layout.addWidget(self.status_label)

    # overlay actions (the overlays section does the work)
    def show_grid(self) -> bool:
        return self.overlays.show_grid()

    def show_quiver(self) -> bool:
        return self.overlays.show_quiver()

    def show_jacobian(self) -> bool:
        return self.overlays.show_jacobian()

    def show_folding(self) -> bool:
        return self.overlays.show_folding()

    def show_scores(self) -> bool:
        return self.overlays.show_scores()

    def show_differences(self) -> bool:
        return self.overlays.show_differences()

    def show_checkerboard(self) -> Any:
        return self.overlays.show_checkerboard()

    def toggle_raw_registered(self) -> None:
        self.overlays.toggle_raw_registered()

    def side_by_side(self, beside: bool | None = None) -> bool:
        return self.overlays.side_by_side(beside)

    def show_displacement_sd(self) -> bool:
        return self.overlays.show_displacement_sd()

    def show_overlay(self, key: str) -> bool:
        """Add / update the overlay(s) of registry entry or group ``key`` (see :meth:`overlay_choices`)."""
        return self.overlays.show(key)

    def overlay_choices(self) -> dict[str, str]:
        """The overlays this dock offers (one button each): registry key -> button text."""
        return self.overlays.choices()

    def overlay_layer(self, kind: str) -> Any:
        """The overlay of ``kind`` this widget made for the selected layer, or ``None``."""
        return self.overlays.overlay_layer(kind)

    @property
    def verdict(self) -> dict[str, Any] | None:
        """The verdict of the reviewed layer (``{"level", "reasons", ...}``), or ``None``."""
        return None if self.assessment is None else self.assessment["verdict"]

    @property
    def outlier_frames(self) -> list[int]:
        """The outlier frames of the reviewed layer (empty before the review)."""
        return [] if self.assessment is None else [int(i) for i in self.assessment["outlier_frames"]["indices"]]

    @property
    def table_data(self) -> qc.QCTable | None:
        return self.qc_section.table_data

    def thresholds(self) -> qc.QCThresholds:
        return self.qc_section.thresholds()

    # ------------------------------------------------------------------ viewer events
    def _connect_double_click(self) -> None:
        # viewer-level callback (the user's layers get nothing attached); a weak reference so a
        # closed widget does not keep receiving clicks. napari's own double-click zooms in: a
        # double-click on a pixel of the reviewed layers plots its profile *instead*, so our
        # callback takes the zoom's place and passes every other double-click on to it.
        callbacks = self.viewer.mouse_double_click_callbacks
        self._zoom_callback = next((cb for cb in callbacks if getattr(cb, "__name__", "") == "double_click_to_zoom"), None)
        self._double_click = _double_click_callback(self, self._zoom_callback)
        if self._zoom_callback is not None:
            callbacks[callbacks.index(self._zoom_callback)] = self._double_click
        else:
            callbacks.append(self._double_click)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        callbacks = self.viewer.mouse_double_click_callbacks
        if self._double_click in callbacks:
            index = callbacks.index(self._double_click)
            if self._zoom_callback is not None and self._zoom_callback not in callbacks:
                callbacks[index] = self._zoom_callback
            else:
                callbacks.remove(self._double_click)
        super().closeEvent(event)

    def on_layer_inserted(self, layer: Any) -> None:
        if is_registered_layer(layer):
            self._select(layer)

    def on_layer_data(self, layer: Any) -> None:
        # a re-run (or an edit) of the layer under review or of its mask: show nothing stale
        if any(same_layer(layer, candidate) for candidate in (self.selected_layer(), self._source_of(self.selected_layer()),
                                                              self.mask_layer())
               if candidate is not None):
            self._invalidate("The result changed; reviewing it again…")
            # the Registration widget sets the data, then the metadata: look once both are new
            QTimer.singleShot(0, self._auto_review)

    # ------------------------------------------------------------------ picker
    def eligible_layers(self) -> list[Image]:
        """Registered layers: image layers carrying a displacement in their metadata."""
        return self.layer_combo.candidates()

    def refresh_layers(self) -> None:
        mask_changed = self._refresh_mask()
        if self.layer_combo.refresh():
            self._on_layer_changed()
        else:
            self._update_source_label()
            if mask_changed:
                self._on_mask_changed()
        self._update_enabled()

    def _refresh_mask(self) -> bool:
        """Re-list the Labels layers; the only one is chosen unless the user chose "(none)"."""
        candidates = self.mask_combo.candidates()
        prefer = None
        if self.mask_layer() is None and len(candidates) == 1 and not self.mask_combo.none_chosen:
            prefer = candidates[0]
        return self.mask_combo.refresh(prefer=prefer)

    def mask_layer(self) -> Labels | None:
        """The Labels layer the verdict reads, or ``None`` (the central heart box)."""
        return self.mask_combo.layer()

    def set_mask_layer(self, layer: Any) -> None:
        """Choose ``layer`` (a Labels layer in the viewer, its name, or ``None``) as the mask."""
        self.mask_combo.set_layer(layer)

    def _on_mask_changed(self, *args: Any) -> None:
        self._invalidate("The mask changed; reviewing again…" if self.review is not None else "")
        self._auto_review()

    def mask_labels(self, shape: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
        """The chosen mask as an integer array (``(H, W)`` or ``(N, H, W)``, copied) on the frames'
        grid ``shape``, or ``None`` and why it is not used."""
        layer = self.mask_layer()
        if layer is None:
            return None, None
        data = np.asarray(layer.data)
        if data.ndim not in (2, 3) or data.shape[-2:] != tuple(shape):
            return None, (f"mask {layer.name!r} is {data.shape}, not on the frames' grid {tuple(shape)}: the verdict "
                          "reads the central heart box")
        return np.array(data, dtype=np.int64), None

    def _key(self, pair: ReviewPair) -> tuple[int, ...]:
        """What the review depends on: the layers, their arrays and the mask."""
        mask = self.mask_layer()
        return pair.key + ((layer_key(mask), id(mask.data)) if mask is not None else (0, 0))

    def selected_layer(self) -> Image | None:
        return self.layer_combo.layer()

    def _select(self, layer: Image) -> None:
        try:
            self.layer_combo.set_layer(layer)
        except ValueError:
            pass

    def _on_layer_changed(self, *args: Any) -> None:
        self._invalidate("")
        if not self.busy():  # messages and the bar of the last action belong to another layer
            self.progress_bar.setValue(0)
            self.set_status("")
        self._update_source_label()
        self._update_enabled()
        layer = self.selected_layer()
        if layer is not None:
            quick = RegisteredLayer.from_layer(layer).quick_summary()
            self.summary_label.setText(quick + "; alignment: computing…" if quick else "")
        self._auto_review()

    def _auto_review(self) -> None:
        """Compute the table for the selected layer when it has a source (what a reader wants first)."""
        layer = self.selected_layer()
        if layer is None or self._source_of(layer) is None or self.review is not None:
            return
        if self.worker is not None:
            self._recompute = True
        else:
            self.compute_review()

    def _source_of(self, layer: Image | None) -> Image | None:
        registration = RegisteredLayer.of(layer) if layer is not None else None
        return None if registration is None else registration.source_in(self.viewer, layer)

    def _update_source_label(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self.source_label.setText("—")
            self.summary_label.setText("No registered layer: run the Registration panel first.")
            return
        source = self._source_of(layer)
        name = RegisteredLayer.source_name_of(layer) or "?"
        self.source_label.setText(source.name if source is not None else f"{name!r} not found (reopen it)")

    def _update_enabled(self) -> None:
        layer = self.selected_layer()
        try:
            pair = None if layer is None else self.pair()
        except Exception:  # a layer whose field no longer matches: nothing to show
            pair = None
        self.overlays.update_enabled(pair)
        self.compute_button.setEnabled(layer is not None and self.worker is None)

    def on_running_changed(self, running: bool) -> None:
        self._update_enabled()

    # ------------------------------------------------------------------ review data
    def pair(self) -> ReviewPair:
        """The registered layer, its source and field; raises ``ValueError`` with the fix."""
        layer = self.selected_layer()
        if layer is None:
            raise ValueError("No registered layer to review; run the Registration panel first.")
        return ReviewPair(registered=layer, source=self._source_of(layer), registration=RegisteredLayer.from_layer(layer))

    def require_source(self, pair: ReviewPair) -> Image:
        if pair.source is None:
            raise ValueError(
                f"The source layer {pair.registration.source_layer!r} of {pair.registered.name!r} is not in the "
                "viewer; open it again under that name to compare raw and registered frames."
            )
        return pair.source

    def pair_and_source(self) -> tuple[ReviewPair, Image] | None:
        """The chosen registration and its source layer, or ``None`` once the reason is shown."""
        try:
            pair = self.pair()
            return pair, self.require_source(pair)
        except Exception as exc:
            self.report_error(str(exc), exc)
            return None

    def compute_review(self, force: bool = False, then: Callable[[qc.Review], None] | None = None) -> bool:
        """Compute the review (maps, table, summary) in a worker; ``then`` runs with it after.

        Returns ``True`` if a worker was started (or the review was already there and ``then``
        ran at once); ``False`` when it could not start (the reason is shown).
        """
        found = self.pair_and_source()
        if found is None:
            return False
        pair, source = found
        if then is not None:
            self._pending.append(then)
        if not force and self.review is not None and self._review_key == self._key(pair):
            self._flush_pending()
            return True
        if self.worker is not None:
            return True  # the running computation picks up the pending callbacks
        registration, key, thresholds = pair.registration, self._key(pair), self.thresholds()
        raw = np.array(source.data, dtype=np.float32)  # copies: the user may edit the layers meanwhile
        registered = np.array(pair.registered.data, dtype=np.float32)
        labels, mask_note = self.mask_labels(raw.shape[1:])
        note = (registration.summary.get("params") or {}).get("uncertainty")

        def work(job: Any) -> _Outcome:
            review = qc.review_registration(
                raw, registered, registration.displacement, template=registration.template,
                scores=registration.correspondence, spacing_mm=pair.spacing_mm, info=pair.info,
                thresholds=thresholds, progress=lambda f, m: job.progress(0.9 * f, f"Review: {m}…" if m else ""),
                timings_ms=registration.timings_ms)
            job.progress(0.9, "Review: outlier frames and verdict…")
            # the verdict of metrics.json, from the same function and thresholds; the review's
            # score maps are the stored ones (or the model-free ones, computed once)
            try:
                assessment = assess_registration(
                    raw, registered, registration.displacement, scores=review.scores, spacing_mm=pair.spacing_mm,
                    timings_ms=registration.timings_ms, labels=labels, displacement_sd_mm=registration.displacement_sd,
                    uncertainty_note=uncertainty_note(registration.summary.get("engine"), note,
                                                      registration.displacement_sd is not None))
                assessment.pop("_verdict_inputs", None)
                problem = None
            except ValueError as exc:  # e.g. too few frames for the model: the QC table still shows
                assessment, problem = None, str(exc)
            return _Outcome(key, review, qc.symmetric_limit(review.difference_before, 99.5, 1e-6), assessment, problem,
                            mask_note)

        return self.start_job(work, description="Review", activity=f"Review of {pair.registered.name}",
                              message=f"Reviewing {pair.registered.name!r}…", on_result=self._on_review,
                              on_finished=self._after_review)

    def _on_review(self, outcome: _Outcome) -> None:
        try:
            current = self._key(self.pair())
        except Exception:
            current = None
        if current != outcome.key:  # the user picked another layer meanwhile: recompute for that one
            self.review = None
            self._review_key = None
            self._recompute = True
            self.set_status("Selection changed during the review; computing again…")
            return
        self.review = outcome.review
        self._review_key = outcome.key
        self.difference_limit = outcome.difference_limit
        self.assessment = outcome.assessment
        outliers = (outcome.assessment or {}).get("outlier_frames") or {}
        self.qc_section.show_table(outcome.review.table, {int(k): list(v) for k, v in (outliers.get("reasons") or {}).items()})
        self.verdict_banner.show_verdict(self.verdict)
        if outcome.assessment_problem:
            self.verdict_banner.show_message(f"No verdict: {outcome.assessment_problem}")
        self.summary_label.setText(outcome.review.summary.line())
        self.progress_bar.setValue(100)
        flagged = self.table_data.flagged_frames if self.table_data else []
        text = f"{len(flagged)} frame(s) flagged: {flagged}" if flagged else "No frame flagged."
        if self.outlier_frames:
            text += f" Outlier frame(s): {self.outlier_frames}."
        if outcome.mask_note:
            text += f" Note: {outcome.mask_note}."
        self.set_status(text)
        self._flush_pending()

    def _after_review(self) -> None:
        if self.last_error is not None and self.review is None:
            self._pending.clear()
        if self._recompute:
            self._recompute = False
            QTimer.singleShot(0, self._recompute_now)

    def _recompute_now(self) -> None:
        if self.worker is None and self.selected_layer() is not None and self._source_of(self.selected_layer()):
            self.compute_review()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for callback in pending:
            try:
                callback(self.review)
            except Exception as exc:
                self.report_error(f"Could not add the overlay: {exc}", exc)

    def _invalidate(self, message: str) -> None:
        self.review = None
        self.assessment = None
        self._review_key = None
        self.qc_section.clear()
        self.verdict_banner.show_verdict(None)
        if message:
            self.set_status(message)

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's frame slider to ``frame`` of the registered layer."""
        layer = self.selected_layer()
        if layer is None:
            return
        axis = self.viewer.dims.ndim - layer.ndim
        world = float(layer.data_to_world((float(frame), 0.0, 0.0))[0])
        self.viewer.dims.set_point(axis, world)

    # ------------------------------------------------------------------ temporal profile
    def show_profile(self, y: float, x: float) -> dict[str, Any] | None:
        """Plot pixel ``(y, x)`` (registered layer's data coordinates) across frames."""
        try:
            pair = self.pair()
            source = self.require_source(pair)
            raw, registered = qc.temporal_profile(source.data, pair.registered.data, y, x, self.profile.radius())
        except Exception as exc:
            self.report_error(f"No profile: {exc}", exc)
            return None
        self.last_profile = self.profile.plot(y, x, raw, registered, pair.registration.timings_ms)
        self.tabs.setCurrentIndex(2)
        return self.last_profile

    def _on_double_click(self, event: Any) -> bool:
        """Plot the profile of the double-clicked pixel (on the registered or the raw layer).

        Returns ``True`` when the click was on one of them (and so not a zoom).
        """
        layer = self.selected_layer()
        position = getattr(event, "position", None)
        if layer is None or position is None:
            return False
        for candidate in (layer, self._source_of(layer)):
            if candidate is None or not candidate.visible:
                continue
            data = np.asarray(candidate.world_to_data(position), dtype=float)
            y, x = data[-2], data[-1]
            h, w = candidate.data.shape[-2:]
            if 0 <= round(y) < h and 0 <= round(x) < w:
                self.show_profile(y, x)
                return True
        return False


def is_mask_layer(layer: Any) -> bool:
    """A Labels layer the user made (never one of this plugin's overlays)."""
    return isinstance(layer, Labels) and not is_overlay_layer(layer)


def _double_click_callback(widget: ReviewWidget, fallback: Callable[[Any, Any], None] | None
                           ) -> Callable[[Any, Any], None]:
    ref = weakref.ref(widget)

    def on_double_click(viewer: Any, event: Any) -> None:
        target = ref()
        handled = False
        if target is not None:
            try:
                handled = target._on_double_click(event)
            except RuntimeError:  # the Qt side of the widget was deleted
                handled = False
        if not handled and fallback is not None:
            fallback(viewer, event)

    return on_double_click
