"""The run summary of a registration and everything at once: :func:`run_summary` (alignment
before / after, folding) and :func:`review_registration`, which the Review dock calls for the
overlays, the QC table and the summary in one pass."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence as SequenceType

import numpy as np

from ..metrics import alignment_score
from ..spatial import jacobian_determinant
from ._inputs import _as_displacement, _as_frames, _check_same_grid, _roi
from .deformation import folding_mask
from .intensities import correspondence_maps, frame_templates, sequence_template, template_difference
from .table import QCTable, QCThresholds, frame_qc_table


# ------------------------------------------------------------------ run summary
@dataclasses.dataclass(frozen=True)
class RunSummary:
    """Headline numbers of one run; ``str()`` gives the one-line summary."""

    engine: str
    device: str
    seconds: float | None
    folding_percent: float
    alignment_before: float
    alignment_after: float

    def line(self) -> str:
        seconds = "?" if self.seconds is None else f"{self.seconds:.1f} s"
        return (f"{self.engine} on {self.device}, {seconds}; folding {self.folding_percent:.2f} %; "
                f"alignment {self.alignment_before:.3f} → {self.alignment_after:.3f}")

    def __str__(self) -> str:
        return self.line()


def run_summary(raw: Any, registered: Any, displacement: Any, info: dict[str, Any] | None = None,
                roi: Any = None) -> RunSummary:
    """Engine, device and time from ``info`` (a ``RegistrationResult.summary()``), folding from
    the field, and the model-free alignment score (:func:`.metrics.alignment_score`) before → after.
    """
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    u = _as_displacement(displacement)
    _check_same_grid(a, u, "raw frames")
    m = _roi(roi, a.shape[1:])
    info = dict(info or {})
    seconds = info.get("seconds")
    return RunSummary(
        engine=str(info.get("engine", "unknown engine")),
        device=str(info.get("device", "unknown device")),
        seconds=None if seconds is None else float(seconds),
        folding_percent=100.0 * float(folding_mask(u).mean()),
        alignment_before=alignment_score(a, m),
        alignment_after=alignment_score(b, m),
    )


# ------------------------------------------------------------------ everything at once
@dataclasses.dataclass
class Review:
    """All per-pixel review maps of one run, plus its QC table and summary."""

    jacobian: np.ndarray  # (N, H, W) det(I + ∇u)
    folding: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N, H, W) in [0, 1]
    template: np.ndarray  # (H, W)
    difference_before: np.ndarray  # (N, H, W) raw - frame template
    difference_after: np.ndarray  # (N, H, W) registered - frame template
    table: QCTable
    summary: RunSummary


def review_registration(
    raw: Any,
    registered: Any,
    displacement: Any,
    *,
    template: Any = None,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    info: dict[str, Any] | None = None,
    roi: Any = None,
    thresholds: QCThresholds = QCThresholds(),
    difference_rank: int = 2,
    progress: Any = None,
    timings_ms: Any = None,
) -> Review:
    """Compute every review map, the QC table and the run summary in one go.

    ``progress``, if given, is called as ``progress(fraction, message)`` between the steps.
    ``scores`` are the stored correspondence maps (any2reg engines) or ``None``. The
    differences before / after are to :func:`frame_templates` of rank ``difference_rank``
    (the template at each frame's contrast); the QC table correlates with ``template``.
    """
    report = progress or (lambda fraction, message: None)
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    u = _as_displacement(displacement)
    _check_same_grid(a, u, "raw frames")
    _check_same_grid(b, u, "registered frames")
    m = _roi(roi, a.shape[1:])
    report(0.0, "Jacobian determinant")
    det = np.asarray(jacobian_determinant(u))
    report(0.1, "correspondence scores")
    maps = correspondence_maps(a, u, spacing_mm=spacing_mm, stored=scores)
    report(0.6, "template differences")
    t = sequence_template(b) if template is None else np.asarray(template, dtype=np.float32)
    per_frame = frame_templates(b, rank=min(difference_rank, a.shape[0] - 1))
    before, after = template_difference(a, per_frame), template_difference(b, per_frame)
    report(0.8, "QC table")
    table = frame_qc_table(a, b, u, template=t, scores=maps, spacing_mm=spacing_mm, roi=m,
                           thresholds=thresholds, det=det, timings_ms=timings_ms)
    summary = run_summary(a, b, u, info, m)
    report(1.0, "done")
    return Review(jacobian=det.astype(np.float32), folding=det <= 0, scores=maps, template=t,
                  difference_before=before, difference_after=after, table=table, summary=summary)
