"""Time and score the registration engines on phantom sequences (run on demand, not a test).

    python benchmarks/bench_engines.py                 # CPU (and CUDA when present)
    python benchmarks/bench_engines.py --quick         # N = 8, 11 only
    python benchmarks/bench_engines.py --out benchmarks/results/engines

Writes ``<out>.json`` and ``<out>.md``: seconds, relative end-point error in the heart (mm)
before/after, folding %, for each engine, N and device.
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

from napari_any2reg.core.metrics import relative_epe
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register

# (label, phantom kind, options): N = 8, 11, 30, 100 as the issue asks
CASES = [
    ("MOLLI 5(3)3", "molli", {"schedule": "5(3)3"}),
    ("STONE-like", "stone", {}),
    ("cine", "cine", {"n_frames": 30}),
    ("IR, N=100", "ir", {"n_frames": 100}),
]
ENGINES = [("groupwise", {"metric": "cte"}), ("groupwise", {"metric": "pca2"}), ("xcoreg", {})]


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
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}"


def run(cases, devices, seeds, size):
    rows = []
    for label, kind, opts in cases:
        for seed in seeds:
            phantom = make_phantom(kind, seed=seed, shape=(size, size), **opts)
            seq = phantom.sequence
            spacing = seq.spacing_mm
            before = relative_epe(np.zeros_like(phantom.displacement), phantom.displacement, phantom.heart_mask, spacing_mm=spacing)
            for device in devices:
                for engine, options in ENGINES:
                    if device == "cuda":
                        register(seq, engine=engine, device=device, iterations_scale=0.05, **options)  # warm-up
                    start = time.perf_counter()
                    result = register(seq, engine=engine, device=device, **options)
                    seconds = time.perf_counter() - start
                    after = relative_epe(result.displacement, phantom.displacement, phantom.heart_mask, spacing_mm=spacing)
                    row = {
                        "case": label,
                        "kind": kind,
                        "n_frames": seq.n_frames,
                        "size": size,
                        "seed": seed,
                        "engine": engine + ("" if not options else f" ({', '.join(f'{k}={v}' for k, v in options.items())})"),
                        "device": result.device,
                        "seconds": round(seconds, 3),
                        "epe_before_mm": round(before, 3),
                        "epe_after_mm": round(after, 3),
                        "folding_percent": round(result.folding_percent, 4),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def to_markdown(rows, machine):
    lines = [
        "# Engine benchmark (phantoms)",
        "",
        f"Machine: {machine}",
        "",
        "Relative end-point error (EPE) between all frame pairs inside the heart, in mm; "
        "`before` is no registration. Folding: % pixels with det J <= 0. Seconds include "
        "normalisation and warping (the whole `register()` call).",
        "",
        "| case | N | engine | device | seconds | EPE before (mm) | EPE after (mm) | folding % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} (seed {r['seed']}) | {r['n_frames']} | {r['engine']} | {r['device']} | {r['seconds']:.2f} | "
            f"{r['epe_before_mm']:.2f} | {r['epe_after_mm']:.2f} | {r['folding_percent']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only N = 8 and 11")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--seeds", type=int, nargs="+", default=[101])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engines_cpu"))
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases = CASES[:2] if args.quick else CASES
    machine = machine_description()
    rows = run(cases, devices, args.seeds, args.size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(to_markdown(rows, machine))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
