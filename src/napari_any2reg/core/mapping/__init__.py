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

The subpackage: :mod:`.models` (the model classes, :data:`T1_MODELS`, the model signal),
:mod:`.fitting` (:func:`fit_t1`, :func:`fit_problem`, the input checks), :mod:`.solver` (grid
search, Levenberg–Marquardt, quality maps) and :mod:`.result` (:class:`T1FitResult`). ROI
statistics of the maps are in :mod:`napari_any2reg.core.mapping.roi`.
"""

from __future__ import annotations

from .fitting import fit_problem, fit_t1
from .models import (
    T1_MODELS,
    DecayModel,
    DecayOffsetModel,
    FixedEfficiencyModel,
    RecoveryModel,
    T1Model,
    model_for_kind,
    model_signal,
    register_t1_model,
    t1_gradient,
)
from .result import FAILURE_REASONS, FitCancelled, T1FitResult

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
