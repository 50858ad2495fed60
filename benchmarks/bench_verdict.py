"""The verdict (core/qc/verdict.py) on phantoms, and whether the auto exclusion brings T1 closer to the truth.

Issue 27's done-when, measured (run on demand; not a test):

1. **Verdict levels.** MOLLI, STONE and SASHA phantoms (96 x 96 at 3 mm, seeds 20900+, motion-free
   and 8 mm breathing motion) in three conditions: clean, one injected bad frame (each kind of
   :mod:`napari_any2reg.core.phantom.bad_frames`, at a random frame 1..N-1) and a deliberately broken
   registration setting that a user could really make:

   * ``any2reg`` with ``weights=`` an **untrained checkpoint** (the shipped file's network
     re-initialised at random, as ``any2reg train`` starts; written under /tmp): the network
     predicts (almost) no motion;
   * ``groupwise`` with **smoothness 0.01** (``--regulariser-weight 0.01``, the dock's
     "Smoothness"; default 20): the free-form stages overfit noise and fold.

   Two mis-settings that do *not* break the registration are run too, to see that the verdict
   stays quiet where the field is still right (the true error is in the table): ``any2reg`` with
   the pixel spacing given 4x too large (12 mm instead of 3 mm: the network resamples to its 3 mm
   grid, so the field hardly changes, but every number in mm is 4x) and ``groupwise`` with
   ``--iterations-scale 0.02``.

   Each series is registered with ``any2reg`` (default) and, for the first three seeds of each
   protocol, ``groupwise``; the verdict is made as :func:`napari_any2reg.pipeline.series.register_series`
   makes it: the heart mask (the phantom's ``common_labels``) passed to the engine and to
   :func:`core.qc.verdict.assess_registration`, or no mask at all; then with the T1 fit's R² as
   ``register --export maps`` adds it (raw fit and registered fit with the outlier frames left
   out, :func:`core.qc.verdict.fit_evidence`). ``any2reg`` ignores a mask (one network pass), so
   its registration is shared by the two mask settings.

2. **Does the auto exclusion bring T1 closer to the truth?** On the bad-frame series, T1 fitted on
   the registered frames with every frame and with ``exclude_frames`` = the detected outlier frames
   (:func:`core.qc.outliers.auto_exclusion`, as ``fit --exclude-frames auto``), and for reference with
   the true bad frame left out (oracle). Score: the median |T1 - truth| in the LV myocardium
   (label 2 of ``common_labels``) against (a) the fit of the same phantom's clean series
   registered the same way (engine and mask; every frame) and (b) the phantom's true T1 map
   (``Phantom.t1_map``, on the common grid, the grid the registered frames are on).

Writes ``benchmarks/results/verdict.md`` and ``verdict_cpu.json`` (every row). Run:
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_verdict.py [--seeds 6] [--groupwise-seeds 3]``
(about 12 minutes on a 2-core CPU, one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_any2reg.core.phantom.bad_frames import BAD_FRAME_KINDS, inject_bad_frame  # noqa: E402
from napari_any2reg.core.mapping import T1_MODELS, fit_t1, model_for_kind  # noqa: E402
from napari_any2reg.core.qc.outliers import auto_exclusion  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.qc.verdict import assess_registration, fit_evidence, make_verdict  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROTOCOLS = ("molli", "stone", "sasha")
SHIPPED = ROOT / "weights" / "any2reg-v13.pt"

#: condition -> (engine options, spacing factor, group, words)
BROKEN = {
    "any2reg": {
        "untrained weights": ({"weights": "UNTRAINED"}, 1.0, "broken",
                              "weights= an untrained checkpoint (random initialisation)"),
        "spacing x4": ({}, 4.0, "mis-set", "pixel spacing given 4x too large (12 mm)"),
    },
    "groupwise": {
        "smoothness 0.01": ({"regulariser_weight": 0.01}, 1.0, "broken", "--regulariser-weight 0.01 (default 20)"),
        "iterations x0.02": ({"iterations_scale": 0.02}, 1.0, "mis-set", "--iterations-scale 0.02"),
    },
}


def machine_description() -> str:
    """bench_engines' machine line, with the OMP_NUM_THREADS this run was given."""
    from bench_engines import machine_description as machine

    return f"{machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"


def untrained_weights(folder: Path) -> str:
    """The shipped weights file with its network re-initialised at random (seed 0), under ``folder``."""
    from napari_any2reg.core.network import Any2RegNet

    checkpoint = torch.load(SHIPPED, map_location="cpu", weights_only=False)
    torch.manual_seed(0)
    checkpoint = dict(checkpoint, model_state=Any2RegNet(**checkpoint["net_config"]).state_dict())
    path = folder / "any2reg-untrained.pt"
    torch.save(checkpoint, path)
    return str(path)


def reason_category(text: str) -> str:
    if text.startswith("folding"):
        return "folding"
    if text.startswith("alignment worse"):
        return "alignment worse"
    if text.startswith("motion left"):
        return "motion left"
    if "disagree" in text:
        return "outlier frame"
    if text.startswith("displacement SD"):
        return "displacement SD"
    if text.startswith("median R² lower"):
        return "R² lower after"
    if text.startswith("median R²"):
        return "R² low"
    return text[:30]


def verdict_summary(verdict: dict) -> dict:
    reasons = [] if verdict["level"] == "good" else verdict["reasons"]
    return {"level": verdict["level"], "reasons": [r["text"] for r in reasons],
            "categories": sorted({reason_category(r["text"]) for r in reasons})}


def myocardial_error(t1: np.ndarray, truth: np.ndarray, myocardium: np.ndarray) -> float:
    """Median |T1 - truth| (ms) over the myocardium's pixels where both are finite."""
    d = np.abs(np.asarray(t1, np.float64) - np.asarray(truth, np.float64))[myocardium]
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else float("nan")


def run_case(seq, phantom, engine, options, mask_settings, bad, raw_fit, weights_path):
    """Register ``seq`` (once per mask setting the engine uses) and make the verdicts and fits.

    Returns ``{mask setting: row}``; every row has the verdict without and with the fit, the
    outliers, the true error and the registered fits (all frames / auto / oracle) in memory.
    """
    labels = np.asarray(phantom.common_labels)
    options = {k: (weights_path if v == "UNTRAINED" else v) for k, v in options.items()}
    model = T1_MODELS[model_for_kind(seq.kind)]
    others = [i for i in range(seq.n_frames) if i != bad]
    heart = labels != 0
    rows = {}
    shared = None
    for setting in mask_settings:
        mask = labels if setting == "with mask" else None
        start = time.perf_counter()
        if engine == "any2reg" and shared is not None:
            result = shared  # one network pass: the mask changes nothing (params["mask"] says so)
        else:
            result = register(seq, engine=engine, device="cpu", **({"mask": mask} if mask is not None else {}), **options)
            shared = result
        seconds = time.perf_counter() - start
        assessment = assess_registration(
            seq.frames, result.registered, result.displacement, scores=result.extras.get("correspondence"),
            spacing_mm=seq.spacing_mm, timings_ms=seq.timings_ms, labels=mask,
            displacement_sd_mm=result.extras.get("displacement_sd_mm"))
        inputs = assessment.pop("_verdict_inputs")
        flagged = [int(i) for i in assessment["outlier_frames"]["indices"]]
        exclude, note = auto_exclusion(flagged, seq.n_frames, model.n_params)
        registered = result.registered_sequence()
        fit_all = fit_t1(registered, device="cpu")
        fit_auto = fit_t1(registered, device="cpu", exclude_frames=exclude) if exclude else fit_all
        fit_oracle = None
        if bad is not None:
            fit_oracle = fit_auto if tuple(exclude) == (bad,) else fit_t1(registered, device="cpu", exclude_frames=(bad,))
        with_fit = dict(inputs)
        with_fit.update(fit_evidence(raw_fit, fit_auto, mask))
        error_px = np.hypot(*(result.displacement - phantom.displacement)[others].transpose(1, 0, 2, 3))
        dy, dx = phantom.sequence.spacing_mm  # the true spacing: the error in real mm
        rows[setting] = {
            "seconds": round(seconds, 2),
            "mask_note": result.params.get("mask"),
            "verdict": verdict_summary(assessment["verdict"]),
            "verdict_with_fit": verdict_summary(make_verdict(**with_fit)),
            "r2_after": with_fit.get("r2_after"), "r2_before": with_fit.get("r2_before"),
            "outliers": flagged,
            "outlier_reasons": assessment["outlier_frames"].get("reasons", {}),
            "excluded": list(exclude), "exclusion_note": note,
            "displacement_sd_p95_mm": assessment["displacement_sd"].get("p95_mm"),
            "folding_percent": round(inputs["folding_percent"], 4),
            "alignment": [round(inputs["alignment_before"], 4), round(inputs["alignment_after"], 4)],
            "true_error_heart_mm": round(float(error_px[:, heart].mean()) * float(np.sqrt(dy * dx)), 3),
            "_fits": {"all": fit_all.t1_ms, "auto": fit_auto.t1_ms,
                      "oracle": None if fit_oracle is None else fit_oracle.t1_ms},
        }
    return rows


def collect(seeds: int, groupwise_seeds: int, seed_base: int, weights_path: str, engines: tuple[str, ...],
            protocols: tuple[str, ...] = PROTOCOLS) -> list[dict]:
    rows = []
    rng = np.random.default_rng(27)
    for kind in protocols:
        for s in range(seeds):
            for motion in (0.0, 8.0):
                extra = {} if motion else {"rotation_deg": 0.0, "nonrigid_mm": 0.0}
                seed = seed_base + 100 * PROTOCOLS.index(kind) + s
                phantom = make_phantom(kind, seed=seed, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=motion, **extra)
                myocardium = np.asarray(phantom.common_labels) == 2
                conditions = [("clean", None)] + [(b, int(rng.integers(1, phantom.sequence.n_frames))) for b in BAD_FRAME_KINDS]
                case_engines = [e for e in ("any2reg", "groupwise") if e in engines and (e == "any2reg" or s < groupwise_seeds)]
                clean_fits: dict[tuple[str, str], np.ndarray] = {}
                for engine in case_engines:
                    variants = [(name, frame, {}, 1.0, "clean" if frame is None else "bad frame") for name, frame in conditions]
                    variants += [(name, None, opts, factor, group) for name, (opts, factor, group, _) in BROKEN[engine].items()]
                    for name, frame, opts, factor, group in variants:
                        frames = phantom.sequence.frames if frame is None else inject_bad_frame(phantom, frame, name)
                        seq = phantom.sequence.replace(frames=frames, spacing_mm=tuple(factor * v for v in phantom.sequence.spacing_mm))
                        raw_fit = fit_t1(seq, device="cpu")
                        case = run_case(seq, phantom, engine, opts, ("with mask", "no mask"), frame, raw_fit, weights_path)
                        for setting, row in case.items():
                            fits = row.pop("_fits")
                            if name == "clean":
                                clean_fits[(engine, setting)] = fits["all"]
                            row.update(kind=kind, seed=seed, motion_mm=motion, engine=engine, mask=setting,
                                       condition=name, group=group, bad_frame=frame)
                            if frame is not None:
                                reference = clean_fits[(engine, setting)]
                                row["t1_error_vs_clean_ms"] = {k: myocardial_error(v, reference, myocardium)
                                                               for k, v in fits.items()}
                                row["t1_error_vs_true_ms"] = {k: myocardial_error(v, phantom.t1_map, myocardium)
                                                              for k, v in fits.items()}
                            elif name == "clean":
                                row["t1_error_vs_true_ms"] = {"all": myocardial_error(fits["all"], phantom.t1_map, myocardium),
                                                              "auto": myocardial_error(fits["auto"], phantom.t1_map, myocardium)}
                                row["auto_identical_to_all"] = bool(np.array_equal(fits["all"], fits["auto"], equal_nan=True))
                            rows.append(row)
                            print(json.dumps({k: row[k] for k in ("kind", "seed", "motion_mm", "engine", "mask", "condition",
                                                                  "outliers", "seconds", "true_error_heart_mm")}
                                             | {"verdict": row["verdict"]["level"], "with_fit": row["verdict_with_fit"]["level"],
                                                "why": row["verdict_with_fit"]["reasons"][:2]}), flush=True)
    return rows


# ---------------------------------------------------------------- tables
def _counts(group: list[dict], key: str) -> str:
    c = Counter(r[key]["level"] for r in group)
    return f"{c['good']} / {c['check']} / {c['poor']}"


def _top_reason(group: list[dict], key: str) -> str:
    c = Counter(cat for r in group for cat in r[key]["categories"])
    if not c:
        return "—"
    name, n = c.most_common(1)[0]
    return f"{name} ({n}/{len(group)})"


def _med(values) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.median(v)) if v else float("nan")


CONDITION_ORDER = ("clean",) + BAD_FRAME_KINDS + tuple(n for e in BROKEN.values() for n in e)


def levels_table(rows: list[dict], by_motion: bool) -> list[str]:
    lines = ["| condition | engine | mask | " + ("motion | " if by_motion else "") +
             "cases | register: good / check / poor | with the fit's R² (--export maps) | most common reason (with fit) | "
             "true error in the heart, median (mm) |",
             "|---|---|---|" + ("---|" if by_motion else "") + "---|---|---|---|---|"]
    keys = sorted({(r["condition"], r["engine"], r["mask"]) + ((r["motion_mm"],) if by_motion else ()) for r in rows},
                  key=lambda k: (CONDITION_ORDER.index(k[0]), k[1], k[2] != "with mask") + k[3:])
    for key in keys:
        group = [r for r in rows if (r["condition"], r["engine"], r["mask"]) + ((r["motion_mm"],) if by_motion else ()) == key]
        motion = f"{key[3]:g} mm | " if by_motion else ""
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {motion}{len(group)} | {_counts(group, 'verdict')} | "
                     f"{_counts(group, 'verdict_with_fit')} | {_top_reason(group, 'verdict_with_fit')} | "
                     f"{_med(r['true_error_heart_mm'] for r in group):.2f} |")
    return lines


def done_when(rows: list[dict]) -> list[str]:
    lines = ["| requirement | series | met (register) | met (with the fit's R²) |", "|---|---|---|---|"]
    for words, pick, want_good in (
            ("clean: 'good'", lambda r: r["condition"] == "clean", True),
            ("one bad frame: not 'good'", lambda r: r["group"] == "bad frame", False),
            ("broken setting, 8 mm motion: not 'good'", lambda r: r["group"] == "broken" and r["motion_mm"] > 0, False),
            ("broken setting, motion-free: not 'good'", lambda r: r["group"] == "broken" and r["motion_mm"] == 0, False),
            # an engine that returns the identity on a motion-free series is right there: only a
            # broken setting whose field is wrong (heart error > 0.5 mm) should be caught
            ("broken setting, motion-free, field wrong (heart error > 0.5 mm): not 'good'",
             lambda r: r["group"] == "broken" and r["motion_mm"] == 0 and r["true_error_heart_mm"] > 0.5, False),
            ("broken setting, motion-free, field right (heart error <= 0.5 mm): 'good'",
             lambda r: r["group"] == "broken" and r["motion_mm"] == 0 and r["true_error_heart_mm"] <= 0.5, True)):
        for engine in ("any2reg", "groupwise"):
            for mask in ("with mask", "no mask"):
                group = [r for r in rows if pick(r) and r["engine"] == engine and r["mask"] == mask]
                if not group:
                    continue
                met = [sum((r[k]["level"] == "good") == want_good for r in group) for k in ("verdict", "verdict_with_fit")]
                lines.append(f"| {words} | {engine}, {mask} | {met[0]}/{len(group)} | {met[1]}/{len(group)} |")
    return lines


def exclusion_table(rows: list[dict]) -> list[str]:
    lines = ["| protocol | bad frame | engine | mask | cases | bad frame flagged (alone) | auto excluded something | "
             "median \\|ΔT1\\| vs clean-registered fit (ms): all / auto / oracle | auto closer / same / farther | "
             "median \\|ΔT1\\| vs true T1 map (ms): all / auto / oracle | auto closer / same / farther |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    bad = [r for r in rows if r["group"] == "bad frame"]
    keys = sorted({(r["kind"], r["condition"], r["engine"], r["mask"]) for r in bad},
                  key=lambda k: (PROTOCOLS.index(k[0]), BAD_FRAME_KINDS.index(k[1]), k[2], k[3] != "with mask"))

    def tally(group, key):
        c = Counter()
        for r in group:
            e = r[key]
            d = e["auto"] - e["all"]
            c["closer" if d < -0.5 else "farther" if d > 0.5 else "same"] += 1
        return f"{c['closer']} / {c['same']} / {c['farther']}"

    for key in keys + [("all", "all", e, m) for e in ("any2reg", "groupwise") for m in ("with mask", "no mask")]:
        group = [r for r in bad if (key[0] == "all" or (r["kind"], r["condition"]) == key[:2]) and (r["engine"], r["mask"]) == key[2:]]
        if not group:
            continue
        found = sum(r["bad_frame"] in r["outliers"] for r in group)
        alone = sum(r["outliers"] == [r["bad_frame"]] for r in group)
        excluded = sum(bool(r["excluded"]) for r in group)
        cells = []
        for score in ("t1_error_vs_clean_ms", "t1_error_vs_true_ms"):
            cells.append(" / ".join(f"{_med(r[score][k] for r in group):.1f}" for k in ("all", "auto", "oracle")))
            cells.append(tally(group, score))
        name = ("**all**", "**all**") if key[0] == "all" else key[:2]
        lines.append(f"| {name[0]} | {name[1]} | {key[2]} | {key[3]} | {len(group)} | {found} ({alone}) | {excluded} | "
                     + " | ".join(cells) + " |")
    return lines


def to_markdown(data: dict) -> str:
    rows = data["rows"]
    clean = [r for r in rows if r["condition"] == "clean"]
    differing = sum(not r["auto_identical_to_all"] for r in clean)
    lines = ["# The verdict on phantoms, and the auto exclusion (`benchmarks/bench_verdict.py`)", "",
             f"Phantoms 96 x 96 at 3 mm, seeds {data['seed_base']}+ ({data['seeds']} per protocol for any2reg, the first "
             f"{data['groupwise_seeds']} for groupwise), motion 0 and 8 mm; {data['seconds']:.0f} s on {data['machine']}.", "",
             "Conditions: clean; one bad frame (core/phantom/bad_frames.py: other_slice, ghosting, mistrigger); broken settings "
             "(a user's mistake that breaks the registration): "
             + "; ".join(f"{n}: {w}" for e in BROKEN.values() for n, (_, _, g, w) in e.items() if g == "broken")
             + "; mis-set but harmless (the field stays right): "
             + "; ".join(f"{n}: {w}" for e in BROKEN.values() for n, (_, _, g, w) in e.items() if g == "mis-set") + ".",
             "Mask: `with mask` = the phantom's labels given as `--mask` (to the engine and the verdict; any2reg ignores "
             "it for the registration), `no mask` = none. `register` = the verdict of a plain `register`; `with the fit's R²` "
             "= as `register --export maps` makes it. True error: mean end-point error of the field over the heart "
             "labels and the good frames, in real mm.", "",
             "## Verdict levels", ""] + levels_table(rows, by_motion=False) + [
             "", "## Done-when (issue 27)", ""] + done_when(rows) + [
             "", "## Verdict levels by motion", ""] + levels_table(rows, by_motion=True) + [
             "", "## Auto exclusion and T1", "",
             "Median over the cases of each case's median |T1 - truth| in the LV myocardium (label 2). `all`: every "
             "frame fitted; `auto`: the detected outlier frames left out (`fit --exclude-frames auto`); `oracle`: the "
             "true bad frame left out. Closer / farther: by more than 0.5 ms. Truth: the fit of the same phantom's "
             "clean series registered the same way (engine, mask), or the phantom's true T1 map.", ""] + exclusion_table(rows) + [
             "", f"Clean series: the auto fit differs from the all-frames fit in {differing} of {len(clean)} (a frame "
             "was flagged on a clean series there).", "",
             "## Cases not as the issue wants", ""]
    for r in rows:
        wrong = ((r["condition"] == "clean" and r["verdict_with_fit"]["level"] != "good")
                 or (r["group"] in ("bad frame", "broken") and r["verdict_with_fit"]["level"] == "good"))
        if wrong:
            lines.append(f"- {r['kind']} seed {r['seed']} {r['motion_mm']:g} mm, {r['condition']}"
                         + (f" (frame {r['bad_frame']})" if r["bad_frame"] is not None else "")
                         + f", {r['engine']}, {r['mask']}: {r['verdict_with_fit']['level']}"
                         + (f" ({'; '.join(t[:140] for t in r['verdict_with_fit']['reasons'])})" if r["verdict_with_fit"]["reasons"] else "")
                         + f"; flagged {r['outliers']}; true error {r['true_error_heart_mm']:.2f} mm")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds per protocol (any2reg)")
    parser.add_argument("--groupwise-seeds", type=int, default=3, help="the first seeds also registered with groupwise")
    parser.add_argument("--seed-base", type=int, default=20900, help="first phantom seed (validation seeds of bench_outliers)")
    parser.add_argument("--engines", default="any2reg,groupwise")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--out", default=str(RESULTS / "verdict_cpu.json"), help="rows (JSON); the table: verdict.md beside it")
    parser.add_argument("--table-only", metavar="JSON", help="write the table from stored rows without registering")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        data = json.loads(Path(args.table_only).read_text())
    else:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench_verdict_", dir="/tmp") as folder:
            weights_path = untrained_weights(Path(folder))
            rows = collect(args.seeds, args.groupwise_seeds, args.seed_base, weights_path, tuple(args.engines.split(",")),
                           tuple(args.protocols.split(",")))
        data = {"rows": rows, "seconds": time.perf_counter() - start, "seed_base": args.seed_base, "seeds": args.seeds,
                "groupwise_seeds": args.groupwise_seeds, "machine": machine_description()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, default=float))
    text = to_markdown(data)
    out.with_name("verdict.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
