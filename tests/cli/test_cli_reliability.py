"""CLI reliability (issue 11): all-or-nothing outputs, SIGTERM, weights errors, inputs never
replaced, export without a T1 fit, spacing and argument checks, NaN pixels in ``fit``.

Small phantoms (48x48) and the groupwise engine at a fraction of its iterations keep this quick.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
import tifffile
import torch

from napari_any2reg import cli
from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
from napari_any2reg.cli import main
from napari_any2reg.io import read_sequence

FAST = ["--engine", "groupwise", "--device", "cpu", "--iterations-scale", "0.05", "-q"]


@pytest.fixture(scope="module")
def molli_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "molli.tif"
    assert main(["sample", "molli", "-o", str(path), "--size", "48", "--seed", "1"]) == 0
    return path


def _everything(folder: Path) -> list[str]:
    """Every entry below ``folder``, hidden ones included (temporary and staging files)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("any2reg: error: "), err
    return lines[0]


def _no_registration(monkeypatch):
    """Make the registration fail loudly: used to prove a check ran before any computing."""
    import napari_any2reg.core.registration as registration

    def refuse(*args, **kwargs):
        raise AssertionError("the registration ran although the run should have stopped before it")

    monkeypatch.setattr(registration, "register", refuse)


# ---------------------------------------------------------------- 1. all or nothing
def test_register_full_disk_leaves_nothing_and_says_so(tmp_path, molli_file, monkeypatch, capsys):
    real_save = np.save

    def full_disk(path, array, *args, **kwargs):
        if Path(path).name.endswith("displacement.npy"):  # after registered.tif is written
            Path(path).write_bytes(b"\x93NUMPY half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", full_disk)
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "disk is full" in line and "Free some space" in line
    assert _everything(tmp_path) == []  # no output folder, no registered.tif, no staging


def test_fit_write_failure_leaves_no_partial_maps(tmp_path, molli_file, monkeypatch, capsys):
    import napari_any2reg.pipeline.fit as fit_module

    written = []
    real = fit_module._write_map_tiff

    def third_fails(path, *args):
        written.append(path.name)
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, *args)

    monkeypatch.setattr(fit_module, "_write_map_tiff", third_fails)
    out = tmp_path / "t1"
    assert main(["fit", str(molli_file), "-o", str(out), "--device", "cpu", "-q"]) == 1
    assert "disk is full" in _one_error_line(capsys.readouterr().err)
    assert written == ["t1.tif", "r2.tif", "t1_sd.tif"]
    assert _everything(tmp_path) == []


def test_output_folder_is_checked_before_computing(tmp_path, molli_file, monkeypatch, capsys):
    _no_registration(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target in (blocker, blocker / "out"):
        assert main(["register", str(molli_file), "-o", str(target), *FAST]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert "is a file, not a folder" in line and "choose another output folder" in line
    # a disk without room for the outputs is refused up front as well
    import napari_any2reg.io._atomic as atomic

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert main(["register", str(molli_file), "-o", str(tmp_path / "new"), *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "only 0.0 MB are free" in line and "another disk" in line
    assert _everything(tmp_path) == ["a_file"]


def test_output_folder_not_writable_is_refused_before_computing(tmp_path, molli_file, monkeypatch, capsys):
    _no_registration(monkeypatch)
    import tempfile

    def refuse(*args, **kwargs):  # simulated, so that it also fails when the tests run as root
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["register", str(molli_file), "-o", str(tmp_path / "out"), *FAST]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "is not writable" in line and "fix its permissions" in line
    assert _everything(tmp_path) == []


_SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from napari_any2reg.cli import main

    marker = Path(sys.argv[1])
    real_save = np.save

    def slow_save(path, array, *args, **kwargs):
        real_save(path, array, *args, **kwargs)  # a complete file in the staging folder...
        marker.write_text(str(path))             # ...then tell the test, and hang mid-write
        time.sleep(120)

    np.save = slow_save
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_sigterm_mid_write_leaves_no_temporary_files(tmp_path, molli_file):
    script = tmp_path / "run.py"
    script.write_text(_SIGTERM_SCRIPT)
    marker = tmp_path / "writing"
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    command = [sys.executable, str(script), str(marker), "register", str(molli_file), "-o", str(out), *FAST]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never reached the writing stage"
            time.sleep(0.1)
        assert ".any2reg-staging-" in marker.read_text()  # it was writing into the staging folder
        assert any(p.name.startswith(".any2reg-staging-") for p in out.iterdir())
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "terminated (SIGTERM)" in err
    assert _everything(work) == []  # the staging folder, its files and the new output folder are gone


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is a POSIX signal")
def test_sigkill_mid_write_leftovers_are_cleaned_by_the_next_run(tmp_path, molli_file, capsys):
    # issue 24 A8: a killed run cannot clean up; the next run in that folder must
    script = tmp_path / "run.py"
    script.write_text(_SIGTERM_SCRIPT)
    marker = tmp_path / "writing"
    out = tmp_path / "out"
    command = [sys.executable, str(script), str(marker), "register", str(molli_file), "-o", str(out), *FAST]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never reached the writing stage"
            time.sleep(0.1)
        process.kill()
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    left = [p for p in out.iterdir() if p.name.startswith(".any2reg-staging-")]
    assert len(left) == 1
    # a staging folder of a live writer (this process) is not touched
    from napari_any2reg.io._atomic import remove_stale_staging

    from napari_any2reg.io._atomic import _host_tag

    live = out / f".any2reg-staging-{_host_tag()}-{os.getpid()}-0abc"
    live.mkdir()
    assert main(["register", str(molli_file), "-o", str(out), *FAST]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [live.name]
    assert (out / "registered.tif").is_file()
    assert remove_stale_staging(out) == []


def test_stale_staging_of_a_killed_commit_gets_the_originals_back(tmp_path):
    from napari_any2reg.io._atomic import remove_stale_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from napari_any2reg.io._atomic import _host_tag

    staging = tmp_path / f".any2reg-staging-{_host_tag()}-{int(dead.stdout)}-0abc"
    (staging / ".replaced").mkdir(parents=True)
    old = tmp_path / ".any2reg-staging-1234abcd"  # an old-style name that names no owner: stale once old
    old.mkdir()
    os.utime(old, (0, 0))
    (staging / ".replaced" / "metrics.json").write_text("original")
    (tmp_path / "metrics.json").write_text("half of the new run")
    assert sorted(remove_stale_staging(tmp_path)) == sorted([staging, old])
    assert (tmp_path / "metrics.json").read_text() == "original" and not staging.exists()


def test_sigterm_handler_is_installed_only_while_a_command_runs(tmp_path, monkeypatch, capsys):
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def fake_sample(args):
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread as an exception
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr("napari_any2reg.cli.sample.run", fake_sample)
    assert main(["sample", "molli", "-o", str(tmp_path / "x.tif")]) == 128 + signal.SIGTERM
    assert seen["handler"] is not before and callable(seen["handler"])
    assert signal.getsignal(signal.SIGTERM) is before
    assert "terminated (SIGTERM)" in capsys.readouterr().err


def test_sample_with_truth_is_one_unit(tmp_path, monkeypatch, capsys):
    real_save = np.save

    def failing(path, array, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(np, "save", failing)
    assert main(["sample", "stone", "-o", str(tmp_path / "s.tif"), "--size", "32", "--truth"]) == 1
    assert "Input/output error" in _one_error_line(capsys.readouterr().err)
    assert _everything(tmp_path) == []  # the TIFF written before the failure is not kept either
    monkeypatch.setattr(np, "save", real_save)
    assert main(["sample", "stone", "-o", str(tmp_path / "s.tif"), "--size", "32", "--truth"]) == 0
    assert _everything(tmp_path) == ["s.tif", "s_true_displacement.npy"]


# ---------------------------------------------------------------- 2. weights
def test_weights_problems_are_one_line_errors_before_computing(tmp_path, molli_file, monkeypatch, capsys):
    _no_registration(monkeypatch)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    empty = tmp_path / "empty.pt"
    torch.save({"step": 3}, empty)
    for weights in (tmp_path / "missing.pt", garbage, tensor, empty):
        out = tmp_path / "out"
        code = main(["register", str(molli_file), "-o", str(out), "--device", "cpu", "--weights", str(weights), "-q"])
        line = _one_error_line(capsys.readouterr().err)
        assert code == 1, line
        assert f"--weights {weights}" in line and "any2reg train" in line and "omit --weights" in line
        assert len(line) < 250 + 2 * len(str(weights))  # the cause is shortened, not a torch essay
        assert not out.exists()


@pytest.fixture
def broken_weights(tmp_path, monkeypatch):
    """A copy of the shipped weights folder that the package uses instead of the real one."""
    from napari_any2reg.core.engines import any2reg
    from napari_any2reg.io import model_io as weights

    folder = tmp_path / "weights"
    shutil.copytree(weights.weights_dir(), folder)
    monkeypatch.setattr(weights, "weights_dir", lambda: folder)
    any2reg._load_cached.cache_clear()  # the network loaded by earlier tests is kept per process
    yield folder
    any2reg._load_cached.cache_clear()  # nor may the altered copy outlive this test


def test_engines_verifies_the_weights_file(broken_weights, capsys):
    assert main(["engines"]) == 0
    assert "SHA-256 verified" in capsys.readouterr().out
    with open(broken_weights / DEFAULT_WEIGHTS, "r+b") as handle:  # one byte changed
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert main(["engines"]) == 1
    captured = capsys.readouterr()
    assert any(line.startswith("any2reg  (default, weights NOT USABLE)") for line in captured.out.splitlines())
    line = _one_error_line(captured.err)
    assert "corrupted or was altered" in line and "Reinstall" in line
    (broken_weights / DEFAULT_WEIGHTS).unlink()
    assert main(["engines"]) == 1
    assert "is missing" in _one_error_line(capsys.readouterr().err)


def test_register_with_altered_shipped_weights_is_a_one_line_error(broken_weights, tmp_path, molli_file, monkeypatch, capsys):
    _no_registration(monkeypatch)
    with open(broken_weights / DEFAULT_WEIGHTS, "ab") as handle:
        handle.write(b"appended")
    out = tmp_path / "out"
    assert main(["register", str(molli_file), "-o", str(out), "--device", "cpu", "-q"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "SHA-256" in line and "Reinstall napari-any2reg" in line
    assert not out.exists()


def test_weights_options_with_a_classical_engine_are_refused(tmp_path, molli_file, monkeypatch, capsys):
    _no_registration(monkeypatch)
    assert main(["register", str(molli_file), "-o", str(tmp_path / "o"), *FAST, "--weights", str(molli_file)]) == 1
    line = _one_error_line(capsys.readouterr().err)  # the engine-option registry's check
    assert "unknown option --weights" in line and "any2reg, any2reg-io" in line and "groupwise takes" in line


# ---------------------------------------------------------------- 4. the input is never replaced
def test_overwrite_never_replaces_the_runs_own_input(tmp_path, monkeypatch, capsys):
    _no_registration(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    data = out / "registered.tif"
    assert main(["sample", "molli", "-o", str(data), "--size", "48"]) == 0
    before = data.read_bytes()
    assert main(["register", str(data), "-o", str(out), *FAST, "--overwrite"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{data} is also read by this run" in line and "another output folder" in line
    assert data.read_bytes() == before
    # a symlink to the input is the same file
    link = tmp_path / "link.tif"
    link.symlink_to(data)
    assert main(["register", str(link), "-o", str(out), *FAST, "--overwrite"]) == 1
    assert "also read by this run" in capsys.readouterr().err
    # a NIfTI input's sidecar is input too: registered.nii is not replaced by the export's
    # registered.nii.gz, but its sidecar registered.json would be
    from napari_any2reg.io import write_nifti

    nifti = write_nifti(out / "registered.nii", read_sequence(data))
    sidecar_before = (out / "registered.json").read_text()
    assert main(["register", str(nifti), "-o", str(out), *FAST, "--export", "nifti", "--overwrite"]) == 1
    assert "registered.json is also read by this run" in capsys.readouterr().err
    assert (out / "registered.json").read_text() == sidecar_before


def test_tre_and_fit_outputs_never_replace_their_inputs(tmp_path, capsys):
    clicks = tmp_path / "clicks.csv"
    clicks.write_text("frame,name,y,x\n0,a,10,10\n1,a,11,10\n")
    field = tmp_path / "u.npy"
    np.save(field, np.zeros((2, 2, 16, 16), np.float32))
    assert main(["tre", str(field), str(clicks), "--out", str(clicks), "--overwrite"]) == 1
    assert "also read by this run" in _one_error_line(capsys.readouterr().err)
    assert clicks.read_text().startswith("frame,name")
    out = tmp_path / "t1"
    out.mkdir()
    data = out / "t1.tif"
    assert main(["sample", "molli", "-o", str(data), "--size", "32"]) == 0
    before = data.read_bytes()
    assert main(["fit", str(data), "-o", str(out), "--device", "cpu", "--overwrite", "-q"]) == 1
    assert "also read by this run" in _one_error_line(capsys.readouterr().err)
    assert data.read_bytes() == before


# ---------------------------------------------------------------- 5. export when no T1 fit is possible
def test_export_all_skips_maps_without_a_possible_t1_fit(tmp_path, molli_file, capsys):
    out = tmp_path / "out"
    equal = ",".join(["100"] * 8)  # 8 frames, all at the same inversion time: no T1 fit
    assert main(["register", str(molli_file), "-o", str(out), *FAST, "--times-ms", equal, "--export", "all"]) == 0
    captured = capsys.readouterr()
    assert "skipped maps" in captured.err and "distinct" in captured.err
    names = {p.name for p in out.iterdir()}
    assert {"registered.tif", "qc.json", "run.json", "report.png"} <= names
    assert not any(name.startswith(("t1_", "r2_")) for name in names)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "distinct" in metrics["export_skipped"]["maps"]


def test_export_maps_without_a_possible_fit_fails_before_registering(tmp_path, molli_file, monkeypatch, capsys):
    _no_registration(monkeypatch)
    short = tmp_path / "molli3.tif"
    from napari_any2reg.io import write_tiff

    sequence = read_sequence(molli_file)
    write_tiff(short, sequence.replace(frames=sequence.frames[:3], timings_ms=sequence.timings_ms[:3]))
    assert main(["register", str(short), "-o", str(tmp_path / "out"), *FAST, "--export", "maps"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "no T1 fit is possible" in line and "at least 4 frames" in line
    assert not (tmp_path / "out").exists()


def test_failed_register_leaves_no_empty_output_folder(tmp_path, molli_file, capsys):
    out = tmp_path / "deep" / "out"
    assert main(["register", str(molli_file), "-o", str(out), *FAST, "--reference-frame", "99"]) == 1
    assert "99" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "deep").exists()


# ---------------------------------------------------------------- 6. spacing, numbers, NaN pixels
def test_invalid_nifti_pixdim_is_a_warning_recorded_in_the_outputs(tmp_path, molli_file, capsys):
    sequence = read_sequence(molli_file)
    image = nibabel.Nifti1Image(np.transpose(sequence.frames, (2, 1, 0)), np.eye(4))
    image.header["pixdim"][1:4] = [0.0, -1.5, 1.0]
    path = tmp_path / "molli.nii.gz"
    nibabel.save(image, str(path))
    (tmp_path / "molli.json").write_text(json.dumps({"kind": "molli", "inversion_times_ms": sequence.timings_ms.tolist()}))
    out = tmp_path / "t1"
    assert main(["fit", str(path), "-o", str(out), "--device", "cpu", "-q"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("any2reg: warning:")]
    assert len(warning) == 1 and "pixdim" in warning[0] and "1 x 1 mm" in warning[0] and "--spacing-mm" in warning[0]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["spacing_mm"] == [1.0, 1.0] and "pixdim" in stats["read_warnings"][0]


def test_values_beyond_float32_are_reported_as_overflow():
    from napari_any2reg.core.sequence import Sequence, SequenceError

    frames = np.random.default_rng(0).random((3, 16, 16)) * 1e39  # float64, finite
    with pytest.raises(SequenceError, match=r"frames \[0, 1, 2\].*float32 range.*overflow.*rescale"):
        Sequence(frames)
    with pytest.raises(SequenceError, match="NaN or Inf"):  # real Inf is still called Inf
        Sequence(np.where(np.arange(16) == 3, np.inf, frames / 1e39))
    assert Sequence(frames / 1e30).frames.dtype == np.float32  # large but representable: fine


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_iterations_scale_must_be_a_positive_number(tmp_path, molli_file, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["register", str(molli_file), "-o", str(tmp_path / "o"), "--iterations-scale", value])
    assert exit_info.value.code == 2
    assert "must be a positive number" in capsys.readouterr().err


def test_iterations_scale_is_checked_by_the_engines_too():
    from napari_any2reg.core.engines._transform import DEFAULT_STAGES, scaled_stages

    assert [s.iterations for s in scaled_stages(DEFAULT_STAGES, 0.5)] == [20, 10, 20, 20, 15]
    for value in (0, -1, float("nan"), float("inf"), "fast"):
        with pytest.raises(ValueError, match="iterations_scale must be a positive number"):
            scaled_stages(DEFAULT_STAGES, value)


def test_negative_spacing_is_a_clear_usage_error(tmp_path, molli_file, capsys):
    for argv in (["--spacing-mm", "-1,2"], ["--spacing-mm=-1,2"], ["--spacing-mm", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["register", str(molli_file), "-o", str(tmp_path / "o"), *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "spacing must be positive mm" in err and "expected one argument" not in err
    with pytest.raises(SystemExit):
        main(["tre", "u.npy", "c.csv", "--spacing-mm", "-1.5"])
    assert "spacing must be positive mm" in capsys.readouterr().err


def test_fit_fits_around_nan_pixels(tmp_path, molli_file, capsys):
    sequence = read_sequence(molli_file)
    frames = sequence.frames.copy()
    frames[2, 5, 7] = np.nan
    frames[:, 30, 30] = np.inf
    path = tmp_path / "nan_molli.tif"
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TYX"})
    (tmp_path / "nan_molli.json").write_text(json.dumps({"kind": "molli", "inversion_times_ms": sequence.timings_ms.tolist()}))
    with pytest.raises(Exception, match="NaN or Inf"):
        read_sequence(path)  # registration still refuses such frames
    out = tmp_path / "t1"
    assert main(["fit", str(path), "-o", str(out), "--device", "cpu", "-q"]) == 0
    assert "2 pixels" in capsys.readouterr().err
    t1 = tifffile.imread(out / "t1.tif")
    assert np.isnan(t1[5, 7]) and np.isnan(t1[30, 30])
    assert main(["fit", str(molli_file), "-o", str(tmp_path / "ref"), "--device", "cpu", "-q"]) == 0
    reference = tifffile.imread(tmp_path / "ref" / "t1.tif")
    same = np.isfinite(t1) & np.isfinite(reference)
    assert same.sum() > 0.5 * t1.size
    np.testing.assert_allclose(t1[same], reference[same], rtol=1e-4)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["nonfinite_input_pixels"] == 2 and stats["n_failed"] >= 2
