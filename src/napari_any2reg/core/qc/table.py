"""The per-frame QC table: the thresholds that flag a frame (:class:`QCThresholds`), one row
per frame (:class:`FrameQC`), the reasons of a flag and :func:`frame_qc_table`, which computes
the rows from the raw and registered frames and the displacement."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence as SequenceType

import numpy as np

from ..spatial import jacobian_determinant
from ._inputs import _as_displacement, _as_frames, _check_same_grid, _roi
from .deformation import displacement_magnitude_mm, jacobian_gradient_norm, log_jacobian_std
from .intensities import correspondence_maps, sequence_template, template_correlation


# ------------------------------------------------------------------ QC table and flags
@dataclasses.dataclass(frozen=True)
class QCThresholds:
    """When a frame is flagged as untrustworthy (``None`` switches a test off).

    Attributes
    ----------
    max_folding_percent : float
        Flag a frame with more folded pixels (% of the field, ``det J <= 0``).
    min_mean_score : float
        Flag a frame whose mean correspondence score inside the ROI is lower.
    min_template_correlation : float
        Flag a frame whose registered image correlates less with the template inside the ROI
        (absolute value: phase-sensitive inversion-recovery frames are negatively correlated by
        nature). Frames near a tissue's null point correlate only ~0.45–0.6 even when perfectly
        aligned (MOLLI / STONE phantoms), hence the low default: the flag is for frames that do
        not resemble the anatomy at all.
    """

    max_folding_percent: float | None = 0.1
    min_mean_score: float | None = 0.5
    min_template_correlation: float | None = 0.3


@dataclasses.dataclass(frozen=True)
class FrameQC:
    """QC numbers of one frame (see :data:`QCTable.COLUMNS` for units)."""

    frame: int
    mean_displacement_mm: float
    max_displacement_mm: float
    folding_percent: float
    log_jacobian_std: float
    jacobian_gradient: float
    mean_score: float
    template_correlation_before: float
    template_correlation: float
    reasons: tuple[str, ...] = ()
    time_ms: float = float("nan")
    jacobian_gradient_mm: float = float("nan")

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def flag_reasons(row: FrameQC, thresholds: QCThresholds = QCThresholds()) -> tuple[str, ...]:
    """Why a frame is untrustworthy under ``thresholds`` (empty when it passes)."""
    reasons = []
    t = thresholds
    if t.max_folding_percent is not None and row.folding_percent > t.max_folding_percent:
        reasons.append(f"folding {row.folding_percent:.2f} % > {t.max_folding_percent:g} %")
    if t.min_mean_score is not None and not row.mean_score >= t.min_mean_score:
        reasons.append(f"score {row.mean_score:.2f} < {t.min_mean_score:g}")
    if t.min_template_correlation is not None and not abs(row.template_correlation) >= t.min_template_correlation:
        reasons.append(f"template correlation |{row.template_correlation:.2f}| < {t.min_template_correlation:g}")
    return tuple(reasons)


@dataclasses.dataclass
class QCTable:
    """Per-frame QC rows with their flags."""

    rows: list[FrameQC]
    thresholds: QCThresholds = QCThresholds()

    #: (attribute, header, format) of the displayed columns, in order.
    COLUMNS = (
        ("frame", "frame", "{:d}"),
        ("time_ms", "TI (ms)", "{:g}"),
        ("mean_displacement_mm", "mean |u| (mm)", "{:.2f}"),
        ("max_displacement_mm", "max |u| (mm)", "{:.2f}"),
        ("folding_percent", "folding (%)", "{:.2f}"),
        ("log_jacobian_std", "std log J", "{:.3f}"),
        ("jacobian_gradient_mm", "|∇J| (1/mm)", "{:.4f}"),
        ("mean_score", "score", "{:.2f}"),
        ("template_correlation_before", "corr. before", "{:.2f}"),
        ("template_correlation", "corr. after", "{:.2f}"),
    )

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """One column over frames as an array."""
        return np.asarray([getattr(row, name) for row in self.rows])

    @property
    def flagged_frames(self) -> list[int]:
        return [row.frame for row in self.rows if row.flagged]

    def with_thresholds(self, thresholds: QCThresholds) -> "QCTable":
        """The same numbers flagged again under new thresholds (no recomputation)."""
        rows = [dataclasses.replace(row, reasons=flag_reasons(row, thresholds)) for row in self.rows]
        return QCTable(rows, thresholds)

    def formatted(self) -> list[list[str]]:
        """Rows as display strings (the :data:`COLUMNS` then the reasons)."""
        return [[_format_cell(fmt, getattr(row, attr)) for attr, _, fmt in self.COLUMNS] + ["; ".join(row.reasons)]
                for row in self.rows]

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-friendly rows (reasons as a list)."""
        return [{**dataclasses.asdict(row), "reasons": list(row.reasons)} for row in self.rows]


def _format_cell(fmt: str, value: Any) -> str:
    """A table cell: "—" for a missing number (NaN), "∞" for no preparation (inf)."""
    if isinstance(value, float) and not isinstance(value, bool):
        if np.isnan(value):
            return "—"
        if np.isinf(value):
            return "∞"
    return fmt.format(value)


def frame_qc_table(
    raw: Any,
    registered: Any,
    displacement: Any,
    *,
    template: Any = None,
    scores: Any = None,
    spacing_mm: SequenceType[float] | None = None,
    roi: Any = None,
    thresholds: QCThresholds = QCThresholds(),
    det: Any = None,
    timings_ms: Any = None,
) -> QCTable:
    """Per-frame QC of a registration.

    Parameters
    ----------
    raw, registered : array (N, H, W)
        Frames before and after registration.
    displacement : array (N, 2, H, W)
        Pull-back field in pixels.
    template : array (H, W), optional
        The run's template; the PCA-weighted mean of the registered frames when omitted.
    scores : array (N, H, W), optional
        Correspondence maps; computed with :func:`correspondence_maps` when omitted.
    spacing_mm : (dy, dx), optional
        For displacements in mm (pixels when omitted).
    roi : array (H, W) bool, optional
        Region for the intensity statistics (default: central box).
    thresholds : QCThresholds
        Flagging rules.
    det : array (N, H, W), optional
        Precomputed Jacobian determinant (saves a recomputation).
    timings_ms : sequence of float, optional
        Inversion / saturation / trigger time of each frame (the table's "TI" column; NaN
        when omitted or of the wrong length).

    All lengths are in mm (``|∇J|`` per mm) when ``spacing_mm`` is given, else in pixels.

    Returns
    -------
    QCTable
    """
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    u = _as_displacement(displacement)
    _check_same_grid(a, u, "raw frames")
    _check_same_grid(b, u, "registered frames")
    m = _roi(roi, a.shape[1:])
    if template is None:
        template = sequence_template(b)
    if scores is None:
        scores = correspondence_maps(a, u, spacing_mm=spacing_mm)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != a.shape:
        raise ValueError(f"scores must be (N, H, W) = {a.shape}; got {scores.shape}.")
    det = np.asarray(jacobian_determinant(u) if det is None else det)
    magnitude = displacement_magnitude_mm(u, spacing_mm)
    folding = 100.0 * (det <= 0).reshape(len(det), -1).mean(axis=1)
    log_std = log_jacobian_std(det)
    grad = jacobian_gradient_norm(det)
    grad_mm = jacobian_gradient_norm(det, spacing_mm) if spacing_mm is not None else grad
    times = np.full(a.shape[0], np.nan)
    if timings_ms is not None and len(timings_ms) == a.shape[0]:
        times = np.asarray(timings_ms, dtype=np.float64)
    corr_before = template_correlation(a, template, m)
    corr_after = template_correlation(b, template, m)
    mean_scores = scores[:, m].mean(axis=1)
    rows = []
    for i in range(a.shape[0]):
        row = FrameQC(
            frame=i,
            mean_displacement_mm=float(magnitude[i].mean()),
            max_displacement_mm=float(magnitude[i].max()),
            folding_percent=float(folding[i]),
            log_jacobian_std=float(log_std[i]),
            jacobian_gradient=float(grad[i]),
            mean_score=float(mean_scores[i]),
            template_correlation_before=float(corr_before[i]),
            template_correlation=float(corr_after[i]),
            time_ms=float(times[i]),
            jacobian_gradient_mm=float(grad_mm[i]),
        )
        rows.append(dataclasses.replace(row, reasons=flag_reasons(row, thresholds)))
    return QCTable(rows, thresholds)
