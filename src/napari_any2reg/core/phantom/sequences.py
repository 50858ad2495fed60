"""The phantom's acquisition side: the frame timings of each sequence kind (MOLLI schedules,
STONE / SASHA / IR times, cine trigger times, T2-prep durations, echo times) and the signal
models that turn T1, M0 (and T2, T2*, Gd uptake) into each frame's contrast."""

from __future__ import annotations

import math
import re

import numpy as np

from .tissues import _CINE_FLIP_DEG, _PERFUSION_TS_MS, DEFAULT_N_FRAMES, PHANTOM_KINDS


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
