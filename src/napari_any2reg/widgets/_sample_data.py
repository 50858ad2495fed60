"""napari sample-data contributions: seeded motion phantoms from :mod:`napari_any2reg.core.phantom`.

Each sample is one image layer carrying ``scale = (1, dy, dx)`` and the sequence metadata
(kind, timings, spacing), so the Registration widget can use it directly.
"""

from __future__ import annotations

import threading
from typing import Any

from ._layers import LayerDataTuple, sequence_to_layer_data

__all__ = ["SAMPLE_SHAPE", "SAMPLES", "phantom_layer", "sample_molli", "sample_stone", "sample_cine", "sample_t2prep",
           "sample_mge"]

#: In-plane size of the sample phantoms (the Any2Reg paper trains on 192x192 crops).
#: Generating one takes ~0.2 s (MOLLI) to ~1 s (30-frame cine) on 2 CPU cores once torch is
#: imported; the first sample of a session also imports torch (2-5 s). Both run in a thread
#: while the window keeps drawing (:func:`_responsive`).
SAMPLE_SHAPE = (192, 192)

#: Field of view (mm) kept whatever the shape: 192 px at 1.5 mm.
SAMPLE_FOV_MM = 288.0

#: key -> (layer name, make_phantom keyword arguments). Keys match ``napari.yaml``.
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "molli": ("MOLLI 5(3)3 phantom", {"kind": "molli", "seed": 0, "schedule": "5(3)3"}),
    "stone": ("STONE phantom", {"kind": "stone", "seed": 1}),
    "cine": ("cine phantom", {"kind": "cine", "seed": 2, "n_frames": 30}),
    "t2prep": ("T2-prep phantom", {"kind": "t2prep", "seed": 3}),
    "mge": ("multi-echo T2* phantom", {"kind": "mge", "seed": 4}),
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


def _responsive(key: str) -> LayerDataTuple:
    """:func:`phantom_layer` in a thread while the Qt event loop keeps the window drawing.

    napari calls a sample contribution on the GUI thread and waits for its layers; the work
    (the first time: importing torch, seconds) would freeze the window. Here it runs in a
    thread and the caller keeps processing events (timers, painting, resizing; clicks and keys
    wait until the sample is there, so nothing re-enters napari's open-sample call). Without a
    Qt application, or off the main thread, it simply runs.
    """
    try:
        from qtpy.QtCore import QEventLoop, QThread
        from qtpy.QtWidgets import QApplication
    except Exception:  # no Qt binding: a script using the function directly
        return phantom_layer(key)
    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return phantom_layer(key)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["layer"] = phantom_layer(key)
        except BaseException as exc:  # handed back to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"any2reg sample {key}", daemon=True)
    thread.start()
    while thread.is_alive():
        app.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, 10)
        thread.join(0.005)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["layer"]


def sample_molli() -> list[LayerDataTuple]:
    """MOLLI 5(3)3 (8 frames) with respiratory motion."""
    return [_responsive("molli")]


def sample_stone() -> list[LayerDataTuple]:
    """STONE-like inversion series (11 frames) with motion."""
    return [_responsive("stone")]


def sample_cine() -> list[LayerDataTuple]:
    """Cine series (30 cardiac phases)."""
    return [_responsive("cine")]


def sample_t2prep() -> list[LayerDataTuple]:
    """T2-prepared bSSFP (preparations 0, 25, 40, 55 ms; myocardial T2 50 ms) with motion."""
    return [_responsive("t2prep")]


def sample_mge() -> list[LayerDataTuple]:
    """Multi-gradient echo (8 echoes, TE 2.6-18.7 ms; myocardial T2* 35 ms) with motion."""
    return [_responsive("mge")]
