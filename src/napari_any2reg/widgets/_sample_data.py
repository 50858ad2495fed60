"""napari sample-data contributions: seeded motion phantoms from :mod:`napari_any2reg.core.phantom`.

Each sample is one image layer carrying ``scale = (1, dy, dx)`` and the sequence metadata
(kind, timings, spacing), so the Registration widget can use it directly.
"""

from __future__ import annotations

from typing import Any

from ._layers import LayerDataTuple, sequence_to_layer_data

__all__ = ["SAMPLE_SHAPE", "SAMPLES", "phantom_layer", "sample_molli", "sample_stone", "sample_cine"]

#: In-plane size of the sample phantoms (the Any2Reg paper trains on 192x192 crops).
#: Generating one takes ~0.2 s (MOLLI) to ~2 s (30-frame cine) on 2 CPU cores.
SAMPLE_SHAPE = (192, 192)

#: Field of view (mm) kept whatever the shape: 192 px at 1.5 mm.
SAMPLE_FOV_MM = 288.0

#: key -> (layer name, make_phantom keyword arguments). Keys match ``napari.yaml``.
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "molli": ("MOLLI 5(3)3 phantom", {"kind": "molli", "seed": 0, "schedule": "5(3)3"}),
    "stone": ("STONE phantom", {"kind": "stone", "seed": 1}),
    "cine": ("cine phantom", {"kind": "cine", "seed": 2, "n_frames": 30}),
}


def phantom_layer(key: str, *, shape: tuple[int, int] | None = None) -> LayerDataTuple:
    """Image-layer tuple of the sample phantom ``key`` (see :data:`SAMPLES`).

    ``shape`` defaults to :data:`SAMPLE_SHAPE` (read at call time, so tests can shrink it).
    """
    from ..core.phantom import make_phantom

    try:
        name, kwargs = SAMPLES[key]
    except KeyError:
        raise ValueError(f"Unknown sample {key!r}; use one of {', '.join(SAMPLES)}.") from None
    kwargs = dict(kwargs)
    kind = kwargs.pop("kind")
    shape = tuple(int(v) for v in (shape or SAMPLE_SHAPE))
    spacing = (SAMPLE_FOV_MM / shape[0], SAMPLE_FOV_MM / shape[1])
    phantom = make_phantom(kind, shape=shape, spacing_mm=spacing, **kwargs)
    return sequence_to_layer_data(phantom.sequence, name=name)


def sample_molli() -> list[LayerDataTuple]:
    """MOLLI 5(3)3 (8 frames) with respiratory motion."""
    return [phantom_layer("molli")]


def sample_stone() -> list[LayerDataTuple]:
    """STONE-like inversion series (11 frames) with motion."""
    return [phantom_layer("stone")]


def sample_cine() -> list[LayerDataTuple]:
    """Cine series (30 cardiac phases)."""
    return [phantom_layer("cine")]
