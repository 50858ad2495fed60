"""Hostile inputs (issue 24): nothing crashes, nothing lies.

Each test drives the user's path (the ``any2reg`` main function, the Python API) with one of
the inputs of the issue's bad-input sweep and asserts a one-line error that names the problem
and the fix in that interface's words, nothing written and nothing the user loaded changed.
Tiny images and a fraction of the iterations keep it quick.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.core.engine_api import EngineOptionError
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import ENGINES, available_engines, register
from napari_any2reg.core.vocabulary import arg, interface, speaking

FAST = ["--device", "cpu", "--iterations-scale", "0.05", "-q"]
available_engines()  # the built-in engines registered now, so that a test's stand-in is not replaced later


@pytest.fixture(scope="module")
def molli_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "molli.tif"
    assert main(["sample", "molli", "-o", str(path), "--size", "32", "--seed", "1"]) == 0
    return path


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("molli", seed=1, shape=(32, 32))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("any2reg: error: "), err
    return lines[0]


def _engines_must_not_run(monkeypatch):
    for name in list(ENGINES):
        def refuse(*args, _name=name, **kwargs):
            raise AssertionError(f"engine {_name} ran although the options were invalid")

        monkeypatch.setitem(ENGINES, name, refuse)


# ---------------------------------------------------------------- A1. numeric engine options
@pytest.mark.parametrize("engine", ["groupwise", "xcoreg"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e30", "-inf"])
def test_cli_refuses_non_finite_and_out_of_range_regulariser_weight(engine, value, tmp_path, molli_file, monkeypatch, capsys):
    _engines_must_not_run(monkeypatch)  # inf used to reach the engine and segfault (exit 139)
    out = tmp_path / "out"
    code = main(["register", str(molli_file), "-o", str(out), "--engine", engine, "--regulariser-weight", value, *FAST])
    assert code == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--regulariser-weight" in line and "[0, 10000]" in line and "regulariser_weight" not in line
    assert not out.exists()


@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0, 1e30, np.float32("inf")])
def test_api_refuses_non_finite_and_out_of_range_regulariser_weight(value, phantom, monkeypatch):
    _engines_must_not_run(monkeypatch)
    frames = phantom.sequence.frames.copy()
    with pytest.raises(EngineOptionError, match=r"regulariser_weight .*\[0, 10000\]") as info:
        register(phantom.sequence, engine="groupwise", device="cpu", regulariser_weight=value)
    assert "--regulariser-weight" not in str(info.value)
    np.testing.assert_array_equal(phantom.sequence.frames, frames)


@pytest.mark.parametrize(
    "options",
    [{"iterations_scale": math.inf}, {"bins": math.inf}, {"bins": math.nan}, {"bins": 24.5},
     {"n_classes": math.inf}, {"pca_components": 1e300}, {"em_steps": -math.inf}],
)
def test_api_every_numeric_option_must_be_finite_and_integer_where_counted(options, phantom, monkeypatch):
    _engines_must_not_run(monkeypatch)
    engine = "xcoreg" if {"n_classes", "em_steps"} & set(options) else "groupwise"
    with pytest.raises(EngineOptionError, match=next(iter(options))):  # not an OverflowError from int(inf)
        register(phantom.sequence, engine=engine, device="cpu", **options)


@pytest.mark.parametrize("value", [1.5, math.inf, math.nan, -1, 8, True])
def test_api_reference_frame_must_be_a_frame_number(value, phantom, monkeypatch):
    _engines_must_not_run(monkeypatch)  # 1.5 used to be accepted as frame 1
    with pytest.raises(ValueError, match="reference_frame") as info:
        register(phantom.sequence, engine="groupwise", device="cpu", reference_frame=value)
    assert "--reference-frame" not in str(info.value)


def test_cli_reference_frame_outside_the_frames_names_the_flag(tmp_path, molli_file, monkeypatch, capsys):
    _engines_must_not_run(monkeypatch)
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--engine", "groupwise", "--reference-frame", "8", *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--reference-frame 8" in line and "0..7" in line and "reference_frame" not in line
    assert not out.exists()


# ---------------------------------------------------------------- B11. the user's vocabulary
def test_vocabulary_spells_arguments_per_interface():
    assert interface() == "api"
    assert (arg("overwrite", True), arg("coarse", False), arg("size", 64), arg("reference_frame")) == (
        "overwrite=True", "coarse=False", "size=64", "reference_frame")
    with speaking("cli"):
        assert interface() == "cli"
        assert (arg("overwrite", True), arg("coarse", False), arg("size", 64), arg("slice_index")) == (
            "--overwrite", "--no-coarse", "--size 64", "--slice")
    assert interface() == "api"


def test_existing_output_names_the_flag_on_the_cli_and_the_argument_in_python(tmp_path, molli_file, capsys):
    from napari_any2reg.core.phantom import make_phantom as make
    from napari_any2reg.io import write_tiff

    target = tmp_path / "sample.tif"
    target.write_bytes(b"keep")
    assert main(["sample", "molli", "-o", str(target), "--size", "16"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--overwrite" in line and "overwrite=True" not in line
    with pytest.raises(FileExistsError) as info:
        write_tiff(target, make("molli", seed=0, shape=(16, 16)).sequence)
    assert "overwrite=True" in str(info.value) and "--overwrite" not in str(info.value)
    assert target.read_bytes() == b"keep"
    # after a command the process speaks Python again
    assert interface() == "api"


def test_apply_existing_output_in_python_says_overwrite_true(tmp_path, molli_file):
    from napari_any2reg.pipeline.apply import apply_file

    field = tmp_path / "displacement.npy"
    np.save(field, np.zeros((8, 2, 32, 32), np.float32))
    out = tmp_path / "moved.tif"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        apply_file(field, molli_file, out)
    assert out.read_bytes() == b"keep"


# ---------------------------------------------------------------- A2. a field no registration makes
def _garbage_engine(values):
    import torch

    from napari_any2reg.core.engine_api import EngineOutput

    def engine(frames, *, progress, reference_frame, spacing_mm, **options):
        n, h, w = frames.shape
        u = torch.zeros(n, 2, h, w)
        u[0, 0, 1, 1] = values
        return EngineOutput(displacement=u, loss_history={}, params={})

    return engine


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e31, 40.0])
def test_api_refuses_a_non_finite_or_too_large_field(value, phantom, monkeypatch):
    from napari_any2reg.core.registration import FieldError

    monkeypatch.setitem(ENGINES, "groupwise", _garbage_engine(value))
    with pytest.raises(FieldError, match="displacement field with") as info:
        register(phantom.sequence, engine="groupwise", device="cpu")
    assert ("NaN or Inf" in str(info.value)) == (not math.isfinite(value))
    assert isinstance(info.value, ValueError)


def test_api_keeps_a_large_but_possible_field(phantom, monkeypatch):
    monkeypatch.setitem(ENGINES, "groupwise", _garbage_engine(30.0))  # < 32 px: inside the image extent
    assert register(phantom.sequence, engine="groupwise", device="cpu").displacement.max() == 30.0


def test_cli_garbage_field_is_one_line_and_writes_nothing(tmp_path, molli_file, monkeypatch, capsys):
    monkeypatch.setitem(ENGINES, "groupwise", _garbage_engine(1e31))
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--engine", "groupwise", *FAST, "--export", "all"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "1e+31 px" in line and "nothing is written" in line
    assert not out.exists()


# ---------------------------------------------------------------- A3. weights files that are damaged
def _damaged_weights(tmp_path, how: str) -> Path:
    import torch

    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
    from napari_any2reg.io.model_io import weights_dir

    checkpoint = torch.load(weights_dir() / DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    key = next(k for k, v in checkpoint["model_state"].items() if v.is_floating_point() and v.numel() > 4)
    if how == "nan":
        checkpoint["model_state"][key] = torch.full_like(checkpoint["model_state"][key], float("nan"))
    elif how == "huge":
        checkpoint["model_state"][key] = checkpoint["model_state"][key] * 0 + 1e30
    elif how == "shape":
        checkpoint["model_state"][key] = checkpoint["model_state"][key].flatten()[:3].clone()
    elif how == "missing":
        del checkpoint["model_state"][key]
    path = tmp_path / f"{how}.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("how, words", [("nan", "NaN or Inf"), ("huge", "1e+30"), ("shape", "size mismatch"),
                                        ("missing", "Missing key")])
def test_cli_damaged_weights_name_the_file_and_the_problem(how, words, tmp_path, molli_file, capsys):
    weights = _damaged_weights(tmp_path, how)
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--device", "cpu", "--weights", str(weights), "-q"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"--weights {weights}" in line and words in line, line
    assert "constant frames" not in line and not out.exists()


def test_api_damaged_weights_raise_weights_error(tmp_path, phantom):
    from napari_any2reg.core.weights import WeightsError

    weights = _damaged_weights(tmp_path, "nan")
    with pytest.raises(WeightsError, match=f"{weights.name}.*NaN or Inf"):
        register(phantom.sequence, engine="any2reg", device="cpu", weights=str(weights))


def _byte_flipped_copy(tmp_path) -> tuple[Path, str]:
    """A copy of the default weights with bytes flipped inside its largest tensor entry (no
    manifest beside it), and that entry's name."""
    import shutil
    import struct
    import zipfile

    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
    from napari_any2reg.io.model_io import weights_dir

    path = tmp_path / "mine.pt"
    shutil.copy(weights_dir() / DEFAULT_WEIGHTS, path)
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[start:start + 4] = bytes(b ^ 0x01 for b in raw[start:start + 4])  # a few low mantissa bits
    path.write_bytes(bytes(raw))
    return path, info.filename


def test_byte_corrupted_weights_are_refused_naming_the_damaged_entry(tmp_path, molli_file, phantom, capsys):
    """A corrupted user weights file without a manifest loaded silently (exit 0, a slightly
    wrong field): the archive's CRCs are checked before torch.load."""
    from napari_any2reg.core.weights import WeightsError

    weights, entry = _byte_flipped_copy(tmp_path)
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--device", "cpu", "--weights", str(weights), "-q"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"--weights {weights}" in line and "is damaged" in line and f"{entry!r} fails its CRC-32 check" in line, line
    assert not out.exists()
    with pytest.raises(WeightsError, match=f"{weights.name} is damaged: its entry '{entry}'"):
        register(phantom.sequence, engine="any2reg", device="cpu", weights=str(weights))


def test_weights_in_an_exported_folder_are_checked_against_its_manifest(tmp_path, phantom):
    import json
    import shutil

    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
    from napari_any2reg.core.weights import WeightsError
    from napari_any2reg.io.model_io import weights_dir

    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(weights_dir() / DEFAULT_WEIGHTS, folder / DEFAULT_WEIGHTS)
    (folder / "manifest.json").write_text(json.dumps({DEFAULT_WEIGHTS: {"sha256": "0" * 64}}))
    with pytest.raises(WeightsError, match="manifest.json lists"):
        register(phantom.sequence, engine="any2reg", device="cpu", weights=str(folder / DEFAULT_WEIGHTS))


# ---------------------------------------------------------------- A2 / A7. batch
@pytest.fixture(scope="module")
def scheduler():
    """An in-process Dask cluster (threads): the series run in this process, stand-ins included."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


def test_batch_marks_a_series_with_a_garbage_field_failed(tmp_path, molli_file, scheduler, monkeypatch, capsys):
    import csv

    monkeypatch.setitem(ENGINES, "groupwise", _garbage_engine(1e31))
    outdir = tmp_path / "cohort"
    code = main(["batch", str(molli_file), "-o", str(outdir), "--scheduler", scheduler, "--engine", "groupwise", "-q"])
    assert code == 3, capsys.readouterr().err
    with open(outdir / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["failed"]
    assert "1e+31 px" in rows[0]["error"]
    assert not list(outdir.rglob("registered.tif")) and not list(outdir.rglob("displacement.npy"))


def test_batch_on_a_locked_folder_is_one_line_naming_the_lock_and_its_process(tmp_path, molli_file, monkeypatch, capsys):
    import os

    from napari_any2reg.pipeline.batch import LOCK_FILE, cohort_lock

    _engines_must_not_run(monkeypatch)
    outdir = tmp_path / "cohort"
    outdir.mkdir()
    with cohort_lock(outdir):
        assert main(["batch", str(molli_file), "-o", str(outdir), "--engine", "groupwise", "-q"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"process {os.getpid()}" in line and str(outdir / LOCK_FILE) in line and "wait for it to finish" in line
    # a lock that names no process (killed while creating it) is taken over once it is old
    lock = outdir / LOCK_FILE
    lock.write_text("")
    os.utime(lock, (0, 0))
    from napari_any2reg.pipeline.batch import run_batch

    assert run_batch([], outdir).rows == [] and not lock.exists()


# ---------------------------------------------------------------- A4. apply with a damaged field
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_apply_refuses_a_field_with_nan_or_inf(value, tmp_path, molli_file, capsys):
    from napari_any2reg.pipeline.apply import apply_to_labels, apply_to_sequence

    u = np.zeros((8, 2, 32, 32), np.float32)
    u[3, 1, 5, 5] = value
    field = tmp_path / "displacement.npy"
    np.save(field, u)
    labels = np.ones((32, 32), np.uint8)
    np.save(tmp_path / "labels.npy", labels)
    for argv in (["apply", str(field), str(molli_file), "-o", str(tmp_path / "moved.tif")],
                 ["apply", str(field), str(tmp_path / "labels.npy"), "--labels", "-o", str(tmp_path / "moved_labels.tif")]):
        assert main(argv) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert str(field) in line and "NaN or Inf" in line and "frame(s) 3" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["displacement.npy", "labels.npy"]
    with pytest.raises(ValueError, match="NaN or Inf"):
        apply_to_sequence(np.ones((8, 32, 32), np.float32), u)
    with pytest.raises(ValueError, match="NaN or Inf"):
        apply_to_labels(labels, u)


@pytest.mark.parametrize("value", [1e31, -1e31, 33.0])
def test_apply_refuses_a_field_moving_pixels_beyond_the_image(value, tmp_path, molli_file, capsys):
    """A finite but absurd field (a damaged file, 1e31 px) gave exit 0 and garbage: the rule the
    registration applies to its own fields (no shift beyond the image extent) holds for apply."""
    from napari_any2reg.core.landmarks import LandmarkTable
    from napari_any2reg.pipeline.apply import apply_to_labels, apply_to_points, apply_to_sequence

    u = np.zeros((8, 2, 32, 32), np.float32)
    u[5, 0, 7, 9] = value
    field = tmp_path / "displacement.npy"
    np.save(field, u)
    np.save(tmp_path / "labels.npy", np.ones((32, 32), np.uint8))
    (tmp_path / "points.csv").write_text("frame,name,y,x\n0,a,10,10\n5,a,11,10\n", encoding="utf-8")
    for argv in (["apply", str(field), str(molli_file), "-o", str(tmp_path / "moved.tif")],
                 ["apply", str(field), str(tmp_path / "labels.npy"), "--labels", "-o", str(tmp_path / "moved_labels.tif")],
                 ["apply", str(field), str(tmp_path / "points.csv"), "-o", str(tmp_path / "moved.csv")]):
        assert main(argv) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert str(field) in line and f"shifts of up to {abs(value):.3g} px, beyond the 32 x 32 image" in line, line
        assert "frame(s) 5" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["displacement.npy", "labels.npy", "points.csv"]
    with pytest.raises(ValueError, match="beyond the 32 x 32 image"):
        apply_to_sequence(np.ones((8, 32, 32), np.float32), u)
    with pytest.raises(ValueError, match="beyond the 32 x 32 image"):
        apply_to_labels(np.ones((32, 32), np.uint8), u)
    with pytest.raises(ValueError, match="beyond the 32 x 32 image"):
        apply_to_points(LandmarkTable(frames=np.array([0]), names=np.array(["a"]), points=np.array([[10.0, 10.0]])), u)
    u[5, 0, 7, 9] = 32.0  # as far as the image is wide: still a (wild) registration
    assert apply_to_sequence(np.ones((8, 32, 32), np.float32), u).shape == (8, 32, 32)


# ---------------------------------------------------------------- A5. non-regular and empty files
@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_as_input_is_refused_at_once(tmp_path):
    import os
    import subprocess
    import sys

    fifo = tmp_path / "scan.tif"
    os.mkfifo(fifo)
    plain = tmp_path / "scan"
    os.mkfifo(plain)
    for path in (fifo, plain):
        # a subprocess with a deadline: before the fix, opening the pipe blocked forever
        done = subprocess.run([sys.executable, "-m", "napari_any2reg.cli", "register", str(path), "-o", str(tmp_path / "out"),
                               "--engine", "groupwise", "-q"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        line = _one_error_line(done.stderr)
        assert "named pipe (FIFO)" in line and str(path) in line
    assert not (tmp_path / "out").exists()


@pytest.fixture
def unblocked_fifo(tmp_path):
    """Make named pipes under tmp_path; a watchdog opens and closes their write end now and then,
    so a reader that opened one by mistake gets end-of-file (and the test fails) instead of
    blocking the test run forever."""
    import os
    import threading

    made: list[Path] = []
    stop = threading.Event()

    def release() -> None:
        while not stop.wait(2.0):
            for path in made:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader has it open: nothing to release
                    pass

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()

    def make(name: str) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    stop.set()
    watchdog.join()


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("side", ["field", "labels", "mask", "weights", "landmarks"])
def test_a_fifo_as_a_side_file_is_said_to_be_one(side, tmp_path, molli_file, unblocked_fifo, monkeypatch, capsys):
    """A FIFO given as apply's field or labels, --mask, --weights or --landmarks got a false
    "no such file; check the path": the message says what the path is."""
    _engines_must_not_run(monkeypatch)
    field = tmp_path / "displacement.npy"
    np.save(field, np.zeros((8, 2, 32, 32), np.float32))
    out, moved = tmp_path / "out", tmp_path / "moved.tif"
    register_argv = ["register", str(molli_file), "-o", str(out), "--device", "cpu", "-q"]
    pipe, argv, words = {
        "field": (unblocked_fifo("field.npy"), lambda p: ["apply", str(p), str(molli_file), "-o", str(moved)],
                  "is a named pipe (FIFO), not a displacement file"),
        "labels": (unblocked_fifo("labels.npy"), lambda p: ["apply", str(field), str(p), "--labels", "-o", str(moved)],
                   "is a named pipe (FIFO), not a label file"),
        "mask": (unblocked_fifo("mask.npy"), lambda p: [*register_argv, "--engine", "groupwise", "--mask", str(p)],
                 "it is a named pipe (FIFO), not a regular file"),
        "weights": (unblocked_fifo("mine.pt"), lambda p: [*register_argv, "--weights", str(p)],
                    "it is a named pipe (FIFO), not a regular file"),
        "landmarks": (unblocked_fifo("clicks.csv"), lambda p: [*register_argv, "--landmarks", str(p), "--export", "landmarks"],
                      "is a named pipe (FIFO), not a landmark CSV file"),
    }[side]
    assert main(argv(pipe)) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(pipe) in line and words in line and "no such" not in line, line
    if side in ("mask", "weights", "landmarks"):
        assert f"--{side} {pipe}: " in line, line
    assert not out.exists() and not moved.exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_as_a_side_file_in_python(tmp_path, phantom, unblocked_fifo):
    from napari_any2reg.core.weights import WeightsError
    from napari_any2reg.io.fields import read_displacement
    from napari_any2reg.io.labels import read_label_image
    from napari_any2reg.io.landmarks import read_landmarks_csv
    from napari_any2reg.pipeline.apply import apply_file

    pipe = unblocked_fifo("side.npy")
    with pytest.raises(WeightsError, match=r"side.npy is a named pipe \(FIFO\), not a regular file"):
        register(phantom.sequence, engine="any2reg", device="cpu", weights=str(pipe))
    with pytest.raises(ValueError, match=r"^mask .*side.npy: it is a named pipe \(FIFO\)"):
        read_label_image(pipe, (32, 32))
    for read in (read_displacement, read_landmarks_csv):
        with pytest.raises(ValueError, match=r"side.npy is a named pipe \(FIFO\)"):
            read(pipe)
    with pytest.raises(ValueError, match="not a displacement file"):
        apply_file(pipe, tmp_path / "in.tif", tmp_path / "out.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["side.npy"]


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_check_weights_says_a_fifo_or_a_folder_is_not_a_regular_file(tmp_path, unblocked_fifo):
    """``any2reg ecv --weights`` and the Dask worker set-up call check_weights alone: a FIFO or
    a folder got "no such file" about a path that exists."""
    from napari_any2reg.core.weights import WeightsError
    from napari_any2reg.pipeline.preflight import check_weights

    folder = tmp_path / "weights"
    folder.mkdir()
    for path, what in ((unblocked_fifo("mine.pt"), "a named pipe (FIFO)"), (folder, "a folder")):
        for speak, named in (("api", f"weights={str(path)!r}"), ("cli", f"--weights {path}")):
            with speaking(speak), pytest.raises(WeightsError) as caught:
                check_weights("cpu", str(path))
            message = str(caught.value)
            assert message.startswith(f"{named}: it is {what}, not a regular file; ") and "no such" not in message, message


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_read_landmarks_for_names_the_landmarks_argument(tmp_path, phantom, unblocked_fifo):
    """A FIFO or a missing file as the landmark CSV: the message names --landmarks (CLI) or
    landmarks_path= (Python), as the frame-range error already did."""
    from napari_any2reg.pipeline.preflight import read_landmarks_for

    pipe, missing = unblocked_fifo("clicks.csv"), tmp_path / "nowhere.csv"
    for speak, flag in (("api", "landmarks_path="), ("cli", "--landmarks ")):
        with speaking(speak):
            shown = (lambda p: f"{flag}{str(p)!r}") if speak == "api" else (lambda p: f"{flag}{p}")
            with pytest.raises(ValueError) as caught:
                read_landmarks_for(str(pipe), phantom.sequence)
            assert str(caught.value).startswith(f"{shown(pipe)}: it is a named pipe (FIFO), not a landmark CSV file"), caught.value
            with pytest.raises(FileNotFoundError) as caught:
                read_landmarks_for(str(missing), phantom.sequence)
            assert str(caught.value).startswith(f"{shown(missing)}: no such landmark CSV"), caught.value


def test_an_empty_dcm_is_refused_without_reading_its_folder(tmp_path, monkeypatch, capsys):
    from napari_any2reg.io import dicom, read_sequence
    from napari_any2reg.io._common import SequenceReadError

    empty = tmp_path / "IM_0001.dcm"
    empty.write_bytes(b"")
    (tmp_path / "other.txt").write_text("x")

    def no_scan(*args, **kwargs):
        raise AssertionError("the folder was scanned")

    monkeypatch.setattr(dicom.reader, "_scan", no_scan)  # where the DICOM reader looks it up
    with pytest.raises(SequenceReadError, match="empty"):
        read_sequence(empty)
    assert main(["register", str(empty), "-o", str(tmp_path / "out"), "-q"]) == 1
    assert "is empty (0 bytes)" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- A6. sizes and spacings
def test_sample_size_is_bounded_with_the_flag_in_the_message(tmp_path, capsys):
    out = tmp_path / "big.tif"
    assert main(["sample", "molli", "-o", str(out), "--size", "100000"]) == 1  # was a MemoryError traceback
    line = _one_error_line(capsys.readouterr().err)
    assert "--size 100000" in line and "16 to 2048" in line and not out.exists()
    with pytest.raises(ValueError, match=r"shape=\(100000, 100000\).*16 to 2048"):
        make_phantom("molli", shape=(100000, 100000))


@pytest.mark.parametrize("spacing", ["1e300", "1e-30"])
def test_absurd_spacing_is_refused(spacing, tmp_path, molli_file, monkeypatch, capsys):
    from napari_any2reg.core.sequence import Sequence, SequenceError

    _engines_must_not_run(monkeypatch)
    with pytest.raises(SystemExit) as info:  # the flag: a usage error
        main(["register", str(molli_file), "-o", str(tmp_path / "out"), "--spacing-mm", spacing])
    assert info.value.code == 2 and "pixel size in mm" in capsys.readouterr().err
    with pytest.raises(SequenceError, match=r"outside 0.001-1000 mm.*spacing_mm"):
        Sequence(np.random.default_rng(0).random((3, 8, 8), dtype=np.float32), spacing_mm=(float(spacing), 1.0))


# ---------------------------------------------------------------- A9. a cohort without live workers
def test_batch_without_live_workers_fails_the_rest_and_keeps_the_finished(tmp_path, molli_file, scheduler, monkeypatch, capsys):
    import csv
    import shutil

    from distributed import LocalCluster

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(molli_file, inputs / "a.tif")
    outdir = tmp_path / "cohort"
    argv = ["--engine", "groupwise", "--iterations-scale", "0.05", "--device", "cpu", "-q"]
    assert main(["batch", str(inputs), "-o", str(outdir), "--scheduler", scheduler, *argv]) == 0, capsys.readouterr().err
    shutil.copy(molli_file, inputs / "b.tif")
    monkeypatch.setenv("ANY2REG_NO_WORKER_SECONDS", "1")
    empty = LocalCluster(n_workers=0, processes=False, dashboard_address=None)  # workers all gone: no one runs b
    try:
        code = main(["batch", str(inputs), "-o", str(outdir), "--scheduler", empty.scheduler_address, *argv])
    finally:
        empty.close()
    assert code == 3  # before: waited forever
    with open(outdir / "summary.csv", newline="") as handle:
        rows = {row["series"]: row for row in csv.DictReader(handle)}
    assert rows["a"]["status"] == "ok" and rows["a"]["this_run"] == "skipped"
    assert rows["b"]["status"] == "failed" and "no live Dask worker" in rows["b"]["error"]
    assert (outdir / "a" / "registered.tif").is_file() and not (outdir / "b" / "registered.tif").exists()


# ---------------------------------------------------------------- B12. disk, permissions, masks
def test_permission_denied_mid_write_names_the_path(tmp_path, molli_file, monkeypatch, capsys):
    import errno

    real_save = np.save

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(np, "save", denied)
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--engine", "groupwise", *FAST]) == 1
    monkeypatch.setattr(np, "save", real_save)
    line = _one_error_line(capsys.readouterr().err)
    assert "permission denied" in line and "displacement.npy" in line and "fix its permissions" in line
    assert not out.exists()


def test_mask_errors_name_the_mask_file_and_the_shape_it_should_have(tmp_path, molli_file, monkeypatch, capsys):
    from napari_any2reg.io.labels import read_label_image

    _engines_must_not_run(monkeypatch)
    wrong = tmp_path / "mask.npy"
    np.save(wrong, np.ones((10, 12), np.uint8))
    damaged = tmp_path / "mask.nii.gz"
    damaged.write_bytes(b"\x1f\x8b not a nifti")
    for mask, words in ((wrong, "has shape (10, 12) but the images are (32, 32)"), (damaged, "not a readable .nii.gz")):
        assert main(["register", str(molli_file), "-o", str(tmp_path / "out"), "--engine", "groupwise", "--mask", str(mask), *FAST]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert f"--mask {mask}" in line and words in line, line
    with pytest.raises(ValueError, match=r"^mask .*mask.nii.gz: not a readable .*32 x 32"):
        read_label_image(damaged, (32, 32))


# ---------------------------------------------------------------- weights named in the interface's words
@pytest.mark.parametrize("content", [None, b"not a zip archive"])
def test_check_weights_names_the_weights_argument_per_interface(content, tmp_path):
    """pipeline.series.check_weights spoke --weights to Python callers too: the argument is
    ``weights='...'`` in the API and ``--weights ...`` on the command line."""
    from napari_any2reg.core.weights import WeightsError
    from napari_any2reg.pipeline.series import check_weights

    weights = tmp_path / "mine.pt"
    if content is not None:
        weights.write_bytes(content)
    with pytest.raises(WeightsError) as api_error:
        check_weights("cpu", str(weights))
    api = str(api_error.value)
    assert api.startswith(f"weights={str(weights)!r}: ") and "--weights" not in api, api
    assert ("no such file" if content is None else "not a PyTorch checkpoint") in api
    with speaking("cli"), pytest.raises(WeightsError) as cli_error:
        check_weights("cpu", str(weights))
    cli = str(cli_error.value)
    assert cli.startswith(f"--weights {weights}: ") and "omit --weights" in cli, cli


# ---------------------------------------------------------------- threads and jobs are bounded
@pytest.mark.parametrize("value", [10**9, 1e9, math.inf, math.nan, 0, 2.5])
def test_api_threads_are_bounded(value, phantom, monkeypatch):
    """``threads=1e9`` killed the process (libgomp out of memory), ``inf`` raised a raw OverflowError."""
    import torch

    from napari_any2reg.core.device import max_cpu_threads

    _engines_must_not_run(monkeypatch)
    before = torch.get_num_threads()
    with pytest.raises(ValueError) as error:
        register(phantom.sequence, engine="groupwise", device="cpu", threads=value)
    assert str(error.value).startswith(f"threads must be a whole number >= 1 and at most {max_cpu_threads()} "), error.value
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("command", ["register", "fit", "batch", "train"])
def test_cli_threads_are_bounded_with_the_flag_in_the_message(command, tmp_path, molli_file, monkeypatch, capsys):
    import torch

    from napari_any2reg.core.device import max_cpu_threads

    _engines_must_not_run(monkeypatch)
    out = tmp_path / "out"
    flag = "--threads-per-job" if command == "batch" else "--threads"
    argv = {"register": ["register", str(molli_file), "-o", str(out)],
            "fit": ["fit", str(molli_file), "-o", str(out)],
            "batch": ["batch", str(molli_file), "-o", str(out)],
            "train": ["train", "--out", str(out), "--steps", "1"]}[command]
    before = torch.get_num_threads()
    assert main([*argv, flag, "1000000000"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{flag} must be a whole number >= 1 and at most {max_cpu_threads()}" in line, line
    assert "1000000000" in line and "threads=" not in line
    assert torch.get_num_threads() == before and not out.exists()


def test_batch_jobs_are_bounded(tmp_path, molli_file, capsys):
    from napari_any2reg.core.device import max_cpu_threads
    from napari_any2reg.pipeline.batch import run_batch
    from napari_any2reg.pipeline.cohort import discover

    out = tmp_path / "out"
    assert main(["batch", str(molli_file), "-o", str(out), "--jobs", "1000000000"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"--jobs must be a whole number >= 1 and at most {max_cpu_threads()}" in line, line
    for value in (math.inf, 10**9):
        with pytest.raises(ValueError, match=r"^n_jobs must be a whole number >= 1"):
            run_batch(discover([str(molli_file)]), out, n_jobs=value)
    assert not out.exists()


def test_an_empty_or_truncated_npy_is_one_line_naming_the_file(tmp_path, molli_file, capsys):
    """The sweep (benchmarks/bench_hostile_inputs.py) found `apply empty.npy ...` ending in an
    EOFError traceback: every .npy reader now says the file is empty or truncated."""
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.zeros((8, 2, 32, 32), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:200])
    for field in (empty, truncated):
        assert main(["apply", str(field), str(molli_file), "-o", str(tmp_path / "moved.tif")]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert str(field) in line and "not a readable .npy array" in line and "displacement.npy" in line
    assert main(["register", str(molli_file), "-o", str(tmp_path / "out"), "--mask", str(empty),
                 "--engine", "groupwise", "--iterations-scale", "0.1"]) == 1
    assert "empty or truncated" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "moved.tif").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, named", [
    (["--steps", "0"], "steps must be >= 1"),
    (["--lr", "1e30"], "--lr must be in (0, 1]"),
    (["--motion-mm", "nan,5"], "--motion-mm must be finite"),
    (["--lambda-reg", "nan"], "--lambda-reg must be finite"),
    (["--lambda-supervised", "nan"], "--lambda-supervised must be finite"),
])
def test_train_refuses_non_finite_or_useless_settings_before_writing(flags, named, tmp_path, capsys):
    """Found by the sweep: NaN weights trained to exit 0 with NaN in config.json, --steps 0 wrote an
    empty run, --lr 1e30 and a NaN motion range ended in raw LinAlgError / OverflowError."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--size", "32", "--steps", "2", *flags]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert named in line
    assert not out.exists() or not any(out.iterdir())


def test_training_config_names_its_fields_in_python():
    from napari_any2reg.core.training.config import TrainingConfig

    with pytest.raises(ValueError, match=r"^learning_rate must be finite"):
        TrainingConfig(learning_rate=float("nan"))
    with pytest.raises(ValueError, match=r"^motion_mm_range must be finite"):
        TrainingConfig(motion_mm_range=(float("inf"), 5.0))


def test_a_fit_where_no_pixel_fits_is_an_error_not_all_nan_maps(tmp_path, molli_file, capsys):
    """Found by the sweep: a T2 model on a MOLLI series (or a noise floor above every echo) wrote
    all-NaN maps and exited 0."""
    for extra, named in ((["--model", "t2"], "--model t2"), (["--model", "t2", "--noise-floor", "1e30"], "--noise-floor")):
        out = tmp_path / f"fit{len(extra)}"
        assert main(["fit", str(molli_file), "-o", str(out), *extra]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert "no pixel" in line and named in line and "molli" in line
        assert not out.exists()
    assert main(["fit", str(molli_file), "-o", str(tmp_path / "good")]) == 0  # the right model still fits
