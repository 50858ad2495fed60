"""Any2Reg against the classical engines and its ablations (run on demand, not a test).

    python benchmarks/bench_any2reg.py                       # full table, CPU
    python benchmarks/bench_any2reg.py --quick               # one seed, no scaling sweep
    python benchmarks/bench_any2reg.py --ablation mean=training/ablation-mean/best.pt \\
                                       --ablation no-auxiliary=training/ablation-noaux/best.pt

Writes ``<out>.json`` and ``<out>.md`` with, for every method:

* held-out phantoms (anatomy seeds >= 30000; training uses < 10000, validation 10000-10005):
  MOLLI 5(3)3, MOLLI 4(1)3(1)2, STONE-like, SASHA-like, cine-like at 192 x 192 / 1.5 mm with
  10 mm breathing motion: relative EPE in the heart (mm), landmark TRE (mm, RV insertion points
  and LV centre, through the inverse map), all-pair Dice of the warped phantom labels (mean of
  LV, myocardium, RV), folding %, seconds (the whole ``register()`` call);
* the two shared real slices (when ``../shared`` is present): model-free alignment score
  before / after, folding %, seconds;
* inference time of ``any2reg`` for N = 11 at 192 x 192 (median of 5 after a warm-up), and the
  time for N = 8 ... 128 with a least-squares line (per-frame slope, R^2).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engines import machine_description  # noqa: E402

from napari_any2reg.core.metrics import all_pair_dice, alignment_score, landmark_tre, relative_epe  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.spatial import warp_labels  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
REAL_CASES = [("STONE real (320x320, N=11)", "stone_0138_slice4_t1map.nii.gz"), ("ACDC cine real (N=30)", "acdc_patient101_slice3_cine.nii.gz")]
PHANTOM_CASES = [
    ("MOLLI 5(3)3", "molli", {"schedule": "5(3)3"}),
    ("MOLLI 4(1)3(1)2", "molli", {"schedule": "4(1)3(1)2"}),
    ("STONE-like", "stone", {}),
    ("SASHA-like", "sasha", {}),
    ("cine-like", "cine", {}),
]
TRUTH = dict(shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=10.0)


def methods(ablations: dict[str, str]) -> list[tuple[str, str | None, dict]]:
    out: list[tuple[str, str | None, dict]] = [
        ("none", None, {}),
        ("groupwise", "groupwise", {}),
        ("xcoreg", "xcoreg", {}),
        ("any2reg", "any2reg", {}),
        ("any2reg-io", "any2reg-io", {}),
    ]
    for name, path in ablations.items():
        out.append((f"any2reg ({name})", "any2reg", {"weights": path}))
    return out


def _register(sequence, engine, options):
    start = time.perf_counter()
    if engine is None:
        n, h, w = sequence.frames.shape
        return np.zeros((n, 2, h, w), np.float32), sequence.frames, 0.0, 0.0
    result = register(sequence, engine=engine, device="cpu", **options)
    seconds = time.perf_counter() - start
    return result.displacement, result.registered, seconds, result.folding_percent


def phantom_rows(seeds, method_list):
    rows = []
    for label, kind, opts in PHANTOM_CASES:
        for seed in seeds:
            phantom = make_phantom(kind, seed=seed, **TRUTH, **opts)
            seq = phantom.sequence
            for name, engine, options in method_list:
                displacement, _, seconds, folding = _register(seq, engine, options)
                warped_labels = warp_labels(phantom.labels, displacement)
                dice = all_pair_dice(warped_labels)
                row = {
                    "case": label, "seed": seed, "n_frames": seq.n_frames, "method": name,
                    "epe_mm": relative_epe(displacement, phantom.displacement, phantom.heart_mask, spacing_mm=seq.spacing_mm),
                    "tre_mm": landmark_tre(phantom.landmarks, None if engine is None else displacement, seq.spacing_mm)["overall"],
                    "dice": float(np.mean(list(dice.values()))),
                    "folding_percent": folding,
                    "seconds": seconds,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def real_rows(method_list):
    from napari_any2reg.io import read_sequence

    rows = []
    if not REAL.is_dir():
        print("../shared/data/real is absent: real slices skipped", flush=True)
        return rows
    for label, name in REAL_CASES:
        seq = read_sequence(REAL / name)
        for method, engine, options in method_list:
            _, registered, seconds, folding = _register(seq, engine, options)
            row = {"case": label, "n_frames": seq.n_frames, "method": method, "alignment": alignment_score(registered),
                   "folding_percent": folding, "seconds": seconds}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def timing(sizes=(8, 16, 32, 64, 128), repeats=3):
    """any2reg inference time: N = 11 at 192x192 (median of 5), and the N sweep."""
    stone = make_phantom("stone", seed=30100, **TRUTH).sequence
    register(stone, engine="any2reg", device="cpu")  # warm-up (loads the weights)
    n11 = [register(stone, engine="any2reg", device="cpu").seconds for _ in range(5)]
    n11_network_only = [register(stone, engine="any2reg", device="cpu", scores=False).seconds for _ in range(5)]
    sweep = []
    base = make_phantom("ir", seed=30101, n_frames=max(sizes), **TRUTH).sequence
    for n in sizes:
        seq = base.replace(frames=base.frames[:n], timings_ms=base.timings_ms[:n])
        seconds = statistics.median(register(seq, engine="any2reg", device="cpu").seconds for _ in range(repeats))
        sweep.append({"n_frames": n, "seconds": seconds})
        print(json.dumps(sweep[-1]), flush=True)
    x = np.array([s["n_frames"] for s in sweep], float)
    y = np.array([s["seconds"] for s in sweep], float)
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - (slope * x + intercept)) ** 2) / np.sum((y - y.mean()) ** 2)
    return {
        "n11_192_seconds_median": statistics.median(n11),
        "n11_192_seconds_all": n11,
        "n11_192_network_only_seconds_median": statistics.median(n11_network_only),
        "sweep": sweep,
        "per_frame_slope_ms": 1000 * slope,
        "intercept_ms": 1000 * intercept,
        "linear_fit_r2": r2,
    }


def summarise(rows, keys):
    table: dict[tuple[str, str], dict[str, float]] = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["case"] == case and r["method"] == method]
            if sel:
                table[(case, method)] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
    return table


def to_markdown(machine, phantom, real, timings, ablations, seeds):
    lines = ["# Any2Reg benchmark", "", f"Machine: {machine}", ""]
    lines += [
        "## Held-out phantoms",
        "",
        f"192 x 192 at 1.5 mm, 10 mm breathing motion plus rotation and non-rigid motion, anatomy seeds {seeds} "
        "(never used in training or model selection). EPE: relative end-point error over all frame pairs in "
        "the heart; TRE: landmark error through the inverse map (RV insertion points, LV centre); Dice: all-pair "
        "Dice of the warped labels, mean of LV / myocardium / RV; seconds: the whole `register()` call on the CPU "
        "(for any2reg this includes the AdaCS correspondence maps). Mean over seeds.",
        "",
        "| case | method | EPE (mm) | TRE (mm) | Dice | folding % | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    table = summarise(phantom, ["epe_mm", "tre_mm", "dice", "folding_percent", "seconds"])
    for (case, method), v in table.items():
        lines.append(f"| {case} | {method} | {v['epe_mm']:.2f} | {v['tre_mm']:.2f} | {v['dice']:.3f} | {v['folding_percent']:.3f} | {v['seconds']:.2f} |")
    overall = summarise([dict(r, case="all") for r in phantom], ["epe_mm", "tre_mm", "dice", "folding_percent", "seconds"])
    lines += ["", "Mean over all held-out phantoms:", "", "| method | EPE (mm) | TRE (mm) | Dice | folding % | seconds |", "|---|---|---|---|---|---|"]
    for (_, method), v in overall.items():
        lines.append(f"| {method} | {v['epe_mm']:.2f} | {v['tre_mm']:.2f} | {v['dice']:.3f} | {v['folding_percent']:.3f} | {v['seconds']:.2f} |")
    if real:
        lines += ["", "## Real slices", "", "Model-free alignment score (share of variance in the first 2 principal components, central ROI; higher = better aligned).", "",
                  "| case | method | alignment | folding % | seconds |", "|---|---|---|---|---|"]
        for r in real:
            lines.append(f"| {r['case']} | {r['method']} | {r['alignment']:.4f} | {r['folding_percent']:.3f} | {r['seconds']:.2f} |")
    if timings:
        lines += [
            "",
            "## Inference time (any2reg, CPU)",
            "",
            f"N = 11 at 192 x 192: median {timings['n11_192_seconds_median']:.3f} s for the whole `register()` call "
            f"({timings['n11_192_network_only_seconds_median']:.3f} s without the correspondence maps).",
            "",
            "| N | seconds |",
            "|---|---|",
        ]
        lines += [f"| {s['n_frames']} | {s['seconds']:.3f} |" for s in timings["sweep"]]
        lines += ["", f"Least-squares line: {timings['per_frame_slope_ms']:.1f} ms per frame + {timings['intercept_ms']:.0f} ms (R^2 = {timings['linear_fit_r2']:.4f})."]
    if ablations:
        lines += ["", "Ablation networks: " + ", ".join(f"`{k}` = {v}" for k, v in ablations.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, no timing sweep")
    parser.add_argument("--seeds", type=int, nargs="+", default=[30001, 30002])
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH", help="extra network weights to compare")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true", help="re-measure the timing section and keep the other results of <out>.json")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "any2reg_cpu"))
    args = parser.parse_args(argv)
    ablations = dict(item.split("=", 1) for item in args.ablation)
    seeds = args.seeds[:1] if args.quick else args.seeds
    method_list = methods(ablations)
    machine = machine_description()
    out = Path(args.out)
    if args.timing_only:
        previous = json.loads(out.with_suffix(".json").read_text())
        previous["timing"] = timing()
        previous["timing_machine"] = machine
        out.with_suffix(".json").write_text(json.dumps(previous, indent=2, default=float))
        out.with_suffix(".md").write_text(to_markdown(previous["machine"], previous["phantoms"], previous["real"], previous["timing"],
                                                      previous["ablations"], previous["seeds"]))
        print(f"wrote {out.with_suffix('.md')}")
        return 0
    # load every network once before timing anything (the first use reads and verifies the weights)
    warm = make_phantom("stone", seed=30999, shape=(64, 64), spacing_mm=(4.5, 4.5)).sequence
    for _, engine, options in method_list:
        if engine is not None and engine.startswith("any2reg"):
            register(warm, engine=engine, device="cpu", **options)
    phantom = phantom_rows(seeds, method_list)
    real = [] if args.no_real else real_rows(method_list)
    timings = None if (args.quick or args.no_timing) else timing()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "seeds": seeds, "ablations": ablations, "phantoms": phantom,
                                                    "real": real, "timing": timings}, indent=2, default=float))
    out.with_suffix(".md").write_text(to_markdown(machine, phantom, real, timings, ablations, seeds))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
