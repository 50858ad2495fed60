"""The cohort summary: ``summary.csv`` (one row per series) and the cohort QC page.

``cohort_qc.png`` shows the distributions a reader checks first (status, seconds, folding,
alignment before → after, ROI T1 and R² before → after when fitted) with the outliers marked,
and thumbnails (mean frame raw | registered: motion blurs the mean, registration sharpens it)
of the series that need a look. ``cohort_qc.html`` embeds that figure and lists the outliers
with their reasons and the full table, linking each series' folder. All three files are
written together (atomically), so a reader never sees a half-written summary.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ._requests import output_path

__all__ = ["SUMMARY_COLUMNS", "cohort_outliers", "sort_for_review", "summary_csv_text", "write_summary"]

#: Column order of summary.csv (more keys of the rows follow, sorted).
SUMMARY_COLUMNS = (
    "series", "status", "verdict", "verdict_reasons", "this_run", "qc_flags", "engine", "device", "seconds_registration", "seconds_total",
    "kind", "n_frames", "height", "width", "folding_percent", "alignment_before", "alignment_after",
    "max_displacement_mm", "n_flagged_frames", "flagged_frames", "outlier_frames", "displacement_sd_p95_mm",
    "fit_model", "roi",
    "t1_mean_ms_before", "t1_sd_ms_before", "r2_mean_before", "r2_above_before",
    "t1_mean_ms_after", "t1_sd_ms_after", "r2_mean_after", "r2_above_after",
    "warnings", "error", "input", "output",
)

#: Robust z-score (median / MAD) beyond which a series is an outlier of the cohort.
OUTLIER_Z = 3.5


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _robust_z(values: list[float | None]) -> list[float | None]:
    known = np.array([v for v in values if v is not None], float)
    if known.size < 4:  # too few series for a spread
        return [None] * len(values)
    median = float(np.median(known))
    mad = 1.4826 * float(np.median(np.abs(known - median)))
    if mad <= 1e-12:
        return [None] * len(values)
    return [None if v is None else (v - median) / mad for v in values]


def cohort_outliers(rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Series that need a look, with the reasons: ``{series: [reason, ...]}``.

    Reasons: failed; folding (det J <= 0); alignment worse after registration; frames flagged by
    the per-frame QC; R² in the ROI lower after than before; and, against the cohort (robust
    z-score beyond 3.5), a low alignment gain or a slow run.
    """
    rows = list(rows)
    flags: dict[str, list[str]] = {row["series"]: [] for row in rows}
    ok = [row for row in rows if row.get("status") == "ok"]
    for row in rows:
        if row.get("status") == "failed":
            flags[row["series"]].append("failed")
    for row in ok:
        reasons = flags[row["series"]]
        folding = _number(row.get("folding_percent"))
        before, after = _number(row.get("alignment_before")), _number(row.get("alignment_after"))
        if folding is not None and folding > 0:
            reasons.append(f"folding {folding:.3f} %")
        if before is not None and after is not None and after < before:
            reasons.append("alignment worse after")
        flagged = int(_number(row.get("n_flagged_frames")) or 0)
        if flagged:
            reasons.append(f"{flagged} flagged frame(s)")
        if row.get("verdict") in ("check", "poor"):
            reasons.append(f"verdict {row['verdict']}: {row.get('verdict_reasons') or ''}".rstrip(": "))
        r2b, r2a = _number(row.get("r2_mean_before")), _number(row.get("r2_mean_after"))
        if r2b is not None and r2a is not None and r2a < r2b - 0.01:
            reasons.append("ROI R2 lower after")
    gains = [None if _number(r.get("alignment_after")) is None or _number(r.get("alignment_before")) is None
             else _number(r.get("alignment_after")) - _number(r.get("alignment_before")) for r in ok]
    for row, z in zip(ok, _robust_z(gains)):
        if z is not None and z < -OUTLIER_Z:
            flags[row["series"]].append("low alignment gain for this cohort")
    for row, z in zip(ok, _robust_z([_number(r.get("seconds_registration")) for r in ok])):
        if z is not None and z > OUTLIER_Z:
            flags[row["series"]].append("slow for this cohort")
    return {name: reasons for name, reasons in flags.items() if reasons}


def sort_for_review(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The series a reader should look at first: failed, then verdict poor, check, good (the
    order within a level kept), then any without a verdict (pending)."""
    from ..core.qc.verdict import verdict_rank

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        index, row = item
        if row.get("status") == "failed":
            return (0, index)
        rank = verdict_rank(row.get("verdict"))
        return ((1 + rank) if rank >= 0 else 4, index)

    return [row for _, row in sorted(enumerate(rows), key=key)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def summary_csv_text(rows: Iterable[dict[str, Any]]) -> str:
    """``summary.csv`` content: :data:`SUMMARY_COLUMNS` first, then any other keys (sorted)."""
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    extra = sorted({k for row in rows for k in row} - set(SUMMARY_COLUMNS))
    columns = list(SUMMARY_COLUMNS) + extra
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _figure(rows: list[dict[str, Any]], flags: dict[str, list[str]], outdir: Path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ok = [r for r in rows if r.get("status") == "ok"]
    fitted = [r for r in ok if _number(r.get("t1_mean_ms_before")) is not None and _number(r.get("t1_mean_ms_after")) is not None]
    thumbs = []
    for row in rows:
        if row["series"] in flags and row.get("status") == "ok":
            path = outdir / row["series"] / "thumbnail.npy"
            try:
                thumbs.append((row["series"], np.load(path).astype(np.float32)))
            except (OSError, ValueError):
                continue
        if len(thumbs) == 8:
            break
    n_thumb_rows = math.ceil(len(thumbs) / 4)
    fig = Figure(figsize=(13, 7.5 + 2.6 * n_thumb_rows), dpi=90)
    grid = fig.add_gridspec(2 + n_thumb_rows, 4, height_ratios=[1, 1] + [0.85] * n_thumb_rows)
    fig.suptitle(f"any2reg cohort QC: {len(rows)} series, {len(ok)} registered, "
                 f"{sum(r.get('status') == 'failed' for r in rows)} failed, {len(flags)} to check", fontsize=12)
    marked = [r["series"] in flags for r in ok]
    colours = ["tab:red" if m else "tab:blue" for m in marked]

    ax = fig.add_subplot(grid[0, 0])
    statuses = ["ok", "failed", "pending"]
    ax.bar(statuses, [sum(r.get("status") == s for r in rows) for s in statuses], color=["tab:green", "tab:red", "tab:gray"])
    ax.set_title("status")

    ax = fig.add_subplot(grid[0, 1])
    seconds = [_number(r.get("seconds_registration")) for r in ok]
    ax.hist([s for s in seconds if s is not None] or [0], bins=20, color="tab:blue")
    ax.set_title("registration seconds / series")

    ax = fig.add_subplot(grid[0, 2])
    folding = [_number(r.get("folding_percent")) or 0.0 for r in ok]
    ax.hist(folding or [0], bins=20, color="tab:blue")
    ax.set_title("folding % (det J <= 0)")

    ax = fig.add_subplot(grid[0, 3])
    flagged = [int(_number(r.get("n_flagged_frames")) or 0) for r in ok]
    ax.hist(flagged or [0], bins=range(0, max(flagged or [0]) + 2), color="tab:blue", align="left")
    ax.set_title("flagged frames / series")

    ax = fig.add_subplot(grid[1, 0:2])
    before = [_number(r.get("alignment_before")) for r in ok]
    after = [_number(r.get("alignment_after")) for r in ok]
    pairs = [(b, a, c) for b, a, c in zip(before, after, colours) if b is not None and a is not None]
    if pairs:
        ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], c=[p[2] for p in pairs], s=18)
        lo = min(min(p[0], p[1]) for p in pairs)
        ax.plot([lo, 1], [lo, 1], color="0.6", lw=0.8)
    ax.set_xlabel("alignment before")
    ax.set_ylabel("after")
    ax.set_title("model-free alignment (above the line = improved; red = to check)")

    ax = fig.add_subplot(grid[1, 2])
    ax2 = fig.add_subplot(grid[1, 3])
    if fitted:
        t1b = [_number(r["t1_mean_ms_before"]) for r in fitted]
        t1a = [_number(r["t1_mean_ms_after"]) for r in fitted]
        ax.scatter(t1b, t1a, s=18, c=["tab:red" if r["series"] in flags else "tab:blue" for r in fitted])
        span = [min(t1b + t1a), max(t1b + t1a)]
        ax.plot(span, span, color="0.6", lw=0.8)
        ax.set_xlabel("before (ms)")
        ax.set_ylabel("after (ms)")
        ax.set_title("ROI T1 mean")
        r2b = [_number(r.get("r2_mean_before")) for r in fitted]
        r2a = [_number(r.get("r2_mean_after")) for r in fitted]
        ax2.boxplot([[v for v in r2b if v is not None] or [0], [v for v in r2a if v is not None] or [0]])
        ax2.set_xticks([1, 2], ["before", "after"])
        ax2.set_title("ROI mean R2 of the T1 fit")
    else:
        for a in (ax, ax2):
            a.axis("off")
        ax.text(0.5, 0.5, "no T1 fits (run with --fit)", ha="center", va="center", transform=ax.transAxes)

    for k, (name, pair) in enumerate(thumbs):
        ax = fig.add_subplot(grid[2 + k // 4, k % 4])
        both = np.concatenate([pair[0], np.full((pair.shape[1], 2), np.nan, np.float32), pair[1]], axis=1)
        finite = both[np.isfinite(both)]
        lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
        ax.imshow(both, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"{name}\n{'; '.join(flags[name])[:60]}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    if thumbs:
        fig.text(0.5, 0.01, "thumbnails: mean frame raw | registered, series to check", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    return fig


def _html(rows: list[dict[str, Any]], flags: dict[str, list[str]], png: bytes, csv_text: str) -> str:
    esc = html.escape
    head = ("<!doctype html><meta charset='utf-8'><title>any2reg cohort QC</title><style>"
            "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}tr.bad{background:#fdd}</style>")
    parts = [head, "<h1>any2reg cohort QC</h1>",
             f"<p>{len(rows)} series; summary table: <a href='summary.csv'>summary.csv</a></p>",
             f"<img alt='cohort distributions' style='max-width:100%' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
             "<h2>Series to check</h2>"]
    if flags:
        parts.append("<table><tr><th>series</th><th>reasons</th><th>error</th></tr>")
        by_name = {r["series"]: r for r in rows}
        for name, reasons in flags.items():
            row = by_name[name]
            parts.append(f"<tr class='bad'><td><a href='{esc(name)}/'>{esc(name)}</a></td><td>{esc('; '.join(reasons))}</td>"
                         f"<td>{esc(str(row.get('error') or ''))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    lines = list(csv.reader(io.StringIO(csv_text)))
    parts.append("<h2>All series</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in lines[0]) + "</tr>")
    for cells in lines[1:]:
        css = " class='bad'" if cells[0] in flags else ""
        parts.append(f"<tr{css}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts) + "\n"


def write_summary(rows: Iterable[dict[str, Any]], outdir: Any, *, qc_page: bool = True) -> list[Path]:
    """Write ``summary.csv`` and (``qc_page``) ``cohort_qc.png`` + ``cohort_qc.html`` into ``outdir``.

    The rows get a ``qc_flags`` column (:func:`cohort_outliers`). Files are replaced together,
    atomically.

    Returns
    -------
    list of Path
        The files written.
    """
    from ..io import atomic_write_all

    outdir = output_path(outdir, "outdir")
    rows = sort_for_review([dict(row) for row in rows])
    flags = cohort_outliers(rows)
    for row in rows:
        row["qc_flags"] = "; ".join(flags.get(row["series"], []))
    text = summary_csv_text(rows)
    items = [(outdir / "summary.csv", lambda p: p.write_text(text, encoding="utf-8"))]
    if qc_page:
        fig = _figure(rows, flags, outdir)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        png = buffer.getvalue()
        page = _html(rows, flags, png, text)
        items += [(outdir / "cohort_qc.png", lambda p: p.write_bytes(png)),
                  (outdir / "cohort_qc.html", lambda p: p.write_text(page, encoding="utf-8"))]
    return atomic_write_all(items, overwrite=True)
