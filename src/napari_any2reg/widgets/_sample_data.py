"""napari sample-data contributions: seeded motion phantoms from :mod:`napari_any2reg.core.phantom`.

Each sample is one image layer carrying ``scale = (1, dy, dx)`` and the sequence metadata
(kind, timings, spacing), so the Registration widget can use it directly; the ECV pair is the
MOLLI sample, its post-contrast partner and the heart labels (what the T1 mapping dock's ECV
section needs).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from ._layers import LayerDataTuple, sequence_to_layer_data

__all__ = ["SAMPLE_SHAPE", "SAMPLES", "phantom_layer", "sample_molli", "sample_stone", "sample_cine", "sample_t2prep",
           "sample_mge", "ECV_POST_OFFSET_MM", "ecv_pair_phantoms", "ecv_pair_layers", "sample_ecv_pair"]

_T = TypeVar("_T")

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
    phantom = _sample_phantom(key, shape)
    return sequence_to_layer_data(phantom.sequence, name=SAMPLES[key][0])


#: The post-contrast series of the ECV pair was acquired in a breath-hold this far (mm, along y)
#: from the native one, so the two maps do not overlap until they are registered as one set.
ECV_POST_OFFSET_MM = (12.0, 0.0)


def _sample_phantom(key: str, shape: tuple[int, int] | None, **extra: Any) -> Any:
    from ..core.phantom import make_phantom

    try:
        name, kwargs = SAMPLES[key]
    except KeyError:
        raise ValueError(f"Unknown sample {key!r}; use one of {', '.join(SAMPLES)}.") from None
    kwargs = dict(kwargs, **extra)
    kind = kwargs.pop("kind")
    shape = tuple(int(v) for v in (shape or SAMPLE_SHAPE))
    spacing = (SAMPLE_FOV_MM / shape[0], SAMPLE_FOV_MM / shape[1])
    return make_phantom(kind, shape=shape, spacing_mm=spacing, **kwargs)


def ecv_pair_phantoms(shape: tuple[int, int] | None = None) -> tuple[Any, Any]:
    """``(native, post)``: the MOLLI sample's phantom and the same slice after contrast
    (myocardium 450 ms, blood 300 ms at 1.5 T) in a breath-hold :data:`ECV_POST_OFFSET_MM` away."""
    native = _sample_phantom("molli", shape)
    post = _sample_phantom("molli", shape, contrast="post", breath_hold_offset_mm=ECV_POST_OFFSET_MM)
    return native, post


def ecv_pair_layers(shape: tuple[int, int] | None = None) -> list[LayerDataTuple]:
    """The ECV pair as layers: the native and post-contrast MOLLI series, the heart labels
    (1 LV blood pool, 2 LV myocardium, 3 RV blood pool; on the native frames' mean position) and
    the two RV insertion points (a Points layer, anterior first: the AHA segments' reference)."""
    import numpy as np

    native, post = ecv_pair_phantoms(shape)
    native_layer = sequence_to_layer_data(native.sequence, name="MOLLI native (ECV pair)")
    post_layer = sequence_to_layer_data(post.sequence, name="MOLLI post-contrast (ECV pair)")
    scale = tuple(float(s) for s in native.sequence.spacing_mm)
    labels = (np.asarray(native.common_labels, np.uint8),
              {"name": "heart labels (ECV pair)", "scale": scale, "opacity": 0.4,
               "metadata": {"spacing_mm": list(scale), "labels": {"1": "LV blood pool", "2": "LV myocardium",
                                                                  "3": "RV blood pool"}}},
              "labels")
    # the RV insertion points (anterior first) in world mm, as the segments section takes them
    insertion = np.array([native.common_landmarks[name] for name in ("rv_insertion_anterior", "rv_insertion_inferior")],
                         np.float64) * np.asarray(scale)
    points = (insertion, {"name": "RV insertion (ECV pair)", "size": 3.0 * max(scale), "face_color": "yellow"}, "points")
    return [native_layer, post_layer, labels, points]


def _responsive(key: str) -> LayerDataTuple:
    """:func:`phantom_layer` of sample ``key`` while the window keeps drawing (:func:`_in_thread`)."""
    return _in_thread(lambda: phantom_layer(key), name=f"any2reg sample {key}")


def _in_thread(make: Callable[[], _T], *, name: str) -> _T:
    """``make()`` in a thread while the Qt event loop keeps the window drawing.

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
        return make()
    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return make()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["layer"] = make()
        except BaseException as exc:  # handed back to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=name, daemon=True)
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


def sample_ecv_pair() -> list[LayerDataTuple]:
    """MOLLI native and post-contrast series of one slice (two breath-holds 12 mm apart), the
    heart labels and the RV insertion points: what the T1 mapping dock's ECV and segments
    sections need (ECV registers the two series as one set)."""
    return _in_thread(ecv_pair_layers, name="any2reg sample ECV pair")
