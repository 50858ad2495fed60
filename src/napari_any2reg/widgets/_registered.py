"""The registered layer's metadata, typed: :class:`RegisteredLayer`.

The Registration dock adds ``"<source> registered"`` (an image layer of the registered frames)
whose ``metadata`` carries the run: the displacement ``(N, 2, H, W) float32`` in pixels
(pull-back, components ``(dy, dx)``), the template, the per-frame correspondence scores (any2reg
engines), the run's summary and the source layer's name, beside the source's own entries (kind,
timings, spacing, geometry). Every dock reads it through :meth:`RegisteredLayer.from_layer` and
writes it through :meth:`RegisteredLayer.to_metadata` / :meth:`RegisteredLayer.to_layer`; the
string keys live here only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..core.registration import RegistrationResult

__all__ = ["RegisteredLayer", "NotRegisteredError", "ARRAY_KEYS", "SOURCE_KEY"]

_RESULT = "any2reg_result"
_DISPLACEMENT = "displacement"
_TEMPLATE = "template"
_SOURCE = "source_layer"

#: Metadata key naming the layer a derived layer (a registration, a T1 map) was computed from.
SOURCE_KEY = _SOURCE
_SCORES = "correspondence"
_SD = "displacement_sd_mm"

#: Our keys in the layer metadata.
KEYS = (_RESULT, _DISPLACEMENT, _TEMPLATE, _SOURCE, _SCORES, _SD)

#: Array-valued keys: session data, never written into a file header.
ARRAY_KEYS = (_DISPLACEMENT, _TEMPLATE, _SCORES, _SD)


class NotRegisteredError(ValueError):
    """The layer is not a registration result (or its field does not match its frames)."""


@dataclasses.dataclass
class RegisteredLayer:
    """The registration carried by a registered layer.

    Attributes
    ----------
    displacement : ndarray ``(N, 2, H, W) float32``
        Pixels, components ``(dy, dx)``, pull-back: ``registered_i(x) = frame_i(x + u_i(x))``.
    source_layer : str
        Name of the raw layer it was computed from.
    summary : dict
        :meth:`RegistrationResult.summary` of the run (engine, device, seconds, folding, ...).
    template : ndarray ``(H, W) float32`` or None
    correspondence : ndarray ``(N, H, W) float32`` or None
        Per-frame scores in [0, 1] on the registered grid (any2reg engines).
    displacement_sd : ndarray ``(N, H, W) float32`` or None
        Per-pixel SD of the displacement in mm over the network's test-time passes (the network
        engines with ``uncertainty_shifts`` > 0); the Export dock's "Displacement SD" item.
    base : dict
        The other metadata entries (the source sequence's kind, timings, spacing, geometry).
    """

    displacement: np.ndarray
    source_layer: str
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    template: np.ndarray | None = None
    correspondence: np.ndarray | None = None
    displacement_sd: np.ndarray | None = None
    base: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.displacement = np.asarray(self.displacement, dtype=np.float32)
        if self.displacement.ndim != 4 or self.displacement.shape[1] != 2:
            raise NotRegisteredError(f"a displacement must be (N, 2, H, W); got {self.displacement.shape}.")
        if self.template is not None:
            self.template = np.asarray(self.template, dtype=np.float32)
        if self.correspondence is not None:
            self.correspondence = np.asarray(self.correspondence, dtype=np.float32)
        if self.displacement_sd is not None:
            self.displacement_sd = np.asarray(self.displacement_sd, dtype=np.float32)
        self.source_layer = str(self.source_layer)
        self.summary = dict(self.summary or {})
        self.base = {k: v for k, v in dict(self.base or {}).items() if k not in KEYS}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_result(cls, result: "RegistrationResult", source_name: str,
                    source_metadata: dict[str, Any] | None = None) -> "RegisteredLayer":
        """The registration of ``source_name`` (whose metadata is kept as :attr:`base`)."""
        extras = result.extras or {}
        return cls(
            displacement=result.displacement,
            source_layer=source_name,
            summary=result.summary(),
            template=result.template,
            correspondence=extras.get("correspondence"),
            displacement_sd=extras.get("displacement_sd_mm"),
            base=dict(source_metadata or {}),  # a stale score map of the source is dropped
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None, shape: tuple[int, ...] | None = None) -> "RegisteredLayer":
        """Parse layer metadata; ``shape`` ``(N, H, W)`` of the frames must match the field.

        Raises :class:`NotRegisteredError` with the reason (and the fix).
        """
        meta = dict(metadata or {})
        field = meta.get(_DISPLACEMENT)
        if field is None:
            raise NotRegisteredError("it carries no displacement; register it with the Registration panel.")
        if shape is not None:
            n, h, w = (int(s) for s in shape)
            if tuple(np.shape(field)) != (n, 2, h, w):
                raise NotRegisteredError(
                    f"its displacement {tuple(np.shape(field))} does not match its frames {(n, h, w)}; "
                    "register its source again.")
        return cls(
            displacement=field,
            source_layer=str(meta.get(_SOURCE, "?")),
            summary=dict(meta.get(_RESULT) or {}),
            template=meta.get(_TEMPLATE),
            correspondence=meta.get(_SCORES),
            displacement_sd=meta.get(_SD),
            base=meta,
        )

    @classmethod
    def from_layer(cls, layer: Any) -> "RegisteredLayer":
        """The registration of a napari layer (raises :class:`NotRegisteredError` otherwise)."""
        data = getattr(layer, "data", None)
        shape = tuple(np.shape(data))
        if len(shape) != 3:
            raise NotRegisteredError(f"{getattr(layer, 'name', 'the layer')!r} is not a (frames, rows, columns) "
                                     "image layer.")
        try:
            return cls.from_metadata(getattr(layer, "metadata", None), shape)
        except NotRegisteredError as exc:
            raise NotRegisteredError(f"{layer.name!r}: {exc}") from None

    @classmethod
    def of(cls, layer: Any) -> "RegisteredLayer | None":
        """:meth:`from_layer`, or ``None`` for a layer that is not registered."""
        try:
            return cls.from_layer(layer)
        except NotRegisteredError:
            return None

    @staticmethod
    def is_result(layer: Any) -> bool:
        """Whether the layer was made by a registration (even one whose field no longer matches)."""
        return _RESULT in (getattr(layer, "metadata", None) or {})

    @staticmethod
    def field_id(layer: Any) -> int:
        """Identity of the field stored on ``layer`` (a re-run stores a new array: a new id)."""
        return id((getattr(layer, "metadata", None) or {}).get(_DISPLACEMENT))

    @staticmethod
    def source_name_of(layer: Any) -> str | None:
        """The ``source_layer`` name a derived layer records (registered layers, T1 maps)."""
        name = (getattr(layer, "metadata", None) or {}).get(_SOURCE)
        return None if name is None else str(name)

    # ------------------------------------------------------------------ writing
    def to_metadata(self) -> dict[str, Any]:
        """Layer metadata: :attr:`base` plus the registration (a new dict)."""
        meta = dict(self.base)
        meta[_RESULT] = dict(self.summary)
        meta[_DISPLACEMENT] = self.displacement
        meta[_TEMPLATE] = self.template
        meta[_SOURCE] = self.source_layer
        if self.correspondence is not None:
            meta[_SCORES] = self.correspondence
        if self.displacement_sd is not None:
            meta[_SD] = self.displacement_sd
        return meta

    def to_layer(self, data: Any, **kwargs: Any) -> Any:
        """A napari :class:`~napari.layers.Image` of ``data`` carrying this registration."""
        from napari.layers import Image

        return Image(data, metadata=self.to_metadata(), **kwargs)

    # ------------------------------------------------------------------ reading
    @property
    def n_frames(self) -> int:
        return int(self.displacement.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the field."""
        return int(self.displacement.shape[-2]), int(self.displacement.shape[-1])

    @property
    def timings_ms(self) -> list[float] | None:
        timings = self.base.get("timings_ms")
        return None if timings is None else [float(t) for t in timings]

    def spacing_mm(self, layer: Any = None) -> tuple[float, float]:
        """``(dy, dx)`` mm: the sequence's spacing, else ``layer``'s scale, else 1."""
        spacing = self.base.get("spacing_mm")
        if spacing is None and layer is not None:
            spacing = tuple(float(s) for s in layer.scale[-2:])
        if spacing is None:
            spacing = (1.0, 1.0)
        return tuple(float(s) for s in spacing)  # type: ignore[return-value]

    def source_in(self, viewer: Any, like: Any = None) -> Any:
        """The source layer in ``viewer`` (an image of the same shape as ``like``), or ``None``."""
        from napari.layers import Image

        if self.source_layer not in viewer.layers:
            return None
        source = viewer.layers[self.source_layer]
        if not isinstance(source, Image):
            return None
        shape = tuple(like.data.shape) if like is not None else (self.n_frames, *self.shape)
        return source if tuple(source.data.shape) == shape else None

    def quick_summary(self) -> str:
        """Engine, device, time and folding of the run (before any review)."""
        info = self.summary
        if not info:
            return ""
        text = f"{info.get('engine', '?')} on {info.get('device', '?')}"
        if info.get("seconds") is not None:
            text += f", {float(info['seconds']):.1f} s"
        if info.get("folding_percent") is not None:
            text += f"; folding {float(info['folding_percent']):.2f} %"
        return text
