"""What an export contains, computed without touching a file.

The export folder itself (items, planning, atomic writing) is
:mod:`napari_any2reg.pipeline.export`; this module holds the pure pieces it assembles, so that
the numbers in ``qc.json`` and ``run.json`` can be computed (and tested) from arrays alone:

* :func:`qc_metrics` — run summary, Jacobian statistics, the per-frame QC table, TRE and Dice;
* :func:`qc_csv_text` — the per-frame table as CSV;
* :func:`run_record` — software, engine, weights hash, parameters, device, input, environment;
* :func:`t1_maps_from_fit` and :data:`MAP_FILES` — the fitted maps and their file names;
* :func:`json_safe` — numpy and non-finite values made JSON-safe (``NaN`` -> ``null``).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import math
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from .sequence import Sequence

if TYPE_CHECKING:
    from .landmarks import DiceReport, TREReport

__all__ = [
    "MAP_FILES",
    "MAP_ROLES",
    "t1_maps_from_fit",
    "json_safe",
    "qc_metrics",
    "qc_csv_text",
    "run_record",
]

#: Fit maps exported per role: key -> (file prefix, quantity, unit).
MAP_FILES = {"t1": ("t1", "T1", "ms"), "r2": ("r2", "R2", ""), "t1_sd": ("t1_sd", "T1 SD", "ms")}

#: The frames a map was fitted on: before and after registration.
MAP_ROLES = ("raw", "registered")


def t1_maps_from_fit(fit: Any) -> dict[str, np.ndarray]:
    """``{"t1", "r2", "t1_sd"}`` maps of a :class:`~napari_any2reg.core.mapping.T1FitResult`."""
    return {"t1": fit.t1_ms, "r2": fit.r_squared, "t1_sd": fit.t1_sd_ms}


# ====================================================================== pieces
def json_safe(value: Any) -> Any:
    """JSON-safe copy: numpy → Python, non-finite floats → None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def qc_metrics(
    raw: Sequence,
    registered: Sequence,
    displacement: np.ndarray,
    *,
    info: Mapping[str, Any] | None = None,
    template: Any = None,
    correspondence: Any = None,
    tre: TREReport | None = None,
    dice: DiceReport | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """QC numbers of a run: ``(metrics dict, QCTable, RunSummary)``.

    The dict holds the run summary (folding, model-free alignment before → after), Jacobian
    statistics, the per-frame table with flags (:func:`.qc.frame_qc_table`), and TRE / Dice
    when given.
    """
    from .qc import frame_qc_table, log_jacobian_std, jacobian_gradient_norm, run_summary
    from .spatial import jacobian_determinant

    u = np.asarray(displacement, np.float32)
    spacing = registered.spacing_mm
    det = np.asarray(jacobian_determinant(u))
    timings = raw.timings_ms if raw.timings_ms is not None else registered.timings_ms
    table = frame_qc_table(raw.frames, registered.frames, u, template=template, scores=correspondence,
                           spacing_mm=spacing, det=det, timings_ms=timings)
    summary = run_summary(raw.frames, registered.frames, u, dict(info or {}))
    metrics = {
        "name": registered.name,
        "engine": summary.engine,
        "device": summary.device,
        "seconds": summary.seconds,
        "n_frames": int(u.shape[0]),
        "shape": list(u.shape[-2:]),
        "spacing_mm": list(spacing),
        "folding_percent": summary.folding_percent,
        "alignment_score_before": summary.alignment_before,
        "alignment_score_after": summary.alignment_after,
        "alignment_score_definition": "share of variance in the first 2 principal components, central ROI (higher = better aligned)",
        "jacobian": {
            "min": float(det.min()),
            "max": float(det.max()),
            "folded_pixels": int((det <= 0).sum()),
            "log_jacobian_std_mean": float(np.mean(log_jacobian_std(det))),
            "jacobian_gradient_mean": float(np.mean(jacobian_gradient_norm(det))),
        },
        "max_displacement_mm": float(np.max(table.column("max_displacement_mm"))),
        "thresholds": dataclasses.asdict(table.thresholds),
        "flagged_frames": table.flagged_frames,
        "frames": table.to_records(),
        "tre": tre.to_dict() if tre is not None else None,
        "dice": dice.to_dict() if dice is not None else None,
        "displacement_convention": "pixels (dy, dx), pull-back: registered_i(x) = frame_i(x + u_i(x))",
    }
    return json_safe(metrics), table, summary


def qc_csv_text(table: Any) -> str:
    """The per-frame QC table (:func:`.qc.frame_qc_table`) as CSV text, flags and reasons last."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [attr for attr, _, _ in table.COLUMNS]
    writer.writerow(columns + ["flagged", "reasons"])
    for row in table.rows:
        cells = [getattr(row, c) for c in columns]
        writer.writerow([c if isinstance(c, int) else repr(float(c)) for c in cells] + [int(row.flagged), "; ".join(row.reasons)])
    return buffer.getvalue()


def run_record(
    info: Mapping[str, Any] | None,
    registered: Sequence,
    *,
    raw: Sequence | None = None,
    input_path: Any = None,
    items: Iterable[str] = (),
    files: Mapping[str, str] | None = None,
    command: Any = None,
    created: _dt.datetime | None = None,
) -> dict[str, Any]:
    """What is needed to reproduce a result: software, engine, weights, parameters, device, input.

    Parameters
    ----------
    info : dict
        ``RegistrationResult.summary()`` (or the registered layer's ``any2reg_result``): its
        ``engine_options`` are recorded, and ``mask_path`` (the file of the registration mask,
        added by :func:`napari_any2reg.pipeline.series.register_series`) under ``input``.
    registered, raw : Sequence
    input_path : str, optional
        Default: the raw sequence's ``metadata["source"]`` (set by the readers).
    items : iterable of str
        Exported items.
    files : dict of name -> sha256
    command : list of str, optional
        The command line (CLI).
    """
    import torch

    from .._version import __version__

    info = dict(info or {})
    params = dict(info.get("params") or {})
    source = raw if raw is not None else registered
    path = input_path if input_path is not None else source.metadata.get("source")
    created = created or _dt.datetime.now(_dt.timezone.utc)
    record = {
        "software": "napari-any2reg",
        "version": __version__,
        "created_utc": created.isoformat(timespec="seconds"),
        "engine": info.get("engine"),
        "weights_sha256": params.get("weights_sha256"),
        "params": params,
        "device": info.get("device"),
        "seconds": info.get("seconds"),
        "reference_frame": info.get("reference_frame"),
        "engine_options": dict(info.get("engine_options") or {}),
        "input": {
            "path": None if path is None else str(path),
            "name": source.name,
            "kind": source.kind,
            "n_frames": source.n_frames,
            "shape": list(source.shape),
            "spacing_mm": list(source.spacing_mm),
            "timings_ms": None if source.timings_ms is None else [v if math.isfinite(v) else "inf" for v in source.timings_ms.tolist()],
            "mask": info.get("mask_path"),
        },
        "displacement_convention": "pixels (dy, dx), pull-back: registered_i(x) = frame_i(x + u_i(x))",
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "command": None if command is None else [str(c) for c in command],
        "exported": {"items": list(items), "sha256": dict(files or {})},
    }
    return json_safe(record)
