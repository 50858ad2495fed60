"""any2reg batch (issue 14): cohort discovery, Dask runs, skip/resume, summary, CLI hygiene.

Kept small for a busy 2-core machine: 48 x 48 phantoms and the any2reg network (about 0.1 s a
series); most runs use one in-process Dask cluster (module fixture) through ``--scheduler``, and
two tests start the default local cluster of worker processes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.pipeline.batch import BatchSettings, series_state
from napari_any2reg.pipeline.cohort import discover
from napari_any2reg.pipeline.series import RegisterSettings
from napari_any2reg.pipeline.summary import cohort_outliers, summary_csv_text

ANY2REG = [str(Path(sys.executable).with_name("any2reg"))]  # the console script, as a user runs it
SIZE = 48


def _phantom(path: Path, seed: int, kind: str = "molli") -> Path:
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io import write_tiff

    path.parent.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom(kind, seed=seed, shape=(SIZE, SIZE))
    write_tiff(path, phantom.sequence)
    return path


def _summary(outdir: Path) -> dict[str, dict[str, str]]:
    with open(outdir / "summary.csv", newline="") as handle:
        return {row["series"]: row for row in csv.DictReader(handle)}


def _cohort(root: Path, n: int) -> Path:
    for k in range(n):
        _phantom(root / f"p{k}" / "molli.tif", seed=k)
    return root


@pytest.fixture(scope="module")
def scheduler():
    """An in-process Dask cluster (threads, no worker processes): what --scheduler connects to."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


# ---------------------------------------------------------------------------- CLI hygiene
def test_default_jobs_divides_the_usable_cores_by_threads_per_job(monkeypatch):
    from napari_any2reg.pipeline import batch

    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert batch.default_jobs(1) == 6 and batch.default_jobs(2) == 3 and batch.default_jobs(8) == 1
    # where the affinity call does not exist (macOS, Windows) every core counts
    monkeypatch.delattr(batch.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 8)
    assert batch.default_jobs(2) == 4 and batch.default_jobs(0) == 8
    monkeypatch.setattr(batch.os, "cpu_count", lambda: None)
    assert batch.default_jobs(1) == 1


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from napari_any2reg.cli import main\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', 'DASK' if 'distributed' in sys.modules else 'NO-DASK',"
        " time.perf_counter() - t, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    torch_state, dask_state, _seconds = done.stderr.split()[-3:]  # how fast: not a test's business
    assert (torch_state, dask_state) == ("NO-TORCH", "NO-DASK"), done.stderr
    assert "Exit codes:" in done.stdout and "batch" in done.stdout


def test_register_threads_quiet_progress_and_no_carriage_returns(tmp_path, capsys):
    import torch

    source = _phantom(tmp_path / "molli.tif", seed=3)
    assert main(["register", str(source), "-o", str(tmp_path / "out"), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    captured = capsys.readouterr()
    assert "\r" not in captured.err  # stderr is not a terminal: no progress bar in the log
    assert "engine any2reg" in captured.out
    assert main(["-q", "register", str(source), "-o", str(tmp_path / "out2")]) == 0  # -q before the command
    assert capsys.readouterr().out == ""
    assert main(["register", str(source), "-o", str(tmp_path / "out3"), "--threads", "0"]) == 1
    assert "--threads must be a whole number >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- discovery
def _write_dicom(path: Path, pixels: np.ndarray, series_uid: str, **fields) -> None:
    from conftest import write_dicom

    write_dicom(path, pixels, series_uid, **fields)


def _dicom_molli(folder: Path, *, series_number: int, slices: int, seed: int) -> None:
    """One MOLLI series of ``slices`` slices (phantom frames, TI in InversionTime) in ``folder``."""
    from pydicom.uid import generate_uid

    from napari_any2reg.core.phantom import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for s in range(slices):
        seq = make_phantom("molli", seed=seed + s, shape=(SIZE, SIZE)).sequence
        pixels = np.clip(seq.frames / seq.frames.max() * 1000, 0, 4000)
        for k, ti in enumerate(seq.timings_ms):
            _write_dicom(folder / f"S{series_number}_{s}_{k:02d}.dcm", pixels[k], uid, InversionTime=float(ti),
                         SeriesNumber=series_number, SeriesDescription="MOLLI 5(3)3", InstanceNumber=k + 1,
                         ImagePositionPatient=[0.0, 0.0, 8.0 * s])


def test_discover_files_dicom_series_slices_masks_and_csv(tmp_path):
    root = tmp_path / "study"
    _phantom(root / "a" / "molli.tif", seed=1)
    np.save(root / "a" / "molli_mask.npy", np.zeros((SIZE, SIZE), np.uint8))  # not a series: .npy
    _phantom(root / "b" / "molli.tif", seed=2)
    (root / "b" / "molli_labels.tif").write_bytes((root / "a" / "molli.tif").read_bytes())  # a mask, paired
    _dicom_molli(root / "c" / "dicom", series_number=7, slices=2, seed=3)
    _phantom(root / "out" / "old" / "registered.tif", seed=4)  # the output folder is never searched
    jobs = discover([root], exclude=[root / "out"])
    names = [job.name for job in jobs]
    assert names == ["a_molli", "b_molli", "c_dicom_s7_sl1", "c_dicom_s7_sl2"]
    assert jobs[1].mask == str(root / "b" / "molli_labels.tif") and jobs[0].mask is None
    assert all(len(job.source) == 8 for job in jobs[2:])  # one slice: its 8 frames
    assert discover([root], exclude=[root / "out"]) == jobs  # stable names

    table = tmp_path / "list.csv"
    table.write_text("path,id,kind,timings_ms,spacing_mm,mask\n"
                     "study/a/molli.tif,patient 1,molli,100;180;260;340;1100;1180;2100;2180,1.2,study/a/molli_mask.npy\n"
                     "study/b/molli.tif,,,,,\n"
                     "study/a/molli.tif,,,,,\n")
    listed = discover([], [table])
    assert [j.name for j in listed][0] == "patient_1"
    assert listed[0].timings_ms[0] == 100.0 and listed[0].spacing_mm == (1.2, 1.2) and listed[0].kind == "molli"
    assert listed[0].mask == str(tmp_path / "study/a/molli_mask.npy")
    assert listed[1].name != listed[2].name and {j.name.split("-")[0] for j in listed[1:]} == {"molli"}  # clash: hashed
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.tif\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        discover([bad])


# ---------------------------------------------------------------------------- end to end
def test_cohort_end_to_end_broken_file_then_resume_and_retry(tmp_path, capsys):
    """Default local cluster (worker processes): one broken file fails alone; a re-run skips
    the finished series and retries the failed one; fixing the file lets it finish."""
    root = _cohort(tmp_path / "in", 2)
    broken = root / "p9" / "broken.tif"
    broken.parent.mkdir()
    broken.write_text("not a TIFF")
    outdir = tmp_path / "out"
    argv = ["batch", str(root), "-o", str(outdir), "--jobs", "1", "--fit"]
    assert main(argv) == 3  # some series failed
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "[3/3]" in captured.err  # one log line per series, no bar
    assert "p9_broken: SequenceReadError" in captured.err
    rows = _summary(outdir)
    assert set(rows) == {"p0_molli", "p1_molli", "p9_broken"}
    assert rows["p9_broken"]["status"] == "failed" and "not a readable TIFF" in rows["p9_broken"]["error"]
    assert rows["p9_broken"]["qc_flags"] == "failed"
    assert sorted(os.listdir(outdir / "p9_broken")) == ["failed.json"]
    for name in ("p0_molli", "p1_molli"):
        row = rows[name]
        assert row["status"] == "ok" and row["this_run"] == "ran" and row["engine"] == "any2reg"
        assert float(row["alignment_after"]) > float(row["alignment_before"])
        assert float(row["folding_percent"]) == 0.0 and float(row["seconds_registration"]) > 0
        assert row["fit_model"] == "molli" and row["roi"].startswith("central box")
        assert 800 < float(row["t1_mean_ms_after"]) < 2500 and float(row["t1_sd_ms_after"]) > 0
        assert float(row["r2_mean_after"]) >= float(row["r2_mean_before"]) - 0.01
        assert row["n_flagged_frames"].isdigit()
        files = set(os.listdir(outdir / name))
        assert {"registered.tif", "displacement.npy", "run.json", "series.json", "qc.json", "t1_registered.tif",
                "thumbnail.npy"} <= files
        record = json.loads((outdir / name / "run.json").read_text())
        assert set(record["exported"]["sha256"]) <= files
    page = (outdir / "cohort_qc.html").read_text()
    assert "p9_broken" in page and "data:image/png;base64," in page
    assert (outdir / "cohort_qc.png").stat().st_size > 10_000

    stamp = {name: (outdir / name / "run.json").stat().st_mtime_ns for name in ("p0_molli", "p1_molli")}
    broken.unlink()
    _phantom(broken, seed=9)  # the file is fixed
    assert main(argv) == 0
    rows = _summary(outdir)
    assert [rows[n]["this_run"] for n in ("p0_molli", "p1_molli", "p9_broken")] == ["skipped", "skipped", "ran"]
    assert all(row["status"] == "ok" for row in rows.values())
    assert not (outdir / "p9_broken" / "failed.json").exists()
    assert stamp == {name: (outdir / name / "run.json").stat().st_mtime_ns for name in stamp}  # nothing redone
    assert "0 failed" in capsys.readouterr().out


def test_scheduler_address_csv_mask_dicom_and_settings_guard(tmp_path, scheduler, capsys):
    """--scheduler with an in-process cluster; a CSV row with overrides and a mask; a DICOM series."""
    from napari_any2reg.core.phantom import make_phantom

    phantom = make_phantom("molli", seed=5, shape=(SIZE, SIZE))
    _phantom(tmp_path / "a.tif", seed=5)
    np.save(tmp_path / "a_labels.npy", phantom.common_labels)
    _dicom_molli(tmp_path / "dicom", series_number=3, slices=1, seed=6)
    table = tmp_path / "cohort.csv"
    table.write_text("path,id,mask\na.tif,P001,a_labels.npy\n")
    outdir = tmp_path / "out"
    argv = ["batch", "--list", str(table), str(tmp_path / "dicom"), "-o", str(outdir), "--scheduler", scheduler, "--fit"]
    assert main(argv) == 0, capsys.readouterr().err
    rows = _summary(outdir)
    assert set(rows) == {"P001", "dicom_s3"}
    assert rows["P001"]["roi"] == "mask label 2 (LV myocardium)" and float(rows["P001"]["t1_mean_ms_after"]) > 0
    assert rows["dicom_s3"]["status"] == "ok" and rows["dicom_s3"]["n_frames"] == "8" and rows["dicom_s3"]["fit_model"] == "molli"
    # another engine into the same folder: refused per series, named fix, nothing replaced
    assert main(argv + ["--engine", "any2reg-io", "--io-steps", "2"]) == 3
    rows = _summary(outdir)
    assert all("pass --overwrite" in row["error"] and "other settings" in row["error"] for row in rows.values())
    assert main(argv) == 0 and {r["this_run"] for r in _summary(outdir).values()} == {"skipped"}
    capsys.readouterr()


def test_resume_notices_a_changed_engine_option(tmp_path, scheduler, capsys):
    """An engine option beyond the old fixed ones (--no-coarse, --refinement) is part of the
    resume key: changing it is refused without --overwrite and redone with it."""
    _phantom(tmp_path / "in" / "m.tif", seed=2)
    outdir = tmp_path / "out"
    argv = ["batch", str(tmp_path / "in"), "-o", str(outdir), "--scheduler", scheduler, "--device", "cpu",
            "--engine", "any2reg-io", "--refinement", "instance", "--io-steps", "2", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    (name,) = _summary(outdir)
    record = json.loads((outdir / name / "run.json").read_text())
    assert record["engine_options"] == {"refinement": "instance", "io_steps": 2}
    assert main(argv) == 0 and _summary(outdir)[name]["this_run"] == "skipped"
    assert main(argv + ["--no-coarse"]) == 3
    assert "other settings" in _summary(outdir)[name]["error"]
    assert main(argv + ["--no-coarse", "--overwrite"]) == 0 and _summary(outdir)[name]["this_run"] == "ran"
    record = json.loads((outdir / name / "run.json").read_text())
    assert record["engine_options"] == {"refinement": "instance", "io_steps": 2, "coarse": False}
    assert record["params"]["coarse"] is False
    capsys.readouterr()


def test_a_series_mask_drives_its_registration_as_register_mask(tmp_path, scheduler, capsys):
    """The CSV mask column is passed to register(..., mask=) (not only the T1 ROI): the series'
    run record names it and its field is the one of 'any2reg register --mask'."""
    from napari_any2reg.core.phantom import make_phantom

    phantom = make_phantom("molli", seed=4, shape=(SIZE, SIZE))
    _phantom(tmp_path / "a.tif", seed=4)
    mask = tmp_path / "a_heart.npy"
    # one side of the heart: grown by the mask margin (20 mm) it still leaves most of the small
    # image out, so the masked registration differs from the plain one
    np.save(mask, np.where(np.arange(SIZE)[None, :] < SIZE // 3, phantom.common_labels, 0))
    (tmp_path / "cohort.csv").write_text("path,id,mask\na.tif,P1,a_heart.npy\n")
    engine = ["--engine", "groupwise", "--iterations-scale", "0.1", "--device", "cpu", "-q"]
    outdir = tmp_path / "out"
    assert main(["batch", "--list", str(tmp_path / "cohort.csv"), "-o", str(outdir), "--scheduler", scheduler] + engine) == 0
    record = json.loads((outdir / "P1" / "run.json").read_text())
    assert record["input"]["mask"] == str(mask)
    assert "pixels drive the similarity" in record["params"]["mask"]
    for name, extra in (("masked", ["--mask", str(mask)]), ("plain", [])):
        assert main(["register", str(tmp_path / "a.tif"), "-o", str(tmp_path / name)] + engine + extra) == 0
    batch_u = np.load(outdir / "P1" / "displacement.npy")
    np.testing.assert_allclose(batch_u, np.load(tmp_path / "masked" / "displacement.npy"), atol=1e-4)
    assert np.abs(batch_u - np.load(tmp_path / "plain" / "displacement.npy")).max() > 1e-2  # the mask mattered
    capsys.readouterr()


def test_a_series_computes_its_qc_once_for_the_export_and_the_summary_row(tmp_path, monkeypatch):
    from napari_any2reg.core import export as core_export
    from napari_any2reg.pipeline import export
    from napari_any2reg.pipeline.batch import run_series

    calls = []
    original = core_export.qc_metrics
    for module in (core_export, export):  # wherever it is looked up
        monkeypatch.setattr(module, "qc_metrics", lambda *a, **k: calls.append(1) or original(*a, **k))
    job = discover([_phantom(tmp_path / "m.tif", seed=7)])[0]
    settings = BatchSettings(register=RegisterSettings(engine="groupwise", device="cpu", export="qc",
                                                       engine_options={"iterations_scale": 0.1}))
    row = run_series(job, settings, str(tmp_path / "out"))
    assert row["status"] == "ok", row.get("error")
    assert len(calls) == 1
    qc = json.loads((tmp_path / "out" / job.name / "qc.json").read_text())
    assert row["max_displacement_mm"] == qc["max_displacement_mm"] and row["n_flagged_frames"] == len(qc["flagged_frames"])


def test_kill_mid_run_then_resume_redoes_nothing(tmp_path):
    """SIGKILL of the whole run (client and workers) after the first series: the re-run skips
    every finished series, leaves no staging folder and finishes the rest."""
    root = _cohort(tmp_path / "in", 4)
    outdir = tmp_path / "out"
    argv = ANY2REG + ["batch", str(root), "-o", str(outdir), "--jobs", "1", "--engine", "any2reg-io", "--io-steps", "40"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and not list(outdir.glob("*/series.json")):
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    finished = sorted(p.parent.name for p in outdir.glob("*/series.json"))
    assert 1 <= len(finished) < 4, "the run ended before it could be killed mid-way"
    stamp = {name: (outdir / name / "run.json").stat().st_mtime_ns for name in finished}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _summary(outdir)
    assert {name for name, row in rows.items() if row["this_run"] == "skipped"} == set(finished)
    assert all(row["status"] == "ok" for row in rows.values()) and len(rows) == 4
    assert stamp == {name: (outdir / name / "run.json").stat().st_mtime_ns for name in finished}
    assert not list(outdir.glob("*/.any2reg-staging-*"))


# ---------------------------------------------------------------------------- summary
def test_summary_rows_outliers_and_settings_state(tmp_path):
    rows = [{"series": f"s{k}", "status": "ok", "alignment_before": 0.80, "alignment_after": 0.90 + 0.001 * k,
             "folding_percent": 0.0, "n_flagged_frames": 0, "seconds_registration": 1.0 + 0.01 * k} for k in range(8)]
    rows[2].update(alignment_after=0.78)  # worse after registration, and a low gain for this cohort
    rows[3].update(folding_percent=0.2, n_flagged_frames=2, r2_mean_before=0.99, r2_mean_after=0.95)
    rows[4].update(seconds_registration=30.0)
    rows.append({"series": "broken", "status": "failed", "error": "SequenceReadError: x"})
    flags = cohort_outliers(rows)
    assert set(flags) == {"s2", "s3", "s4", "broken"}
    assert "alignment worse after" in flags["s2"] and "low alignment gain for this cohort" in flags["s2"]
    assert flags["s3"] == ["folding 0.200 %", "2 flagged frame(s)", "ROI R2 lower after"]
    assert flags["s4"] == ["slow for this cohort"] and flags["broken"] == ["failed"]
    text = summary_csv_text(rows + [{"series": "x", "_batch": {"hidden": 1}, "custom": 2.5}])
    header = text.splitlines()[0].split(",")
    # the verdict leads (the series to look at first), then what this run did
    assert header[:6] == ["series", "status", "verdict", "verdict_reasons", "this_run", "qc_flags"]
    assert header[-1] == "custom" and "_batch" not in header

    settings = BatchSettings(register=RegisterSettings(engine="groupwise"))
    job = discover([_phantom(tmp_path / "m.tif", seed=1)])[0]
    assert series_state(tmp_path / "nothing", job, settings) == ("todo", None)


def test_cohort_lock_refuses_a_second_run_and_takes_over_a_dead_one(tmp_path):
    from napari_any2reg.pipeline.batch import LOCK_FILE, CohortLocked, cohort_lock, run_batch

    outdir = tmp_path / "cohort"
    outdir.mkdir()
    with cohort_lock(outdir) as lock:
        assert lock.is_file() and json.loads(lock.read_text())["pid"] == os.getpid()
        # a second run on the same folder while the first holds it: refused, nothing written
        with pytest.raises(CohortLocked, match="another any2reg batch .* choose another output folder"):
            run_batch([], outdir)
        assert not (outdir / "summary.csv").exists()
    assert not (outdir / LOCK_FILE).exists()  # released

    # a lock left by a process that no longer exists on this host is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (outdir / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    report = run_batch([], outdir)
    assert report.rows == [] and (outdir / "summary.csv").is_file()
    assert not (outdir / LOCK_FILE).exists()


def test_batch_worker_errors_speak_the_command_line(tmp_path, capsys):
    """Worker processes never entered the CLI vocabulary: ``any2reg batch --reference-frame 8``
    on an 8-frame series stored "reference_frame=8 is outside ..." in summary.csv. The batch
    carries its interface into the worker jobs."""
    root = _cohort(tmp_path / "in", 1)
    outdir = tmp_path / "out"
    assert main(["batch", str(root), "-o", str(outdir), "--jobs", "1", "--engine", "groupwise", "--reference-frame", "8", "-q"]) == 3
    error = _summary(outdir)["p0_molli"]["error"]
    assert "--reference-frame 8 is outside the frames 0..7" in error and "reference_frame=" not in error, error
    assert json.loads((outdir / "p0_molli" / "failed.json").read_text())["error"] == error


def test_dask_worker_setup_speaks_the_batch_interface(tmp_path, monkeypatch, caplog):
    """The per-worker set-up loads the network once and logs a weights problem; in a worker
    process it said weights='...' to whoever typed ``any2reg batch --weights``. It is given the
    batch's interface as each series is (called directly here: no cluster needed)."""
    import logging

    import torch

    from napari_any2reg.pipeline._dask_worker import TorchWorkerSetup

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # the set-up pins them: restored after the test
    missing = tmp_path / "missing.pt"
    threads = torch.get_num_threads()
    try:
        for speak, named in (("cli", f"--weights {missing}: no such file"), (None, f"weights={str(missing)!r}: no such file")):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="napari_any2reg.pipeline._dask_worker"):
                TorchWorkerSetup(1, "any2reg", "cpu", str(missing), speak=speak).setup()
            messages = [record.getMessage() for record in caplog.records]
            assert any(named in message for message in messages), messages
    finally:
        torch.set_num_threads(threads)
