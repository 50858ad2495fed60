"""The signal models of :mod:`napari_any2reg.core.mapping` and their registry.

:class:`T1Model` and its families (:class:`RecoveryModel`, :class:`FixedEfficiencyModel`,
:class:`DecayModel`, :class:`DecayOffsetModel`), the registered models (MOLLI, IR, STONE,
SASHA, T2, T2*) in :data:`T1_MODELS`, the lookups (:func:`model_for_kind`), the signal and the
T1 gradient of reported parameters (:func:`model_signal`, :func:`t1_gradient`), and the two
curve primitives the models and the solver share (``exp(-t/T)`` and ``t exp(-t/T)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


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


def model_for_kind(kind: str | None) -> str | None:
    """The T1 model fitted by default for a sequence kind (``None`` if the kind has none).

    Examples
    --------
    >>> model_for_kind("molli"), model_for_kind("cine")
    ('molli', None)
    """
    key = str(kind or "").lower()
    return next((name for name, model in T1_MODELS.items() if key in model.kinds), None)


def _get_model(model: str | T1Model | type[T1Model]) -> T1Model:
    if isinstance(model, T1Model):
        return model
    if isinstance(model, type) and issubclass(model, T1Model):
        return model()
    key = str(model).lower()
    if key not in T1_MODELS:
        raise ValueError(f"Unknown T1 model {model!r}; use one of {', '.join(T1_MODELS)}.")
    return T1_MODELS[key]


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


def _decay(t: torch.Tensor, time_constant: torch.Tensor) -> torch.Tensor:
    """``exp(-t / T)``; an infinite t (no preparation) gives 0."""
    return torch.exp(-t / time_constant)


def _t_times_decay(t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``t exp(-t/T)`` ``(N, P)`` (``d e / d T = e t / T²``); an infinite t has e = 0 (avoid inf * 0)."""
    return torch.where(torch.isinf(t)[:, None], torch.zeros_like(e), e * t[:, None])
