"""ROI statistics and R² survival curves for T1 maps (numpy in, numbers out).

The maps are those of :class:`~napari_any2reg.core.mapping.T1FitResult`: NaN marks a pixel
without a valid T1 (fit failed, hit a bound, or outside the fitted mask). Every ROI pixel
counts in the denominators, so a map with more failed pixels never looks better for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "LABEL_NAMES",
    "DEFAULT_R2_THRESHOLD",
    "survival_thresholds",
    "roi_masks",
    "roi_statistics",
    "r2_survival",
]

#: Names of the project's label values (``docs/design.md`` §2).
LABEL_NAMES = {1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool"}

#: Default R² above which a pixel's fit counts as good.
DEFAULT_R2_THRESHOLD = 0.9


def survival_thresholds(n: int = 101, low: float = 0.9, high: float = 1.0) -> np.ndarray:
    """R² thresholds of the survival curve: ``n`` values from ``low`` to ``high``."""
    return np.linspace(float(low), float(high), int(n))


def roi_masks(labels: Any, label_names: dict[int, str] | None = None) -> dict[int, tuple[str, np.ndarray]]:
    """Split a label image or boolean mask into ``{label: (name, mask)}``.

    Parameters
    ----------
    labels : array_like, shape (H, W)
        Integer labels (0 = background) or a boolean mask (one ROI, label 1, named "ROI").
    label_names : dict, optional
        Names by label value; defaults to :data:`LABEL_NAMES` and ``"label <k>"`` otherwise.

    Returns
    -------
    dict
        One entry per non-zero label present, in increasing label order.
    """
    array = np.asarray(labels)
    if array.dtype == bool:
        return {1: ((label_names or {}).get(1, "ROI"), array.copy())} if array.any() else {}
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError("labels must be integers (0 = background) or a boolean mask; got non-integer values.")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers or a boolean mask; got dtype {array.dtype}.")
    names = dict(LABEL_NAMES)
    names.update(label_names or {})
    out = {}
    for value in np.unique(array):
        if value == 0:
            continue
        out[int(value)] = (names.get(int(value), f"label {int(value)}"), array == value)
    return out


def _check_same_shape(name: str, array: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if array is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape} but the labels are {shape}; use maps and labels on the same grid.")


def roi_statistics(
    t1_ms: Any,
    labels: Any,
    *,
    t1_sd_ms: Any = None,
    r_squared: Any = None,
    r2_threshold: float = DEFAULT_R2_THRESHOLD,
    label_names: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """T1 statistics per ROI.

    Parameters
    ----------
    t1_ms : array_like, shape (H, W)
        T1 map (ms), NaN where there is no valid fit.
    labels : array_like, shape (H, W)
        Label image (0 = background) or boolean mask.
    t1_sd_ms, r_squared : array_like, shape (H, W), optional
        Fit SD map (ms) and R² map.
    r2_threshold : float
        A pixel's fit counts as good when ``R² > r2_threshold``.
    label_names : dict, optional
        Names by label value (see :func:`roi_masks`).

    Returns
    -------
    list of dict
        Per ROI: ``label``, ``name``, ``n_pixels``, ``n_valid`` (finite T1), ``n_failed``
        (ROI pixels without a valid T1), ``t1_mean_ms``, ``t1_sd_ms`` (spatial SD across the
        ROI, ddof 1), ``t1_median_ms``, ``fit_sd_mean_ms`` (mean of the fit SD map),
        ``r2_mean``, ``r2_threshold`` and ``r2_above_fraction`` (fraction of *all* ROI pixels
        with ``R² > r2_threshold``). Means are over valid pixels; ``None`` when there are none.
    """
    t1 = np.asarray(t1_ms, dtype=np.float64)
    sd = None if t1_sd_ms is None else np.asarray(t1_sd_ms, dtype=np.float64)
    r2 = None if r_squared is None else np.asarray(r_squared, dtype=np.float64)
    shape = np.shape(labels)
    _check_same_shape("the T1 map", t1, shape)
    _check_same_shape("the SD map", sd, shape)
    _check_same_shape("the R² map", r2, shape)
    rows = []
    for value, (name, roi) in roi_masks(labels, label_names).items():
        values = t1[roi]
        valid = np.isfinite(values)
        n_valid = int(valid.sum())
        good = values[valid]
        row: dict[str, Any] = {
            "label": value,
            "name": name,
            "n_pixels": int(roi.sum()),
            "n_valid": n_valid,
            "n_failed": int(roi.sum()) - n_valid,
            "t1_mean_ms": float(good.mean()) if n_valid else None,
            "t1_sd_ms": float(good.std(ddof=1)) if n_valid > 1 else None,
            "t1_median_ms": float(np.median(good)) if n_valid else None,
            "fit_sd_mean_ms": None,
            "r2_mean": None,
            "r2_threshold": float(r2_threshold),
            "r2_above_fraction": None,
        }
        if sd is not None:
            s = sd[roi][valid]
            s = s[np.isfinite(s)]
            row["fit_sd_mean_ms"] = float(s.mean()) if s.size else None
        if r2 is not None:
            r = r2[roi]
            finite = r[np.isfinite(r)]
            row["r2_mean"] = float(finite.mean()) if finite.size else None
            with np.errstate(invalid="ignore"):
                row["r2_above_fraction"] = float(np.mean(r > r2_threshold)) if r.size else None
        rows.append(row)
    return rows


def r2_survival(r_squared: Any, roi: Any, thresholds: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of ROI pixels whose R² exceeds each threshold.

    Parameters
    ----------
    r_squared : array_like, shape (H, W)
        R² map (NaN = no valid fit: never survives).
    roi : array_like of bool, shape (H, W)
        The region (e.g. ``labels == 2`` for the LV myocardium).
    thresholds : array_like, optional
        Defaults to :func:`survival_thresholds` (101 values from 0.9 to 1.0).

    Returns
    -------
    thresholds, fraction : ndarray
        ``fraction[i] = mean(R² > thresholds[i])`` over the ROI; non-increasing.

    Raises
    ------
    ValueError
        If the ROI is empty or not on the map's grid.
    """
    r2 = np.asarray(r_squared, dtype=np.float64)
    mask = np.asarray(roi, dtype=bool)
    _check_same_shape("the R² map", r2, mask.shape)
    if not mask.any():
        raise ValueError("the ROI is empty; draw or choose a region with at least one pixel.")
    t = survival_thresholds() if thresholds is None else np.asarray(thresholds, dtype=np.float64).reshape(-1)
    values = r2[mask]
    values = np.where(np.isfinite(values), values, -np.inf)
    fraction = (values[None, :] > t[:, None]).mean(axis=1)
    return t, fraction
