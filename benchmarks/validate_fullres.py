"""Choose the network's inference configuration on data it never trained on (issue 22).

    python benchmarks/validate_fullres.py                  # every configuration below
    python benchmarks/validate_fullres.py --only C,D       # some of them (rows are appended)

The set (fixed seeds, built by :mod:`validation_generator`, never by the training code):

* **moved phantoms** — MOLLI 5(3)3, STONE, SASHA and cine series of the torso phantom
  (anatomy seeds 70001-70008; half at 192 x 192 / 1.5 mm, half at 224 x 224 / 1.25 mm),
  moved by the second motion model (drift 4-12 mm, a failed breath-hold jump of 10-20 mm in
  every other series, rotation up to 10 degrees, sliding at the chest wall, 2-4 mm cardiac
  residual, cine contraction, through-plane gain), Rician noise SNR 30-45;
* **moved real** — the four real slices of ``../shared/data/real`` (STONE and kidney z1
  held out from training; ACDC and kidney z0 were training bases, reported apart), made
  motion-free (pre-aligned by ``groupwise``, then regenerated from per-pixel model maps:
  :func:`core.semisynthetic.motion_free_series`) and moved by the second model, two draws each
  (one with a jump);
* **motion-free** — one torso series per kind (seeds 70011-70014) and the four motion-free
  real bases, with noise: every mm returned there is invented motion;
* **raw real** — the four slices as acquired: PCA share in the organ ROI (higher is better)
  and, for kidney MOLLI, the median T1-fit R^2.

Scores per configuration: median and worst relative EPE ratio (after / before, in the heart
or organ ROI) over the moved cases; invented motion (mean relative EPE, mm) on every
motion-free case; all-pair Dice of the myocardium (phantoms); raw PCA share / R^2; the number
of series made worse than identity; median engine seconds.

**Selection rule (written before the run).** Among the ``any2reg`` configurations whose
median engine time on the speed benchmark (N = 11, 192 x 192, 1.5 mm, this CPU) is within
1.5 s: keep those that make no series worse than identity and whose largest invented motion
is at most 0.15 mm; of these, the lowest median EPE ratio wins (accuracy first); within 0.005
of it, the lower worst invented motion. If none qualifies, the lowest median EPE ratio among
those within the time budget, and the shortfall is reported.

Output: one JSON line per configuration in ``benchmarks/results/validate_fullres.jsonl`` and
the table in ``validate_fullres.md``. The motion-free real bases are cached in
``benchmarks/runs/fullres_bases`` (one ``groupwise`` run each). Requires ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_real import CASES, REAL, _fit_quality  # noqa: E402
from validation_generator import apply_motion, second_motion, torso_phantom  # noqa: E402

from napari_any2reg.core.metrics import all_pair_dice, alignment_score, relative_epe  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.semisynthetic import add_rician_noise, motion_free_series  # noqa: E402
from napari_any2reg.core.sequence import Sequence  # noqa: E402
from napari_any2reg.core.spatial import warp_labels  # noqa: E402
from napari_any2reg.io import read_sequence  # noqa: E402

RESULTS = HERE / "results"
CACHE = HERE / "runs" / "fullres_bases"

#: name -> (engine, options). A-I are inference configurations of the shipped network; each
#: names every option it depends on (``fine_pass_orientations`` defaults to 1 since row I won).
CONFIGS: dict[str, tuple[str, dict]] = {
    "A 3 mm, 1 pass, 2 orient. (v10 default before issue 22)": ("any2reg", {"working_spacing_mm": 3.0, "coarse_pass_mm": 0.0, "passes": 1, "orientations": 2}),
    "B native, 1 pass, 2 orient.": ("any2reg", {"coarse_pass_mm": 0.0, "passes": 1, "orientations": 2}),
    "C 3 mm + native, 2 orient.": ("any2reg", {"coarse_pass_mm": 3.0, "passes": 1, "orientations": 2, "fine_pass_orientations": 2}),
    "D 3 mm + native, 1 orient.": ("any2reg", {"coarse_pass_mm": 3.0, "passes": 1, "orientations": 1}),
    "E 3 mm + native x2, 1 orient.": ("any2reg", {"coarse_pass_mm": 3.0, "passes": 2, "orientations": 1}),
    "F native x2, 1 orient.": ("any2reg", {"coarse_pass_mm": 0.0, "passes": 2, "orientations": 1}),
    "G 3 mm + native x2, 2 orient.": ("any2reg", {"coarse_pass_mm": 3.0, "passes": 2, "orientations": 2, "fine_pass_orientations": 2}),
    "H 3 mm + native, 1 orient., no do-no-harm": ("any2reg", {"coarse_pass_mm": 3.0, "passes": 1, "orientations": 1, "do_no_harm": False}),
    "I 3 mm (2 orient.) + native (1 orient.)": ("any2reg", {"coarse_pass_mm": 3.0, "passes": 1, "orientations": 2, "fine_pass_orientations": 1}),
    "any2reg-io (default network setting)": ("any2reg-io", {}),
    "groupwise": ("groupwise", {}),
    "xcoreg": ("xcoreg", {}),
}

KINDS = ("molli", "stone", "sasha", "cine")
#: Decay series (issue 26: T2-prep bSSFP, multi-gradient-echo), reported in their own columns
#: so that the 19-case scores above stay comparable with the runs before they were added.
DECAY_KINDS = ("t2prep", "mge")
DECAY_GROUP = "phantom decay"


def _real_bases():
    """``{case name: (sequence, motion-free base frames, roi, split)}`` for the real slices."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = {}
    for case in CASES:
        seq = read_sequence(REAL / case.file)
        cached = CACHE / f"{case.name.replace(' ', '_').replace('(', '').replace(')', '')}.npy"
        if not cached.exists():
            aligned = register(seq, engine="groupwise", device="cpu").registered
            np.save(cached, motion_free_series(seq.replace(frames=aligned))[0])
        out[case.name] = (seq, np.clip(np.load(cached), 0, None).astype(np.float32), case.roi(seq.shape), case.split)
    return out


def moved_phantom_seed(k: int, kind: str, j: int) -> int:
    """Seed of the ``j``-th moved torso phantom of ``kind`` (index ``k`` in KINDS + DECAY_KINDS)."""
    return 70001 + 2 * k + j if kind in KINDS else 70021 + 2 * (k - len(KINDS)) + j


def moved_phantom(k: int, kind: str, j: int):
    """``(phantom, sequence, true displacement, moved labels)`` of one moved validation phantom:
    ``j = 0`` at 192 x 192 / 1.5 mm, ``j = 1`` at 224 x 224 / 1.25 mm with a breath-hold jump.
    The one recipe of the set (``bench_uncertainty.py`` reads the same cases)."""
    seed = moved_phantom_seed(k, kind, j)
    shape, spacing = ((192, 192), (1.5, 1.5)) if j == 0 else ((224, 224), (1.25, 1.25))
    p = torso_phantom(kind, seed, shape=shape, spacing_mm=spacing)
    rng = np.random.default_rng(80000 + seed)
    truth, gain = second_motion(rng, p.frames.shape[0], shape, spacing, inner_mask=p.inner_mask,
                                heart_centre_px=p.heart_centre_px, amplitude_mm=float(rng.uniform(4, 12)),
                                jump_mm=float(rng.uniform(10, 20)) if j == 1 else 0.0,
                                rotation_deg=10.0, cardiac_mm=float(rng.uniform(2, 4)),
                                contraction_mm=5.0 if kind == "cine" else 0.0)
    frames, labels = apply_motion(p.frames, truth, gain, rng, float(rng.uniform(30, 45)), p.labels)
    seq = Sequence(frames, timings_ms=p.timings_ms, spacing_mm=spacing, kind=kind, name=f"torso {kind} {seed}")
    return p, seq, truth, labels


def moved_real(index: int, seq, base, draw: int):
    """``(moved sequence, true displacement)``: draw ``draw`` of the second motion model on the
    motion-free base of real case ``index`` (sliding boundary: an ellipse around the organ ROI
    covering ~70 % of the field of view)."""
    h, w = seq.shape
    yy, xx = np.mgrid[:h, :w]
    inner = np.sqrt(((yy - (h - 1) / 2) / (0.36 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.42 * w)) ** 2)
    rng = np.random.default_rng([81000, index, draw])
    truth, gain = second_motion(rng, seq.n_frames, seq.shape, seq.spacing_mm, inner_mask=inner,
                                heart_centre_px=CASES[index].centre_px, amplitude_mm=float(rng.uniform(4, 12)),
                                jump_mm=float(rng.uniform(10, 20)) if draw else 0.0,
                                rotation_deg=10.0, cardiac_mm=float(rng.uniform(2, 4)))
    frames, _ = apply_motion(base, truth, gain, rng, 30.0)
    return seq.replace(frames=frames), truth


def build_cases():
    """``(moved, still, raw)``: moved/still are dicts with sequence, truth, roi, labels;
    raw are ``(name, sequence, roi)``."""
    moved, still, raw = [], [], []
    for k, kind in enumerate(KINDS + DECAY_KINDS):
        group = DECAY_GROUP if kind in DECAY_KINDS else "phantom"
        for j in range(2):
            p, seq, truth, labels = moved_phantom(k, kind, j)
            moved.append({"name": seq.name, "group": group, "sequence": seq, "truth": truth, "roi": p.heart_mask, "labels": labels})
        seed = 70011 + k if kind in KINDS else 70031 + (k - len(KINDS))
        p = torso_phantom(kind, seed)
        frames = add_rician_noise(p.frames, np.random.default_rng(90000 + seed), 40.0)
        seq = Sequence(frames, timings_ms=p.timings_ms, spacing_mm=p.spacing_mm, kind=kind, name=f"still torso {kind} {seed}")
        still.append({"name": seq.name, "group": group, "sequence": seq, "roi": p.heart_mask})
    if not REAL.is_dir():
        print(f"{REAL} is absent: real cases skipped", file=sys.stderr)
        return moved, still, raw
    for index, (name, (seq, base, roi, split)) in enumerate(_real_bases().items()):
        raw.append((name, seq, roi))
        for draw in range(2):
            moved_seq, truth = moved_real(index, seq, base, draw)
            moved.append({"name": f"{name} draw {draw}", "group": f"real {split}", "sequence": moved_seq,
                          "truth": truth, "roi": roi, "labels": None})
        frames = add_rician_noise(base, np.random.default_rng([91000, index]), 30.0)
        still.append({"name": f"still {name}", "group": f"real {split}", "sequence": seq.replace(frames=frames), "roi": roi})
    return moved, still, raw


def evaluate(engine: str, options: dict, moved, still, raw) -> dict:
    rows = {"moved": [], "still": [], "raw": []}
    seconds = []
    for case in moved:
        seq, truth, roi = case["sequence"], case["truth"], case["roi"]
        r = register(seq, engine=engine, device="cpu", **options)
        seconds.append(r.seconds)
        before = relative_epe(np.zeros_like(truth), truth, roi, spacing_mm=seq.spacing_mm)
        after = relative_epe(r.displacement, truth, roi, spacing_mm=seq.spacing_mm)
        row = {"case": case["name"], "group": case["group"], "ratio": round(after / before, 4), "before_mm": round(before, 3),
               "folding_percent": round(r.folding_percent, 4), "seconds": round(r.seconds, 3),
               "fallback": bool(r.params.get("do_no_harm", {}).get("fallback", False))}
        if case["labels"] is not None:
            row["dice_myocardium_before"] = round(all_pair_dice(case["labels"], (2,))[2], 4)
            row["dice_myocardium"] = round(all_pair_dice(warp_labels(case["labels"], r.displacement), (2,))[2], 4)
        rows["moved"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for case in still:
        seq, roi = case["sequence"], case["roi"]
        r = register(seq, engine=engine, device="cpu", **options)
        seconds.append(r.seconds)
        invented = relative_epe(r.displacement, np.zeros_like(r.displacement), roi, spacing_mm=seq.spacing_mm)
        rows["still"].append({"case": case["name"], "group": case["group"], "invented_mm": round(invented, 4),
                              "fallback": bool(r.params.get("do_no_harm", {}).get("fallback", False))})
        print(json.dumps(rows["still"][-1]), file=sys.stderr, flush=True)
    for name, seq, roi in raw:
        r = register(seq, engine=engine, device="cpu", **options)
        seconds.append(r.seconds)
        row = {"case": name, "alignment_before": round(alignment_score(seq.frames, roi), 4),
               "alignment": round(alignment_score(r.registered, roi), 4), "seconds": round(r.seconds, 3)}
        if seq.kind == "molli" and seq.timings_ms is not None:
            row["r2_before"] = round(_fit_quality(seq, seq.frames, roi)["r2_median"], 4)
            row["r2"] = round(_fit_quality(seq, r.registered, roi)["r2_median"], 4)
        rows["raw"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    decay = {"moved": [r for r in rows["moved"] if r["group"] == DECAY_GROUP], "still": [r for r in rows["still"] if r["group"] == DECAY_GROUP]}
    main_moved = [r for r in rows["moved"] if r["group"] != DECAY_GROUP]
    main_still = [r for r in rows["still"] if r["group"] != DECAY_GROUP]
    ratios = [row["ratio"] for row in main_moved]
    invented = [row["invented_mm"] for row in main_still]
    worse = sum(row["ratio"] > 1.0 for row in main_moved) + sum(row["alignment"] < row["alignment_before"] for row in rows["raw"])
    dice = [row["dice_myocardium"] for row in main_moved if "dice_myocardium" in row]
    seconds = seconds[: len(main_moved)] + seconds[len(rows["moved"]): len(rows["moved"]) + len(main_still)] + seconds[len(rows["moved"]) + len(rows["still"]):]
    return {
        "decay_median_ratio": round(statistics.median([r["ratio"] for r in decay["moved"]]), 4) if decay["moved"] else None,
        "decay_worst_ratio": round(max(r["ratio"] for r in decay["moved"]), 4) if decay["moved"] else None,
        "decay_invented_max_mm": round(max(r["invented_mm"] for r in decay["still"]), 4) if decay["still"] else None,
        "median_ratio": round(statistics.median(ratios), 4),
        "worst_ratio": round(max(ratios), 4),
        "median_ratio_phantom": round(statistics.median([r["ratio"] for r in main_moved if r["group"] == "phantom"]), 4),
        "median_ratio_real_held_out": round(statistics.median([r["ratio"] for r in main_moved if r["group"] == "real held-out"] or [float("nan")]), 4),
        "invented_max_mm": round(max(invented), 4),
        "invented_mean_mm": round(statistics.mean(invented), 4),
        "dice_myocardium_median": round(statistics.median(dice), 4) if dice else None,
        "series_worse_than_identity": int(worse),
        "fallbacks": sum(r["fallback"] for r in main_moved + main_still),
        "median_seconds": round(statistics.median(seconds), 3),
        "rows": rows,
    }


def _decay_cell(res: dict) -> str:
    if res.get("decay_median_ratio") is None:
        return "not run"
    return f"{res['decay_median_ratio']:.3f} / {res['decay_worst_ratio']:.3f}, {res['decay_invented_max_mm']:.3f}"


def to_markdown(results: list[dict]) -> str:
    lines = [
        "# Inference configurations on the independent validation set (issue 22)",
        "",
        "Built by `benchmarks/validation_generator.py` (another phantom and motion model than training; "
        "seeds in `validate_fullres.py`); `python benchmarks/validate_fullres.py`. One CPU thread.",
        "",
        "| configuration | median EPE ratio | worst | phantoms | real held-out | invented max / mean (mm) | myocardium Dice | worse than identity | raw PCA share (STONE, kidney z1, ACDC, kidney z0) | kidney R² z1 / z0 | median s | T2-prep + MGE: median / worst EPE ratio, invented max (mm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        raw = {row["case"]: row for row in res["rows"]["raw"]}
        pca = ", ".join(f"{raw[c.name]['alignment']:.3f}" for c in CASES if c.name in raw)
        r2 = " / ".join(f"{raw[n]['r2']:.3f}" for n in ("kidney MOLLI z1", "kidney MOLLI z0") if n in raw and "r2" in raw[n])
        lines.append(
            f"| {res['config']} | {res['median_ratio']:.3f} | {res['worst_ratio']:.3f} | {res['median_ratio_phantom']:.3f} | "
            f"{res['median_ratio_real_held_out']:.3f} | {res['invented_max_mm']:.3f} / {res['invented_mean_mm']:.3f} | "
            f"{res['dice_myocardium_median']} | {res['series_worse_than_identity']} | {pca} | {r2} | {res['median_seconds']:.2f} | {_decay_cell(res)} |")
    if results:
        raw0 = results[0]["rows"]["raw"]
        lines += ["", "Unregistered: PCA share " + ", ".join(f"{row['case']} {row['alignment_before']:.3f}" for row in raw0)
                  + "; kidney R² " + ", ".join(f"{row['case']} {row['r2_before']:.3f}" for row in raw0 if "r2_before" in row)
                  + ". Moved-phantom myocardium Dice before registration: median "
                  + f"{statistics.median([r['dice_myocardium_before'] for r in results[0]['rows']['moved'] if 'dice_myocardium_before' in r]):.3f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated configuration letters / names")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "validate_fullres"))
    parser.add_argument("--weights", default=None, help="run the chosen any2reg configurations with these weights instead (rows tagged --tag)")
    parser.add_argument("--tag", default=None, help="label of --weights in the row names, e.g. v12")
    args = parser.parse_args(argv)
    if args.weights:
        tag = args.tag or Path(args.weights).stem
        for name, (engine, options) in list(CONFIGS.items()):
            if engine.startswith("any2reg") and (args.only is None or any(name.split()[0] == w or name == w for w in args.only.split(","))):
                CONFIGS[f"{name} [{tag}]"] = (engine, dict(options, weights=str(Path(args.weights).resolve())))
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    jsonl = out.with_suffix(".jsonl")
    done = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            row = json.loads(line)
            done[row["config"]] = row
    wanted = [name for name in CONFIGS if args.only is None or any(name.split()[0] == w or name == w for w in args.only.split(","))]
    if args.weights:
        wanted = [name for name in wanted if name.endswith(f"[{args.tag or Path(args.weights).stem}]")]
    known = list(CONFIGS) + [name for name in done if name not in CONFIGS]  # rows of other weights are kept
    moved, still, raw = build_cases()
    for name in wanted:
        engine, options = CONFIGS[name]
        start = time.perf_counter()
        result = {"config": name, "engine": engine, "options": options, **evaluate(engine, options, moved, still, raw)}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        done[name] = result
        jsonl.write_text("".join(json.dumps(done[n]) + "\n" for n in known if n in done))
        out.with_suffix(".md").write_text(to_markdown([done[n] for n in known if n in done]))
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
