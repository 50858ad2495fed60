"""Cohort mode against a shell loop of single ``any2reg register`` calls (run on demand, not a test).

    python benchmarks/bench_batch.py                          # 40 phantom series, --jobs 1 and 2
    python benchmarks/bench_batch.py --series 8 --note "..."  # a quick run on a busy machine

Writes phantom series (MOLLI 5(3)3, STONE-like, SASHA-like in turn; 192 x 192, seeded) into a
temporary folder, then times, from the outside (wall clock, as a user would):

1. the loop: one ``any2reg register FILE -o OUT --threads 1 --export qc,record -q`` process per
   series, one after the other (each pays Python + torch start-up and loads the network);
2. ``any2reg batch FOLDER -o OUT --jobs J`` for each J (local Dask cluster, one torch thread per
   job; start-up and weights paid once per worker), the same engine and export;
3. a resume test: the batch run is killed (SIGKILL of its whole process group: client, scheduler
   and workers) once about half of the series are finished, then re-run: it must skip every
   finished series (their run records untouched) and finish the others.

Writes ``<out>.json`` and ``<out>.md`` (default ``benchmarks/results/batch_cpu``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("molli", "stone", "sasha")
ANY2REG = str(Path(sys.executable).with_name("any2reg"))


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def make_cohort(folder: Path, n: int, size: int) -> list[Path]:
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io import write_tiff

    files = []
    for k in range(n):
        kind = KINDS[k % len(KINDS)]
        path = folder / f"patient{k:03d}" / f"{kind}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tiff(path, make_phantom(kind, seed=1000 + k, shape=(size, size)).sequence)
        files.append(path)
    return files


def time_loop(files: list[Path], outdir: Path, engine: str, export: str) -> dict:
    start = time.perf_counter()
    for k, path in enumerate(files):
        subprocess.run([ANY2REG, "register", str(path), "-o", str(outdir / f"s{k:03d}"), "--engine", engine,
                        "--threads", "1", "--export", export, "-q"], check=True, env=_env())
    wall = time.perf_counter() - start
    return {"series": len(files), "wall_s": round(wall, 2), "per_series_s": round(wall / len(files), 3)}


def _rows(outdir: Path) -> list[dict]:
    with open(outdir / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def time_batch(indir: Path, outdir: Path, jobs: int, engine: str, export: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([ANY2REG, "batch", str(indir), "-o", str(outdir), "--jobs", str(jobs), "--engine", engine,
                           "--export", export, "-q"], env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = _rows(outdir)
    registration = [float(r["seconds_registration"]) for r in rows]
    total = [float(r["seconds_total"]) for r in rows]
    return {
        "jobs": jobs, "series": len(rows), "wall_s": round(wall, 2), "per_series_wall_s": round(wall / len(rows), 3),
        "mean_registration_s": round(sum(registration) / len(rows), 3),
        "mean_series_task_s": round(sum(total) / len(rows), 3),
        "ok": sum(r["status"] == "ok" for r in rows),
    }


def resume_test(indir: Path, outdir: Path, jobs: int, engine: str, export: str, n: int) -> dict:
    argv = [ANY2REG, "batch", str(indir), "-o", str(outdir), "--jobs", str(jobs), "--engine", engine, "--export", export, "-q"]
    process = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and process.poll() is None and len(list(outdir.glob("*/series.json"))) < max(1, n // 2):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(p.parent.name for p in outdir.glob("*/series.json"))
    stamps = {name: (outdir / name / "run.json").stat().st_mtime_ns for name in finished}
    start = time.perf_counter()
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    rows = _rows(outdir)
    skipped = sorted(r["series"] for r in rows if r["this_run"] == "skipped")
    untouched = all((outdir / name / "run.json").stat().st_mtime_ns == stamp for name, stamp in stamps.items())
    leftovers = len(list(outdir.glob("*/.any2reg-staging-*")))
    return {
        "jobs": jobs, "killed_after_finished": len(finished), "rerun_exit_code": done.returncode,
        "rerun_skipped": len(skipped), "rerun_ran": sum(r["this_run"] == "ran" for r in rows),
        "all_ok": all(r["status"] == "ok" for r in rows) and len(rows) == n,
        "nothing_redone": skipped == finished and untouched, "staging_leftovers": leftovers,
        "rerun_wall_s": round(wall, 2),
    }


def markdown(result: dict) -> str:
    loop = result["loop"]
    lines = [
        "# Cohort mode (`any2reg batch`) vs a shell loop of `any2reg register`",
        "",
        f"{result['series']} phantom series ({', '.join(KINDS)} in turn, {result['size']} x {result['size']}), "
        f"engine `{result['engine']}`, export `{result['export']}`, one torch thread per job. "
        f"Machine: {result['machine']['cpus']} CPU cores ({result['machine']['processor'] or result['machine']['platform']}), "
        f"load average {result['machine']['load_average_start']} at the start.",
        "",
    ]
    if result.get("note"):
        lines += [f"**Note:** {result['note']}", ""]
    lines += [
        "| run | wall (s) | per series (s) | speed-up vs loop |",
        "|---|---|---|---|",
        f"| shell loop of `any2reg register` | {loop['wall_s']} | {loop['per_series_s']} | 1.0x |",
    ]
    for run in result["batch"]:
        lines.append(f"| `any2reg batch --jobs {run['jobs']}` | {run['wall_s']} | {run['per_series_wall_s']} | "
                     f"{loop['wall_s'] / run['wall_s']:.1f}x |")
    lines += ["", "Inside the batch runs (from summary.csv): mean registration time per series "
              + ", ".join(f"{r['mean_registration_s']} s (jobs {r['jobs']})" for r in result["batch"])
              + "; mean task time (read, register, QC, write) "
              + ", ".join(f"{r['mean_series_task_s']} s (jobs {r['jobs']})" for r in result["batch"]) + ".", ""]
    resume = result["resume"]
    lines += [
        "## Resume",
        "",
        f"`any2reg batch --jobs {resume['jobs']}` killed (SIGKILL, whole process group) after {resume['killed_after_finished']} "
        f"of {result['series']} series were finished, then re-run: {resume['rerun_skipped']} skipped, {resume['rerun_ran']} run, "
        f"exit code {resume['rerun_exit_code']}, all ok: {resume['all_ok']}, nothing redone (run records untouched): "
        f"{resume['nothing_redone']}, staging folders left: {resume['staging_leftovers']}; re-run wall {resume['rerun_wall_s']} s.",
        "",
        f"Full run: `python benchmarks/bench_batch.py --series 40` (this file: `{' '.join(result['command'])}`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engine", default="any2reg")
    parser.add_argument("--export", default="qc,record")
    parser.add_argument("--note", default="", help="a remark for the results file (e.g. the machine was busy)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "batch_cpu"))
    args = parser.parse_args()

    load = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="any2reg-bench-batch-") as tmp:
        tmp = Path(tmp)
        files = make_cohort(tmp / "in", args.series, args.size)
        print(f"{len(files)} series written; timing the loop ...", flush=True)
        loop = time_loop(files, tmp / "loop", args.engine, args.export)
        print(f"loop: {loop}", flush=True)
        batches = []
        for jobs in args.jobs:
            run = time_batch(tmp / "in", tmp / f"batch{jobs}", jobs, args.engine, args.export)
            print(f"batch: {run}", flush=True)
            batches.append(run)
        resume = resume_test(tmp / "in", tmp / "resume", max(args.jobs), args.engine, args.export, args.series)
        print(f"resume: {resume}", flush=True)
    result = {
        "series": args.series, "size": args.size, "engine": args.engine, "export": args.export, "note": args.note,
        "loop": loop, "batch": batches, "resume": resume,
        "speedup_vs_loop": {str(r["jobs"]): round(loop["wall_s"] / r["wall_s"], 2) for r in batches},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average_start": load},
        "command": ["python", "benchmarks/bench_batch.py"] + sys.argv[1:],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
