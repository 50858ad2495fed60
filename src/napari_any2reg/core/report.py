"""One-page QC report of a registration (matplotlib, no pyplot: safe in worker threads).

The page answers "can I trust this motion correction?" at a glance:

0. the verdict (level and reasons) in a box under the title, wrapped to the page width as
   matplotlib's renderer measures the text;
1. a montage of raw (top) and registered (bottom) frames, same contrast, frames spread over
   the series (the frames a reader would step through), the verdict's outlier frames always
   among them and marked;
2. the temporal SD over frames before and after (motion shows as bright edges that should
   fade), and the smallest Jacobian determinant over frames with folded pixels in magenta;
2b. the overlay registry's report panels whose inputs are there (:func:`.overlays.report_overlays`:
   the network's displacement SD, max over frames, in mm), each with a colour bar in its unit;
3. T1 maps before and after, when fitted;
4. a table: folding, model-free alignment before → after, flagged frames (the verdict's outlier
   frames when ``info`` has them; the per-frame QC flags beside, where they differ), TRE per landmark and
   Dice per label before → after (engine, device, time and weights hash are in the header).

:func:`report_figure` builds the figure; :func:`save_report` writes PNG or PDF.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["REPORT_FORMATS", "montage_frames", "outlier_indices", "wrap_to_width", "report_rows", "report_figure",
           "report_bytes"]

#: Formats :func:`save_report` writes.
REPORT_FORMATS = ("png", "pdf")

_A4_PORTRAIT_IN = (8.27, 11.69)

#: T1 maps: pixels whose fit explains less than this share of the signal are not drawn.
_T1_MIN_R2 = 0.8

#: Upper end of the T1 colour scale at most (native myocardium and blood sit well below).
_T1_MAX_SHOWN_MS = 2500.0


def montage_frames(n_frames: int, max_frames: int = 6, include: Any = ()) -> list[int]:
    """Up to ``max_frames`` frame indices spread evenly over ``n_frames`` (first and last included).

    The frames of ``include`` (the verdict's outlier frames, which a reader must see) are always
    there, up to ``max_frames`` of them: each takes the place of the spread frame nearest to it.
    """
    if n_frames <= max_frames:
        return list(range(n_frames))
    frames = sorted({int(round(v)) for v in np.linspace(0, n_frames - 1, max_frames)})
    must = sorted({int(f) for f in include if 0 <= int(f) < n_frames})[:max_frames]
    for frame in must:
        if frame in frames:
            continue
        free = [f for f in frames if f not in must]
        frames.remove(min(free, key=lambda f: (abs(f - frame), f)))
        frames.append(frame)
    return sorted(frames)


def outlier_indices(info: Mapping[str, Any] | None) -> list[int] | None:
    """The verdict's outlier frames of ``info`` (``metrics.json`` ``outlier_frames``), or ``None``."""
    outliers = (info or {}).get("outlier_frames")
    if not isinstance(outliers, Mapping) or "indices" not in outliers:
        return None
    return sorted(int(i) for i in outliers["indices"])


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


#: The verdict box: font size (points), longest text shown (lines), box padding (font sizes).
_VERDICT_FONTSIZE = 8.0
_VERDICT_MAX_LINES = 8
_VERDICT_PAD = 0.4


def _text_width_pt(text: str, prop: Any) -> float:
    """Width of ``text`` in points as matplotlib's Agg renderer draws it at 72 dpi."""
    from matplotlib.backends.backend_agg import RendererAgg

    width, _, _ = RendererAgg(1, 1, 72).get_text_width_height_descent(text, prop, ismath=False)
    return float(width)


def wrap_to_width(text: str, width_pt: float, prop: Any) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width_pt`` points (measured with the
    renderer, font ``prop``); a single word wider than that is broken inside."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if _text_width_pt(candidate, prop) <= width_pt:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while _text_width_pt(line, prop) > width_pt and len(line) > 1:
            cut = len(line) - 1
            while cut > 1 and _text_width_pt(line[:cut], prop) > width_pt:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line:
        lines.append(line)
    return lines


def _verdict_box(figure: Any, verdict: Mapping[str, Any], top: float) -> float:
    """The verdict line (level and reasons) in a box coloured by level, its top at ``top``
    (figure fraction), wrapped to the figure's width as the renderer measures the text; returns
    the figure fraction of its bottom edge (the grid starts below it)."""
    from matplotlib.font_manager import FontProperties

    from .qc.verdict import verdict_line

    prop = FontProperties(size=_VERDICT_FONTSIZE, weight="bold")
    width_in, height_in = figure.get_size_inches()
    # the page less 4 % margins each side, less the box's padding and edge
    usable_pt = 0.92 * width_in * 72.0 - 2.0 * (_VERDICT_PAD + 0.5) * _VERDICT_FONTSIZE
    lines = wrap_to_width(f"verdict — {verdict_line(verdict)}", usable_pt, prop)
    if len(lines) > _VERDICT_MAX_LINES:
        tail = " … (all reasons in metrics.json)"
        last = lines[_VERDICT_MAX_LINES - 1]
        while last and _text_width_pt(last + tail, prop) > usable_pt:
            last = last[:-1]
        lines = lines[:_VERDICT_MAX_LINES - 1] + [last.rstrip() + tail]
    text = figure.text(0.5, top, "\n".join(lines), ha="center", va="top", multialignment="left",
                       fontproperties=prop, linespacing=1.2,
                       bbox={"boxstyle": f"round,pad={_VERDICT_PAD}",
                             "facecolor": _VERDICT_COLOURS.get(verdict.get("level"), "white"), "edgecolor": "0.4"})
    text.set_gid("verdict")
    height_pt = (len(lines) * 1.2 + 2.0 * _VERDICT_PAD + 0.5) * _VERDICT_FONTSIZE
    return top - height_pt / (height_in * 72.0)


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
    outliers = outlier_indices(info)
    if outliers is not None:
        # the verdict's outlier frames (metrics.json ``outlier_frames``): the row agrees with the
        # verdict box; the per-frame QC thresholds' own flags, where they differ, in a row of their own
        rows.append(("flagged frames (outliers, see verdict)", "", ", ".join(str(f) for f in outliers) or "none"))
        extra = sorted(set(flagged_frames or ()) - set(outliers))
        if extra:
            rows.append(("frames past the per-frame QC thresholds", "", ", ".join(str(f) for f in extra)))
    elif flagged_frames is not None:
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
    outliers = outlier_indices(info) or []
    frames = montage_frames(raw.shape[0], max_frames, include=outliers)
    columns = max(len(frames), 3)
    panels = list(iter_report_panels(OverlayInputs(
        displacement=np.asarray(displacement, np.float32), spacing_mm=tuple(spacing_mm), raw=raw, registered=registered,
        displacement_sd_mm=None if displacement_sd_mm is None else np.asarray(displacement_sd_mm, np.float32),
        engine=info.get("engine"), uncertainty_note=(info.get("params") or {}).get("uncertainty"))))[:columns]

    figure = Figure(figsize=_A4_PORTRAIT_IN)
    heights = ([1.0, 1.0, 1.15] + ([1.15] if panels else []) + ([1.15] if t1_maps else []) + ([1.3] if segments else [])
               + [1.6])
    verdict = info.get("verdict")
    top = 0.93
    if verdict:  # what a reader acts on comes first (docs/verdict.md); the grid starts below its box
        top = min(top, _verdict_box(figure, verdict, top=0.932) - 0.015)
    grid = figure.add_gridspec(len(heights), columns, height_ratios=heights, hspace=0.35, wspace=0.08,
                               left=0.04, right=0.96, top=top, bottom=0.05)
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
            outlier = frame in outliers
            _image(axes, stack[frame], spacing_mm, _timing_label(timings_ms, frame, kind) + ("\n(outlier)" if outlier else ""),
                   cmap="gray", vmin=lo, vmax=hi)
            if outlier:
                axes.title.set_color("#b00020")
                for spine in axes.spines.values():
                    spine.set_edgecolor("#b00020")
                    spine.set_linewidth(1.5)
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
    from .tissue.bullseye import draw_bullseye

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
