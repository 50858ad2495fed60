"""Conversion between :class:`~napari_any2reg.core.sequence.Sequence` and napari layer data.

A sequence becomes an image layer with ``scale = (1, dy, dx)`` and
``metadata = sequence.to_layer_metadata()`` (kind, timings, spacing and any extra fields), so
``Sequence.from_layer(layer.data, name=layer.name, scale=layer.scale, metadata=layer.metadata)``
rebuilds it. Registration results add array-valued entries (``displacement``, ``template``) to
the metadata of the registered layer (:class:`._registered.RegisteredLayer`);
:func:`sequence_from_layer_fields` drops those before writing, because files only keep
JSON-friendly metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..core.sequence import Sequence

__all__ = [
    "LayerDataTuple",
    "robust_contrast_limits",
    "sequence_to_layer_data",
    "sequence_from_layer_fields",
    "jsonable_metadata",
    "REGISTERED_SUFFIX",
    "axes_kwargs",
    "beside_translate",
    "SIDE_BY_SIDE_GAP",
]

#: Gap between side-by-side layers, as a fraction of the image width.
SIDE_BY_SIDE_GAP = 0.05

LayerDataTuple = tuple[Any, dict[str, Any], str]

#: Suffix of the layer holding the registered frames: ``"<source name> registered"``.
REGISTERED_SUFFIX = " registered"


def axes_kwargs(ndim: int = 3) -> dict[str, tuple[str, ...]]:
    """Layer ``axis_labels`` and ``units`` of our layers: ``frame`` (no unit), then ``y``, ``x`` in mm.

    The layers' ``scale`` is the pixel spacing in mm, so the units say so (napari's default,
    "pixel", would label the scale bar and the coordinates wrongly).
    """
    labels, units = ("frame", "y", "x"), ("", "mm", "mm")
    return {"axis_labels": labels[-ndim:], "units": units[-ndim:]}


def beside_translate(translate: Any, scale: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``translate`` moved right by one image width plus :data:`SIDE_BY_SIDE_GAP` (world units)."""
    out = np.array(translate, dtype=float)
    out[-1] += float(shape[-1]) * float(np.asarray(scale, dtype=float)[-1]) * (1.0 + SIDE_BY_SIDE_GAP)
    return out


def robust_contrast_limits(
    frames: np.ndarray, low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """Contrast limits from percentiles of all frames (ignores a few hot pixels)."""
    array = np.asarray(frames, dtype=np.float32)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def sequence_to_layer_data(seq: "Sequence", *, name: str | None = None) -> LayerDataTuple:
    """Image-layer data tuple ``(frames, kwargs, "image")`` for a sequence.

    With a scanner geometry the layer's ``translate`` places the slice in its own in-plane axes
    (mm), so slices of one stack, and labels or points added on them, overlay where the anatomy
    does; the full position and orientation stay in ``metadata["geometry"]`` for the exports.
    """
    dy, dx = seq.spacing_mm
    ty, tx = seq.geometry.napari_translate() if seq.geometry is not None else (0.0, 0.0)
    kwargs = {
        "name": name or seq.name,
        "scale": (1.0, float(dy), float(dx)),
        "translate": (0.0, float(ty), float(tx)),
        "metadata": seq.to_layer_metadata(),
        "colormap": "gray",
        "contrast_limits": robust_contrast_limits(seq.frames),
        **axes_kwargs(3),
    }
    # Sequence.frames is read-only; napari layers are editable, so hand napari its own copy.
    return np.array(seq.frames, dtype=np.float32, copy=True), kwargs, "image"


def jsonable_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of ``metadata`` that can go into a file header (see ``io``'s rule).

    The registration arrays (``displacement``, ``template``) are dropped first: they belong
    to the session, not to the written stack.
    """
    from ..io._common import jsonable_metadata as header_metadata

    from ._registered import ARRAY_KEYS

    meta = {k: v for k, v in dict(metadata or {}).items() if k not in ARRAY_KEYS}
    return header_metadata(meta)


def sequence_from_layer_fields(
    data: Any,
    *,
    name: str | None = None,
    scale: Any = None,
    metadata: dict[str, Any] | None = None,
    jsonable_only: bool = False,
) -> "Sequence":
    """``Sequence.from_layer`` with napari's field names; optionally drop non-JSON metadata."""
    from ..core.sequence import Sequence

    meta = dict(metadata or {})
    if jsonable_only:
        meta = jsonable_metadata(meta)
    return Sequence.from_layer(data, name=name or "sequence", scale=scale, metadata=meta)
