"""An independent validation set: a phantom and a motion model the training code never uses.

Everything the network was trained or tuned on comes from :mod:`core.phantom` (its anatomy
and ``_breathing_displacement``) and :func:`core.semisynthetic.breathing_motion`. A model that
learned their quirks would look good on them and nowhere else, so the numbers that choose the
shipped configuration (``benchmarks/validate_fullres.py``) come from this module instead:

* :func:`torso_phantom` — another anatomy layout, drawn here: a torso with a chest wall,
  two lungs, a liver and a spleen under the diaphragm, a spine, an LV with papillary muscles
  and an elliptical (not circular) myocardium, an RV crescent; rendered with 3 x 3
  supersampling (partial volume), a static coil-sensitivity gain and Rician noise. Signals
  are written here too (MOLLI Look-Locker, STONE/SASHA saturation and inversion recovery,
  bSSFP cine), not taken from ``core.phantom``.
* :func:`second_motion` — another motion model: breath-hold drift with, in some series, a
  *failed breath-hold jump* of 10-20 mm for the frames after a random one; in-plane rotation
  up to 10 degrees; *sliding* at the chest wall (the inside moves, the wall and outside hardly:
  a sharp logistic transition, as sharp as it can be without folding); cardiac residual
  deformation of 2-4 mm RMS around the heart (and systolic contraction for cine); and a
  through-plane intensity change (a smooth gain of a few per cent per frame inside the
  moving region).

Seeds of every case are fixed in ``validate_fullres.py`` (anatomy seeds from 70000, motion
seeds from 80000, disjoint from every seed training and the older validation use). Training
must never import this module (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from napari_any2reg.core.semisynthetic import add_rician_noise
from napari_any2reg.core.spatial import folding_fraction, invert_displacement, warp_images, warp_labels

__all__ = ["TorsoPhantom", "torso_phantom", "second_motion", "apply_motion"]

# tissue: (T1 ms at 1.5 T, T2 ms, proton density); label of the cardiac labels convention
_TISSUES = {
    "air": (1000.0, 50.0, 0.0),
    "lung": (1200.0, 40.0, 0.12),
    "fat": (280.0, 80.0, 0.95),
    "muscle": (1000.0, 40.0, 0.75),
    "liver": (580.0, 45.0, 0.8),
    "spleen": (1050.0, 60.0, 0.85),
    "marrow": (550.0, 50.0, 0.7),
    "blood": (1580.0, 250.0, 0.95),
    "myocardium": (1000.0, 48.0, 0.8),
    "papillary": (1000.0, 48.0, 0.8),
}
_CARDIAC_LABEL = {"blood_lv": 1, "myocardium": 2, "blood_rv": 3, "papillary": 1}


@dataclasses.dataclass
class TorsoPhantom:
    """A motion-free series of :func:`torso_phantom`."""

    frames: np.ndarray  # (N, H, W) float32, noise-free
    labels: np.ndarray  # (H, W) int: 0 background, 1 LV blood, 2 LV myocardium, 3 RV blood
    heart_mask: np.ndarray  # (H, W) bool: LV + RV + myocardium, dilated ~5 mm
    inner_mask: np.ndarray  # (H, W) float in [0, 1]: inside the chest wall (what slides)
    heart_centre_px: tuple[float, float]
    timings_ms: np.ndarray
    kind: str
    spacing_mm: tuple[float, float]


def _ellipse(yy, xx, centre, radii, angle=0.0):
    """Normalised ellipse radius (< 1 inside)."""
    y, x = yy - centre[0], xx - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    a, b = c * y + s * x, -s * y + c * x
    return np.sqrt((a / radii[0]) ** 2 + (b / radii[1]) ** 2)


def _timings(kind: str, n: int) -> np.ndarray:
    if kind == "molli":  # 5(3)3: two Look-Locker trains, TIs interleaved
        first = 100.0 + 800.0 * np.arange(5)
        second = 180.0 + 800.0 * np.arange(3)
        return np.sort(np.concatenate([first, second]))
    if kind == "stone":
        t = np.linspace(120.0, 1050.0, n - 1)
        return np.concatenate([[np.inf], t])
    if kind == "sasha":
        t = np.linspace(110.0, 650.0, n - 1)
        return np.concatenate([[np.inf], t])
    if kind == "cine":
        return np.arange(n) * (900.0 / n)
    if kind == "t2prep":  # T2-prepared bSSFP: prep durations (ms)
        return np.linspace(0.0, 60.0, n)
    if kind == "mge":  # multi-gradient-echo: echo times (ms)
        return np.linspace(2.3, 2.3 + 2.2 * (n - 1), n)
    raise ValueError(kind)


def _signal(kind: str, t: float, t1, t2, pd):
    if kind == "molli":  # Look-Locker with apparent T1*: |A - B exp(-TI/T1*)|
        a, b = pd, 1.9 * pd
        t1_star = t1 / (b / np.maximum(a, 1e-6) - 1.0 + 1e-6)
        return np.abs(a - b * np.exp(-t / np.maximum(t1_star, 1.0)))
    if kind == "stone":
        return pd if not np.isfinite(t) else np.abs(pd * (1.0 - 2.0 * 0.96 * np.exp(-t / t1)))
    if kind == "sasha":
        return pd if not np.isfinite(t) else pd * (1.0 - 0.98 * np.exp(-t / t1))
    if kind == "cine":  # bSSFP: ~ sqrt(T2/T1) contrast, flat over time (the heart moves instead)
        return pd * np.sqrt(t2 / t1) * 1.6
    if kind == "t2prep":  # T2 decay during the prep, read out with the bSSFP's sqrt(T2/T1) weighting
        return pd * np.sqrt(t2 / t1) * 1.6 * np.exp(-t / np.maximum(t2, 1.0))
    if kind == "mge":  # T2* decay; T2* taken as 0.6 T2 (susceptibility dephasing on top of T2)
        return pd * np.exp(-t / np.maximum(0.6 * t2, 1.0))
    raise ValueError(kind)


def torso_phantom(kind: str, seed: int, shape=(192, 192), spacing_mm=(1.5, 1.5), n_frames: int | None = None) -> TorsoPhantom:
    """A motion-free ``kind`` series (``molli``, ``stone``, ``sasha``, ``cine``, ``t2prep``, ``mge``) of a torso
    drawn from ``seed`` (see the module docstring)."""
    rng = np.random.default_rng([seed, 7])
    n = {"molli": 8, "stone": 11, "sasha": 10, "cine": 25, "t2prep": 5, "mge": 8}[kind] if n_frames is None else int(n_frames)
    timings = _timings(kind, n)
    n = len(timings)
    h, w = shape
    dy, dx = (float(s) for s in spacing_mm)
    sub = 3
    yy, xx = np.meshgrid((np.arange(h * sub) + 0.5) / sub - 0.5, (np.arange(w * sub) + 0.5) / sub - 0.5, indexing="ij")
    yy, xx = yy * dy, xx * dx  # mm
    cy, cx = (h - 1) * dy / 2, (w - 1) * dx / 2
    tilt = rng.uniform(-0.2, 0.2)
    body_r = (min(cy, cx) * rng.uniform(0.72, 0.85), min(cy, cx) * rng.uniform(0.9, 0.98) * 1.15)
    body = _ellipse(yy, xx, (cy, cx), body_r, tilt)
    wall_mm = rng.uniform(9.0, 15.0)
    inner_r = (body_r[0] - wall_mm, body_r[1] - wall_mm)
    inner = _ellipse(yy, xx, (cy, cx), inner_r, tilt)
    tissue = np.full(yy.shape, "air", dtype=object)
    tissue[body < 1.0] = "fat"
    tissue[(inner < 1.0) & (body < 1.0)] = "muscle"
    tissue[inner < 0.93] = "fat"  # thin fat layer inside the wall, then organs
    # lungs either side of the heart
    heart_c = (cy + rng.uniform(-0.12, 0.02) * inner_r[0], cx + rng.uniform(-0.15, 0.05) * inner_r[1])
    for side in (-1, 1):
        lung_c = (cy - 0.15 * inner_r[0], cx + side * 0.5 * inner_r[1])
        lung = _ellipse(yy, xx, lung_c, (0.55 * inner_r[0], 0.38 * inner_r[1]), side * 0.2)
        tissue[(lung < 1.0) & (inner < 0.9)] = "lung"
    # liver and spleen under the diaphragm (bottom of the image = inferior/posterior here)
    liver = _ellipse(yy, xx, (cy + 0.55 * inner_r[0], cx - 0.25 * inner_r[1]), (0.42 * inner_r[0], 0.6 * inner_r[1]), 0.3)
    tissue[(liver < 1.0) & (inner < 0.92)] = "liver"
    spleen = _ellipse(yy, xx, (cy + 0.45 * inner_r[0], cx + 0.62 * inner_r[1]), (0.18 * inner_r[0], 0.14 * inner_r[1]), -0.4)
    tissue[(spleen < 1.0) & (inner < 0.92)] = "spleen"
    spine = _ellipse(yy, xx, (cy + 0.82 * inner_r[0], cx), (11.0, 13.0))
    tissue[spine < 1.0] = "marrow"
    # heart: elliptical LV (random eccentricity and angle), myocardium, RV crescent, papillaries
    lv_r = rng.uniform(19.0, 26.0)
    ecc = rng.uniform(0.82, 1.0)
    angle = rng.uniform(0, math.pi)
    thick = rng.uniform(7.0, 12.0)
    rv_dir = rng.uniform(-2.6, -1.9)  # towards the upper left (anterior, septal side)
    rv_c = (heart_c[0] + 0.9 * lv_r * math.sin(rv_dir), heart_c[1] + 1.25 * lv_r * math.cos(rv_dir))
    rv = _ellipse(yy, xx, rv_c, (0.9 * lv_r, 1.35 * lv_r), rv_dir + math.pi / 2)
    epi = _ellipse(yy, xx, heart_c, ((lv_r + thick) * ecc, lv_r + thick), angle)
    endo = _ellipse(yy, xx, heart_c, (lv_r * ecc, lv_r), angle)
    pericardial = _ellipse(yy, xx, heart_c, ((lv_r + thick + 6) * ecc, lv_r + thick + 6), angle)
    tissue[(pericardial < 1.0) | (rv < 1.25)] = "fat"
    label_name = np.full(yy.shape, "", dtype=object)
    rv_blood = (rv < 1.0) & (epi >= 1.0)
    tissue[rv < 1.12] = "myocardium"
    tissue[rv_blood] = "blood"
    label_name[rv_blood] = "blood_rv"
    tissue[epi < 1.0] = "myocardium"
    label_name[epi < 1.0] = "myocardium"
    tissue[endo < 1.0] = "blood"
    label_name[endo < 1.0] = "blood_lv"
    for k in range(2):
        a = angle + rng.uniform(0.6, 1.2) + k * math.pi * 0.8
        pc = (heart_c[0] + 0.62 * lv_r * math.sin(a), heart_c[1] + 0.62 * lv_r * math.cos(a))
        pap = _ellipse(yy, xx, pc, (3.5, 4.5), a)
        tissue[(pap < 1.0) & (endo < 1.0)] = "papillary"
        label_name[(pap < 1.0) & (endo < 1.0)] = "papillary"
    # per-subject tissue variation of T1 (5 %)
    t1 = np.zeros(yy.shape)
    t2 = np.zeros(yy.shape)
    pd = np.zeros(yy.shape)
    for name, (a1, a2, apd) in _TISSUES.items():
        sel = tissue == name
        t1[sel] = a1 * rng.uniform(0.95, 1.05)
        t2[sel] = a2
        pd[sel] = apd
    # a little texture in the organs (not a flat cartoon)
    texture = rng.standard_normal((h, w))
    texture = np.kron(texture, np.ones((sub, sub)))
    pd = pd * (1.0 + 0.03 * texture)
    frames = np.stack([_signal(kind, float(t), t1, np.maximum(t2, 1.0), pd) for t in timings])
    frames = frames.reshape(n, h, sub, w, sub).mean(axis=(2, 4))
    # a static smooth coil-sensitivity gain
    gy, gx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    gain = 1.0 + 0.25 * (rng.uniform(-1, 1) * gy + rng.uniform(-1, 1) * gx)
    frames = (frames * gain[None]).astype(np.float32)
    labels = np.zeros((h, w), np.int32)
    for name, value in _CARDIAC_LABEL.items():
        share = (label_name == name).reshape(h, sub, w, sub).mean(axis=(1, 3))
        labels[share > 0.5] = value
    heart_c_px = (heart_c[0] / dy, heart_c[1] / dx)
    py, px = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    heart_mask = ((py - heart_c_px[0]) * dy) ** 2 + ((px - heart_c_px[1]) * dx) ** 2 <= (lv_r + thick + 12.0) ** 2
    inner_px = _ellipse(py * dy, px * dx, (cy, cx), inner_r, tilt)
    return TorsoPhantom(frames=frames, labels=labels, heart_mask=heart_mask, inner_mask=inner_px,
                        heart_centre_px=heart_c_px, timings_ms=timings, kind=kind, spacing_mm=(dy, dx))


def _smooth(rng, n, shape, spacing_mm, scale_mm):
    """Unit-RMS smooth random fields (n, H, W) with correlation length ``scale_mm``."""
    h, w = shape
    ky = np.fft.fftfreq(h, d=spacing_mm[0])[:, None]
    kx = np.fft.fftfreq(w, d=spacing_mm[1])[None, :]
    envelope = np.exp(-2 * (math.pi * scale_mm) ** 2 * (ky**2 + kx**2) / 4.0)
    noise = rng.standard_normal((n, h, w))
    out = np.real(np.fft.ifft2(np.fft.fft2(noise) * envelope))
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-12
    return out


def second_motion(rng: np.random.Generator, n: int, shape, spacing_mm, *, inner_mask: np.ndarray,
                  heart_centre_px, amplitude_mm: float, jump_mm: float = 0.0, rotation_deg: float = 10.0,
                  cardiac_mm: float = 3.0, contraction_mm: float = 0.0, heart_radius_mm: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """The truth displacement ``(N, 2, H, W)`` (pixels, pull-back, zero-mean over frames) and
    the through-plane gain ``(N, H, W)`` of the second motion model (module docstring).

    ``inner_mask``: a soft inside-the-chest-wall map (< 1 inside, as :class:`TorsoPhantom`
    gives it, or any normalised radius); the inside slides against the outside.
    """
    h, w = shape
    dy, dx = (float(s) for s in spacing_mm)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    cy, cx = heart_centre_px
    ry, rx = (yy - cy) * dy, (xx - cx) * dx
    # breath-hold drift, mostly head-foot (image y here), plus a failed breath-hold jump
    direction = math.pi / 2 * 0 + rng.uniform(-0.35, 0.35)
    s = rng.uniform(0, 1, n)
    s = (s - s.min()) / max(np.ptp(s), 1e-9)
    shift = amplitude_mm * s
    if jump_mm > 0:
        start = int(rng.integers(1, n))
        shift[start:] += jump_mm
    t_y, t_x = shift * math.cos(direction), shift * math.sin(direction)
    t_y = t_y + 0.15 * amplitude_mm * rng.uniform(-1, 1, n) * math.sin(direction)
    theta = np.radians(rotation_deg) * rng.uniform(-1, 1, n)
    u_y, u_x = [], []
    magnitude = np.sqrt(t_y**2 + t_x**2) + np.abs(theta) * 80.0
    for i in range(n):
        # sliding: logistic of the chest-wall boundary, as sharp as it can be without folding
        width_mm = max(2.0, float(magnitude.max()) / 3.0)
        signed_mm = (inner_mask - 1.0) * 60.0  # normalised radius -> ~ mm near the boundary
        inside = 1.0 / (1.0 + np.exp(signed_mm / width_mm))
        weight = 0.08 + 0.92 * inside
        c, sn = math.cos(theta[i]), math.sin(theta[i])
        uy = ((c - 1) * ry + sn * rx + t_y[i]) * weight
        ux = ((-sn) * ry + (c - 1) * rx + t_x[i]) * weight
        u_y.append(uy)
        u_x.append(ux)
    u_mm = np.stack([np.stack(u_y), np.stack(u_x)], axis=1)
    heart_weight = np.exp(-(ry**2 + rx**2) / (2 * heart_radius_mm**2))
    if cardiac_mm > 0:
        fields = _smooth(rng, 2 * n, shape, (dy, dx), 18.0).reshape(n, 2, h, w)
        u_mm = u_mm + cardiac_mm / math.sqrt(2) * fields * heart_weight
    if contraction_mm > 0:  # cine: systolic inward motion, radial, peaking mid-cycle
        phase = np.arange(n) / n
        profile = np.sin(math.pi * np.clip(phase / 0.7, 0, 1)) ** 2
        r = np.sqrt(ry**2 + rx**2) + 1e-6
        radial = np.exp(-((r - 25.0) ** 2) / (2 * 18.0**2))
        for i in range(n):
            u_mm[i, 0] += contraction_mm * profile[i] * radial * ry / r
            u_mm[i, 1] += contraction_mm * profile[i] * radial * rx / r
    u_mm -= u_mm.mean(axis=0, keepdims=True)
    u_px = (u_mm / np.array([dy, dx]).reshape(1, 2, 1, 1)).astype(np.float32)
    for _ in range(10):
        if folding_fraction(u_px) == 0.0:
            break
        u_px = u_px * 0.85
    gain = 1.0 + 0.05 * _smooth(rng, n, shape, (dy, dx), 40.0) * (inner_mask < 1.0)
    return u_px, gain.astype(np.float32)


def apply_motion(frames: np.ndarray, truth: np.ndarray, gain: np.ndarray, rng: np.random.Generator, snr: float,
                 labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The frames (and labels) a scanner records under ``truth``: warping them by ``truth``
    gives back the motion-free frames (times the through-plane gain), then Rician noise."""
    inverse = invert_displacement(truth, iterations=40)
    moved = warp_images(np.asarray(frames, np.float32) * gain, inverse)
    moved = add_rician_noise(moved, rng, snr)
    moved_labels = None
    if labels is not None:
        stack = np.repeat(np.asarray(labels)[None], truth.shape[0], axis=0)
        moved_labels = warp_labels(stack, inverse)
    return moved.astype(np.float32), moved_labels
