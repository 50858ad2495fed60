"""Layer pickers and layer tests shared by the dock widgets (combo boxes listing layers by name).

A picker keeps the layer objects in a list beside the combo box; the combo holds the names as
item data, with an optional leading "(none)" item.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import QComboBox

__all__ = [
    "NONE_ITEM",
    "fill_combo",
    "chosen_layer",
    "contains",
    "index_of",
    "is_sequence_layer",
    "is_registered_layer",
    "cuda_available",
]

NONE_ITEM = "(none)"


def fill_combo(combo: QComboBox, layers: list[Any], chosen: Any, none: bool) -> None:
    """Fill ``combo`` with ``layers`` (plus "(none)" when ``none``) and select ``chosen``, silently."""
    combo.blockSignals(True)
    try:
        combo.clear()
        if none:
            combo.addItem(NONE_ITEM, None)
        for layer in layers:
            combo.addItem(layer.name, layer.name)
        index = next((i for i, la in enumerate(layers) if la is chosen), -1)
        combo.setCurrentIndex(index + (1 if none else 0) if index >= 0 else (0 if none or layers else -1))
    finally:
        combo.blockSignals(False)


def chosen_layer(combo: QComboBox, layers: list[Any], none: bool) -> Any:
    """The layer selected in a combo filled by :func:`fill_combo` (``None`` for "(none)")."""
    index = combo.currentIndex() - (1 if none else 0)
    return layers[index] if 0 <= index < len(layers) else None


def contains(layers: list[Any], layer: Any) -> bool:
    """Identity membership (layers compare by value in some napari versions)."""
    return any(la is layer for la in layers)


def index_of(layers: list[Any], layer: Any) -> int:
    """Position of ``layer`` in ``layers`` by identity, ``-1`` when absent."""
    return next((i for i, candidate in enumerate(layers) if candidate is layer), -1)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (``False`` if torch cannot tell)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken CUDA install must not break the widgets
        return False


def is_sequence_layer(layer: Any) -> bool:
    """A 3-D (frames, rows, columns) grey-level image layer that is not a Review overlay."""
    return (isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb and not layer.multiscale
            and "any2reg_overlay" not in layer.metadata)


def is_registered_layer(layer: Any) -> bool:
    """A sequence layer carrying a matching ``(N, 2, H, W)`` displacement in its metadata."""
    if not is_sequence_layer(layer):
        return False
    field = layer.metadata.get("displacement")
    n, h, w = layer.data.shape
    return field is not None and tuple(np.shape(field)) == (n, 2, h, w)
