"""Cohort runs: every series of a study registered (and optionally T1-fitted) on Dask.

Each series is one Dask task, :func:`run_series`, which goes through the same code as
``any2reg register`` (:func:`.series.register_series`) and writes ``OUTDIR/<name>/`` as one
all-or-nothing unit: the registration outputs, the run record ``run.json`` and ``series.json``
(the series' row of the cohort summary). A series whose ``run.json`` and ``series.json`` are
there, list files that all exist, and were made from the same input with the same settings is
finished: a re-run skips it. A failed series leaves only ``failed.json`` (the error) and is
retried by the next run; one failure never stops the cohort.

The default is a local cluster of worker processes (``jobs`` of them, ``threads`` torch threads
each: on a busy machine one thread per job is several times faster than two), or any running
Dask scheduler (``scheduler="tcp://host:8786"``) whose workers have napari-any2reg installed and
see the same paths. Each worker pins its torch threads and loads the network once
(:class:`._dask_worker.TorchWorkerSetup`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .cohort import SeriesJob
from .series import RegisterSettings
from ..core.vocabulary import arg, interface
from ._requests import output_path

log = logging.getLogger(__name__)

__all__ = ["BatchSettings", "BatchReport", "series_state", "run_series", "run_batch", "default_jobs"]

#: Files of a finished series besides what its run record lists.
SERIES_FILE = "series.json"
FAILED_FILE = "failed.json"
RECORD_FILE = "run.json"
THUMBNAIL_FILE = "thumbnail.npy"


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """What every series of the cohort gets.

    Attributes
    ----------
    register : RegisterSettings
        Engine, device, options and export items (``record`` is always added: it is how a
        finished series is recognised).
    fit : bool
        Also fit T1 before and after registration (series with a T1 model and timings); the
        maps are exported and the ROI statistics go to the summary.
    r2_threshold : float
        R² above which a pixel's fit counts as good.
    threads : int
        Torch threads per job.
    overwrite : bool
        Redo finished series (and replace series made with other settings).
    """

    register: RegisterSettings = dataclasses.field(default_factory=RegisterSettings)
    fit: bool = False
    r2_threshold: float = 0.9
    threads: int = 1
    overwrite: bool = False

    def key(self) -> dict[str, Any]:
        """What decides the results of a series (device, threads and overwrite do not)."""
        return {"register": self.register.key(), "fit": self.fit, "r2_threshold": self.r2_threshold}


@dataclasses.dataclass
class BatchReport:
    """Outcome of :func:`run_batch`: one summary row per series, and the files written."""

    rows: list[dict[str, Any]]
    outdir: Path
    seconds: float
    files: list[Path] = dataclasses.field(default_factory=list)

    def count(self, **match: Any) -> int:
        return sum(all(row.get(k) == v for k, v in match.items()) for row in self.rows)

    @property
    def n_failed(self) -> int:
        return self.count(status="failed")

    def line(self) -> str:
        ran, skipped = self.count(this_run="ran"), self.count(this_run="skipped")
        failed, pending = self.n_failed, self.count(status="pending")
        text = (f"{len(self.rows)} series: {ran} registered, {skipped} already done (skipped), {failed} failed"
                + (f", {pending} not run" if pending else "") + f" in {self.seconds:.1f} s; summary {self.outdir / 'summary.csv'}")
        return text


def default_jobs(threads: int = 1) -> int:
    """Worker processes for a local cluster: the CPU cores this process may use / threads per job."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only; elsewhere all cores
    cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def series_state(folder: Path, job: SeriesJob, settings: BatchSettings) -> tuple[str, Any]:
    """Whether a series is finished: ``("done", row)``, ``("other", why)`` or ``("todo", None)``.

    ``done``: its run record and ``series.json`` are there, every file the record lists exists,
    and the input and settings match this run. ``other``: it was finished from another input or
    with other settings (not reused, not replaced without ``overwrite``).
    """
    record, row = _read_json(folder / RECORD_FILE), _read_json(folder / SERIES_FILE)
    if record is None or row is None or row.get("status") != "ok":
        return "todo", None
    listed = (record.get("exported") or {}).get("sha256") or {}
    if any(not (folder / name).is_file() for name in listed):
        return "todo", None
    made = row.get("_batch") or {}
    if made.get("input") != _jsonable(job.identity()):
        return "other", "it was made from another input"
    if made.get("settings") != _jsonable(settings.key()):
        return "other", "it was made with other settings"
    return "done", row


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _clean_leftovers(folder: Path) -> None:
    """Remove staging folders of a run that was killed (SIGKILL, power loss) while writing.

    The atomic writer removes them itself on any exception; only a killed process leaves one.
    """
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.startswith(".any2reg-staging-"):
            shutil.rmtree(entry, ignore_errors=True)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _roi_for(labels: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The ROI of the summary's T1 statistics: the LV myocardium of the mask, else the mask, else
    the central box (where cardiac scans centre the heart, as for the alignment score)."""
    if labels is not None:
        labels = np.asarray(labels)
        if np.any(labels == 2):
            return labels == 2, "mask label 2 (LV myocardium)"
        return labels > 0, "mask (all labels)"
    from ..core.metrics import default_roi

    return default_roi(shape), "central box (half the field of view)"


def _fit_stats(fit: Any, roi: np.ndarray, r2_threshold: float) -> dict[str, Any]:
    t1 = np.asarray(fit.t1_ms, np.float64)[roi]
    r2 = np.asarray(fit.r_squared, np.float64)[roi]
    valid = np.isfinite(t1)
    return {
        "t1_mean_ms": float(np.mean(t1[valid])) if valid.any() else None,
        "t1_sd_ms": float(np.std(t1[valid], ddof=1)) if valid.sum() > 1 else None,
        "r2_mean": float(np.nanmean(r2)) if np.isfinite(r2).any() else None,
        "r2_above": float(np.mean(np.nan_to_num(r2, nan=-1.0) > r2_threshold)) if r2.size else None,
    }


def _thumbnail(frames: np.ndarray, size: int = 64) -> np.ndarray:
    """Mean over frames, subsampled to about ``size`` pixels: motion blurs it, registration sharpens it."""
    mean = np.asarray(frames, np.float32).mean(axis=0)
    step = max(1, int(math.ceil(max(mean.shape) / size)))
    return mean[::step, ::step].astype(np.float16)


def run_series(job: SeriesJob, settings: BatchSettings, outdir: str, *, speak: str | None = None) -> dict[str, Any]:
    """Register (and fit) one series of the cohort into ``outdir/<job.name>``; never raises.

    This is the Dask task. Returns the series' summary row; on failure the row has
    ``status="failed"`` and the error, and ``failed.json`` is written in its folder.
    ``speak``: the interface whose words the errors use (:mod:`..core.vocabulary`; ``None``:
    this process's own). A worker process does not inherit the command line's: the batch passes
    its own, so a row says ``--reference-frame 8`` to whoever typed ``any2reg batch``.
    """
    if speak is None:
        return _run_series(job, settings, outdir)
    from ..core.vocabulary import speaking

    with speaking(speak):
        return _run_series(job, settings, outdir)


def _run_series(job: SeriesJob, settings: BatchSettings, outdir: str) -> dict[str, Any]:
    start = time.perf_counter()
    folder = Path(outdir) / job.name
    base = {"series": job.name, "input": job.label, "output": str(folder)}
    try:
        _clean_leftovers(folder)
        row = _register_one(job, settings, folder, start)
        failed = folder / FAILED_FILE
        if failed.exists():
            failed.unlink()
        return row
    except Exception as exc:  # one series failing must never stop the cohort: record and go on
        row = {**base, "status": "failed", "this_run": "failed", "error": _one_line(exc),
               "seconds_total": round(time.perf_counter() - start, 3)}
        try:
            _write_failure(folder, row)
        except Exception as write_error:  # the folder itself is the problem: the summary still has it
            row["error"] += f" (and {FAILED_FILE} could not be written: {_one_line(write_error)})"
        return row


def _write_failure(folder: Path, row: dict[str, Any]) -> None:
    from ..io import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(row, indent=2, default=str) + "\n"
    atomic_write(folder / FAILED_FILE, lambda p: p.write_text(text, encoding="utf-8"), overwrite=True)


def _register_one(job: SeriesJob, settings: BatchSettings, folder: Path, start: float) -> dict[str, Any]:
    from .export import EXPORT_ITEMS, MAP_ITEMS, parse_export_items
    from .series import fit_problem_for, read_input, read_label_image, register_series

    sequence = read_input(job.source, **job.overrides())
    labels = read_label_image(job.mask, sequence.shape) if job.mask is not None else None
    requested = parse_export_items(settings.register.export or "record")
    items = set(EXPORT_ITEMS) if requested == ("all",) else set(requested)
    items.add("record")
    no_fit = fit_problem_for(sequence) if settings.fit else "not requested (--fit)"
    if no_fit is None:
        items.add("maps")
    else:
        items -= set(MAP_ITEMS)
    if requested == ("all",):
        items -= {"dice", "landmarks"}  # need labels of every frame / a landmark CSV: not in a batch
        if not settings.register.engine_name().startswith("any2reg"):
            items.discard("uncertainty")  # the classical engines have no per-pixel spread
    export = ",".join(item for item in EXPORT_ITEMS if item in items)
    register = dataclasses.replace(settings.register, export=export)

    def series_files(outcome) -> dict[str, Callable[[Path], None]]:
        result = outcome.result
        qc = outcome.qc  # computed by register_series for the export (record is always exported)
        row = {
            "series": job.name, "input": job.label, "output": str(folder), "status": "ok", "this_run": "ran",
            "kind": sequence.kind, "n_frames": sequence.n_frames, "height": sequence.shape[0], "width": sequence.shape[1],
            "engine": result.engine, "device": result.device, "seconds_registration": round(float(result.seconds), 3),
            "folding_percent": outcome.metrics["folding_percent"],
            "alignment_before": outcome.metrics["alignment_score_before"],
            "alignment_after": outcome.metrics["alignment_score_after"],
            "max_displacement_mm": qc.get("max_displacement_mm"),
            "n_flagged_frames": len(qc.get("flagged_frames") or []),
            "flagged_frames": ";".join(str(i) for i in qc.get("flagged_frames") or []),
            "warnings": " | ".join(sequence.metadata.get("read_warnings", ())),
        }
        verdict = outcome.metrics.get("verdict") or {}
        row["verdict"] = verdict.get("level", "")
        row["verdict_reasons"] = " | ".join(r["text"] for r in verdict.get("reasons", []) if r["level"] != "good")
        row["outlier_frames"] = ";".join(str(i) for i in (outcome.metrics.get("outlier_frames") or {}).get("indices", []))
        row["displacement_sd_p95_mm"] = (outcome.metrics.get("displacement_sd") or {}).get("p95_mm")
        if outcome.fits is not None:
            roi, roi_name = _roi_for(labels, sequence.shape)
            row["fit_model"] = outcome.fits["raw"].model
            row["roi"] = roi_name
            for role, suffix in (("raw", "before"), ("registered", "after")):
                for key, value in _fit_stats(outcome.fits[role], roi, settings.r2_threshold).items():
                    row[f"{key}_{suffix}"] = value
        else:
            row["fit_model"] = ""
            row["roi"] = f"no T1 fit: {no_fit}" if settings.fit else ""
        row["seconds_total"] = round(time.perf_counter() - start, 3)  # up to writing: the write is a small share
        row["_batch"] = {"input": _jsonable(job.identity()), "settings": _jsonable(settings.key())}
        state["row"] = row
        thumbs = np.stack([_thumbnail(sequence.frames), _thumbnail(result.registered)])
        return {
            SERIES_FILE: lambda p: p.write_text(json.dumps(row, indent=2, default=str) + "\n", encoding="utf-8"),
            THUMBNAIL_FILE: lambda p: np.save(p, thumbs),
        }

    state: dict[str, Any] = {}
    register_series(
        sequence, folder, register, input_path=job.source, mask_path=job.mask, overwrite=settings.overwrite,
        command=["any2reg", "batch", "(series)", job.label], extra_files=series_files,
        extra_names=(SERIES_FILE, THUMBNAIL_FILE),
    )
    return state["row"]


# ---------------------------------------------------------------------------- the cohort
def _client_for(scheduler: str | None, jobs: int, threads: int):
    """A Dask client: on ``scheduler`` when given, else on a new local cluster (closed after)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler, timeout="30s"), None
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    cluster = LocalCluster(
        n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
        env=env, silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


LOCK_FILE = ".any2reg-batch.lock"


class CohortLocked(RuntimeError):
    """Another ``any2reg batch`` is writing to the same output folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


#: A lock file that names no process (its run was killed before writing it) is stale after this.
_UNREADABLE_LOCK_S = 30.0


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def cohort_lock(outdir: Path):
    """Hold ``OUTDIR/.any2reg-batch.lock`` while a cohort runs.

    Why: two runs on one output folder (a second terminal, a cron job firing again) would
    register the same series twice and race on every series folder and on ``summary.csv``.
    A lock left by a run that died on this machine (its process is gone) is taken over; one
    from another host (a shared file system) is respected, since its process cannot be checked.
    """
    path = outdir / LOCK_FILE
    host = socket.gethostname()
    record = json.dumps({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_json(path) or {}
            pid, other_host = holder.get("pid"), holder.get("host")
            if other_host == host and isinstance(pid, int) and not _pid_alive(pid):
                log.warning("taking over %s left by a batch run that is no longer running (pid %s)", path, pid)
                path.unlink(missing_ok=True)
                continue
            if not isinstance(pid, int) and _age_s(path) > _UNREADABLE_LOCK_S:
                # a run killed between creating and writing its lock: no owner to wait for
                log.warning("taking over %s: it names no process and is %.0f s old", path, _age_s(path))
                path.unlink(missing_ok=True)
                continue
            who = (f"process {pid} on {other_host}, started {holder.get('started', '?')}" if isinstance(pid, int)
                   else "a run that is starting now")
            raise CohortLocked(
                f"{outdir} is locked by another any2reg batch ({who}; lock file {path}); wait for it to finish "
                f"or choose another output folder (if no batch is running, delete {path})."
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record + "\n")
        break
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


#: How long a cohort waits with no live Dask worker before it fails the series not yet run.
NO_WORKER_SECONDS_DEFAULT = 120.0


def _no_worker_seconds() -> float:
    setting = os.environ.get("ANY2REG_NO_WORKER_SECONDS", "").strip()
    try:
        return float(setting) if setting else NO_WORKER_SECONDS_DEFAULT
    except ValueError:
        raise ValueError(f"ANY2REG_NO_WORKER_SECONDS={setting!r} is not a number; set it to seconds or unset it.") from None


class NoLiveWorker(Exception):
    """Stands in for a series' result when no Dask worker was alive to run it."""


def _completed_while_workers_live(client, futures: dict, poll_s: float = 2.0):
    """``(future, None)`` as each finishes; once no worker has been alive for
    ``ANY2REG_NO_WORKER_SECONDS`` (all died, or a scheduler without workers), the rest are
    cancelled and yielded as ``(future, NoLiveWorker)``.

    Why: Dask waits forever for a worker to run a task, so a cohort whose workers all died
    (out of memory, killed) would hang silently; the finished series are kept either way.
    """
    from distributed import wait

    limit = _no_worker_seconds()
    pending = set(futures)
    since = None
    while pending:
        try:
            done, pending = wait(pending, timeout=poll_s, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        for future in done:
            yield future, None
        if done:
            since = None
            continue
        try:
            workers = client.scheduler_info().get("workers") or {}
        except Exception:  # the scheduler itself is gone: no worker either
            workers = {}
        if workers:
            since = None
            continue
        since = since if since is not None else time.monotonic()
        if time.monotonic() - since < limit:
            continue
        log.error("no live Dask worker for %.0f s: failing the %d series not yet run", limit, len(pending))
        message = (f"no live Dask worker for {limit:.0f} s (all died or none joined the scheduler); the series "
                   f"was not run. Check the workers' memory and logs, then run the same command again: finished "
                   f"series are kept (ANY2REG_NO_WORKER_SECONDS sets the wait)")
        for future in sorted(pending, key=lambda f: f.key):
            future.cancel()
            yield future, NoLiveWorker(message)
        return


def run_batch(
    jobs: Iterable[SeriesJob],
    outdir: Any,
    settings: BatchSettings | None = None,
    *,
    n_jobs: int | None = None,
    scheduler: str | None = None,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
    summary_every_s: float = 10.0,
) -> BatchReport:
    """Run a cohort: skip finished series, run the others on Dask, write the summary.

    Parameters
    ----------
    jobs : iterable of SeriesJob
        From :func:`.cohort.discover`.
    outdir : str or Path
        Cohort output folder (created when missing).
    settings : BatchSettings
    n_jobs : int, optional
        Local cluster: worker processes (default :func:`default_jobs`).
    scheduler : str, optional
        Address of a running Dask scheduler to use instead of a local cluster.
    on_result : callable(row, done, total), optional
        Called in this process as each series finishes (skipped ones first).
    summary_every_s : float
        ``summary.csv`` is rewritten at most this often while the cohort runs, so it shows the
        progress of a long run; it is always written at the end (also after Ctrl-C).

    Returns
    -------
    BatchReport
    """
    from ..io import check_output_folder
    from .summary import write_summary

    from ..core.device import check_threads

    settings = settings or BatchSettings()
    check_threads(settings.threads)  # 10**9 threads or worker processes kill the machine
    if n_jobs is not None:
        n_jobs = check_threads(n_jobs, "n_jobs")
    started = time.perf_counter()
    outdir = output_path(outdir, "outdir")
    jobs = list(jobs)
    check_output_folder(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with cohort_lock(outdir):
        return _run_locked(jobs, outdir, settings, started, n_jobs, scheduler, on_result, summary_every_s)


def _run_locked(jobs, outdir, settings, started, n_jobs, scheduler, on_result, summary_every_s) -> BatchReport:
    from .summary import write_summary

    rows: dict[str, dict[str, Any]] = {}
    todo: list[SeriesJob] = []
    done_count = 0
    for job in jobs:
        state, detail = series_state(outdir / job.name, job, settings) if not settings.overwrite else ("todo", None)
        if state == "done":
            rows[job.name] = {**detail, "this_run": "skipped"}
        elif state == "other":
            rows[job.name] = {"series": job.name, "input": job.label, "output": str(outdir / job.name), "status": "failed",
                              "this_run": "failed", "error": f"{outdir / job.name} already holds a finished series but "
                              f"{detail}; pass {arg('overwrite', True)} to replace it or choose another output folder."}
        else:
            rows[job.name] = {"series": job.name, "input": job.label, "output": str(outdir / job.name),
                              "status": "pending", "this_run": "pending"}
            todo.append(job)
            continue
        done_count += 1
        if on_result is not None:
            on_result(rows[job.name], done_count, len(jobs))

    def report() -> BatchReport:
        ordered = [rows[job.name] for job in jobs]
        return BatchReport(rows=ordered, outdir=outdir, seconds=time.perf_counter() - started)

    last_summary = time.monotonic()
    try:
        if todo:
            threads = int(settings.threads)  # checked by run_batch
            workers = n_jobs if n_jobs is not None else default_jobs(threads)
            workers = min(workers, len(todo))
            log.info("running %d series on %s", len(todo), scheduler or f"a local cluster of {workers} worker(s) x {threads} thread(s)")
            client, cluster = _client_for(scheduler, workers, threads)
            try:
                from ._dask_worker import TorchWorkerSetup

                reg = settings.register
                client.register_plugin(TorchWorkerSetup(threads, reg.engine_name(), reg.device, reg.weights, speak=interface()))
                futures = {
                    client.submit(run_series, job, settings, str(outdir), speak=interface(), key=f"any2reg-series-{job.name}-{os.getpid()}-{time.time_ns()}",
                                  pure=False): job
                    for job in todo
                }
                for future, lost in _completed_while_workers_live(client, futures):
                    job = futures[future]
                    try:
                        if lost is not None:
                            raise lost
                        row = future.result()
                    except Exception as exc:  # the worker died (memory, segfault): the cohort goes on
                        error = (str(exc) if isinstance(exc, NoLiveWorker)
                                 else f"the worker running it died ({_one_line(exc)}); it is retried on the next run")
                        row = {"series": job.name, "input": job.label, "output": str(outdir / job.name),
                               "status": "failed", "this_run": "failed", "error": error}
                        try:
                            _write_failure(outdir / job.name, row)
                        except Exception:
                            pass
                    rows[job.name] = row
                    done_count += 1
                    if on_result is not None:
                        on_result(row, done_count, len(jobs))
                    if time.monotonic() - last_summary > summary_every_s:
                        write_summary(report().rows, outdir, qc_page=False)
                        last_summary = time.monotonic()
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        final = report()
        final.files = write_summary(final.rows, outdir)
    return final
