"""Extracellular volume (ECV) from a native and a post-contrast T1 map (numpy in, numbers out).

``docs/design.md`` §8, tissue characterisation. Per pixel, in percent::

    ECV = 100 (1 - Hct) (1/T1_post - 1/T1_native) / (1/T1_post,blood - 1/T1_native,blood)

with the blood T1s the medians of the LV blood pool (label 1) of each map. Both maps must be on
one grid (``pipeline.ecv.register_pair`` registers the two series as one set first).

The hematocrit is the user's (a blood sample on the day). Without one, the *synthetic*
hematocrit of Treibel et al. (JACC Cardiovasc Imaging 2016;9:54-63, "Automatic measurement of
the myocardial interstitium: synthetic extracellular volume quantification without hematocrit
sampling") estimates it from the native blood T1 by their linear relation between Hct and the
blood relaxation rate R1 = 1/T1 for MOLLI at 1.5 T::

    Hct_synthetic = 866.0 / T1_native,blood[ms] - 0.1232

(about 0.43 at 1550 ms). It was derived on 1.5 T MOLLI; at 3 T or with other sequences it is
biased, and a result made with it is labelled "synthetic ECV" everywhere it appears
(:attr:`EcvResult.label`).

Pixels where either map has no valid T1 (NaN, not positive) are NaN in the ECV map and counted
(:attr:`EcvResult.n_invalid`); nothing is clipped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..mapping.roi import LABEL_NAMES
from ..vocabulary import arg

__all__ = [
    "SYNTHETIC_HCT_SLOPE_MS",
    "SYNTHETIC_HCT_INTERCEPT",
    "BLOOD_LABEL",
    "MYOCARDIUM_LABEL",
    "EcvResult",
    "synthetic_hematocrit",
    "check_hematocrit",
    "blood_t1_ms",
    "ecv_map",
    "region_statistics",
]

#: Treibel et al. 2016, 1.5 T MOLLI: ``Hct = SLOPE / T1_blood[ms] - INTERCEPT``.
SYNTHETIC_HCT_SLOPE_MS = 866.0
SYNTHETIC_HCT_INTERCEPT = 0.1232

#: The project's label values (docs/design.md §2).
BLOOD_LABEL, MYOCARDIUM_LABEL = 1, 2

#: Native blood T1 range (ms) in which the synthetic relation is used (it was fitted on native
#: 1.5 T blood, ~1300-1900 ms); outside it the "blood" is not native blood at 1.5 T.
_SYNTHETIC_T1_RANGE_MS = (1000.0, 2500.0)


def check_hematocrit(hematocrit: Any) -> float:
    """The hematocrit as a fraction in (0, 1), or a ``ValueError`` naming the argument."""
    try:
        value = float(hematocrit)
    except (TypeError, ValueError):
        raise ValueError(f"{arg('hematocrit', hematocrit)}: the hematocrit is a fraction between 0 and 1 "
                         "(e.g. 0.42); give a number.") from None
    if not np.isfinite(value) or not 0.0 < value < 1.0:
        hint = " (a percentage? divide by 100)" if 1.0 < value <= 100.0 else ""
        raise ValueError(f"{arg('hematocrit', hematocrit)} is outside 0-1{hint}; the hematocrit is a fraction "
                         "of blood volume, e.g. 0.42.")
    return value


def synthetic_hematocrit(native_blood_t1_ms: float) -> float:
    """Synthetic hematocrit from the native LV blood T1 (Treibel et al. 2016, 1.5 T MOLLI).

    ``Hct = 866.0 / T1_blood[ms] - 0.1232``.

    Raises
    ------
    ValueError
        When the blood T1 is outside 1000-2500 ms (not native blood at 1.5 T: a post-contrast
        map given as native, or a mislabelled blood pool).
    """
    t1 = float(native_blood_t1_ms)
    lo, hi = _SYNTHETIC_T1_RANGE_MS
    if not np.isfinite(t1) or not lo <= t1 <= hi:
        raise ValueError(
            f"the native blood T1 is {t1:.0f} ms, outside {lo:.0f}-{hi:.0f} ms where the synthetic hematocrit "
            f"(1.5 T MOLLI) applies; check that the native map is native and label 1 is the LV blood pool, "
            f"or give the measured hematocrit ({arg('hematocrit')})."
        )
    return SYNTHETIC_HCT_SLOPE_MS / t1 - SYNTHETIC_HCT_INTERCEPT


_synthetic_hematocrit = synthetic_hematocrit  # ecv_map's argument of that name shadows the function


def _check_labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2 or array.shape != tuple(shape):
        raise ValueError(
            f"{arg('mask')} has shape {array.shape} but the T1 maps are {tuple(shape)}; give one 2-D label image "
            "on the native map's grid (1 LV blood, 2 LV myocardium, 3 RV blood)."
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{arg('mask')}: labels must be integers (1 LV blood, 2 LV myocardium, 3 RV blood).")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{arg('mask')}: labels must be integers; got dtype {array.dtype}.")
    return array.astype(np.int64)


def blood_t1_ms(t1_ms: Any, labels: Any, *, which: str = "native") -> float:
    """Median T1 (ms) of the valid pixels of the LV blood pool (label 1).

    Raises
    ------
    ValueError
        No label 1, or no valid T1 in it.
    """
    t1 = np.asarray(t1_ms, np.float64)
    lab = _check_labels(labels, t1.shape)
    blood = lab == BLOOD_LABEL
    if not blood.any():
        raise ValueError(f"{arg('mask')} has no LV blood pool (label 1); the blood T1s come from it: label the "
                         "LV cavity 1.")
    values = t1[blood]
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise ValueError(f"the {which} T1 map has no valid T1 in the LV blood pool (label 1): every fit failed "
                         "there; check the map or the label.")
    return float(np.median(values))


def region_statistics(values: Any, region: Any) -> dict[str, Any]:
    """``n_pixels`` (region), ``n_valid`` (finite values), ``mean``, ``sd`` (ddof 1), ``median``
    over the valid pixels (``None`` where there are too few)."""
    v = np.asarray(values, np.float64)[np.asarray(region, bool)]
    good = v[np.isfinite(v)]
    return {
        "n_pixels": int(v.size),
        "n_valid": int(good.size),
        "mean": float(good.mean()) if good.size else None,
        "sd": float(good.std(ddof=1)) if good.size > 1 else None,
        "median": float(np.median(good)) if good.size else None,
    }


@dataclasses.dataclass(frozen=True, eq=False)
class EcvResult:
    """What :func:`ecv_map` computed.

    Attributes
    ----------
    ecv_percent : ndarray float32 (H, W)
        ECV in percent; NaN where either T1 map has no valid value.
    hematocrit : float
        The hematocrit used (fraction).
    synthetic : bool
        Whether it is the synthetic hematocrit (then the result is "synthetic ECV").
    native_blood_t1_ms, post_blood_t1_ms : float
        Medians of the LV blood pool.
    invalid : ndarray bool (H, W)
        Pixels without a valid T1 in either map.
    roi : list of dict
        Per label present: ``label``, ``name`` and :func:`region_statistics` of the ECV (label 2
        without its ``erode_px`` border pixels, their count in ``n_border_excluded``, those without a
        valid T1 in ``n_border_invalid``).
    erode_px : int
        Border pixels of the LV myocardium left out of its statistics
        (:func:`~napari_any2reg.core.tissue.segments.myocardium_core`; 0: the whole label).
    """

    ecv_percent: np.ndarray
    hematocrit: float
    synthetic: bool
    native_blood_t1_ms: float
    post_blood_t1_ms: float
    invalid: np.ndarray
    roi: list[dict[str, Any]]
    erode_px: int = 0

    @property
    def label(self) -> str:
        """``"synthetic ECV"`` or ``"ECV"``: how every display and file names the result."""
        return "synthetic ECV" if self.synthetic else "ECV"

    @property
    def n_invalid(self) -> int:
        """Pixels of the image without a valid T1 in either map (NaN in the ECV map)."""
        return int(self.invalid.sum())

    @property
    def n_invalid_labelled(self) -> int:
        """Labelled pixels (labels > 0) without a valid T1 in either map."""
        return int(sum(r["n_pixels"] - r["n_valid"] + r.get("n_border_invalid", 0) for r in self.roi))

    def myocardial_mean(self) -> float | None:
        """Mean ECV (%) of the valid LV myocardium pixels (label 2), ``None`` without any."""
        row = next((r for r in self.roi if r["label"] == MYOCARDIUM_LABEL), None)
        return None if row is None else row["mean"]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (the ``ecv_stats.json`` body)."""
        return {
            "quantity": self.label,
            "unit": "%",
            "hematocrit": self.hematocrit,
            "hematocrit_synthetic": self.synthetic,
            "hematocrit_source": ("synthetic: 866.0 / T1_native,blood[ms] - 0.1232 (Treibel et al., JACC "
                                  "Cardiovasc Imaging 2016; 1.5 T MOLLI)") if self.synthetic else "given",
            "native_blood_t1_ms": self.native_blood_t1_ms,
            "post_blood_t1_ms": self.post_blood_t1_ms,
            "formula": "100 (1 - Hct) (1/T1post - 1/T1native) / (1/T1post,blood - 1/T1native,blood)",
            "n_invalid_pixels": self.n_invalid,
            "n_invalid_labelled_pixels": self.n_invalid_labelled,
            "myocardial_mean_percent": self.myocardial_mean(),
            "myocardium_erode_px": self.erode_px,
            "roi": self.roi,
        }


def ecv_map(
    native_t1_ms: Any,
    post_t1_ms: Any,
    labels: Any,
    *,
    hematocrit: float | None = None,
    synthetic_hematocrit: bool = False,
    erode_px: int = 0,
) -> EcvResult:
    """ECV (%) per pixel from a native and a post-contrast T1 map on one grid.

    Parameters
    ----------
    native_t1_ms, post_t1_ms : array_like (H, W)
        T1 maps in ms (NaN where a fit failed); never modified.
    labels : array_like (H, W)
        1 LV blood pool (the blood T1s), 2 LV myocardium, 3 RV blood pool; statistics per label.
    hematocrit : float, optional
        Measured hematocrit, a fraction in (0, 1).
    synthetic_hematocrit : bool
        Use the synthetic hematocrit from the native blood T1 instead (exactly one of the two).
    erode_px : int
        Leave the LV myocardium's border pixels out of its statistics: ``erode_px`` erosions of
        label 2 (:func:`~napari_any2reg.core.tissue.segments.myocardium_core`), against the partial
        volume with blood at the borders. The map itself is unchanged. Default 0: the whole label.

    Returns
    -------
    EcvResult

    Raises
    ------
    ValueError
        Maps of different shapes, labels on another grid or without label 1, a hematocrit
        outside 0-1, both or neither hematocrit choice, or a post-contrast blood T1 not shorter
        than the native one (maps swapped, or no contrast given), or an ``erode_px`` that leaves
        no myocardium.
    """
    from .segments import myocardium_core

    native = np.asarray(native_t1_ms, np.float64)
    post = np.asarray(post_t1_ms, np.float64)
    if native.ndim != 2 or native.shape != post.shape:
        raise ValueError(f"the native and post-contrast T1 maps must be 2-D and on one grid; got {native.shape} and "
                         f"{post.shape}.")
    lab = _check_labels(labels, native.shape)
    if (hematocrit is None) == (not synthetic_hematocrit):
        raise ValueError(f"give the measured hematocrit ({arg('hematocrit')}) or ask for the synthetic one "
                         f"({arg('synthetic_hematocrit', True)}), exactly one of them.")
    native_blood = blood_t1_ms(native, lab, which="native")
    post_blood = blood_t1_ms(post, lab, which="post-contrast")
    if not post_blood < native_blood:
        raise ValueError(
            f"the post-contrast blood T1 ({post_blood:.0f} ms) is not shorter than the native one ({native_blood:.0f} ms); "
            "were the native and post-contrast inputs swapped?"
        )
    core = myocardium_core(lab, erode_px)
    hct = _synthetic_hematocrit(native_blood) if synthetic_hematocrit else check_hematocrit(hematocrit)
    valid = np.isfinite(native) & np.isfinite(post) & (native > 0) & (post > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(valid, 1.0 / post - 1.0 / native, np.nan)
    ecv = 100.0 * (1.0 - hct) * delta / (1.0 / post_blood - 1.0 / native_blood)
    ecv = np.where(valid, ecv, np.nan).astype(np.float32)
    roi = []
    for value in np.unique(lab):
        if value == 0:
            continue
        region = core if value == MYOCARDIUM_LABEL else lab == value
        row = {"label": int(value), "name": LABEL_NAMES.get(int(value), f"label {int(value)}"),
               **region_statistics(ecv, region)}
        if value == MYOCARDIUM_LABEL:
            border = (lab == value) & ~region
            row["n_border_excluded"] = int(border.sum())
            row["n_border_invalid"] = int((border & ~valid).sum())
        roi.append(row)
    return EcvResult(ecv_percent=ecv, hematocrit=float(hct), synthetic=bool(synthetic_hematocrit),
                     native_blood_t1_ms=native_blood, post_blood_t1_ms=post_blood, invalid=~valid, roi=roi,
                     erode_px=int(erode_px))
