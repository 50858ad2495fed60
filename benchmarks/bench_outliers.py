"""Calibration of the outlier-frame thresholds (core/qc/outliers.py) on phantoms and real series.

Phantoms (test seeds >= 20000, 96 x 96 at 3 mm) of MOLLI, STONE and SASHA, motion-free and
with 8 mm breathing motion, each clean and with ONE injected bad frame
(:func:`napari_any2reg.core.phantom.bad_frames.inject_bad_frame`: another slice position, ghosting
along phase-encode, a mistriggered systolic frame) at a random frame 1..N-1; registered with
``any2reg`` (and ``groupwise`` for a subset: its correspondence is the model-free score). The
real series of ``../shared/data/real`` (STONE heart, kidney MOLLI z0/z1, ACDC cine) are
registered as given (their frames are all usable): they must give no flags.

For every series the table lists which frames were flagged, and for threshold choice the
largest z-scores of the bad frame and of the other frames (residual, score). Writes
``benchmarks/results/outliers.md`` and ``outliers_cpu.json``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_outliers.py [--seeds 5] [--seed-base 20700]``

Every row keeps the per-frame evidence, so the rule can be scored again with other thresholds
without registering (``--rescore results/outliers_cpu.json --set residual_z=5 weak_z=3``):
thresholds are chosen on one seed base (20700, calibration) and checked on another (20900,
validation) and on the real series.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_any2reg.core.phantom.bad_frames import BAD_FRAME_KINDS, inject_bad_frame  # noqa: E402
from napari_any2reg.core.qc.outliers import (  # noqa: E402
    FrameEvidence,
    OutlierThresholds,
    classify_frames,
    detect_outlier_frames,
    outlier_region,
)
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.qc import correspondence_maps  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
RESULTS = ROOT / "benchmarks" / "results"
REAL_FILES = ("stone_0138_slice4_t1map.nii.gz", "kidney_molli_mdreg_z0.tif", "kidney_molli_mdreg_z1.tif",
              "acdc_patient101_slice3_cine.nii.gz")


#: The regions the evidence is read in: first the two the product reads
#: (:func:`core.qc.outliers.outlier_region`: with a heart mask, as ``register --mask`` gives one,
#: and without), then for comparison the central box alone, the mask's labels alone and the
#: dilated heart mask of the first calibration (no user has that one).
REGIONS = ("no mask", "with mask", "central box", "mask labels", "dilated heart")
REGION_WORDS = {"no mask": "without a mask (central box, body)", "with mask": "with a heart mask (labels + 15 mm)"}


def evaluate(sequence, engine: str, regions: dict, bad: int | None) -> dict:
    """Register once; the outlier evidence in every region of ``regions`` (name -> mask, None for
    the central box, or a function of the registered frames; the first one gives the row's flags)."""
    result = register(sequence, engine=engine, device="cpu")
    scores = correspondence_maps(sequence.frames, result.displacement, spacing_mm=sequence.spacing_mm,
                                 stored=result.extras.get("correspondence"))
    regions = {name: mask(result.registered) if callable(mask) else mask for name, mask in regions.items()}
    reports = {name: detect_outlier_frames(result.registered, displacement=result.displacement, scores=scores,
                                           spacing_mm=sequence.spacing_mm, region=mask, timings_ms=sequence.timings_ms)
               for name, mask in regions.items()}
    region_name = next(iter(regions))
    report = reports[region_name]
    ev = report.evidence
    others = [i for i in range(sequence.n_frames) if i != bad]
    row = {"engine": engine, "flagged": list(report.frames), "bad_frame": bad,
           "others_residual_z": float(np.max(ev.residual_z[others])),
           "others_score_z": float(np.max(ev.score_z[others])) if ev.score_z is not None else None,
           "reasons": {str(k): list(v) for k, v in report.reasons.items()},
           "region": region_name,
           "evidence": report.to_json().get("per_frame"),
           "evidence_by_region": {name: r.to_json().get("per_frame") for name, r in reports.items()},
           "timings_ms": [None if not np.isfinite(v) else float(v) for v in np.asarray(sequence.timings_ms, float)]
           if sequence.timings_ms is not None else None}
    if bad is not None:
        row["bad_residual_z"] = float(ev.residual_z[bad])
        row["bad_score_z"] = float(ev.score_z[bad]) if ev.score_z is not None else None
        row["bad_displacement_z"] = float(ev.displacement_z[bad])
    row["correct"] = (row["flagged"] == ([bad] if bad is not None else []))
    return row


def phantom_rows(seeds: int, seed_base: int = 20700, engines_wanted: tuple[str, ...] = ("any2reg", "groupwise")) -> list[dict]:
    rows = []
    rng = np.random.default_rng(27)
    for kind in ("molli", "stone", "sasha"):
        for s in range(seeds):
            for motion in (0.0, 8.0):
                extra = {} if motion else {"rotation_deg": 0.0, "nonrigid_mm": 0.0}
                seed = seed_base + 100 * ("molli", "stone", "sasha").index(kind) + s
                phantom = make_phantom(kind, seed=seed, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=motion, **extra)
                labels = np.asarray(phantom.common_labels)
                spacing = phantom.sequence.spacing_mm
                regions = {"no mask": lambda reg: outlier_region(reg.shape[1:], frames=reg)[0],
                           "with mask": lambda reg, labels=labels, spacing=spacing: outlier_region(
                               reg.shape[1:], labels, spacing_mm=spacing, frames=reg)[0],
                           "central box": None, "mask labels": labels != 0,
                           "dilated heart": ndimage.binary_dilation(phantom.heart_mask, iterations=2)}
                engines = ["any2reg"] + (["groupwise"] if s < 2 and kind != "sasha" else [])
                engines = [e for e in engines if e in engines_wanted]
                variants = [("clean", None)] + [(b, int(rng.integers(1, phantom.sequence.n_frames))) for b in BAD_FRAME_KINDS]
                for variant, frame in variants:
                    frames = phantom.sequence.frames if frame is None else inject_bad_frame(phantom, frame, variant)
                    seq = phantom.sequence.replace(frames=frames)
                    for engine in engines:
                        row = evaluate(seq, engine, regions, frame)
                        row.update(kind=kind, seed=seed, motion_mm=motion, variant=variant)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    return rows


def real_rows() -> list[dict]:
    from napari_any2reg.io import read_sequence

    rows = []
    for name in REAL_FILES:
        path = REAL / name
        if not path.exists():
            continue
        seq = read_sequence(path)
        for engine in ("any2reg", "groupwise"):
            row = evaluate(seq, engine, {"no mask": lambda reg: outlier_region(reg.shape[1:], frames=reg)[0],
                                         "central box": None}, None)
            row.update(kind=f"real: {name}", seed=None, motion_mm=None, variant="as acquired")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _evidence(row: dict, region: str | None = None) -> FrameEvidence:
    e = row["evidence"] if region is None else row.get("evidence_by_region", {}).get(region, row["evidence"])

    def arr(key):
        values = e.get(key)
        return None if values is None else np.array([np.nan if v is None else v for v in values], np.float64)

    return FrameEvidence(arr("low_rank_residual"), arr("low_rank_residual_z"), arr("correspondence"),
                         arr("correspondence_z"), arr("displacement_mm"), arr("displacement_z"))


def rescore(rows: list[dict], thresholds: OutlierThresholds, region: str | None = None) -> list[dict]:
    """The rows with ``flagged`` / ``correct`` / ``reasons`` from ``thresholds`` on their stored
    evidence (in ``region``, one of :data:`REGIONS`, where the row has it; else the row's own)."""
    out = []
    for row in rows:
        timings = None if row.get("timings_ms") is None else [np.inf if v is None else v for v in row["timings_ms"]]
        report = classify_frames(_evidence(row, region), timings_ms=timings, thresholds=thresholds)
        bad = row["bad_frame"]
        out.append({**row, "flagged": list(report.frames), "reasons": {str(k): list(v) for k, v in report.reasons.items()},
                    "correct": list(report.frames) == ([bad] if bad is not None else [])})
    return out


def to_markdown(rows: list[dict], seconds: float, t: OutlierThresholds = OutlierThresholds(), title: str = "") -> str:
    lines = ["# Outlier frames: calibration (`benchmarks/bench_outliers.py`)", "",
             f"Thresholds (core/qc/outliers.py `OutlierThresholds`): residual z > {t.residual_z:g} or score z > {t.score_z:g} "
             f"alone, or two signals beyond z {t.weak_z:g} (with the residual {t.min_residual_excess:g} above the median, "
             f"the score {t.min_score_drop:g} below it, the displacement {t.min_displacement_excess_mm:g} mm above it). "
             f"Phantoms 96 x 96 at 3 mm{title}; CPU, {seconds:.0f} s.", "",
             "## Detection (one bad frame: flagged and no other; clean / real: nothing flagged)", "",
             "| series | engine | motion | variant | cases | correct | missed | false alarms |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["kind"] if not row["kind"].startswith("real") else "real", row["engine"], row["motion_mm"], row["variant"])
        groups.setdefault(key, []).append(row)
    for (kind, engine, motion, variant), group in groups.items():
        missed = sum(1 for r in group if r["bad_frame"] is not None and r["bad_frame"] not in r["flagged"])
        false = sum(len([f for f in r["flagged"] if f != r["bad_frame"]]) for r in group)
        motion_text = "as acquired" if motion is None else f"{motion:g} mm"
        lines.append(f"| {kind} | {engine} | {motion_text} | {variant} | {len(group)} | {sum(r['correct'] for r in group)} | {missed} | {false} |")
    lines += ["", "## Margins (z-scores)", "",
              "Largest z of any good frame (false-alarm side) and smallest z of the bad frame's best signal (detection side).", "",
              "| set | max residual z, good frames | max score z, good frames | min over bad frames of max(residual z, score z) |",
              "|---|---|---|---|"]
    for engine in sorted({r["engine"] for r in rows}):
        for label, pick in (("phantoms", lambda r: not r["kind"].startswith("real")), ("real", lambda r: r["kind"].startswith("real"))):
            chosen = [r for r in rows if r["engine"] == engine and pick(r)]
            if not chosen:
                continue
            good_r = max(r["others_residual_z"] for r in chosen)
            scores = [r["others_score_z"] for r in chosen if r["others_score_z"] is not None]
            bad = [max(r["bad_residual_z"], r["bad_score_z"] or -np.inf) for r in chosen if r["bad_frame"] is not None]
            lines.append(f"| {label}, {engine} | {good_r:.1f} | {max(scores):.1f} | {min(bad):.1f} |" if bad else
                         f"| {label}, {engine} | {good_r:.1f} | {max(scores):.1f} | — |")
    lines += ["", "## Real series", "", "| file | engine | flagged |", "|---|---|---|"]
    for row in rows:
        if row["kind"].startswith("real"):
            lines.append(f"| {row['kind'][6:]} | {row['engine']} | {', '.join(map(str, row['flagged'])) or 'none'} |")
    wrong = [r for r in rows if not r["correct"]]
    if wrong:
        lines += ["", "## Cases not correct", ""]
        for r in wrong:
            lines.append(f"- {r['kind']} seed {r['seed']} {r['motion_mm']} mm {r['variant']} (bad frame {r['bad_frame']}), "
                         f"{r['engine']}: flagged {r['flagged']} {r['reasons']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-base", type=int, default=20700, help="first phantom seed (calibration 20700, validation 20900)")
    parser.add_argument("--engines", default="any2reg,groupwise")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "outliers_cpu.json"), help="rows (JSON); the table beside it (.md)")
    parser.add_argument("--rescore", nargs="+", metavar="JSON", help="score stored rows again instead of registering")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="with --rescore: thresholds to change")
    parser.add_argument("--region", default=None, choices=REGIONS, help="with --rescore: read the evidence of this region")
    args = parser.parse_args(argv)
    if args.rescore:
        changes = {k: type(getattr(OutlierThresholds(), k))(v) for k, v in (item.split("=", 1) for item in args.set)}
        thresholds = OutlierThresholds(**changes)
        parts = []
        for path in args.rescore:
            data = json.loads(Path(path).read_text())
            rows = rescore(data["rows"], thresholds, args.region)
            where = f", evidence read {args.region}" if args.region else ""
            seeds = f", seeds {data['seed_base']}+" if "seed_base" in data else ""
            parts.append(to_markdown(rows, data["seconds"], thresholds, title=f"{seeds} ({Path(path).name}, rescored{where})"))
        print("\n".join(parts))
        if args.out != parser.get_default("out"):  # written only when asked
            Path(args.out).with_suffix(".md").write_text("\n".join(parts))
        return 0
    start = time.perf_counter()
    rows = phantom_rows(args.seeds, args.seed_base, tuple(args.engines.split(","))) + ([] if args.no_real else real_rows())
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f", seeds {args.seed_base}+ ({args.seeds} per protocol)"
    out.write_text(json.dumps({"rows": rows, "seconds": seconds, "seed_base": args.seed_base}, indent=1))
    out.with_suffix(".md").write_text(to_markdown(rows, seconds, title=title))
    print(to_markdown(rows, seconds, title=title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
