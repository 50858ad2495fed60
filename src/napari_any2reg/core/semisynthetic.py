"""Semi-synthetic sequences: real, pre-aligned frames moved by a known smooth motion.

A real series has no ground-truth motion. To measure end-point error on real anatomy and real
contrast, the frames are first aligned (by any engine: the residual misalignment adds the same
floor to every method that is scored), then each frame is moved by a known, smooth,
breathing-like deformation. An engine that recovers the injected motion returns the aligned
frames; its relative end-point error (:func:`core.metrics.relative_epe`) against the injected
field is the score. The same construction feeds training (a supervised term on real anatomy)
and the real-data benchmark.

Motion model (:func:`breathing_motion`), per frame ``i`` and in mm:

* a translation along one random in-plane direction (the superior–inferior axis of a real
  scan is not known from the image) whose positions span exactly ``translation_mm`` over the
  frames, plus a small perpendicular jitter;
* a rotation about the organ centre;
* a smooth non-rigid field (correlation length ``nonrigid_scale_mm``);
* all weighted by ``w(x) = wall + (1 - wall) exp(-|x - c|^2 / (2 decay^2))``: full motion at
  the heart (or kidney) centre ``c``, less at the chest / body wall, as breathing moves the
  organs more than the wall (sliding);
* zero mean over frames (groupwise convention: the common grid is the mean position).

A base that is some engine's registered output still carries that engine's residual
misalignment, and scoring against it favours the engine whose fixed point it is. A
**motion-free** base (:func:`motion_free_series`) removes that: the frames are regenerated
from per-pixel parameter maps (a T1 signal model where the timings are known, else a low-rank
temporal model), so every frame shows the same anatomy by construction while the contrast
evolves as in the real series (null crossings included).

Conventions as everywhere in the package: pull-back displacement ``(N, 2, H, W)`` in pixels,
components ``(dy, dx)``, ``registered_i(x) = frame_i(x + u_i(x))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .spatial import folding_fraction, gaussian_smooth, invert_displacement, warp_images

__all__ = ["breathing_motion", "move_frames", "add_rician_noise", "motion_free_series"]


def _smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, int], spacing_mm, scale_mm: float) -> torch.Tensor:
    """``n`` smooth random fields ``(n, H, W)`` of unit SD, correlation length ~``scale_mm``."""
    h, w = shape
    step = max(scale_mm / 2.0, 1e-3)
    gh = int(min(h, max(4, math.ceil((h - 1) * spacing_mm[0] / step) + 1)))
    gw = int(min(w, max(4, math.ceil((w - 1) * spacing_mm[1] / step) + 1)))
    z = torch.from_numpy(rng.standard_normal((n, 1, gh, gw)).astype(np.float32))
    z = gaussian_smooth(z, 1.0)
    z = z - z.mean(dim=(-2, -1), keepdim=True)
    z = z / z.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return F.interpolate(z, size=(h, w), mode="bicubic", align_corners=True)[:, 0]


def breathing_motion(
    rng: np.random.Generator,
    n_frames: int,
    shape: tuple[int, int],
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    *,
    translation_mm: float = 10.0,
    rotation_deg: float = 3.0,
    nonrigid_mm: float = 1.5,
    nonrigid_scale_mm: float = 30.0,
    centre_px: tuple[float, float] | None = None,
    decay_mm: float = 60.0,
    wall_weight: float = 0.3,
) -> np.ndarray:
    """A random smooth, fold-free breathing-like motion, zero-mean over frames.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_frames : int
    shape : (H, W)
    spacing_mm : (dy, dx)
    translation_mm : float
        Range of the breathing translation over the frames (peak to peak), in mm.
    rotation_deg : float
        Largest rotation about ``centre_px`` (uniform in ``±rotation_deg``), degrees.
    nonrigid_mm : float
        RMS amplitude of the smooth non-rigid component, mm.
    nonrigid_scale_mm : float
        Its correlation length, mm.
    centre_px : (y, x), optional
        Organ centre in pixels (default: the image centre).
    decay_mm : float
        Width of the weight ``w(x)`` around the centre; far from it the motion falls to
        ``wall_weight`` times its value at the centre.
    wall_weight : float

    Returns
    -------
    ndarray (N, 2, H, W) float32, pixels (pull-back). If the drawn field would fold, its
    amplitude is halved until it does not (a smooth breathing motion never folds tissue).
    """
    n = int(n_frames)
    h, w = shape
    dy_mm, dx_mm = (float(s) for s in spacing_mm)
    cy, cx = (float(c) for c in (centre_px if centre_px is not None else ((h - 1) / 2, (w - 1) / 2)))
    # breathing positions spanning [0, 1] exactly, along a random in-plane direction
    s = rng.uniform(0.0, 1.0, n)
    if np.ptp(s) > 0:
        s = (s - s.min()) / np.ptp(s)
    angle = rng.uniform(0.0, 2 * math.pi)
    jitter = 0.1 * translation_mm * rng.uniform(-1.0, 1.0, n)
    ty = translation_mm * s * math.cos(angle) - jitter * math.sin(angle)
    tx = translation_mm * s * math.sin(angle) + jitter * math.cos(angle)
    theta = np.radians(rotation_deg) * rng.uniform(-1.0, 1.0, n)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    ry, rx = (yy - cy) * dy_mm, (xx - cx) * dx_mm
    weight = wall_weight + (1.0 - wall_weight) * np.exp(-(ry**2 + rx**2) / (2.0 * decay_mm**2))
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u_y = (cos - 1) * ry + sin * rx + ty[:, None, None]
    u_x = -sin * ry + (cos - 1) * rx + tx[:, None, None]
    u_mm = np.stack([u_y, u_x], axis=1) * weight[None, None]
    if nonrigid_mm > 0:
        fields = _smooth_fields(rng, 2 * n, (h, w), (dy_mm, dx_mm), nonrigid_scale_mm).numpy().reshape(n, 2, h, w)
        u_mm = u_mm + (nonrigid_mm / math.sqrt(2.0)) * fields * (0.5 + 0.5 * weight[None, None])
    u_mm = u_mm - u_mm.mean(axis=0, keepdims=True)
    u_px = (u_mm / np.array([dy_mm, dx_mm], np.float32).reshape(1, 2, 1, 1)).astype(np.float32)
    for _ in range(8):
        if folding_fraction(u_px) == 0.0:
            break
        u_px = u_px * 0.5
    return u_px


def move_frames(aligned_frames: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """The frames a scanner would have recorded under the motion ``displacement``.

    ``moved_i`` is built so that warping it by ``displacement[i]`` (pull-back) gives back
    ``aligned_frames[i]``: ``moved_i(y) = aligned_i(y + v_i(y))`` with ``v_i`` the inverse of
    ``u_i`` (:func:`core.spatial.invert_displacement`). The input is not modified.

    Parameters
    ----------
    aligned_frames : ndarray (N, H, W)
    displacement : ndarray (N, 2, H, W), pixels (the truth an engine should return)

    Returns
    -------
    ndarray (N, H, W) float32
    """
    frames = np.asarray(aligned_frames, np.float32)
    field = np.asarray(displacement, np.float32)
    if field.shape != (frames.shape[0], 2) + frames.shape[1:]:
        raise ValueError(f"move_frames: displacement shape {field.shape} does not match frames {frames.shape}")
    inverse = invert_displacement(field, iterations=40)
    return warp_images(frames, inverse)


def add_rician_noise(frames: np.ndarray, rng: np.random.Generator, snr: float) -> np.ndarray:
    """Magnitude (Rician) noise with SD = (99th percentile of |frames|) / ``snr``."""
    frames = np.asarray(frames, np.float32)
    sigma = float(np.percentile(np.abs(frames), 99.0)) / float(snr)
    real = frames + sigma * rng.standard_normal(frames.shape).astype(np.float32)
    imag = sigma * rng.standard_normal(frames.shape).astype(np.float32)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def motion_free_series(
    frames: np.ndarray,
    timings_ms=None,
    model: str | None = None,
    *,
    rank: int = 2,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """A series with the contrast evolution of ``frames`` and no motion at all.

    Each pixel's signal over the frames is replaced by a model of it whose parameters are
    per-pixel maps, so all frames share one anatomy exactly:

    * with ``timings_ms`` and a T1 ``model`` (``molli``, ``ir``, ``sasha``, ...; see
      :func:`core.mapping.fit_t1`): the magnitude of the fitted signal model (null crossings
      included); pixels whose fit fails keep the low-rank model;
    * otherwise a rank-``rank`` temporal model: the mean frame plus the first ``rank``
      principal components over frames (residual misalignment of an imperfect pre-alignment
      sits mostly in the later components and is dropped).

    ``frames`` should already be roughly aligned (e.g. by any engine): misalignment left in
    them blurs the maps but cannot survive as motion between frames. The input is not
    modified.

    Parameters
    ----------
    frames : ndarray (N, H, W) or Sequence
        A :class:`~core.sequence.Sequence` also supplies ``timings_ms`` and, through its
        ``kind``, the T1 model (:func:`core.mapping.model_for_kind`; a kind without one, such
        as cine, gets the low-rank model).
    timings_ms : array_like (N,), optional
    model : str, optional
        T1 model name; required with ``timings_ms``.
    rank : int
        Components of the low-rank model (>= 1).
    mask : ndarray (H, W) bool, optional
        Fit the T1 model only here (the low-rank model covers the rest).

    Returns
    -------
    series : ndarray (N, H, W) float32, non-negative
    how : str
        ``"t1 model <name>"`` or ``"rank <k>"`` (what produced the series).
    """
    from .sequence import Sequence

    if isinstance(frames, Sequence):
        from .mapping import model_for_kind

        if timings_ms is None and model is None and frames.timings_ms is not None:
            model = model_for_kind(frames.kind)
            timings_ms = frames.timings_ms if model is not None else None
        frames = frames.frames
    x = np.asarray(frames, np.float32)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"motion_free_series: frames must be (N, H, W) with N >= 2; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("motion_free_series: frames contain NaN or infinite values")
    rank = int(rank)
    if not 1 <= rank < x.shape[0]:
        raise ValueError(f"motion_free_series: rank must be between 1 and N - 1 = {x.shape[0] - 1}; got {rank}")
    n = x.shape[0]
    flat = x.reshape(n, -1).astype(np.float64)
    mean = flat.mean(axis=0)
    u, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    low_rank = (mean + (u[:, :rank] * s[:rank]) @ vt[:rank]).reshape(x.shape)
    series, how = low_rank, f"rank {rank}"
    if timings_ms is not None:
        if model is None:
            raise ValueError("motion_free_series: give the T1 model name with timings_ms (e.g. model='molli')")
        from .mapping import fit_t1, model_signal

        fit = fit_t1(x, timings_ms, model, mask=mask, device="cpu")
        with np.errstate(invalid="ignore", over="ignore"):
            signal = np.abs(model_signal(model, fit.params, timings_ms))
        good = np.isfinite(signal).all(axis=0) & ~fit.failed & np.isfinite(fit.t1_ms)
        series = np.where(good[None], signal, low_rank)
        how = f"t1 model {model}"
    return np.clip(series, 0.0, None).astype(np.float32), how
