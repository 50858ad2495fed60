"""The training loop: Adam on the loss of :mod:`.loss` over the draws of :mod:`.data`, with
the AdaCS scorer alternating, validation on held-out phantoms, checkpoints and resume.

One optimisation step (``docs/design.md`` §3.5, §4; Any2Reg and CAR papers):

1. draw a sequence (:class:`.data._Sampler`): a seeded cardiac phantom with a random kind,
   number of frames, anatomy, motion, field strength, contrast state and SNR (or a real or
   user sequence); a random frame subset and a random flip / transpose; normalised
   intensities. The true motion is used only by the supervised term and validation;
2. network input: with probability ``car_probability`` a CAR contrast augmentation, else with
   probability ``curve_probability`` a random monotone tone curve per frame, else the frames;
3. the loss of :func:`.loss.training_loss`;
4. Adam, gradient-norm clipping; a step is skipped (and logged) if the loss is not finite.

The loop reads and writes no file: it keeps its state in a :class:`RunStore` (the pipeline
passes :class:`napari_any2reg.io.model_io.RunFolder`, which writes ``checkpoint.pt`` — model,
projection head and optimiser state, step, RNG states, config, elapsed seconds, last and best
validation —, ``train_log.jsonl`` — one JSON object per step — and ``best.pt`` — the network
with the lowest validation score — atomically).

Randomness: the sequence drawn at step ``k`` depends only on ``(seed, k)`` (and the phantoms on
``(seed, phantom index)``), so a resumed run draws exactly the sequences the uninterrupted run
would have drawn. No Qt / napari imports.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Protocol

import numpy as np
import torch

from ..engine_api import Progress, RegistrationCancelled
from ..engines._transform import border_mask
from ..network import Any2RegNet, CorrespondenceScorer
from .config import TrainingConfig
from .data import _Sampler
from .loss import ProjectionHead, scorer_loss, training_loss
from .payloads import CHECKPOINT_FORMAT, FORMAT_VERSION, WEIGHTS_FORMAT
from .validation import spurious_motion_mm, validate, validation_phantoms

__all__ = ["RunStore", "train", "learning_rate_at", "check_init_weights"]


def check_init_weights(source: Any, name: str) -> dict[str, Any]:
    """``source`` (the content of the weights file ``name`` a fine-tuning run starts from) once
    it is a checkpoint whose tensors are finite and of a plausible size.

    Why: weights of 1e30 (a damaged or hand-made file) trained into a raw ``LinAlgError`` of
    the PCA weights' eigh, NaN weights into NaN checkpoints. The test is the one the any2reg
    engines apply to a weights file before registering with it (the same bound, so a file
    refused for ``register --weights`` is refused for ``train --init-weights`` too).

    Raises
    ------
    WeightsError
        Naming the setting (``--init-weights`` on the command line, ``init_weights`` in
        Python), the file and the tensor at fault.
    """
    from ..engines.any2reg.pretrained import _check_tensors
    from ..weights import WeightsError
    from .config import _setting_name

    option = _setting_name("init_weights")
    if not isinstance(source, dict) or not isinstance(source.get("model_state"), dict):
        raise WeightsError(f"{option} {name} holds no network (no model_state); pass a best.pt / checkpoint.pt "
                           "of `any2reg train` or a shipped weights file")
    try:
        _check_tensors(source)
    except ValueError as exc:
        raise WeightsError(f"{option} {name}: {exc}, or train from scratch (no {option})") from exc
    return source


class RunStore(Protocol):
    """Where a training run keeps its state (:class:`napari_any2reg.io.model_io.RunFolder` on
    disk; a test may keep it in memory)."""

    #: How messages name the checkpoint (its path).
    checkpoint_name: str

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The saved checkpoint, or ``None`` when the run has none yet."""

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint is saved (by this run or an earlier one)."""

    def load_log(self) -> list[dict[str, Any]]:
        """The log entries saved so far (``[]`` when none)."""

    def load_init_weights(self, source: str) -> dict[str, Any]:
        """The content of the weights file / checkpoint a fine-tuning run starts from."""

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace the checkpoint with ``state`` (all or nothing)."""

    def save_best(self, state: dict[str, Any]) -> None:
        """Replace the best network with ``state`` (all or nothing)."""

    def discard_best(self) -> None:
        """Forget the best network of an earlier run (a fresh start)."""

    def rewrite_log(self, entries: list[dict[str, Any]]) -> None:
        """Replace the log with ``entries``."""

    def append_log(self, entry: dict[str, Any]) -> None:
        """Add one entry to the log."""

    def describe(self) -> dict[str, str | None]:
        """``checkpoint``, ``best`` (``None`` when none was saved) and ``log``: where they are."""


def _network_from_config(net_config: dict[str, Any]) -> Any2RegNet:
    return Any2RegNet(**net_config)


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


def train(
    config: TrainingConfig,
    store: RunStore,
    *,
    resume: bool = True,
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    real_sequences: list[Any] | None = None,
    user_sequences: list[Any] | None = None,
) -> dict[str, Any]:
    """Train (or continue training) an Any2Reg network; see the module docstring.

    The training loop itself: :func:`napari_any2reg.pipeline.training.train` reads the user and
    real sequences and passes the run folder (``any2reg train`` calls that one).

    Parameters
    ----------
    config : TrainingConfig
        ``config.steps`` is the *total* number of steps; a resumed run continues from the
        checkpoint's step up to it (so ``steps`` may be raised between runs).
    store : RunStore
        Where the checkpoint, the log and the best network are kept.
    resume : bool
        Continue from the store's checkpoint when it has one (the network config must match;
        the other settings are taken from ``config``). ``False``: start afresh and replace
        the saved state.
    progress : callable(fraction, message), optional
        Called after every step.
    cancel : threading.Event or callable returning bool, optional
        Checked before and after every step; when set, the current state is checkpointed and
        the function returns with ``summary["cancelled"] = True``.
    log : callable(entry), optional
        Receives every log entry (a dict, as saved in the log).
    real_sequences : list of Sequence, optional
        The sequences read from ``config.real_data_paths`` (the caller reads the files, so
        that core stays free of file formats); needed when ``config.real_data_probability > 0``.
    user_sequences : list of Sequence, optional
        The sequences read from ``config.user_data_dir``; needed when
        ``config.user_data_probability > 0``.

    Returns
    -------
    dict summary: ``steps_done``, ``start_step``, ``cancelled``, ``elapsed_seconds``,
    ``seconds_per_step`` (this call), ``last_validation``, ``best_validation``, ``best_step``,
    where the files are (``checkpoint``, ``best``, ``log``), ``parameters``.

    A ``KeyboardInterrupt`` also checkpoints the last completed step before propagating.
    """
    from ..device import resolve_device

    reporter = Progress(progress, cancel)
    device = resolve_device(config.device)
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:  # checked again: the field may have been set after construction
        from ..device import check_threads
        from .config import threads_option

        torch.set_num_threads(check_threads(config.num_threads, threads_option()))
    try:
        return _train(config, store, device, resume=resume, reporter=reporter, log=log, real_sequences=real_sequences,
                      user_sequences=user_sequences)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainingConfig, store: RunStore, device: torch.device, *, resume: bool, reporter: Progress,
           log: Callable[[dict[str, Any]], None] | None, real_sequences: list[Any] | None = None,
           user_sequences: list[Any] | None = None) -> dict[str, Any]:
    """Set up (or resume) the run, then step, validate, log and checkpoint up to ``config.steps``."""
    run = _Run(config, store, device)
    store.rewrite_log(run.restore(resume))  # drops entries past the checkpoint (or starts afresh)
    if not run.resumed:
        store.discard_best()
    sampler = _Sampler(config, real_sequences, user_sequences)
    run.start_clock()
    cancelled = False
    try:
        reporter.check()
        while run.step < config.steps:
            entry, loss = run.train_step(sampler)
            if run.step % config.validate_every == 0 or run.step == config.steps:
                run.validate_into(entry)
            store.append_log(entry)
            if log is not None:
                log(entry)
            if run.step % config.checkpoint_every == 0 or run.step == config.steps:
                run.checkpoint()
            reporter.report(run.step / max(config.steps, 1), f"step {run.step}/{config.steps} loss {loss:.4f}")
    except RegistrationCancelled:
        cancelled = True
        run.checkpoint()
    except KeyboardInterrupt:
        run.checkpoint()
        raise
    if run.step == run.start_step and not store.has_checkpoint():
        run.checkpoint()  # zero steps requested: still leave a valid checkpoint
    return run.summary(cancelled)


def _optimiser(config: TrainingConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam on ``params``, AdamW when ``config.weight_decay > 0``."""
    if config.weight_decay > 0:
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, eps=config.adam_eps)
    return torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)


def _step_entry(step: int, sums: dict[str, float], infos: list[dict[str, Any]], grad_norm: float, lr: float,
                elapsed: float, step_seconds: float, skipped: bool) -> dict[str, Any]:
    """The log entry of one step: its loss terms, gradient norm, learning rate, timing and draws."""
    entry: dict[str, Any] = {"step": step, **{key: round(v, 6) for key, v in sums.items() if key != "input"}}
    entry.update(grad_norm=round(grad_norm, 6), lr=float(f"{lr:.4g}"), seconds=round(elapsed, 3),
                 step_seconds=round(step_seconds, 4))
    entry["kind"] = ",".join(str(i.get("kind", i["source"])) for i in infos)
    entry["n"] = infos[0]["n"] if len(infos) == 1 else [i["n"] for i in infos]
    entry["input"] = ("none", "car", "curve")[int(sums.get("input", 0))] if len(infos) == 1 else None
    if skipped:
        entry["skipped"] = True
    return entry


class _Run:
    """The state of one :func:`train` call: the networks and their optimisers, the step, the clock and
    the validation record (what a checkpoint saves)."""

    def __init__(self, config: TrainingConfig, store: RunStore, device: torch.device):
        """The networks at their seeded initial weights with fresh optimisers, at step 0."""
        self.config, self.store, self.device = config, store, device
        torch.manual_seed(config.seed)  # the initial weights depend on the seed only
        self.net = _network_from_config(config.net).to(device)
        self.projection = ProjectionHead(self.net.channels[0], config.contrast_channels).to(device)
        self.params = list(self.net.parameters()) + list(self.projection.parameters())
        self.optimiser = _optimiser(config, self.params)
        self.scorer = CorrespondenceScorer(config.scorer_channels).to(device) if config.adacs else None
        self.scorer_optimiser = (torch.optim.Adam(self.scorer.parameters(), lr=config.scorer_learning_rate)
                                 if self.scorer is not None else None)
        self.residual_momentum: float | None = None
        self.start_step, self.step, self.elapsed = 0, 0, 0.0
        self.best: dict[str, Any] | None = None
        self.last_validation: dict[str, Any] | None = None
        self.resumed = False
        self.phantoms: list[Any] | None = None  # the validation phantoms, made at the first validation
        self.masks: dict[tuple[int, int], torch.Tensor] = {}  # similarity mask per training grid (random grids)
        self.call_start = self.elapsed_before = 0.0  # set by start_clock

    # ---------------------------------------------------------------- the starting point
    def restore(self, resume: bool) -> list[dict[str, Any]]:
        """Continue from the store's checkpoint (``resume``) or start from ``init_weights``; the log entries to keep."""
        data = self.store.load_checkpoint() if resume else None
        self.resumed = data is not None
        if self.resumed:
            return self._resume_from(data)
        if self.config.init_weights:
            self._start_from_weights()
        return []

    def _resume_from(self, data: Any) -> list[dict[str, Any]]:
        """Load the checkpoint ``data`` (networks, optimisers, step, clock, validation, RNG states)."""
        store, net = self.store, self.net
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{store.checkpoint_name} is not an any2reg training checkpoint")
        if data["net_config"] != net.config:
            raise ValueError(
                f"{store.checkpoint_name} holds a network with config {data['net_config']}, not {net.config}; "
                "use the same net settings, another folder, or resume=False"
            )
        net.load_state_dict(data["model_state"])
        self.projection.load_state_dict(data["projection_state"])
        self.optimiser.load_state_dict(data["optimizer_state"])
        if self.scorer is not None and data.get("scorer_state") is not None:
            self.scorer.load_state_dict(data["scorer_state"])
            self.scorer_optimiser.load_state_dict(data["scorer_optimizer_state"])
            self.residual_momentum = data.get("residual_momentum")
        self.start_step = self.step = int(data["step"])
        self.elapsed = float(data["elapsed_seconds"])
        self.best = data.get("best_validation")
        self.last_validation = data.get("last_validation")
        _restore_rng_states(data["rng_states"])
        return [e for e in store.load_log() if int(e.get("step", 0)) <= self.start_step]

    def _start_from_weights(self) -> None:
        """Fine-tuning: load the trained weights (and their scorer) of ``init_weights``."""
        # the optimiser state stays fresh
        name = self.config.init_weights
        source = check_init_weights(self.store.load_init_weights(name), name)
        if source.get("net_config") != self.net.config:
            raise ValueError(
                f"init_weights {name} holds a network with config {source.get('net_config')}, "
                f"not {self.net.config}; use the same net settings"
            )
        self.net.load_state_dict(source["model_state"])
        if source.get("projection_state") is not None:
            self.projection.load_state_dict(source["projection_state"])
        if self.scorer is not None and source.get("scorer_state") is not None:
            self.scorer.load_state_dict(source["scorer_state"])

    def start_clock(self) -> None:
        """Start timing this call (on top of the wall time of earlier calls, from the checkpoint)."""
        self.call_start = time.perf_counter()
        self.elapsed_before = self.elapsed

    # ---------------------------------------------------------------- one step
    def scorer_active(self, step: int) -> bool:
        """The scorer is trained from step ``adacs_start_step + 1`` on."""
        return self.scorer is not None and step > self.config.adacs_start_step

    def scores_weight(self, step: int) -> bool:
        """... and weights the registration loss after its own warm-up."""
        return self.scorer_active(step) and step > self.config.adacs_start_step + self.config.adacs_warmup_steps

    def mask_for(self, shape: tuple[int, int]) -> torch.Tensor:
        """The similarity (border) mask of a training grid of ``shape``."""
        if shape not in self.masks:
            self.masks[shape] = border_mask(shape, self.device, margin_fraction=self.config.border_margin)
        return self.masks[shape]

    def train_step(self, sampler: _Sampler) -> tuple[dict[str, Any], float]:
        """Step ``self.step + 1``: draw, loss, gradients, Adam; its log entry and its loss."""
        config = self.config
        t0 = time.perf_counter()
        k = self.step + 1
        rng = np.random.default_rng([config.seed, k])  # the draws of step k depend on (seed, k) only
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        self.net.train()
        self.projection.train()
        lr = learning_rate_at(config, k)
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        self.optimiser.zero_grad(set_to_none=True)
        sums, infos = self._accumulate_gradients(sampler, rng, generator, k)
        grad_norm, skipped = self._apply_gradients(sums, k)
        self.step = k
        step_seconds = time.perf_counter() - t0
        self.elapsed = self.elapsed_before + time.perf_counter() - self.call_start
        return _step_entry(k, sums, infos, grad_norm, lr, self.elapsed, step_seconds, skipped), sums["loss"]

    def _accumulate_gradients(self, sampler: _Sampler, rng: np.random.Generator, generator: torch.Generator,
                              k: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Backpropagate the losses of step ``k``'s sequences; their mean loss terms and draw infos."""
        config, per_step = self.config, self.config.sequences_per_step
        sums: dict[str, float] = {}
        infos = []
        for b in range(per_step):
            sample, info = sampler.draw(rng, (k - 1) * per_step + b)
            frames = sample.frames.to(self.device)
            mask = self.mask_for(tuple(frames.shape[-2:]))
            loss, terms, u = training_loss(self.net, frames, config, generator, projection=self.projection, mask=mask,
                                           scorer=self.scorer if self.scores_weight(k) else None,
                                           true_displacement=sample.displacement, heart_mask=sample.heart_mask)
            (loss / per_step).backward()
            if self.scorer_active(k):
                # alternation: the scorer learns from the fields the network predicts now
                s_loss, s_terms, self.residual_momentum = scorer_loss(self.scorer, frames, u, config,
                                                                      self.residual_momentum, mask=mask)
                (s_loss / per_step).backward()
                terms.update(s_terms)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value) / per_step
            infos.append(dict(info, n=int(frames.shape[0])))
        return sums, infos

    def _apply_gradients(self, sums: dict[str, float], k: int) -> tuple[float, bool]:
        """Clip and apply the gradients (none when the loss is not finite); the norm and whether skipped."""
        config = self.config
        max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        skipped = not (math.isfinite(sums["loss"]) and math.isfinite(grad_norm))
        if skipped:
            self.optimiser.zero_grad(set_to_none=True)
        else:
            self.optimiser.step()
        if self.scorer_active(k):
            if math.isfinite(sums.get("score_loss", float("nan"))):
                torch.nn.utils.clip_grad_norm_(self.scorer.parameters(), 1.0)
                self.scorer_optimiser.step()
            self.scorer_optimiser.zero_grad(set_to_none=True)
        return grad_norm, skipped

    # ---------------------------------------------------------------- validation, checkpoints, summary
    def validate_into(self, entry: dict[str, Any]) -> None:
        """Validate the network now, add the scores to ``entry`` and keep it as the best when it is."""
        config, step = self.config, self.step
        tv = time.perf_counter()
        if self.phantoms is None:
            self.phantoms = validation_phantoms(config)
        last = self.last_validation = dict(validate(self.net, self.phantoms, config.spacing_mm), step=step)
        if config.validation_still_seed is not None:
            last["still_mm"] = spurious_motion_mm(self.net, config)
        entry.update(
            val_epe_ratio=round(last["epe_ratio"], 5),
            val_epe_mm=round(last["epe_mm"], 4),
            val_folding_percent=round(last["folding_percent"], 4),
            val_seconds=round(time.perf_counter() - tv, 3),
        )
        if "still_mm" in last:
            entry["val_still_mm"] = round(last["still_mm"], 4)
        if self.best is None or last["epe_ratio"] < self.best["epe_ratio"]:
            self.best = last
            self.store.save_best(self._best_state())
            entry["best"] = True

    def _best_state(self) -> dict[str, Any]:
        """The weights payload of the network now (``best.pt``)."""
        config, step, scorer = self.config, self.step, self.scorer
        return {
            "format": WEIGHTS_FORMAT,
            "version": FORMAT_VERSION,
            "step": step,
            "model_state": self.net.state_dict(),
            "net_config": self.net.config,
            "config": config.to_dict(),
            "training_spacing_mm": list(config.spacing_mm),
            "validation": self.best,
            "scorer_state": scorer.state_dict() if self.scorer_active(step) else None,
            "scorer_config": scorer.config if self.scorer_active(step) else None,
        }

    def checkpoint(self) -> None:
        """Save the state at the current step (the clock brought up to now once this call has stepped)."""
        if self.step > self.start_step:
            self.elapsed = self.elapsed_before + time.perf_counter() - self.call_start
        self.store.save_checkpoint(self._checkpoint_state())

    def _checkpoint_state(self) -> dict[str, Any]:
        """The checkpoint payload: everything a resumed run continues from."""
        step, scorer = self.step, self.scorer
        return {
            "format": CHECKPOINT_FORMAT,
            "version": FORMAT_VERSION,
            "step": step,
            "model_state": self.net.state_dict(),
            "net_config": self.net.config,
            "projection_state": self.projection.state_dict(),
            "optimizer_state": self.optimiser.state_dict(),
            "scorer_state": scorer.state_dict() if self.scorer_active(step) else None,
            "scorer_config": scorer.config if scorer is not None else None,
            "scorer_optimizer_state": self.scorer_optimiser.state_dict() if self.scorer_active(step) else None,
            "residual_momentum": self.residual_momentum,
            "rng_states": _rng_states(),
            "rng_scheme": "step k draws from numpy default_rng([seed, k]); phantom j from default_rng([seed, 7919, j])",
            "config": self.config.to_dict(),
            "elapsed_seconds": self.elapsed,
            "best_validation": self.best,
            "last_validation": self.last_validation,
            "torch_version": str(torch.__version__),
        }

    def summary(self, cancelled: bool) -> dict[str, Any]:
        """What :func:`train` returns (see there)."""
        done = self.step - self.start_step
        wall = time.perf_counter() - self.call_start
        best = self.best
        return {
            "steps_done": done,
            "start_step": self.start_step,
            "step": self.step,
            "steps": self.config.steps,
            "cancelled": cancelled,
            "elapsed_seconds": self.elapsed,
            "seconds_per_step": wall / done if done else None,
            "last_validation": self.last_validation,
            "best_validation": best,
            "best_step": None if best is None else best.get("step"),
            **self.store.describe(),
            "parameters": self.net.parameter_count(),
            "device": str(self.device),
        }
