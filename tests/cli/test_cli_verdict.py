"""The verdict end to end (issue 27): ``any2reg register`` prints it last and writes it with the
outlier frames and the displacement SD to metrics.json; ``--export uncertainty`` writes
displacement_sd.npy (refused for a classical engine); ``run_batch`` sorts the series to look at
first in summary.csv.

64x64 MOLLI phantoms (8 frames), the any2reg network on the CPU, one with frame 5 from another
slice position (:func:`napari_any2reg.core.phantom.bad_frames.inject_bad_frame`).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.core.phantom.bad_frames import inject_bad_frame
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.qc.verdict import verdict_line
from napari_any2reg.io import write_tiff

BAD = 5


@pytest.fixture(scope="module")
def molli():
    # the phantom of tests/core/test_outliers.py: frame 5 injected is flagged and no other
    return make_phantom("molli", seed=20711, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=8.0)


def _write(path, phantom, bad=True):
    frames = inject_bad_frame(phantom, BAD, "other_slice") if bad else phantom.sequence.frames
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tiff(path, phantom.sequence.replace(frames=frames))
    return path


def test_register_prints_the_verdict_last_and_writes_it_to_metrics(tmp_path, molli, capsys):
    source = _write(tmp_path / "bad.tif", molli)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["register", str(source), "-o", str(out), "--engine", "any2reg", "--device", "cpu",
                 "--export", "uncertainty"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    metrics = json.loads((out / "metrics.json").read_text())
    verdict = metrics["verdict"]
    assert verdict["level"] in ("check", "poor") and verdict["reasons"]
    assert all({"level", "text", "frames"} <= set(r) for r in verdict["reasons"])
    assert printed[-1] == verdict_line(verdict)
    assert printed[-1].startswith(f"{verdict['level']}: frame {BAD} disagrees with the rest")
    assert metrics["outlier_frames"]["indices"] == [BAD] and metrics["outlier_frames"]["reasons"][str(BAD)]
    sd = metrics["displacement_sd"]
    assert sd["available"] is True and sd["p95_mm"] > 0 and len(sd["p95_mm_per_frame"]) == 8

    # --export uncertainty: the per-pixel SD in mm, one map per frame
    field = np.load(out / "displacement_sd.npy")
    assert field.shape == (8, 64, 64) and np.isfinite(field).all() and field.max() > 0
    heart = np.percentile(field[:, 16:48, 16:48], 95)  # the central box, as the summary without a mask
    assert sd["region"].startswith("heart box") and abs(heart - sd["p95_mm"]) < 1e-3


def test_a_classical_engine_refuses_the_uncertainty_export(tmp_path, molli, capsys):
    source = _write(tmp_path / "bad.tif", molli)
    out = tmp_path / "out"
    assert main(["register", str(source), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--export", "uncertainty", "-q"]) != 0
    err = capsys.readouterr().err
    assert "--export uncertainty: the groupwise engine gives no per-pixel uncertainty" in err
    assert "any2reg" in err and "leave uncertainty out of --export" in err
    assert not out.exists() or not any(out.iterdir())  # refused before registering: nothing written


def test_batch_summary_puts_the_bad_series_first_with_its_verdict(tmp_path, molli):
    from napari_any2reg.pipeline.batch import BatchSettings, run_batch
    from napari_any2reg.pipeline.cohort import discover
    from napari_any2reg.pipeline.series import RegisterSettings

    root = tmp_path / "in"
    # alphabetically the clean series comes first: only the verdict can put the bad one before it
    clean, bad = _write(root / "a_clean.tif", molli, bad=False), _write(root / "b_bad.tif", molli)
    jobs = discover([clean, bad])
    assert [job.name for job in jobs] == ["a_clean", "b_bad"]
    settings = BatchSettings(register=RegisterSettings(engine="any2reg", device="cpu"))
    report = run_batch(jobs, tmp_path / "out", settings, n_jobs=1)
    assert all(row["status"] == "ok" for row in report.rows), report.rows
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["series"] for row in rows] == ["b_bad", "a_clean"]
    assert rows[0]["verdict"] in ("check", "poor") and f"frame {BAD}" in rows[0]["verdict_reasons"]
    assert rows[1]["verdict"] == "good"
    metrics = json.loads((tmp_path / "out" / "b_bad" / "metrics.json").read_text())
    assert rows[0]["verdict"] == metrics["verdict"]["level"]
