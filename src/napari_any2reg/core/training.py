"""Unsupervised training of the Any2Reg network on simulated (and optionally user) sequences.

Recipe (``docs/design.md`` §3.5, §4; Any2Reg and CAR papers), one optimisation step:

1. draw a sequence: a seeded cardiac phantom (:func:`core.phantom.make_phantom`) with a random
   kind (MOLLI 5(3)3 and 4(1)3(1)2, STONE, SASHA, IR, ASL, perfusion, cine), number of frames,
   anatomy, motion, field strength, contrast state and SNR; a random frame subset and a random
   flip / transpose; intensities normalised like :func:`core.network.predict` does. Optionally
   an unlabelled user sequence instead (``user_data_dir``). The true motion is never used by
   the loss (it is only kept for validation);
2. network input: with probability ``car_probability`` a CAR contrast augmentation
   (:func:`core.augmentation.car_augment`, a new random contrast per frame), else with
   probability ``curve_probability`` a random monotone tone curve per frame, else the frames;
3. loss, on the *un-augmented* frames warped by the predicted field ``u`` (CAR: the similarity
   is computed on the pre-augmentation images)::

       L = CTE(warp(frames, u) inside the border mask)
           + lambda_reg * mean|grad u|^2          (pixels of the training grid)
           + lambda_grp * mean_x |mean_i u_i(x)|^2
           + lambda_contrast * MSE(P(E0(car_a(frames))), P(E0(car_b(frames))))

   where ``E0`` is the network's level-0 image encoder (``net.encoder[0]``: the frame-shared
   stem whose input is the image itself, i.e. where contrast enters), ``P`` a 1x1-conv
   projection head (32 channels, trained with the network, kept in the checkpoint, not needed
   at inference) and both projected maps are standardised per frame and channel before the
   MSE so that the head cannot shrink its output to zero;
4. Adam, gradient-norm clipping, a step is skipped (and logged) if the loss is not finite.

Why the border mask and the strong regulariser: on a small phantom the CTE with a weak
regulariser (1 x mean|grad u|^2) was minimised by non-physical deformations that pull
extrapolated border pixels into the histogram (loss below its value at the true alignment
while the end-point error grew). The classical engines evaluate the similarity inside
:func:`core.engines._transform.border_mask` and use ``20 x mean|grad u|^2``. We use the same
mask and ``lambda_reg = 10`` (400-step runs at 96 px / 3 mm, validation EPE ratio at the end:
lambda 1 → 0.47 after reaching 0.39 (unstable), 5 → 0.41, 10 (lr 2e-3) → 0.40, 20 → 0.42,
60 → 0.46; no folding in any run).

Validation: a few fixed held-out phantoms (seeds >= 10000, never drawn for training: training
anatomy seeds are < 10000) registered with :func:`core.network.predict`; the score is the mean
over them of ``relative_epe(predicted) / relative_epe(0)`` (1 = no better than doing nothing,
0 = perfect). ``best.pt`` keeps the network with the lowest score.

Files written to ``out_dir`` (all atomically):

* ``checkpoint.pt`` — model, projection head and optimiser state, step, RNG states, config,
  elapsed seconds, last and best validation; :func:`train` resumes from it;
* ``train_log.jsonl`` — one JSON object per step (loss terms, gradient norm, seconds, kind,
  N, and the validation numbers on validation steps);
* ``best.pt`` — model state + network config + training config + validation numbers
  (:func:`load_network` reads it, and ``checkpoint.pt``).

Randomness: the sequence drawn at step ``k`` depends only on ``(seed, k)`` (and the phantoms
on ``(seed, phantom index)``), so a resumed run draws exactly the sequences the uninterrupted
run would have drawn. No Qt / napari imports.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augmentation import car_augment, random_intensity_curve
from .engine_api import Progress, RegistrationCancelled
from .engines._transform import border_mask
from .intensity import normalise_intensities
from .losses import conditional_template_entropy, gradient_regulariser, group_motion_penalty, relative_endpoint_loss
from .metrics import relative_epe
from .network import Any2RegNet, CorrespondenceScorer, networks_from_checkpoint, predict
from .network.scoring import correspondence_residual, scoring_inputs, scoring_loss
from .phantom import make_phantom
from .spatial import folding_fraction, warp

__all__ = [
    "TrainingConfig",
    "TrainingSample",
    "ProjectionHead",
    "sample_training_sequence",
    "training_loss",
    "scorer_loss",
    "validation_phantoms",
    "validate",
    "train",
    "learning_rate_at",
    "load_network",
    "run_file",
    "load_training_file",
    "weights_payload",
    "manifest_entry",
    "read_log",
    "FileWriter",
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "LOG_NAME",
    "VALIDATION_SEED_MIN",
]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
LOG_NAME = "train_log.jsonl"
#: Phantom anatomy seeds at or above this are reserved for validation / testing.
VALIDATION_SEED_MIN = 10000
_CHECKPOINT_FORMAT = "any2reg-training-checkpoint"
_WEIGHTS_FORMAT = "any2reg-weights"
_FORMAT_VERSION = 1

#: Sequence variants drawn for training: name -> (phantom kind, MOLLI schedule or None).
SEQUENCE_VARIANTS: dict[str, tuple[str, str | None]] = {
    "molli-5(3)3": ("molli", "5(3)3"),
    "molli-4(1)3(1)2": ("molli", "4(1)3(1)2"),
    "stone": ("stone", None),
    "sasha": ("sasha", None),
    "ir": ("ir", None),
    "asl": ("asl", None),
    "perfusion": ("perfusion", None),
    "cine": ("cine", None),
}


# ====================================================================== configuration
def _default_kinds() -> dict[str, float]:
    return {name: 1.0 for name in SEQUENCE_VARIANTS}


def _default_net() -> dict[str, Any]:
    return {"scales": 4, "base_channels": 16}


@dataclasses.dataclass
class TrainingConfig:
    """Everything that defines a training run (saved in every checkpoint).

    Defaults target ~1 h on 2 CPU cores: 96 x 96 crops at 3 mm (the field of view of
    192 x 192 at 1.5 mm: 288 mm, the whole chest), ``base_channels=16``, 4 scales
    (~0.25 M parameters), one sequence of 4–24 frames per step. At inference pass
    ``training_spacing_mm=config.spacing_mm`` to :func:`core.network.predict`
    (:func:`load_network` returns it).

    Attributes (grouped)
    --------------------
    seed, steps, sequences_per_step
        Run identity and length; ``sequences_per_step`` sequences (of different N) are
        accumulated into one gradient step.
    shape, spacing_mm
        Training grid ``(H, W)`` and pixel spacing ``(dy, dx)`` in mm (the validation grid,
        and the nominal spacing stored with the weights).
    spacing_mm_range, size_px_range
        Random training grids (``None``: every draw at ``shape`` / ``spacing_mm``): each
        phantom and each draw from a real series gets an isotropic spacing drawn uniformly
        from ``spacing_mm_range`` and a square size drawn from ``size_px_range`` (pixels,
        inclusive, rounded to a multiple of 8), so one weights file sees the scan's own
        grids (1.0-2.0 mm) as well as the coarse 3 mm one; fine spacings with small sizes
        keep a step about as cheap as the fixed grid (a 96-128 px crop at 1 mm is the heart
        and its surroundings). The network is fully convolutional: nothing else changes.
    n_frames_range
        Frames per training sequence (inclusive). MOLLI has 8 / 9 frames by its schedule
        (a subset may be drawn from them).
    kinds
        Relative sampling weight per variant of :data:`SEQUENCE_VARIANTS`.
    snr_range, noise_free_probability
        Rician noise SNR, drawn log-uniformly; a share of noise-free sequences.
    motion_mm_range, rotation_deg_range, nonrigid_mm_range, nonrigid_scale_mm_range
        Phantom motion amplitudes (uniform); see :func:`core.phantom.make_phantom`.
    heart_rate_range, field_strengths, post_contrast_probability
        Protocol variation.
    frame_subset_probability, dihedral
        Use a random subset of the frames; random flips / transpose of the whole sequence.
    phantom_reuse, phantom_pool
        Each generated phantom is used about ``phantom_reuse`` times (with a different frame
        subset, orientation and augmentation each time) from a pool of the last
        ``phantom_pool`` phantoms: generating a phantom costs about as much as a step.
    car_probability, car_layers, car_hidden, curve_probability
        Input contrast augmentation (CAR) and the milder tone-curve augmentation.
    learning_rate, lr_schedule, lr_min_fraction, warmup_steps, weight_decay, grad_clip, adam_eps
        Optimiser (Adam; AdamW when ``weight_decay > 0``). ``lr_schedule="cosine"``: linear
        warm-up over ``warmup_steps``, then cosine decay to ``lr_min_fraction x
        learning_rate`` at ``steps`` (raising ``steps`` on resume stretches the remaining
        schedule); ``"constant"``: warm-up then constant. ``grad_clip`` is the max global
        gradient norm (0: none).
    lambda_reg, lambda_grp, lambda_contrast
        Loss weights (see the module docstring).
    cte_bins, border_margin
        CTE histogram bins; border excluded from the similarity (fraction of each side).
    contrast_channels
        Output channels of the CAR projection head.
    adacs, adacs_start_step, adacs_warmup_steps, adacs_beta, adacs_gamma, adacs_momentum
        AdaCS correspondence scoring (:mod:`core.network.scoring`): the registration network
        trains alone up to ``adacs_start_step`` (its warm-up), then the scorer trains alone
        (registration loss unweighted) for ``adacs_warmup_steps``, then both alternate every
        step and the detached scores weight the CTE histograms. ``beta``: anti-collapse
        weight, ``gamma``: total-variation weight, ``momentum``: EMA decay of the residual.
    scorer_channels, scorer_learning_rate
        Scorer width and its Adam learning rate (constant).
    net
        Keyword arguments of :class:`~core.network.Any2RegNet`.
    checkpoint_every, validate_every, log_every
        In steps (the last step is always checkpointed and validated); ``log_every`` is used
        by the CLI's progress line only (every step is logged to the file).
    validation_seeds, validation_kinds, validation_motion_mm, validation_snr
        Held-out phantoms: ``validation_kinds[i]`` at ``validation_seeds[i]`` (seeds must be
        >= 10000).
    user_data_dir, user_data_probability
        Optional folder of unlabelled sequences (any format :func:`io.read_sequence` reads),
        drawn instead of a phantom with the given probability.
    init_weights
        Start a fresh run (not a resume) from this weights file / checkpoint (fine-tuning);
        the network config must match ``net``. Its scorer, when present, is loaded too.
    lambda_supervised, zero_motion_probability
        Weight of the supervised end-point term on sequences whose motion is known (phantoms
        and semi-synthetic real sequences; 0: unsupervised as before), and the share of those
        drawn with no motion at all (the network must then return ~0: do-no-harm).
    still_unsupervised_weight
        Weight of the unsupervised loss (CTE + regulariser + group term) on those motion-free
        draws (1: as on every other draw). Why lower it: on a still sequence with noise and
        null crossings the similarity is not minimal at zero motion (a small field "explains"
        noise and contrast change), so it pulls against the exact zero target; the
        unsupervised loss stays on every moved and unlabelled draw.
    real_data_paths, real_data_probability, real_motion_mm_range
        Real sequences (paths; the caller reads them and passes them to :func:`train`)
        used semi-synthetically: pre-aligned once by the ``groupwise`` engine at the training
        spacing, then moved at every draw by a known :func:`core.semisynthetic.breathing_motion`
        of ``real_motion_mm_range`` peak-to-peak; drawn instead of a phantom with the given
        probability.
    real_base, real_snr_range
        ``"groupwise"``: the aligned frames themselves are the base (their residual
        misalignment is labelled "no motion"); ``"model"``: the aligned frames regenerated
        motion-free from per-pixel maps (:func:`core.semisynthetic.motion_free_series`: the
        MOLLI model for MOLLI series with timings, else rank 2), with Rician noise of an SNR
        drawn from ``real_snr_range`` added after the motion at every draw — exact targets,
        and still draws with the real contrast evolution (null crossings) and fresh noise.
    real_schedule_probability
        With ``real_base="model"``: the share of draws from a real series with a T1 model
        (MOLLI with timings) whose frames are regenerated from its fitted per-pixel maps at a
        random MOLLI schedule (``5(3)3``, ``4(1)3(1)2`` or ``3(3)3(3)5``; 45-100 bpm; first
        inversion 80-250 ms, 60-140 ms between experiments) instead of the acquired one: the
        null crossings of real anatomy then fall on other frames and other tissues, so the
        network meets contrast change it must not read as motion in many more forms than the
        one schedule of the scan (0: the acquired schedule only).
    validation_still_seed
        Anatomy seed (>= 10000) of a motion-free MOLLI validation phantom; its spurious
        relative motion (mm) is logged as ``val_still_mm`` (``None``: not measured).
    device, num_threads
        ``"auto"``, ``"cpu"`` or ``"cuda"``; CPU threads (``None``: torch's default).
    """

    seed: int = 0
    steps: int = 6000
    sequences_per_step: int = 1
    shape: tuple[int, int] = (96, 96)
    spacing_mm: tuple[float, float] = (3.0, 3.0)
    spacing_mm_range: tuple[float, float] | None = None
    size_px_range: tuple[int, int] | None = None
    n_frames_range: tuple[int, int] = (4, 24)
    kinds: dict[str, float] = dataclasses.field(default_factory=_default_kinds)
    snr_range: tuple[float, float] = (15.0, 80.0)
    noise_free_probability: float = 0.1
    motion_mm_range: tuple[float, float] = (3.0, 15.0)
    rotation_deg_range: tuple[float, float] = (0.0, 5.0)
    nonrigid_mm_range: tuple[float, float] = (0.0, 2.5)
    nonrigid_scale_mm_range: tuple[float, float] = (20.0, 40.0)
    heart_rate_range: tuple[float, float] = (50.0, 90.0)
    field_strengths: tuple[float, ...] = (1.5, 3.0)
    post_contrast_probability: float = 0.3
    frame_subset_probability: float = 0.5
    dihedral: bool = True
    phantom_reuse: int = 4
    phantom_pool: int = 8
    car_probability: float = 0.5
    car_layers: int = 4
    car_hidden: int = 8
    curve_probability: float = 0.2
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    lr_min_fraction: float = 0.05
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    adam_eps: float = 1e-7
    lambda_reg: float = 10.0
    lambda_grp: float = 1.0
    lambda_contrast: float = 0.05
    cte_bins: int = 24
    border_margin: float = 0.06
    contrast_channels: int = 32
    adacs: bool = True
    adacs_start_step: int = 3500
    adacs_warmup_steps: int = 200
    adacs_beta: float = 0.5
    adacs_gamma: float = 0.2
    adacs_momentum: float = 0.99
    scorer_channels: int = 8
    scorer_learning_rate: float = 1e-3
    net: dict[str, Any] = dataclasses.field(default_factory=_default_net)
    checkpoint_every: int = 50
    validate_every: int = 100
    log_every: int = 10
    validation_seeds: tuple[int, ...] = (10000, 10001, 10002, 10003, 10004, 10005)
    validation_kinds: tuple[str, ...] = ("molli", "stone", "sasha", "cine", "asl", "perfusion")
    validation_motion_mm: float = 10.0
    validation_snr: float = 40.0
    user_data_dir: str | None = None
    user_data_probability: float = 0.0
    init_weights: str | None = None
    lambda_supervised: float = 0.0
    zero_motion_probability: float = 0.0
    still_unsupervised_weight: float = 1.0
    real_data_paths: tuple[str, ...] = ()
    real_data_probability: float = 0.0
    real_motion_mm_range: tuple[float, float] = (3.0, 20.0)
    real_base: str = "groupwise"
    real_snr_range: tuple[float, float] = (20.0, 60.0)
    real_schedule_probability: float = 0.0
    validation_still_seed: int | None = None
    device: str = "cpu"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)
        if self.spacing_mm_range is not None:
            self.spacing_mm_range = tuple(float(v) for v in self.spacing_mm_range)
        if self.size_px_range is not None:
            self.size_px_range = tuple(int(v) for v in self.size_px_range)
        self.n_frames_range = tuple(int(n) for n in self.n_frames_range)
        for name in ("snr_range", "motion_mm_range", "rotation_deg_range", "nonrigid_mm_range",
                     "nonrigid_scale_mm_range", "heart_rate_range", "real_motion_mm_range", "real_snr_range"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        self.field_strengths = tuple(float(v) for v in self.field_strengths)
        self.validation_seeds = tuple(int(s) for s in self.validation_seeds)
        self.validation_kinds = tuple(str(k) for k in self.validation_kinds)
        self.real_data_paths = tuple(str(p) for p in self.real_data_paths)
        self.kinds = {str(k): float(v) for k, v in dict(self.kinds).items()}
        self.net = dict(self.net)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for inconsistent settings."""
        if self.steps < 0 or self.sequences_per_step < 1:
            raise ValueError("steps must be >= 0 and sequences_per_step >= 1")
        if len(self.shape) != 2 or min(self.shape) < 16:
            raise ValueError(f"shape must be (H, W) with H, W >= 16; got {self.shape}")
        if len(self.spacing_mm) != 2 or min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be two positive numbers; got {self.spacing_mm}")
        if (self.spacing_mm_range is None) != (self.size_px_range is None):
            raise ValueError("spacing_mm_range and size_px_range go together (random training grids); give both or neither")
        if self.spacing_mm_range is not None:
            lo, hi = self.spacing_mm_range
            if len(self.spacing_mm_range) != 2 or not 0 < lo <= hi:
                raise ValueError(f"spacing_mm_range must be (low, high) in mm with 0 < low <= high; got {self.spacing_mm_range}")
            lo, hi = self.size_px_range
            if len(self.size_px_range) != 2 or not 16 <= lo <= hi:
                raise ValueError(f"size_px_range must be (low, high) in pixels with 16 <= low <= high; got {self.size_px_range}")
        lo, hi = self.n_frames_range
        if lo < 2 or hi < lo:
            raise ValueError(f"n_frames_range must satisfy 2 <= min <= max; got {self.n_frames_range}")
        unknown = set(self.kinds) - set(SEQUENCE_VARIANTS)
        if unknown or not self.kinds or sum(self.kinds.values()) <= 0 or min(self.kinds.values()) < 0:
            raise ValueError(
                f"kinds must map some of {sorted(SEQUENCE_VARIANTS)} to non-negative weights "
                f"(not all zero); got {self.kinds}"
            )
        if len(self.validation_seeds) != len(self.validation_kinds):
            raise ValueError("validation_seeds and validation_kinds must have the same length")
        if any(s < VALIDATION_SEED_MIN for s in self.validation_seeds):
            raise ValueError(f"validation seeds must be >= {VALIDATION_SEED_MIN} (held out from training)")
        if self.checkpoint_every < 1 or self.validate_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every, validate_every and log_every must be >= 1")
        if self.phantom_reuse < 1 or self.phantom_pool < 1:
            raise ValueError("phantom_reuse and phantom_pool must be >= 1")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant'; got {self.lr_schedule!r}")
        if self.adacs_start_step < 0 or self.adacs_warmup_steps < 0 or not 0 <= self.adacs_momentum < 1:
            raise ValueError("adacs_start_step and adacs_warmup_steps must be >= 0 and adacs_momentum in [0, 1)")
        if self.user_data_probability > 0 and not self.user_data_dir:
            raise ValueError("user_data_probability > 0 needs user_data_dir")
        if self.real_data_probability > 0 and not self.real_data_paths:
            raise ValueError("real_data_probability > 0 needs real_data_paths")
        if self.real_base not in REAL_BASES:
            raise ValueError(f"real_base must be one of {', '.join(REAL_BASES)}; got {self.real_base!r}")
        if min(self.real_snr_range) <= 0:
            raise ValueError(f"real_snr_range must be positive; got {self.real_snr_range}")
        if self.user_data_probability + self.real_data_probability > 1:
            raise ValueError("user_data_probability + real_data_probability must be <= 1")
        if self.lambda_supervised < 0 or not 0 <= self.zero_motion_probability <= 1:
            raise ValueError("lambda_supervised must be >= 0 and zero_motion_probability in [0, 1]")
        if not 0 <= self.real_schedule_probability <= 1:
            raise ValueError(f"real_schedule_probability must be in [0, 1]; got {self.real_schedule_probability}")
        if self.real_schedule_probability > 0 and self.real_base != "model":
            raise ValueError("real_schedule_probability > 0 needs real_base='model' (the schedule is resampled from the fitted maps)")
        if not 0 <= self.still_unsupervised_weight <= 1:
            raise ValueError(f"still_unsupervised_weight must be in [0, 1]; got {self.still_unsupervised_weight}")
        if self.validation_still_seed is not None and self.validation_still_seed < VALIDATION_SEED_MIN:
            raise ValueError(f"validation_still_seed must be >= {VALIDATION_SEED_MIN} (held out from training)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown TrainingConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainingConfig":
        return dataclasses.replace(self, **changes)


# ====================================================================== data
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
    # not dataclasses.replace: that would validate and copy every field at every draw
    grid = copy.copy(config)
    grid.shape, grid.spacing_mm = (size, size), (spacing, spacing)
    return grid


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


#: Semi-synthetic bases of the real training sequences (``TrainingConfig.real_base``).
REAL_BASES = ("groupwise", "model")


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
        from .registration import register
        from .sequence import Sequence

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
                from .semisynthetic import motion_free_series

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
        from .semisynthetic import add_rician_noise, breathing_motion, move_frames

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
    from .mapping import fit_t1, model_for_kind

    if seq.timings_ms is None or model_for_kind(seq.kind) != "molli":
        return None
    fit = fit_t1(aligned, seq.timings_ms, "molli", device="cpu")
    usable = ~fit.failed & fit.mask & np.all([np.isfinite(v) for v in fit.params.values()], axis=0)
    return {"params": {k: np.where(usable, v, 1.0).astype(np.float64) for k, v in fit.params.items()}, "usable": usable}


def _series_at_random_schedule(maps: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude MOLLI frames ``(N, H, W)`` of the fitted maps at a random schedule (see
    :attr:`TrainingConfig.real_schedule_probability`), motion-free by construction, and that
    schedule's inversion times (ms)."""
    from .mapping import model_signal
    from .phantom import molli_inversion_times

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


# ====================================================================== loss
class ProjectionHead(nn.Module):
    """CAR projection head: 1x1 conv ``channels → out_channels`` (no bias) applied per frame;
    the output is standardised per frame and channel over space (instance norm, no affine)."""

    def __init__(self, channels: int, out_channels: int = 32):
        super().__init__()
        self.proj = nn.Conv2d(channels, out_channels, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(self.proj(features), eps=1e-5)


def _car(frames: torch.Tensor, generator: torch.Generator, config: TrainingConfig) -> torch.Tensor:
    return car_augment(frames, generator, layers=config.car_layers, hidden=config.car_hidden)


def training_loss(
    net: Any2RegNet,
    frames: torch.Tensor,
    config: TrainingConfig,
    generator: torch.Generator,
    *,
    projection: ProjectionHead | None = None,
    mask: torch.Tensor | None = None,
    augment: bool = True,
    scorer: CorrespondenceScorer | None = None,
    true_displacement: torch.Tensor | None = None,
    heart_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The training loss on one sequence.

    Parameters
    ----------
    net : Any2RegNet
    frames : Tensor (N, H, W), normalised, on the network's device
    config : TrainingConfig
        Loss weights, CTE bins, augmentation probabilities.
    generator : torch.Generator (CPU)
        Draws the augmentation choices and CAR weights.
    projection : ProjectionHead, optional
        Needed when ``config.lambda_contrast > 0`` (else that term is skipped).
    mask : Tensor (H, W) bool, optional
        Pixels of the similarity; default :func:`core.engines._transform.border_mask`.
    augment : bool
        ``False``: feed the frames unchanged and skip the contrast term (evaluation).
    scorer : CorrespondenceScorer, optional
        AdaCS: its (detached) scores of the warped frames weight the CTE histograms.
    true_displacement, heart_mask : Tensor, optional
        Known motion ``(N, 2, H, W)`` (phantoms, semi-synthetic real sequences) and the
        region to stress ``(H, W)``: adds ``lambda_supervised`` x
        :func:`core.losses.relative_endpoint_loss` (inside the interior of the grid) to the
        unsupervised loss, which stays.

    Returns
    -------
    (loss, terms, displacement): scalar loss with gradient, a dict of float terms
    (``loss``, ``cte``, ``reg``, ``grp``, ``contrast``, ``input`` = which input augmentation
    was used as a code 0 none / 1 car / 2 curve) and the predicted field ``(N, 2, H, W)``.
    """
    if mask is None:
        mask = border_mask(tuple(frames.shape[-2:]), frames.device, margin_fraction=config.border_margin)
    choice = 0
    net_input = frames
    contrast = frames.new_zeros(())
    if augment:
        r = float(torch.rand((), generator=generator))
        if r < config.car_probability:
            choice = 1
            net_input = _car(frames, generator, config)
        elif r < config.car_probability + config.curve_probability:
            choice = 2
            net_input = random_intensity_curve(frames, generator)
        if config.lambda_contrast > 0 and projection is not None:
            a = _car(frames, generator, config)[:, None]
            b = _car(frames, generator, config)[:, None]
            stem = net.encoder[0]
            contrast = F.mse_loss(projection(stem(a)), projection(stem(b)))
    u = net(net_input)
    warped = warp(frames[:, None], u)[:, 0]
    scores = None
    if scorer is not None:
        with torch.no_grad():  # stop-gradient: the scores only re-weight the residuals
            scores = scorer(scoring_inputs(warped.detach()))
    cte = conditional_template_entropy(warped, bins=config.cte_bins, mask=mask, pixel_weights=scores)
    reg = gradient_regulariser(u)
    grp = group_motion_penalty(u)
    loss = cte + config.lambda_reg * reg + config.lambda_grp * grp
    if augment and config.lambda_contrast > 0 and projection is not None:
        loss = loss + config.lambda_contrast * contrast
    still = true_displacement is not None and not bool(true_displacement.any())
    if still and config.lambda_supervised > 0 and config.still_unsupervised_weight != 1.0:
        loss = config.still_unsupervised_weight * loss
    supervised = None
    if config.lambda_supervised > 0 and true_displacement is not None:
        interior = border_mask(tuple(frames.shape[-2:]), frames.device, margin_fraction=config.border_margin, max_pixels=1 << 30)
        supervised = relative_endpoint_loss(u, true_displacement.to(u.device), interior,
                                            None if heart_mask is None else heart_mask.to(u.device))
        loss = loss + config.lambda_supervised * supervised
    terms = {
        "loss": float(loss.detach()),
        "cte": float(cte.detach()),
        "reg": float(reg.detach()),
        "grp": float(grp.detach()),
        "contrast": float(contrast.detach()),
        "input": choice,
    }
    if supervised is not None:
        terms["supervised"] = float(supervised.detach())
    return loss, terms, u


def scorer_loss(
    scorer: CorrespondenceScorer,
    frames: torch.Tensor,
    displacement: torch.Tensor,
    config: TrainingConfig,
    momentum: float | None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], float]:
    """AdaCS scoring loss of ``scorer`` on ``frames`` warped by the (detached) ``displacement``.

    ``momentum`` is the moving average of the mean residual so far (``None`` on the first
    call: this step's mean starts it). Returns ``(loss, terms, new_momentum)``.
    """
    with torch.no_grad():
        warped = warp(frames[:, None], displacement.detach())[:, 0]
        residual = correspondence_residual(warped)
        current = float(residual.mean())
    momentum = current if momentum is None else config.adacs_momentum * momentum + (1 - config.adacs_momentum) * current
    scores = scorer(scoring_inputs(warped, residual))
    loss, terms = scoring_loss(scores, residual, momentum, beta=config.adacs_beta, gamma=config.adacs_gamma, mask=mask)
    terms["residual"] = current
    return loss, terms, momentum


# ====================================================================== validation
def validation_phantoms(config: TrainingConfig) -> list[Any]:
    """The held-out phantoms (``validation_kinds[i]`` at ``validation_seeds[i]``, training grid)."""
    out = []
    for kind, seed in zip(config.validation_kinds, config.validation_seeds):
        out.append(
            make_phantom(kind, seed=seed, shape=config.shape, spacing_mm=config.spacing_mm,
                         motion_mm=config.validation_motion_mm, snr=config.validation_snr)
        )
    return out


def validate(net: Any2RegNet, phantoms: list[Any], spacing_mm: tuple[float, float]) -> dict[str, Any]:
    """Register each phantom with :func:`core.network.predict` and score it.

    Returns ``{"epe_ratio": mean over phantoms of relative_epe(pred) / relative_epe(0),
    "epe_mm": mean relative EPE (mm), "epe0_mm": mean with no registration,
    "folding_percent": mean % of folded pixels, "per_sequence": {...}}``.
    """
    per: dict[str, dict[str, float]] = {}
    for ph in phantoms:
        seq = ph.sequence
        u = predict(net, seq.frames, spacing_mm=None)
        e = relative_epe(u, ph.displacement, ph.heart_mask, spacing_mm=spacing_mm)
        e0 = relative_epe(np.zeros_like(ph.displacement), ph.displacement, ph.heart_mask, spacing_mm=spacing_mm)
        name = f"{seq.kind}-{seq.metadata.get('seed')}"
        per[name] = {
            "epe_mm": e,
            "epe0_mm": e0,
            "epe_ratio": e / max(e0, 1e-9),
            "folding_percent": 100.0 * folding_fraction(u),
        }
    values = list(per.values())
    return {
        "epe_ratio": float(np.mean([v["epe_ratio"] for v in values])),
        "epe_mm": float(np.mean([v["epe_mm"] for v in values])),
        "epe0_mm": float(np.mean([v["epe0_mm"] for v in values])),
        "folding_percent": float(np.mean([v["folding_percent"] for v in values])),
        "per_sequence": per,
    }


def spurious_motion_mm(net: Any2RegNet, config: TrainingConfig) -> float:
    """Relative motion (mm, in the heart) the network invents on a motion-free MOLLI phantom.

    The phantom (anatomy seed ``config.validation_still_seed``, SNR ``validation_snr``) has no
    motion at all, only the MOLLI contrast changes with their null crossings: every
    millimetre returned is harm done.
    """
    phantom = make_phantom("molli", seed=int(config.validation_still_seed), shape=config.shape, spacing_mm=config.spacing_mm,
                           motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0, snr=config.validation_snr)
    u = predict(net, phantom.sequence.frames, spacing_mm=None)
    return relative_epe(u, np.zeros_like(u), phantom.heart_mask, spacing_mm=config.spacing_mm)


# ====================================================================== files
#: How the training loop writes a file: ``write_file(path, fill)`` calls ``fill(temporary path)``
#: and puts the result at ``path`` atomically, replacing it (the pipeline passes
#: :func:`napari_any2reg.io.atomic_write`), so core needs no file-writing code of the io layer.
FileWriter = Callable[[Path, Callable[[Path], None]], Any]


def _atomic_save(write_file: FileWriter, obj: Any, path: Path) -> None:
    write_file(path, lambda p: torch.save(obj, p))


def _write_log(write_file: FileWriter, path: Path, entries: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(e) + "\n" for e in entries)
    write_file(path, lambda p: Path(p).write_text(text))


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries of a ``train_log.jsonl`` (a truncated last line is ignored)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return entries


def _network_from_config(net_config: dict[str, Any]) -> Any2RegNet:
    return Any2RegNet(**net_config)


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any2RegNet, dict[str, Any]]:
    """Load a trained network from ``best.pt`` or ``checkpoint.pt`` (or a folder holding them;
    ``best.pt`` first).

    Returns ``(net, info)`` with ``net`` in eval mode on ``device`` and ``info`` holding
    ``training_spacing_mm`` (pass it to :func:`core.network.predict`), ``training_shape``,
    ``step``, ``validation``, ``config`` and ``scorer`` (the AdaCS
    :class:`~core.network.CorrespondenceScorer` in eval mode, or ``None`` when the file has none).
    """
    path = Path(path)
    if path.is_dir():
        path = path / BEST_NAME if (path / BEST_NAME).exists() else path / CHECKPOINT_NAME
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") not in (_CHECKPOINT_FORMAT, _WEIGHTS_FORMAT):
        raise ValueError(f"{path} is not an any2reg training checkpoint or weights file")
    net, scorer = networks_from_checkpoint(data, device)
    info = {
        "scorer": scorer,
        "training_spacing_mm": tuple(data["config"]["spacing_mm"]),
        "training_shape": tuple(data["config"]["shape"]),
        "step": data["step"],
        "validation": data.get("validation") or data.get("last_validation"),
        "config": data["config"],
        "path": str(path),
    }
    return net, info


def run_file(source: str | os.PathLike) -> Path:
    """The training file a path names: itself, or in a run folder ``best.pt`` first, else ``checkpoint.pt``."""
    path = Path(source)
    if path.is_dir():
        path = path / BEST_NAME if (path / BEST_NAME).exists() else path / CHECKPOINT_NAME
    return path


def load_training_file(path: str | os.PathLike) -> dict[str, Any]:
    """A ``checkpoint.pt`` / ``best.pt`` / weights file's content (tensors and plain containers only)."""
    data = _load(Path(path))
    if data.get("format") not in (_CHECKPOINT_FORMAT, _WEIGHTS_FORMAT):
        raise ValueError(f"{path} is not an any2reg training checkpoint or weights file")
    return data


def weights_payload(data: dict[str, Any], scorer_data: dict[str, Any] | None = None, *,
                    source: Any = "the checkpoint") -> dict[str, Any]:
    """The shippable weights of a training file: network (and AdaCS scorer) state in float32.

    Parameters
    ----------
    data : dict
        :func:`load_training_file` of ``best.pt`` / ``checkpoint.pt``.
    scorer_data : dict, optional
        Another training file to take the scorer from (default: ``data``).
    source : str
        Named in the error when the scorer is missing.

    Only the state dicts, configs and validation numbers are kept: no optimiser state, so the
    file is ~1 MB. :func:`napari_any2reg.pipeline.training.export_weights` writes it.
    """
    scorer_data = data if scorer_data is None else scorer_data
    if scorer_data.get("scorer_state") is None:
        raise ValueError(
            f"{source} holds no AdaCS scorer (was it saved before the scorer started?); "
            "pass scorer_source=<a later checkpoint.pt>"
        )
    return {
        "format": _WEIGHTS_FORMAT,
        "version": _FORMAT_VERSION,
        "step": _step_or_none(data.get("step")),  # None: a weight average (no single step)
        "model_state": {k: v.float() if v.is_floating_point() else v for k, v in data["model_state"].items()},
        "net_config": data["net_config"],
        "scorer_state": {k: v.float() if v.is_floating_point() else v for k, v in scorer_data["scorer_state"].items()},
        "scorer_config": scorer_data["scorer_config"],
        "scorer_step": _step_or_none(scorer_data.get("scorer_step", scorer_data.get("step"))),
        "config": data["config"],
        "training_spacing_mm": list(data["config"]["spacing_mm"]),
        "validation": data.get("validation") or data.get("last_validation"),
    }


def _step_or_none(step: Any) -> int | None:
    return None if step is None else int(step)


def average_payloads(payloads: list[dict[str, Any]], weights: list[float] | None = None) -> dict[str, Any]:
    """The weight average ("model soup") of :func:`weights_payload` dicts of one network.

    Fine-tuning runs that start from one another stay in one basin of the loss, so the mean of
    their parameters is a network too, and it often sits past the trade-off the runs trace one
    by one (here: invented motion against accuracy; see ``weights/README.md``). Network and
    scorer states are averaged (float tensors; integer buffers are taken from the first);
    configurations must agree.

    Parameters
    ----------
    payloads : list of dict
        At least two :func:`weights_payload` results.
    weights : list of float, optional
        Relative weight of each (default: uniform).

    Returns
    -------
    A payload like :func:`weights_payload`'s with ``step`` ``None``, ``validation`` ``None``
    (an average has not been through a run's validation) and ``averaged_from`` (each source's
    step, scorer step and weight); ``config`` is the first payload's.
    """
    if len(payloads) < 2:
        raise ValueError(f"averaging needs at least two weights files; got {len(payloads)}")
    weights = [1.0] * len(payloads) if weights is None else [float(w) for w in weights]
    if len(weights) != len(payloads) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("weights must be one non-negative number per file, not all zero")
    first = payloads[0]
    for key in ("net_config", "scorer_config", "training_spacing_mm"):
        for other in payloads[1:]:
            if other.get(key) != first.get(key):
                raise ValueError(f"cannot average networks with different {key}: {first.get(key)} vs {other.get(key)}")
    total = sum(weights)

    def mean_state(key: str) -> dict[str, torch.Tensor]:
        states = [p[key] for p in payloads]
        return {name: (sum(w * st[name].float() for w, st in zip(weights, states)) / total) if tensor.is_floating_point() else tensor
                for name, tensor in states[0].items()}

    averaged = dict(first)
    averaged.update(
        step=None,
        scorer_step=None,
        model_state=mean_state("model_state"),
        scorer_state=mean_state("scorer_state"),
        validation=None,
        averaged_from=[{"step": p.get("step"), "scorer_step": p.get("scorer_step"), "weight": w / total}
                       for p, w in zip(payloads, weights)],
    )
    return averaged


def manifest_entry(payload: dict[str, Any], *, sha256: str, n_bytes: int, description: str = "") -> dict[str, Any]:
    """The ``weights/manifest.json`` entry of a written :func:`weights_payload` (validation without
    the per-sequence numbers)."""
    validation = payload["validation"]
    return {
        "sha256": sha256,
        "bytes": int(n_bytes),
        "format": _WEIGHTS_FORMAT,
        "step": payload["step"],
        "scorer_step": payload["scorer_step"],
        "net_config": payload["net_config"],
        "scorer_config": payload["scorer_config"],
        "training_spacing_mm": payload["training_spacing_mm"],
        "validation": None if validation is None else {k: v for k, v in validation.items() if k != "per_sequence"},
        "config": payload["config"],
        "description": description,
        **({"averaged_from": payload["averaged_from"]} if payload.get("averaged_from") else {}),
    }


# ====================================================================== training loop
def learning_rate_at(config: TrainingConfig, step: int) -> float:
    """Learning rate used for (1-based) step ``step``."""
    lr = config.learning_rate
    if config.warmup_steps > 0 and step <= config.warmup_steps:
        return lr * step / (config.warmup_steps + 1)
    if config.lr_schedule == "constant":
        return lr
    span = max(1, config.steps - config.warmup_steps)
    t = min(1.0, max(0.0, (step - config.warmup_steps) / span))
    low = lr * config.lr_min_fraction
    return low + 0.5 * (lr - low) * (1.0 + math.cos(math.pi * t))


def _rng_states() -> dict[str, Any]:
    """Global RNG states as tensors / plain values (so checkpoints load with ``weights_only``).

    The training stream itself does not depend on them (see the module docstring); they are
    kept so that a resumed process also continues any other use of the global generators."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }


def _restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    state = states.get("numpy")
    if state:
        np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                             state["has_gauss"], state["cached_gaussian"]))


def _load(path: Path) -> dict[str, Any]:
    # everything we save is tensors and plain containers: no arbitrary unpickling
    return torch.load(path, map_location="cpu", weights_only=True)


def train(
    config: TrainingConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    real_sequences: list[Any] | None = None,
    user_sequences: list[Any] | None = None,
    write_file: FileWriter | None = None,
) -> dict[str, Any]:
    """Train (or continue training) an Any2Reg network; see the module docstring.

    The training loop itself: :func:`napari_any2reg.pipeline.training.train` reads the user and
    real sequences and passes the atomic file writer (``any2reg train`` calls that one).

    Parameters
    ----------
    config : TrainingConfig
        ``config.steps`` is the *total* number of steps; a resumed run continues from the
        checkpoint's step up to it (so ``steps`` may be raised between runs).
    out_dir : path
        Folder for ``checkpoint.pt``, ``train_log.jsonl`` and ``best.pt`` (created).
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when present (the network config must match;
        the other settings are taken from ``config``). ``False``: start afresh and replace
        the files.
    progress : callable(fraction, message), optional
        Called after every step.
    cancel : threading.Event or callable returning bool, optional
        Checked before and after every step; when set, the current state is checkpointed and
        the function returns with ``summary["cancelled"] = True``.
    log : callable(entry), optional
        Receives every log entry (a dict, as written to ``train_log.jsonl``).
    real_sequences : list of Sequence, optional
        The sequences read from ``config.real_data_paths`` (the caller reads the files, so
        that core stays free of file formats); needed when ``config.real_data_probability > 0``.
    user_sequences : list of Sequence, optional
        The sequences read from ``config.user_data_dir``; needed when
        ``config.user_data_probability > 0``.
    write_file : callable(path, fill)
        Writes ``checkpoint.pt``, ``best.pt`` and the rewritten ``train_log.jsonl`` atomically
        (:data:`FileWriter`; the pipeline passes :func:`napari_any2reg.io.atomic_write` with
        ``overwrite=True``).

    Returns
    -------
    dict summary: ``steps_done``, ``start_step``, ``cancelled``, ``elapsed_seconds``,
    ``seconds_per_step`` (this call), ``last_validation``, ``best_validation``, ``best_step``,
    file paths, ``parameters``.

    A ``KeyboardInterrupt`` also checkpoints the last completed step before propagating.
    """
    from .device import resolve_device

    if write_file is None:
        raise TypeError(
            "core.training.train needs write_file (an atomic file writer); use "
            "napari_any2reg.pipeline.training.train, which passes one"
        )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    reporter = Progress(progress, cancel)
    device = resolve_device(config.device)
    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    try:
        return _train(config, out_dir, device, resume=resume, reporter=reporter, log=log, real_sequences=real_sequences,
                      user_sequences=user_sequences, write_file=write_file)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainingConfig, out_dir, device: torch.device, *, resume: bool, reporter: Progress,
           log: Callable[[dict[str, Any]], None] | None, real_sequences: list[Any] | None = None,
           user_sequences: list[Any] | None = None, write_file: FileWriter) -> dict[str, Any]:
    out = Path(out_dir)
    ckpt_path, best_path, log_path = out / CHECKPOINT_NAME, out / BEST_NAME, out / LOG_NAME

    torch.manual_seed(config.seed)
    net = _network_from_config(config.net).to(device)
    projection = ProjectionHead(net.channels[0], config.contrast_channels).to(device)
    params = list(net.parameters()) + list(projection.parameters())
    if config.weight_decay > 0:
        optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, eps=config.adam_eps)
    else:
        optimiser = torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)

    scorer = CorrespondenceScorer(config.scorer_channels).to(device) if config.adacs else None
    scorer_optimiser = torch.optim.Adam(scorer.parameters(), lr=config.scorer_learning_rate) if scorer is not None else None
    residual_momentum: float | None = None

    start_step, elapsed = 0, 0.0
    best: dict[str, Any] | None = None
    last_validation: dict[str, Any] | None = None
    entries: list[dict[str, Any]] = []
    if resume and ckpt_path.exists():
        data = _load(ckpt_path)
        if data.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not an any2reg training checkpoint")
        if data["net_config"] != net.config:
            raise ValueError(
                f"{ckpt_path} holds a network with config {data['net_config']}, not {net.config}; "
                "use the same net settings, another folder, or resume=False"
            )
        net.load_state_dict(data["model_state"])
        projection.load_state_dict(data["projection_state"])
        optimiser.load_state_dict(data["optimizer_state"])
        if scorer is not None and data.get("scorer_state") is not None:
            scorer.load_state_dict(data["scorer_state"])
            scorer_optimiser.load_state_dict(data["scorer_optimizer_state"])
            residual_momentum = data.get("residual_momentum")
        start_step = int(data["step"])
        elapsed = float(data["elapsed_seconds"])
        best = data.get("best_validation")
        last_validation = data.get("last_validation")
        _restore_rng_states(data["rng_states"])
        entries = [e for e in read_log(log_path) if int(e.get("step", 0)) <= start_step]
    elif config.init_weights:
        # fine-tuning: start from trained weights (and their scorer); optimiser state is fresh
        source = _load(Path(config.init_weights))
        if source.get("net_config") != net.config:
            raise ValueError(
                f"init_weights {config.init_weights} holds a network with config {source.get('net_config')}, "
                f"not {net.config}; use the same net settings"
            )
        net.load_state_dict(source["model_state"])
        if source.get("projection_state") is not None:
            projection.load_state_dict(source["projection_state"])
        if scorer is not None and source.get("scorer_state") is not None:
            scorer.load_state_dict(source["scorer_state"])
    _write_log(write_file, log_path, entries)  # drops entries past the checkpoint (or starts afresh)
    if not (resume and ckpt_path.exists()) and best_path.exists():
        best_path.unlink()

    def checkpoint(step: int) -> None:
        nonlocal elapsed
        if step > start_step:
            elapsed = elapsed_before + time.perf_counter() - call_start
        _atomic_save(
            write_file,
            {
                "format": _CHECKPOINT_FORMAT,
                "version": _FORMAT_VERSION,
                "step": step,
                "model_state": net.state_dict(),
                "net_config": net.config,
                "projection_state": projection.state_dict(),
                "optimizer_state": optimiser.state_dict(),
                "scorer_state": scorer.state_dict() if scorer_active(step) else None,
                "scorer_config": scorer.config if scorer is not None else None,
                "scorer_optimizer_state": scorer_optimiser.state_dict() if scorer_active(step) else None,
                "residual_momentum": residual_momentum,
                "rng_states": _rng_states(),
                "rng_scheme": "step k draws from numpy default_rng([seed, k]); phantom j from default_rng([seed, 7919, j])",
                "config": config.to_dict(),
                "elapsed_seconds": elapsed,
                "best_validation": best,
                "last_validation": last_validation,
                "torch_version": str(torch.__version__),
            },
            ckpt_path,
        )

    def scorer_active(step: int) -> bool:
        """The scorer is trained from step ``adacs_start_step + 1`` on."""
        return scorer is not None and step > config.adacs_start_step

    def scores_weight(step: int) -> bool:
        """... and weights the registration loss after its own warm-up."""
        return scorer_active(step) and step > config.adacs_start_step + config.adacs_warmup_steps

    sampler = _Sampler(config, real_sequences, user_sequences)
    phantoms: list[Any] | None = None
    masks: dict[tuple[int, int], torch.Tensor] = {}  # similarity mask per training grid (random grids)

    def mask_for(shape: tuple[int, int]) -> torch.Tensor:
        if shape not in masks:
            masks[shape] = border_mask(shape, device, margin_fraction=config.border_margin)
        return masks[shape]

    log_file = open(log_path, "a")
    step = start_step
    call_start = time.perf_counter()
    elapsed_before = elapsed  # wall time of earlier calls (from the checkpoint)
    cancelled = False
    try:
        reporter.check()
        while step < config.steps:
            t0 = time.perf_counter()
            k = step + 1
            rng = np.random.default_rng([config.seed, k])
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            net.train()
            projection.train()
            lr = learning_rate_at(config, k)
            for group in optimiser.param_groups:
                group["lr"] = lr
            optimiser.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            infos = []
            for b in range(config.sequences_per_step):
                sample, info = sampler.draw(rng, step * config.sequences_per_step + b)
                frames = sample.frames.to(device)
                mask = mask_for(tuple(frames.shape[-2:]))
                loss, terms, u = training_loss(net, frames, config, generator, projection=projection, mask=mask,
                                               scorer=scorer if scores_weight(k) else None,
                                               true_displacement=sample.displacement, heart_mask=sample.heart_mask)
                (loss / config.sequences_per_step).backward()
                if scorer_active(k):
                    # alternation: the scorer learns from the fields the network predicts now
                    s_loss, s_terms, residual_momentum = scorer_loss(scorer, frames, u, config, residual_momentum, mask=mask)
                    (s_loss / config.sequences_per_step).backward()
                    terms.update(s_terms)
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value) / config.sequences_per_step
                infos.append(dict(info, n=int(frames.shape[0])))
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else float("inf")))
            skipped = not (math.isfinite(sums["loss"]) and math.isfinite(grad_norm))
            if skipped:
                optimiser.zero_grad(set_to_none=True)
            else:
                optimiser.step()
            if scorer_active(k):
                if math.isfinite(sums.get("score_loss", float("nan"))):
                    torch.nn.utils.clip_grad_norm_(scorer.parameters(), 1.0)
                    scorer_optimiser.step()
                scorer_optimiser.zero_grad(set_to_none=True)
            step = k
            step_seconds = time.perf_counter() - t0
            elapsed = elapsed_before + time.perf_counter() - call_start
            entry: dict[str, Any] = {"step": step, **{key: round(v, 6) for key, v in sums.items() if key != "input"}}
            entry.update(grad_norm=round(grad_norm, 6), lr=float(f"{lr:.4g}"), seconds=round(elapsed, 3), step_seconds=round(step_seconds, 4))
            entry["kind"] = ",".join(str(i.get("kind", i["source"])) for i in infos)
            entry["n"] = infos[0]["n"] if len(infos) == 1 else [i["n"] for i in infos]
            entry["input"] = ("none", "car", "curve")[int(sums.get("input", 0))] if len(infos) == 1 else None
            if skipped:
                entry["skipped"] = True
            if step % config.validate_every == 0 or step == config.steps:
                tv = time.perf_counter()
                if phantoms is None:
                    phantoms = validation_phantoms(config)
                last_validation = dict(validate(net, phantoms, config.spacing_mm), step=step)
                if config.validation_still_seed is not None:
                    last_validation["still_mm"] = spurious_motion_mm(net, config)
                entry.update(
                    val_epe_ratio=round(last_validation["epe_ratio"], 5),
                    val_epe_mm=round(last_validation["epe_mm"], 4),
                    val_folding_percent=round(last_validation["folding_percent"], 4),
                    val_seconds=round(time.perf_counter() - tv, 3),
                )
                if "still_mm" in last_validation:
                    entry["val_still_mm"] = round(last_validation["still_mm"], 4)
                if best is None or last_validation["epe_ratio"] < best["epe_ratio"]:
                    best = last_validation
                    _atomic_save(
                        write_file,
                        {
                            "format": _WEIGHTS_FORMAT,
                            "version": _FORMAT_VERSION,
                            "step": step,
                            "model_state": net.state_dict(),
                            "net_config": net.config,
                            "config": config.to_dict(),
                            "training_spacing_mm": list(config.spacing_mm),
                            "validation": best,
                            "scorer_state": scorer.state_dict() if scorer_active(step) else None,
                            "scorer_config": scorer.config if scorer_active(step) else None,
                        },
                        best_path,
                    )
                    entry["best"] = True
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
            if log is not None:
                log(entry)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint(step)
            message = f"step {step}/{config.steps} loss {sums['loss']:.4f}"
            reporter.report(step / max(config.steps, 1), message)
    except RegistrationCancelled:
        cancelled = True
        checkpoint(step)
    except KeyboardInterrupt:
        checkpoint(step)
        raise
    finally:
        log_file.close()
    if step == start_step and not ckpt_path.exists():
        checkpoint(step)  # zero steps requested: still leave a valid checkpoint
    done = step - start_step
    wall = time.perf_counter() - call_start
    return {
        "steps_done": done,
        "start_step": start_step,
        "step": step,
        "steps": config.steps,
        "cancelled": cancelled,
        "elapsed_seconds": elapsed,
        "seconds_per_step": wall / done if done else None,
        "last_validation": last_validation,
        "best_validation": best,
        "best_step": None if best is None else best.get("step"),
        "checkpoint": str(ckpt_path),
        "best": str(best_path) if best_path.exists() else None,
        "log": str(log_path),
        "parameters": net.parameter_count(),
        "device": str(device),
    }
