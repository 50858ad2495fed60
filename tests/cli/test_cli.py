"""The any2reg command line, end to end on a phantom file."""

import json

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.io import read_sequence


def test_help_documents_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "register" in out and "sample" in out
    with pytest.raises(SystemExit):
        main(["register", "--help"])
    out = capsys.readouterr().out
    for flag in ("--engine", "--device", "--reference-frame", "--times-ms", "pull-back"):
        assert flag in out


def test_sample_then_register_end_to_end(tmp_path, capsys):
    sample = tmp_path / "molli.tif"
    assert main(["sample", "molli", "-o", str(sample), "--size", "64", "--seed", "3"]) == 0
    source = read_sequence(sample)
    out = tmp_path / "out"
    code = main(["register", str(sample), "-o", str(out), "--engine", "groupwise", "--device", "cpu", "--iterations-scale", "0.3", "-q"])
    assert code == 0
    registered = read_sequence(out / "registered.tif")
    assert registered.frames.shape == source.frames.shape
    np.testing.assert_array_equal(registered.timings_ms, source.timings_ms)
    assert registered.spacing_mm == source.spacing_mm
    displacement = np.load(out / "displacement.npy")
    assert displacement.shape == (source.n_frames, 2, 64, 64) and displacement.dtype == np.float32
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("engine", "device", "seconds", "folding_percent", "alignment_score_before", "alignment_score_after"):
        assert key in metrics
    assert metrics["engine"] == "groupwise" and metrics["device"].startswith("cpu")
    assert metrics["alignment_score_after"] > metrics["alignment_score_before"]
    # a second run does not silently overwrite
    assert main(["register", str(sample), "-o", str(out), "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_register_default_engine_writes_correspondence_maps(tmp_path):
    sample = tmp_path / "stone.tif"
    assert main(["sample", "stone", "-o", str(sample), "--size", "64", "--seed", "4"]) == 0
    out = tmp_path / "out"
    assert main(["register", str(sample), "-o", str(out), "--device", "cpu", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "any2reg" and metrics["params"]["weights_sha256"]
    scores = np.load(out / "correspondence.npy")
    assert scores.shape == (11, 64, 64) and scores.dtype == np.float32
    assert 0 <= scores.min() and scores.max() <= 1
    assert main(["register", str(sample), "-o", str(tmp_path / "io"), "--engine", "any2reg-io", "--io-steps", "3", "-q"]) == 0
    assert json.loads((tmp_path / "io" / "metrics.json").read_text())["params"]["io_steps"] == 3


def test_errors_are_one_line_with_non_zero_exit(tmp_path, capsys):
    assert main(["register", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("any2reg: error:") and "missing.tif" in err and "\n" not in err
    sample = tmp_path / "s.tif"
    main(["sample", "stone", "-o", str(sample), "--size", "48"])
    capsys.readouterr()
    assert main(["register", str(sample), "-o", str(tmp_path / "o2"), "--times-ms", "1,2,3"]) == 1
    assert "3 timings given for 11 frames" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["register", str(sample), "-o", str(tmp_path / "o3"), "--engine", "nope"])
    assert exc.value.code == 2


def test_engines_lists_the_default_and_its_weights(capsys):
    assert main(["engines"]) == 0
    lines = capsys.readouterr().out.splitlines()
    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS

    assert any(line.startswith(f"any2reg  (default, weights {DEFAULT_WEIGHTS}, SHA-256 verified)") for line in lines)
    assert {"groupwise", "xcoreg"} <= {line.split()[0] for line in lines}
    assert lines[-1].startswith("device auto -> ")
