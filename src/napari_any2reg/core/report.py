"""One-page QC report of a registration (matplotlib, no pyplot: safe in worker threads).

The page answers "can I trust this motion correction?" at a glance:

1. a montage of raw (top) and registered (bottom) frames, same contrast, frames spread over
   the series (the frames a reader would step through);
2. the temporal SD over frames before and after (motion shows as bright edges that should
   fade), and the smallest Jacobian determinant over frames with folded pixels in magenta;
2b. the overlay registry's report panels whose inputs are there (:func:`.overlays.report_overlays`:
   the network's displacement SD, max over frames, in mm), each with a colour bar in its unit;
3. T1 maps before and after, when fitted;
4. a table: folding, model-free alignment before → after, flagged frames, TRE per landmark and
   Dice per label before → after (engine, device, time and weights hash are in the header).

:func:`report_figure` builds the figure; :func:`save_report` writes PNG or PDF.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["REPORT_FORMATS", "montage_frames", "report_rows", "report_figure", "report_bytes"]

#: Formats :func:`save_report` writes.
REPORT_FORMATS = ("png", "pdf")

_A4_PORTRAIT_IN = (8.27, 11.69)

#: T1 maps: pixels whose fit explains less than this share of the signal are not drawn.
_T1_MIN_R2 = 0.8

#: Upper end of the T1 colour scale at most (native myocardium and blood sit well below).
_T1_MAX_SHOWN_MS = 2500.0


def montage_frames(n_frames: int, max_frames: int = 6) -> list[int]:
    """Up to ``max_frames`` frame indices spread evenly over ``n_frames`` (first and last included)."""
    if n_frames <= max_frames:
        return list(range(n_frames))
    return sorted({int(round(v)) for v in np.linspace(0, n_frames - 1, max_frames)})


def _limits(*arrays: np.ndarray, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, np.float64)[np.isfinite(a)].ravel() for a in arrays])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(values.min()), float(values.min()) + 1.0)


def _image(axes: Any, data: np.ndarray, spacing_mm: tuple[float, float], title: str, **kwargs: Any) -> Any:
    h, w = data.shape
    dy, dx = spacing_mm
    shown = axes.imshow(data, extent=(0, w * dx, h * dy, 0), interpolation="nearest", **kwargs)
    axes.set_title(title, fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])
    return shown


def _timing_label(timings: Any, frame: int, kind: str) -> str:
    if timings is None:
        return f"frame {frame}"
    value = float(np.asarray(timings)[frame])
    prefix = {"sasha": "TS", "cine": "t", "perfusion": "t", "asl": "t"}.get(kind, "TI")
    return f"frame {frame}, {prefix} " + ("∞" if math.isinf(value) else f"{value:.0f} ms")


def _reliable_t1(maps: Mapping[str, Any]) -> np.ndarray:
    """The T1 map with poorly fitted pixels (background noise) blanked, so tissue contrast shows."""
    t1 = np.array(maps["t1"], dtype=np.float32, copy=True)
    r2 = maps.get("r2")
    if r2 is not None:
        with np.errstate(invalid="ignore"):
            t1[~(np.asarray(r2) >= _T1_MIN_R2)] = np.nan
    return t1


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.{digits}f}" if math.isfinite(number) else "—"


_VERDICT_COLOURS = {"good": "#c8efc8", "check": "#ffe6a8", "poor": "#f7b8b8"}


def _verdict_box(figure: Any, verdict: Mapping[str, Any]) -> None:
    """The verdict line (level and reasons) in a box coloured by level, under the title."""
    import textwrap

    from .verdict import verdict_line

    text = "\n".join(textwrap.wrap(verdict_line(verdict), 130)[:3])
    figure.text(0.5, 0.925, f"verdict — {text}", ha="center", va="center", fontsize=8, fontweight="bold",
                bbox={"boxstyle": "round,pad=0.4", "facecolor": _VERDICT_COLOURS.get(verdict.get("level"), "white"),
                      "edgecolor": "0.4"})


def report_rows(
    *,
    info: Mapping[str, Any],
    summary: Any = None,
    flagged_frames: list[int] | None = None,
    tre: Any = None,
    dice: Any = None,
) -> list[tuple[str, str, str]]:
    """The table of the report: ``(quantity, before, after)`` rows as text."""
    rows: list[tuple[str, str, str]] = []
    if summary is not None:
        rows.append(("folding (% of pixels, det J ≤ 0)", "", _fmt(summary.folding_percent, 3)))
        rows.append(("alignment (PCA share, higher = better)", _fmt(summary.alignment_before), _fmt(summary.alignment_after)))
    if flagged_frames is not None:
        rows.append(("flagged frames", "", ", ".join(str(f) for f in flagged_frames) or "none"))
    if tre is not None:
        unit = "px" if getattr(tre, "spacing_source", "") == "default" else "mm"
        for row in tre.rows():
            rows.append((f"TRE {row['landmark']} ({unit})", _fmt(row["tre_before_mm"], 2), _fmt(row["tre_after_mm"], 2)))
    if dice is not None:
        for row in dice.rows():
            rows.append((f"Dice {row['name']}", _fmt(row["dice_before"]), _fmt(row["dice_after"])))
    return rows


def report_figure(
    raw: Any,
    registered: Any,
    displacement: Any,
    *,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    name: str = "sequence",
    kind: str = "unknown",
    timings_ms: Any = None,
    info: Mapping[str, Any] | None = None,
    summary: Any = None,
    flagged_frames: list[int] | None = None,
    tre: Any = None,
    dice: Any = None,
    t1_maps: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    segments: Mapping[str, Any] | None = None,
    footer: str = "",
    max_frames: int = 6,
    displacement_sd_mm: Any = None,
) -> Any:
    """Build the one-page report as a :class:`matplotlib.figure.Figure` (A4 portrait).

    Parameters
    ----------
    raw, registered : array (N, H, W)
    displacement : array (N, 2, H, W)
    spacing_mm, name, kind, timings_ms
        Shown in the axes and titles.
    info : dict
        ``RegistrationResult.summary()`` (engine, device, seconds, params...).
    summary : core.qc.RunSummary, optional
        Folding and alignment before → after.
    flagged_frames : list of int, optional
    tre : core.landmarks.TREReport, optional
    dice : core.landmarks.DiceReport, optional
    t1_maps : dict role -> {"t1": (H, W), ...}, optional
        Roles ``"raw"`` and/or ``"registered"``.
    segments : dict, optional
        AHA segment statistics of a map (``pipeline.segments.SegmentAnalysis.summary()``:
        ``level``, ``quantity``, ``unit``, ``segments`` rows): a bullseye and the segment table.
    footer : str
        Small print at the bottom (version, date, input).
    displacement_sd_mm : array (N, H, W), optional
        The network engines' per-pixel displacement SD (mm): its overlay panel.
    """
    from matplotlib.figure import Figure

    from .overlays import OverlayInputs, iter_report_panels
    from .spatial import jacobian_determinant

    raw = np.asarray(raw, np.float32)
    registered = np.asarray(registered, np.float32)
    info = dict(info or {})
    t1_maps = {role: maps for role, maps in (t1_maps or {}).items() if maps and maps.get("t1") is not None}
    frames = montage_frames(raw.shape[0], max_frames)
    columns = max(len(frames), 3)
    panels = list(iter_report_panels(OverlayInputs(
        displacement=np.asarray(displacement, np.float32), spacing_mm=tuple(spacing_mm), raw=raw, registered=registered,
        displacement_sd_mm=None if displacement_sd_mm is None else np.asarray(displacement_sd_mm, np.float32),
        engine=info.get("engine"), uncertainty_note=(info.get("params") or {}).get("uncertainty"))))[:columns]

    figure = Figure(figsize=_A4_PORTRAIT_IN)
    heights = ([1.0, 1.0, 1.15] + ([1.15] if panels else []) + ([1.15] if t1_maps else []) + ([1.3] if segments else [])
               + [1.6])
    verdict = info.get("verdict")
    grid = figure.add_gridspec(len(heights), columns, height_ratios=heights, hspace=0.35, wspace=0.08,
                               left=0.04, right=0.96, top=0.90 if verdict else 0.93, bottom=0.05)
    if verdict:  # what a reader acts on comes first (docs/verdict.md)
        _verdict_box(figure, verdict)
    figure.suptitle(f"Registration QC — {name}", fontsize=12, fontweight="bold")
    seconds = info.get("seconds")
    weights = (info.get("params") or {}).get("weights_sha256")
    figure.text(0.5, 0.945, f"{kind}, {raw.shape[0]} frames of {raw.shape[1]}×{raw.shape[2]} px at "
                f"{spacing_mm[0]:g}×{spacing_mm[1]:g} mm; engine {info.get('engine', '?')} on {info.get('device', '?')}"
                + ("" if seconds is None else f", {float(seconds):.1f} s")
                + (f"; weights sha256 {str(weights)[:12]}…" if weights else ""), ha="center", fontsize=8)

    # 1. montage, same contrast for raw and registered
    lo, hi = _limits(raw[frames], registered[frames])
    for row, (stack, label) in enumerate(((raw, "raw"), (registered, "registered"))):
        for column, frame in enumerate(frames):
            axes = figure.add_subplot(grid[row, column])
            _image(axes, stack[frame], spacing_mm, _timing_label(timings_ms, frame, kind), cmap="gray", vmin=lo, vmax=hi)
            if column == 0:
                axes.set_ylabel(label, fontsize=8)

    # 2. temporal SD before / after, and the worst Jacobian with folds
    third = max(columns // 3, 1)
    sd_raw, sd_reg = raw.std(axis=0), registered.std(axis=0)
    sd_lo, sd_hi = _limits(sd_raw, sd_reg)
    axes = figure.add_subplot(grid[2, 0:third])
    _image(axes, sd_raw, spacing_mm, "temporal SD, raw", cmap="magma", vmin=sd_lo, vmax=sd_hi)
    axes = figure.add_subplot(grid[2, third:2 * third])
    _image(axes, sd_reg, spacing_mm, "temporal SD, registered", cmap="magma", vmin=sd_lo, vmax=sd_hi)
    det = np.asarray(jacobian_determinant(np.asarray(displacement, np.float32)))
    det_min = det.min(axis=0)
    folded = (det <= 0).any(axis=0)
    axes = figure.add_subplot(grid[2, 2 * third:])
    shown = _image(axes, det_min, spacing_mm, f"min det J over frames ({100.0 * float((det <= 0).mean()):.3f} % folded)",
                   cmap="RdBu", vmin=0.0, vmax=2.0)
    if folded.any():
        overlay = np.zeros(folded.shape + (4,), np.float32)
        overlay[folded] = (1.0, 0.0, 1.0, 1.0)
        h, w = folded.shape
        axes.imshow(overlay, extent=(0, w * spacing_mm[1], h * spacing_mm[0], 0), interpolation="nearest")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)

    # 2b. the overlay registry's panels (one row, side by side)
    next_row = 3
    if panels:
        width = max(columns // max(len(panels), 3), 1)  # as wide as the temporal-SD panels
        for k, (overlay, image, limits) in enumerate(panels):
            axes = figure.add_subplot(grid[next_row, k * width:(k + 1) * width])
            unit = overlay.legend.unit if overlay.legend is not None and overlay.legend.unit else ""
            shown = _image(axes, image, spacing_mm, overlay.report.title + (f" ({unit})" if unit else ""),
                           cmap=overlay.report.colormap, vmin=limits[0], vmax=limits[1])
            bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=6)
            if unit:
                bar.set_label(unit, fontsize=6)
        next_row += 1

    # 3. T1 maps before / after
    if t1_maps:
        shown_maps = {role: _reliable_t1(maps) for role, maps in t1_maps.items()}
        t1_hi = min(max(_limits(*shown_maps.values(), high=99.0)[1], 1.0), _T1_MAX_SHOWN_MS)
        half = max(columns // 2, 1)
        for k, role in enumerate(r for r in ("raw", "registered") if r in t1_maps):
            axes = figure.add_subplot(grid[next_row, k * half:(k + 1) * half])
            hidden = "" if t1_maps[role].get("r2") is None else f" (R² < {_T1_MIN_R2:g} hidden)"
            shown = _image(axes, shown_maps[role], spacing_mm, f"T1 (ms), {role}{hidden}",
                           cmap="turbo", vmin=0.0, vmax=t1_hi)
            figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        next_row += 1

    # 3b. AHA segments of a map: bullseye and table
    if segments:
        _segments_row(figure, grid[next_row, :], segments)
        next_row += 1

    # 4. numbers
    axes = figure.add_subplot(grid[next_row, :])
    axes.axis("off")
    rows = report_rows(info=info, summary=summary, flagged_frames=flagged_frames, tre=tre, dice=dice)
    table = axes.table(cellText=[list(r) for r in rows], colLabels=["", "before", "after"], loc="upper center",
                       cellLoc="left", colWidths=[0.5, 0.25, 0.25])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.15)
    if footer:
        figure.text(0.5, 0.015, footer, ha="center", fontsize=6, color="0.35")
    return figure


def _segments_row(figure: Any, cell: Any, segments: Mapping[str, Any]) -> None:
    """The bullseye (left) and the segment table (right) of ``segments`` in one grid row."""
    from .bullseye import draw_bullseye

    rows = list(segments.get("segments") or [])
    quantity, unit, level = segments.get("quantity", "value"), segments.get("unit", ""), segments.get("level", "")
    inner = cell.subgridspec(1, 4, width_ratios=[1.0, 0.05, 0.3, 1.6], wspace=0.05)
    axes = figure.add_subplot(inner[0, 0])
    mappable = draw_bullseye(axes, {r["segment"]: r["mean"] for r in rows}, fontsize=5.5)
    axes.set_title(f"AHA segments, {level} slice: {quantity}" + (f" ({unit})" if unit else ""), fontsize=7)
    bar = figure.colorbar(mappable, cax=figure.add_subplot(inner[0, 1]))
    bar.ax.tick_params(labelsize=6)
    table_axes = figure.add_subplot(inner[0, 3])
    table_axes.axis("off")

    def cell_text(value: Any) -> str:
        return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    text = [[str(r["segment"]), r["name"], cell_text(r["mean"]), cell_text(r["sd"]), cell_text(r["median"]),
             str(r["n_pixels"])] for r in rows]
    table = table_axes.table(cellText=text, colLabels=["segment", "name", "mean", "SD", "median", "pixels"],
                             loc="center", cellLoc="left", colWidths=[0.12, 0.4, 0.13, 0.11, 0.13, 0.11])
    table.auto_set_font_size(False)
    table.set_fontsize(6)


def report_bytes(figure: Any, fmt: str, dpi: int = 110) -> bytes:
    """``figure`` encoded as PNG or PDF (``fmt``); :func:`napari_any2reg.io.map_input.save_report`
    writes it to a file."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fmt = str(fmt).lower()
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"the report is written as {' or '.join(REPORT_FORMATS)}; got {fmt!r}.")
    FigureCanvasAgg(figure)  # attaches an Agg canvas: no GUI backend, no pyplot state
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()
