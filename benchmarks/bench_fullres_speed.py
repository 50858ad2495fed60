"""Speed and memory of the network configurations of issue 22 (run on demand, not a test).

    python benchmarks/bench_fullres_speed.py            # all sections
    python benchmarks/bench_fullres_speed.py --quick    # fewer repeats, N up to 128

Sections, written to ``benchmarks/results/fullres_speed_cpu.{json,md}``:

1. engine seconds (``result.seconds``, median of ``--repeats``) for N = 11, 192 x 192 at
   1.5 mm, per configuration of ``validate_fullres.py`` and per thread count (1, 2, and the
   default chosen by :func:`core.device.default_cpu_threads`), with the 1-minute load
   average at the time (a busy machine and an idle one give different answers);
2. linear in N: seconds per frame and peak RSS of a fresh process registering N frames
   (N = 8 .. 500) with the default configuration;
3. the CLI's own cost: ``any2reg register`` wall time minus its engine seconds, and the cost
   of ``import torch`` alone in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PYTHON = sys.executable

_ONE_RUN = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register
options = json.loads(sys.argv[2])
p = make_phantom("stone", seed=20021, shape=(192, 192), spacing_mm=(1.5, 1.5), n_frames=int(sys.argv[1]), motion_mm=8.0)
register(p.sequence, device="cpu", threads=int(sys.argv[3]), **options)  # warm: weights, caches
r = register(p.sequence, device="cpu", threads=int(sys.argv[3]), **options)
print(json.dumps({"seconds": r.seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def engine_seconds(configs, repeats: int):
    import torch

    from napari_any2reg.core.device import default_cpu_threads
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.registration import register

    phantom = make_phantom("stone", seed=20021, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=8.0)
    assert phantom.sequence.n_frames == 11
    rows = []
    for name, options in configs.items():
        for threads in (1, 2, None):
            register(phantom.sequence, device="cpu", threads=threads, **options)  # warm: weights, caches
            times, loads, used = [], [], None
            for _ in range(repeats):
                loads.append(os.getloadavg()[0])
                r = register(phantom.sequence, device="cpu", threads=threads, **options)
                times.append(r.seconds)
                used = r.params.get("cpu_threads")
            row = {"config": name, "threads": "default" if threads is None else threads, "threads_used": used,
                   "seconds_median": round(statistics.median(times), 3), "seconds_min": round(min(times), 3),
                   "load_average": round(statistics.mean(loads), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    torch.set_num_threads(default_cpu_threads())
    return rows


def scaling(options, sizes, threads: int):
    rows = []
    for n in sizes:
        out = subprocess.run([PYTHON, "-c", _ONE_RUN, str(n), json.dumps(options), str(threads)], capture_output=True, text=True, check=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        row = {"n_frames": n, "seconds": round(data["seconds"], 3), "ms_per_frame": round(1000 * data["seconds"] / n, 1),
               "peak_rss_mb": round(data["peak_rss_mb"], 0), "threads": threads, "load_average": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


_CLI_PHASES = """
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from napari_any2reg.cli import main
code = main(sys.argv[1:])
t2 = time.perf_counter()
print(json.dumps({"import_torch_s": t1 - t0, "after_torch_s": t2 - t1, "code": code}))
"""


def cli_overhead(threads: int):
    """``any2reg register`` on the STONE sample in one fresh process, timed by phase: ``import
    torch``, then everything else (package import, reading, weights, engine, QC, writing);
    the CLI's own cost is the latter minus the engine time that metrics.json records."""
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "stone.tif"
        subprocess.run([PYTHON, "-m", "napari_any2reg.cli", "sample", "stone", "-o", str(sample)], check=True, capture_output=True)
        start = time.perf_counter()
        done = subprocess.run([PYTHON, "-c", _CLI_PHASES, "register", str(sample), "-o", str(Path(tmp) / "out"), "--threads", str(threads)],
                              check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        phases = json.loads(done.stdout.strip().splitlines()[-1])
        metrics = json.loads((Path(tmp) / "out" / "metrics.json").read_text())
    engine = float(metrics["seconds"])
    row = {"cli_wall_s": round(wall, 2), "import_torch_s": round(phases["import_torch_s"], 2), "engine_s": round(engine, 3),
           "cli_own_cost_s": round(phases["after_torch_s"] - engine, 2),
           "interpreter_start_s": round(wall - phases["import_torch_s"] - phases["after_torch_s"], 2),
           "threads": threads, "load_average": round(os.getloadavg()[0], 2)}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", default="engine,scaling,cli")
    parser.add_argument("--sizes", default=None, help="frame counts of the scaling section (default 8,32,128,500; --quick 8,32,128)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from validate_fullres import CONFIGS

    configs = {name: options for name, (engine, options) in CONFIGS.items() if engine == "any2reg" and "no do-no-harm" not in name}
    sections = args.sections.split(",")
    previous = RESULTS / "fullres_speed_cpu.json"
    data = json.loads(previous.read_text()) if previous.exists() else {}  # sections not run now are kept
    data |= {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "when": time.strftime("%Y-%m-%d %H:%M")}
    repeats = 2 if args.quick else args.repeats
    if "engine" in sections:
        data["engine"] = engine_seconds(configs, repeats)
    if "scaling" in sections:
        sizes = (8, 32, 128) if args.quick else (8, 32, 128, 500)
        if args.sizes:
            sizes = tuple(int(v) for v in args.sizes.split(","))
        data["scaling"] = scaling({}, sizes, threads=1)
    if "cli" in sections:
        data["cli"] = cli_overhead(threads=1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fullres_speed_cpu.json").write_text(json.dumps(data, indent=1))
    lines = ["# Speed of the network configurations (N = 11, 192 x 192, 1.5 mm)", "", f"{data['machine']}, {data['when']}.", ""]
    if "engine" in data:
        lines += ["| configuration | threads | engine s (median) | min | load average |", "|---|---|---|---|---|"]
        lines += [f"| {r['config']} | {r['threads']} ({r['threads_used']}) | {r['seconds_median']:.2f} | {r['seconds_min']:.2f} | {r['load_average']} |" for r in data["engine"]]
    if "scaling" in data:
        lines += ["", "Default configuration, 1 thread, fresh process per N (the load average says how busy the machine was):", "",
                  "| N | seconds | ms / frame | peak RSS (MB) | load average |", "|---|---|---|---|---|"]
        lines += [f"| {r['n_frames']} | {r['seconds']:.2f} | {r['ms_per_frame']} | {r['peak_rss_mb']:.0f} | {r.get('load_average', '')} |" for r in data["scaling"]]
        largest = data["scaling"][-1]
        if largest["n_frames"] < 500:
            per_frame = (largest["peak_rss_mb"] - data["scaling"][0]["peak_rss_mb"]) / max(1, largest["n_frames"] - data["scaling"][0]["n_frames"])
            lines += ["", f"Not run to N = 500; peak RSS grows ~{per_frame:.0f} MB per frame, so N = 500 would need "
                      f"~{(largest['peak_rss_mb'] + per_frame * (500 - largest['n_frames'])) / 1024:.1f} GB."]
    if "cli" in data:
        c = data["cli"]
        lines += ["", f"CLI `any2reg register` on the STONE sample: {c['cli_wall_s']} s wall, of which `import torch` "
                  f"{c['import_torch_s']} s, the interpreter's start {c.get('interpreter_start_s', '?')} s and the engine {c['engine_s']} s; "
                  f"the CLI's own cost (package import, reading, weights, QC, writing) {c['cli_own_cost_s']} s (1 thread, load average {c.get('load_average', '?')}). `import torch` is paid "
                  "once per process: for many series use `any2reg batch` or a napari session."]
    (RESULTS / "fullres_speed_cpu.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
