"""Frames no registration can save, injected into a phantom for tests and calibration.

Used by ``benchmarks/bench_outliers.py`` (to choose the outlier thresholds of
:mod:`.outliers`) and by the tests. Each injector returns a new frame stack; the input is not
modified.

* ``other_slice`` — the frame comes from another slice position: the same frame of a phantom
  with other anatomy (another seed), with the same timings and contrast.
* ``ghosting`` — a strong motion artefact: ghosts of the frame displaced by half the field of
  view along the phase-encode direction (image y) plus a blur along it.
* ``mistrigger`` — a mistriggered frame: the heart caught in systole (a radial contraction of
  ~30 % about the LV centre, fading out over twice the LV radius) in a diastolic series.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import Phantom, make_phantom
from ..spatial import warp

__all__ = ["BAD_FRAME_KINDS", "inject_bad_frame"]

BAD_FRAME_KINDS = ("other_slice", "ghosting", "mistrigger")


def _ghosted(frame: np.ndarray, amplitude: float = 0.6, blur_px: int = 5) -> np.ndarray:
    h = frame.shape[0]
    ghosts = 0.5 * (np.roll(frame, h // 2, axis=0) + np.roll(frame, -(h // 2), axis=0))
    kernel = np.ones(blur_px) / blur_px
    blurred = np.apply_along_axis(lambda column: np.convolve(column, kernel, mode="same"), 0, frame)
    return (blurred + amplitude * ghosts).astype(np.float32)


def _contracted(frame: np.ndarray, centre: np.ndarray, radius_px: float, strength: float = 0.3) -> np.ndarray:
    h, w = frame.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = y - centre[0], x - centre[1]
    weight = np.exp(-(dy ** 2 + dx ** 2) / (2.0 * (2.0 * radius_px) ** 2))
    # pull-back: sampling further out shows the heart smaller (contracted)
    field = np.stack([strength * dy * weight, strength * dx * weight])[None].astype(np.float32)
    out = warp(torch.from_numpy(frame[None, None].astype(np.float32)), torch.from_numpy(field))
    return out[0, 0].numpy()


def inject_bad_frame(phantom: Phantom, frame: int, kind: str) -> np.ndarray:
    """The phantom's raw frames with frame ``frame`` replaced by a bad one of ``kind``.

    Parameters
    ----------
    phantom : Phantom
    frame : int
        Which frame (0-based).
    kind : {"other_slice", "ghosting", "mistrigger"}

    Returns
    -------
    ndarray (N, H, W) float32
        A copy of ``phantom.sequence.frames`` with the bad frame.
    """
    frames = np.array(phantom.sequence.frames, dtype=np.float32, copy=True)
    if not 0 <= frame < frames.shape[0]:
        raise ValueError(f"frame {frame} is outside the frames 0..{frames.shape[0] - 1}.")
    if kind == "other_slice":
        arguments: dict[str, Any] = dict(phantom.params["arguments"])
        arguments["seed"] = int(arguments.get("seed", 0)) + 7919
        other = make_phantom(**arguments)
        frames[frame] = other.sequence.frames[frame]
    elif kind == "ghosting":
        frames[frame] = _ghosted(frames[frame])
    elif kind == "mistrigger":
        lv = phantom.labels[frame] == 1
        centre = np.argwhere(lv).mean(axis=0) if lv.any() else np.array(frames.shape[1:]) / 2.0
        radius = np.sqrt(max(int(lv.sum()), 1) / np.pi)
        frames[frame] = _contracted(frames[frame], centre, radius)
    else:
        raise ValueError(f"unknown bad-frame kind {kind!r}; choose from {', '.join(BAD_FRAME_KINDS)}.")
    return frames
