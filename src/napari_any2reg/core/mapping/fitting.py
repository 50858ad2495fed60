"""The public fitter :func:`fit_t1`: input checks, the time grid, the polarity handling, the
per-pixel solve (:mod:`.solver`) and the assembly of :class:`~.result.T1FitResult`; and
:func:`fit_problem`, which says beforehand why a fit would be refused."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from ..device import describe_device, resolve_device
from ..vocabulary import arg
from .models import T1_MODELS, DecayModel, T1Model, _get_model, model_for_kind
from .result import FitCancelled, T1FitResult
from .solver import _grid_search, _levenberg_marquardt, _quality, _where_rows


def fit_problem(timings_ms: Any, n_frames: int, model: str | T1Model | None) -> str | None:
    """Why :func:`fit_t1` would refuse these timings, or ``None`` when a fit is possible.

    Lets a caller decide before any expensive work (registration, export) whether T1 maps can
    be made: no model, no timings, too few frames for the model, fewer than two distinct times.

    Examples
    --------
    >>> fit_problem([100, 180, 260, 1000], 4, "molli") is None
    True
    >>> fit_problem([100, 100, 100, 100], 4, "molli")
    'need at least 2 distinct finite inversion times to fit T1; got [100.0, 100.0, 100.0, 100.0].'
    """
    if model is None:
        return "the sequence kind has no T1 model"
    try:
        _check_timings(timings_ms, int(n_frames), _get_model(model))
    except ValueError as exc:
        return str(exc)
    return None


def fit_t1(
    frames: Any,
    timings_ms: Any = None,
    model: str | T1Model | None = None,
    *,
    mask: Any = None,
    device: str | torch.device = "auto",
    t1_range_ms: tuple[float, float] | None = None,
    n_grid: int = 60,
    iterations: int | None = None,
    polarity_restoration: bool | None = None,
    noise_floor: float | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
    exclude_frames: Any = None,
) -> T1FitResult:
    """Fit a relaxation model (T1, T2 or T2*) to every pixel of a magnitude image series.

    The one fitter of every model in :data:`T1_MODELS`: the recovery models (T1) and the
    decay models ``t2``, ``t2c`` and ``t2star`` (T2 / T2*; the result's ``t1_ms`` then holds
    the T2 / T2* map, also as :attr:`T1FitResult.map_ms`, named by :attr:`T1FitResult.quantity`).

    Parameters
    ----------
    frames : Sequence or array_like, shape (N, ...)
        Magnitude images with the frame axis first: ``(N, H, W)``, ``(N, P)`` curves, or one
        ``(N,)`` curve (0-d maps). A :class:`~napari_any2reg.core.sequence.Sequence` also
        supplies ``timings_ms`` and, through its ``kind``, the default ``model``. Never
        modified.
    timings_ms : array_like, shape (N,), optional
        Inversion (MOLLI, STONE, IR) or saturation (SASHA) time of each frame in ms; ``inf``
        for a frame without preparation. For the decay models the echo time of each frame:
        the T2-preparation duration or spin-echo TE (``t2``, ``t2c``), the gradient-echo TE
        (``t2star``). Required unless ``frames`` is a Sequence with timings.
    model : str, optional
        One of :data:`T1_MODELS` (``molli``, ``ir``, ``stone``, ``stone2``, ``sasha``,
        ``sasha2``, ``t2``, ``t2c``, ``t2star``). Defaults to the Sequence's kind
        (:func:`model_for_kind`).
    mask : array_like of bool, shape (...), optional
        Fit only these pixels (e.g. a heart mask); the others are NaN and not counted as failed.
    device : {"auto", "cpu", "cuda"} or torch.device
        Where to compute.
    t1_range_ms : (float, float), optional
        Allowed range of the time constant (T1*, T1, T2 or T2*) and of the derived T1. A fit
        ending on a bound counts as failed. Default: the model's ``range_ms`` (10-8000 ms for
        T1, 1-3000 ms for T2, 0.5-2000 ms for T2*).
    n_grid : int
        Number of log-spaced time constants in the initial grid search.
    iterations : int, optional
        Maximum Levenberg–Marquardt iterations (it stops earlier once converged). Default:
        the model's ``iterations`` (20; 60 for ``t2c``).
    polarity_restoration : bool, optional
        Try negating the ``k`` shortest-TI samples, ``k = 0..N-1``, and keep the best fit.
        Default: on for the inversion-recovery models (magnitude data), off for SASHA and the
        decay models.
    noise_floor : float, optional
        Decay models only (T2*: truncation of a multi-echo curve): per pixel, the echoes from
        the first one whose magnitude is at or below this level (signal units; e.g. two to
        three times the mean background magnitude) are left out of the fit, so a fast decay
        is not biased by echoes that carry only noise. At least ``p + 1`` echoes (``p`` the
        model's parameters) are kept. The number used per pixel is
        :attr:`T1FitResult.n_echoes_used`. Default: every echo is fitted.
    progress : callable(fraction, message), optional
        Progress callback.
    cancel : threading.Event or callable returning bool, optional
        Checked between stages; when set, :class:`FitCancelled` is raised.
    exclude_frames : sequence of int, optional
        Frames (0-based) left out of the fit, e.g. the outlier frames of a registration
        (:mod:`.outliers`); :attr:`T1FitResult.frames_used` lists the frames fitted. Too few
        frames left for the model is the same error as too few frames given.

    Returns
    -------
    T1FitResult

    Raises
    ------
    ValueError
        Unknown model, missing timings, a number of timings different from the number of
        frames, too few frames or distinct times for the model, an infinite echo time, a
        ``noise_floor`` for a recovery model or one that is not a finite number >= 0, complex
        data, or a mask of the wrong shape.
    FitCancelled
        When ``cancel`` was set.

    Examples
    --------
    >>> import numpy as np
    >>> ti = np.array([100, 180, 260, 1100, 1180, 1260, 2100, 3100.0])
    >>> curve = np.abs(1.0 - 2.0 * np.exp(-ti / 1000.0))[:, None]  # T1 = 1000 ms, ideal IR
    >>> res = fit_t1(curve, ti, "ir", device="cpu")
    >>> round(float(res.t1_ms[0]), 1)
    1000.0
    """
    start = time.perf_counter()
    settings = _settings(frames, timings_ms, model, exclude_frames=exclude_frames, t1_range_ms=t1_range_ms,
                         n_grid=n_grid, iterations=iterations, polarity_restoration=polarity_restoration,
                         noise_floor=noise_floor)
    check = _cancel_check(cancel)
    report = progress or (lambda fraction, message: None)
    dev = resolve_device(device)
    curves = _Curves.prepare(settings, mask, dev)
    out = _fit_echo_groups(curves, settings, report, check)
    report(0.95, "collecting maps")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    result = _assemble(out, curves, settings, describe_device(dev), time.perf_counter() - start)
    report(1.0, "done")
    return result


@dataclasses.dataclass(frozen=True)
class _FitSettings:
    """Everything :func:`fit_t1` checked about its arguments: the frames and times fitted (after
    ``exclude_frames``), the model and its solver settings."""

    data: np.ndarray  # (N, ...) frames fitted
    timings: np.ndarray  # (N,) their times, ms
    spec: T1Model
    used: tuple[int, ...]  # input frames fitted
    bounds: tuple[float, float]  # allowed time constant, ms
    n_grid: int
    iterations: int
    restore: bool  # polarity restoration
    floor: float | None  # noise floor (decay models)


def _settings(frames: Any, timings_ms: Any, model: Any, *, exclude_frames: Any, t1_range_ms: Any, n_grid: int,
              iterations: int | None, polarity_restoration: bool | None, noise_floor: Any) -> _FitSettings:
    """Check :func:`fit_t1`'s arguments (the errors its docstring lists) and fill the model's defaults."""
    data, timings, kind = _unpack(frames, timings_ms)
    if model is None:
        model = model_for_kind(kind)
        if model is None:
            raise ValueError(
                f"No T1 model for sequence kind {kind!r}; pass model= one of {', '.join(T1_MODELS)}."
            )
    spec = _get_model(model)
    timings = _check_timings(timings, data.shape[0], spec)
    used = tuple(range(data.shape[0]))
    if exclude_frames is not None and len(exclude_frames):
        from ..qc.outliers import parse_exclude_frames

        left_out = parse_exclude_frames(list(exclude_frames), data.shape[0], flag="exclude_frames")
        used = tuple(i for i in used if i not in left_out)
        data, timings = data[list(used)], _check_timings(timings[list(used)], len(used), spec)
    if t1_range_ms is None:
        t1_range_ms = spec.range_ms
    lo, hi = (float(v) for v in t1_range_ms)
    if not 0 < lo < hi:
        raise ValueError(f"t1_range_ms must be (low, high) with 0 < low < high; got {t1_range_ms}.")
    floor = _check_noise_floor(noise_floor, spec)
    if int(n_grid) < 4:
        raise ValueError(f"n_grid must be at least 4; got {n_grid}.")
    return _FitSettings(
        data=data, timings=timings, spec=spec, used=used, bounds=(lo, hi), n_grid=int(n_grid),
        iterations=spec.iterations if iterations is None else iterations,
        restore=spec.polarity_restoration if polarity_restoration is None else bool(polarity_restoration),
        floor=floor,
    )


@dataclasses.dataclass
class _Curves:
    """The fitted pixels' curves, time-sorted and scaled to ~1, and how to put values back."""

    spatial: tuple[int, ...]  # the maps' shape
    fit_mask: np.ndarray  # (pixels,) bool: pixels asked for
    selected: np.ndarray  # indices of those pixels
    t_sorted: torch.Tensor  # (N,) times in increasing order (inf last)
    magnitude: torch.Tensor  # (N, P) |signal| in that order
    y_norm: torch.Tensor  # (N, P) magnitude / scale, 0 where unusable
    scale: torch.Tensor  # (P,) per-pixel maximum
    usable: torch.Tensor  # (P,) finite and not all zero

    @classmethod
    def prepare(cls, settings: _FitSettings, mask: Any, dev: torch.device) -> "_Curves":
        data, timings = settings.data, settings.timings
        n, spatial = data.shape[0], data.shape[1:]
        flat = data.reshape(n, -1)
        fit_mask = _check_mask(mask, spatial).reshape(-1)
        order = np.argsort(timings, kind="stable")  # "shortest TIs" = first in this order (inf last)
        t_sorted = torch.as_tensor(timings[order], dtype=torch.float64, device=dev)
        selected = np.nonzero(fit_mask)[0]
        y = torch.as_tensor(flat[order][:, selected], dtype=torch.float64, device=dev)  # (N, P)
        magnitude = y.abs()  # magnitude data; the sign is what polarity restoration decides
        # per-pixel scale so the optimiser sees amplitudes ~1 whatever the scanner units
        finite = torch.isfinite(magnitude).all(0)
        zero = torch.zeros((), dtype=torch.float64, device=dev)
        scale = torch.where(finite, magnitude.nan_to_num(0.0).amax(0), zero)
        usable = finite & (scale > 0)
        y_norm = torch.where(usable, magnitude.nan_to_num(0.0) / torch.where(usable, scale, torch.ones_like(scale)), 0.0)
        return cls(tuple(spatial), fit_mask, selected, t_sorted, magnitude, y_norm, scale, usable)

    def to_map(self, values: torch.Tensor, fill: float = np.nan, dtype: Any = np.float32) -> np.ndarray:
        """Fitted pixels' ``values`` on the maps' grid, ``fill`` elsewhere."""
        full = np.full(self.fit_mask.size, fill, dtype=dtype)
        full[self.selected] = values.detach().cpu().numpy().astype(dtype)
        return full.reshape(self.spatial)


def _echoes_used(curves: _Curves, settings: _FitSettings) -> torch.Tensor:
    """Per pixel, the number of leading samples fitted: all, or (noise floor) those above it."""
    n = curves.y_norm.shape[0]
    if settings.floor is None:
        return torch.full((curves.y_norm.shape[1],), n, dtype=torch.long, device=curves.y_norm.device)
    # the leading echoes above the floor; a decay does not come back above it later
    above = torch.cumprod((curves.magnitude.nan_to_num(0.0) > settings.floor).to(torch.long), dim=0).sum(0)
    return above.clamp(min=min(settings.spec.n_params + 1, n))


def _fit_echo_groups(curves: _Curves, settings: _FitSettings, report: Callable[[float, str], None],
                     check: Callable[[], None]) -> dict[str, torch.Tensor]:
    """Solve every pixel; pixels with the same number of samples kept are solved together."""
    n = curves.y_norm.shape[0]
    grid = torch.as_tensor(np.geomspace(*settings.bounds, settings.n_grid), dtype=torch.float64,
                           device=curves.y_norm.device)
    n_used = _echoes_used(curves, settings)
    groups = [(m, torch.nonzero(n_used == m)[:, 0]) for m in torch.unique(n_used).tolist()] or [(n, n_used)]
    out: dict[str, torch.Tensor] = {"n_used": n_used}
    for g_index, (m, idx) in enumerate(groups):
        def stage(fraction: float, message: str, _g: int = g_index) -> None:
            report((_g + fraction) / len(groups) * 0.95, message)

        part = _fit_curves(curves.y_norm[:m, idx], curves.t_sorted[:m], grid, settings.spec, settings.restore,
                           settings.bounds, settings.iterations, curves.usable[idx], stage, check)
        if len(groups) == 1:
            return {**part, "n_used": n_used}
        for key, v in part.items():
            if key not in out:
                out[key] = torch.zeros((n_used.shape[0],) + v.shape[1:], dtype=v.dtype, device=v.device)
            out[key][idx] = v
    return out


def _assemble(out: dict[str, torch.Tensor], curves: _Curves, settings: _FitSettings, device: str,
              seconds: float) -> T1FitResult:
    """The result's maps (numpy, float32, NaN where not fitted or failed) from the solved pixels."""
    spec, to_map = settings.spec, curves.to_map
    ok = out["code"] == 0
    nan = torch.full_like(out["t1"], float("nan"))

    def masked(values: torch.Tensor) -> torch.Tensor:
        return torch.where(ok, values, nan)

    reported = spec.reported_params(out["theta"], curves.scale)
    failed = np.zeros(curves.fit_mask.size, bool)
    failed[curves.selected] = (out["code"] != 0).cpu().numpy()
    return T1FitResult(
        model=spec.name,
        t1_ms=to_map(masked(out["t1"])),
        t1_sd_ms=to_map(masked(out["t1_sd"])),
        r_squared=to_map(masked(out["r2"])),
        residual_rms=to_map(masked(out["rms"] * curves.scale)),
        params={name: to_map(masked(v)) for name, v in zip(spec.param_names, reported)},
        n_inverted=to_map(torch.where(ok, out["k"].to(torch.float64), torch.full_like(nan, -1.0)), fill=-1, dtype=np.int16),
        mask=curves.fit_mask.reshape(curves.spatial).copy(),
        failed=failed.reshape(curves.spatial),
        failure_code=to_map(out["code"].to(torch.float64), fill=0, dtype=np.uint8),
        timings_ms=np.array(settings.timings, dtype=np.float64),
        device=device,
        seconds=seconds,
        n_echoes_used=to_map(out["n_used"].to(torch.float64), fill=0, dtype=np.int16) if settings.floor is not None else None,
        noise_floor=settings.floor,
        frames_used=settings.used,
    )


def _fit_curves(
    y_norm: torch.Tensor,
    t_sorted: torch.Tensor,
    grid: torch.Tensor,
    spec: T1Model,
    restore: bool,
    bounds: tuple[float, float],
    iterations: int,
    usable: torch.Tensor,
    report: Callable[[float, str], None],
    check: Callable[[], None],
) -> dict[str, torch.Tensor]:
    """Grid search, Levenberg–Marquardt from the best candidates and the quality maps of the
    curves ``y_norm (N, P)`` (time-sorted, scaled to ~1): what :func:`fit_t1` does per pixel."""
    report(0.0, "grid search")
    check()
    candidates = _grid_search(y_norm, t_sorted, grid, spec, restore)
    report(0.3, "Levenberg-Marquardt")
    check()

    best = None
    for c, (k, g) in enumerate(candidates):
        fit = _levenberg_marquardt(y_norm, t_sorted, k, grid[g.clamp(min=0)], spec, bounds, iterations)
        fit["valid_candidate"] = g >= 0
        fit["rss"] = torch.where(fit["valid_candidate"], fit["rss"], torch.full_like(fit["rss"], float("inf")))
        if best is None:
            best = fit
        else:
            take = fit["rss"] < best["rss"]
            best = {key: _where_rows(take, fit[key], best[key]) for key in best}
        report(0.3 + 0.6 * (c + 1) / len(candidates), "Levenberg-Marquardt")
        check()
    assert best is not None
    return _quality(best, y_norm, t_sorted, spec, bounds, usable)


def _check_noise_floor(noise_floor: Any, spec: T1Model) -> float | None:
    if noise_floor is None:
        return None
    if not isinstance(spec, DecayModel):
        raise ValueError(
            f"{arg('noise_floor')} drops the late echoes of a decay (T2 / T2*); model {spec.name!r} fits "
            f"{spec.quantity} recovery: leave {arg('noise_floor')} out or pick the model t2, t2c or t2star."
        )
    try:
        value = float(noise_floor)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{arg('noise_floor')} must be a finite signal level >= 0; got {noise_floor!r}.")
    return value


def _unpack(frames: Any, timings_ms: Any) -> tuple[np.ndarray, Any, str | None]:
    from ..sequence import Sequence

    kind = None
    if isinstance(frames, Sequence):
        kind = frames.kind
        if timings_ms is None:
            timings_ms = frames.timings_ms
        frames = frames.frames
    data = np.asarray(frames)
    if data.dtype.kind == "c":
        raise ValueError("complex data given; T1 fitting works on magnitude images: pass np.abs(data).")
    if data.dtype.kind not in "fiub":
        raise ValueError(f"frames must be numeric; got dtype {data.dtype}.")
    if data.ndim < 1 or data.shape[0] < 2:
        raise ValueError(
            f"frames must have the frame axis first (N, H, W) with N >= 2; got shape {data.shape}."
        )
    return data.astype(np.float64, copy=False), timings_ms, kind


def _check_timings(timings: Any, n_frames: int, spec: T1Model) -> np.ndarray:
    label = spec.timing_label
    if timings is None:
        raise ValueError(
            f"no {label} given: pass timings_ms (one time in ms per frame) or use a sequence "
            "whose metadata has them."
        )
    t = np.array(timings, dtype=np.float64).reshape(-1)
    if t.size != n_frames:
        raise ValueError(
            f"{t.size} {label} given for {n_frames} frames; give exactly one time (ms) per frame "
            "(and check that the frame axis is first)."
        )
    if not spec.infinite_timing_allowed and np.isinf(t).any():
        raise ValueError(
            f"{label} must be finite for a {spec.quantity} fit (model {spec.name!r}); got {t.tolist()}: "
            f"give each frame's echo time in ms ({arg('timings_ms')})."
        )
    if np.isnan(t).any() or (t < 0).any() or np.isneginf(t).any():
        raise ValueError(f"{label} must be >= 0 ms (inf for a frame without preparation); got {t.tolist()}.")
    distinct = np.unique(t[np.isfinite(t)])
    if distinct.size < 2:
        raise ValueError(f"need at least 2 distinct finite {label} to fit {spec.quantity}; got {t.tolist()}.")
    if n_frames <= spec.n_params:
        raise ValueError(
            f"model {spec.name!r} has {spec.n_params} parameters and needs at least "
            f"{spec.n_params + 1} frames for a fit with an uncertainty; got {n_frames}."
        )
    return t


def _check_mask(mask: Any, spatial: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(spatial, bool)
    m = np.asarray(mask)
    if m.shape != tuple(spatial):
        raise ValueError(
            f"mask has shape {m.shape} but the images are {tuple(spatial)}; give a 2-D mask "
            "on the same grid as the frames."
        )
    return m.astype(bool)


def _cancel_check(cancel: Any) -> Callable[[], None]:
    if cancel is None:
        return lambda: None
    if isinstance(cancel, threading.Event):
        flag = cancel.is_set
    elif callable(cancel):
        flag = cancel
    else:
        raise TypeError("cancel must be a threading.Event or a callable returning bool")

    def check() -> None:
        if flag():
            raise FitCancelled("T1 fit cancelled by the user")

    return check
