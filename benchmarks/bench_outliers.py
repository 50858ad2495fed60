"""Calibration of the outlier-frame thresholds (core/outliers.py) on phantoms and real series.

Phantoms (test seeds >= 20000, 96 x 96 at 3 mm) of MOLLI, STONE and SASHA, motion-free and
with 8 mm breathing motion, each clean and with ONE injected bad frame
(:func:`napari_any2reg.core.bad_frames.inject_bad_frame`: another slice position, ghosting
along phase-encode, a mistriggered systolic frame) at a random frame 1..N-1; registered with
``any2reg`` (and ``groupwise`` for a subset: its correspondence is the model-free score). The
real series of ``../shared/data/real`` (STONE heart, kidney MOLLI z0/z1, ACDC cine) are
registered as given (their frames are all usable): they must give no flags.

For every series the table lists which frames were flagged, and for threshold choice the
largest z-scores of the bad frame and of the other frames (residual, score). Writes
``benchmarks/results/outliers.md`` and ``outliers_cpu.json``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_outliers.py [--seeds 5]``
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

from napari_any2reg.core.bad_frames import BAD_FRAME_KINDS, inject_bad_frame  # noqa: E402
from napari_any2reg.core.outliers import OutlierThresholds, detect_outlier_frames  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.qc import correspondence_maps  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
RESULTS = ROOT / "benchmarks" / "results"
REAL_FILES = ("stone_0138_slice4_t1map.nii.gz", "kidney_molli_mdreg_z0.tif", "kidney_molli_mdreg_z1.tif",
              "acdc_patient101_slice3_cine.nii.gz")


def evaluate(sequence, engine: str, region, bad: int | None) -> dict:
    result = register(sequence, engine=engine, device="cpu")
    scores = correspondence_maps(sequence.frames, result.displacement, spacing_mm=sequence.spacing_mm,
                                 stored=result.extras.get("correspondence"))
    report = detect_outlier_frames(result.registered, displacement=result.displacement, scores=scores,
                                   spacing_mm=sequence.spacing_mm, region=region, timings_ms=sequence.timings_ms)
    ev = report.evidence
    others = [i for i in range(sequence.n_frames) if i != bad]
    row = {"engine": engine, "flagged": list(report.frames), "bad_frame": bad,
           "others_residual_z": float(np.max(ev.residual_z[others])),
           "others_score_z": float(np.max(ev.score_z[others])) if ev.score_z is not None else None,
           "reasons": {str(k): list(v) for k, v in report.reasons.items()}}
    if bad is not None:
        row["bad_residual_z"] = float(ev.residual_z[bad])
        row["bad_score_z"] = float(ev.score_z[bad]) if ev.score_z is not None else None
        row["bad_displacement_z"] = float(ev.displacement_z[bad])
    row["correct"] = (row["flagged"] == ([bad] if bad is not None else []))
    return row


def phantom_rows(seeds: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(27)
    for kind in ("molli", "stone", "sasha"):
        for s in range(seeds):
            for motion in (0.0, 8.0):
                extra = {} if motion else {"rotation_deg": 0.0, "nonrigid_mm": 0.0}
                seed = 20700 + 100 * ("molli", "stone", "sasha").index(kind) + s
                phantom = make_phantom(kind, seed=seed, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=motion, **extra)
                region = ndimage.binary_dilation(phantom.heart_mask, iterations=2)
                engines = ["any2reg"] + (["groupwise"] if s < 2 and kind != "sasha" else [])
                variants = [("clean", None)] + [(b, int(rng.integers(1, phantom.sequence.n_frames))) for b in BAD_FRAME_KINDS]
                for variant, frame in variants:
                    frames = phantom.sequence.frames if frame is None else inject_bad_frame(phantom, frame, variant)
                    seq = phantom.sequence.replace(frames=frames)
                    for engine in engines:
                        row = evaluate(seq, engine, region, frame)
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
            row = evaluate(seq, engine, None, None)
            row.update(kind=f"real: {name}", seed=None, motion_mm=None, variant="as acquired")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def to_markdown(rows: list[dict], seconds: float) -> str:
    t = OutlierThresholds()
    lines = ["# Outlier frames: calibration (`benchmarks/bench_outliers.py`)", "",
             f"Thresholds (core/outliers.py `OutlierThresholds`): residual z > {t.residual_z:g} or score z > {t.score_z:g} "
             f"alone, or two signals beyond z {t.weak_z:g} (with the residual {t.min_residual_excess:g} above the median, "
             f"the score {t.min_score_drop:g} below it, the displacement {t.min_displacement_excess_mm:g} mm above it). "
             f"Phantoms 96 x 96 at 3 mm, seeds 20700+; CPU, {seconds:.0f} s.", "",
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
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = phantom_rows(args.seeds) + ([] if args.no_real else real_rows())
    seconds = time.perf_counter() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "outliers_cpu.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=1))
    (RESULTS / "outliers.md").write_text(to_markdown(rows, seconds))
    print(to_markdown(rows, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
