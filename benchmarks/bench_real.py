"""Real-data validation of every engine (run on demand, not a test).

    python benchmarks/bench_real.py                    # everything, CPU
    python benchmarks/bench_real.py --quick            # one draw per amplitude, no timing
    python benchmarks/bench_real.py --candidate weights/any2reg-v2.pt          # add a checkpoint / weights file

Data: the real public slices in ``../shared/data/real`` (skipped cleanly when absent; never
copied into the project). The **split** is fixed here and never used to choose a model:

* ``held-out`` — STONE T1 mapping (cardiac, 320 x 320, N = 11) and kidney MOLLI slice z1:
  never used in training, nor for model selection;
* ``training-base`` — ACDC cine and kidney MOLLI slice z0: their pre-aligned frames were
  used (with other random motions) for semi-synthetic training of ``any2reg-v2`` .. ``-v6``; reported
  for completeness, they say nothing about generalisation.

Sections (written to ``<out>.json`` and ``<out>.md``):

1. **Raw real series** — model-free: share of variance in the first two principal
   components inside an organ ROI (:func:`core.metrics.alignment_score`, higher = better
   aligned), and where the inversion times are known (kidney MOLLI) the median T1-fit R^2 in
   the ROI and the share of ROI pixels with R^2 > 0.95; folding %, seconds.
2. **Semi-synthetic real** — the series pre-aligned by ``groupwise`` (the alignment floor;
   note it favours ``groupwise`` if anything, being its own solution; ``--base xcoreg`` uses
   the other classical engine, ``--base model`` a motion-free regeneration of the aligned
   series from per-pixel model maps, see :data:`BASE_ENGINE`), then moved by a known
   smooth breathing motion (:func:`core.semisynthetic.breathing_motion`: translation 5–25 mm
   peak to peak decaying away from the organ, rotation up to 4°, 1.5 mm non-rigid). Score:
   relative end-point error in the ROI after / before (0 = perfect, 1 = nothing done).
3. **Motion-free controls** — nothing moves, only contrast changes (and noise): the
   relative motion an engine returns is pure harm (mm, in the ROI). Real: the pre-aligned
   series with fresh Rician noise (SNR 30) so that no engine sits at its own fixed point;
   phantom: MOLLI 5(3)3 with null crossings, no motion, SNR 40 (anatomy seeds >= 30000).
4. **Timing** — ``any2reg`` N = 11 at 192 x 192 (median of 7, one and two threads), and the
   per-frame cost from N = 8 to 500.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_any2reg import _register  # noqa: E402  (the same timed register() call)
from bench_any2reg import methods as base_methods  # noqa: E402
from bench_engines import machine_description  # noqa: E402

from napari_any2reg.core.mapping import fit_t1  # noqa: E402
from napari_any2reg.core.metrics import alignment_score, relative_epe  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.semisynthetic import add_rician_noise, breathing_motion, motion_free_series, move_frames  # noqa: E402
from napari_any2reg.core.sequence import Sequence  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
V1_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "any2reg-v1.pt"


@dataclasses.dataclass(frozen=True)
class RealCase:
    name: str
    file: str
    split: str  # "held-out" or "training-base"
    centre_px: tuple[float, float]  # organ centre (y, x), read off the images
    radius_px: float | None = None  # circular ROI, or
    box: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1)

    def roi(self, shape: tuple[int, int]) -> np.ndarray:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        if self.box is not None:
            y0, y1, x0, x1 = self.box
            return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        return (yy - self.centre_px[0]) ** 2 + (xx - self.centre_px[1]) ** 2 <= self.radius_px**2


CASES = [
    # heart: LV centre at (170, 145), ROI takes in LV, RV and the septum (86 mm across)
    RealCase("STONE (cardiac T1)", "stone_0138_slice4_t1map.nii.gz", "held-out", (170.0, 150.0), radius_px=55.0),
    # both kidneys and the spine between them
    RealCase("kidney MOLLI z1", "kidney_molli_mdreg_z1.tif", "held-out", (130.0, 128.0), box=(60, 200, 30, 226)),
    RealCase("ACDC cine", "acdc_patient101_slice3_cine.nii.gz", "training-base", (140.0, 95.0), radius_px=45.0),
    RealCase("kidney MOLLI z0", "kidney_molli_mdreg_z0.tif", "training-base", (130.0, 128.0), box=(60, 200, 30, 226)),
]
AMPLITUDES_MM = (5.0, 10.0, 15.0, 25.0)


def methods(candidate: str | None, v1: bool) -> list[tuple[str, str | None, dict]]:
    out = base_methods({}) + [("any2reg (no coarse stage)", "any2reg", {"coarse": False}),
                              ("any2reg-io (instance refinement)", "any2reg-io", {"refinement": "instance"})]
    from napari_any2reg.core.engines.any2reg import DEFAULT_ORIENTATIONS

    other = 2 if DEFAULT_ORIENTATIONS == 1 else 1  # the test-time orientation ablation
    out.append((f"any2reg ({other} orientation{'s' if other > 1 else ''})", "any2reg", {"orientations": other}))
    if v1 and V1_WEIGHTS.is_file():
        out.append(("any2reg-v1", "any2reg", {"weights": str(V1_WEIGHTS), "coarse": False}))
    if candidate:
        out.append((f"candidate {Path(candidate).parent.name}/{Path(candidate).name}", "any2reg", {"weights": candidate}))
    return out


def _fit_quality(sequence: Sequence, frames: np.ndarray, roi: np.ndarray) -> dict[str, float]:
    fit = fit_t1(frames, sequence.timings_ms, "molli", mask=roi, device="cpu")
    r2 = fit.r_squared[roi]
    r2 = np.where(np.isfinite(r2), r2, 0.0)  # a failed fit counts as R^2 = 0
    return {"r2_median": float(np.median(r2)), "r2_above_095": float(np.mean(r2 > 0.95))}


def _raw_scores(sequence: Sequence, frames: np.ndarray, roi: np.ndarray) -> dict[str, float]:
    """The model-free scores of the raw section: PCA share, and T1-fit R^2 for MOLLI with timings."""
    scores = {"alignment": alignment_score(frames, roi)}
    if sequence.timings_ms is not None and sequence.kind == "molli":
        scores.update(_fit_quality(sequence, frames, roi))
    return scores


def raw_rows(cases, method_list, sequences):
    rows = []
    for case in cases:
        seq = sequences[case.name]
        roi = case.roi(seq.shape)
        for name, engine, options in method_list:
            _, registered, seconds, folding = _register(seq, engine, options)
            row = {"case": case.name, "split": case.split, "method": name, **_raw_scores(seq, registered, roi),
                   "folding_percent": folding, "seconds": seconds}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


#: What the semi-synthetic / motion-free base is (``--base``): the series pre-aligned by an
#: engine (``groupwise``, ``xcoreg``: that engine's own solution, which favours it), or
#: ``model``: pre-aligned by ``groupwise`` and then regenerated from per-pixel parameter maps
#: (:func:`core.semisynthetic.motion_free_series`: the MOLLI model where the inversion times
#: are known, else a rank-2 temporal model), motion-free by construction and no engine's
#: fixed point. A model base is noise-free: moved frames get Rician noise (SNR 30) after the
#: motion, as a scanner would add it.
BASE_ENGINE = "groupwise"
BASE_SNR = 30.0


def aligned_base(seq: Sequence) -> np.ndarray:
    """The semi-synthetic base of ``seq`` (see :data:`BASE_ENGINE`)."""
    if BASE_ENGINE != "model":
        return register(seq, engine=BASE_ENGINE, device="cpu").registered
    aligned = register(seq, engine="groupwise", device="cpu").registered
    series, how = motion_free_series(seq.replace(frames=aligned), rank=2)
    print(json.dumps({"base": how, "frames": seq.n_frames}), flush=True)
    return series


def semisynthetic_rows(cases, method_list, bases, sequences, draws: int):
    rows = []
    for case in cases:
        seq, base = sequences[case.name], bases[case.name]
        roi = case.roi(seq.shape)
        for amplitude in AMPLITUDES_MM:
            for draw in range(draws):
                rng = np.random.default_rng([4242, int(amplitude), draw, CASES.index(case)])
                truth = breathing_motion(rng, seq.n_frames, seq.shape, seq.spacing_mm, translation_mm=amplitude,
                                         rotation_deg=4.0, nonrigid_mm=1.5, centre_px=case.centre_px, decay_mm=70.0)
                moved_frames = move_frames(base, truth)
                if BASE_ENGINE == "model":
                    moved_frames = add_rician_noise(moved_frames, np.random.default_rng([555, int(amplitude), draw, CASES.index(case)]), BASE_SNR)
                moved = seq.replace(frames=moved_frames)
                before = relative_epe(np.zeros_like(truth), truth, roi, spacing_mm=seq.spacing_mm)
                for name, engine, options in method_list:
                    if engine is None:
                        continue
                    displacement, _, seconds, folding = _register(moved, engine, options)
                    after = relative_epe(displacement, truth, roi, spacing_mm=seq.spacing_mm)
                    row = {"case": case.name, "split": case.split, "amplitude_mm": amplitude, "draw": draw, "method": name,
                           "epe_before_mm": before, "epe_after_mm": after, "epe_ratio": after / before,
                           "folding_percent": folding, "seconds": seconds}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def still_rows(cases, method_list, bases, sequences, phantom_seeds):
    rows = []
    controls = []
    for case in cases:
        seq = sequences[case.name]
        noisy = add_rician_noise(bases[case.name], np.random.default_rng([777, CASES.index(case)]), BASE_SNR)
        controls.append((case.name, case.split, seq.replace(frames=noisy), case.roi(seq.shape)))
    for seed in phantom_seeds:
        phantom = make_phantom("molli", seed=seed, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=0.0, rotation_deg=0.0,
                               nonrigid_mm=0.0, snr=40.0)
        controls.append((f"phantom MOLLI (seed {seed})", "held-out", phantom.sequence, phantom.heart_mask))
    for label, split, seq, roi in controls:
        zero = np.zeros((seq.n_frames, 2) + seq.shape, np.float32)
        # the raw scores of the control itself: an engine that raises them on a series with no
        # motion shows how much of its raw-series "gain" comes from invented motion and the
        # smoothing of interpolation (the bias of the model-free scores)
        truth_scores = _raw_scores(seq, seq.frames, roi)
        for name, engine, options in method_list:
            if engine is None:
                continue
            displacement, registered, seconds, folding = _register(seq, engine, options)
            row = {"case": label, "split": split, "method": name,
                   "spurious_mm": relative_epe(displacement, zero, roi, spacing_mm=seq.spacing_mm),
                   "folding_percent": folding, "seconds": seconds,
                   "still_scores": _raw_scores(seq, registered, roi), "still_scores_none": truth_scores}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def timing(sizes=(8, 16, 32, 64, 128, 256, 500)):
    """any2reg: N = 11 at 192 x 192 (median of 7, 1 and 2 threads) and the N sweep (2 threads)."""
    out = {}
    stone = make_phantom("stone", seed=30100, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=10.0).sequence
    previous = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        register(stone, engine="any2reg", device="cpu")  # warm-up
        out[f"n11_192_seconds_{threads}_threads"] = statistics.median(register(stone, engine="any2reg", device="cpu").seconds for _ in range(7))
    torch.set_num_threads(2)
    base = make_phantom("ir", seed=30101, n_frames=max(sizes), shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=10.0).sequence
    sweep = []
    for n in sizes:
        seq = base.replace(frames=base.frames[:n], timings_ms=base.timings_ms[:n])
        seconds = statistics.median(register(seq, engine="any2reg", device="cpu").seconds for _ in range(3 if n <= 128 else 1))
        sweep.append({"n_frames": n, "seconds": seconds, "ms_per_frame": 1000 * seconds / n})
        print(json.dumps(sweep[-1]), flush=True)
    torch.set_num_threads(previous)
    out["sweep"] = sweep
    return out


def _median(values):
    return float(np.median(values)) if values else float("nan")


def to_markdown(data) -> str:
    lines = ["# Real-data validation", "", f"Machine: {data['machine']}", "",
             f"Engines as shipped (`any2reg` = {data['default_weights']}). Split: held-out = STONE, kidney z1 "
             "(never trained on, never used to choose a model); training-base = ACDC cine, kidney z0 (their "
             "pre-aligned frames were used for semi-synthetic training). Regenerate: `python benchmarks/bench_real.py`.", ""]
    if data.get("base") == "model":
        lines += ["Semi-synthetic and motion-free base: `--base model` — the real series pre-aligned by `groupwise`, then "
                  "regenerated from per-pixel maps (kidney MOLLI: the fitted MOLLI signal model; STONE and cine: a rank-2 "
                  "temporal model; `core.semisynthetic.motion_free_series`), so the frames share one anatomy by construction "
                  "and no engine sits at its own solution; Rician noise (SNR 30) is added after the known motion.", ""]
    else:
        lines += [f"Semi-synthetic and motion-free base: the real series pre-aligned by `{data.get('base', 'groupwise')}` "
                  "(that engine's own solution, which favours it).", ""]
    if data.get("split") == "held-out":
        lines += ["This run covers the semi-synthetic and motion-free sections on the held-out cases only "
                  "(`--split held-out`; the training-base column is therefore empty)"
                  + ("; the raw section covers all four." if data.get("raw") else "."), ""]
    if data.get("reused_rows"):
        ran = data.get("recomputed") or []
        sections = data.get("sections") or []
        again = (f"the sections {', '.join(sections)} ran again for {', '.join(ran)}" if ran and set(sections) - {"timing"}
                 else "only the timing section ran again")
        lines += [f"{data['reused_rows']} rows were kept from an earlier run of this script with the same data and the "
                  f"same code for those methods (`--reuse`); {again}. Seconds of kept rows may come from a busier machine.", ""]
    method_names = [m for m in data["methods"] if any(r["method"] == m for r in data["raw"] + data["semisynthetic"] + data["still"])]
    case_order = [c.name for c in CASES]
    data = dict(data, raw=sorted(data["raw"], key=lambda r: (case_order.index(r["case"]), method_names.index(r["method"]))))
    semi = data["semisynthetic"]
    if semi:
        lines += ["## Semi-synthetic real (known injected motion)", "",
                  "Median relative EPE ratio (after / before, ROI) over amplitudes 5–25 mm; mean EPE in mm after (before).", "",
                  "| method | held-out median ratio | held-out mean EPE mm | training-base median ratio | folding % (max) | mean seconds |",
                  "|---|---|---|---|---|---|"]
        for m in method_names:
            if m == "none":
                continue
            held = [r for r in semi if r["method"] == m and r["split"] == "held-out"]
            train = [r for r in semi if r["method"] == m and r["split"] == "training-base"]
            if not held and not train:
                continue
            before = np.mean([r["epe_before_mm"] for r in held]) if held else float("nan")
            lines.append(f"| {m} | {_median([r['epe_ratio'] for r in held]):.3f} | {np.mean([r['epe_after_mm'] for r in held]):.2f} ({before:.2f}) | "
                         f"{_median([r['epe_ratio'] for r in train]):.3f} | {max(r['folding_percent'] for r in held + train):.3f} | "
                         f"{np.mean([r['seconds'] for r in held + train]):.2f} |")
        lines += ["", "Per case and amplitude (median ratio over draws):", "",
                  "| case | amplitude mm | " + " | ".join(m for m in method_names if m != "none") + " |",
                  "|---|---|" + "---|" * len([m for m in method_names if m != "none"])]
        for case in dict.fromkeys(r["case"] for r in semi):
            for amp in AMPLITUDES_MM:
                cells = []
                for m in method_names:
                    if m == "none":
                        continue
                    cells.append(f"{_median([r['epe_ratio'] for r in semi if r['case'] == case and r['amplitude_mm'] == amp and r['method'] == m]):.3f}")
                lines.append(f"| {case} | {amp:g} | " + " | ".join(cells) + " |")
    raw = data["raw"]
    if raw:
        lines += ["", "## Raw real series (model-free)", "",
                  "PCA share of the first 2 components in the ROI (higher = better aligned); kidney MOLLI also the median "
                  "T1-fit R^2 in the ROI and the share of ROI pixels with R^2 > 0.95.", "",
                  "| case | split | method | PCA share | R^2 median | R^2 > 0.95 | folding % | seconds |", "|---|---|---|---|---|---|---|---|"]
        for r in raw:
            r2 = f"{r['r2_median']:.4f}" if "r2_median" in r else "–"
            r2b = f"{100 * r['r2_above_095']:.1f} %" if "r2_above_095" in r else "–"
            lines.append(f"| {r['case']} | {r['split']} | {r['method']} | {r['alignment']:.4f} | {r2} | {r2b} | {r['folding_percent']:.3f} | {r['seconds']:.2f} |")
    still = data["still"]
    if still:
        lines += ["", "## Motion-free controls (spurious relative motion, mm in the ROI; target < 0.2)", "",
                  "| case | " + " | ".join(m for m in method_names if m != "none") + " |", "|---|" + "---|" * len([m for m in method_names if m != "none"])]
        for case in dict.fromkeys(r["case"] for r in still):
            cells = []
            for m in method_names:
                if m == "none":
                    continue
                sel = [r["spurious_mm"] for r in still if r["case"] == case and r["method"] == m]
                cells.append(f"{sel[0]:.3f}" if sel else "–")
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        scored = [r for r in still if "still_scores" in r]
        if scored:
            shown = [m for m in method_names if m != "none" and any(r["method"] == m for r in scored)]
            lines += ["", "Bias of the raw-series scores: PCA share (and T1-fit R^2 median for MOLLI) of the same "
                      "motion-free controls, as given (`none`, the truth) and after each engine. Whatever an engine adds "
                      "here is not alignment: it comes from invented motion and the smoothing of interpolation, and it is "
                      "part of every raw-series gain above.", "",
                      "| case | score | none | " + " | ".join(shown) + " |", "|---|---|---|" + "---|" * len(shown)]
            for case in dict.fromkeys(r["case"] for r in scored):
                sel = {r["method"]: r for r in scored if r["case"] == case}
                first = next(iter(sel.values()))
                for key, label in (("alignment", "PCA share"), ("r2_median", "R^2 median")):
                    if key not in first["still_scores_none"]:
                        continue
                    cells = [f"{sel[m]['still_scores'][key]:.4f}" if m in sel else "–" for m in shown]
                    lines.append(f"| {case} | {label} | {first['still_scores_none'][key]:.4f} | " + " | ".join(cells) + " |")
    t = data.get("timing")
    if t:
        lines += ["", "## Inference time (`any2reg`, CPU)", "",
                  f"N = 11 at 192 x 192, whole `register()` call incl. coarse stage and correspondence maps: median "
                  f"{t['n11_192_seconds_1_threads']:.3f} s (1 thread), {t['n11_192_seconds_2_threads']:.3f} s (2 threads).", "",
                  "| N | seconds | ms per frame |", "|---|---|---|"]
        lines += [f"| {s['n_frames']} | {s['seconds']:.3f} | {s['ms_per_frame']:.1f} |" for s in t["sweep"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one draw per amplitude, no timing")
    parser.add_argument("--draws", type=int, default=2, help="random motions per amplitude and case (default: %(default)s)")
    parser.add_argument("--candidate", default=None, metavar="PT", help="also score this checkpoint (training/.../best.pt)")
    parser.add_argument("--no-v1", action="store_true", help="do not score the previous weights any2reg-v1")
    parser.add_argument("--sections", default="raw,semi,still,timing", help="comma-separated subset of raw,semi,still,timing")
    parser.add_argument("--phantom-seeds", type=int, nargs="+", default=[30001, 30002, 30003])
    parser.add_argument("--split", choices=("all", "held-out"), default="all", help="cases of the semi-synthetic and motion-free sections")
    parser.add_argument("--reuse", default=None, metavar="JSONL",
                        help="rows of an earlier run (one JSON row per line, as printed) kept for the methods not in --recompute")
    parser.add_argument("--recompute", default=None, metavar="M1,M2", help="with --reuse: the methods to run again (e.g. after an engine change)")
    parser.add_argument("--base", default="groupwise", choices=("groupwise", "xcoreg", "model"),
                        help="engine whose solution is the semi-synthetic / motion-free base (default: %(default)s)")
    parser.add_argument("--methods", default=None, metavar="M1,M2", help="only these methods (names as in the tables)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "real_cpu"))
    args = parser.parse_args(argv)
    global BASE_ENGINE
    BASE_ENGINE = args.base
    sections = set(args.sections.split(","))
    if args.quick:
        args.draws = 1
        sections.discard("timing")
    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
    from napari_any2reg.io import read_sequence

    method_list = methods(args.candidate, not args.no_v1)
    if args.methods:
        wanted = set(args.methods.split(","))
        method_list = [m for m in method_list if m[0] in wanted or m[0] == "none"]
    reused: list[dict] = []
    again = set(args.recompute.split(",")) if args.recompute else {m[0] for m in method_list}
    if args.reuse:
        # a reused row stays unless its section runs now for its method
        section_of = {"alignment": "raw", "epe_ratio": "semi", "spurious_mm": "still"}
        known = {m[0] for m in methods(args.candidate, not args.no_v1)}
        for row in map(json.loads, Path(args.reuse).read_text().splitlines()):
            section = next(v for k, v in section_of.items() if k in row)
            if row["method"] not in known:  # a variant this version no longer runs
                continue
            if section not in sections or (row["method"] not in again and row["method"] != "none"):
                reused.append(row)
    method_list = [m for m in method_list if m[0] in again or m[0] == "none"]
    cases = CASES if args.split == "all" else [c for c in CASES if c.split == "held-out"]
    data = {"machine": machine_description(), "default_weights": DEFAULT_WEIGHTS, "draws": args.draws, "base": args.base,
            "methods": [m[0] for m in methods(args.candidate, not args.no_v1) if not args.methods or m[0] in args.methods.split(",") or m[0] == "none"], "split": args.split, "raw": [], "semisynthetic": [], "still": [], "timing": None}
    if REAL.is_dir():
        sequences = {c.name: read_sequence(REAL / c.file) for c in CASES}
        bases = {c.name: aligned_base(sequences[c.name]) for c in cases} if sections & {"semi", "still"} else {}
        if "raw" in sections:
            data["raw"] = raw_rows(CASES, method_list, sequences)
        if "semi" in sections:
            data["semisynthetic"] = semisynthetic_rows(cases, method_list, bases, sequences, args.draws)
        if "still" in sections:
            data["still"] = still_rows(cases, method_list, bases, sequences, args.phantom_seeds)
    else:
        print(f"{REAL} is absent: real-data sections skipped", flush=True)
    if reused:  # earlier rows of the methods not run again, for the cases this run covers
        names = {c.name for c in cases}
        data["raw"] = [r for r in reused if "alignment" in r and not (r["method"] == "none" and "raw" in sections)] + data["raw"]
        data["semisynthetic"] = [r for r in reused if "epe_ratio" in r and r["case"] in names] + data["semisynthetic"]
        data["still"] = [r for r in reused if "spurious_mm" in r and (r["case"] in names or r["case"].startswith("phantom"))] + data["still"]
        data["reused_rows"] = len(reused)
        data["recomputed"] = sorted(again & {m[0] for m in method_list})
        data["sections"] = sorted(sections)
    if "timing" in sections:
        data["timing"] = timing()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2, default=float))
    out.with_suffix(".md").write_text(to_markdown(data))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
