"""The layer picker and layer tests shared by the dock widgets.

:class:`LayerPicker` is the combo box every dock uses for a layer input: it lists the viewer's
layers that pass a test, keeps the choice by identity (through renames), offers an optional
leading "(none)" item and holds the names as item data.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import QComboBox

__all__ = [
    "LayerPicker",
    "NONE_ITEM",
    "fill_combo",
    "chosen_layer",
    "contains",
    "index_of",
    "layer_key",
    "same_layer",
    "is_sequence_layer",
    "is_registered_layer",
    "is_raw_sequence_layer",
    "is_overlay_layer",
    "is_roi_layer",
    "OVERLAY_KEY",
    "cuda_available",
]

NONE_ITEM = "(none)"

#: Metadata key marking the Review dock's overlay layers (grid, arrows, maps, checkerboard).
OVERLAY_KEY = "any2reg_overlay"


def fill_combo(combo: QComboBox, layers: list[Any], chosen: Any, none: bool) -> None:
    """Fill ``combo`` with ``layers`` (plus "(none)" when ``none``) and select ``chosen``, silently."""
    combo.blockSignals(True)
    try:
        combo.clear()
        if none:
            combo.addItem(NONE_ITEM, None)
        for layer in layers:
            combo.addItem(layer.name, layer.name)
        index = index_of(layers, chosen) if chosen is not None else -1
        combo.setCurrentIndex(index + (1 if none else 0) if index >= 0 else (0 if none or layers else -1))
    finally:
        combo.blockSignals(False)


def chosen_layer(combo: QComboBox, layers: list[Any], none: bool) -> Any:
    """The layer selected in a combo filled by :func:`fill_combo` (``None`` for "(none)")."""
    index = combo.currentIndex() - (1 if none else 0)
    return layers[index] if 0 <= index < len(layers) else None


def layer_key(layer: Any) -> Any:
    """What identifies a layer for the whole session: napari's ``unique_id``.

    The viewer napari hands a plugin dock is a public-only proxy, and every
    ``viewer.layers[name]`` through it is a new proxy object of the same layer: ``id()`` and
    ``is`` tell them apart, ``unique_id`` does not.
    """
    key = getattr(layer, "unique_id", None)
    return key if key is not None else id(layer)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer (a proxy of it counts as the layer)."""
    if a is None or b is None:
        return a is b
    return a is b or layer_key(a) == layer_key(b)


def contains(layers: list[Any], layer: Any) -> bool:
    """Membership by layer identity (:func:`same_layer`; layers compare by value in some napari versions)."""
    return any(same_layer(la, layer) for la in layers)


def index_of(layers: list[Any], layer: Any) -> int:
    """Position of ``layer`` in ``layers`` by identity (:func:`same_layer`), ``-1`` when absent."""
    return next((i for i, candidate in enumerate(layers) if same_layer(candidate, layer)), -1)


def cuda_available() -> bool:
    """Whether torch can use a CUDA GPU (:func:`core.device.cuda_available`), imported when a
    dock asks so that importing the widgets does not import torch."""
    from ..core.device import cuda_available as torch_cuda_available

    return torch_cuda_available()


def is_sequence_layer(layer: Any) -> bool:
    """A 3-D (frames, rows, columns) grey-level image layer that is not a Review overlay."""
    return (isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb and not layer.multiscale
            and not is_overlay_layer(layer))


def is_overlay_layer(layer: Any) -> bool:
    """A layer this plugin drew for a review (never an input the user chose)."""
    return OVERLAY_KEY in (getattr(layer, "metadata", None) or {})


def is_roi_layer(layer: Any) -> bool:
    """A Labels or Shapes layer the user made (never one of the Review's overlays, such as the
    deformation grid, a Shapes layer of hundreds of lines)."""
    from napari.layers import Labels, Shapes

    return isinstance(layer, (Labels, Shapes)) and not is_overlay_layer(layer)


def is_registered_layer(layer: Any) -> bool:
    """A sequence layer carrying a matching ``(N, 2, H, W)`` displacement (a :class:`RegisteredLayer`)."""
    from ._registered import RegisteredLayer

    return is_sequence_layer(layer) and RegisteredLayer.of(layer) is not None


def is_raw_sequence_layer(layer: Any) -> bool:
    """A sequence layer that is not a registration result."""
    from ._registered import RegisteredLayer

    return is_sequence_layer(layer) and not RegisteredLayer.is_result(layer)


class LayerPicker(QComboBox):
    """A combo box of the viewer's layers that pass ``accept``, with an optional "(none)" item.

    The dock calls :meth:`refresh` when the layer list changes (see
    :meth:`~._base.WorkerDock.watch_layers`); the choice is kept by identity. Items hold the
    layer names as data, so ``findData(name)`` works as for a plain combo.

    Parameters
    ----------
    viewer : napari.Viewer
    accept : callable(layer) -> bool
    none : bool
        Offer "(none)" first (an optional input).
    tooltip : str
    """

    def __init__(self, viewer: Any, accept: Any, *, none: bool = False, tooltip: str = "", parent: Any = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.accept = accept
        self.none = bool(none)
        self.layers: list[Any] = []
        #: the user chose "(none)" by hand (a single candidate is then not picked for them)
        self.none_chosen = False
        if tooltip:
            self.setToolTip(tooltip)
        self.activated.connect(self._on_activated)

    def _on_activated(self, index: int) -> None:
        self.none_chosen = self.none and index == 0

    def candidates(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if self.accept(layer)]

    def refresh(self, prefer: Any = None) -> bool:
        """Re-list the layers, keeping the choice (else ``prefer``, else the first / "(none)").

        Returns ``True`` when the chosen layer changed (``currentIndexChanged`` is not emitted:
        the caller reacts once).
        """
        current = self.layer()
        self.layers = self.candidates()
        chosen = current if current is not None and contains(self.layers, current) else None
        if prefer is not None and contains(self.layers, prefer):
            chosen = prefer
        fill_combo(self, self.layers, chosen, self.none)
        return not same_layer(self.layer(), current)

    def layer(self) -> Any:
        """The chosen layer, ``None`` for "(none)" or an empty list."""
        return chosen_layer(self, self.layers, self.none)

    def set_layer(self, layer: Any) -> None:
        """Choose ``layer`` (a layer, its name, or "(none)"), as the user would; emits the change."""
        name = getattr(layer, "name", layer)
        if self.none and (layer is None or name == NONE_ITEM):
            self.none_chosen = True
            self.setCurrentIndex(0)
            return
        index = index_of(self.layers, layer) + (1 if self.none else 0) if not isinstance(layer, str) else -1
        if index < (1 if self.none else 0):
            index = self.findData(name)
        if index < 0:
            raise ValueError(f"{name!r} is not offered here.")
        self.none_chosen = False
        self.setCurrentIndex(index)
