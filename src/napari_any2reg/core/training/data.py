"""Training data: random phantom draws, real sequences used semi-synthetically, user sequences.

Every draw is a :class:`TrainingSample` (normalised frames, and the true motion when it is
known). The stream is deterministic: the sequence drawn at step ``k`` depends only on
``(seed, k)`` and phantom ``j`` only on ``(seed, j)`` (:class:`_Sampler`), so a resumed run
draws exactly what the uninterrupted run would have. Random training grids
(``spacing_mm_range`` / ``size_px_range``) are drawn from the same streams. The sequences of
real and user data arrive already read (the pipeline reads the files).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..intensity import normalise_intensities
from ..phantom import make_phantom
from .config import REAL_BASES, SEQUENCE_VARIANTS, VALIDATION_SEED_MIN, TrainingConfig, with_random_grid

__all__ = ["TrainingSample", "sample_training_sequence", "REAL_BASES", "RANDOM_MOLLI_SCHEDULES"]


class TrainingSample(NamedTuple):
    """One training sequence.

    frames : Tensor (N, H, W) float32, normalised with :func:`core.registration.normalise_intensities`
    displacement : Tensor (N, 2, H, W) float32 or None
        True pull-back motion in pixels (phantoms only; never used by the loss).
    heart_mask : Tensor (H, W) bool or None
        Heart region on the common grid (phantoms only).
    """

    frames: torch.Tensor
    displacement: torch.Tensor | None
    heart_mask: torch.Tensor | None




def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo if hi <= lo else rng.uniform(lo, hi))




def _random_grid(rng: np.random.Generator, config: TrainingConfig) -> TrainingConfig:
    """``config`` at a random training grid (:attr:`TrainingConfig.spacing_mm_range`,
    ``size_px_range``); ``config`` itself (no draw from ``rng``) when those are unset."""
    if config.spacing_mm_range is None:
        return config
    spacing = _uniform(rng, config.spacing_mm_range)
    lo, hi = config.size_px_range
    size = max(16, int(round(int(rng.integers(lo, hi + 1)) / 8)) * 8)
    return with_random_grid(config, spacing, size)


def _phantom_arguments(rng: np.random.Generator, config: TrainingConfig) -> dict[str, Any]:
    """Random :func:`make_phantom` arguments (anatomy seed < :data:`VALIDATION_SEED_MIN`)."""
    names = sorted(config.kinds)
    p = np.array([config.kinds[n] for n in names], np.float64)
    variant = names[int(rng.choice(len(names), p=p / p.sum()))]
    kind, schedule = SEQUENCE_VARIANTS[variant]
    lo, hi = config.n_frames_range
    args: dict[str, Any] = dict(
        kind=kind,
        seed=int(rng.integers(0, VALIDATION_SEED_MIN)),
        shape=config.shape,
        spacing_mm=config.spacing_mm,
        heart_rate_bpm=_uniform(rng, config.heart_rate_range),
        field_strength=float(config.field_strengths[int(rng.integers(len(config.field_strengths)))]),
        contrast="post" if (kind in ("molli", "stone", "sasha", "ir") and rng.random() < config.post_contrast_probability) else "native",
        motion_mm=_uniform(rng, config.motion_mm_range),
        rotation_deg=_uniform(rng, config.rotation_deg_range),
        nonrigid_mm=_uniform(rng, config.nonrigid_mm_range),
        nonrigid_scale_mm=_uniform(rng, config.nonrigid_scale_mm_range),
    )
    snr_lo, snr_hi = config.snr_range
    noise_free = rng.random() < config.noise_free_probability
    snr = float(math.exp(rng.uniform(math.log(snr_lo), math.log(max(snr_hi, snr_lo)))))
    args["snr"] = None if noise_free else snr
    if kind == "molli":
        args["schedule"] = schedule
    else:
        args["n_frames"] = int(rng.integers(lo, hi + 1))
    # drawn last and only when asked for, so that runs without it keep their phantom stream
    if config.zero_motion_probability > 0 and rng.random() < config.zero_motion_probability:
        args.update(motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0)
    return args


def _make_phantom_safely(args: dict[str, Any]):
    """:func:`make_phantom`, halving the motion until the deformation does not fold."""
    for _ in range(6):
        try:
            return make_phantom(**args)
        except ValueError as exc:
            if "folds" not in str(exc):
                raise
            args = dict(args, motion_mm=args["motion_mm"] / 2, rotation_deg=args["rotation_deg"] / 2,
                        nonrigid_mm=args["nonrigid_mm"] / 2)
    return make_phantom(**dict(args, motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0))


def _dihedral(frames: torch.Tensor, disp: torch.Tensor | None, mask: torch.Tensor | None,
              transpose: bool, flip_y: bool, flip_x: bool):
    """Apply a transpose / flips to frames ``(N, H, W)``, a pull-back field ``(N, 2, H, W)``
    (vectors transformed with the grid) and a mask ``(H, W)``."""
    if transpose:
        frames = frames.transpose(-2, -1)
        if disp is not None:
            disp = disp.transpose(-2, -1).flip(1)  # swap (dy, dx)
        if mask is not None:
            mask = mask.transpose(-2, -1)
    if flip_y:
        frames = frames.flip(-2)
        if disp is not None:
            disp = disp.flip(-2) * disp.new_tensor([-1.0, 1.0]).view(1, 2, 1, 1)
        if mask is not None:
            mask = mask.flip(-2)
    if flip_x:
        frames = frames.flip(-1)
        if disp is not None:
            disp = disp.flip(-1) * disp.new_tensor([1.0, -1.0]).view(1, 2, 1, 1)
        if mask is not None:
            mask = mask.flip(-1)
    return (frames.contiguous(), None if disp is None else disp.contiguous(),
            None if mask is None else mask.contiguous())


def _frame_subset(rng: np.random.Generator, n: int, config: TrainingConfig) -> np.ndarray:
    """Indices of the frames to use (all, or a random subset of ``n_frames_range`` size)."""
    lo, hi = config.n_frames_range
    if n <= 2 or rng.random() >= config.frame_subset_probability:
        keep = np.arange(n)
        if n > hi:  # e.g. MOLLI 9 frames with n_frames_range (2, 8)
            keep = np.sort(rng.choice(n, size=hi, replace=False))
        return keep
    size = int(rng.integers(min(max(2, lo), n), min(hi, n) + 1))
    return np.sort(rng.choice(n, size=size, replace=False))


def _use_phantom(phantom, rng: np.random.Generator, config: TrainingConfig) -> TrainingSample:
    """Frame subset, orientation and normalisation of one phantom."""
    keep = _frame_subset(rng, phantom.sequence.n_frames, config)
    frames = torch.from_numpy(np.ascontiguousarray(phantom.sequence.frames[keep]))
    disp = torch.from_numpy(np.ascontiguousarray(phantom.displacement[keep]))
    mask = torch.from_numpy(np.asarray(phantom.heart_mask, bool))
    if config.dihedral and frames.shape[-2] == frames.shape[-1]:
        flags = rng.random(3) < 0.5
        frames, disp, mask = _dihedral(frames, disp, mask, bool(flags[0]), bool(flags[1]), bool(flags[2]))
    elif config.dihedral:
        flags = rng.random(2) < 0.5
        frames, disp, mask = _dihedral(frames, disp, mask, False, bool(flags[0]), bool(flags[1]))
    frames = torch.from_numpy(normalise_intensities(frames.numpy()))
    return TrainingSample(frames, disp, mask)


def sample_training_sequence(rng: np.random.Generator, config: TrainingConfig) -> TrainingSample:
    """Draw one fresh random phantom sequence for training.

    A random variant (``config.kinds``), anatomy seed (< 10000), number of frames, motion
    amplitude, rotation, non-rigid deformation, heart rate, field strength, contrast state and
    SNR; then a random frame subset and orientation, and intensity normalisation.

    Parameters
    ----------
    rng : numpy.random.Generator
    config : TrainingConfig

    Returns
    -------
    TrainingSample ``(frames (N, H, W) normalised, true displacement (N, 2, H, W), heart mask (H, W))``
    as torch tensors on the CPU.
    """
    phantom = _make_phantom_safely(_phantom_arguments(rng, config))
    return _use_phantom(phantom, rng, config)


class _UserData:
    """Unlabelled user sequences (read from ``user_data_dir`` by the caller), resampled to the
    training grid."""

    def __init__(self, sequences: list[Any] | None, config: TrainingConfig):
        if sequences is None:
            raise ValueError(
                f"user_data_dir {config.user_data_dir}: the sequences were not read; call "
                "napari_any2reg.pipeline.training.train (it reads the folder) or pass user_sequences"
            )
        self.sequences = []
        for seq in sequences:
            frames = torch.from_numpy(normalise_intensities(seq.frames))
            # resample to the training spacing (corner-aligned, like predict)
            h, w = frames.shape[-2:]
            size = _training_size((h, w), seq.spacing_mm, config.spacing_mm)
            if size != (h, w):
                shrink = size[0] < h or size[1] < w
                frames = F.interpolate(frames[:, None], size=size, mode="bilinear", align_corners=True, antialias=shrink)[:, 0]
            self.sequences.append(frames)
        if not self.sequences:
            raise ValueError(f"user_data_dir {config.user_data_dir} holds no readable sequence")
        self.config = config

    def draw(self, rng: np.random.Generator) -> TrainingSample:
        config = self.config
        frames = self.sequences[int(rng.integers(len(self.sequences)))]
        keep = _frame_subset(rng, frames.shape[0], config)
        frames = frames[torch.from_numpy(keep)]
        H, W = config.shape
        frames = _crop_near_centre(frames, config.shape, rng)
        if config.dihedral:
            flags = rng.random(3) < 0.5
            frames, _, _ = _dihedral(frames, None, None, bool(flags[0]) and H == W, bool(flags[1]), bool(flags[2]))
        return TrainingSample(frames.contiguous().float(), None, None)


class _RealData:
    """Real sequences used semi-synthetically (see :mod:`core.semisynthetic`).

    Each sequence is normalised, resampled to the training spacing and pre-aligned once by
    the ``groupwise`` engine (the aligned frames are the "motion-free" base: its residual
    misalignment is a floor shared by every prediction); every draw takes a random frame
    subset, a random crop near the centre (replicate-padded when the scan is smaller than
    the training grid), a known breathing motion (or none, ``zero_motion_probability``) and a
    random orientation.
    """

    def __init__(self, sequences: list[Any], config: TrainingConfig):
        from ..registration import register
        from ..sequence import Sequence

        self.config = config
        self.bases: list[torch.Tensor] = []
        self.base_spacings: list[tuple[float, float]] = []
        self.maps: list[dict[str, Any] | None] = []  # fitted MOLLI maps (real_schedule_probability)
        for seq in sequences:
            frames = torch.from_numpy(normalise_intensities(seq.frames))
            # random training grids: the base stays at the scan's spacing, each draw resamples it
            base_spacing = tuple(float(v) for v in seq.spacing_mm) if config.spacing_mm_range is not None else config.spacing_mm
            frames = _resample_frames(frames, seq.spacing_mm, base_spacing)
            aligned = register(Sequence(frames.numpy(), spacing_mm=base_spacing), engine="groupwise", device="cpu").registered
            self.base_spacings.append(base_spacing)
            maps = None
            if config.real_base == "model":
                from ..semisynthetic import motion_free_series

                if config.real_schedule_probability > 0:
                    maps = _molli_maps(aligned, seq)
                aligned, _ = motion_free_series(Sequence(aligned, timings_ms=seq.timings_ms, kind=seq.kind))
                if maps is not None:  # pixels the fit failed on (air, noise) keep the base's mean level
                    maps["fallback"] = aligned.mean(axis=0)
            self.bases.append(torch.from_numpy(np.ascontiguousarray(aligned, np.float32)))
            self.maps.append(maps)
        if not self.bases:
            raise ValueError("real_data_probability > 0 needs at least one real sequence")

    def draw(self, rng: np.random.Generator) -> TrainingSample:
        from ..semisynthetic import add_rician_noise, breathing_motion, move_frames

        config = self.config
        index = int(rng.integers(len(self.bases)))
        base = self.bases[index]
        maps = self.maps[index]
        if maps is not None and rng.random() < config.real_schedule_probability:
            base = torch.from_numpy(_series_at_random_schedule(maps, rng)[0])
        frames = base[torch.from_numpy(_frame_subset(rng, base.shape[0], config))]
        config = _random_grid(rng, config)
        frames = _resample_frames(frames, self.base_spacings[index], config.spacing_mm)
        H, W = config.shape
        frames = _crop_near_centre(frames, config.shape, rng).numpy()
        n = frames.shape[0]
        if rng.random() < config.zero_motion_probability:
            truth = np.zeros((n, 2, H, W), np.float32)
            moved = frames
        else:
            centre = (H / 2 + rng.uniform(-0.15, 0.15) * H, W / 2 + rng.uniform(-0.15, 0.15) * W)
            truth = breathing_motion(
                rng, n, (H, W), config.spacing_mm,
                translation_mm=_uniform(rng, config.real_motion_mm_range),
                rotation_deg=_uniform(rng, config.rotation_deg_range),
                nonrigid_mm=_uniform(rng, config.nonrigid_mm_range),
                nonrigid_scale_mm=_uniform(rng, config.nonrigid_scale_mm_range),
                centre_px=centre, decay_mm=float(rng.uniform(40.0, 100.0)),
            )
            moved = move_frames(frames, truth)
        if config.real_base == "model":  # the model base is noise-free: the scanner adds noise after the motion
            moved = add_rician_noise(moved, rng, _uniform(rng, config.real_snr_range))
        frames_t, disp_t, _ = _dihedral(torch.from_numpy(moved), torch.from_numpy(truth), None,
                                        bool(rng.random() < 0.5) and H == W, bool(rng.random() < 0.5), bool(rng.random() < 0.5))
        frames_t = torch.from_numpy(normalise_intensities(frames_t.numpy()))
        return TrainingSample(frames_t, disp_t, None)


#: MOLLI schemes of :attr:`TrainingConfig.real_schedule_probability`.
RANDOM_MOLLI_SCHEDULES = ("5(3)3", "4(1)3(1)2", "3(3)3(3)5")


def _molli_maps(aligned: np.ndarray, seq: Any) -> dict[str, Any] | None:
    """The MOLLI fit of an aligned real series (``None`` without timings or a MOLLI kind)."""
    from ..mapping import fit_t1, model_for_kind

    if seq.timings_ms is None or model_for_kind(seq.kind) != "molli":
        return None
    fit = fit_t1(aligned, seq.timings_ms, "molli", device="cpu")
    usable = ~fit.failed & fit.mask & np.all([np.isfinite(v) for v in fit.params.values()], axis=0)
    return {"params": {k: np.where(usable, v, 1.0).astype(np.float64) for k, v in fit.params.items()}, "usable": usable}


def _series_at_random_schedule(maps: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude MOLLI frames ``(N, H, W)`` of the fitted maps at a random schedule (see
    :attr:`TrainingConfig.real_schedule_probability`), motion-free by construction, and that
    schedule's inversion times (ms)."""
    from ..mapping import model_signal
    from ..phantom import molli_inversion_times

    schedule = RANDOM_MOLLI_SCHEDULES[int(rng.integers(len(RANDOM_MOLLI_SCHEDULES)))]
    tis = molli_inversion_times(schedule, heart_rate_bpm=float(rng.uniform(45.0, 100.0)),
                                first_ti_ms=float(rng.uniform(80.0, 250.0)), ti_increment_ms=float(rng.uniform(60.0, 140.0)))
    signal = np.abs(model_signal("molli", maps["params"], tis))
    series = np.where(maps["usable"][None], signal, maps["fallback"][None])
    return np.ascontiguousarray(np.nan_to_num(series, nan=0.0).clip(0.0, None), np.float32), tis


def _crop_near_centre(frames: torch.Tensor, shape: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """A random ``shape`` crop of ``(N, h, w)`` frames from the central half of the free range
    (scans centre the organ), replicate-padded first when the scan is smaller."""
    H, W = shape
    h, w = frames.shape[-2:]
    if h < H or w < W:
        ph, pw = max(0, H - h), max(0, W - w)
        frames = F.pad(frames[:, None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")[:, 0]
        h, w = frames.shape[-2:]
    top = int(rng.integers((h - H) // 4, (h - H) - (h - H) // 4 + 1))
    left = int(rng.integers((w - W) // 4, (w - W) - (w - W) // 4 + 1))
    return frames[:, top:top + H, left:left + W]


def _resample_frames(frames: torch.Tensor, spacing_mm, target_spacing_mm) -> torch.Tensor:
    """``(N, h, w)`` frames at ``spacing_mm`` resampled (corner-aligned, like predict;
    anti-aliased when shrinking) to ``target_spacing_mm``; unchanged when the grid is the same."""
    size = _training_size(frames.shape[-2:], spacing_mm, target_spacing_mm)
    if size == tuple(frames.shape[-2:]):
        return frames
    shrink = size[0] < frames.shape[-2] or size[1] < frames.shape[-1]
    return F.interpolate(frames[:, None], size=size, mode="bilinear", align_corners=True, antialias=shrink)[:, 0]


def _training_size(shape, spacing_mm, training_spacing_mm) -> tuple[int, int]:
    """Grid size of ``shape`` at ``spacing_mm`` resampled (corner-aligned) to the training spacing."""
    return tuple(max(2, int(round((s - 1) * sp / t)) + 1) for s, sp, t in zip(shape, spacing_mm, training_spacing_mm))


class _Sampler:
    """Deterministic stream of training sequences with a small pool of reused phantoms.

    Draw ``d`` (0-based over the whole run) uses phantom ``j = d // reuse - r`` with ``r``
    drawn in ``[0, pool)``; phantom ``j``'s arguments depend only on ``(seed, j)``, so resuming
    regenerates exactly the phantoms it needs.
    """

    def __init__(self, config: TrainingConfig, real_sequences: list[Any] | None = None,
                 user_sequences: list[Any] | None = None):
        self.config = config
        self.cache: OrderedDict[int, Any] = OrderedDict()
        self.user = None
        if config.user_data_dir and config.user_data_probability > 0:
            self.user = _UserData(user_sequences, config)
        self.real = None
        if config.real_data_probability > 0:
            self.real = _RealData(list(real_sequences or []), config)

    def phantom(self, index: int):
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        rng = np.random.default_rng([self.config.seed, 7919, index])
        # the grid is drawn from the phantom's own stream: a resumed run regenerates it exactly
        phantom = _make_phantom_safely(_phantom_arguments(rng, _random_grid(rng, self.config)))
        self.cache[index] = phantom
        while len(self.cache) > self.config.phantom_pool + 1:
            self.cache.popitem(last=False)
        return phantom

    def draw(self, rng: np.random.Generator, draw_index: int) -> tuple[TrainingSample, dict[str, Any]]:
        config = self.config
        if self.user is not None and rng.random() < config.user_data_probability:
            return self.user.draw(rng), {"source": "user"}
        if self.real is not None and rng.random() < config.real_data_probability:
            return self.real.draw(rng), {"source": "real", "kind": "real"}
        newest = draw_index // config.phantom_reuse
        index = max(0, newest - int(rng.integers(0, config.phantom_pool)))
        phantom = self.phantom(index)
        sample = _use_phantom(phantom, rng, config)
        args = phantom.params["arguments"]
        info = {"source": "phantom", "phantom": index, "kind": args["kind"]}
        if args["kind"] == "molli":
            info["kind"] = f"molli-{args['schedule']}"
        return sample, info

