"""Export everything a user needs to analyse a registration elsewhere.

One call, :func:`export_registration`, writes any of these into a folder:

================  =====================================================================
item              files
================  =====================================================================
``stack``         ``registered.tif``: ImageJ TIFF, float32, timings and spacing kept
``nifti``         ``registered.nii.gz`` + ``registered.json`` sidecar (timings, spacing)
``displacement``  ``displacement.npy`` ``(N, 2, H, W)`` float32 pixels ``(dy, dx)``;
                  ``displacement.nii.gz`` (mm, vector in dim 5); ``displacement.json``
``jacobian``      ``jacobian.tif``: ``det(I + ∇u)`` per frame ``(N, H, W)``
``maps``          ``t1_raw.tif``, ``r2_raw.tif``, ``t1_sd_raw.tif`` and the same for
                  ``registered`` (T1 and SD in ms), for the fits given
``qc``            ``qc.json`` (run summary, Jacobian statistics, per-frame table and flags,
                  TRE and Dice when available) and ``qc_frames.csv``
``landmarks``     ``landmarks.csv`` (as clicked), ``landmarks_common.csv`` (mapped to the
                  common grid), ``tre.csv`` (per landmark before / after, mm)
``dice``          ``dice.csv``: all-pair Dice per label before / after
``report``        ``report.png`` or ``report.pdf``: the one-page QC report
``record``        ``run.json``: software version, engine, weights hash, parameters, device,
                  input, time stamp, environment and the SHA-256 of every exported file
================  =====================================================================

``items="all"`` writes every item whose inputs are there (``maps`` needs T1 maps,
``landmarks`` a landmark table, ``dice`` labels, ``qc`` and ``report`` the raw frames) and
lists the others in :attr:`ExportResult.skipped`; naming an item whose input is missing is an
error that says what to pass.

Everything is computed first, then written through :func:`napari_any2reg.io.atomic_write_folder`:
the files appear together or not at all, an existing file is only replaced with
``overwrite=True``, and a failure (a writer error, a full disk, a folder that cannot be made)
leaves no partial file behind.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import platform
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .landmarks import (
    DiceReport,
    LandmarkTable,
    TREReport,
    dice_before_after,
    landmarks_csv_text,
    landmarks_to_common,
    tre_before_after,
)
from .sequence import Sequence

__all__ = [
    "EXPORT_ITEMS",
    "ExportResult",
    "parse_export_items",
    "planned_files",
    "t1_maps_from_fit",
    "qc_metrics",
    "run_record",
    "export_registration",
    "export_result",
]

#: What each export item writes (the keys are the names the CLI and the widget use).
EXPORT_ITEMS: dict[str, str] = {
    "stack": "registered frames as TIFF (timings and spacing kept)",
    "nifti": "registered frames as NIfTI + JSON sidecar",
    "displacement": "displacement field (.npy in pixels, NIfTI in mm)",
    "jacobian": "Jacobian determinant maps (TIFF)",
    "maps": "T1, R² and T1 SD maps before/after (TIFF), when fitted",
    "qc": "QC metrics (JSON and per-frame CSV)",
    "landmarks": "landmarks and TRE (CSV)",
    "dice": "all-pair Dice per label (CSV)",
    "report": "one-page QC report (PNG or PDF)",
    "record": "run record (JSON: version, engine, weights, parameters, device, input)",
}

#: Fit maps exported per role: key -> (file prefix, quantity, unit).
MAP_FILES = {"t1": ("t1", "T1", "ms"), "r2": ("r2", "R2", ""), "t1_sd": ("t1_sd", "T1 SD", "ms")}

MAP_ROLES = ("raw", "registered")


def parse_export_items(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``"all"``, ``"stack,qc"`` or a list of names to a tuple of item names.

    ``"all"`` (alone or in the list) stands for every item (:data:`EXPORT_ITEMS` order).

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if spec is None:
        return ()
    names = [s.strip().lower() for s in (spec.replace(";", ",").split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if "all" in names:
        return ("all",)
    unknown = [n for n in names if n not in EXPORT_ITEMS]
    if unknown:
        raise ValueError(
            f"unknown export item(s) {', '.join(map(repr, unknown))}; choose from all, {', '.join(EXPORT_ITEMS)}."
        )
    return tuple(n for n in EXPORT_ITEMS if n in names)


def planned_files(
    items: Iterable[str], *, t1_roles: Iterable[str] = MAP_ROLES, report_format: str = "png"
) -> list[str]:
    """File names the given (resolved) items write: used to refuse an overwrite up front."""
    names: list[str] = []
    for item in items:
        if item == "stack":
            names.append("registered.tif")
        elif item == "nifti":
            names += ["registered.nii.gz", "registered.json"]
        elif item == "displacement":
            names += ["displacement.npy", "displacement.nii.gz", "displacement.json"]
        elif item == "jacobian":
            names.append("jacobian.tif")
        elif item == "maps":
            names += [f"{MAP_FILES[k][0]}_{role}.tif" for role in t1_roles for k in MAP_FILES]
        elif item == "qc":
            names += ["qc.json", "qc_frames.csv"]
        elif item == "landmarks":
            names += ["landmarks.csv", "landmarks_common.csv", "tre.csv"]
        elif item == "dice":
            names.append("dice.csv")
        elif item == "report":
            names.append(f"report.{report_format}")
        elif item == "record":
            names.append("run.json")
    return names


def t1_maps_from_fit(fit: Any) -> dict[str, np.ndarray]:
    """``{"t1", "r2", "t1_sd"}`` maps of a :class:`~napari_any2reg.core.mapping.T1FitResult`."""
    return {"t1": fit.t1_ms, "r2": fit.r_squared, "t1_sd": fit.t1_sd_ms}


# ====================================================================== results
@dataclasses.dataclass
class ExportResult:
    """What :func:`export_registration` wrote.

    Attributes
    ----------
    folder : Path
    files : list of Path
        Every written file, sorted by name.
    items : tuple of str
        The items written.
    skipped : dict of str to str
        Items left out of ``"all"`` and why.
    qc : dict or None
        The QC metrics (as in ``qc.json``) when computed.
    tre : TREReport or None
    dice : DiceReport or None
    record : dict or None
        The run record (as in ``run.json``).
    """

    folder: Path
    files: list[Path]
    items: tuple[str, ...]
    skipped: dict[str, str]
    qc: dict[str, Any] | None = None
    tre: TREReport | None = None
    dice: DiceReport | None = None
    record: dict[str, Any] | None = None

    def summary(self) -> str:
        """One line for a status bar or the terminal."""
        text = f"wrote {len(self.files)} files ({', '.join(self.items)}) to {self.folder}"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{k} ({v})" for k, v in self.skipped.items())
        return text


# ====================================================================== pieces
def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy → Python, non-finite floats → None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        return _clean(value.item())
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
    table = frame_qc_table(raw.frames, registered.frames, u, template=template, scores=correspondence,
                           spacing_mm=spacing, det=det)
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
    return _clean(metrics), table, summary


def _qc_csv_text(table: Any) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [attr for attr, _, _ in table.COLUMNS]
    writer.writerow(columns + ["flagged", "reasons"])
    for row in table.rows:
        cells = [getattr(row, c) for c in columns]
        writer.writerow([c if isinstance(c, int) else repr(float(c)) for c in cells] + [int(row.flagged), "; ".join(row.reasons)])
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        ``RegistrationResult.summary()`` (or the registered layer's ``any2reg_result``).
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
        "input": {
            "path": None if path is None else str(path),
            "name": source.name,
            "kind": source.kind,
            "n_frames": source.n_frames,
            "shape": list(source.shape),
            "spacing_mm": list(source.spacing_mm),
            "timings_ms": None if source.timings_ms is None else [v if math.isfinite(v) else "inf" for v in source.timings_ms.tolist()],
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
    return _clean(record)


# ====================================================================== the export
def _as_sequence(value: Any, name: str, like: Sequence | None = None) -> Sequence:
    if isinstance(value, Sequence):
        return value
    if like is not None:
        return like.replace(frames=np.asarray(value, np.float32), name=name)
    return Sequence(np.asarray(value, np.float32), name=name)


def _resolve_items(
    requested: tuple[str, ...], available: Mapping[str, str | None]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Items to write and items skipped (with why), from a request and what is missing per item."""
    if requested == ("all",):
        chosen = tuple(item for item in EXPORT_ITEMS if available.get(item) is None)
        skipped = {item: str(available[item]) for item in EXPORT_ITEMS if available.get(item) is not None}
        return chosen, skipped
    missing = [(item, available[item]) for item in requested if available.get(item) is not None]
    if missing:
        item, why = missing[0]
        raise ValueError(f"cannot export {item!r}: {why}")
    return requested, {}


def export_registration(
    folder: Any,
    registered: Sequence | np.ndarray,
    displacement: Any,
    *,
    raw: Sequence | np.ndarray | None = None,
    items: str | Iterable[str] = "all",
    info: Mapping[str, Any] | None = None,
    template: Any = None,
    correspondence: Any = None,
    landmarks: LandmarkTable | None = None,
    labels: Any = None,
    t1_maps: Mapping[str, Mapping[str, Any]] | None = None,
    input_path: Any = None,
    report_format: str = "png",
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    command: Any = None,
    overwrite: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> ExportResult:
    """Write the chosen export items of one registration into ``folder`` (all or nothing).

    Parameters
    ----------
    folder : str or Path
        Output folder (created when missing; removed again if the export fails).
    registered : Sequence or array (N, H, W)
        The registered frames (a Sequence keeps timings and spacing in the files).
    displacement : array (N, 2, H, W)
        Pull-back field in pixels ``(dy, dx)``.
    raw : Sequence or array (N, H, W), optional
        The frames before registration (needed by ``qc`` and ``report``).
    items : "all", a comma-separated string, or a list of names
        See :data:`EXPORT_ITEMS`.
    info : dict, optional
        ``RegistrationResult.summary()``: engine, device, seconds, params (incl. ``weights_sha256``).
    template, correspondence : arrays, optional
        The run's template ``(H, W)`` and correspondence maps ``(N, H, W)`` (QC table).
    landmarks : LandmarkTable, optional
        Points clicked on the raw frames (``landmarks`` item; TRE in ``qc`` and ``report``).
        A point placed twice on one frame is an error.
    labels : array (N, H, W) of int, optional
        A segmentation of every raw frame (``dice`` item).
    t1_maps : dict, optional
        ``{"raw": {"t1": ..., "r2": ..., "t1_sd": ...}, "registered": {...}}`` (``maps`` item;
        :func:`t1_maps_from_fit` converts a fit).
    input_path : str, optional
        For the run record (default: the raw sequence's source file).
    report_format : {"png", "pdf"}
    extra_files : dict name -> writer(path), optional
        More files written in the same all-or-nothing unit (the CLI's ``metrics.json``).
    command : list of str, optional
        Command line for the run record.
    overwrite : bool
        Replace existing files. Default: refuse (``FileExistsError``) before writing anything.
    progress : callable(fraction, message), optional

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        An unknown item, an item whose input is missing, shapes that do not match.
    FileExistsError, NotADirectoryError, PermissionError, OSError
        From the file system; nothing is left behind.
    """
    from .report import REPORT_FORMATS

    report = progress or (lambda fraction, message: None)
    folder = Path(folder)
    u = np.asarray(displacement, np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"displacement must be (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}.")
    registered = _as_sequence(registered, "registered")
    if registered.frames.shape != (u.shape[0],) + u.shape[2:]:
        raise ValueError(f"registered frames {registered.frames.shape} and displacement {u.shape} do not match.")
    if raw is not None:
        raw = _as_sequence(raw, "raw", like=registered)
        if raw.frames.shape != registered.frames.shape:
            raise ValueError(f"raw frames {raw.frames.shape} and registered frames {registered.frames.shape} do not match.")
    report_format = str(report_format).lower()
    if report_format not in REPORT_FORMATS:
        raise ValueError(f"report_format must be one of {', '.join(REPORT_FORMATS)}; got {report_format!r}.")
    t1_maps = {role: dict(maps) for role, maps in (t1_maps or {}).items() if maps}
    bad_roles = [role for role in t1_maps if role not in MAP_ROLES]
    if bad_roles:
        raise ValueError(f"t1_maps roles are {', '.join(MAP_ROLES)}; got {', '.join(bad_roles)}.")

    need_raw = "the raw (unregistered) frames are needed; give the source sequence (CLI: it is read from INPUT)"
    available = {
        "maps": None if t1_maps else "no T1 maps were fitted (CLI: a sequence with timings and a T1 model; napari: run T1 mapping first)",
        "qc": None if raw is not None else need_raw,
        "report": None if raw is not None else need_raw,
        "landmarks": None if landmarks is not None else "no landmarks given (CLI: --landmarks CSV; napari: choose a Points layer)",
        "dice": None if labels is not None else "no labels given (a Labels layer (N, H, W) with a segmentation of every frame)",
    }
    chosen, skipped = _resolve_items(parse_export_items(items), available)
    if not chosen and not extra_files:
        raise ValueError("nothing to export; choose at least one item.")

    # ---------------------------------------------------------------- compute (nothing written yet)
    report(0.0, "checking the output folder")
    planned = planned_files(chosen, t1_roles=tuple(r for r in MAP_ROLES if r in t1_maps), report_format=report_format)
    planned += list(extra_files or {})
    if not overwrite and folder.is_dir():
        existing = [str(folder / n) for n in planned if (folder / n).exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} already exist; tick overwrite (CLI: --overwrite) or choose another folder.")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot export into {folder}: it is a file, not a folder; choose another output folder.")

    spacing = registered.spacing_mm
    tre = dice = None
    if landmarks is not None:
        report(0.05, "landmark TRE")
        tre = tre_before_after(landmarks, u, n_frames=u.shape[0])
    if labels is not None:
        report(0.1, "all-pair Dice")
        dice = dice_before_after(labels, u)
    qc = table = summary = None
    if raw is not None and ("qc" in chosen or "report" in chosen or "record" in chosen):
        report(0.15, "QC metrics")
        qc, table, summary = qc_metrics(raw, registered, u, info=info, template=template,
                                        correspondence=correspondence, tre=tre, dice=dice)
    det = None
    if "jacobian" in chosen:
        from .spatial import jacobian_determinant

        det = np.asarray(jacobian_determinant(u), np.float32)
    figure = None
    if "report" in chosen:
        report(0.35, "QC report")
        from .._version import __version__
        from .report import report_figure

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        source = raw.metadata.get("source") if raw is not None else None
        figure = report_figure(
            raw.frames, registered.frames, u, spacing_mm=spacing, name=raw.name, kind=raw.kind,
            timings_ms=raw.timings_ms, info=info, summary=summary,
            flagged_frames=table.flagged_frames if table is not None else None, tre=tre, dice=dice,
            t1_maps=t1_maps, footer=f"napari-any2reg {__version__} · {stamp}" + (f" · {source}" if source else ""),
        )

    # ---------------------------------------------------------------- write (all or nothing)
    from ..io import atomic_write_folder, save_displacement, save_map_tiff, write_nifti, write_tiff
    from ..io.fields import displacement_sidecar

    def json_text(content: Any) -> str:
        return json.dumps(_clean(content), indent=2, allow_nan=False) + "\n"

    def write_all(staging: Path) -> None:
        steps = len(chosen) + 1
        for k, item in enumerate(chosen):
            report(0.5 + 0.45 * k / steps, f"writing {item}")
            if item == "stack":
                write_tiff(staging / "registered.tif", registered)
            elif item == "nifti":
                write_nifti(staging / "registered.nii.gz", registered)
            elif item == "displacement":
                save_displacement(staging / "displacement.npy", u)
                save_displacement(staging / "displacement.nii.gz", u, spacing)
                (staging / "displacement.json").write_text(json_text(displacement_sidecar(u, spacing)), encoding="utf-8")
            elif item == "jacobian":
                folding = 100.0 * float((det <= 0).mean())
                save_map_tiff(staging / "jacobian.tif", det, spacing,
                              {"quantity": "det(I + grad u)", "unit": "", "folding_percent": folding,
                               "note": "per frame on the common grid; <= 0 is folding"})
            elif item == "maps":
                for role in MAP_ROLES:
                    for key, (prefix, quantity, unit) in MAP_FILES.items():
                        array = t1_maps.get(role, {}).get(key)
                        if role in t1_maps and array is not None:
                            save_map_tiff(staging / f"{prefix}_{role}.tif", array, spacing,
                                          {"quantity": quantity, "unit": unit, "role": role,
                                           "frames": "raw" if role == "raw" else "registered (common grid)"})
            elif item == "qc":
                (staging / "qc.json").write_text(json_text(qc), encoding="utf-8")
                (staging / "qc_frames.csv").write_text(_qc_csv_text(table), encoding="utf-8")
            elif item == "landmarks":
                (staging / "landmarks.csv").write_text(landmarks_csv_text(landmarks), encoding="utf-8")
                common = landmarks_to_common(landmarks, u)
                (staging / "landmarks_common.csv").write_text(landmarks_csv_text(common), encoding="utf-8")
                (staging / "tre.csv").write_text(tre.csv_text(), encoding="utf-8")
            elif item == "dice":
                (staging / "dice.csv").write_text(dice.csv_text(), encoding="utf-8")
            elif item == "report":
                from .report import save_report

                save_report(staging / f"report.{report_format}", figure, report_format)
        for name, writer in (extra_files or {}).items():
            writer(staging / name)
        if "record" in chosen:
            report(0.95, "run record")
            hashes = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
            record = run_record(info, registered, raw=raw, input_path=input_path, items=chosen, files=hashes, command=command)
            if qc is not None:
                record["qc"] = {k: qc[k] for k in ("folding_percent", "alignment_score_before", "alignment_score_after", "flagged_frames")}
            state["record"] = record
            (staging / "run.json").write_text(json_text(record), encoding="utf-8")

    state: dict[str, Any] = {}
    files = atomic_write_folder(folder, write_all, expected=planned, overwrite=overwrite)
    report(1.0, "done")
    return ExportResult(folder=folder, files=files, items=chosen, skipped=skipped, qc=qc, tre=tre, dice=dice,
                        record=state.get("record"))


def export_result(result: Any, folder: Any, **kwargs: Any) -> ExportResult:
    """:func:`export_registration` for a :class:`~napari_any2reg.core.registration.RegistrationResult`.

    The raw frames, template, correspondence maps and run summary come from the result;
    keyword arguments are passed on (``items``, ``landmarks``, ``labels``, ``t1_maps``...).
    """
    kwargs.setdefault("raw", result.sequence)
    kwargs.setdefault("info", result.summary())
    kwargs.setdefault("template", result.template)
    kwargs.setdefault("correspondence", (result.extras or {}).get("correspondence"))
    return export_registration(folder, result.registered_sequence(), result.displacement, **kwargs)
