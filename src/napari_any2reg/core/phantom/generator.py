"""The phantom itself: :class:`Phantom` (the raw sequence with its ground truth) and
:func:`make_phantom`, which draws the anatomy, renders each frame's contrast on the common grid
and moves it into the raw frame by the known motion (see :mod:`napari_any2reg.core.phantom`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..sequence import Sequence
from ..spatial import (
    compose_displacements,
    invert_displacement,
    jacobian_determinant,
    sample_displacement_at_points,
    warp,
)
from ..vocabulary import arg, interface
from .anatomy import _draw_anatomy, _grid_mm, _landmarks_mm, _render, _smooth_noise
from .motion import _breathing_displacement, _contraction_displacement, _contraction_profile, _motion_weight
from .sequences import _perfusion_curves, _timings, signal_model
from .tissues import (
    _ASL_LABEL_FRACTION,
    _COMPONENTS,
    _PERFUSION_UPTAKE,
    _RELAXIVITY,
    PHANTOM_KINDS,
    TISSUE_PROPERTIES,
    _field_key,
    tissue_t1_ms,
    tissue_t2_ms,
    tissue_t2star_ms,
)


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
    given = dict(locals())  # the parameters as passed (the first statement: nothing else is local yet)
    arguments = _recorded_arguments(given)
    kind, field = _checked_kind_and_field(given, arguments)
    shape, spacing = arguments["shape"], arguments["spacing_mm"]
    rr = 60000.0 / float(heart_rate_bpm)
    timings = _timings(kind, n_frames, schedule, timings_ms, heart_rate_bpm)
    n = timings.size
    rng_anatomy, rng_motion, rng_noise, rng_texture = _random_streams(seed)
    anat = _draw_anatomy(rng_anatomy)
    grid = _Grid.of(shape, spacing)
    common = _render(anat, grid.Y, grid.X, grid.edge, grid.axes, fractions=True)

    # ---- tissue maps, equilibrium signal and the noise-free contrast images on the common grid
    table = _ComponentTable.of(field, contrast)
    common_labels, t1_map, t2_map, t2star_map = table.maps(common["dominant"])
    texture, bias = _texture_and_bias(rng_texture, anat, grid)
    weights = table.weights(common["fractions"], texture, bias)
    m0_map = weights.sum(0).astype(np.float32)
    curves, labelled, extra = _kind_specifics(kind, timings, rr)
    signals = _component_signals(kind, timings, field, contrast, curves, labelled)
    clean = (signals.T @ weights.reshape(len(_COMPONENTS), -1)).reshape(n, *shape)

    # ---- motion: anatomy x appears in frame i at x + u_i(x)
    u, motion_info = _breathing_displacement(
        rng_motion, anat, n, shape, spacing, motion_mm, rotation_deg, nonrigid_mm, nonrigid_scale_mm
    )
    u = _with_breath_hold_offset(u, anat, grid, arguments["breath_hold_offset_mm"])
    if kind == "cine":
        u, contraction_info = _with_contraction(u, rng_motion, anat, grid, timings, rr)
        extra.update(contraction_info)
    min_det = _checked_min_jacobian(u)
    # frame -> anatomy: frame_i(y) = C_i(y + v_i(y)); the fixed point converges like |grad u|^k
    v = invert_displacement(u, iterations=12)
    residual = compose_displacements(v, u)  # u(x) + v(x + u(x)) = 0 for an exact inverse

    # ---- raw frames, masks, landmarks, noise
    frames_clean, labels = _raw_frames(anat, grid, table, texture, bias, signals, v)
    heart_mask = _heart_mask(common_labels)
    common_landmarks, landmarks = _landmarks(anat, grid, u)
    frames, sigma, reference = _with_rician_noise(rng_noise, frames_clean, clean, common_labels, snr)

    params = _phantom_params(
        arguments, kind=kind, field=field, contrast=contrast, timings=timings, rr=rr, sigma=sigma, reference=reference,
        motion_info=motion_info, min_det=min_det, inverse_residual=_inverse_residual_px(residual, heart_mask),
        anat=anat, extra=extra,
    )
    sequence = Sequence(
        frames=frames, timings_ms=timings, spacing_mm=spacing, kind=kind, name=f"phantom_{kind}_seed{seed}",
        metadata={"phantom": True, "seed": int(seed), "field_strength": field, "contrast": contrast,
                  **({"schedule": schedule} if kind == "molli" and timings_ms is None else {})},
    )
    return Phantom(
        sequence=sequence, displacement=u.numpy().astype(np.float32), labels=labels.astype(np.uint8),
        common_labels=common_labels, heart_mask=heart_mask, landmarks=landmarks, common_landmarks=common_landmarks,
        t1_map=t1_map.astype(np.float32), m0_map=m0_map, params=params, motion_free_frames=clean.astype(np.float32),
        t2_map=t2_map.astype(np.float32), t2star_map=t2star_map.astype(np.float32),
    )


# ====================================================================== the steps of make_phantom
def _recorded_arguments(given: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``make_phantom`` as plain values (``params["arguments"]``: they reproduce it)."""
    timings_ms = given["timings_ms"]
    return dict(
        kind=given["kind"], seed=given["seed"], shape=tuple(int(s) for s in given["shape"]),
        spacing_mm=tuple(float(s) for s in given["spacing_mm"]), n_frames=given["n_frames"], schedule=given["schedule"],
        timings_ms=None if timings_ms is None else [float(t) for t in np.asarray(timings_ms, np.float64).reshape(-1)],
        heart_rate_bpm=float(given["heart_rate_bpm"]), field_strength=float(given["field_strength"]),
        contrast=given["contrast"], snr=given["snr"], motion_mm=float(given["motion_mm"]),
        rotation_deg=float(given["rotation_deg"]), nonrigid_mm=float(given["nonrigid_mm"]),
        nonrigid_scale_mm=float(given["nonrigid_scale_mm"]),
        breath_hold_offset_mm=tuple(float(v) for v in given["breath_hold_offset_mm"]),
    )


def _checked_kind_and_field(given: dict[str, Any], arguments: dict[str, Any]) -> tuple[str, float]:
    """The lower-case kind and the field-strength key, once the settings are in range (else ``ValueError``)."""
    # the messages quote the values as passed (``given``), the sizes as recorded (``arguments``)
    kind = str(given["kind"]).lower()
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
    if min(given["motion_mm"], given["rotation_deg"], given["nonrigid_mm"]) < 0 or given["nonrigid_scale_mm"] <= 0:
        raise ValueError("motion amplitudes must be >= 0 and nonrigid_scale_mm > 0")
    heart_rate_bpm, snr, contrast = given["heart_rate_bpm"], given["snr"], given["contrast"]
    if heart_rate_bpm <= 0:
        raise ValueError(f"heart_rate_bpm must be positive; got {heart_rate_bpm}")
    if snr is not None and not snr > 0:
        raise ValueError(f"snr must be positive (or None / inf for no noise); got {snr!r}")
    field = _field_key(given["field_strength"])
    if contrast not in ("native", "post"):
        raise ValueError(f"contrast must be 'native' or 'post'; got {contrast!r}")
    return kind, field


def _random_streams(seed: int) -> list[np.random.Generator]:
    """The anatomy, motion, noise and texture generators spawned from ``seed``."""
    # separate streams: the same seed gives the same patient for every kind, the same motion with or without noise
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)]


@dataclasses.dataclass(frozen=True, eq=False)
class _Grid:
    """The common (anatomy) grid: size, spacing, pixel-centre coordinates in mm, anti-aliasing edge."""

    shape: tuple[int, int]
    spacing: tuple[float, float]
    Y: np.ndarray
    X: np.ndarray
    edge: float
    axes: tuple[np.ndarray, np.ndarray]
    centre_px: np.ndarray

    @classmethod
    def of(cls, shape: tuple[int, int], spacing: tuple[float, float]) -> "_Grid":
        """The grid of ``shape`` pixels at ``spacing`` mm, centred on the anatomy's origin."""
        Y, X = _grid_mm(shape, spacing)
        edge = float(math.sqrt(spacing[0] * spacing[1]))  # pixel size sets the anti-aliasing ramp
        centre_px = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0])
        return cls(shape, spacing, Y, X, edge, (Y[:, 0].copy(), X[0].copy()), centre_px)


@dataclasses.dataclass(frozen=True, eq=False)
class _ComponentTable:
    """Per-component values (one per row of ``_COMPONENTS``, 0 for air): label, T1, T2, T2*, M0, texture."""

    labels: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    t2star: np.ndarray
    m0: np.ndarray
    texture: np.ndarray

    @classmethod
    def of(cls, field: float, contrast: str) -> "_ComponentTable":
        """The table at field strength ``field`` (T) and ``contrast`` ("native" or "post")."""

        def per_component(value):  # 0 for air (no tissue)
            return np.array([0.0 if t is None else value(t) for _, t, _ in _COMPONENTS], np.float32)

        return cls(
            labels=np.array([lab for _, _, lab in _COMPONENTS], np.uint8),
            t1=per_component(lambda t: tissue_t1_ms(t, field, contrast)),
            t2=per_component(tissue_t2_ms),
            t2star=per_component(lambda t: tissue_t2star_ms(t, field)),
            m0=per_component(lambda t: TISSUE_PROPERTIES[t]["m0"]),
            texture=per_component(lambda t: TISSUE_PROPERTIES[t]["texture"]),
        )

    def maps(self, dominant: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Labels, T1, T2 and T2* of the dominant component of each pixel."""
        return self.labels[dominant], self.t1[dominant], self.t2[dominant], self.t2star[dominant]

    def m0_of(self, k: int, texture: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Equilibrium signal of component ``k`` given the texture and coil-bias fields."""
        return self.m0[k] * np.clip(1.0 + self.texture[k] * texture, 0.2, None) * bias

    def weights(self, fractions: np.ndarray, texture: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Each component's coverage times its equilibrium signal, ``(components, H, W)``."""
        return np.stack([fractions[k] * self.m0_of(k, texture, bias) for k in range(len(_COMPONENTS))])


def _texture_and_bias(rng: np.random.Generator, anat: dict[str, Any], grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The smooth tissue texture and the coil bias (1 at the LV centre) on the common grid."""
    shape, spacing = grid.shape, grid.spacing
    texture = _smooth_noise(rng, 1, shape, spacing, 4.0)[0].numpy()
    bias = np.exp(0.12 * _smooth_noise(rng, 1, shape, spacing, 150.0)[0].numpy() + anat["bias_slope"] * grid.Y / 100.0)
    ci = np.clip(np.round(grid.centre_px + np.asarray(anat["lv_centre"]) / np.asarray(spacing)).astype(int), 0,
                 np.asarray(shape) - 1)
    return texture, (bias / bias[ci[0], ci[1]]).astype(np.float32)


def _kind_specifics(kind: str, timings: np.ndarray, rr: float) -> tuple[dict | None, np.ndarray | None, dict[str, Any]]:
    """Perfusion's Gd curves and ASL's labelled frames (``None`` for other kinds), and their record."""
    extra: dict[str, Any] = {}
    curves = _perfusion_curves(timings, rr) if kind == "perfusion" else None
    if kind == "perfusion":
        extra["concentration_mM"] = {name: curves[name].tolist() for name in ("rv", "lv", "myo")}
    labelled = (np.arange(timings.size) % 2 == 1) if kind == "asl" else None
    if labelled is not None:
        extra["labelled"] = labelled.tolist()
    return curves, labelled, extra


def _component_signals(kind: str, timings: np.ndarray, field: float, contrast: str, curves: dict | None,
                       labelled: np.ndarray | None) -> np.ndarray:
    """The signal of each component (at M0 = 1) in each frame, ``(components, N)`` float32."""
    signals = np.zeros((len(_COMPONENTS), timings.size), np.float64)
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
    return signals.astype(np.float32)


def _with_breath_hold_offset(u: torch.Tensor, anat: dict[str, Any], grid: _Grid, offset: tuple[float, ...]) -> torch.Tensor:
    """``u`` plus the constant breath-hold shift ``offset`` (mm), weighted like the breathing motion."""
    if len(offset) != 2 or not all(math.isfinite(v) for v in offset):
        raise ValueError(f"breath_hold_offset_mm must be two finite numbers (dy, dx) in mm; got {offset}")
    if not any(offset):
        return u
    # another breath-hold: the heart sits elsewhere in every frame
    spacing = grid.spacing
    weight = torch.from_numpy(_motion_weight(anat, grid.shape, spacing))
    shift = torch.tensor([offset[0] / spacing[0], offset[1] / spacing[1]], dtype=torch.float32).view(1, 2, 1, 1)
    return u + shift * weight


def _with_contraction(u: torch.Tensor, rng: np.random.Generator, anat: dict[str, Any], grid: _Grid,
                      timings: np.ndarray, rr: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """Cine: ``u`` composed with the cardiac contraction at each trigger time, and its record."""
    es_ratio = float(rng.uniform(0.62, 0.72))
    rv_squeeze = float(rng.uniform(0.3, 0.45))
    es_phase = min(max(330.0 / rr, 0.25), 0.5)
    contraction = _contraction_profile(timings / rr, es_phase)
    u_contract = _contraction_displacement(anat, contraction, grid.shape, grid.spacing, es_ratio, rv_squeeze)
    info = dict(contraction=contraction.tolist(), es_radius_ratio=es_ratio, rv_squeeze=rv_squeeze,
                end_systolic_frame=int(np.argmax(contraction)))
    return compose_displacements(u, u_contract), info  # contraction first, then breathing


def _checked_min_jacobian(u: torch.Tensor) -> float:
    """The smallest Jacobian determinant of ``u``, once it is clear of folding (else ``ValueError``)."""
    min_det = float(jacobian_determinant(u).min())
    if not min_det > 0.05:
        raise ValueError(
            f"the requested motion folds the anatomy (min det J = {min_det:.3f}); reduce "
            "motion_mm / rotation_deg / nonrigid_mm or increase nonrigid_scale_mm."
        )
    return min_det


def _raw_frames(anat: dict[str, Any], grid: _Grid, table: _ComponentTable, texture: np.ndarray, bias: np.ndarray,
                signals: np.ndarray, v: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free raw frames and their labels: the anatomy rendered at ``y + v_i(y)``."""
    # analytic rendering (no resampling blur); only the smooth texture and coil-bias fields are
    # resampled (bilinear)
    n = v.shape[0]
    h, w = grid.shape
    spacing = grid.spacing
    v_np = v.numpy()
    fields = torch.from_numpy(np.stack([texture, bias]))[None].expand(n, 2, h, w)
    moved_fields = warp(fields, v).numpy()
    tex_p, bias_p = moved_fields[:, 0], moved_fields[:, 1]
    Yp, Xp = grid.Y + v_np[:, 0] * np.float32(spacing[0]), grid.X + v_np[:, 1] * np.float32(spacing[1])
    reach = float(np.abs(v_np).max(initial=0.0)) * max(spacing) * 1.5 + 1e-3  # |v| bound in mm

    def raw_value(k, index):
        return table.m0_of(k, tex_p[index], bias_p[index]) * signals[k][:, None, None]

    raw = _render(anat, Yp, Xp, grid.edge, grid.axes, margin_mm=reach, values=raw_value)
    return raw["image"].astype(np.float32), table.labels[raw["dominant"]]


def _heart_mask(common_labels: np.ndarray) -> np.ndarray:
    """LV + myocardium + RV on the common grid, dilated by 3 pixels."""
    heart = common_labels > 0
    return ndimage.distance_transform_edt(~heart) <= 3.0 if heart.any() else heart


def _inverse_residual_px(residual: torch.Tensor, heart_mask: np.ndarray) -> float:
    """The largest inversion residual (pixels) in the heart mask, 4 pixels clear of the border."""
    inner = ndimage.binary_erosion(np.ones(heart_mask.shape, bool), iterations=4) & heart_mask
    inner_t = torch.from_numpy(inner)
    return float((residual[:, 0, inner_t] ** 2 + residual[:, 1, inner_t] ** 2).sqrt().max()) if inner.any() else 0.0


def _landmarks(anat: dict[str, Any], grid: _Grid, u: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The landmarks on the common grid ``(y, x)`` and in each raw frame ``(N, 2)``."""
    common_landmarks = {
        name: (np.asarray(p) / np.asarray(grid.spacing) + grid.centre_px).astype(np.float32)
        for name, p in _landmarks_mm(anat).items()
    }
    pts = torch.from_numpy(np.stack(list(common_landmarks.values())))
    moved = torch.stack([pts + sample_displacement_at_points(u[i], pts) for i in range(u.shape[0])])  # (N, P, 2)
    return common_landmarks, {name: moved[:, j].numpy().astype(np.float32) for j, name in enumerate(common_landmarks)}


def _with_rician_noise(rng: np.random.Generator, frames: np.ndarray, clean: np.ndarray, common_labels: np.ndarray,
                       snr: float | None) -> tuple[np.ndarray, float, float]:
    """``frames`` with Rician noise of ``sigma = reference / snr``; the frames, sigma and the reference."""
    # reference: the mean myocardial signal of the brightest noise-free common-grid frame
    myo = common_labels == 2
    reference = float(clean[:, myo].mean(axis=1).max()) if myo.any() else float(clean.max())
    sigma = 0.0 if snr is None or not np.isfinite(snr) else reference / float(snr)
    if sigma > 0:
        noise = rng.standard_normal((2,) + frames.shape, dtype=np.float32) * np.float32(sigma)
        frames = np.sqrt((frames + noise[0]) ** 2 + noise[1] ** 2)
    return frames, sigma, reference


def _phantom_params(arguments: dict[str, Any], *, kind: str, field: float, contrast: str, timings: np.ndarray, rr: float,
                    sigma: float, reference: float, motion_info: dict[str, np.ndarray], min_det: float,
                    inverse_residual: float, anat: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """:attr:`Phantom.params`: the arguments and what was drawn and measured."""
    params = dict(arguments)
    params.update(
        arguments=dict(arguments), n_frames=timings.size, timings_ms=timings.tolist(), field_strength=field, rr_ms=rr,
        noise_sigma=sigma, reference_signal=reference,
        tissue_t1_ms={t: tissue_t1_ms(t, field, contrast) for t in TISSUE_PROPERTIES},
        translations_mm=motion_info["translations_mm"].tolist(), rotations_deg=motion_info["rotations_deg"].tolist(),
        min_jacobian=min_det, inverse_residual_px=inverse_residual, anatomy=anat, **extra,
    )
    if kind == "molli":
        params["molli_inversion_times_ms"] = timings.tolist()
    return params
