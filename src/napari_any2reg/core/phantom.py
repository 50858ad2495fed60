"""Seeded, deterministic cardiac short-axis phantom with known motion.

:func:`make_phantom` draws a short-axis anatomy (body with subcutaneous fat and chest-wall
muscle, two lungs, mediastinal fat, liver, descending aorta, LV blood pool and myocardium,
RV crescent on the septal side) in millimetres, so the anatomy has a realistic size whatever
the pixel spacing. Every tissue gets a T1 from :data:`TISSUE_T1_MS` and a relative M0 from
:data:`TISSUE_PROPERTIES`; the M0 carries a smooth texture and a smooth coil-sensitivity bias.

For each frame the contrast image ``C_i`` is rendered on the *common* (anatomy) grid with
:func:`signal_model`, then moved into the raw frame by a known smooth, fold-free motion:

* anatomy point ``x`` appears in raw frame ``i`` at ``x + u_i(x)`` (``u`` = the returned
  ``displacement``, pull-back per ``docs/design.md`` §2: ``registered_i(x) = frame_i(x + u_i(x))``);
* ``v_i = invert_displacement(u_i)`` (frame -> anatomy) and the raw frame is
  ``frame_i(y) = C_i(y + v_i(y))``, i.e. ``warp_images(C_i, v_i)``, except that the anatomy is
  evaluated analytically at ``y + v_i(y)`` instead of being resampled, so raw frames are not
  blurred by interpolation (only the smooth texture and coil-bias fields are resampled);
* hence ``warp_images(frames, u) ≈ C`` (``C`` is kept in :attr:`Phantom.motion_free_frames`),
  up to one bilinear interpolation, and raw labels / landmarks follow the same maps.

Edges are anti-aliased with a 1.5-pixel smoothstep (like a band-limited MR image); pixels
more than 0.75 pixel inside a structure are pure tissue, where the noise-free signal is exactly
``signal_model(kind, t1_map, m0_map, timings)``.

Motion = respiratory translation (mostly along image y, the superior–inferior direction in
this phantom) + a small rotation about the LV centre, both weighted by a smooth map that is 1
around the heart and liver and decays toward the body wall, + a smooth random non-rigid field;
the three are made zero-mean over frames (the common grid is the average position). Cine adds
the cardiac contraction (LV blood pool shrinks, myocardium thickens at constant area, RV
squeezes); its common grid is end-diastole (trigger time 0).

Everything is drawn from ``numpy.random.default_rng`` streams spawned from ``seed``
(anatomy, motion and noise have separate streams, so the same seed gives the same patient for
every kind and the same motion with or without noise).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, special

from .sequence import Sequence
from .vocabulary import arg, interface
from .spatial import (
    compose_displacements,
    gaussian_smooth,
    invert_displacement,
    jacobian_determinant,
    sample_displacement_at_points,
    warp,
)

__all__ = [
    "Phantom",
    "make_phantom",
    "signal_model",
    "molli_inversion_times",
    "parse_molli_schedule",
    "stone_inversion_times",
    "sasha_saturation_times",
    "ir_inversion_times",
    "cine_trigger_times",
    "t2prep_durations",
    "mge_echo_times",
    "tissue_t1_ms",
    "tissue_t2_ms",
    "tissue_t2star_ms",
    "TISSUE_T2STAR_MS",
    "PHANTOM_KINDS",
    "TISSUE_T1_MS",
    "TISSUE_PROPERTIES",
    "DEFAULT_N_FRAMES",
]

#: Sequence kinds the phantom can simulate.
PHANTOM_KINDS = ("molli", "stone", "sasha", "ir", "asl", "perfusion", "cine", "t2prep", "mge")

#: Default number of frames per kind (MOLLI: given by the schedule, 5(3)3 -> 8).
DEFAULT_N_FRAMES = {"molli": 8, "stone": 11, "sasha": 10, "ir": 10, "asl": 20, "perfusion": 40, "cine": 25,
                    "t2prep": 4, "mge": 8}

# Typical T2* values in ms (multi-gradient-echo, bright blood). 1.5 T: myocardium 30-40
# (normal > 20; Anderson et al., Eur Heart J 2001: mean ~37 in normals), liver ~30
# (normal > 15-20; Wood et al., Blood 2005), skeletal muscle ~28, blood ~100 (oxygenated
# arterial blood, long), fat ~40 (ignoring the fat-water chemical shift modulation), lung
# ~2 (Hatabu et al., MRM 1999: 1-2 ms). 3 T: roughly 0.6-0.7 times the 1.5 T values
# (myocardium ~25 ms, Meloni et al., JMRI 2014).
TISSUE_T2STAR_MS: dict[float, dict[str, float]] = {
    1.5: {"myocardium": 35.0, "blood": 100.0, "liver": 30.0, "fat": 40.0, "muscle": 28.0, "lung": 2.0},
    3.0: {"myocardium": 25.0, "blood": 60.0, "liver": 20.0, "fat": 30.0, "muscle": 20.0, "lung": 1.2},
}

# Typical T1 values in ms (MOLLI-type apparent values for heart and blood).
#  Native 1.5 T: myocardium 950-1050, blood 1500-1600 (Messroghli et al., JCMR 2017 consensus;
#  Kellman & Hansen, JCMR 2014); liver 550-600, skeletal muscle 1000-1100, subcutaneous fat
#  250-350 (de Bazelaire et al., Radiology 2004; MOLLI reads fat short, ~260); lung ~1200
#  (Stadler et al., MRM 2005). Native 3 T: myocardium 1150-1250, blood 1800-2000, liver
#  ~810, fat ~380, muscle ~1400 (de Bazelaire 2004), lung ~1300.
#  Post-contrast (10-20 min after 0.1-0.2 mmol/kg Gd, ECV studies): myocardium 400-500,
#  blood 250-350, liver 300-400; fat and muscle shorten less.
TISSUE_T1_MS: dict[float, dict[str, dict[str, float]]] = {
    1.5: {
        "native": {"myocardium": 1000.0, "blood": 1550.0, "liver": 580.0, "fat": 260.0, "muscle": 1000.0, "lung": 1200.0},
        "post": {"myocardium": 450.0, "blood": 300.0, "liver": 350.0, "fat": 230.0, "muscle": 600.0, "lung": 500.0},
    },
    3.0: {
        "native": {"myocardium": 1200.0, "blood": 1900.0, "liver": 810.0, "fat": 380.0, "muscle": 1400.0, "lung": 1300.0},
        "post": {"myocardium": 500.0, "blood": 330.0, "liver": 400.0, "fat": 330.0, "muscle": 700.0, "lung": 550.0},
    },
}

#: Per-tissue properties other than T1 (field-independent approximations):
#: ``m0`` relative apparent equilibrium signal (bSSFP-read, blood brightest, lung dark),
#: ``t2_ms`` for the cine/ASL bSSFP contrast and the T2-prep decay (myocardium 50 ms, the
#: 1.5 T T2-prep bSSFP normal range 45-55 ms; Giri et al., JCMR 2009; blood ~250 ms,
#: liver ~45 ms), ``molli_b_over_a`` the MOLLI ``B/A`` ratio
#: (``T1 = T1* (B/A - 1)``; ``B/A > 2`` because the Look-Locker readout shortens T1*),
#: ``texture`` relative amplitude of the smooth M0 texture.
TISSUE_PROPERTIES: dict[str, dict[str, float]] = {
    "blood": {"m0": 1.0, "t2_ms": 250.0, "molli_b_over_a": 2.10, "texture": 0.02},
    "myocardium": {"m0": 0.7, "t2_ms": 50.0, "molli_b_over_a": 2.15, "texture": 0.03},
    "liver": {"m0": 0.6, "t2_ms": 45.0, "molli_b_over_a": 2.20, "texture": 0.05},
    "fat": {"m0": 0.9, "t2_ms": 80.0, "molli_b_over_a": 2.30, "texture": 0.05},
    "muscle": {"m0": 0.55, "t2_ms": 35.0, "molli_b_over_a": 2.15, "texture": 0.05},
    "lung": {"m0": 0.08, "t2_ms": 30.0, "molli_b_over_a": 2.05, "texture": 0.30},
}

# Anatomical components painted in this order: (name, tissue, label). Label per DESIGN §2.
_COMPONENTS: tuple[tuple[str, str | None, int], ...] = (
    ("air", None, 0),
    ("subcutaneous_fat", "fat", 0),
    ("chest_wall", "muscle", 0),
    ("lung", "lung", 0),
    ("posterior_mediastinum", "muscle", 0),
    ("aorta", "blood", 0),
    ("liver", "liver", 0),
    ("mediastinal_fat", "fat", 0),
    ("rv_wall", "myocardium", 0),
    ("rv_blood", "blood", 3),
    ("lv_myocardium", "myocardium", 2),
    ("lv_blood", "blood", 1),
    ("papillary", "myocardium", 1),  # papillary muscles belong to the LV cavity label (ACDC)
)
_INDEX = {name: k for k, (name, _, _) in enumerate(_COMPONENTS)}

# Perfusion: Gd concentration of each component = scale * one of the first-pass curves of
# _perfusion_curves ("rv", "lv" = arterial input, "lung", "myo" = myocardial tissue, "late").
_PERFUSION_UPTAKE = {
    "air": ("lv", 0.0),
    "subcutaneous_fat": ("late", 0.03),
    "chest_wall": ("late", 0.10),
    "lung": ("lung", 1.0),
    "posterior_mediastinum": ("late", 0.10),
    "aorta": ("lv", 1.0),
    "liver": ("late", 0.35),
    "mediastinal_fat": ("late", 0.03),
    "rv_wall": ("myo", 1.0),
    "rv_blood": ("rv", 1.0),
    "lv_myocardium": ("myo", 1.0),
    "lv_blood": ("lv", 1.0),
    "papillary": ("myo", 1.0),
}
# ASL: fractional signal drop in labelled frames (exaggerated blood, ~2 % myocardium).
_ASL_LABEL_FRACTION = {"aorta": 0.08, "rv_blood": 0.08, "lv_blood": 0.08, "lv_myocardium": 0.02, "rv_wall": 0.02, "papillary": 0.02}

_CINE_FLIP_DEG = 50.0
_PERFUSION_TS_MS = 100.0
_RELAXIVITY = {1.5: 4.5, 3.0: 4.3}  # Gd r1 in /mM/s (typical macrocyclic agents)


# ====================================================================== data class
@dataclasses.dataclass(frozen=True, eq=False)
class Phantom:
    """A simulated cardiac sequence with its ground truth.

    Attributes
    ----------
    sequence : Sequence
        Raw (moving) frames ``(N, H, W)`` float32 magnitude, timings in ms, spacing, kind.
    displacement : ndarray, float32, shape (N, 2, H, W)
        True pull-back displacement in pixels ``(dy, dx)``:
        ``registered_i(x) = frame_i(x + u_i(x))`` for ``x`` on the common grid.
    labels : ndarray, uint8, shape (N, H, W)
        Labels as seen in each raw frame: 0 background, 1 LV blood pool, 2 LV myocardium,
        3 RV blood pool (the anatomy's labels at ``y + v_i(y)``, like
        ``warp_labels(common_labels, v)`` without the nearest-neighbour rounding of positions).
    common_labels : ndarray, uint8, shape (H, W)
        Labels on the common grid.
    heart_mask : ndarray, bool, shape (H, W)
        LV + myocardium + RV on the common grid, dilated by ~3 pixels.
    landmarks : dict of str to ndarray (N, 2) float32
        True ``(y, x)`` pixel position of each landmark in each raw frame.
    common_landmarks : dict of str to ndarray (2,) float32
        ``(y, x)`` on the common grid.
    t1_map : ndarray, float32, shape (H, W)
        True T1 (ms) of the dominant tissue per pixel on the common grid (0 in air).
    m0_map : ndarray, float32, shape (H, W)
        Equilibrium signal (M0 incl. texture and coil bias) on the common grid; the
        noise-free common-grid signal of a pure-tissue pixel is
        ``signal_model(kind, t1_map, m0_map, timings)``.
    params : dict
        How the phantom was made; ``make_phantom(**params["arguments"])`` reproduces it.
    motion_free_frames : ndarray, float32, shape (N, H, W)
        Noise-free contrast images on the common grid (what perfect registration of the
        noise-free frames gives).
    t2_map, t2star_map : ndarray, float32, shape (H, W)
        True T2 and T2* (ms) of the dominant tissue per pixel on the common grid (0 in air);
        the noise-free pure-tissue signal of ``t2prep`` is ``m0_map exp(-t/T2)``, of ``mge``
        ``m0_map exp(-TE/T2*)``.
    """

    sequence: Sequence
    displacement: np.ndarray
    labels: np.ndarray
    common_labels: np.ndarray
    heart_mask: np.ndarray
    landmarks: dict[str, np.ndarray]
    common_landmarks: dict[str, np.ndarray]
    t1_map: np.ndarray
    m0_map: np.ndarray
    params: dict[str, Any]
    motion_free_frames: np.ndarray
    t2_map: np.ndarray | None = None
    t2star_map: np.ndarray | None = None


# ====================================================================== tissue table
def tissue_t1_ms(tissue: str, field_strength: float = 1.5, contrast: str = "native") -> float:
    """T1 (ms) of ``tissue`` from :data:`TISSUE_T1_MS` (field strength 1.5 or 3 T)."""
    table = TISSUE_T1_MS[_field_key(field_strength)]
    if contrast not in table:
        raise ValueError(f"contrast must be one of {sorted(table)}; got {contrast!r}")
    if tissue not in table[contrast]:
        raise ValueError(f"unknown tissue {tissue!r}; known: {sorted(table[contrast])}")
    return float(table[contrast][tissue])


def tissue_t2_ms(tissue: str) -> float:
    """T2 (ms) of ``tissue`` (``TISSUE_PROPERTIES[tissue]["t2_ms"]``; taken as field-independent)."""
    if tissue not in TISSUE_PROPERTIES:
        raise ValueError(f"unknown tissue {tissue!r}; known: {sorted(TISSUE_PROPERTIES)}")
    return float(TISSUE_PROPERTIES[tissue]["t2_ms"])


def tissue_t2star_ms(tissue: str, field_strength: float = 1.5) -> float:
    """T2* (ms) of ``tissue`` from :data:`TISSUE_T2STAR_MS` (field strength 1.5 or 3 T)."""
    table = TISSUE_T2STAR_MS[_field_key(field_strength)]
    if tissue not in table:
        raise ValueError(f"unknown tissue {tissue!r}; known: {sorted(table)}")
    return float(table[tissue])


def _field_key(field_strength: float) -> float:
    for key in TISSUE_T1_MS:
        if abs(float(field_strength) - key) < 0.26:
            return key
    raise ValueError(f"field_strength must be 1.5 or 3.0 (T); got {field_strength!r}")


# ====================================================================== timings
_SCHEDULE_RE = re.compile(r"^\d+(\(\d+\)\d+)*$")


def parse_molli_schedule(schedule: str) -> tuple[list[int], list[int]]:
    """Parse a MOLLI scheme such as ``"5(3)3"`` or ``"4(1)3(1)2"``.

    Returns
    -------
    images : list of int
        Images acquired in each Look-Locker experiment (``[5, 3]``, ``[4, 3, 2]``).
    recovery : list of int
        Recovery heartbeats between experiments (``[3]``, ``[1, 1]``).
    """
    text = str(schedule).replace(" ", "")
    if not _SCHEDULE_RE.match(text):
        raise ValueError(
            f"MOLLI schedule {schedule!r} not understood; use e.g. '5(3)3' or '4(1)3(1)2' "
            "(images per Look-Locker experiment, recovery beats in brackets)."
        )
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    images, recovery = numbers[0::2], numbers[1::2]
    if any(n < 1 for n in images):
        raise ValueError(f"MOLLI schedule {schedule!r}: each experiment needs at least one image")
    return images, recovery


def molli_inversion_times(
    schedule: str = "5(3)3",
    heart_rate_bpm: float = 60.0,
    first_ti_ms: float = 100.0,
    ti_increment_ms: float = 80.0,
) -> np.ndarray:
    """Inversion times (ms) of a MOLLI scheme, sorted ascending (scanner convention).

    Look-Locker experiment ``e`` starts at ``first_ti_ms + e * ti_increment_ms``; its ``k``-th
    image is one RR interval (``60000 / heart_rate_bpm`` ms) later than the previous one.
    ``5(3)3`` at 60 bpm gives 100, 180, 1100, 1180, 2100, 2180, 3100, 4100 ms.
    """
    images, _ = parse_molli_schedule(schedule)
    if heart_rate_bpm <= 0:
        raise ValueError(f"heart_rate_bpm must be positive; got {heart_rate_bpm}")
    rr = 60000.0 / float(heart_rate_bpm)
    tis = [first_ti_ms + e * ti_increment_ms + k * rr for e, n in enumerate(images) for k in range(n)]
    return np.sort(np.asarray(tis, dtype=np.float64))


def stone_inversion_times(n_frames: int = 11, first_ti_ms: float = 110.0, last_ti_ms: float = 1100.0) -> np.ndarray:
    """STONE-like timings: one non-inverted frame (``TI = inf``) then ``n_frames - 1``
    inversion times spread evenly from ``first_ti_ms`` to ``last_ti_ms``."""
    n = _check_n(n_frames)
    return np.concatenate([[np.inf], np.linspace(first_ti_ms, last_ti_ms, n - 1)])


def sasha_saturation_times(n_frames: int = 10, first_ts_ms: float = 100.0, last_ts_ms: float = 700.0) -> np.ndarray:
    """SASHA timings: one non-saturated frame (``TS = inf``) then ``n_frames - 1`` saturation
    recovery times from ``first_ts_ms`` to ``last_ts_ms``."""
    n = _check_n(n_frames)
    return np.concatenate([[np.inf], np.linspace(first_ts_ms, last_ts_ms, n - 1)])


def ir_inversion_times(n_frames: int = 10, first_ti_ms: float = 100.0, last_ti_ms: float = 3000.0) -> np.ndarray:
    """Generic inversion recovery: ``n_frames`` TIs geometrically spaced (denser early)."""
    n = _check_n(n_frames)
    return np.geomspace(first_ti_ms, last_ti_ms, n)


def cine_trigger_times(n_frames: int = 25, heart_rate_bpm: float = 60.0) -> np.ndarray:
    """Trigger times (ms) of ``n_frames`` cine phases evenly covering one RR interval."""
    n = _check_n(n_frames)
    return np.arange(n) * (60000.0 / float(heart_rate_bpm)) / n


def t2prep_durations(n_frames: int = 4, last_ms: float = 55.0) -> np.ndarray:
    """T2-preparation durations (ms) of a T2-prepared bSSFP series: 0 (no preparation) then
    ``n_frames - 1`` durations up to ``last_ms`` (4 frames: 0, 25, 40, 55 ms; scanners use 0, 25,
    55 or 0, 24, 55 ms, Giri et al. JCMR 2009)."""
    n = _check_n(n_frames)
    if n == 2:
        return np.array([0.0, float(last_ms)])
    return np.concatenate([[0.0], np.linspace(25.0 * last_ms / 55.0, last_ms, n - 1)])


def mge_echo_times(n_frames: int = 8, first_te_ms: float = 2.6, echo_spacing_ms: float = 2.3) -> np.ndarray:
    """Echo times (ms) of a multi-gradient-echo T2* series: ``first_te_ms + k echo_spacing_ms``
    (8 echoes 2.6-18.7 ms, like the cardiac bright-blood T2* protocol of Westwood et al.)."""
    n = _check_n(n_frames)
    return float(first_te_ms) + float(echo_spacing_ms) * np.arange(n, dtype=np.float64)


def _check_n(n_frames: int) -> int:
    n = int(n_frames)
    if n < 2 or n > 2000:
        raise ValueError(f"n_frames must be between 2 and 2000; got {n_frames}")
    return n


# ====================================================================== signal models
def signal_model(
    kind: str,
    t1_ms,
    m0,
    timings_ms,
    *,
    b_over_a=2.0,
    inversion_efficiency=1.0,
    saturation_efficiency=1.0,
    t2_ms=None,
    t2star_ms=None,
    flip_angle_deg: float = _CINE_FLIP_DEG,
    labelled=None,
    label_fraction=0.0,
    concentration_mM=None,
    saturation_time_ms: float = _PERFUSION_TS_MS,
    relaxivity_per_mM_s: float = 4.5,
) -> np.ndarray:
    """Noise-free magnitude signal, vectorised over pixels and frames.

    Parameters
    ----------
    kind : str
        ``"molli"``: ``|A - B exp(-TI/T1*)|`` with ``A = m0``, ``B = b_over_a * m0`` and
        ``T1* = T1 / (B/A - 1)``.
        ``"stone"``, ``"ir"``: ``m0 |1 - 2 eff exp(-TI/T1)|`` (``eff`` =
        ``inversion_efficiency``; ``TI = inf`` gives ``m0``).
        ``"sasha"``: ``m0 (1 - B exp(-TS/T1))`` with ``B = saturation_efficiency``.
        ``"cine"``: bSSFP steady state ``m0 sin(a) / (1 + cos(a) + (1 - cos(a)) T1/T2)``,
        the same for every frame (needs ``t2_ms``).
        ``"asl"``: the cine contrast times ``1 - label_fraction`` in labelled frames
        (``labelled`` defaults to every odd frame: control, label, control, ...).
        ``"perfusion"``: saturation recovery ``m0 (1 - exp(-TS/T1(t)))`` with
        ``1/T1(t) = 1/T1 + r1 C(t)``, ``C = concentration_mM`` per frame.
        ``"t2prep"``: T2-prepared bSSFP ``m0 exp(-t/T2)`` over the preparation durations ``t``
        (needs ``t2_ms``; the readout's T1 recovery is left out, so the known T2 is the
        mono-exponential one). ``"mge"``: multi-gradient echo ``m0 exp(-TE/T2*)`` (needs
        ``t2star_ms``).
    t1_ms, m0 : float or array_like
        Broadcastable against each other (e.g. ``(H, W)`` maps); ``t1 <= 0`` gives 0.
    timings_ms : array_like, shape (N,)
        TI / TS / trigger time per frame (``inf`` allowed for STONE and SASHA).
    b_over_a, t2_ms, label_fraction : float or array_like
        Per-pixel parameters, broadcastable like ``t1_ms``.
    concentration_mM : array_like, shape (N,) or (N, ...)
        Perfusion only: contrast-agent concentration per frame (default 0).

    Returns
    -------
    ndarray, float64, shape ``(N,) + broadcast(t1_ms, m0, ...).shape`` (frame axis first).
    """
    kind = str(kind).lower()
    t1 = np.asarray(t1_ms, dtype=np.float64)
    m0 = np.asarray(m0, dtype=np.float64)
    per_pixel = [t1, m0, np.asarray(b_over_a, np.float64), np.asarray(label_fraction, np.float64)]
    if t2_ms is not None:
        per_pixel.append(np.asarray(t2_ms, np.float64))
    if t2star_ms is not None:
        per_pixel.append(np.asarray(t2star_ms, np.float64))
    base = np.broadcast_shapes(*(p.shape for p in per_pixel))
    t = np.asarray(timings_ms, dtype=np.float64).reshape((-1,) + (1,) * len(base))
    n = t.shape[0]
    valid = t1 > 0
    t1 = np.where(valid, t1, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "molli":
            ba = np.asarray(b_over_a, np.float64)
            if np.any(ba <= 1):
                raise ValueError("MOLLI b_over_a must be > 1")
            t1_star = t1 / (ba - 1.0)
            s = np.abs(1.0 - ba * np.exp(-t / t1_star))
        elif kind in ("stone", "ir"):
            s = np.abs(1.0 - 2.0 * inversion_efficiency * np.exp(-t / t1))
        elif kind == "sasha":
            s = np.abs(1.0 - saturation_efficiency * np.exp(-t / t1))
        elif kind in ("cine", "asl"):
            if t2_ms is None:
                raise ValueError(f"signal_model({kind!r}) needs t2_ms (bSSFP contrast)")
            s = _bssfp(t1, np.asarray(t2_ms, np.float64), flip_angle_deg) * np.ones_like(t)
            if kind == "asl":
                lab = (np.arange(n) % 2 == 1) if labelled is None else np.asarray(labelled, bool).reshape(-1)
                if lab.size != n:
                    raise ValueError(f"labelled has {lab.size} entries for {n} frames")
                lab = lab.reshape((-1,) + (1,) * len(base))
                s = s * (1.0 - np.asarray(label_fraction, np.float64) * lab)
        elif kind in ("t2prep", "mge"):
            decay_ms = t2_ms if kind == "t2prep" else t2star_ms
            if decay_ms is None:
                raise ValueError(f"signal_model({kind!r}) needs {'t2_ms' if kind == 't2prep' else 't2star_ms'}")
            s = np.exp(-t / np.asarray(decay_ms, np.float64))
        elif kind == "perfusion":
            conc = 0.0 if concentration_mM is None else np.asarray(concentration_mM, np.float64)
            if np.ndim(conc) == 1:
                conc = conc.reshape((-1,) + (1,) * len(base))
            r1 = 1.0 / t1 + relaxivity_per_mM_s * conc / 1000.0
            s = 1.0 - np.exp(-saturation_time_ms * r1) * np.ones_like(t)
        else:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(PHANTOM_KINDS)}")
    out = m0 * np.where(valid, s, 0.0)
    return np.broadcast_to(out, (n,) + base).astype(np.float64, copy=True)


def _bssfp(t1, t2, flip_angle_deg):
    a = math.radians(flip_angle_deg)
    return math.sin(a) / (1.0 + math.cos(a) + (1.0 - math.cos(a)) * t1 / t2)


def _gamma_variate(t_s, t0_s, tmax_s, alpha):
    tau = np.clip((t_s - t0_s) / tmax_s, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(tau > 0, tau**alpha * np.exp(alpha * (1.0 - tau)), 0.0)
    return np.nan_to_num(out)


def _perfusion_curves(t_ms: np.ndarray, rr_ms: float) -> dict[str, np.ndarray]:
    """First-pass Gd concentration curves (mM) for the RV, LV/aorta, lung, myocardium and
    late-enhancing tissues at ``t_ms``: gamma variates plus recirculation and a plateau."""
    t = np.asarray(t_ms, np.float64) / 1000.0
    duration = (t.max() + rr_ms / 1000.0) if t.size else 1.0
    t0 = min(5.0 * rr_ms / 1000.0, 0.2 * duration)  # bolus arrival after a few baseline beats
    rv = 6.0 * _gamma_variate(t, t0, 2.5, 3.0)
    lv_t0 = t0 + 3.0
    lv = 4.5 * _gamma_variate(t, lv_t0, 3.0, 3.0) + 0.6 * _gamma_variate(t, lv_t0 + 9.0, 4.0, 2.0)
    lv = lv + 0.5 * np.clip(1.0 - np.exp(-(t - lv_t0) / 8.0), 0.0, None)
    rv = rv + 0.5 * np.clip(1.0 - np.exp(-(t - lv_t0) / 8.0), 0.0, None)
    lung = 0.6 * _gamma_variate(t, t0 + 1.2, 3.0, 3.0) + 0.1 * np.clip(1.0 - np.exp(-(t - lv_t0) / 8.0), 0.0, None)
    myo = 0.45 * _gamma_variate(t, lv_t0 + 1.0, 5.0, 2.0) + 0.25 * np.clip(1.0 - np.exp(-(t - lv_t0) / 12.0), 0.0, None)
    late = 1.0 * np.clip(1.0 - np.exp(-(t - lv_t0 - 2.0) / 10.0), 0.0, None)
    return {"rv": rv, "lv": lv, "lung": lung, "myo": myo, "late": late}


# ====================================================================== anatomy
def _draw_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Random short-axis anatomy in mm, origin at the image centre, ``y`` down (posterior),
    ``x`` right (patient's left). Image top = anterior chest wall, image left = patient's
    right (liver, RV side)."""
    u = rng.uniform
    a: dict[str, Any] = {}
    # body ellipse with a subcutaneous fat layer and a chest-wall muscle layer
    by, bx = u(0.0, 12.0), u(-10.0, 6.0)
    body_rx, body_ry = u(125.0, 150.0), u(95.0, 115.0)
    fat, wall = u(6.0, 14.0), u(8.0, 14.0)
    a.update(body_centre=(by, bx), body_radii=(body_rx, body_ry), body_angle_deg=u(-5.0, 5.0),
             fat_mm=fat, chest_wall_mm=wall)
    # thoracic cavity (lungs): under the anterior chest wall, posterior body is muscle/spine
    cav_rx = body_rx - fat - wall - u(5.0, 15.0)
    cav_ry = (body_ry - fat - wall) * u(0.75, 0.85)
    cav_cy = by - body_ry + fat + wall + cav_ry + 1.0
    a.update(cavity_centre=(cav_cy, bx + u(-4.0, 4.0)), cavity_radii=(cav_rx, cav_ry))
    # heart
    ly, lx = u(-8.0, 8.0), u(-2.0, 12.0)
    r_endo = u(20.0, 25.0)
    r_epi = r_endo + u(8.0, 11.0)
    septal = math.pi + math.radians(u(-12.0, 12.0))  # direction LV centre -> septum (image left)
    half = math.radians(u(50.0, 65.0))  # half angle between the RV insertion points
    # RV ellipse centre distance from the LV centre: a little beyond the chord joining the
    # insertion points, so the RV cavity meets the epicardium at a clear angle
    d = r_epi * (math.cos(half) + u(0.05, 0.2))
    rv_width = u(14.0, 22.0)
    rv_along = rv_width + r_epi - d
    ratio = (r_epi * math.cos(half) - d) / rv_along
    rv_across = r_epi * math.sin(half) / math.sqrt(1.0 - ratio**2)  # passes through the insertions
    a.update(lv_centre=(ly, lx), r_endo=r_endo, r_epi=r_epi, septal_angle=septal, insertion_half_angle=half,
             rv_centre=(ly + d * math.sin(septal), lx + d * math.cos(septal)), rv_radii=(rv_along, rv_across),
             rv_wall_mm=u(3.0, 5.0), rv_width_mm=rv_width)
    pap = []
    for sign in (-1.0, 1.0):  # antero-lateral and infero-lateral papillary muscles
        ang = septal + math.pi + sign * math.radians(u(30.0, 50.0))
        rp = u(2.5, 4.0)
        rad = r_endo - 0.7 * rp
        pap.append((ly + rad * math.sin(ang), lx + rad * math.cos(ang), rp))
    a["papillary"] = pap
    # mediastinal fat around the heart and an anterior band to the chest wall (splits the lungs)
    hy, hx = ly + 0.35 * d * math.sin(septal), lx + 0.35 * d * math.cos(septal) - 0.3 * rv_width
    a["mediastinum"] = ((hy, hx), (r_epi + 0.6 * rv_width + u(3.0, 8.0), r_epi * 1.15 + u(2.0, 6.0)))
    top = cav_cy - cav_ry
    band_half = max((ly - r_epi - top) / 2.0 + 12.0, 10.0)
    a["anterior_mediastinum"] = ((top + band_half - 8.0, lx - 0.4 * r_epi), (u(8.0, 15.0), band_half))
    # posterior mediastinum with the descending aorta, near the bottom of the cavity
    bottom = cav_cy + cav_ry
    ar = u(9.0, 12.0)
    ay, ax = bottom - ar - u(2.0, 8.0), lx + u(0.0, 15.0)
    a.update(aorta=(ay, ax, ar), posterior_mediastinum=((ay + 6.0, ax - 12.0), (u(24.0, 32.0), u(18.0, 24.0))))
    # liver: lower left of the image (patient's right, inferior)
    a.update(liver_centre=(ly + u(50.0, 70.0), lx - u(55.0, 75.0)), liver_radii=(u(60.0, 85.0), u(40.0, 55.0)),
             liver_angle_deg=u(-25.0, -5.0))
    # texture / coil bias
    a["bias_slope"] = u(-0.25, -0.05)
    return a


def _grid_mm(shape, spacing):
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2.0) * np.float32(spacing[0])
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2.0) * np.float32(spacing[1])
    return np.meshgrid(y, x, indexing="ij")


def _ellipse_distance(Y, X, centre, radii, angle_rad=0.0):
    """Approximate signed distance (mm, negative inside) to an ellipse whose first radius
    lies along the direction ``(sin angle, cos angle)`` in ``(y, x)``."""
    dy, dx = Y - np.float32(centre[0]), X - np.float32(centre[1])
    c, s = np.float32(math.cos(angle_rad)), np.float32(math.sin(angle_rad))
    a = c * dx + s * dy
    b = -s * dx + c * dy
    ra, rb = np.float32(radii[0]), np.float32(radii[1])
    q = np.maximum(np.sqrt((a / ra) ** 2 + (b / rb) ** 2), np.float32(1e-9))
    grad = np.sqrt((a / ra**2) ** 2 + (b / rb**2) ** 2) / q
    return (q - 1.0) / np.maximum(grad, np.float32(1e-6))


def _coverage(distance, edge_mm):
    """Pixel coverage from a signed distance: a smoothstep 1.5 pixels wide (anti-aliasing,
    like the blur of a band-limited MR image); pure tissue from 0.75 pixel inside."""
    c = np.clip(0.5 - distance / np.float32(1.5 * edge_mm), 0.0, 1.0)
    return c * c * (3.0 - 2.0 * c)


def _paints(anat, edge):
    """The anatomy as a painter's list ``[(component, coverage, extent), ...]`` in painting
    order (later paints cover earlier ones). ``coverage(Y, X)`` evaluates the shape at mm
    positions; ``extent = (cy, cx, r)`` is a disc (mm) outside which the coverage is 0, or
    ``None`` for shapes that span the image."""

    def ellipse(centre, radii, angle=0.0, grow=0.0):
        ra, rb = radii[0] + grow, radii[1] + grow
        return (lambda Y, X: _coverage(_ellipse_distance(Y, X, centre, (ra, rb), angle), edge),
                (centre[0], centre[1], max(ra, rb)))

    def circle(cy, cx, r):
        cy, cx, r = np.float32(cy), np.float32(cx), np.float32(r)
        return lambda Y, X: _coverage(np.sqrt((Y - cy) ** 2 + (X - cx) ** 2) - r, edge), (float(cy), float(cx), float(r))

    body_angle = math.radians(anat["body_angle_deg"])
    cache: dict[float, tuple[Any, np.ndarray]] = {}

    def body(Y, X, grow=0.0):  # the body ellipses span the image and are used twice: cache
        if grow not in cache or cache[grow][0] is not Y:
            cache[grow] = (Y, ellipse(anat["body_centre"], anat["body_radii"], body_angle, grow=grow)[0](Y, X))
        return cache[grow][1]

    fat, wall = anat["fat_mm"], anat["chest_wall_mm"]
    septal = anat["septal_angle"]
    (med_c, med_r), (band_c, band_r) = anat["mediastinum"], anat["anterior_mediastinum"]
    mediastinum, band = ellipse(med_c, med_r)[0], ellipse(band_c, band_r)[0]
    paints = [
        ("chest_wall", lambda Y, X: body(Y, X), None),
        ("lung", *ellipse(anat["cavity_centre"], anat["cavity_radii"])),
        ("posterior_mediastinum", *ellipse(*anat["posterior_mediastinum"])),
        ("aorta", *circle(*anat["aorta"])),
        ("liver", *ellipse(anat["liver_centre"], anat["liver_radii"], math.radians(anat["liver_angle_deg"]))),
        ("mediastinal_fat", lambda Y, X: np.maximum(mediastinum(Y, X), band(Y, X)), None),
        ("rv_wall", *ellipse(anat["rv_centre"], anat["rv_radii"], septal, grow=anat["rv_wall_mm"])),
        ("rv_blood", *ellipse(anat["rv_centre"], anat["rv_radii"], septal)),
        ("lv_myocardium", *circle(*anat["lv_centre"], anat["r_epi"])),
        ("lv_blood", *circle(*anat["lv_centre"], anat["r_endo"])),
    ]
    paints += [("papillary", *circle(*p)) for p in anat["papillary"]]
    paints += [  # chest wall and subcutaneous fat last, so organs stop at the ribs
        ("chest_wall", lambda Y, X: body(Y, X, -fat) * (1.0 - body(Y, X, -fat - wall)), None),
        ("subcutaneous_fat", lambda Y, X: body(Y, X) * (1.0 - body(Y, X, -fat)), None),
        ("air", lambda Y, X: 1.0 - body(Y, X), None),  # nothing outside the body
    ]
    return paints


def _render(anat, Y, X, edge, axes, margin_mm=0.0, values=None, fractions=False) -> dict[str, np.ndarray]:
    """Composite the anatomy at mm positions ``(Y, X)`` (shape ``S = (..., H, W)``).

    Paints are applied from the top down: each contributes ``coverage * remaining`` and what
    is left underneath shrinks by ``1 - coverage`` (the same fractions as painting bottom-up).
    A shape with a finite extent is only evaluated on the block of pixels it can reach.

    Parameters
    ----------
    axes : (ndarray (H,), ndarray (W,))
        Grid positions (mm); ``Y[..., i, j]`` lies within ``margin_mm`` of
        ``(axes[0][i], axes[1][j])``.
    values : callable, optional
        ``values(k, index)`` is the signal of component ``k`` on the block ``index`` of ``S``;
        the image ``sum_k fraction_k * values(k)`` is returned under ``"image"``.
    fractions : bool
        Also return the per-component fractions ``(K,) + S`` under ``"fractions"``.

    Returns
    -------
    dict with ``"dominant"``: index of the component with the largest single contribution.
    """
    shape = np.broadcast_shapes(Y.shape, X.shape)
    remaining = np.ones(shape, np.float32)
    best = np.zeros(shape, np.float32)
    dominant = np.zeros(shape, np.int64)
    image = None
    out: dict[str, np.ndarray] = {}
    if fractions:
        out["fractions"] = np.zeros((len(_COMPONENTS),) + shape, np.float32)
    layers = [(_INDEX[name], f, extent) for name, f, extent in _paints(anat, edge)][::-1]
    layers.append((_INDEX["air"], lambda Y_, X_: np.ones(np.broadcast_shapes(Y_.shape, X_.shape), np.float32), None))
    full = (Ellipsis, slice(None), slice(None))
    for k, coverage, extent in layers:
        index = full
        if extent is not None:
            # coverage vanishes 0.75 pixel outside a shape; 3 pixels also covers the
            # first-order ellipse distance of elongated ellipses (aspect ratio >= 1/4)
            reach = extent[2] + 3.0 * edge + margin_mm
            rows = np.nonzero(np.abs(axes[0] - extent[0]) <= reach)[0]
            cols = np.nonzero(np.abs(axes[1] - extent[1]) <= reach)[0]
            if rows.size == 0 or cols.size == 0:
                continue
            index = (Ellipsis, slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        mask = coverage(Y[index], X[index])
        contribution = mask * remaining[index]
        remaining[index] *= 1.0 - mask
        larger = contribution > best[index]
        best[index] = np.where(larger, contribution, best[index])
        dominant[index] = np.where(larger, k, dominant[index])
        if fractions:
            out["fractions"][(k,) + index] += contribution
        if values is not None:
            term = contribution * values(k, index)
            if image is None:
                image = np.zeros(np.broadcast_shapes(shape, term.shape[:-2] + shape[-2:]), np.float32)
            image[index] += term
    out["dominant"] = dominant
    if values is not None:
        out["image"] = image
    return out


def _landmarks_mm(anat) -> dict[str, tuple[float, float]]:
    """RV insertion points (where the RV cavity meets the LV epicardium) and the LV centre."""
    ly, lx = anat["lv_centre"]
    r, s, h = anat["r_epi"], anat["septal_angle"], anat["insertion_half_angle"]
    points = [(ly + r * math.sin(s + k * h), lx + r * math.cos(s + k * h)) for k in (-1.0, 1.0)]
    anterior, inferior = sorted(points)  # anterior = smaller y (top of the image)
    return {"rv_insertion_anterior": anterior, "rv_insertion_inferior": inferior, "lv_centre": (ly, lx)}


def _smooth_noise(rng, n, shape, spacing, correlation_mm) -> torch.Tensor:
    """``n`` smooth random fields ``(n, H, W)`` with unit standard deviation, correlation
    length ~``correlation_mm``: Gaussian-smoothed noise on a coarse grid, bicubic upsampled."""
    h, w = shape
    step = correlation_mm / 2.0
    gh = int(min(h, max(4, math.ceil((h - 1) * spacing[0] / step) + 1)))
    gw = int(min(w, max(4, math.ceil((w - 1) * spacing[1] / step) + 1)))
    z = torch.from_numpy(rng.standard_normal((n, 1, gh, gw), dtype=np.float32))
    z = gaussian_smooth(z, 1.0)
    z = z - z.mean(dim=(-2, -1), keepdim=True)
    z = z / z.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return F.interpolate(z, size=(h, w), mode="bicubic", align_corners=True)[:, 0]


# ====================================================================== motion
def _motion_weight(anat, shape, spacing, wall_weight=0.25) -> np.ndarray:
    """1 around the heart and liver (thoracic cavity), decaying to ``wall_weight`` at the
    body wall: the chest wall moves less than the heart with breathing."""
    Y, X = _grid_mm(shape, spacing)
    d = np.minimum(
        _ellipse_distance(Y, X, anat["cavity_centre"], anat["cavity_radii"]),
        _ellipse_distance(Y, X, anat["liver_centre"], anat["liver_radii"], math.radians(anat["liver_angle_deg"])),
    )
    w = wall_weight + (1.0 - wall_weight) * special.expit(-(d + 5.0) / 8.0)
    sigma_px = 5.0 / float(min(spacing))
    return gaussian_smooth(torch.from_numpy(w.astype(np.float32))[None, None], sigma_px)[0, 0].numpy()


def _breathing_displacement(rng, anat, n, shape, spacing, motion_mm, rotation_deg, nonrigid_mm, nonrigid_scale_mm):
    """Respiratory translation + rotation about the LV centre (weighted) + smooth non-rigid
    field, in pixels ``(N, 2, H, W)``, zero-mean over frames. Also returns per-frame values."""
    # breathing positions: superior-inferior (image y) spans exactly motion_mm over the frames
    s = rng.uniform(0.0, 1.0, n)
    if np.ptp(s) > 0:
        s = (s - s.min()) / np.ptp(s)
    ap_ratio = rng.uniform(-0.35, 0.35)
    ty = motion_mm * s
    tx = motion_mm * (ap_ratio * s + 0.1 * rng.uniform(-1.0, 1.0, n))
    theta = np.radians(rotation_deg) * rng.uniform(-1.0, 1.0, n)
    ty, tx, theta = ty - ty.mean(), tx - tx.mean(), theta - theta.mean()
    weight = torch.from_numpy(_motion_weight(anat, shape, spacing))
    Y, X = (torch.from_numpy(g) for g in _grid_mm(shape, spacing))
    ry, rx = Y - anat["lv_centre"][0], X - anat["lv_centre"][1]
    th = torch.from_numpy(theta.astype(np.float32)).view(-1, 1, 1)
    cos, sin = torch.cos(th), torch.sin(th)
    dy_mm = (cos - 1) * ry + sin * rx + torch.from_numpy(ty.astype(np.float32)).view(-1, 1, 1)
    dx_mm = -sin * ry + (cos - 1) * rx + torch.from_numpy(tx.astype(np.float32)).view(-1, 1, 1)
    u_mm = torch.stack((dy_mm, dx_mm), dim=1) * weight
    if nonrigid_mm > 0:
        fields = _smooth_noise(rng, 2 * n, shape, spacing, nonrigid_scale_mm).view(n, 2, *shape)
        u_mm = u_mm + (nonrigid_mm / math.sqrt(2.0)) * fields * (0.5 + 0.5 * weight)
    u_mm = u_mm - u_mm.mean(dim=0, keepdim=True)  # groupwise centring: common grid = mean position
    scale = torch.tensor(spacing, dtype=torch.float32).view(1, 2, 1, 1)
    return u_mm / scale, {"translations_mm": np.stack([ty, tx], 1), "rotations_deg": np.degrees(theta)}


def _contraction_profile(phase: np.ndarray, es_phase: float) -> np.ndarray:
    """Contraction state in [0, 1] over the cardiac cycle (0 = end-diastole, 1 = end-systole):
    systole, rapid filling, diastasis, atrial kick."""
    p = np.mod(phase, 1.0)
    fill_end = es_phase + 0.2
    out = np.where(p < es_phase, 0.5 * (1.0 - np.cos(np.pi * p / es_phase)), 0.0)
    rapid = 1.0 - 0.8 * 0.5 * (1.0 - np.cos(np.pi * (p - es_phase) / (fill_end - es_phase)))
    out = np.where((p >= es_phase) & (p < fill_end), rapid, out)
    diastasis = 0.2 - 0.05 * (p - fill_end) / max(0.8 - fill_end, 1e-3)
    out = np.where((p >= fill_end) & (p < 0.8), diastasis, out)
    atrial = 0.15 * 0.5 * (1.0 + np.cos(np.pi * (p - 0.8) / 0.2))
    return np.where(p >= max(0.8, fill_end), atrial, out)


def _radial_ratio(anat, contraction, r, es_radius_ratio, pixel_mm) -> np.ndarray:
    """``rho(r) / r`` of the LV contraction's radius map for each frame, ``(N,) + r.shape``.

    ``rho`` is tabulated on a fine radial grid, made odd in ``r`` and smoothed by a Gaussian
    of 1.5 pixels (keeps it monotonic, hence fold-free, and removes the kinks at the endo- and
    epicardium that bilinear sampling would turn into errors), then interpolated at ``r``.
    """
    r_endo, r_epi = anat["r_endo"], anat["r_epi"]
    step = min(0.1, pixel_mm / 10.0)
    r_max = float(r.max()) + 6.0 * pixel_mm
    grid = np.arange(-6.0 * pixel_mm, r_max + step, step)
    a = np.abs(grid)
    c = np.asarray(contraction, np.float64)[:, None]
    endo_t = r_endo * (1.0 - (1.0 - es_radius_ratio) * c)
    epi_t = np.sqrt(endo_t**2 + (r_epi**2 - r_endo**2))
    rho_blood = a * endo_t / r_endo
    rho_myo = np.sqrt(np.clip(endo_t**2 + a**2 - r_endo**2, 0.0, None))
    rho_out = a + (epi_t - r_epi) * np.exp(-0.5 * (np.clip(a - r_epi, 0.0, None) / 15.0) ** 2)
    rho = np.sign(grid) * np.where(a <= r_endo, rho_blood, np.where(a <= r_epi, rho_myo, rho_out))
    rho = ndimage.gaussian_filter1d(rho, sigma=1.5 * pixel_mm / step, axis=1, mode="nearest")
    ratio_tab = np.where(np.abs(grid) > 1e-9, rho / np.where(grid == 0, 1.0, grid), 0.0)
    # at r = 0 the ratio is rho'(0): take it from the first positive node
    zero = np.argmin(np.abs(grid))
    ratio_tab[:, zero] = ratio_tab[:, zero + 1]
    flat = r.reshape(-1)
    out = np.stack([np.interp(flat, grid[zero:], ratio_tab[i, zero:]) for i in range(c.shape[0])])
    return out.reshape((-1,) + r.shape).astype(np.float32)


def _contraction_displacement(anat, contraction, shape, spacing, es_radius_ratio, rv_squeeze):
    """Cardiac contraction, anatomy (end-diastole) -> frame, in pixels ``(N, 2, H, W)``.

    LV: radial map about the LV centre; the blood pool scales by ``R_endo(t)/R_endo``, every
    myocardial annulus keeps its area (wall thickens), and outside the epicardium the radial
    shift decays over ~15 mm (monotonic radius map: fold-free). RV: a Gaussian-weighted
    squeeze toward the RV centre (fold-free for a squeeze below 1), applied after the LV map.
    """
    Y, X = (torch.from_numpy(g) for g in _grid_mm(shape, spacing))
    ry, rx = Y - anat["lv_centre"][0], X - anat["lv_centre"][1]
    r = torch.sqrt(ry**2 + rx**2)
    c = torch.from_numpy(np.asarray(contraction, np.float32)).view(-1, 1, 1)
    ratio = torch.from_numpy(_radial_ratio(anat, contraction, r.numpy(), es_radius_ratio, min(spacing)))
    py, px = anat["lv_centre"][0] + ry * ratio, anat["lv_centre"][1] + rx * ratio  # positions after LV map
    # RV squeeze evaluated at the LV-mapped positions (analytic composition): the crescent
    # narrows along the septal direction e_s about its middle, u = -g s e_s with a Gaussian g
    # (det J = 1 - g (1 - s^2 / sigma_s^2) >= 1 - rv_squeeze > 0: fold-free).
    ly, lx = anat["lv_centre"]
    es_y, es_x = math.sin(anat["septal_angle"]), math.cos(anat["septal_angle"])
    middle = anat["r_epi"] + 0.5 * anat["rv_width_mm"]
    sy, sx = ly + middle * es_y, lx + middle * es_x
    sigma_s, sigma_p = 0.6 * anat["rv_width_mm"] + 3.0, anat["rv_radii"][1]
    s_coord = (py - sy) * es_y + (px - sx) * es_x
    p_coord = -(py - sy) * es_x + (px - sx) * es_y
    g = torch.exp(-0.5 * (s_coord / sigma_s) ** 2 - 0.5 * (p_coord / sigma_p) ** 2) * (rv_squeeze * c)
    fy, fx = py - g * s_coord * es_y, px - g * s_coord * es_x
    u_mm = torch.stack((fy - Y, fx - X), dim=1)
    return u_mm / torch.tensor(spacing, dtype=torch.float32).view(1, 2, 1, 1)


# ====================================================================== main entry
#: The largest phantom side (pixels): bigger than any cardiac MR matrix, small enough for memory.
MAX_PHANTOM_SIZE = 2048


def make_phantom(
    kind: str = "molli",
    *,
    seed: int = 0,
    shape: tuple[int, int] = (192, 192),
    spacing_mm: tuple[float, float] = (1.5, 1.5),
    n_frames: int | None = None,
    schedule: str = "5(3)3",
    timings_ms=None,
    heart_rate_bpm: float = 60.0,
    field_strength: float = 1.5,
    contrast: str = "native",
    snr: float | None = 40.0,
    motion_mm: float = 5.0,
    rotation_deg: float = 3.0,
    nonrigid_mm: float = 1.5,
    nonrigid_scale_mm: float = 25.0,
    breath_hold_offset_mm: tuple[float, float] = (0.0, 0.0),
) -> Phantom:
    """Simulate a motion-affected cardiac short-axis sequence with its ground truth.

    Parameters
    ----------
    kind : {"molli", "stone", "sasha", "ir", "asl", "perfusion", "cine", "t2prep", "mge"}
        Sequence to simulate (see :func:`signal_model`); ``t2prep`` (T2-prepared bSSFP, known
        T2 in :attr:`Phantom.t2_map`) and ``mge`` (multi-gradient echo, known T2* in
        :attr:`Phantom.t2star_map`).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives identical output.
    shape : (int, int)
        Image size ``(H, W)`` in pixels.
    spacing_mm : (float, float)
        Pixel spacing ``(dy, dx)``. The anatomy is drawn in mm, so ``(96, 96)`` at 3 mm
        shows the same field of view as ``(192, 192)`` at 1.5 mm.
    n_frames : int, optional
        Number of frames (2 or more). Defaults: stone 11, sasha 10, ir 10, asl 20,
        perfusion 40, cine 25, t2prep 4 (0, 25, 40, 55 ms), mge 8 (TE 2.6-18.7 ms); MOLLI takes it from ``schedule`` (giving a different number is
        an error).
    schedule : str
        MOLLI scheme, e.g. ``"5(3)3"`` (8 images) or ``"4(1)3(1)2"`` (9 images).
    timings_ms : array_like, optional
        Explicit TIs / TSs / trigger times (sets the number of frames).
    heart_rate_bpm : float
        Sets the RR interval (MOLLI TIs, cine trigger times, perfusion/ASL frame times).
    field_strength : {1.5, 3.0}
    contrast : {"native", "post"}
        Pre- or post-contrast T1 table (perfusion uses it as the baseline before the bolus).
    snr : float or None
        Rician noise with ``sigma = (mean myocardial signal of the brightest frame) / snr``;
        ``None`` or ``inf`` for noise-free frames.
    motion_mm : float
        Peak-to-peak respiratory (superior-inferior, image y) translation of the heart over
        the frames; the AP (x) component is up to ~0.45 of it.
    rotation_deg : float
        In-plane rotation about the LV centre, drawn per frame in ``±rotation_deg`` (before
        the mean over frames is removed).
    nonrigid_mm : float
        RMS magnitude of the smooth random non-rigid deformation in the heart.
    nonrigid_scale_mm : float
        Correlation length of the non-rigid deformation.
    breath_hold_offset_mm : (float, float)
        A constant ``(dy, dx)`` shift of the heart for all frames (another breath-hold
        position, e.g. a post-contrast series ~12 mm from the native one), weighted like the
        breathing motion (full around the heart and liver, a quarter at the body wall). The
        common grid stays the anatomy, so the frames' mean displacement is then this shift,
        not zero.

    Returns
    -------
    Phantom

    Raises
    ------
    ValueError
        For an unknown kind, schedule, contrast or field strength, too few frames, or a
        motion so large that the deformation would fold.
    """
    arguments = dict(
        kind=kind, seed=seed, shape=tuple(int(s) for s in shape), spacing_mm=tuple(float(s) for s in spacing_mm),
        n_frames=n_frames, schedule=schedule,
        timings_ms=None if timings_ms is None else [float(t) for t in np.asarray(timings_ms, np.float64).reshape(-1)],
        heart_rate_bpm=float(heart_rate_bpm), field_strength=float(field_strength), contrast=contrast, snr=snr,
        motion_mm=float(motion_mm), rotation_deg=float(rotation_deg), nonrigid_mm=float(nonrigid_mm),
        nonrigid_scale_mm=float(nonrigid_scale_mm),
        breath_hold_offset_mm=tuple(float(v) for v in breath_hold_offset_mm),
    )
    kind = str(kind).lower()
    if kind not in PHANTOM_KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; use one of {', '.join(PHANTOM_KINDS)}")
    shape = arguments["shape"]
    spacing = arguments["spacing_mm"]
    if len(shape) != 2 or min(shape) < 16 or max(shape) > MAX_PHANTOM_SIZE:
        # 100000 x 100000 pixels is a MemoryError deep inside numpy, not a phantom
        raise ValueError(f"{arg('shape', shape if interface() == 'api' else max(shape))}: a phantom is 16 to "
                         f"{MAX_PHANTOM_SIZE} pixels a side; give a size in that range.")
    if len(spacing) != 2 or min(spacing) <= 0:
        raise ValueError(f"spacing_mm must be two positive numbers; got {spacing}")
    if min(motion_mm, rotation_deg, nonrigid_mm) < 0 or nonrigid_scale_mm <= 0:
        raise ValueError("motion amplitudes must be >= 0 and nonrigid_scale_mm > 0")
    if heart_rate_bpm <= 0:
        raise ValueError(f"heart_rate_bpm must be positive; got {heart_rate_bpm}")
    if snr is not None and not snr > 0:
        raise ValueError(f"snr must be positive (or None / inf for no noise); got {snr!r}")
    field = _field_key(field_strength)
    if contrast not in ("native", "post"):
        raise ValueError(f"contrast must be 'native' or 'post'; got {contrast!r}")
    rr = 60000.0 / float(heart_rate_bpm)
    timings = _timings(kind, n_frames, schedule, timings_ms, heart_rate_bpm)
    n = timings.size

    rng_anatomy, rng_motion, rng_noise, rng_texture = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )
    anat = _draw_anatomy(rng_anatomy)
    Y, X = _grid_mm(shape, spacing)
    edge = float(math.sqrt(spacing[0] * spacing[1]))  # pixel size sets the anti-aliasing ramp
    axes = (Y[:, 0].copy(), X[0].copy())
    common = _render(anat, Y, X, edge, axes, fractions=True)
    frac = common["fractions"]

    # ---- tissue maps on the common grid
    component_labels = np.array([lab for _, _, lab in _COMPONENTS], np.uint8)
    component_t1 = np.array([0.0 if t is None else tissue_t1_ms(t, field, contrast) for _, t, _ in _COMPONENTS], np.float32)
    common_labels = component_labels[common["dominant"]]
    t1_map = component_t1[common["dominant"]]
    component_t2 = np.array([0.0 if t is None else tissue_t2_ms(t) for _, t, _ in _COMPONENTS], np.float32)
    component_t2star = np.array([0.0 if t is None else tissue_t2star_ms(t, field) for _, t, _ in _COMPONENTS], np.float32)
    t2_map = component_t2[common["dominant"]]
    t2star_map = component_t2star[common["dominant"]]
    texture = _smooth_noise(rng_texture, 1, shape, spacing, 4.0)[0].numpy()
    bias = np.exp(0.12 * _smooth_noise(rng_texture, 1, shape, spacing, 150.0)[0].numpy() + anat["bias_slope"] * Y / 100.0)
    centre_px = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0])
    ci = np.clip(np.round(centre_px + np.asarray(anat["lv_centre"]) / np.asarray(spacing)).astype(int), 0, np.asarray(shape) - 1)
    bias = (bias / bias[ci[0], ci[1]]).astype(np.float32)  # coil bias 1 at the LV centre
    m0_k = np.array([0.0 if t is None else TISSUE_PROPERTIES[t]["m0"] for _, t, _ in _COMPONENTS], np.float32)
    tex_k = np.array([0.0 if t is None else TISSUE_PROPERTIES[t]["texture"] for _, t, _ in _COMPONENTS], np.float32)

    def m0_of(k, tex, b):  # equilibrium signal of component k given texture and bias fields
        return m0_k[k] * np.clip(1.0 + tex_k[k] * tex, 0.2, None) * b

    weights = np.stack([frac[k] * m0_of(k, texture, bias) for k in range(len(_COMPONENTS))])
    m0_map = weights.sum(0).astype(np.float32)

    # ---- per-component signals and the common-grid contrast images
    extra: dict[str, Any] = {}
    curves = _perfusion_curves(timings, rr) if kind == "perfusion" else None
    if kind == "perfusion":
        extra["concentration_mM"] = {name: curves[name].tolist() for name in ("rv", "lv", "myo")}
    labelled = (np.arange(n) % 2 == 1) if kind == "asl" else None
    if labelled is not None:
        extra["labelled"] = labelled.tolist()
    signals = np.zeros((len(_COMPONENTS), n), np.float64)
    for k, (name, tissue, _) in enumerate(_COMPONENTS):
        if tissue is None:
            continue
        props = TISSUE_PROPERTIES[tissue]
        conc = None
        if curves is not None:
            which, scale = _PERFUSION_UPTAKE[name]
            conc = scale * curves[which]
        signals[k] = signal_model(
            kind, tissue_t1_ms(tissue, field, contrast), 1.0, timings,
            b_over_a=props["molli_b_over_a"], t2_ms=props["t2_ms"], t2star_ms=tissue_t2star_ms(tissue, field),
            labelled=labelled,
            label_fraction=_ASL_LABEL_FRACTION.get(name, 0.0), concentration_mM=conc,
            relaxivity_per_mM_s=_RELAXIVITY[field],
        )
    signals = signals.astype(np.float32)
    h, w = shape
    clean = (signals.T @ weights.reshape(len(_COMPONENTS), -1)).reshape(n, h, w)

    # ---- motion: anatomy x appears in frame i at x + u_i(x)
    u, motion_info = _breathing_displacement(
        rng_motion, anat, n, shape, spacing, motion_mm, rotation_deg, nonrigid_mm, nonrigid_scale_mm
    )
    offset = arguments["breath_hold_offset_mm"]
    if len(offset) != 2 or not all(math.isfinite(v) for v in offset):
        raise ValueError(f"breath_hold_offset_mm must be two finite numbers (dy, dx) in mm; got {offset}")
    if any(offset):  # another breath-hold: the heart sits elsewhere in every frame
        weight = torch.from_numpy(_motion_weight(anat, shape, spacing))
        shift = torch.tensor([offset[0] / spacing[0], offset[1] / spacing[1]], dtype=torch.float32).view(1, 2, 1, 1)
        u = u + shift * weight
    if kind == "cine":
        es_ratio = float(rng_motion.uniform(0.62, 0.72))
        rv_squeeze = float(rng_motion.uniform(0.3, 0.45))
        es_phase = min(max(330.0 / rr, 0.25), 0.5)
        contraction = _contraction_profile(timings / rr, es_phase)
        u_contract = _contraction_displacement(anat, contraction, shape, spacing, es_ratio, rv_squeeze)
        u = compose_displacements(u, u_contract)  # contraction first, then breathing
        extra.update(contraction=contraction.tolist(), es_radius_ratio=es_ratio, rv_squeeze=rv_squeeze,
                     end_systolic_frame=int(np.argmax(contraction)))
    min_det = float(jacobian_determinant(u).min())
    if not min_det > 0.05:
        raise ValueError(
            f"the requested motion folds the anatomy (min det J = {min_det:.3f}); reduce "
            "motion_mm / rotation_deg / nonrigid_mm or increase nonrigid_scale_mm."
        )
    # frame -> anatomy: frame_i(y) = C_i(y + v_i(y)); the fixed point converges like |grad u|^k
    v = invert_displacement(u, iterations=12)
    residual = compose_displacements(v, u)  # u(x) + v(x + u(x)) = 0 for an exact inverse

    # ---- raw frames: the anatomy rendered analytically at y + v_i(y) (no resampling blur);
    # only the smooth texture and coil-bias fields are resampled (bilinear).
    v_np = v.numpy()
    fields = torch.from_numpy(np.stack([texture, bias]))[None].expand(n, 2, h, w)
    moved_fields = warp(fields, v).numpy()
    tex_p, bias_p = moved_fields[:, 0], moved_fields[:, 1]
    Yp, Xp = Y + v_np[:, 0] * np.float32(spacing[0]), X + v_np[:, 1] * np.float32(spacing[1])
    reach = float(np.abs(v_np).max(initial=0.0)) * max(spacing) * 1.5 + 1e-3  # |v| bound in mm

    def raw_value(k, index):
        return m0_of(k, tex_p[index], bias_p[index]) * signals[k][:, None, None]

    raw = _render(anat, Yp, Xp, edge, axes, margin_mm=reach, values=raw_value)
    frames_clean = raw["image"].astype(np.float32)
    labels = component_labels[raw["dominant"]]

    # ---- masks, landmarks
    heart = common_labels > 0
    heart_mask = ndimage.distance_transform_edt(~heart) <= 3.0 if heart.any() else heart
    inner = ndimage.binary_erosion(np.ones(shape, bool), iterations=4) & heart_mask
    inner_t = torch.from_numpy(inner)
    inverse_residual = float((residual[:, 0, inner_t] ** 2 + residual[:, 1, inner_t] ** 2).sqrt().max()) if inner.any() else 0.0
    common_landmarks = {
        name: (np.asarray(p) / np.asarray(spacing) + centre_px).astype(np.float32) for name, p in _landmarks_mm(anat).items()
    }
    pts = torch.from_numpy(np.stack(list(common_landmarks.values())))
    moved = torch.stack([pts + sample_displacement_at_points(u[i], pts) for i in range(n)])  # (N, P, 2)
    landmarks = {name: moved[:, j].numpy().astype(np.float32) for j, name in enumerate(common_landmarks)}

    # ---- Rician noise
    frames = frames_clean
    myo = common_labels == 2
    reference = float(clean[:, myo].mean(axis=1).max()) if myo.any() else float(clean.max())
    sigma = 0.0 if snr is None or not np.isfinite(snr) else reference / float(snr)
    if sigma > 0:
        noise = rng_noise.standard_normal((2,) + frames.shape, dtype=np.float32) * np.float32(sigma)
        frames = np.sqrt((frames + noise[0]) ** 2 + noise[1] ** 2)

    params = dict(arguments)
    params.update(
        arguments=dict(arguments), n_frames=n, timings_ms=timings.tolist(), field_strength=field, rr_ms=rr,
        noise_sigma=sigma, reference_signal=reference,
        tissue_t1_ms={t: tissue_t1_ms(t, field, contrast) for t in TISSUE_PROPERTIES},
        translations_mm=motion_info["translations_mm"].tolist(), rotations_deg=motion_info["rotations_deg"].tolist(),
        min_jacobian=min_det, inverse_residual_px=inverse_residual, anatomy=anat, **extra,
    )
    if kind == "molli":
        params["molli_inversion_times_ms"] = timings.tolist()
    sequence = Sequence(
        frames=frames, timings_ms=timings, spacing_mm=spacing, kind=kind, name=f"phantom_{kind}_seed{seed}",
        metadata={"phantom": True, "seed": int(seed), "field_strength": field, "contrast": contrast,
                  **({"schedule": schedule} if kind == "molli" and timings_ms is None else {})},
    )
    return Phantom(
        sequence=sequence,
        displacement=u.numpy().astype(np.float32),
        labels=labels.astype(np.uint8),
        common_labels=common_labels,
        heart_mask=heart_mask,
        landmarks=landmarks,
        common_landmarks=common_landmarks,
        t1_map=t1_map.astype(np.float32),
        m0_map=m0_map,
        params=params,
        motion_free_frames=clean.astype(np.float32),
        t2_map=t2_map.astype(np.float32),
        t2star_map=t2star_map.astype(np.float32),
    )


def _timings(kind, n_frames, schedule, timings_ms, heart_rate_bpm) -> np.ndarray:
    rr = 60000.0 / float(heart_rate_bpm)
    if timings_ms is not None:
        t = np.asarray(timings_ms, np.float64).reshape(-1)
        if np.isnan(t).any():
            raise ValueError("timings_ms contain NaN")
        _check_n(t.size)
        if n_frames is not None and int(n_frames) != t.size:
            raise ValueError(f"n_frames={n_frames} but {t.size} timings given")
        return t
    if kind == "molli":
        t = molli_inversion_times(schedule, heart_rate_bpm)
        if n_frames is not None and int(n_frames) != t.size:
            raise ValueError(
                f"MOLLI {schedule} has {t.size} images; n_frames={n_frames} does not match "
                "(change the schedule or pass timings_ms)."
            )
        return t
    n = _check_n(DEFAULT_N_FRAMES[kind] if n_frames is None else n_frames)
    if kind == "stone":
        return stone_inversion_times(n)
    if kind == "sasha":
        return sasha_saturation_times(n)
    if kind == "ir":
        return ir_inversion_times(n)
    if kind == "cine":
        return cine_trigger_times(n, heart_rate_bpm)
    if kind == "t2prep":
        return t2prep_durations(n)
    if kind == "mge":
        return mge_echo_times(n)
    if kind == "perfusion":
        return np.arange(n) * rr
    return np.arange(n) * 4.0 * rr  # asl: one image every 4 heartbeats
