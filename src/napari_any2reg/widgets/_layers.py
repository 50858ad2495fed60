"""Conversion between :class:`~napari_any2reg.core.sequence.Sequence` and napari layer data.

A sequence becomes an image layer with ``scale = (1, dy, dx)``, ``translate`` from
:func:`slice_translate` and ``metadata = sequence_layer_metadata(sequence)`` (kind, timings,
spacing, geometry and any extra fields), so ``sequence_from_layer(layer.data, name=layer.name,
scale=layer.scale, metadata=layer.metadata)`` rebuilds it. These napari conventions live here,
not in ``core``. Registration results add array-valued entries (``displacement``,
``template``) to the metadata of the registered layer (:class:`._registered.RegisteredLayer`);
:func:`sequence_from_layer_fields` drops those before writing, because files only keep
JSON-friendly metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..core.geometry import SliceGeometry
    from ..core.sequence import Sequence

__all__ = [
    "LayerDataTuple",
    "robust_contrast_limits",
    "sequence_to_layer_data",
    "sequence_layer_metadata",
    "sequence_from_layer",
    "sequence_from_layer_fields",
    "slice_translate",
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


#: Layer-metadata keys of the sequence's own fields (the rest is ``Sequence.metadata``).
_SEQUENCE_KEYS = ("timings_ms", "spacing_mm", "any2reg_kind", "geometry")


def sequence_layer_metadata(seq: "Sequence") -> dict[str, Any]:
    """Metadata to keep with a napari image layer so the sequence can be rebuilt."""
    meta = dict(seq.metadata)
    meta.update(
        {
            "any2reg_kind": seq.kind,
            "timings_ms": None if seq.timings_ms is None else seq.timings_ms.tolist(),
            "spacing_mm": list(seq.spacing_mm),
        }
    )
    if seq.geometry is not None:
        meta["geometry"] = seq.geometry.to_dict()
    return meta


def sequence_from_layer(
    data: Any, *, name: str = "sequence", scale: Any = None, metadata: dict[str, Any] | None = None
) -> "Sequence":
    """A sequence from napari image-layer fields (data, scale, metadata).

    The spacing comes from ``metadata["spacing_mm"]``, else from the layer's ``scale``; a layer
    that is not 3-D is refused with what to load instead.

    Raises
    ------
    SequenceError
    """
    from ..core.sequence import Sequence, SequenceError

    metadata = dict(metadata or {})
    array = np.asarray(data)
    if array.ndim != 3:
        raise SequenceError(
            f"Layer {name!r} has {array.ndim} dimension(s) {array.shape}; registration "
            "needs a 3-D (frames, rows, columns) image. Load a time series, not a single image."
        )
    spacing = metadata.get("spacing_mm")
    if spacing is None and scale is not None and len(scale) >= 3:
        spacing = (float(scale[-2]), float(scale[-1]))
    return Sequence(
        frames=array,
        timings_ms=metadata.get("timings_ms"),
        spacing_mm=tuple(spacing) if spacing is not None else (1.0, 1.0),
        kind=metadata.get("any2reg_kind", "unknown"),
        name=name,
        metadata={k: v for k, v in metadata.items() if k not in _SEQUENCE_KEYS},
        geometry=metadata.get("geometry"),
    )


def slice_translate(geometry: "SliceGeometry") -> tuple[float, float]:
    """In-plane ``(y, x)`` layer translate (mm): the slice origin in the plane's own axes.

    Slices of one stack share their in-plane axes, so their layers overlay where the anatomy
    does; the distance along the normal is ``geometry.slice_position_mm``.
    """
    origin = np.asarray(geometry.origin)
    return float(np.dot(origin, geometry.column_direction)), float(np.dot(origin, geometry.row_direction))


def sequence_to_layer_data(seq: "Sequence", *, name: str | None = None) -> LayerDataTuple:
    """Image-layer data tuple ``(frames, kwargs, "image")`` for a sequence.

    With a scanner geometry the layer's ``translate`` places the slice in its own in-plane axes
    (mm), so slices of one stack, and labels or points added on them, overlay where the anatomy
    does; the full position and orientation stay in ``metadata["geometry"]`` for the exports.
    """
    dy, dx = seq.spacing_mm
    ty, tx = slice_translate(seq.geometry) if seq.geometry is not None else (0.0, 0.0)
    kwargs = {
        "name": name or seq.name,
        "scale": (1.0, float(dy), float(dx)),
        "translate": (0.0, float(ty), float(tx)),
        "metadata": sequence_layer_metadata(seq),
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
    """:func:`sequence_from_layer`; ``jsonable_only`` drops the metadata files cannot keep."""
    meta = dict(metadata or {})
    if jsonable_only:
        meta = jsonable_metadata(meta)
    return sequence_from_layer(data, name=name or "sequence", scale=scale, metadata=meta)
