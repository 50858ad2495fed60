"""One verdict per registered series: ``good``, ``check`` or ``poor``, with the reasons.

A reader with 40 series decides per series, in seconds, whether the corrected map can be
reported. The verdict folds the evidence already computed into one level, from stated
thresholds (:class:`VerdictThresholds`; how they were chosen: ``docs/verdict.md``):

=====================  ====================================  ===================================
evidence               check                                 poor
=====================  ====================================  ===================================
folding (det J <= 0)   > 0.1 % of the field                  > 1 %
alignment (PCA share)  —                                     lower after registration than before
residual motion        a rigid shift per frame raises the    by > 0.05
                       registered frames' PCA share by
                       > 0.02
outlier frames         any (:mod:`.outliers`)                more than a quarter of the frames
displacement SD        95th percentile > 1 mm (or a third    > 3 mm (or one pixel,
                       of a pixel, if larger) in the LV      if larger)
                       myocardium (mask label 2), else in
                       the mask / the central heart box
myocardial R²          median < 0.9 (when a fit was made     median < 0.7
                       and a myocardium label is known), or
                       the median R² of the region lower
                       after registration than before
=====================  ====================================  ===================================

Every reason names the frame or region and the number, so the Review dock can jump to the
frame. Pure numpy; no file access.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence as SequenceType

import numpy as np

__all__ = [
    "LEVELS",
    "VerdictThresholds",
    "Reason",
    "heart_region",
    "myocardial_region",
    "uncertainty_summary",
    "residual_translation",
    "make_verdict",
    "verdict_line",
    "verdict_rank",
    "assess_registration",
    "fit_evidence",
]

#: Levels from best to worst.
LEVELS = ("good", "check", "poor")


@dataclasses.dataclass(frozen=True)
class VerdictThresholds:
    """The thresholds of the verdict (see the module table)."""

    folding_check_percent: float = 0.1
    folding_poor_percent: float = 1.0
    alignment_worse_by: float = 0.005
    residual_gain_check: float = 0.02
    residual_gain_poor: float = 0.05
    outlier_poor_fraction: float = 0.25
    sd_check_mm: float = 1.0
    sd_poor_mm: float = 3.0
    sd_check_px: float = 1.0 / 3.0
    sd_poor_px: float = 1.0
    r2_check: float = 0.9
    r2_poor: float = 0.7
    r2_drop: float = 0.02


@dataclasses.dataclass(frozen=True)
class Reason:
    """One finding: its level, a sentence with the number, and the frames it concerns."""

    level: str
    text: str
    frames: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "text": self.text, "frames": [int(f) for f in self.frames]}


def heart_region(shape: tuple[int, int], labels: Any = None) -> tuple[np.ndarray, str]:
    """The region the verdict reads: the mask's labels (a stack: any frame), else the central box."""
    from ..metrics import default_roi

    if labels is not None:
        array = np.asarray(labels)
        if array.ndim == 3:
            array = (array != 0).any(axis=0)
        if array.shape == tuple(shape) and (array != 0).any():
            return array != 0, "mask"
    return default_roi(shape), "central box"


def myocardial_region(shape: tuple[int, int], labels: Any = None) -> tuple[np.ndarray, str]:
    """The region the displacement SD is read in: the LV myocardium (label 2 of ``labels``; a
    stack: any frame) when the mask has it, else :func:`heart_region` (all the mask's labels, or
    the central box). The name says which (``metrics.json`` ``displacement_sd`` ``region``)."""
    if labels is not None:
        array = np.asarray(labels)
        myocardium = (array == 2).any(axis=0) if array.ndim == 3 else array == 2
        if myocardium.shape == tuple(shape) and myocardium.any():
            return myocardium, "LV myocardium (label 2)"
    region, name = heart_region(shape, labels)
    return region, ("heart mask (all labels)" if name == "mask"
                    else "heart box (central half of the field of view)")


def uncertainty_summary(displacement_sd_mm: Any, region: np.ndarray, region_name: str,
                        note: str | None = None, spacing_mm: SequenceType[float] | None = None) -> dict[str, Any]:
    """``metrics.json`` ``displacement_sd``: the region's 95th percentile (mm) and the worst frame
    (``region`` from :func:`myocardial_region`; ``region_name`` says which it is), and the pixel
    size (``pixel_mm``, the geometric mean of the spacing) the verdict reads it against."""
    if displacement_sd_mm is None:
        return {"available": False, "why": note or "this engine gives no per-pixel uncertainty"}
    sd = np.asarray(displacement_sd_mm, np.float32)
    per_frame = np.array([np.percentile(frame[region], 95) for frame in sd])
    return {
        "available": True,
        "what": note,
        "region": region_name,
        "p95_mm": round(float(np.percentile(sd[:, region], 95)), 4),
        "median_mm": round(float(np.median(sd[:, region])), 4),
        "p95_mm_per_frame": [round(float(v), 4) for v in per_frame],
        "worst_frame": int(np.argmax(per_frame)),
        "pixel_mm": None if spacing_mm is None else round(float(np.sqrt(float(spacing_mm[0]) * float(spacing_mm[1]))), 4),
    }


def residual_translation(registered: Any, spacing_mm: SequenceType[float] | None = None,
                         min_shift_mm: float = 1.0) -> dict[str, Any]:
    """``metrics.json`` ``residual_motion``: how much motion a registration left, read from its result.

    An engine that returns (almost) the identity on a moved series (untrained weights, a setting
    that stops it) leaves the alignment unchanged, folds nothing, is certain and flags no frame:
    none of the other checks sees "nothing was corrected". Here the registered frames are aligned
    once more by a rigid shift per frame (the network's coarse stage: phase correlation of
    contrast-insensitive MIND descriptors, no threshold), and the model-free alignment
    (:func:`.metrics.alignment_score`, PCA share, central box) of the shifted frames is compared
    with the registered frames'. A well-corrected series gains nothing (a shift only blurs what is
    aligned); a series with motion left gains. Shifts alone are not trusted as the signal: at a
    MOLLI null crossing the descriptors themselves give shifts of 1-3 mm on motion-free frames, and
    there the alignment does not improve.

    Returns
    -------
    dict
        ``alignment_registered``, ``alignment_shifted``, ``gain`` (their difference),
        ``shift_per_frame`` and its ``unit`` (mm when the spacing is known, else px),
        ``worst_frame`` and ``frames`` (the frames shifted by at least ``min_shift_mm``).
    """
    import torch

    from ..engines.any2reg.coarse import coarse_translation
    from ..metrics import alignment_score
    from ..spatial import warp_images

    frames = np.asarray(registered, np.float32)
    n, h, w = frames.shape
    # standardised in float64: float32 frames near 1e38 overflow in their own mean and SD
    wide = frames.astype(np.float64)
    scale = float(wide.std())
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    normalised = torch.from_numpy(((wide - wide.mean()) / scale).astype(np.float32))
    spacing = None if spacing_mm is None else tuple(float(v) for v in spacing_mm)
    with torch.no_grad():
        # the 3 mm grid the shift stage was designed on (its window and shift bound)
        shifts = coarse_translation(normalised, spacing_mm=spacing, training_spacing_mm=(3.0, 3.0),
                                    threshold_mm=0.0).double().numpy()
    field = np.broadcast_to(shifts[:, :, None, None], (n, 2, h, w)).astype(np.float32)
    shifted = warp_images(frames, field)
    after, moved = alignment_score(frames), alignment_score(shifted)
    unit_scale = np.array(spacing if spacing is not None else (1.0, 1.0))
    length = np.hypot(*(shifts * unit_scale).T)
    return {
        "alignment_registered": round(float(after), 4),
        "alignment_shifted": round(float(moved), 4),
        "gain": round(float(moved - after), 4),
        "shift_per_frame": [round(float(v), 3) for v in length],
        "unit": "mm" if spacing is not None else "px",
        "worst_frame": int(np.argmax(length)) if n else 0,
        "frames": [int(i) for i in np.flatnonzero(length >= (min_shift_mm if spacing is not None else 1.0))],
    }


def _frames_text(frames: SequenceType[int]) -> str:
    return ("frame " if len(frames) == 1 else "frames ") + ", ".join(str(int(f)) for f in frames)


def make_verdict(
    *,
    n_frames: int,
    folding_percent: float,
    folding_per_frame: SequenceType[float] | None = None,
    alignment_before: float | None = None,
    alignment_after: float | None = None,
    outliers: Mapping[str, Any] | None = None,
    uncertainty: Mapping[str, Any] | None = None,
    residual_motion: Mapping[str, Any] | None = None,
    r2_after: float | None = None,
    r2_before: float | None = None,
    r2_region: str | None = None,
    myocardium: bool = False,
    thresholds: VerdictThresholds = VerdictThresholds(),
) -> dict[str, Any]:
    """The verdict ``{"level", "reasons", "checked", "thresholds"}`` of one registration.

    Parameters
    ----------
    n_frames : int
    folding_percent : float
        % of the field with ``det J <= 0``.
    folding_per_frame : list of float, optional
        The same per frame (the reason names the worst frame).
    alignment_before, alignment_after : float, optional
        Model-free alignment (:func:`.metrics.alignment_score`).
    outliers : dict, optional
        :meth:`.outliers.OutlierReport.to_json`.
    uncertainty : dict, optional
        :func:`uncertainty_summary`.
    residual_motion : dict, optional
        :func:`residual_translation`.
    r2_after, r2_before : float, optional
        Median R² of the fit after / before registration in ``r2_region``.
    myocardium : bool
        ``r2_region`` is the LV myocardium (the absolute R² thresholds apply only there).

    Returns
    -------
    dict
        ``level`` the worst level of the reasons; ``reasons`` the findings above ``good``
        (each ``{"level", "text", "frames"}``), or, for a good series, what was checked.
    """
    t = thresholds
    found: list[Reason] = []
    passed: list[str] = []

    worst = ""
    if folding_per_frame is not None and len(folding_per_frame):
        k = int(np.argmax(folding_per_frame))
        worst = f" (most in frame {k}: {float(folding_per_frame[k]):.2f} %)"
        worst_frames: tuple[int, ...] = (k,)
    else:
        worst_frames = ()
    if folding_percent > t.folding_poor_percent:
        found.append(Reason("poor", f"folding {folding_percent:.2f} % of the field > {t.folding_poor_percent:g} %{worst}", worst_frames))
    elif folding_percent > t.folding_check_percent:
        found.append(Reason("check", f"folding {folding_percent:.2f} % of the field > {t.folding_check_percent:g} %{worst}", worst_frames))
    else:
        passed.append(f"folding {folding_percent:.2f} %")

    if alignment_before is not None and alignment_after is not None:
        if alignment_after < alignment_before - t.alignment_worse_by:
            found.append(Reason("poor", f"alignment worse after registration ({alignment_before:.3f} -> {alignment_after:.3f}, "
                                        "share of variance in 2 principal components)"))
        else:
            passed.append(f"alignment {alignment_before:.3f} -> {alignment_after:.3f}")

    if residual_motion is not None:
        gain = float(residual_motion["gain"])
        frame = int(residual_motion["worst_frame"])
        unit = residual_motion.get("unit", "mm")
        shift = float(residual_motion["shift_per_frame"][frame]) if residual_motion["shift_per_frame"] else 0.0
        text = (f"motion left after registration: a rigid shift of up to {shift:.1f} {unit} (frame {frame}) aligns the "
                f"registered frames better (share of variance in 2 principal components "
                f"{residual_motion['alignment_registered']:.3f} -> {residual_motion['alignment_shifted']:.3f}, +{gain:.3f})")
        frames = tuple(residual_motion.get("frames") or (frame,))
        if gain > t.residual_gain_poor:
            found.append(Reason("poor", text, frames))
        elif gain > t.residual_gain_check:
            found.append(Reason("check", text, frames))
        else:
            passed.append(f"no motion left (a rigid shift gains {gain:+.3f})")

    if outliers is not None:
        indices = [int(i) for i in outliers.get("indices", [])]
        if indices:
            details = "; ".join(f"{i}: {', '.join(outliers['reasons'][str(i)])}" for i in indices)
            level = "poor" if len(indices) > t.outlier_poor_fraction * n_frames else "check"
            verb = "disagrees" if len(indices) == 1 else "disagree"
            found.append(Reason(level, f"{_frames_text(indices)} {verb} with the rest ({details})", tuple(indices)))
        elif outliers.get("not_tested"):
            passed.append(f"outlier frames not tested ({outliers['not_tested']})")
        else:
            passed.append("no outlier frames")

    if uncertainty is not None and uncertainty.get("available"):
        p95 = float(uncertainty["p95_mm"])
        frame = int(uncertainty["worst_frame"])
        where = f"in the {uncertainty.get('region', 'heart region')} (worst frame {frame}: " \
                f"{uncertainty['p95_mm_per_frame'][frame]:.2f} mm)"
        # an SD well below a pixel is below what the image can resolve: at coarse pixels (or a
        # spacing given too large, which scales every mm) the bound grows with the pixel
        pixel = uncertainty.get("pixel_mm") or 0.0
        poor_at, check_at = max(t.sd_poor_mm, t.sd_poor_px * pixel), max(t.sd_check_mm, t.sd_check_px * pixel)
        if p95 > poor_at:
            found.append(Reason("poor", f"displacement SD 95th percentile {p95:.2f} mm > {poor_at:.3g} mm {where}", (frame,)))
        elif p95 > check_at:
            found.append(Reason("check", f"displacement SD 95th percentile {p95:.2f} mm > {check_at:.3g} mm {where}", (frame,)))
        else:
            passed.append(f"displacement SD p95 {p95:.2f} mm")

    if r2_after is not None and np.isfinite(r2_after):
        region = r2_region or "the region"
        if myocardium and r2_after < t.r2_poor:
            found.append(Reason("poor", f"median R² {r2_after:.3f} < {t.r2_poor:g} in {region}"))
        elif myocardium and r2_after < t.r2_check:
            found.append(Reason("check", f"median R² {r2_after:.3f} < {t.r2_check:g} in {region}"))
        elif r2_before is not None and np.isfinite(r2_before) and r2_after < r2_before - t.r2_drop:
            found.append(Reason("check", f"median R² lower after registration in {region} ({r2_before:.3f} -> {r2_after:.3f})"))
        else:
            passed.append(f"median R² {r2_after:.3f} in {region}")

    level = max((r.level for r in found), key=LEVELS.index, default="good")
    reasons = sorted(found, key=lambda r: -LEVELS.index(r.level))
    return {
        "level": level,
        "reasons": [r.to_json() for r in reasons] if reasons else [Reason("good", "; ".join(passed)).to_json()],
        "checked": passed,
        "thresholds": dataclasses.asdict(t),
    }


def verdict_line(verdict: Mapping[str, Any]) -> str:
    """One line, e.g. ``"check: frames 3, 7 disagree with the rest (...)"`` (the CLI's last line)."""
    texts = [r["text"] for r in verdict.get("reasons", [])]
    return f"{verdict['level']}: {'; '.join(texts) or 'nothing to report'}"


def verdict_rank(level: Any) -> int:
    """Sort key: series to look at first (poor 0, check 1, good 2, unknown / failed -1)."""
    return {"poor": 0, "check": 1, "good": 2}.get(str(level), -1)


def assess_registration(
    raw: Any,
    registered: Any,
    displacement: Any,
    *,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    timings_ms: Any = None,
    labels: Any = None,
    displacement_sd_mm: Any = None,
    uncertainty_note: str | None = None,
    thresholds: VerdictThresholds = VerdictThresholds(),
) -> dict[str, Any]:
    """``outlier_frames``, ``displacement_sd``, ``residual_motion`` and ``verdict`` of a registration
    (``metrics.json``).

    The outliers are read around the heart (:func:`.outliers.outlier_region`: the mask's labels
    and a margin, else the body in the central box), the uncertainty in the LV myocardium when the
    mask has label 2 (else in the mask or the central box; :func:`myocardial_region`); ``scores`` are the stored correspondence maps
    (else the model-free score is computed). The verdict here has no fit; add one with
    :func:`make_verdict` ``r2_after=`` once the maps are fitted (``pipeline.series`` does).
    """
    from ..metrics import alignment_score
    from .outliers import detect_outlier_frames, outlier_region
    from . import correspondence_maps, folding_mask

    raw = np.asarray(raw, np.float32)
    registered = np.asarray(registered, np.float32)
    u = np.asarray(displacement, np.float32)
    region, _ = outlier_region(raw.shape[1:], labels, spacing_mm=spacing_mm, frames=registered)
    maps = correspondence_maps(raw, u, spacing_mm=spacing_mm, stored=scores)
    outliers = detect_outlier_frames(registered, displacement=u, scores=maps, spacing_mm=spacing_mm,
                                     region=region, timings_ms=timings_ms).to_json()
    uncertainty = uncertainty_summary(displacement_sd_mm, *myocardial_region(raw.shape[1:], labels), uncertainty_note,
                                      spacing_mm=spacing_mm)
    folding = folding_mask(u)
    inputs = {
        "n_frames": int(raw.shape[0]),
        "folding_percent": float(100.0 * folding.mean()),
        "folding_per_frame": [float(v) for v in 100.0 * folding.reshape(len(folding), -1).mean(axis=1)],
        "alignment_before": alignment_score(raw),
        "alignment_after": alignment_score(registered),
        "outliers": outliers,
        "uncertainty": uncertainty,
        "residual_motion": residual_translation(registered, spacing_mm),
    }
    return {"outlier_frames": outliers, "displacement_sd": uncertainty, "residual_motion": inputs["residual_motion"],
            "verdict": make_verdict(**inputs, thresholds=thresholds), "_verdict_inputs": inputs}


def fit_evidence(fit_raw: Any, fit_registered: Any, labels: Any = None) -> dict[str, Any]:
    """The R² inputs of :func:`make_verdict` from the fits before and after registration:
    median R² in the LV myocardium (label 2 of ``labels``) when there is one, else in the
    heart region (then only a drop after registration counts)."""
    r2_after = np.asarray(fit_registered.r_squared, np.float64)
    r2_before = None if fit_raw is None else np.asarray(fit_raw.r_squared, np.float64)
    myocardium = False
    if labels is not None:
        lab = np.asarray(labels)
        lab = lab.max(axis=0) if lab.ndim == 3 else lab
        if lab.shape == r2_after.shape and (lab == 2).any():
            region, name, myocardium = lab == 2, "the LV myocardium (mask label 2)", True
        else:
            region, name = heart_region(r2_after.shape, labels)
            name = f"the {name}"
    else:
        region, name = heart_region(r2_after.shape)
        name = f"the {name}"

    def median(values: np.ndarray | None) -> float | None:
        if values is None:
            return None
        inside = values[region]
        inside = inside[np.isfinite(inside)]
        return float(np.median(inside)) if inside.size else None

    return {"r2_after": median(r2_after), "r2_before": median(r2_before), "r2_region": name, "myocardium": myocardium}
