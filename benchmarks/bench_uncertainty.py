"""Does the network's per-pixel registration uncertainty mean something? (issue 27 section 2)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_uncertainty.py            # every case (~20)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_uncertainty.py --quick    # 3-case smoke run

``register(..., engine="any2reg")`` returns ``extras["displacement_sd_mm"]`` (N, H, W): the SD in
mm of the displacement over the network's test-time orientations and ``uncertainty_shifts``
extra passes on shifted inputs. This benchmark asks whether that SD is high where the field is
wrong, on cases with a known true displacement the network never trained on: the *moved* cases
of ``validate_fullres.py`` (same recipe and seeds, built by :mod:`validation_generator`):

* torso phantoms of the independent generator (MOLLI, STONE, SASHA, cine, T2-prep, MGE; seeds
  70001-70012 and 70021-70024; half at 192 x 192 / 1.5 mm, half at 224 x 224 / 1.25 mm with a
  failed breath-hold jump), moved by the second motion model, Rician noise;
* the four real slices of ``../shared/data/real`` (STONE and kidney MOLLI z1 held out from
  training, ACDC cine and kidney MOLLI z0 training bases) made motion-free and moved by the
  second motion model, two draws each (draw 1 with a jump).

**True error per pixel.** Both fields are groupwise (mean displacement over frames ~0 at every
pixel, DESIGN.md). A trajectory of the estimate (``y + v_i(y)``, i = 1..N) and the true one
through the same anatomical point have the same centroid under that convention, so the point
``y`` of the estimate's common grid corresponds to the point ``y`` of the true common grid (to
first order in the fields' gradients), and the end-point error of frame ``i`` at ``y`` is
``|(v_i(y) - mean_k v_k(y)) - (u_i(y) - mean_k u_k(y))|`` in mm (the means are removed so that
a residual drift of either field's common grid is not counted as error). ``relative_epe`` of
``validate_fullres.py`` (all frame pairs, invariant to the common grid) is reported beside it.

**Regions.** (a) *heart*: phantoms: the label map of the motion-free phantom (LV blood and
papillary muscles, LV myocardium, RV blood: labels 1-3); real cases: the organ ROI of
``bench_real.CASES`` (a disc of 55 px around the STONE heart and 45 px around the ACDC heart; a
box over both kidneys and the spine for kidney MOLLI: there is no heart there); (b) *body*: the
foreground of the motion-free frames (mean over frames above 10 % of its 99th percentile, holes
filled, opened by 2 px), without a 4-pixel image border. Every (frame, pixel) is one sample.

**Scores** (per case, per region, per variant): Spearman rank correlation between SD and true
EPE; the AUC of the SD as a detector of the pixels with EPE > 1 mm, and of the top decile of EPE
(the 1 mm AUC is left out where fewer than 0.5 % of the pixels or more than 99.5 % exceed
1 mm); the share of pixels with EPE <= 2 SD (about 0.98 for a calibrated Gaussian SD of a 2-D
error: the SD here is sqrt(var_y + var_x)); a *baseline* predictor, the estimated displacement
magnitude |v - mean v| (no extra passes at all), scored the same way. Frame level: the
within-case Spearman over frames of the heart-region mean SD vs mean EPE. Case level: Spearman
over cases of the heart-region 95th percentile of the SD (the verdict's number) vs the case's
mean EPE there. Pooled: all cases' samples together (deterministic subsample of at most
60 000 per case and region), and the median of the per-case values.

**Variants** (``--variants``): ``default`` (the CLI's defaults: since issue 22's row I, the
coarse pass in 2 orientations and the native pass in 1, no shifted inputs; before it, both
passes in 2 orientations, now ``fine-2-orientations``), ``orientations-only``
(``uncertainty_shifts=0``, the default since issue 27), ``4-orientations`` (not a default; a
longer run). The field is the same in all of them for a given number of
orientations (the shifted passes only add to the variance). ``scores=False`` in every run: the
correspondence maps are computed after the field and change neither it nor the SD.

Writes ``benchmarks/results/uncertainty.json`` and ``uncertainty.md``. Requires ``../shared``
for the real cases (skipped, with a note, without it). One CPU thread.
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
from scipy import ndimage, stats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_real import CASES, REAL  # noqa: E402

from napari_any2reg.core.metrics import relative_epe  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402

RESULTS = HERE / "results"
KINDS = ("molli", "stone", "sasha", "cine")
DECAY_KINDS = ("t2prep", "mge")
VARIANTS = {
    "default": {},
    "orientations-only": {"uncertainty_shifts": 0},
    "4-orientations": {"orientations": 4},
    # the default before row I of validate_fullres.md won: both passes in two orientations
    "fine-2-orientations": {"fine_pass_orientations": 2},
}
QUICK = ("torso molli 70001", "torso sasha 70006", "STONE (cardiac T1) draw 0")
MAX_SAMPLES = 60_000
EPE_THRESHOLD_MM = 1.0
BORDER_PX = 4


# ----------------------------------------------------------------------------- cases
def _body_mask(base: np.ndarray) -> np.ndarray:
    mean = np.asarray(base, np.float64).mean(axis=0)
    fg = mean > 0.1 * np.percentile(mean, 99)
    fg = ndimage.binary_fill_holes(fg)
    fg = ndimage.binary_opening(fg, iterations=2)
    fg[:BORDER_PX], fg[-BORDER_PX:], fg[:, :BORDER_PX], fg[:, -BORDER_PX:] = False, False, False, False
    return fg


def phantom_cases(wanted=None):
    """The moved phantoms of ``validate_fullres.build_cases`` (same seeds and order of random draws)."""
    from validate_fullres import moved_phantom, moved_phantom_seed

    for k, kind in enumerate(KINDS + DECAY_KINDS):
        group = "phantom decay" if kind in DECAY_KINDS else "phantom"
        for j in range(2):
            name = f"torso {kind} {moved_phantom_seed(k, kind, j)}"
            if wanted is not None and name not in wanted:
                continue
            p, seq, truth, _ = moved_phantom(k, kind, j)
            yield {"name": name, "group": group, "sequence": seq, "truth": truth, "heart": p.labels > 0,
                   "heart_region": "labels 1-3 (LV blood, myocardium, RV blood)", "body": _body_mask(p.frames)}


def real_cases(wanted=None):
    """The moved real cases of ``validate_fullres.build_cases`` (same bases, seeds and draws)."""
    if not REAL.is_dir():
        print(f"{REAL} is absent: real cases skipped", file=sys.stderr)
        return
    from validate_fullres import _real_bases, moved_real

    for index, (name, (seq, base, roi, split)) in enumerate(_real_bases().items()):
        case = CASES[index]
        how = (f"organ ROI: disc r = {case.radius_px:g} px around {case.centre_px}" if case.box is None
               else f"organ ROI: box {case.box} (kidneys + spine; no heart)")
        for draw in range(2):
            label = f"{name} draw {draw}"
            if wanted is not None and label not in wanted:
                continue
            moved_seq, truth = moved_real(index, seq, base, draw)
            yield {"name": label, "group": f"real {split}", "sequence": moved_seq, "truth": truth,
                   "heart": np.asarray(roi, bool), "heart_region": how, "body": _body_mask(base)}


# ----------------------------------------------------------------------------- scores
def per_pixel_epe_mm(estimated: np.ndarray, truth: np.ndarray, spacing_mm) -> np.ndarray:
    """(N, H, W) end-point error in mm of two groupwise pull-back fields (N, 2, H, W) in pixels,
    each with its per-pixel mean over frames removed (module docstring)."""
    est = np.asarray(estimated, np.float64)
    tru = np.asarray(truth, np.float64)
    diff = (est - est.mean(axis=0, keepdims=True)) - (tru - tru.mean(axis=0, keepdims=True))
    scale = np.asarray(spacing_mm, np.float64).reshape(1, 2, 1, 1)
    return np.sqrt(((diff * scale) ** 2).sum(axis=1))


def displacement_magnitude_mm(estimated: np.ndarray, spacing_mm) -> np.ndarray:
    est = np.asarray(estimated, np.float64)
    est = est - est.mean(axis=0, keepdims=True)
    scale = np.asarray(spacing_mm, np.float64).reshape(1, 2, 1, 1)
    return np.sqrt(((est * scale) ** 2).sum(axis=1))


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney, ties averaged)."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(stats.spearmanr(a, b).statistic)


def _r(value, digits=4):
    return None if value is None else round(float(value), digits)


def scores(sd: np.ndarray, epe: np.ndarray) -> dict:
    """Scores of one predictor ``sd`` against ``epe`` (1-D samples)."""
    share = float((epe > EPE_THRESHOLD_MM).mean())
    auc_1mm = auc(sd, epe > EPE_THRESHOLD_MM) if 0.005 <= share <= 0.995 else None
    top = epe >= np.percentile(epe, 90)
    return {"spearman": _r(spearman(sd, epe)), "auc_epe_gt_1mm": _r(auc_1mm), "share_epe_gt_1mm": _r(share),
            "auc_top_decile": _r(auc(sd, top)), "coverage_2sd": _r(float((epe <= 2 * sd).mean()))}


def _subsample(values: np.ndarray, limit: int = MAX_SAMPLES) -> np.ndarray:
    stride = max(1, int(np.ceil(values.size / limit)))
    return values[::stride]


def evaluate_case(case: dict, variants: list[str], threads: int) -> tuple[dict, dict]:
    """``(row, samples)``: the case's scores and its subsampled (sd, |v|, epe) per variant and region."""
    seq, truth = case["sequence"], case["truth"]
    regions = {"heart": case["heart"], "body": case["body"]}
    row = {"case": case["name"], "group": case["group"], "heart_region": case["heart_region"],
           "shape": list(seq.shape), "n_frames": int(seq.n_frames), "spacing_mm": list(seq.spacing_mm),
           "pixels": {name: int(mask.sum()) for name, mask in regions.items()}, "variants": {}}
    samples: dict = {}
    fields: dict = {}
    for variant in variants:
        options = dict(VARIANTS[variant], scores=False)
        result = register(seq, engine="any2reg", device="cpu", threads=threads, **options)
        sd = result.extras.get("displacement_sd_mm")
        if sd is None:
            raise RuntimeError(f"{case['name']}: variant {variant} returned no displacement SD")
        sd = np.asarray(sd, np.float64)
        field = np.asarray(result.displacement, np.float32)
        epe = per_pixel_epe_mm(field, truth, seq.spacing_mm)
        magnitude = displacement_magnitude_mm(field, seq.spacing_mm)
        key = result.params.get("orientations")
        if key in fields:
            row.setdefault("same_field_check", {})[variant] = _r(float(np.abs(fields[key] - field).max()), 6)
        fields[key] = field
        row["weights"] = f"{Path(str(result.params.get('weights'))).name}, sha256 {str(result.params.get('weights_sha256'))[:12]}"
        entry = {"seconds": round(result.seconds, 2), "fallback": bool(result.params.get("do_no_harm", {}).get("fallback", False)),
                 "uncertainty": result.params.get("uncertainty")}
        for region, mask in regions.items():
            s, e, m = sd[:, mask].ravel(), epe[:, mask].ravel(), magnitude[:, mask].ravel()
            entry[region] = {"sd": scores(s, e), "baseline_magnitude": scores(m, e),
                             "sd_mean_mm": _r(s.mean()), "sd_p95_mm": _r(np.percentile(s, 95)),
                             "epe_mean_mm": _r(e.mean()), "epe_p95_mm": _r(np.percentile(e, 95))}
            samples[(variant, region)] = (_subsample(s), _subsample(m), _subsample(e))
        heart = regions["heart"]
        frame_sd, frame_epe = sd[:, heart].mean(axis=1), epe[:, heart].mean(axis=1)
        entry["heart"]["frames_spearman"] = _r(spearman(frame_sd, frame_epe)) if seq.n_frames >= 5 else None
        entry["relative_epe_heart_mm"] = _r(relative_epe(field, truth, heart, spacing_mm=seq.spacing_mm), 3)
        row["variants"][variant] = entry
    row["relative_epe_heart_before_mm"] = _r(relative_epe(np.zeros_like(truth), truth, case["heart"], spacing_mm=seq.spacing_mm), 3)
    return row, samples


def pooled(rows: list[dict], samples: dict, variants: list[str]) -> dict:
    out = {}
    for variant in variants:
        out[variant] = {}
        for region in ("heart", "body"):
            parts = [samples[(row["case"], variant, region)] for row in rows]
            s = np.concatenate([p[0] for p in parts])
            m = np.concatenate([p[1] for p in parts])
            e = np.concatenate([p[2] for p in parts])
            per_case = [row["variants"][variant][region]["sd"] for row in rows]

            def median(key, values=per_case):
                vals = [v[key] for v in values if v[key] is not None]
                return _r(statistics.median(vals)) if vals else None

            out[variant][region] = {
                "pooled": scores(s, e), "pooled_baseline_magnitude": scores(m, e), "samples": int(s.size),
                "median_over_cases": {k: median(k) for k in ("spearman", "auc_epe_gt_1mm", "auc_top_decile", "coverage_2sd")},
                "median_over_cases_baseline": {k: median(k, [row["variants"][variant][region]["baseline_magnitude"] for row in rows])
                                               for k in ("spearman", "auc_epe_gt_1mm", "auc_top_decile")},
                "cases_spearman_positive": sum((v["spearman"] or 0) > 0 for v in per_case),
                "cases_spearman_above_0.3": sum((v["spearman"] or 0) > 0.3 for v in per_case),
            }
        frames = [row["variants"][variant]["heart"]["frames_spearman"] for row in rows]
        frames = [f for f in frames if f is not None]
        out[variant]["frames_spearman_median"] = _r(statistics.median(frames)) if frames else None
        p95 = [row["variants"][variant]["heart"]["sd_p95_mm"] for row in rows]
        mean_epe = [row["variants"][variant]["heart"]["epe_mean_mm"] for row in rows]
        out[variant]["cases_spearman_sd_p95_vs_epe_mean"] = _r(spearman(np.array(p95), np.array(mean_epe))) if len(rows) >= 3 else None
    return out


# ----------------------------------------------------------------------------- report
def _f(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(data: dict) -> str:
    variants = data["variants"]
    lines = [
        "# Does the per-pixel registration uncertainty mean something? (issue 27 section 2)",
        "",
        f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_uncertainty.py{' --quick' if data['quick'] else ''}`; "
        f"{len(data['rows'])} moved cases of the independent validation set (`validation_generator.py`, the moved cases "
        f"of `validate_fullres.py`); engine `any2reg`, CLI defaults (weights {data['weights']}); one CPU thread; "
        f"{data['wall_s']:.0f} s. SD = `extras['displacement_sd_mm']`; EPE = per-pixel end-point error against the "
        "true displacement (both fields mean-free over frames), mm; every (frame, pixel) is a sample. Heart region: "
        "phantom labels 1-3 (LV blood, myocardium, RV blood); real cases: the organ ROI of `bench_real.CASES` "
        "(heart disc for STONE / ACDC, a kidney box for kidney MOLLI). Body: foreground of the motion-free frames. "
        "Baseline: the estimated displacement magnitude |v| as the predictor. Method and definitions: the script's "
        "docstring.",
        "",
        "## Pooled",
        "",
        "| variant | region | Spearman pooled | median over cases | cases > 0 / > 0.3 | AUC EPE > 1 mm pooled (median) | AUC top decile pooled (median) | EPE <= 2 SD | baseline |v|: Spearman pooled (median), AUC top decile |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    n = len(data["rows"])
    for variant in variants:
        for region in ("heart", "body"):
            p = data["pooled"][variant][region]
            pool, med, base, bmed = p["pooled"], p["median_over_cases"], p["pooled_baseline_magnitude"], p["median_over_cases_baseline"]
            lines.append(
                f"| {variant} | {region} | {_f(pool['spearman'])} | {_f(med['spearman'])} | "
                f"{p['cases_spearman_positive']} / {p['cases_spearman_above_0.3']} of {n} | "
                f"{_f(pool['auc_epe_gt_1mm'])} ({_f(med['auc_epe_gt_1mm'])}) | {_f(pool['auc_top_decile'])} ({_f(med['auc_top_decile'])}) | "
                f"{_f(pool['coverage_2sd'])} | {_f(base['spearman'])} ({_f(bmed['spearman'])}), {_f(base['auc_top_decile'])} |")
    lines += ["", "Frame level (within-case Spearman over frames of the heart-region mean SD vs mean EPE, median over cases) and "
              "case level (Spearman over cases of the heart-region SD p95, the verdict's number, vs the case's mean EPE there):", ""]
    for variant in variants:
        p = data["pooled"][variant]
        lines.append(f"* {variant}: frames {_f(p['frames_spearman_median'])}; cases {_f(p['cases_spearman_sd_p95_vs_epe_mean'])} (n = {n})")
    lines += ["", "## Per case (heart region; body in brackets)", "",
              "| case | group | N | variant | Spearman | AUC > 1 mm (share) | AUC top decile | SD mean / p95 mm | EPE mean / p95 mm | frames Spearman | baseline Spearman | fallback | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        for variant in variants:
            v = row["variants"][variant]
            h, b = v["heart"], v["body"]
            lines.append(
                f"| {row['case']} | {row['group']} | {row['n_frames']} | {variant} | {_f(h['sd']['spearman'])} ({_f(b['sd']['spearman'])}) | "
                f"{_f(h['sd']['auc_epe_gt_1mm'])} ({_f(h['sd']['share_epe_gt_1mm'])}) | {_f(h['sd']['auc_top_decile'])} ({_f(b['sd']['auc_top_decile'])}) | "
                f"{_f(h['sd_mean_mm'])} / {_f(h['sd_p95_mm'])} | {_f(h['epe_mean_mm'])} / {_f(h['epe_p95_mm'])} | "
                f"{_f(h['frames_spearman'])} | {_f(h['baseline_magnitude']['spearman'])} ({_f(b['baseline_magnitude']['spearman'])}) | "
                f"{'yes' if v['fallback'] else 'no'} | {v['seconds']:.1f} |")
    lines += ["", "Relative EPE in the heart region (all frame pairs, `core.metrics.relative_epe`), before -> after (default variant): "
              + "; ".join(f"{row['case']} {_f(row['relative_epe_heart_before_mm'])} -> {_f(row['variants'][variants[0]]['relative_epe_heart_mm'])}"
                          for row in data["rows"]) + " mm."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"3-case smoke run ({', '.join(QUICK)})")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: every moved case)")
    parser.add_argument("--variants", default="default,orientations-only,4-orientations",
                        help=f"comma-separated, of {', '.join(VARIANTS)} (the first is the reference)")
    parser.add_argument("--no-real", action="store_true", help="phantoms only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="output stem (default benchmarks/results/uncertainty, or uncertainty_quick with --quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    wanted = set(QUICK) if args.quick else (set(c.strip() for c in args.cases.split(",")) if args.cases else None)
    out = Path(args.out) if args.out else RESULTS / ("uncertainty_quick" if args.quick else "uncertainty")
    start = time.perf_counter()
    rows, samples = [], {}
    cases = [phantom_cases(wanted)] + ([] if args.no_real else [real_cases(wanted)])
    for generator in cases:
        for case in generator:
            t0 = time.perf_counter()
            row, case_samples = evaluate_case(case, variants, args.threads)
            rows.append(row)
            for (variant, region), value in case_samples.items():
                samples[(row["case"], variant, region)] = value
            d = row["variants"][variants[0]]
            print(f"[{time.perf_counter() - start:6.0f} s] {row['case']}: heart Spearman "
                  + ", ".join(f"{v} {_f(row['variants'][v]['heart']['sd']['spearman'])}" for v in variants)
                  + f"; body {_f(d['body']['sd']['spearman'])}; EPE mean {d['heart']['epe_mean_mm']} mm "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if not rows:
        print("no case matched", file=sys.stderr)
        return 1
    weights = rows[0].get("weights")
    data = {"quick": bool(args.quick), "variants": variants, "variant_options": {v: VARIANTS[v] for v in variants},
            "weights": weights, "threads": args.threads, "epe_threshold_mm": EPE_THRESHOLD_MM,
            "max_samples_per_case_region": MAX_SAMPLES, "wall_s": round(time.perf_counter() - start, 1),
            "pooled": pooled(rows, samples, variants), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(data))
    print(to_markdown(data).split("## Per case")[0])
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
