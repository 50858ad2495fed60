"""Hostile inputs (issue 24), second round: the cases of benchmarks/results/hostile_inputs.md that
still hung, ended in a traceback or exited 0.

As in test_hostile_inputs.py, each test drives the ``any2reg`` main function (and the Python
API where the check lives there) with the sweep's input, built as
benchmarks/bench_hostile_inputs.py builds it, and asserts a one-line error naming the problem
and the fix in that interface's words, with nothing written.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.core.registration import available_engines
from test_hostile_inputs import _engines_must_not_run, _one_error_line  # the first round's helpers

FAST = ["--device", "cpu", "--iterations-scale", "0.05", "-q"]
available_engines()  # the built-in engines registered now, so that a test's stand-in is not replaced later


@pytest.fixture(scope="module")
def molli_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "molli.tif"
    assert main(["sample", "molli", "-o", str(path), "--size", "32", "--seed", "1"]) == 0
    return path


# ---------------------------------------------------------------- 1. train --steps 1000000000
def test_train_steps_are_bounded_on_the_cli_and_in_python(tmp_path, capsys):
    """The sweep's `train --steps 1000000000` ran practically forever (killed at its timeout)."""
    from napari_any2reg.core.training.config import TrainingConfig

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--size", "32", "--steps", "1000000000"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--steps must be >= 1 and at most 10000000" in line and "got 1000000000" in line
    assert not out.exists()
    with pytest.raises(ValueError, match=r"^steps must be >= 1 and at most 10000000") as info:
        TrainingConfig(steps=10_000_001)
    assert "--steps" not in str(info.value)
    assert TrainingConfig(steps=10_000_000).steps == 10_000_000  # the bound itself is a valid run length


# ---------------------------------------------------------------- 2. train --init-weights huge.pt
def _weights_variant(tmp_path, how: str):
    """A copy of the default weights with every floating tensor of the network filled with NaN or
    1e30 (the sweep's nan.pt / huge.pt)."""
    import torch

    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
    from napari_any2reg.io.model_io import weights_dir

    checkpoint = torch.load(weights_dir() / DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    for key, value in checkpoint["model_state"].items():
        if value.is_floating_point():
            checkpoint["model_state"][key] = value.clone().fill_(float("nan") if how == "nan" else 1e30)
    path = tmp_path / f"{how}.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("how, words", [("huge", "holds 1e+30, far beyond any trained weight"), ("nan", "NaN or Inf")])
def test_train_refuses_damaged_initial_weights_before_writing(how, words, tmp_path, capsys):
    """huge.pt ended in a raw torch._C._LinAlgError traceback (the PCA weights' eigh)."""
    weights = _weights_variant(tmp_path, how)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--size", "32", "--steps", "2", "--init-weights", str(weights)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"--init-weights {weights}" in line and words in line and "use another copy" in line, line
    assert not out.exists()  # not even config.json


def test_damaged_initial_weights_in_python_name_init_weights(tmp_path):
    from napari_any2reg.core.training import check_init_weights
    from napari_any2reg.core.training.config import TrainingConfig
    from napari_any2reg.core.weights import WeightsError
    from napari_any2reg.pipeline.training import train

    weights = _weights_variant(tmp_path, "huge")
    out = tmp_path / "run"
    config = TrainingConfig(shape=(32, 32), steps=2, init_weights=str(weights))
    with pytest.raises(WeightsError, match=rf"^init_weights {weights}: tensor .* holds 1e\+30") as info:
        train(config, out)
    assert "--init-weights" not in str(info.value) and not out.exists()
    with pytest.raises(WeightsError, match="holds no network"):
        check_init_weights([1, 2, 3], "list.pt")


def test_register_with_the_same_weights_file_gets_the_same_check(tmp_path, molli_file, capsys):
    weights = _weights_variant(tmp_path, "huge")
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--device", "cpu", "--weights", str(weights), "-q"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(weights) in line and "holds 1e+30, far beyond any trained weight" in line
    assert not out.exists()


def test_a_linear_algebra_failure_in_a_training_step_is_one_line(tmp_path, monkeypatch, capsys):
    """A LinAlgError inside a step (the eigh of the PCA weights on unusable features) was a raw
    traceback: it now says which step failed and what to try."""
    import torch

    import napari_any2reg.core.training.loop as loop

    def failing_loss(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (error code: 9).")

    monkeypatch.setattr(loop, "training_loss", failing_loss)
    assert main(["train", "--out", str(tmp_path / "run"), "--size", "32", "--steps", "2", "-q"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "training failed at step 1" in line and "the network's output is not usable" in line
    assert "smaller learning rate" in line and "linalg.eigh" in line


def _side_inputs(tmp_path, molli_file, monkeypatch):
    """The inputs of every writing command (field, landmarks, map, labels) and an empty working
    folder made current: ``(inputs folder, {name: path}, working folder)``."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    names = {"molli": str(molli_file), "field": str(inputs / "displacement.npy"),
             "landmarks": str(inputs / "lm.csv"), "map": str(inputs / "map.npy"), "labels": str(inputs / "labels.npy")}
    np.save(names["field"], np.zeros((8, 2, 32, 32), np.float32))
    (inputs / "lm.csv").write_text("frame,name,y,x\n0,p,10,10\n1,p,10,10\n", encoding="utf-8")
    np.save(names["map"], np.full((48, 48), 1000.0))
    np.save(names["labels"], np.zeros((48, 48), np.uint8))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return inputs, names, work


# ---------------------------------------------------------------- 3. -o ''
@pytest.mark.parametrize("command", [
    ["register", "{molli}", "-o", ""],
    ["batch", "{molli}", "-o", ""],
    ["fit", "{molli}", "-o", " "],
    ["apply", "{field}", "{molli}", "-o", ""],
    ["sample", "molli", "-o", ""],
    ["train", "--out", "", "--steps", "2", "--size", "32"],
    ["tre", "{field}", "{landmarks}", "--out", ""],
    ["ecv", "{map}", "{map}", "-o", "", "--mask", "{labels}", "--hematocrit", "0.42"],
    ["segments", "{map}", "-o", "", "--mask", "{labels}", "--rv-insertion", "14,18;34,18"],
])
def test_an_empty_output_path_is_refused_naming_the_flag(command, tmp_path, molli_file, monkeypatch, capsys):
    """`register ... -o ''` wrote the outputs into the current folder with exit 0."""
    _engines_must_not_run(monkeypatch)
    inputs, names, work = _side_inputs(tmp_path, molli_file, monkeypatch)
    with pytest.raises(SystemExit) as info:  # a flag's value: a usage error, as --spacing-mm
        main([part.format(**names) for part in command])
    flag = "--out" if "--out" in command else "-o/--output"
    assert info.value.code == 2
    assert f"argument {flag}: the output path is empty" in capsys.readouterr().err
    assert list(work.iterdir()) == [] and sorted(p.name for p in inputs.iterdir()) == [
        "displacement.npy", "labels.npy", "lm.csv", "map.npy"]


def _api_calls(names):
    """Each public pipeline function that writes, called with an empty output path as its
    parameter is named (the CLI's flag check does not reach the Python API)."""
    from napari_any2reg.core.training.config import TrainingConfig
    from napari_any2reg.io import read_sequence
    from napari_any2reg.pipeline.apply import apply_file
    from napari_any2reg.pipeline.batch import run_batch
    from napari_any2reg.pipeline.ecv import ecv_file
    from napari_any2reg.pipeline.fit import fit_series
    from napari_any2reg.pipeline.sample import write_sample
    from napari_any2reg.pipeline.segments import segments_file
    from napari_any2reg.pipeline.series import RegisterSettings, register_series
    from napari_any2reg.pipeline.training import train
    from napari_any2reg.pipeline.tre import tre_file

    sequence = read_sequence(names["molli"])
    return {
        "register_series": ("outdir", lambda: register_series(sequence, "", RegisterSettings(device="cpu"))),
        "run_batch": ("outdir", lambda: run_batch([], "")),
        "fit_series": ("outdir", lambda: fit_series(names["molli"], " ")),
        "apply_file": ("output_path", lambda: apply_file(names["field"], names["molli"], "")),
        "write_sample": ("output", lambda: write_sample("molli", "")),
        "train": ("out_dir", lambda: train(TrainingConfig(steps=2, shape=(32, 32)), "")),
        "tre_file": ("out", lambda: tre_file(names["field"], names["landmarks"], out="")),
        "ecv_file": ("outdir", lambda: ecv_file(names["map"], names["map"], "", mask_path=names["labels"], hematocrit=0.42)),
        "segments_file": ("outdir", lambda: segments_file(names["map"], "", mask_path=names["labels"],
                                                          rv_insertion=((14, 18), (34, 18)))),
    }


@pytest.mark.parametrize("function", ["register_series", "run_batch", "fit_series", "apply_file", "write_sample",
                                      "train", "tre_file", "ecv_file", "segments_file"])
def test_an_empty_output_path_is_refused_in_python_naming_the_parameter(function, tmp_path, molli_file, monkeypatch):
    """``outdir=''`` in the API wrote into the current folder, as ``-o ''`` did in the CLI."""
    _engines_must_not_run(monkeypatch)
    inputs, names, work = _side_inputs(tmp_path, molli_file, monkeypatch)
    parameter, call = _api_calls(names)[function]
    with pytest.raises(ValueError, match=rf"^{parameter}= is empty \('\s*'\); give the folder or file to write"):
        call()
    assert list(work.iterdir()) == []


# ---------------------------------------------------------------- 4. tre with a damaged field
@pytest.mark.parametrize("fill, words", [(math.nan, "NaN or Inf"), (math.inf, "NaN or Inf"),
                                         (1e30, "shifts of up to 1e+30 px, beyond the 32 x 32 image")])
def test_tre_refuses_the_fields_apply_refuses(fill, words, tmp_path, capsys):
    """`tre field_nan.npy lm_ok.csv` (and field_huge.npy) printed a TRE and exited 0."""
    from napari_any2reg.pipeline.tre import tre_file

    field = tmp_path / "displacement.npy"
    np.save(field, np.full((8, 2, 32, 32), fill, np.float32))
    landmarks = tmp_path / "lm.csv"
    landmarks.write_text("frame,name,y,x\n" + "".join(f"{k},p1,16,16\n" for k in range(8)), encoding="utf-8")
    out = tmp_path / "tre.json"
    assert main(["tre", str(field), str(landmarks), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(field) in line and words in line and "register again" in line, line
    assert not out.exists()
    with pytest.raises(ValueError, match=words.replace("+", r"\+")):
        tre_file(field, landmarks)


# ---------------------------------------------------------------- 5. segments of an all-NaN map
def _rings(size: int = 48) -> np.ndarray:
    """The labels of the sweep (blood pool 1, myocardium 2, right ventricle 3)."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    labels = np.zeros((size, size), np.uint8)
    labels[r < 8] = 1
    labels[(r >= 8) & (r < 14)] = 2
    labels[(r >= 15) & (r < 21) & (xx < size / 2 - 6)] = 3
    return labels


@pytest.mark.parametrize("fill", [math.nan, math.inf])
def test_segments_of_a_map_without_a_finite_value_in_the_myocardium_is_an_error(fill, tmp_path, capsys):
    """`segments native_nan.npy` printed '-' for every segment and exited 0."""
    from napari_any2reg.pipeline.segments import segments_file

    labels = _rings()
    np.save(tmp_path / "labels.npy", labels)
    values = np.full(labels.shape, 1200.0)
    values[labels == 2] = fill  # finite elsewhere: only the myocardium counts
    np.save(tmp_path / "map.npy", values)
    out = tmp_path / "out"
    argv = ["segments", str(tmp_path / "map.npy"), "-o", str(out), "--mask", str(tmp_path / "labels.npy"),
            "--rv-insertion", "14,18;34,18"]
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "no finite value of the map lies in the myocardium" in line and "map and the mask belong together" in line
    assert str(tmp_path / "map.npy") in line and not out.exists()
    with pytest.raises(ValueError, match="no finite value of the map lies in the myocardium"):
        segments_file(tmp_path / "map.npy", out, mask_path=tmp_path / "labels.npy", rv_insertion="14,18;34,18")
    values[labels == 2] = 1000.0
    values[8 + 24, 24] = fill  # one bad pixel is left out of the statistics, as before
    np.save(tmp_path / "map.npy", values)
    assert main(argv) == 0 and (out / "segments.csv").exists()


# ---------------------------------------------------------------- 6. inversion / echo / trigger times
@pytest.mark.parametrize("times, words", [
    ("-100,-100,-100,-100,-100,-100,-100,-100", "8 frame(s) have a negative time (-100, -100, -100, -100, ... ms)"),
    ("1e300,1e300,1e300,1e300,1e300,1e300,1e300,1e300", "frame 0 has a time of 1e+300 ms, beyond +-1e+07 ms"),
    ("100,180,1100,1180,2100,2180,3100,-inf", "frame 7 has a time of -inf ms"),
])
def test_register_refuses_impossible_times(times, words, tmp_path, molli_file, monkeypatch, capsys):
    _engines_must_not_run(monkeypatch)
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--times-ms", times, "--engine", "groupwise", *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and "--times-ms" in line and "timings_ms" not in line, line
    assert not out.exists()


def test_a_file_whose_metadata_gives_negative_inversion_times_is_refused(tmp_path, molli_file, monkeypatch, capsys):
    """The sweep's ti_negative.tif (the any2reg JSON of an ImageJ TIFF) registered with exit 0;
    right times on the command line still read it."""
    import tifffile

    from napari_any2reg.io import read_sequence

    sequence = read_sequence(molli_file)
    meta = {"any2reg": 1, "kind": "molli", "name": "ti_negative", "timings_ms": [-float(t) for t in sequence.timings_ms],
            "timing_name": "inversion_times_ms", "spacing_mm": [1.5, 1.5]}
    path = tmp_path / "ti_negative.tif"
    tifffile.imwrite(path, np.asarray(sequence.frames), imagej=True, metadata={"axes": "TYX", "any2reg": json.dumps(meta)})
    _engines_must_not_run(monkeypatch)
    out = tmp_path / "out"
    assert main(["register", str(path), "-o", str(out), "--engine", "groupwise", *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and "negative time (-100, -180" in line and "inversion times" in line and "--times-ms" in line
    assert not out.exists()
    right = ",".join(f"{t:g}" for t in sequence.timings_ms)
    assert read_sequence(path, timings_ms=[float(t) for t in right.split(",")]).kind == "molli"


def test_sequence_times_in_python():
    from napari_any2reg.core.sequence import Sequence, SequenceError

    frames = np.random.default_rng(0).random((4, 8, 8), dtype=np.float32)
    with pytest.raises(SequenceError, match=r"negative time .* molli .* with timings_ms, or the right kind") as info:
        Sequence(frames, timings_ms=[-10.0, 100.0, 200.0, 300.0], kind="molli")
    assert "--times-ms" not in str(info.value)
    for kind in ("stone", "sasha", "ir"):
        with pytest.raises(SequenceError, match="negative time"):
            Sequence(frames, timings_ms=[-10.0, 100.0, 200.0, 300.0], kind=kind)
    with pytest.raises(SequenceError, match=r"beyond \+-1e\+07 ms.*timings_ms"):
        Sequence(frames, timings_ms=[1e300, 100.0, 200.0, 300.0], kind="cine")
    # a frame before the reference trigger, repeated measurements, a non-inverted STONE frame
    for kind in ("cine", "perfusion", "unknown"):
        assert Sequence(frames, timings_ms=[-40.0, 0.0, 40.0, 80.0], kind=kind).timings_ms[0] == -40.0
    assert list(Sequence(frames, timings_ms=[100.0] * 4, kind="molli").timings_ms) == [100.0] * 4
    assert math.isinf(Sequence(frames, timings_ms=[100.0, 200.0, 300.0, math.inf], kind="stone").timings_ms[3])
    with pytest.raises(SequenceError, match="negative time"):  # a replaced kind is checked too
        Sequence(frames, timings_ms=[-40.0, 0.0, 40.0, 80.0], kind="cine").replace(kind="molli")


# ---------------------------------------------------------------- 7. a TIFF with corrupted bytes
def test_a_corrupted_tiff_says_so_in_one_line(tmp_path, molli_file, monkeypatch, capsys, caplog):
    """corrupted.tif (every 97th byte changed) said 'pixel spacing (1.5, 2.55e-08) mm is outside
    0.001-1000 mm' after 7 lines of tifffile warnings on stderr."""
    from napari_any2reg.io import SequenceReadError, read_sequence

    raw = bytearray(molli_file.read_bytes())
    for i in range(8, len(raw), 97):
        raw[i] = (raw[i] * 31 + 7) % 256
    path = tmp_path / "corrupted.tif"
    path.write_bytes(bytes(raw))
    _engines_must_not_run(monkeypatch)
    out = tmp_path / "out"
    assert main(["register", str(path), "-o", str(out), "--engine", "groupwise", *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)  # tifffile's lines are not on stderr
    assert str(path) in line and "looks corrupted or truncated" in line and "copy it again" in line, line
    assert "pixel spacing" not in line and not out.exists()
    assert not [r for r in caplog.records if r.name == "tifffile"]  # nor passed on to the log handlers
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(molli_file.read_bytes()[: len(raw) // 2])
    with pytest.raises(SequenceReadError, match="truncated.tif: not a readable TIFF file: it looks corrupted"):
        read_sequence(truncated)
    assert read_sequence(molli_file).n_frames == 8  # an intact file still reads


# ---------------------------------------------------------------- 8. batch after a SIGKILLed run
@pytest.fixture(scope="module")
def scheduler():
    """An in-process Dask cluster (threads): the series run in this process."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


def test_batch_resumes_a_folder_a_killed_run_left(tmp_path, molli_file, scheduler, capsys):
    """What a SIGKILLed `batch` leaves: its lock naming a dead process, one series done, one with
    a staging folder and no outputs. The sweep's 'valid failed' was its own rerun with other
    settings; with the same settings every series must come out ok."""
    import csv
    import shutil
    import socket
    import subprocess
    import sys

    from napari_any2reg.pipeline.batch import LOCK_FILE

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for k in range(2):
        shutil.copy(molli_file, cohort / f"s{k}.tif")
    outdir = tmp_path / "out"
    argv = ["batch", str(cohort), "-o", str(outdir), "--scheduler", scheduler, "--engine", "groupwise",
            "--iterations-scale", "0.05", "--device", "cpu"]
    assert main(argv + ["-q"]) == 0
    capsys.readouterr()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    (outdir / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                "started": "2026-01-01T00:00:00"}))
    shutil.rmtree(outdir / "s1")
    staging = outdir / "s1" / ".any2reg-staging-killed"
    staging.mkdir(parents=True)
    (staging / "registered.tif").write_bytes(b"half a file")
    (outdir / "summary.csv").unlink()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "taking over" in err and "[1/2] s0: skipped" in err and "s1: ran" in err, err
    with open(outdir / "summary.csv", newline="") as handle:
        rows = {row["series"]: row for row in csv.DictReader(handle)}
    assert {name: row["status"] for name, row in rows.items()} == {"s0": "ok", "s1": "ok"}
    assert not (outdir / LOCK_FILE).exists() and not staging.exists() and (outdir / "s1" / "registered.tif").exists()


# ---------------------------------------------------------------- third round (sweep of this stop)
@pytest.mark.parametrize("flags, words", [
    (["--user-data-probability", "nan"], "--user-data-probability applies only with --user-data"),
    (["--real-data-probability", "0.5"], "--real-data-probability applies only with --real-data"),
    (["--motion-mm", "0,1e30"], "--motion-mm must be LOW,HIGH with 0 <= LOW <= HIGH <= 100 mm; got 0,1e+30"),
    (["--nonrigid-mm", "0,500"], "--nonrigid-mm must be LOW,HIGH with 0 <= LOW <= HIGH <= 100 mm; got 0,500"),
    (["--rotation-deg", "0,90"], "--rotation-deg must be LOW,HIGH with 0 <= LOW <= HIGH <= 45 degrees"),
])
def test_train_refuses_values_it_would_ignore_or_that_no_series_has(flags, words, tmp_path, capsys):
    """The sweep's `train --user-data-probability nan` (no --user-data: the value was dropped) and
    `--motion-mm 0,1e30` trained to exit 0."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--size", "32", "--steps", "2", *flags]) == 1
    assert words in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_motion_ranges_in_python_name_the_field():
    from napari_any2reg.core.training.config import TrainingConfig

    with pytest.raises(ValueError, match=r"^nonrigid_mm_range must be LOW,HIGH with 0 <= LOW <= HIGH <= 100 mm"):
        TrainingConfig(nonrigid_mm_range=(0.0, 500.0))
    assert TrainingConfig(motion_mm_range=(0.0, 100.0)).motion_mm_range == (0.0, 100.0)  # the bound itself is valid


def test_the_verdict_of_frames_near_the_float32_limit_prints_no_warning(capsys, recwarn):
    """The sweep's `register huge_values.tif --engine groupwise` ended with a numpy overflow
    warning from the motion-left check (the frames' float32 mean and SD overflowed)."""
    import warnings

    from napari_any2reg.core.qc.verdict import residual_translation

    frames = np.full((6, 32, 32), 3.0e38, np.float32)
    frames[:, 8:24, 8:24] = 1.0e38
    frames[3, 9:25, 8:24], frames[3, 8, 8:24] = 1.0e38, 3.0e38  # one frame moved by a pixel
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any overflow warning fails the test
        found = residual_translation(frames, (2.0, 2.0))
    assert np.isfinite(found["gain"]) and all(np.isfinite(found["shift_per_frame"]))
    assert capsys.readouterr().err == ""
