"""The registered layer the Review dock reviews, with its source: what the dock and its sections
share (apart from :mod:`.review` so that the sections import it without importing the dock)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from napari.layers import Image

from ._pickers import layer_key
from ._registered import RegisteredLayer

__all__ = ["ReviewPair"]


@dataclasses.dataclass
class ReviewPair:
    """The registered layer under review, its source and the arrays the core needs."""

    registered: Image
    source: Image | None
    registration: RegisteredLayer

    @property
    def displacement(self) -> np.ndarray:
        return self.registration.displacement

    @property
    def spacing_mm(self) -> tuple[float, float]:
        return self.registration.spacing_mm(self.registered)

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.registration.summary)

    @property
    def key(self) -> tuple[int, ...]:
        # a re-run replaces the metadata arrays: their identity tells a stale review apart. The
        # layers by napari's unique_id: a plugin dock's viewer hands out a new proxy object of
        # the same layer on every ``viewer.layers[name]``, so ``id(layer)`` would never match
        return (layer_key(self.registered), RegisteredLayer.field_id(self.registered), id(self.registered.data),
                layer_key(self.source) if self.source is not None else 0,
                id(self.source.data) if self.source is not None else 0)
