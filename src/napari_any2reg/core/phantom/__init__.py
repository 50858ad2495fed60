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

The subpackage: :mod:`.tissues` (the tissue table), :mod:`.sequences` (timings and signal
models), :mod:`.anatomy` (layout and rendering), :mod:`.motion` (breathing, contraction) and
:mod:`.generator` (:class:`Phantom`, :func:`make_phantom`).
"""

from __future__ import annotations

from .generator import MAX_PHANTOM_SIZE, Phantom, make_phantom  # noqa: F401 (the size limit, kept at its old path)
from .sequences import (
    cine_trigger_times,
    ir_inversion_times,
    mge_echo_times,
    molli_inversion_times,
    parse_molli_schedule,
    sasha_saturation_times,
    signal_model,
    stone_inversion_times,
    t2prep_durations,
)
from .tissues import (
    _ASL_LABEL_FRACTION,  # noqa: F401 (read by tests/core/test_phantom.py)
    DEFAULT_N_FRAMES,
    PHANTOM_KINDS,
    TISSUE_PROPERTIES,
    TISSUE_T1_MS,
    TISSUE_T2STAR_MS,
    tissue_t1_ms,
    tissue_t2_ms,
    tissue_t2star_ms,
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
