"""Outlier frames: frames of a registered series that no registration can save.

A mistriggered frame (the heart in systole in a diastolic series), a frame of a failed
breath-hold that moved through the plane, a frame with a strong artefact: after registration
such a frame still disagrees with the rest of the set. Three pieces of evidence are read per
frame, each compared with the *other frames of the same series* (robust z-scores, median and
MAD), so the rule needs no per-protocol constant:

* **low-rank residual** — the registered frames of a relaxation / perfusion / cine series are
  close to a low-rank set (a few principal components span the contrast change). Each frame is
  projected on the rank-``k`` subspace of the *other* frames inside the heart region; the
  relative residual ``|x_i - P_{-i} x_i| / |x_i|`` is large for a frame that shows other
  anatomy (another slice position) or an artefact (ghosts, blur), whatever the contrast.
* **correspondence score** — the mean of the frame's correspondence map (AdaCS scorer or the
  model-free residual score, :func:`.qc.correspondence_maps`) inside the region: low where the
  frame cannot be matched to the group.
* **displacement** — the frame's mean displacement magnitude in the region (mm) against the
  others': a frame the registration had to move much further than the rest (a failed
  breath-hold) is only *supporting* evidence, since a large but correct shift is no fault.

A frame is an outlier when its residual or its score is far from the others (the strong
thresholds), or when two of the three signals are beyond the weaker ones. The thresholds were
chosen on phantoms with one injected bad frame and on motion-free and well-corrected series
(``benchmarks/bench_outliers.py``; results and how they were chosen in ``docs/verdict.md``).

numpy (and scipy.ndimage for the region); no file access.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence as SequenceType

import numpy as np

__all__ = [
    "OutlierThresholds",
    "FrameEvidence",
    "OutlierReport",
    "low_rank_residuals",
    "robust_z",
    "frame_evidence",
    "detect_outlier_frames",
    "classify_frames",
    "outlier_region",
    "HEART_MARGIN_MM",
    "BODY_FRACTION",
    "parse_exclude_frames",
    "frames_to_keep",
    "auto_exclusion",
]


@dataclasses.dataclass(frozen=True)
class OutlierThresholds:
    """When a frame is an outlier (robust z-scores against the other frames of the series).

    Attributes
    ----------
    residual_z : float
        Strong threshold on the low-rank residual's z-score (alone enough to flag).
    score_z : float
        Strong threshold on the correspondence score's z-score (below the median; alone enough).
        High because without a mask the low-signal frames (MOLLI's near the inversion null,
        SASHA's shortest saturation) reach z 6-14 on the score while correct; a bad frame the
        score sees is nearly always also seen by the residual.

    The values were chosen on the calibration phantoms (seeds 20700+) in the two regions the
    product reads (:func:`outlier_region`, with and without a heart mask) and checked on
    phantoms of other seeds (20900+) and the real series: ``benchmarks/results/outliers.md``.
    weak_z : float
        Two signals (of residual, score, displacement) beyond this flag the frame together.
    min_residual_excess : float
        The residual must also exceed the series' median residual by this much (relative units)
        — a z-score alone is meaningless when every frame fits the model to 1 %.
    large_residual_excess, large_residual_z : float
        A residual this far above the median (30 % of the frame that the other frames cannot
        explain) flags the frame alone already beyond ``large_residual_z``: in series whose
        frames differ more among themselves (STONE) the spread of the residuals is wide, and a
        clearly bad frame then reaches z 3-6 only (with the z threshold alone the calibration
        phantoms' bad STONE frames were missed 12 times in 36).
    min_score_drop : float
        The score must also be this far below the median score.
    min_displacement_excess_mm : float
        The displacement must also exceed the median displacement by this many mm.
    rank : int
        Rank of the model of the other frames (capped at ``N - 2``).
    min_frames : int
        Series with fewer frames are not tested (no spread to compare with).
    """

    residual_z: float = 5.0
    score_z: float = 10.0
    weak_z: float = 3.5
    min_residual_excess: float = 0.15
    large_residual_excess: float = 0.3
    large_residual_z: float = 2.5
    min_score_drop: float = 0.05
    min_displacement_excess_mm: float = 2.0
    rank: int = 3
    min_frames: int = 5


@dataclasses.dataclass(frozen=True)
class FrameEvidence:
    """The per-frame evidence (``(N,)`` arrays; ``None`` where a signal was not available)."""

    residual: np.ndarray
    residual_z: np.ndarray
    score: np.ndarray | None
    score_z: np.ndarray | None
    displacement_mm: np.ndarray | None
    displacement_z: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class OutlierReport:
    """Outlier frames and why (``metrics.json`` ``outlier_frames``)."""

    frames: tuple[int, ...]
    reasons: dict[int, tuple[str, ...]]
    evidence: FrameEvidence | None
    thresholds: OutlierThresholds
    tested: bool = True
    why_not_tested: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly: indices, one reason list per frame, and the per-frame numbers."""
        out: dict[str, Any] = {
            "indices": [int(i) for i in self.frames],
            "reasons": {str(i): list(self.reasons[i]) for i in self.frames},
            "thresholds": dataclasses.asdict(self.thresholds),
        }
        if not self.tested:
            out["not_tested"] = self.why_not_tested
        if self.evidence is not None:
            ev = self.evidence
            out["per_frame"] = {
                "low_rank_residual": _rounded(ev.residual),
                "low_rank_residual_z": _rounded(ev.residual_z),
                "correspondence": _rounded(ev.score),
                "correspondence_z": _rounded(ev.score_z),
                "displacement_mm": _rounded(ev.displacement_mm),
                "displacement_z": _rounded(ev.displacement_z),
            }
        return out


def _rounded(values: np.ndarray | None) -> list[float | None] | None:
    if values is None:
        return None
    return [None if not np.isfinite(v) else round(float(v), 4) for v in np.asarray(values, np.float64)]


#: How far around a user's heart mask the evidence is read (mm). The mask's own pixels (blood
#: pools and myocardium) hold too few structures: there a frame whose blood and muscle signals
#: cross is nearly flat, its normalised residual is noise, and the calibration phantoms gave 69
#: false alarms in 132 series read in the labels alone, 1 read with this margin.
HEART_MARGIN_MM = 15.0
#: Without a mask, the central box's pixels brighter than this share of the box's bright end
#: (the body, not the air): air carries only noise, which made the null-crossing frames of
#: MOLLI and the shortest saturation of SASHA look unlike the rest (benchmarks/bench_outliers.py).
BODY_FRACTION = 0.1


def outlier_region(shape: tuple[int, int], labels: Any = None, *, spacing_mm: SequenceType[float] | None = None,
                   frames: Any = None) -> tuple[np.ndarray, str]:
    """Where the outlier evidence is read, and its name.

    With a heart mask (``labels``; a stack: any frame), its labels and :data:`HEART_MARGIN_MM`
    around them; without one, the central box (:func:`.metrics.default_roi`), restricted to the
    body (pixels whose brightest frame reaches :data:`BODY_FRACTION` of the box's 99th
    percentile) when the ``frames`` are given.
    """
    from scipy import ndimage

    from ..metrics import default_roi

    if labels is not None:
        mask = np.asarray(labels) != 0
        if mask.ndim == 3:
            mask = mask.any(axis=0)
        if mask.shape == tuple(shape) and mask.any():
            sampling = (1.0, 1.0) if spacing_mm is None else tuple(float(s) for s in spacing_mm)
            near = ndimage.distance_transform_edt(~mask, sampling=sampling) <= HEART_MARGIN_MM
            return near, f"heart mask + {HEART_MARGIN_MM:g} mm"
    box = default_roi(tuple(shape))
    if frames is not None:
        brightest = np.nan_to_num(np.asarray(frames, np.float32)).max(axis=0)
        if brightest.shape == tuple(shape):
            body = box & (brightest >= BODY_FRACTION * float(np.percentile(brightest[box], 99)))
            if body.sum() >= 0.1 * box.sum():  # a region of its own, not a few bright pixels
                return body, "central box (body)"
    return box, "central box"


def robust_z(values: Any, floor: float) -> np.ndarray:
    """``(v - median) / max(1.4826 MAD, floor)``: how far each value is from the others.

    ``floor`` keeps a series whose frames agree to the last digit (MAD ~ 0) from turning
    noise into large z-scores.
    """
    v = np.asarray(values, np.float64)
    median = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - median)))
    return (v - median) / max(mad, float(floor))


def low_rank_residuals(frames: Any, region: Any = None, rank: int = 3) -> np.ndarray:
    """Relative residual of each frame against the rank-``rank`` subspace of the other frames.

    Parameters
    ----------
    frames : array (N, H, W)
        Registered frames (any intensity units; each frame is centred and scaled inside
        ``region`` so a frame's gain or offset changes nothing).
    region : array (H, W) bool, optional
        Pixels to compare (default: the central box, :func:`.metrics.default_roi`).
    rank : int
        Subspace rank (capped at ``N - 2``).

    Returns
    -------
    ndarray (N,)
        ``|x_i - P x_i| / |x_i|`` in [0, 1] (0: the frame is a combination of the others).
    """
    from ..metrics import default_roi

    f = np.asarray(frames, np.float64)
    if f.ndim != 3 or f.shape[0] < 3:
        raise ValueError(f"frames must be (N, H, W) with N >= 3; got shape {f.shape}.")
    m = default_roi(f.shape[1:]) if region is None else np.asarray(region, bool)
    x = f[:, m]
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-12)
    k = int(max(1, min(rank, f.shape[0] - 2)))
    out = np.zeros(f.shape[0])
    for i in range(f.shape[0]):
        others = np.delete(x, i, axis=0)
        # the row space of the other frames via their small Gram matrix (N-1 x N-1): cheap
        gram = others @ others.T
        values, vectors = np.linalg.eigh(gram)
        top = vectors[:, -k:] / np.sqrt(np.maximum(values[-k:], 1e-12))
        basis = top.T @ others  # (k, P) orthonormal rows
        projection = (basis @ x[i]) @ basis
        out[i] = float(np.linalg.norm(x[i] - projection))
    return out


def frame_evidence(
    registered: Any,
    *,
    displacement: Any = None,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    region: Any = None,
    thresholds: OutlierThresholds = OutlierThresholds(),
) -> FrameEvidence:
    """The three signals of every frame (see the module docstring).

    Parameters
    ----------
    registered : array (N, H, W)
    displacement : array (N, 2, H, W), optional
        Pull-back field in pixels; no displacement signal without it.
    scores : array (N, H, W), optional
        Correspondence maps in [0, 1]; no score signal without them.
    spacing_mm : (dy, dx), optional
        For the displacement in mm (pixels when omitted).
    region : array (H, W) bool, optional
        The heart region (default: the central box).
    """
    from ..metrics import default_roi

    f = np.asarray(registered, np.float32)
    m = default_roi(f.shape[1:]) if region is None else np.asarray(region, bool)
    residual = low_rank_residuals(f, m, thresholds.rank)
    residual_z = robust_z(residual, floor=0.01)
    score = score_z = None
    if scores is not None:
        s = np.asarray(scores, np.float32)
        if s.shape == f.shape:
            score = s[:, m].mean(axis=1).astype(np.float64)
            score_z = -robust_z(score, floor=0.01)  # positive = lower than the others
    moved = moved_z = None
    if displacement is not None:
        u = np.asarray(displacement, np.float32)
        dy, dx = (1.0, 1.0) if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
        magnitude = np.hypot(u[:, 0] * dy, u[:, 1] * dx)
        moved = magnitude[:, m].mean(axis=1).astype(np.float64)
        moved_z = robust_z(moved, floor=0.25)
    return FrameEvidence(residual, residual_z, score, score_z, moved, moved_z)


def detect_outlier_frames(
    registered: Any,
    *,
    displacement: Any = None,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    region: Any = None,
    timings_ms: Any = None,
    thresholds: OutlierThresholds = OutlierThresholds(),
) -> OutlierReport:
    """Frames of a registered series that disagree with the rest (see the module docstring).

    Parameters as :func:`frame_evidence`, and ``timings_ms`` (one per frame, optional): a frame
    with a contrast no other frame shares — the only frame without preparation (``inf``, e.g.
    SASHA's first frame) — cannot be predicted from the others, so the residual and score tests
    leave it out (on motion-free SASHA phantoms it had z-scores of 14-15 on both while correct).

    Returns
    -------
    OutlierReport
        ``frames`` (sorted indices) and per frame its reasons, each naming the number, e.g.
        ``"low-rank residual 0.41 (median 0.08, z 12.3)"``.
    """
    f = np.asarray(registered, np.float32)
    if f.ndim != 3:
        raise ValueError(f"registered frames must be (N, H, W); got shape {f.shape}.")
    n = f.shape[0]
    if n < thresholds.min_frames:
        return OutlierReport((), {}, None, thresholds, tested=False,
                             why_not_tested=f"{n} frames: too few to compare a frame with the others (need {thresholds.min_frames})")
    ev = frame_evidence(f, displacement=displacement, scores=scores, spacing_mm=spacing_mm, region=region,
                        thresholds=thresholds)
    return classify_frames(ev, timings_ms=timings_ms, thresholds=thresholds)


def classify_frames(
    evidence: FrameEvidence, *, timings_ms: Any = None, thresholds: OutlierThresholds = OutlierThresholds()
) -> OutlierReport:
    """The rule of :func:`detect_outlier_frames` applied to evidence already measured.

    Apart so that thresholds can be calibrated on stored evidence (``benchmarks/bench_outliers.py
    --rescore``) without registering again.
    """
    ev, t = evidence, thresholds
    n = int(ev.residual.shape[0])
    unique = _unique_contrast(timings_ms, n)
    med_r = float(np.median(ev.residual))
    excess = ev.residual - med_r
    strong_r = ((ev.residual_z > t.residual_z) & (excess > t.min_residual_excess)) | (
        (ev.residual_z > t.large_residual_z) & (excess > t.large_residual_excess))
    weak_r = (ev.residual_z > t.weak_z) & (excess > t.min_residual_excess)
    strong_s = weak_s = np.zeros(n, bool)
    if ev.score is not None:
        med_s = float(np.median(ev.score))
        drop = med_s - ev.score
        strong_s = (ev.score_z > t.score_z) & (drop > t.min_score_drop)
        weak_s = (ev.score_z > t.weak_z) & (drop > t.min_score_drop)
    weak_d = np.zeros(n, bool)
    if ev.displacement_mm is not None:
        med_d = float(np.median(ev.displacement_mm))
        weak_d = (ev.displacement_z > t.weak_z) & (ev.displacement_mm - med_d > t.min_displacement_excess_mm)
    votes = weak_r.astype(int) + weak_s.astype(int) + weak_d.astype(int)
    flagged = (strong_r | strong_s | (votes >= 2)) & ~unique
    reasons: dict[int, tuple[str, ...]] = {}
    for i in np.nonzero(flagged)[0]:
        why = []
        if weak_r[i] or strong_r[i]:
            why.append(f"low-rank residual {ev.residual[i]:.2f} (median {med_r:.2f}, z {ev.residual_z[i]:.1f})")
        if weak_s[i]:
            why.append(f"low correspondence {ev.score[i]:.2f} (median {float(np.median(ev.score)):.2f}, z {ev.score_z[i]:.1f})")
        if weak_d[i]:
            why.append(f"moved {ev.displacement_mm[i]:.1f} mm (median {float(np.median(ev.displacement_mm)):.1f} mm, "
                       f"z {ev.displacement_z[i]:.1f})")
        reasons[int(i)] = tuple(why)
    return OutlierReport(tuple(int(i) for i in np.nonzero(flagged)[0]), reasons, ev, thresholds)


def _unique_contrast(timings_ms: Any, n: int) -> np.ndarray:
    """Frames whose timing is non-finite (no preparation) and shared by no other frame."""
    out = np.zeros(n, bool)
    if timings_ms is None:
        return out
    t = np.asarray(timings_ms, np.float64).reshape(-1)
    if t.size != n:
        return out
    infinite = ~np.isfinite(t)
    if infinite.sum() == 1:
        out |= infinite
    return out


def parse_exclude_frames(spec: Any, n_frames: int, *, flag: str = "--exclude-frames") -> str | tuple[int, ...]:
    """``"auto"``, ``"none"`` or ``"I,J,..."`` (0-based frames) checked against ``n_frames``.

    Returns ``"auto"`` or the tuple of frames to leave out (empty for ``"none"``).

    Raises
    ------
    ValueError
        A frame that is not an integer or outside ``0..n_frames-1``, with the flag named.
    """
    if spec is None:
        return "auto"
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("auto", ""):
            return "auto"
        if text == "none":
            return ()
        parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    else:
        parts = list(spec)
    frames = []
    for part in parts:
        try:
            value = int(str(part).strip())
        except ValueError:
            raise ValueError(f"{flag} takes auto, none or frame numbers like 3,7; got {spec!r}.") from None
        if not 0 <= value < n_frames:
            raise ValueError(f"{flag}: frame {value} is outside the frames 0..{n_frames - 1}; frames are 0-based.")
        frames.append(value)
    return tuple(sorted(set(frames)))


def frames_to_keep(n_frames: int, exclude: SequenceType[int], min_frames: int) -> tuple[tuple[int, ...], str | None]:
    """The frames a fit keeps when ``exclude`` is left out, unless too few would remain.

    Returns the kept frames and, when the exclusion was not applied, why (then all are kept).
    """
    exclude = sorted(set(int(i) for i in exclude))
    kept = tuple(i for i in range(n_frames) if i not in exclude)
    if exclude and len(kept) < min_frames:
        return tuple(range(n_frames)), (f"leaving out frames {', '.join(map(str, exclude))} would keep {len(kept)} "
                                         f"of {n_frames} frames, fewer than the {min_frames} the model needs; all are fitted")
    return kept, None


def auto_exclusion(outlier_frames: SequenceType[int], n_frames: int, n_params: int) -> tuple[tuple[int, ...], str]:
    """What ``--exclude-frames auto`` leaves out of a fit of a model with ``n_params`` parameters.

    The outlier frames, when at least ``n_params + 2`` frames remain (two residual degrees of
    freedom for the fit's SD); else none. Returns the frames to leave out and a sentence for
    the user.
    """
    outliers = sorted(set(int(i) for i in outlier_frames))
    if not outliers:
        return (), "no outlier frames: every frame is fitted"
    kept, why_not = frames_to_keep(n_frames, outliers, n_params + 2)
    if why_not is not None:
        return (), why_not
    return tuple(outliers), (f"outlier frames {', '.join(map(str, outliers))} left out of the fit; "
                             f"fitted frames {', '.join(map(str, kept))}")
