"""Time the T2 / T2* fits against the T1 fitter on the same slice size (run on demand, not a test).

    python benchmarks/bench_t2_fit.py                    # CPU, 1 thread, 192x192
    python benchmarks/bench_t2_fit.py --threads 2 --repeats 5

Every case fits a whole 192x192 phantom slice (36 864 voxels, SNR 40, no motion) with
:func:`napari_any2reg.core.mapping.fit_t1`, the one fitter of the model registry: MOLLI 5(3)3
and SASHA (T1, the reference), T2-prep (``t2``, 4 preparations; ``t2c``, 8), multi-echo spin
echo (``t2``, 8 TEs) and multi-gradient echo (``t2star``, 8 echoes; also with a noise-floor
truncation). Seconds are the median of the repeats after one warm-up; the myocardial median of
each map is printed against the phantom's known value. Writes ``<out>.json`` and ``<out>.md``
(default ``benchmarks/results/t2_fit_speed``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_any2reg.core.mapping import T1_MODELS, fit_t1
from napari_any2reg.core.phantom import make_phantom

STILL = dict(motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0)

# (label, phantom kind, phantom options, model, fit options, truth attribute)
CASES = [
    ("MOLLI 5(3)3 (T1)", "molli", {"schedule": "5(3)3"}, "molli", {}, "t1_map"),
    ("SASHA (T1)", "sasha", {}, "sasha", {}, "t1_map"),
    ("T2-prep, 4 preps (T2)", "t2prep", {}, "t2", {}, "t2_map"),
    ("T2-prep, 8 preps, offset (T2)", "t2prep", {"n_frames": 8}, "t2c", {}, "t2_map"),
    ("spin echo, 8 TEs 10-80 ms (T2)", "t2prep", {"timings_ms": np.arange(1, 9) * 10.0}, "t2", {}, "t2_map"),
    ("multi-gradient echo, 8 TEs (T2*)", "mge", {}, "t2star", {}, "t2star_map"),
    ("multi-gradient echo, noise floor (T2*)", "mge", {}, "t2star", {"noise_floor": "auto"}, "t2star_map"),
]


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def run_case(case, size: int, repeats: int, device: str) -> dict:
    label, kind, options, model, fit_options, truth = case
    phantom = make_phantom(kind, seed=7, shape=(size, size), spacing_mm=(288.0 / size,) * 2, **STILL, **options)
    fit_options = dict(fit_options)
    if fit_options.get("noise_floor") == "auto":
        # 2.5x the mean magnitude of pure Rician noise (sigma sqrt(pi/2)) of this phantom
        fit_options["noise_floor"] = 2.5 * phantom.params["noise_sigma"] * np.sqrt(np.pi / 2.0)
    fit_t1(phantom.sequence, model=model, device=device, **fit_options)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fit_t1(phantom.sequence, model=model, device=device, **fit_options)
        seconds.append(time.perf_counter() - start)
    myo = ndimage.binary_erosion(phantom.common_labels == 2, iterations=1)
    known = float(np.median(getattr(phantom, truth)[myo]))
    fitted = float(np.nanmedian(result.map_ms[myo]))
    voxels = size * size
    median = float(np.median(seconds))
    return {
        "case": label, "model": model, "quantity": T1_MODELS[model].quantity, "n_frames": phantom.sequence.n_frames,
        "device": result.device, "seconds": median, "voxels_per_s": voxels / median, "voxels": voxels,
        "failed": result.n_failed, "myocardium_known_ms": known, "myocardium_fitted_ms": fitted,
        "myocardium_relative_error": abs(fitted / known - 1.0),
        **({"noise_floor": float(fit_options["noise_floor"])} if "noise_floor" in fit_options else {}),
    }


def to_markdown(rows: list[dict], machine: str, threads: int, size: int, note: str) -> str:
    molli = next(r["seconds"] for r in rows if r["model"] == "molli")
    sasha = next(r["seconds"] for r in rows if r["model"] == "sasha")
    lines = [
        f"# T2 / T2* fit speed against the T1 fitter ({size}x{size} phantom slices)",
        "",
        f"Machine: {machine}; torch threads: {threads}.",
        "",
        "Every case is one `fit_t1` call on a whole slice (all voxels, background included): grid "
        "search over the time constant, Levenberg-Marquardt, R² and the covariance SD. The T1 rows "
        "are the reference (MOLLI with polarity restoration over every k; SASHA without). "
        "Speed vs MOLLI / SASHA = seconds of that T1 case / seconds of this case (>= 1: at least as fast). "
        "Myocardium: median of the map over the eroded myocardium label against the phantom's known value "
        "(SNR 40, no motion). Seconds: median of the repeats after one warm-up.",
        "",
        "| case | model | N | device | seconds / slice | voxels/s | speed vs MOLLI | speed vs SASHA | failed voxels | myocardium fitted / known (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['model']} | {r['n_frames']} | {r['device']} | {r['seconds']:.3f} | "
            f"{r['voxels_per_s']:,.0f} | {molli / r['seconds']:.2f}x | {sasha / r['seconds']:.2f}x | {r['failed']:,} | "
            f"{r['myocardium_fitted_ms']:.1f} / {r['myocardium_known_ms']:.1f} |"
        )
    lines += ["", note] if note else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--note", default="", help="a line appended to the Markdown (e.g. the machine's load)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "t2_fit_speed"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for case in CASES:
        row = run_case(case, args.size, args.repeats, args.device)
        print(f"{row['case']:42s} {row['seconds']:.3f} s  myocardium {row['myocardium_fitted_ms']:.1f} / "
              f"{row['myocardium_known_ms']:.1f} ms", file=sys.stderr)
        rows.append(row)
    machine = machine_description()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "threads": args.threads, "size": args.size, "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(to_markdown(rows, machine, args.threads, args.size, args.note))
    print(f"wrote {out}.json and {out}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
