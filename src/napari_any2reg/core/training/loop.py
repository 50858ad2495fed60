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
    data = store.load_checkpoint() if resume else None
    resumed = data is not None
    if resumed:
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{store.checkpoint_name} is not an any2reg training checkpoint")
        if data["net_config"] != net.config:
            raise ValueError(
                f"{store.checkpoint_name} holds a network with config {data['net_config']}, not {net.config}; "
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
        entries = [e for e in store.load_log() if int(e.get("step", 0)) <= start_step]
    elif config.init_weights:
        # fine-tuning: start from trained weights (and their scorer); optimiser state is fresh
        source = check_init_weights(store.load_init_weights(config.init_weights), config.init_weights)
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
    store.rewrite_log(entries)  # drops entries past the checkpoint (or starts afresh)
    if not resumed:
        store.discard_best()

    def checkpoint(step: int) -> None:
        nonlocal elapsed
        if step > start_step:
            elapsed = elapsed_before + time.perf_counter() - call_start
        store.save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "version": FORMAT_VERSION,
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
                    store.save_best(
                        {
                            "format": WEIGHTS_FORMAT,
                            "version": FORMAT_VERSION,
                            "step": step,
                            "model_state": net.state_dict(),
                            "net_config": net.config,
                            "config": config.to_dict(),
                            "training_spacing_mm": list(config.spacing_mm),
                            "validation": best,
                            "scorer_state": scorer.state_dict() if scorer_active(step) else None,
                            "scorer_config": scorer.config if scorer_active(step) else None,
                        },
                    )
                    entry["best"] = True
            store.append_log(entry)
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
    if step == start_step and not store.has_checkpoint():
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
        **store.describe(),
        "parameters": net.parameter_count(),
        "device": str(device),
    }
