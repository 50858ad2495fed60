"""The training configuration: one flat :class:`TrainingConfig` assembled from grouped settings.

Each setting is declared once, as a field of one of the group dataclasses below (data,
augmentation, loss, optimisation, schedule), with its default and, when users set it from the
command line, a :class:`CliFlag` in the field's metadata (flag name, help, metavar, value
type). ``any2reg train`` builds its flags, their help and their defaults from these fields
(``cli/train.py``), and :func:`run_record` writes the settings of a run grouped the same way.
Adding a training option is therefore one field here (plus its use in the loop).

``help`` texts may hold ``{default}``: it is replaced by the field's default (or the flag's
own ``cli_default``) as the command line writes it (``3,15`` for a range, ``yes`` / ``no``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import json
from typing import Any, Callable

__all__ = [
    "CliFlag",
    "DataSettings",
    "AugmentationSettings",
    "LossSettings",
    "OptimisationSettings",
    "ScheduleSettings",
    "TrainingConfig",
    "SETTING_GROUPS",
    "SEQUENCE_VARIANTS",
    "REAL_BASES",
    "VALIDATION_SEED_MIN",
    "cli_flags",
    "run_record",
    "with_random_grid",
]

#: Phantom anatomy seeds at or above this are reserved for validation / testing.
VALIDATION_SEED_MIN = 10000

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

#: Semi-synthetic bases of the real training sequences (``TrainingConfig.real_base``).
REAL_BASES = ("groupwise", "model")

#: The field of view of ``--size`` (mm): 96 px -> 3 mm, 128 px -> 2.25 mm (the whole chest).
FIELD_OF_VIEW_MM = 288.0


@dataclasses.dataclass(frozen=True)
class CliFlag:
    """How a config field appears on the ``any2reg train`` command line.

    Attributes
    ----------
    flag : str
        ``--name`` (kept identical across versions: run scripts resume with it).
    help : str
        The help text; ``{default}`` becomes the default as the command line writes it.
    value : str
        ``"int"``, ``"float"``, ``"str"``, ``"range"`` (``LO,HI``), ``"bool"``
        (``--x/--no-x``), ``"path"`` (made absolute by the CLI) or ``"paths"`` (a path, the
        flag repeated for several; made absolute).
    metavar : str, optional
    choices : tuple, optional
        Allowed values; ``"device"``: the compute devices.
    cli_default : optional
        A default of the flag that differs from the field's (the field keeps its own when
        ``requires`` is not given on the command line).
    requires : str, optional
        Another field: this flag applies only when that field's flag is given too
        (``--user-data-probability`` with ``--user-data``).
    apply : callable(value, current) -> dict, optional
        The config changes of a given value when it is not simply ``{field: value}`` (``--size``
        sets the grid and its spacing; ``--base-channels`` one key of ``net``); ``current``
        maps every field name to its value so far.
    shown : callable(config) -> value, optional
        What ``{default}`` shows when it is not the field's default itself (``--size``: one
        side of ``shape``; ``--base-channels``: a key of ``net``).
    """

    flag: str
    help: str
    value: str = "str"
    metavar: str | None = None
    choices: tuple | str | None = None
    cli_default: Any = None
    requires: str | None = None
    apply: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    shown: Callable[["TrainingConfig"], Any] | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute name of the flag."""
        return self.flag.lstrip("-").replace("-", "_")


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            cli: CliFlag | tuple[CliFlag, ...] | None = None) -> Any:
    """A config field with its default and (optionally) its command-line flag(s)."""
    metadata = {} if cli is None else {"cli": cli if isinstance(cli, tuple) else (cli,)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _grid_of_size(size: int, current: dict[str, Any]) -> dict[str, Any]:
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels; got {size}")
    spacing = round(FIELD_OF_VIEW_MM / size, 6)
    return {"shape": (size, size), "spacing_mm": (spacing, spacing)}


def _net_key(key: str, convert: Callable[[Any], Any] = lambda v: v):
    def apply(value: Any, current: dict[str, Any]) -> dict[str, Any]:
        return {"net": {**current["net"], key: convert(value)}}

    return apply


def _default_kinds() -> dict[str, float]:
    return {name: 1.0 for name in SEQUENCE_VARIANTS}


def _default_net() -> dict[str, Any]:
    return {"scales": 4, "base_channels": 16}


# ====================================================================== the groups
@dataclasses.dataclass
class DataSettings:
    """What the network is trained on: the grid, the phantoms, and real or user sequences.

    shape, spacing_mm
        Training grid ``(H, W)`` and pixel spacing ``(dy, dx)`` in mm (the validation grid, and
        the nominal spacing stored with the weights).
    spacing_mm_range, size_px_range
        Random training grids (``None``: every draw at ``shape`` / ``spacing_mm``): each
        phantom and each draw from a real series gets an isotropic spacing drawn uniformly
        from ``spacing_mm_range`` and a square size drawn from ``size_px_range`` (pixels,
        inclusive, rounded to a multiple of 8), so one weights file sees the scan's own grids
        (1.0-2.0 mm) as well as the coarse 3 mm one; fine spacings with small sizes keep a step
        about as cheap as the fixed grid (a 96-128 px crop at 1 mm is the heart and its
        surroundings). The network is fully convolutional: nothing else changes.
    n_frames_range
        Frames per training sequence (inclusive). MOLLI has 8 / 9 frames by its schedule (a
        subset may be drawn from them).
    kinds
        Relative sampling weight per variant of :data:`SEQUENCE_VARIANTS`.
    snr_range, noise_free_probability
        Rician noise SNR, drawn log-uniformly; a share of noise-free sequences.
    motion_mm_range, rotation_deg_range, nonrigid_mm_range, nonrigid_scale_mm_range
        Phantom motion amplitudes (uniform); see :func:`core.phantom.make_phantom`.
    heart_rate_range, field_strengths, post_contrast_probability
        Protocol variation.
    phantom_reuse, phantom_pool
        Each generated phantom is used about ``phantom_reuse`` times (with a different frame
        subset, orientation and augmentation each time) from a pool of the last
        ``phantom_pool`` phantoms: generating a phantom costs about as much as a step.
    zero_motion_probability
        The share of phantom and semi-synthetic draws with no motion at all (the network must
        then return ~0: do-no-harm).
    user_data_dir, user_data_probability
        Optional folder of unlabelled sequences (any format :func:`io.read_sequence` reads;
        the pipeline reads them), drawn instead of a phantom with the given probability.
    real_data_paths, real_data_probability, real_motion_mm_range
        Real sequences (paths; the caller reads them and passes them to the loop) used
        semi-synthetically: pre-aligned once by the ``groupwise`` engine at the training
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
        null crossings of real anatomy then fall on other frames and other tissues (0: the
        acquired schedule only).
    """

    shape: tuple[int, int] = setting((96, 96), cli=CliFlag(
        "--size", "training crop size in pixels over a 288 mm field of view (default: {default})",
        value="int", metavar="PX", apply=_grid_of_size, shown=lambda config: config.shape[0]))
    spacing_mm: tuple[float, float] = setting((3.0, 3.0))
    spacing_mm_range: tuple[float, float] | None = setting(None, cli=CliFlag(
        "--spacing-mm-range", "random training grids: isotropic pixel spacing drawn from LO-HI mm per phantom / "
        "real draw (with --size-px-range; default: the fixed 3 mm grid)", value="range", metavar="LO,HI"))
    size_px_range: tuple[int, int] | None = setting(None, cli=CliFlag(
        "--size-px-range", "random training grids: square size drawn from LO-HI pixels (multiples of 8; with "
        "--spacing-mm-range)", value="range", metavar="LO,HI"))
    n_frames_range: tuple[int, int] = setting((4, 24))
    kinds: dict[str, float] = setting(factory=_default_kinds)
    snr_range: tuple[float, float] = setting((15.0, 80.0))
    noise_free_probability: float = setting(0.1)
    motion_mm_range: tuple[float, float] = setting((3.0, 15.0), cli=CliFlag(
        "--motion-mm", "phantom breathing motion range in mm (default: {default})", value="range", metavar="LO,HI"))
    rotation_deg_range: tuple[float, float] = setting((0.0, 5.0), cli=CliFlag(
        "--rotation-deg", "phantom in-plane rotation range in degrees (default: {default})", value="range",
        metavar="LO,HI"))
    nonrigid_mm_range: tuple[float, float] = setting((0.0, 2.5), cli=CliFlag(
        "--nonrigid-mm", "phantom non-rigid (cardiac residual) deformation range in mm (default: {default})",
        value="range", metavar="LO,HI"))
    nonrigid_scale_mm_range: tuple[float, float] = setting((20.0, 40.0))
    heart_rate_range: tuple[float, float] = setting((50.0, 90.0))
    field_strengths: tuple[float, ...] = setting((1.5, 3.0))
    post_contrast_probability: float = setting(0.3)
    phantom_reuse: int = setting(4)
    phantom_pool: int = setting(8)
    zero_motion_probability: float = setting(0.0, cli=CliFlag(
        "--zero-motion-probability", "share of phantom / semi-synthetic sequences drawn without motion "
        "(do-no-harm; default: {default})", value="float"))
    user_data_dir: str | None = setting(None, cli=CliFlag(
        "--user-data", "folder of unlabelled sequences mixed into training", metavar="DIR"))
    user_data_probability: float = setting(0.0, cli=CliFlag(
        "--user-data-probability", "share of steps drawn from --user-data (default: {default})", value="float",
        cli_default=0.25, requires="user_data_dir"))
    real_data_paths: tuple[str, ...] = setting((), cli=CliFlag(
        "--real-data", "a real sequence used semi-synthetically (pre-aligned, then moved by known motion); "
        "repeat for several", value="paths", metavar="FILE"))
    real_data_probability: float = setting(0.0, cli=CliFlag(
        "--real-data-probability", "share of steps drawn from --real-data (default: {default})", value="float",
        cli_default=0.3, requires="real_data_paths"))
    real_motion_mm_range: tuple[float, float] = setting((3.0, 20.0), cli=CliFlag(
        "--real-motion-mm", "injected motion range on real data in mm (default: {default})", value="range",
        metavar="LO,HI"))
    real_base: str = setting("groupwise", cli=CliFlag(
        "--real-base", "semi-synthetic base of --real-data: the groupwise-aligned frames, or those regenerated "
        "motion-free from per-pixel model maps with fresh noise per draw (default: {default})", choices=REAL_BASES))
    real_snr_range: tuple[float, float] = setting((20.0, 60.0))
    real_schedule_probability: float = setting(0.0, cli=CliFlag(
        "--real-schedule-probability", "with --real-base model: share of draws from a real MOLLI series "
        "regenerated from its fitted maps at a random MOLLI schedule (moves the null crossings to other frames; "
        "default: {default})", value="float", metavar="P"))


@dataclasses.dataclass
class AugmentationSettings:
    """How each draw is varied before the network sees it.

    frame_subset_probability, dihedral
        Use a random subset of the frames; random flips / transpose of the whole sequence.
    car_probability, car_layers, car_hidden, curve_probability
        Input contrast augmentation (CAR) and the milder tone-curve augmentation.
    """

    frame_subset_probability: float = setting(0.5)
    dihedral: bool = setting(True)
    car_probability: float = setting(0.5)
    car_layers: int = setting(4)
    car_hidden: int = setting(8)
    curve_probability: float = setting(0.2)


@dataclasses.dataclass
class LossSettings:
    """The loss (see :mod:`core.training.loss`) and the AdaCS correspondence scorer.

    lambda_reg, lambda_grp, lambda_contrast
        Loss weights.
    cte_bins, border_margin
        CTE histogram bins; border excluded from the similarity (fraction of each side).
    contrast_channels
        Output channels of the CAR projection head.
    lambda_supervised
        Weight of the supervised end-point term on sequences whose motion is known (phantoms
        and semi-synthetic real sequences; 0: unsupervised).
    still_unsupervised_weight
        Weight of the unsupervised loss (CTE + regulariser + group term) on motion-free draws
        (1: as on every other draw). Why lower it: on a still sequence with noise and null
        crossings the similarity is not minimal at zero motion (a small field "explains"
        noise and contrast change), so it pulls against the exact zero target.
    adacs, adacs_beta, adacs_gamma, adacs_momentum, scorer_channels
        AdaCS correspondence scoring (:mod:`core.network.scoring`): after the network's
        warm-up (:attr:`ScheduleSettings.adacs_start_step`) the scorer trains, then both
        alternate every step and the detached scores weight the CTE histograms. ``beta``:
        anti-collapse weight, ``gamma``: total-variation weight, ``momentum``: EMA decay of
        the residual; ``scorer_channels``: the scorer's width.
    """

    lambda_reg: float = setting(10.0, cli=CliFlag(
        "--lambda-reg", "weight of mean|grad u|^2 in training-grid pixels (default: {default})", value="float"))
    lambda_grp: float = setting(1.0)
    lambda_contrast: float = setting(0.05)
    cte_bins: int = setting(24)
    border_margin: float = setting(0.06)
    contrast_channels: int = setting(32)
    lambda_supervised: float = setting(0.0, cli=CliFlag(
        "--lambda-supervised", "weight of the supervised end-point term on sequences with known motion "
        "(phantoms, semi-synthetic real; default: {default} = unsupervised)", value="float"))
    still_unsupervised_weight: float = setting(1.0, cli=CliFlag(
        "--still-unsupervised-weight", "weight of the unsupervised loss on motion-free draws, where it pulls "
        "against the zero target (default: {default})", value="float", metavar="W"))
    adacs: bool = setting(True, cli=CliFlag(
        "--adacs", "train the AdaCS correspondence scorer alternately with the network (default: {default})",
        value="bool"))
    adacs_beta: float = setting(0.5)
    adacs_gamma: float = setting(0.2)
    adacs_momentum: float = setting(0.99)
    scorer_channels: int = setting(8)


@dataclasses.dataclass
class OptimisationSettings:
    """The network, its starting point, the optimiser and where it runs.

    net
        Keyword arguments of :class:`~core.network.Any2RegNet`.
    init_weights
        Start a fresh run (not a resume) from this weights file / checkpoint (fine-tuning); the
        network config must match ``net``. Its scorer, when present, is loaded too.
    learning_rate, lr_schedule, lr_min_fraction, warmup_steps, weight_decay, grad_clip, adam_eps
        Optimiser (Adam; AdamW when ``weight_decay > 0``). ``lr_schedule="cosine"``: linear
        warm-up over ``warmup_steps``, then cosine decay to ``lr_min_fraction x learning_rate``
        at ``steps`` (raising ``steps`` on resume stretches the remaining schedule);
        ``"constant"``: warm-up then constant. ``grad_clip`` is the max global gradient norm
        (0: none).
    scorer_learning_rate
        The AdaCS scorer's Adam learning rate (constant).
    device, num_threads
        ``"auto"``, ``"cpu"`` or ``"cuda"``; CPU threads (``None``: torch's default).
    """

    net: dict[str, Any] = setting(factory=_default_net, cli=(
        CliFlag("--base-channels", "network width (default: {default})", value="int",
                apply=_net_key("base_channels"), shown=lambda config: config.net["base_channels"]),
        CliFlag("--aggregation", "set aggregation: correlation-guided eigenvector (default) or mean (ablation)",
                choices=("pca", "mean"), apply=_net_key("aggregation")),
        CliFlag("--auxiliary", "auxiliary MIND stream (default: yes; --no-auxiliary for the ablation)", value="bool",
                apply=_net_key("use_auxiliary", bool)),
    ))
    init_weights: str | None = setting(None, cli=CliFlag(
        "--init-weights", "fine-tune: start a fresh run from this weights file / checkpoint (same network config)",
        value="path", metavar="FILE"))
    learning_rate: float = setting(2e-3, cli=CliFlag(
        "--lr", "peak learning rate, cosine-decayed (default: {default})", value="float"))
    lr_schedule: str = setting("cosine")
    lr_min_fraction: float = setting(0.05)
    warmup_steps: int = setting(20)
    weight_decay: float = setting(0.0)
    grad_clip: float = setting(1.0)
    adam_eps: float = setting(1e-7)
    scorer_learning_rate: float = setting(1e-3)
    device: str = setting("cpu", cli=CliFlag(
        "--device", "compute device: %(choices)s (default: {default})", metavar="DEVICE", choices="device"))
    num_threads: int | None = setting(None, cli=CliFlag(
        "--threads", "CPU threads for torch (default: torch's choice; 1 is faster when other jobs share the cores)",
        value="int", metavar="K"))


@dataclasses.dataclass
class ScheduleSettings:
    """Run identity, length, the scorer's phases, checkpoints and validation.

    seed, steps, sequences_per_step
        Run identity and length (``steps`` is the total); ``sequences_per_step`` sequences (of
        different N) are accumulated into one gradient step.
    adacs_start_step, adacs_warmup_steps
        The registration network trains alone up to ``adacs_start_step`` (its warm-up), then
        the scorer trains alone (registration loss unweighted) for ``adacs_warmup_steps``,
        then both alternate.
    checkpoint_every, validate_every, log_every
        In steps (the last step is always checkpointed and validated); ``log_every`` is used
        by the CLI's progress line only (every step is logged to the file).
    validation_seeds, validation_kinds, validation_motion_mm, validation_snr
        Held-out phantoms: ``validation_kinds[i]`` at ``validation_seeds[i]`` (seeds must be
        >= 10000).
    validation_still_seed
        Anatomy seed (>= 10000) of a motion-free MOLLI validation phantom; its spurious
        relative motion (mm) is logged as ``val_still_mm`` (``None``: not measured).
    """

    seed: int = setting(0, cli=CliFlag("--seed", "training seed (default: {default})", value="int"))
    steps: int = setting(6000, cli=CliFlag(
        "--steps", "total number of steps (default: {default}, about 1 h at --size 96 on 2 CPU cores)", value="int"))
    sequences_per_step: int = setting(1)
    adacs_start_step: int = setting(3500, cli=CliFlag(
        "--adacs-start", "registration-only warm-up before the scorer starts (default: {default})", value="int",
        metavar="STEP"))
    adacs_warmup_steps: int = setting(200)
    checkpoint_every: int = setting(50, cli=CliFlag(
        "--checkpoint-every", "checkpoint interval in steps (default: {default})", value="int", metavar="N"))
    validate_every: int = setting(100, cli=CliFlag(
        "--validate-every", "validation interval in steps (default: {default})", value="int", metavar="N"))
    log_every: int = setting(10, cli=CliFlag(
        "--log-every", "print a progress line every N steps (default: {default})", value="int", metavar="N"))
    validation_seeds: tuple[int, ...] = setting((10000, 10001, 10002, 10003, 10004, 10005))
    validation_kinds: tuple[str, ...] = setting(("molli", "stone", "sasha", "cine", "asl", "perfusion"))
    validation_motion_mm: float = setting(10.0)
    validation_snr: float = setting(40.0)
    validation_still_seed: int | None = setting(None, cli=CliFlag(
        "--validation-still-seed", "log the spurious motion on a motion-free MOLLI phantom of this seed (>= 10000)",
        value="int", metavar="SEED"))


#: The groups in the order of the ``any2reg train`` help and of the run record.
SETTING_GROUPS: dict[str, type] = {
    "schedule": ScheduleSettings,
    "data": DataSettings,
    "augmentation": AugmentationSettings,
    "loss": LossSettings,
    "optimisation": OptimisationSettings,
}


# ====================================================================== the flat configuration
@dataclasses.dataclass
class TrainingConfig(ScheduleSettings, OptimisationSettings, LossSettings, AugmentationSettings, DataSettings):
    """Everything that defines a training run (saved in every checkpoint): the fields of
    :data:`SETTING_GROUPS` (documented there, one group per class) in one flat object.

    Defaults target ~1 h on 2 CPU cores: 96 x 96 crops at 3 mm (the field of view of 192 x 192
    at 1.5 mm: 288 mm, the whole chest), ``base_channels=16``, 4 scales (~0.25 M parameters),
    one sequence of 4–24 frames per step. At inference pass
    ``training_spacing_mm=config.spacing_mm`` to :func:`core.network.predict`.
    """

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
        # every number finite (NaN weights trained to exit 0 with NaN in config.json; a NaN
        # motion range raised a raw OverflowError) before the checks of each setting's range
        for field in dataclasses.fields(self):
            if field.name == "num_threads":  # check_threads below says what a thread count may be
                continue
            value = getattr(self, field.name)
            values = value if isinstance(value, (tuple, list)) else (value,)
            for v in values:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                    raise ValueError(f"{_setting_name(field.name)} must be finite; got {value!r}")
        # at most 10 million steps: about 17 days at 0.15 s a step on 2 CPU cores, far beyond any
        # run this network needs (the default is 6000); 1e9 steps ran practically forever
        if not 1 <= self.steps <= 10_000_000:
            raise ValueError(f"{_setting_name('steps')} must be >= 1 and at most 10000000 (the total number of "
                             f"steps; the default is 6000); got {self.steps}")
        if self.sequences_per_step < 1:
            raise ValueError(f"sequences_per_step must be >= 1; got {self.sequences_per_step}")
        if not 0 < self.learning_rate <= 1:  # 1e30 made the PCA weights' eigh fail with a raw LinAlgError
            raise ValueError(f"{_setting_name('learning_rate')} must be in (0, 1]; got {self.learning_rate}")
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
        # motion a breathing / cardiac series can have: 1e30 mm trained on with exit 0 (every
        # frame moved out of the field of view), a negative amplitude is no amplitude
        for name, unit, top in (("motion_mm_range", "mm", 100.0), ("real_motion_mm_range", "mm", 100.0),
                                ("nonrigid_mm_range", "mm", 100.0), ("rotation_deg_range", "degrees", 45.0)):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= top:
                raise ValueError(f"{_setting_name(name)} must be LOW,HIGH with 0 <= LOW <= HIGH <= {top:g} {unit}; "
                                 f"got {lo:g},{hi:g}")
        if not 0 <= self.still_unsupervised_weight <= 1:
            raise ValueError(f"still_unsupervised_weight must be in [0, 1]; got {self.still_unsupervised_weight}")
        if self.validation_still_seed is not None and self.validation_still_seed < VALIDATION_SEED_MIN:
            raise ValueError(f"validation_still_seed must be >= {VALIDATION_SEED_MIN} (held out from training)")
        if self.num_threads is not None:  # 10**9 would kill the process (libgomp out of memory)
            from ..device import check_threads

            check_threads(self.num_threads, threads_option())

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


def _setting_name(name: str) -> str:
    """The setting ``name`` as the interface in charge spells it: its ``any2reg train`` flag on the
    command line (when it has one), the field's name in Python."""
    from ..vocabulary import interface

    flags = TrainingConfig.__dataclass_fields__[name].metadata.get("cli") or ()
    return flags[0].flag if flags and interface() == "cli" else name


def threads_option() -> str:
    """The name of ``num_threads`` as the interface in charge spells it: ``--threads`` on the
    command line (``any2reg train``'s flag), ``num_threads=`` in Python."""
    from ..vocabulary import interface

    return "threads" if interface() == "cli" else "num_threads"


def with_random_grid(config: TrainingConfig, spacing: float, size: int) -> TrainingConfig:
    """``config`` on the square grid ``size`` px at ``spacing`` mm, without re-validating (a
    shallow copy: called at every draw of the random training grids)."""
    grid = copy.copy(config)
    grid.shape, grid.spacing_mm = (size, size), (spacing, spacing)
    return grid


def cli_flags() -> list[tuple[dataclasses.Field, CliFlag, str]]:
    """Every command-line flag of the configuration: ``(field, flag, group name)``, group by group."""
    flags = []
    for group, cls in SETTING_GROUPS.items():
        for field in dataclasses.fields(cls):
            for flag in field.metadata.get("cli", ()):
                flags.append((field, flag, group))
    return flags


def run_record(config: TrainingConfig) -> dict[str, Any]:
    """The settings of a run grouped as :data:`SETTING_GROUPS` (JSON-friendly; the flat
    :meth:`TrainingConfig.to_dict` is the checkpoint's), with the flags that set each field."""
    flat = config.to_dict()
    record: dict[str, Any] = {}
    for group, cls in SETTING_GROUPS.items():
        record[group] = {field.name: flat[field.name] for field in dataclasses.fields(cls)}
    record["flags"] = {flag.flag: field.name for field, flag, _ in cli_flags()}
    return record
