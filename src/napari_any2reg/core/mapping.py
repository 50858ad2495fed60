"""Quantitative mapping: vectorised per-pixel fits of MOLLI, STONE, SASHA and IR curves (T1)
and of T2-prepared, multi-echo spin-echo and multi-gradient-echo decays (T2, T2*).

Every pixel is fitted at once in torch (CPU or CUDA, ``docs/design.md`` §8, T1 models):

1. **Grid search** over the time constant ``T`` (log-spaced): for a fixed ``T`` the model is
   linear in its amplitudes, so they and the residual sum of squares (RSS) have a closed form.
   With polarity restoration the sums for "the ``k`` shortest-TI points negated" are prefix
   sums over the TI-sorted frames, so all ``k`` cost little more than one.
2. **Levenberg–Marquardt** (batched 2x2 / 3x3 normal equations in float64) from the best two
   polarity candidates of the grid; the one with the smaller final RSS is kept.
3. **Quality**: R², residual RMS and the SD of T1 from ``cov = s² (JᵀJ)⁻¹``,
   ``s² = RSS / (N − p)``, propagated to T1 with the full gradient of the T1 formula — for
   MOLLI ``T1 = T1* (B/A − 1)`` depends on A, B and T1*, and their correlation matters
   (scaling the T1* SD instead overstates the T1 SD about twofold, Kellman 2013).

Pixels where a fit fails, is non-physical or ends on a bound of the allowed range get NaN in
every output map and are counted (:attr:`T1FitResult.n_failed`, :attr:`T1FitResult.failure_code`);
nothing is clipped silently.

Models (``t`` = inversion / saturation time of each frame, ``inf`` for a frame without
preparation, where ``exp(-t/T) = 0``):

==========  ===============================  ==========================  =========
name        signal                           T1                          polarity
==========  ===============================  ==========================  =========
``molli``   ``A − B exp(−t/T1*)``            ``T1* (B/A − 1)``           restored
``ir``      ``A − B exp(−t/T1)``             ``T1``                      restored
``stone``   ``A − B exp(−t/T1)``             ``T1``                      restored
``stone2``  ``M0 (1 − 2 exp(−t/T1))``        ``T1``                      restored
``sasha``   ``A (1 − B exp(−t/T1))``         ``T1``                      no
``sasha2``  ``A (1 − exp(−t/T1))``           ``T1``                      no
``t2``      ``S0 exp(−t/T2)``                ``T2``                      no
``t2c``     ``S0 exp(−t/T2) + C``            ``T2``                      no
``t2star``  ``S0 exp(−t/T2*)``               ``T2*``                     no
==========  ===============================  ==========================  =========

For the decay models (:class:`DecayModel`, :class:`DecayOffsetModel`; ``docs/design.md`` §8)
``t`` is the echo time of each frame: the T2-preparation duration of a T2-prepared bSSFP
series, the TE of a multi-echo spin echo or of a multi-gradient echo (T2*), never ``inf``;
``noise_floor=`` truncates each pixel's curve at the first echo at the noise floor.

Each model is a :class:`T1Model` subclass (signal, Jacobian, initial guess, bounds, derived T1,
reported parameters, timing name, description); the fit calls its methods and never branches
on a model's name. A new model is one class with the :func:`register_t1_model` decorator,
usually on :class:`RecoveryModel` or :class:`FixedEfficiencyModel`; it is then in
:data:`T1_MODELS`, so ``any2reg fit --model``, the mapping widget and :func:`model_for_kind`
(through ``kinds``) offer it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from .device import describe_device, resolve_device
from .engine_api import Cancelled
from .vocabulary import arg

__all__ = [
    "T1Model",
    "RecoveryModel",
    "FixedEfficiencyModel",
    "DecayModel",
    "DecayOffsetModel",
    "T1_MODELS",
    "register_t1_model",
    "T1FitResult",
    "FitCancelled",
    "FAILURE_REASONS",
    "fit_t1",
    "fit_problem",
    "model_for_kind",
    "model_signal",
    "t1_gradient",
]


# ====================================================================== models
class T1Model:
    """A T1 signal model: one subclass per model, registered with :func:`register_t1_model`.

    The fit works on *internal* parameters ``theta`` ``(P, p)`` whose last column is the time
    constant ``T`` of ``exp(-t/T)``, on data scaled to about 1 per pixel. A model says

    * what it measures: :attr:`name`, :attr:`description`, :attr:`param_names` (the reported
      parameters), :attr:`timing_name`, :attr:`polarity_restoration`, :attr:`kinds` (sequence
      kinds it is the default for);
    * its signal and derivatives: :meth:`signal`, :meth:`jacobian`;
    * its initial guess: :meth:`initial_guess` (the amplitudes for a given ``T``, in closed
      form) and :meth:`grid_score` (the fit quality of each grid ``T`` from frame sums, so the
      grid search can try every polarity at the cost of one);
    * its bounds: :meth:`physical` (parameters that mean something) and the fit's
      ``t1_range_ms`` for ``T`` and T1;
    * the derived quantities: :meth:`t1` (T1 and its gradient, for the SD) and
      :meth:`reported_params`, :meth:`signal_from_params` (the reported parametrisation).

    Two families implement the signal: :class:`RecoveryModel` (``A - C exp(-t/T)``) and
    :class:`FixedEfficiencyModel` (``A (1 - kappa exp(-t/T))``); a new model usually
    subclasses one of them and changes what differs (see ``MOLLI``'s Look-Locker T1).
    """

    name: str = ""
    description: str = ""
    param_names: tuple[str, ...] = ()
    n_params: int = 0  # internal parameters (the last is the time constant)
    polarity_restoration: bool = True
    timing_name: str = "inversion_times_ms"
    kinds: tuple[str, ...] = ()
    #: What the fitted time constant is in MR terms ("T1", "T2", "T2*"): labels and messages.
    quantity: str = "T1"
    #: File stem and key of the map (``t1.tif``, ``t1_sd.tif``; ``t2.tif``; ``t2star.tif``).
    map_name: str = "t1"
    #: Default allowed range (ms) of the time constant and of the derived time (``t1_range_ms``).
    range_ms: tuple[float, float] = (10.0, 8000.0)
    #: Whether a timing may be ``inf`` (a frame without preparation: ``exp(-t/T) = 0``).
    infinite_timing_allowed: bool = True
    #: Default maximum Levenberg–Marquardt iterations (``fit_t1(iterations=)``).
    iterations: int = 20

    def __repr__(self) -> str:
        return f"<{self.quantity} model {self.name!r}: {self.description}>"

    @property
    def timing_label(self) -> str:
        """The per-frame times in words, for messages (``"inversion times"``, ``"echo times"``)."""
        return self.timing_name.replace("_ms", "").replace("_", " ")

    # ---- signal (torch, internal parameters)
    def signal(self, theta: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed model ``(N, P)`` and ``exp(-t/T)`` ``(N, P)`` for ``theta (P, p)``."""
        raise NotImplementedError

    def jacobian(self, theta: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> list[torch.Tensor | float]:
        """Columns ``df/dtheta_i`` (each ``(N, P)``; a constant column may be a float)."""
        raise NotImplementedError

    # ---- initial guess
    def initial_guess(self, y: torch.Tensor, t: torch.Tensor, time_constant: torch.Tensor) -> torch.Tensor:
        """``theta (P, p)``: the best amplitudes for the time constant of each pixel."""
        raise NotImplementedError

    def grid_score(self, u: torch.Tensor, sy: torch.Tensor, sums: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit quality ``F`` (larger is better; ``RSS = sum(y²) - F``) and validity, ``(G, c)``.

        ``u`` = sum of the signed data times ``e`` per grid time constant ``(G, c)``, ``sy`` =
        sum of the signed data ``(c,)``; ``sums`` holds ``n``, ``se`` = sum of ``e`` and
        ``see`` = sum of ``e²`` (each ``(G, 1)``).
        """
        raise NotImplementedError

    # ---- bounds and derived values
    def physical(self, theta: torch.Tensor) -> torch.Tensor:
        """Pixels whose parameters are physical (positive amplitudes...), ``(P,)`` bool."""
        raise NotImplementedError

    def t1(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T1 and ``dT1/dtheta`` for ``theta (..., p)``; by default T1 is the time constant."""
        grad = torch.zeros_like(theta)
        grad[..., -1] = 1.0
        return theta[..., -1].clone(), grad

    def reported_params(self, theta: torch.Tensor, scale: torch.Tensor) -> list[torch.Tensor]:
        """Internal parameters on normalised data -> the :attr:`param_names` values."""
        raise NotImplementedError

    def signal_from_params(self, values: list[np.ndarray], decay: np.ndarray) -> np.ndarray:
        """Signed signal (numpy) from the reported parameters and ``exp(-t/T)``."""
        raise NotImplementedError


class RecoveryModel(T1Model):
    """``S = A - C exp(-t/T)``: 3 parameters, linear in ``A, C`` for a fixed ``T``."""

    n_params = 3
    param_names = ("A", "B", "t1_ms")

    def signal(self, theta, t):
        e = _decay(t[:, None], theta[None, :, -1])
        return theta[None, :, 0] - theta[None, :, 1] * e, e

    def jacobian(self, theta, t, e):
        te = _t_times_decay(t, e)
        time_constant = theta[:, -1]
        return [1.0, -e, te * (-theta[:, 1] / (time_constant * time_constant))[None]]

    def initial_guess(self, y, t, time_constant):
        e = _decay(t[:, None], time_constant[None, :])
        n = float(y.shape[0])
        se, see = e.sum(0), (e * e).sum(0)
        sy, sye = y.sum(0), (y * e).sum(0)
        det = n * see - se * se
        det = torch.where(det.abs() > 1e-300, det, torch.full_like(det, 1e-300))
        a = (see * sy - se * sye) / det
        c = (se * sy - n * sye) / det
        return torch.stack([a, c, time_constant], dim=1)

    def grid_score(self, u, sy, sums):
        n, se, see = sums["n"], sums["se"], sums["see"]
        det = n * see - se * se
        # F = (n u² − 2 se sy u + see sy²) / det; A ∝ see sy − se u, C ∝ se sy − n u
        f = u * (n / det * u - 2.0 * se / det * sy) + see / det * (sy * sy)
        return f, (see * sy - se * u > 0) & (se * sy - n * u > 0)

    def physical(self, theta):
        return (theta[:, 0] > 0) & (theta[:, 1] > 0)

    def reported_params(self, theta, scale):
        return [theta[:, 0] * scale, theta[:, 1] * scale, theta[:, 2]]

    def signal_from_params(self, values, decay):
        return values[0] - values[1] * decay


class FixedEfficiencyModel(T1Model):
    """``S = A (1 - kappa exp(-t/T))`` with ``kappa`` fixed: 2 parameters ``A, T``."""

    n_params = 2
    kappa: float = 1.0

    def signal(self, theta, t):
        e = _decay(t[:, None], theta[None, :, -1])
        return theta[None, :, 0] * (1.0 - self.kappa * e), e

    def jacobian(self, theta, t, e):
        te = _t_times_decay(t, e)
        time_constant = theta[:, -1]
        return [1.0 - self.kappa * e, te * (-self.kappa * theta[:, 0] / (time_constant * time_constant))[None]]

    def initial_guess(self, y, t, time_constant):
        g = 1.0 - self.kappa * _decay(t[:, None], time_constant[None, :])
        return torch.stack([(y * g).sum(0) / (g * g).sum(0), time_constant], dim=1)

    def grid_score(self, u, sy, sums):
        kappa = float(self.kappa)
        gg = sums["n"] - 2.0 * kappa * sums["se"] + kappa * kappa * sums["see"]  # sum of g², g = 1 - kappa e
        yg = sy - kappa * u  # sum of y g
        return yg * yg / gg, yg > 0  # M0 > 0

    def physical(self, theta):
        return theta[:, 0] > 0

    def reported_params(self, theta, scale):
        return [theta[:, 0] * scale, theta[:, 1]]

    def signal_from_params(self, values, decay):
        return values[0] * (1.0 - self.kappa * decay)


class DecayModel(T1Model):
    """``S = S0 exp(-t/T)``: 2 parameters ``S0, T``, linear in ``S0`` for a fixed ``T``.

    The decay family (T2, T2*): ``t`` is an echo time (a T2-preparation duration, a spin-echo
    or a gradient-echo TE), the signal falls from ``S0`` with ``t``; magnitude data need no
    polarity restoration and no timing is infinite.
    """

    n_params = 2
    param_names = ("S0", "t2_ms")
    polarity_restoration = False
    timing_name = "echo_times_ms"
    quantity = "T2"
    map_name = "t2"
    range_ms = (1.0, 3000.0)
    infinite_timing_allowed = False

    def signal(self, theta, t):
        e = _decay(t[:, None], theta[None, :, -1])
        return theta[None, :, 0] * e, e

    def jacobian(self, theta, t, e):
        time_constant = theta[:, -1]
        # d/dT S0 exp(-t/T) = S0 t exp(-t/T) / T²
        return [e, _t_times_decay(t, e) * (theta[:, 0] / (time_constant * time_constant))[None]]

    def initial_guess(self, y, t, time_constant):
        e = _decay(t[:, None], time_constant[None, :])
        return torch.stack([(y * e).sum(0) / (e * e).sum(0), time_constant], dim=1)

    def grid_score(self, u, sy, sums):
        return u * u / sums["see"], u > 0  # S0 = sum(y e) / sum(e²) > 0

    def physical(self, theta):
        return theta[:, 0] > 0

    def reported_params(self, theta, scale):
        return [theta[:, 0] * scale, theta[:, 1]]

    def signal_from_params(self, values, decay):
        return values[0] * decay


class DecayOffsetModel(DecayModel):
    """``S = S0 exp(-t/T) + C``: 3 parameters ``S0, C, T``, linear in ``S0, C`` for a fixed ``T``.

    The offset ``C`` absorbs a noise floor or the T1 recovery of a T2-prepared readout; it is
    reported, not constrained (only ``S0 > 0`` is required).
    """

    n_params = 3
    param_names = ("S0", "C", "t2_ms")
    iterations = 60  # the offset makes a long, flat valley: a noiseless curve needs ~50 steps

    def signal(self, theta, t):
        e = _decay(t[:, None], theta[None, :, -1])
        return theta[None, :, 0] * e + theta[None, :, 1], e

    def jacobian(self, theta, t, e):
        time_constant = theta[:, -1]
        return [e, 1.0, _t_times_decay(t, e) * (theta[:, 0] / (time_constant * time_constant))[None]]

    def initial_guess(self, y, t, time_constant):
        e = _decay(t[:, None], time_constant[None, :])
        n = float(y.shape[0])
        se, see = e.sum(0), (e * e).sum(0)
        sy, sye = y.sum(0), (y * e).sum(0)
        det = n * see - se * se
        det = torch.where(det.abs() > 1e-300, det, torch.full_like(det, 1e-300))
        s0 = (n * sye - se * sy) / det
        c = (see * sy - se * sye) / det
        return torch.stack([s0, c, time_constant], dim=1)

    def grid_score(self, u, sy, sums):
        n, se, see = sums["n"], sums["se"], sums["see"]
        det = n * see - se * se
        # the least-squares projection on span{1, e}, as for RecoveryModel; S0 ∝ n u − se sy
        f = u * (n / det * u - 2.0 * se / det * sy) + see / det * (sy * sy)
        return f, n * u - se * sy > 0

    def reported_params(self, theta, scale):
        return [theta[:, 0] * scale, theta[:, 1] * scale, theta[:, 2]]

    def signal_from_params(self, values, decay):
        return values[0] * decay + values[1]


#: The registered models by name (:func:`register_t1_model`); the CLI and the widgets list them.
T1_MODELS: dict[str, T1Model] = {}


def register_t1_model(cls: type[T1Model]) -> type[T1Model]:
    """Class decorator: make ``cls`` a fit model under ``cls.name`` (in :data:`T1_MODELS`).

    Examples
    --------
    >>> @register_t1_model                                               # doctest: +SKIP
    ... class HalfInversion(FixedEfficiencyModel):
    ...     name, description, kappa = "ir-half", "IR with 50 % inversion efficiency", 1.5
    ...     param_names = ("M0", "t1_ms")
    """
    if not (isinstance(cls, type) and issubclass(cls, T1Model)):
        raise TypeError(f"register_t1_model takes a T1Model subclass; got {cls!r}.")
    model = cls()
    if not model.name or len(model.param_names) != model.n_params:
        raise ValueError(
            f"{cls.__name__}: a T1 model needs a name and one entry of param_names per parameter "
            f"({model.n_params}); got name {model.name!r}, param_names {model.param_names}."
        )
    T1_MODELS[model.name] = model
    return cls


@register_t1_model
class Molli(RecoveryModel):
    """MOLLI: the apparent ``T1*`` of ``A - B exp(-TI/T1*)``, corrected by Look-Locker."""

    name = "molli"
    description = "MOLLI, 3-parameter A - B exp(-TI/T1*), T1 = T1* (B/A - 1)"
    param_names = ("A", "B", "t1_star_ms")
    kinds = ("molli",)

    def t1(self, theta):
        a, c, time_constant = theta[..., 0], theta[..., 1], theta[..., -1]
        t1 = time_constant * (c / a - 1.0)
        grad = torch.stack([-time_constant * c / (a * a), time_constant / a, c / a - 1.0], dim=-1)
        return t1, grad

    def physical(self, theta):
        return super().physical(theta) & (theta[:, 1] > theta[:, 0])  # B/A > 1, i.e. T1 > 0


@register_t1_model
class InversionRecovery(RecoveryModel):
    name = "ir"
    description = "inversion recovery, 3-parameter A - B exp(-TI/T1)"
    kinds = ("ir",)


@register_t1_model
class Stone(RecoveryModel):
    name = "stone"
    description = "STONE, 3-parameter A - B exp(-TI/T1)"
    kinds = ("stone",)


@register_t1_model
class Stone2(FixedEfficiencyModel):
    name = "stone2"
    description = "STONE, 2-parameter M0 (1 - 2 exp(-TI/T1))"
    param_names = ("M0", "t1_ms")
    kappa = 2.0


@register_t1_model
class Sasha(RecoveryModel):
    """SASHA ``A (1 - B exp(-TS/T1))``: fitted as ``A - C e`` and reported with ``B = C / A``."""

    name = "sasha"
    description = "SASHA, 3-parameter A (1 - B exp(-TS/T1))"
    polarity_restoration = False
    timing_name = "saturation_times_ms"
    kinds = ("sasha",)

    def reported_params(self, theta, scale):
        a, c, time_constant = theta[:, 0], theta[:, 1], theta[:, 2]
        return [a * scale, c / a, time_constant]

    def signal_from_params(self, values, decay):
        return values[0] * (1.0 - values[1] * decay)


@register_t1_model
class Sasha2(FixedEfficiencyModel):
    name = "sasha2"
    description = "SASHA, 2-parameter A (1 - exp(-TS/T1))"
    param_names = ("A", "t1_ms")
    kappa = 1.0
    polarity_restoration = False
    timing_name = "saturation_times_ms"


@register_t1_model
class T2(DecayModel):
    """T2 from T2-prepared images (the T2-prep durations ``TE_prep``) or a multi-echo spin echo."""

    name = "t2"
    description = "T2, 2-parameter S0 exp(-TE/T2) (T2-prep durations or spin-echo TEs)"
    kinds = ("t2prep",)


@register_t1_model
class T2Offset(DecayOffsetModel):
    name = "t2c"
    description = "T2, 3-parameter S0 exp(-TE/T2) + C (with a constant offset)"


@register_t1_model
class T2Star(DecayModel):
    """T2* over the echo times of a multi-gradient-echo series (e.g. myocardial iron)."""

    name = "t2star"
    description = "T2*, 2-parameter S0 exp(-TE/T2*) over gradient-echo TEs"
    param_names = ("S0", "t2star_ms")
    quantity = "T2*"
    map_name = "t2star"
    range_ms = (0.5, 2000.0)
    kinds = ("mge",)


#: ``failure_code`` values. 0 also marks pixels outside the mask (see ``T1FitResult.mask``).
FAILURE_REASONS = {
    0: "ok",
    1: "no usable signal (zero or non-finite samples)",
    2: "fit did not converge (singular or non-finite)",
    3: "time constant or T1 at a bound of t1_range_ms",
    4: "non-physical parameters (amplitude <= 0, or MOLLI B/A <= 1)",
}


def model_for_kind(kind: str | None) -> str | None:
    """The T1 model fitted by default for a sequence kind (``None`` if the kind has none).

    Examples
    --------
    >>> model_for_kind("molli"), model_for_kind("cine")
    ('molli', None)
    """
    key = str(kind or "").lower()
    return next((name for name, model in T1_MODELS.items() if key in model.kinds), None)


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


def _get_model(model: str | T1Model | type[T1Model]) -> T1Model:
    if isinstance(model, T1Model):
        return model
    if isinstance(model, type) and issubclass(model, T1Model):
        return model()
    key = str(model).lower()
    if key not in T1_MODELS:
        raise ValueError(f"Unknown T1 model {model!r}; use one of {', '.join(T1_MODELS)}.")
    return T1_MODELS[key]


class FitCancelled(Cancelled):
    """Raised inside :func:`fit_t1` when the caller's cancel flag is set.

    A :class:`.engine_api.Cancelled`, the one cancellation exception of registration, training
    and fitting, so callers catch that; the name stays for code that catches this one.
    """


# ====================================================================== result
@dataclasses.dataclass(frozen=True, eq=False)
class T1FitResult:
    """Per-pixel output of :func:`fit_t1` (all maps have the input's spatial shape).

    The fitted time is T1 for the recovery models and T2 / T2* for the decay models; the
    fields keep their historical T1 names, :attr:`quantity` says which it is and
    :attr:`map_ms` / :attr:`map_sd_ms` name it neutrally.

    Attributes
    ----------
    model : str
        Name of the fitted model (a key of :data:`T1_MODELS`).
    t1_ms : ndarray float32
        T1 in ms (MOLLI: Look-Locker corrected); T2 or T2* for a decay model. NaN outside the
        mask and where the fit failed.
    t1_sd_ms : ndarray float32
        SD of T1 (T2, T2*) from the fit covariance (ms).
    r_squared : ndarray float32
        Coefficient of determination of the fit on the polarity-restored data.
    residual_rms : ndarray float32
        ``sqrt(RSS / N)`` in signal units.
    params : dict of str to ndarray float32
        Reported model parameters, named as in ``T1_MODELS[model].param_names``.
    n_inverted : ndarray int16
        Number of shortest-TI samples whose sign was restored (-1 where not fitted).
    mask : ndarray bool
        Pixels that were fitted.
    failed : ndarray bool
        Fitted pixels whose fit failed (their maps are NaN).
    failure_code : ndarray uint8
        Why a pixel failed (:data:`FAILURE_REASONS`), 0 elsewhere.
    timings_ms : ndarray float64 (N,)
        The inversion / saturation times used.
    device : str
        Where the fit ran, e.g. ``"cpu (2 threads)"``.
    seconds : float
        Wall-clock time of the fit.
    n_echoes_used : ndarray int16 or None
        With ``noise_floor``: the echoes fitted per pixel (the leading ones above the floor);
        ``None`` when every frame was fitted.
    noise_floor : float or None
        The ``noise_floor`` the echoes were truncated at.
    """

    model: str
    t1_ms: np.ndarray
    t1_sd_ms: np.ndarray
    r_squared: np.ndarray
    residual_rms: np.ndarray
    params: dict[str, np.ndarray]
    n_inverted: np.ndarray
    mask: np.ndarray
    failed: np.ndarray
    failure_code: np.ndarray
    timings_ms: np.ndarray
    device: str
    seconds: float
    n_echoes_used: np.ndarray | None = None
    noise_floor: float | None = None
    #: the frames fitted (0-based, of the frames given); all unless ``exclude_frames`` left some out
    frames_used: tuple[int, ...] | None = None

    @property
    def quantity(self) -> str:
        """What the map is: ``"T1"``, ``"T2"`` or ``"T2*"`` (the model's ``quantity``)."""
        spec = T1_MODELS.get(self.model)
        return spec.quantity if spec else "T1"

    @property
    def map_name(self) -> str:
        """File stem of the map: ``"t1"``, ``"t2"`` or ``"t2star"`` (``t2.tif``, ``t2_sd.tif``)."""
        spec = T1_MODELS.get(self.model)
        return spec.map_name if spec else "t1"

    @property
    def map_ms(self) -> np.ndarray:
        """The fitted T1, T2 or T2* map (ms): :attr:`t1_ms` under a name for any quantity."""
        return self.t1_ms

    @property
    def map_sd_ms(self) -> np.ndarray:
        """SD of :attr:`map_ms` (ms)."""
        return self.t1_sd_ms

    @property
    def n_failed(self) -> int:
        """Number of fitted pixels whose fit failed (NaN in the maps)."""
        return int(self.failed.sum())

    @property
    def n_fitted(self) -> int:
        """Number of pixels that were fitted (inside the mask)."""
        return int(self.mask.sum())

    @property
    def t1_star_ms(self) -> np.ndarray | None:
        """MOLLI's apparent T1* (ms), ``None`` for other models."""
        return self.params.get("t1_star_ms")

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.params)  # in the model's param_names order

    def params_stack(self) -> np.ndarray:
        """The parameters as one ``(p, ...)`` float32 array, in ``param_names`` order."""
        return np.stack([self.params[name] for name in self.param_names]).astype(np.float32)

    def roi_statistics(
        self, labels: Any, *, r2_threshold: float = 0.9, label_names: dict[int, str] | None = None
    ) -> list[dict[str, Any]]:
        """Per-ROI T1 statistics of this fit (see :func:`~napari_any2reg.core.mapping_roi.roi_statistics`)."""
        from .mapping_roi import roi_statistics

        return roi_statistics(
            self.t1_ms, labels, t1_sd_ms=self.t1_sd_ms, r_squared=self.r_squared,
            r2_threshold=r2_threshold, label_names=label_names,
        )

    def r2_survival(self, roi: Any, thresholds: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Fraction of ``roi`` pixels with R² above each threshold (see ``mapping_roi.r2_survival``)."""
        from .mapping_roi import r2_survival

        return r2_survival(self.r_squared, roi, thresholds)

    def failure_counts(self) -> dict[str, int]:
        """Failed pixels per reason (reasons with no pixel are left out)."""
        codes, counts = np.unique(self.failure_code[self.failed], return_counts=True)
        return {FAILURE_REASONS[int(c)]: int(n) for c, n in zip(codes, counts)}

    def summary(self) -> dict[str, Any]:
        """JSON-friendly provenance and headline numbers."""
        t1 = self.t1_ms[np.isfinite(self.t1_ms)]
        spec = T1_MODELS.get(self.model)  # None for an unregistered model passed as a class
        return {
            "model": self.model,
            "model_description": spec.description if spec else self.model,
            "param_names": list(self.param_names),
            (spec.timing_name if spec else "timings_ms"): [float(t) for t in self.timings_ms],
            "device": self.device,
            "seconds": round(float(self.seconds), 4),
            "n_fitted": self.n_fitted,
            "n_failed": self.n_failed,
            "failures": self.failure_counts(),
            "quantity": self.quantity,
            f"{self.map_name}_median_ms": float(np.median(t1)) if t1.size else None,
            **({} if self.frames_used is None else {"frames_used": [int(i) for i in self.frames_used]}),
            **({} if self.noise_floor is None else {
                "noise_floor": float(self.noise_floor),
                "n_truncated": int(((self.n_echoes_used < len(self.timings_ms)) & self.mask).sum()),
            }),
        }


# ====================================================================== public API
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
        from .outliers import parse_exclude_frames

        left_out = parse_exclude_frames(list(exclude_frames), data.shape[0], flag="exclude_frames")
        used = tuple(i for i in used if i not in left_out)
        data, timings = data[list(used)], _check_timings(timings[list(used)], len(used), spec)
    if t1_range_ms is None:
        t1_range_ms = spec.range_ms
    lo, hi = (float(v) for v in t1_range_ms)
    if not 0 < lo < hi:
        raise ValueError(f"t1_range_ms must be (low, high) with 0 < low < high; got {t1_range_ms}.")
    floor = _check_noise_floor(noise_floor, spec)
    if iterations is None:
        iterations = spec.iterations
    if int(n_grid) < 4:
        raise ValueError(f"n_grid must be at least 4; got {n_grid}.")
    restore = spec.polarity_restoration if polarity_restoration is None else bool(polarity_restoration)
    check = _cancel_check(cancel)
    report = progress or (lambda fraction, message: None)

    n = data.shape[0]
    spatial = data.shape[1:]
    flat = data.reshape(n, -1)
    fit_mask = _check_mask(mask, spatial).reshape(-1)
    dev = resolve_device(device)

    order = np.argsort(timings, kind="stable")  # "shortest TIs" = first in this order (inf last)
    t_sorted = torch.as_tensor(timings[order], dtype=torch.float64, device=dev)
    selected = np.nonzero(fit_mask)[0]
    y = torch.as_tensor(flat[order][:, selected], dtype=torch.float64, device=dev)  # (N, P)
    magnitude = y.abs()  # magnitude data; the sign is what polarity restoration decides

    # per-pixel scale so the optimiser sees amplitudes ~1 whatever the scanner units
    finite = torch.isfinite(magnitude).all(0)
    scale = torch.where(finite, magnitude.nan_to_num(0.0).amax(0), torch.zeros((), dtype=torch.float64, device=dev))
    usable = finite & (scale > 0)
    y_norm = torch.where(usable, magnitude.nan_to_num(0.0) / torch.where(usable, scale, torch.ones_like(scale)), 0.0)

    grid = torch.as_tensor(np.geomspace(lo, hi, int(n_grid)), dtype=torch.float64, device=dev)
    n_used = torch.full((y_norm.shape[1],), n, dtype=torch.long, device=dev)
    if floor is not None:
        # the leading echoes above the floor; a decay does not come back above it later
        above = torch.cumprod((magnitude.nan_to_num(0.0) > floor).to(torch.long), dim=0).sum(0)
        n_used = above.clamp(min=min(spec.n_params + 1, n))
    groups = [(m, torch.nonzero(n_used == m)[:, 0]) for m in torch.unique(n_used).tolist()] or [(n, n_used)]
    out: dict[str, torch.Tensor] = {}
    for g_index, (m, idx) in enumerate(groups):
        def stage(fraction: float, message: str, _g=g_index) -> None:
            report((_g + fraction) / len(groups) * 0.95, message)

        part = _fit_curves(y_norm[:m, idx], t_sorted[:m], grid, spec, restore, (lo, hi), iterations, usable[idx], stage, check)
        if len(groups) == 1:
            out = part
            break
        if not out:
            p_all = y_norm.shape[1]
            out = {key: torch.zeros((p_all,) + v.shape[1:], dtype=v.dtype, device=dev) for key, v in part.items()}
        for key, v in part.items():
            out[key][idx] = v
    report(0.95, "collecting maps")

    # ---- back to pixel maps (numpy, float32, NaN where not fitted or failed)
    size = flat.shape[1]

    def to_map(values: torch.Tensor, fill: float = np.nan, dtype=np.float32) -> np.ndarray:
        full = np.full(size, fill, dtype=dtype)
        full[selected] = values.detach().cpu().numpy().astype(dtype)
        return full.reshape(spatial)

    ok = out["code"] == 0
    nan = torch.full_like(out["t1"], float("nan"))

    def masked(values: torch.Tensor) -> torch.Tensor:
        return torch.where(ok, values, nan)

    reported = spec.reported_params(out["theta"], scale)
    params = {name: to_map(masked(v)) for name, v in zip(spec.param_names, reported)}
    k_map = to_map(torch.where(ok, out["k"].to(torch.float64), torch.full_like(nan, -1.0)), fill=-1, dtype=np.int16)
    code = to_map(out["code"].to(torch.float64), fill=0, dtype=np.uint8)
    failed = np.zeros(size, bool)
    failed[selected] = (out["code"] != 0).cpu().numpy()
    echoes = to_map(n_used.to(torch.float64), fill=0, dtype=np.int16) if floor is not None else None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    result = T1FitResult(
        model=spec.name,
        t1_ms=to_map(masked(out["t1"])),
        t1_sd_ms=to_map(masked(out["t1_sd"])),
        r_squared=to_map(masked(out["r2"])),
        residual_rms=to_map(masked(out["rms"] * scale)),
        params=params,
        n_inverted=k_map,
        mask=fit_mask.reshape(spatial).copy(),
        failed=failed.reshape(spatial),
        failure_code=code,
        timings_ms=np.array(timings, dtype=np.float64),
        device=describe_device(dev),
        seconds=time.perf_counter() - start,
        n_echoes_used=echoes,
        noise_floor=floor,
        frames_used=used,
    )
    report(1.0, "done")
    return result


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


def t1_gradient(model: str | T1Model, theta: Any) -> np.ndarray:
    """Gradient of T1 with respect to the internal parameters ``theta`` (last axis).

    For MOLLI ``theta = (A, B, T1*)`` and ``T1 = T1* (B/A − 1)``, so
    ``dT1/dA = −T1* B / A²``, ``dT1/dB = T1* / A``, ``dT1/dT1* = B/A − 1``. For the other models
    T1 is the time constant itself: the gradient is ``(0, ..., 0, 1)``.
    """
    spec = _get_model(model)
    th = np.asarray(theta, dtype=np.float64)
    return spec.t1(torch.as_tensor(th))[1].numpy()


def model_signal(model: str | T1Model, params: dict[str, Any], timings_ms: Any) -> np.ndarray:
    """Signed model signal for reported parameters (as in :attr:`T1FitResult.params`).

    Returns an array ``(N,) + shape(params)`` with the frame axis first. Take ``np.abs`` to
    compare with magnitude data.
    """
    spec = _get_model(model)
    t = np.asarray(timings_ms, np.float64).reshape(-1)
    values = [np.asarray(params[name], np.float64) for name in spec.param_names]
    base = np.broadcast_shapes(*(v.shape for v in values))
    t = t.reshape((-1,) + (1,) * len(base))
    with np.errstate(invalid="ignore", over="ignore"):
        return spec.signal_from_params(values, np.exp(-t / values[-1]))


# ====================================================================== input checks
def _unpack(frames: Any, timings_ms: Any) -> tuple[np.ndarray, Any, str | None]:
    from .sequence import Sequence

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


# ====================================================================== grid search
def _decay(t: torch.Tensor, time_constant: torch.Tensor) -> torch.Tensor:
    """``exp(-t / T)``; an infinite t (no preparation) gives 0."""
    return torch.exp(-t / time_constant)


def _grid_search(
    y: torch.Tensor, t: torch.Tensor, grid: torch.Tensor, spec: T1Model, restore: bool, chunk: int = 8192
) -> list[tuple[int | torch.Tensor, torch.Tensor]]:
    """Best two polarity candidates per pixel: a list of ``(k, grid_index)`` tensors.

    ``y`` is the TI-sorted magnitude data ``(N, P)``. For each time constant ``T`` the closed
    form of the linear amplitudes gives ``RSS = sum(y²) − F`` with ``F`` below; only ``F``
    is compared. Candidates with non-physical amplitudes are excluded. A grid index of -1
    marks "no valid candidate" (the pixel then fails).
    """
    n, p = y.shape
    decay = _decay(t[None, :], grid[:, None]).to(torch.float32)  # (G, N)
    n_k = n if restore else 1
    f32 = torch.float32
    nf = float(n)
    sums = {"n": nf, "se": decay.sum(1, keepdim=True), "see": (decay * decay).sum(1, keepdim=True)}  # (G, 1)
    out_k = [torch.zeros(p, dtype=torch.long, device=y.device) for _ in range(2)]
    out_g = [torch.full((p,), -1, dtype=torch.long, device=y.device) for _ in range(2)]
    for s in range(0, p, chunk):
        yc = y[:, s : s + chunk].to(f32)  # (N, c)
        total = yc.sum(0)  # (c,)
        q_all = decay @ yc  # (G, c): sum_j |y_j| e_j
        q_k = torch.zeros_like(q_all)
        prefix = torch.zeros_like(total)
        best = [torch.full_like(total, -float("inf")) for _ in range(2)]
        best_k = [torch.zeros_like(total, dtype=torch.long) for _ in range(2)]
        best_g = [torch.full_like(total, -1, dtype=torch.long) for _ in range(2)]
        for k in range(n_k):
            if k:
                q_k.addmm_(decay[:, k - 1 : k], yc[k - 1 : k])
                prefix += yc[k - 1]
            sy = total - 2.0 * prefix  # (c,)   sum of the signed data
            u = q_all - 2.0 * q_k  # (G, c) sum of signed data times e
            f, valid = spec.grid_score(u, sy, sums)
            f = f.masked_fill(~valid, -float("inf"))
            f_max, g_idx = f.max(0)
            g_idx = torch.where(torch.isfinite(f_max), g_idx, torch.full_like(g_idx, -1))
            first = f_max > best[0]
            second = ~first & (f_max > best[1])
            best[1] = torch.where(first, best[0], torch.where(second, f_max, best[1]))
            best_k[1] = torch.where(first, best_k[0], torch.where(second, torch.full_like(best_k[1], k), best_k[1]))
            best_g[1] = torch.where(first, best_g[0], torch.where(second, g_idx, best_g[1]))
            best[0] = torch.where(first, f_max, best[0])
            best_k[0] = torch.where(first, torch.full_like(best_k[0], k), best_k[0])
            best_g[0] = torch.where(first, g_idx, best_g[0])
        for i in range(2):
            out_k[i][s : s + chunk] = best_k[i]
            out_g[i][s : s + chunk] = best_g[i]
    candidates = [(out_k[0], out_g[0])]
    if n_k > 1 and bool((out_g[1] >= 0).any()):
        candidates.append((out_k[1], out_g[1]))
    return candidates


# ====================================================================== Levenberg–Marquardt
def _signed(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Negate the first ``k[p]`` (shortest-TI) samples of each pixel's curve."""
    rank = torch.arange(y.shape[0], device=y.device)[:, None]
    return torch.where(rank < k[None, :], -y, y)


def _t_times_decay(t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``t exp(-t/T)`` ``(N, P)`` (``d e / d T = e t / T²``); an infinite t has e = 0 (avoid inf * 0)."""
    return torch.where(torch.isinf(t)[:, None], torch.zeros_like(e), e * t[:, None])


def _dot(u: torch.Tensor | float, v: torch.Tensor | float, n: int) -> torch.Tensor:
    """Sum over frames of ``u * v`` where either may be the constant 1."""
    if isinstance(u, float) and isinstance(v, float):
        return torch.tensor(float(n) * u * v, dtype=torch.float64)
    if isinstance(u, float):
        return u * v.sum(0)
    if isinstance(v, float):
        return v * u.sum(0)
    return (u * v).sum(0)


def _normal_matrix(jac: list, n: int) -> list[list[torch.Tensor]]:
    """``JᵀJ`` as a nested list of per-pixel tensors (symmetric)."""
    p = len(jac)
    h: list[list[Any]] = [[None] * p for _ in range(p)]
    for i in range(p):
        for j in range(i, p):
            h[i][j] = h[j][i] = _dot(jac[i], jac[j], n)
    return h


def _solve_symmetric(h: list[list[torch.Tensor]], b: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Solve the per-pixel 2x2 / 3x3 symmetric systems ``h x = b`` in closed form.

    Returns the solution and a mask of pixels whose system is numerically regular. Cramer's
    rule on the batch is exact enough in float64 for these tiny, well-scaled systems and much
    faster than a batched LAPACK call.
    """
    if len(b) == 2:
        (a, c), (_, d) = h
        det = a * d - c * c
        x = [(d * b[0] - c * b[1]) / det, (a * b[1] - c * b[0]) / det]
        scale = (a * d).abs()
    else:
        (a, b_, c), (_, d, e), (_, _, f) = h
        c00, c01, c02 = d * f - e * e, c * e - b_ * f, b_ * e - c * d
        c11, c12, c22 = a * f - c * c, b_ * c - a * e, a * d - b_ * b_
        det = a * c00 + b_ * c01 + c * c02
        x = [
            (c00 * b[0] + c01 * b[1] + c02 * b[2]) / det,
            (c01 * b[0] + c11 * b[1] + c12 * b[2]) / det,
            (c02 * b[0] + c12 * b[1] + c22 * b[2]) / det,
        ]
        scale = (a * d * f).abs()
    regular = torch.isfinite(det) & (det.abs() > 1e-13 * scale) & (scale > 0)
    return x, regular


def _levenberg_marquardt(
    y_abs: torch.Tensor,
    t: torch.Tensor,
    k: torch.Tensor,
    start: torch.Tensor,
    spec: T1Model,
    bounds: tuple[float, float],
    iterations: int,
) -> dict[str, torch.Tensor]:
    """Batched LM from the grid's time constant; returns ``theta``, ``rss`` and ``k``.

    Pixels drop out of the working set once converged (most converge in under ten
    iterations; noise-only background pixels may wander for all ``iterations``).
    """
    lo, hi = bounds
    n = y_abs.shape[0]
    y_all = _signed(y_abs, k)
    theta_all = spec.initial_guess(y_all, t, start)
    f, e = spec.signal(theta_all, t)
    rss_all = ((y_all - f) ** 2).sum(0)
    idx = torch.nonzero(torch.isfinite(rss_all))[:, 0]
    y, theta, rss = y_all[:, idx], theta_all[idx], rss_all[idx]
    f, e = f[:, idx], e[:, idx]
    lam = torch.full_like(rss, 1e-3)
    for _ in range(int(iterations)):
        if idx.numel() == 0:
            break
        jac = spec.jacobian(theta, t, e)
        r = y - f
        h = _normal_matrix(jac, n)
        g = [_dot(column, r, n) for column in jac]
        # Marquardt's scaling: damp each parameter relative to its own curvature
        damped = [[h[i][j] * (1.0 + lam) if i == j else h[i][j] for j in range(len(g))] for i in range(len(g))]
        step, regular = _solve_symmetric(damped, g)
        trial = theta + torch.stack(step, dim=1)
        trial[:, -1] = trial[:, -1].clamp(lo, hi)  # keep exp(-t/T) finite; a bound hit is flagged later
        f_trial, e_trial = spec.signal(trial, t)
        rss_trial = ((y - f_trial) ** 2).sum(0)
        better = regular & torch.isfinite(rss_trial) & (rss_trial < rss)
        stalled = better & (rss - rss_trial <= 1e-10 * rss)
        theta = torch.where(better[:, None], trial, theta)
        rss = torch.where(better, rss_trial, rss)
        f = torch.where(better[None], f_trial, f)
        e = torch.where(better[None], e_trial, e)
        lam = torch.where(better, lam * 0.3, lam * 5.0).clamp(1e-12, 1e12)
        # converged: negligible step or gain, or no step helps even when strongly damped
        small = torch.stack([(s_.abs() <= 1e-9 * (th.abs() + 1e-12)) for s_, th in zip(step, theta.T)]).all(0)
        converged = small | stalled | (lam >= 1e4)
        if bool(converged.any()):
            theta_all[idx] = theta
            rss_all[idx] = rss
            keep = ~converged
            idx, y, theta, rss, lam = idx[keep], y[:, keep], theta[keep], rss[keep], lam[keep]
            f, e = f[:, keep], e[:, keep]
    theta_all[idx] = theta
    rss_all[idx] = rss
    return {"theta": theta_all, "rss": rss_all, "k": k.clone()}


def _where_rows(take: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (new.dim() - 1)
    return torch.where(take.reshape(shape), new, old)


# ====================================================================== quality maps
def _quality(
    fit: dict[str, torch.Tensor],
    y_abs: torch.Tensor,
    t: torch.Tensor,
    spec: T1Model,
    bounds: tuple[float, float],
    usable: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """R², residual RMS, SD of T1 and failure codes at the optimum."""
    lo, hi = bounds
    theta, rss, k = fit["theta"], fit["rss"], fit["k"]
    n, p = y_abs.shape[0], spec.n_params
    y = _signed(y_abs, k)
    _, e = spec.signal(theta, t)
    h = _normal_matrix(spec.jacobian(theta, t, e), n)
    s2 = rss / (n - p)
    t1, grad = spec.t1(theta)
    # var(T1) = s² gradᵀ (JᵀJ)⁻¹ grad, with (JᵀJ)⁻¹ grad from one symmetric solve
    x, regular = _solve_symmetric(h, list(grad.unbind(1)))
    var = s2 * sum(gi * xi for gi, xi in zip(grad.unbind(1), x))
    tss = ((y - y.mean(0, keepdim=True)) ** 2).sum(0)
    r2 = 1.0 - rss / tss
    rms = torch.sqrt(rss / n)

    code = torch.zeros(theta.shape[0], dtype=torch.uint8, device=theta.device)
    finite = torch.isfinite(theta).all(1) & torch.isfinite(rss) & torch.isfinite(t1) & torch.isfinite(var)
    finite = finite & regular & (var >= 0) & fit["valid_candidate"]
    physical = spec.physical(theta)
    tol = 1e-3
    time_constant = theta[:, -1]
    at_bound = (time_constant <= lo * (1 + tol)) | (time_constant >= hi * (1 - tol))
    at_bound = at_bound | (physical & ((t1 <= lo * (1 + tol)) | (t1 >= hi * (1 - tol))))
    code = torch.where(~physical, torch.full_like(code, 4), code)
    code = torch.where(at_bound, torch.full_like(code, 3), code)
    code = torch.where(~finite, torch.full_like(code, 2), code)
    code = torch.where(~usable, torch.full_like(code, 1), code)
    return {
        "theta": theta,
        "k": k,
        "t1": t1,
        "t1_sd": torch.sqrt(var.clamp(min=0)),
        "r2": r2,
        "rms": rms,
        "code": code,
    }
