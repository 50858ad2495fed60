"""The result of a per-pixel fit (:class:`T1FitResult`), its failure codes and the fit's
cancellation exception."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..engine_api import Cancelled
from .models import T1_MODELS


#: ``failure_code`` values. 0 also marks pixels outside the mask (see ``T1FitResult.mask``).
FAILURE_REASONS = {
    0: "ok",
    1: "no usable signal (zero or non-finite samples)",
    2: "fit did not converge (singular or non-finite)",
    3: "time constant or T1 at a bound of t1_range_ms",
    4: "non-physical parameters (amplitude <= 0, or MOLLI B/A <= 1)",
}


class FitCancelled(Cancelled):
    """Raised inside :func:`fit_t1` when the caller's cancel flag is set.

    A :class:`.engine_api.Cancelled`, the one cancellation exception of registration, training
    and fitting, so callers catch that; the name stays for code that catches this one.
    """


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
        """Per-ROI T1 statistics of this fit (see :func:`~napari_any2reg.core.mapping.roi.roi_statistics`)."""
        from .roi import roi_statistics

        return roi_statistics(
            self.t1_ms, labels, t1_sd_ms=self.t1_sd_ms, r_squared=self.r_squared,
            r2_threshold=r2_threshold, label_names=label_names,
        )

    def r2_survival(self, roi: Any, thresholds: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Fraction of ``roi`` pixels with R² above each threshold (see ``roi.r2_survival``)."""
        from .roi import r2_survival

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
