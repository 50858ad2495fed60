"""CLI: ``any2reg tre`` and ``any2reg register --export`` (64x64 phantoms, quick groupwise runs)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.core.landmarks import LandmarkTable, landmarks_csv_text
from napari_any2reg.io.landmarks import write_landmarks_csv
from napari_any2reg.core.phantom import make_phantom

FAST = ["--engine", "groupwise", "--device", "cpu", "--iterations-scale", "0.2"]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("molli", seed=0, shape=(64, 64))  # what 'any2reg sample molli --size 64' writes


@pytest.fixture
def files(tmp_path, phantom):
    sample = tmp_path / "molli.tif"
    assert main(["sample", "molli", "-o", str(sample), "--size", "64"]) == 0
    landmarks = tmp_path / "clicks.csv"
    write_landmarks_csv(landmarks, LandmarkTable.from_positions(phantom.landmarks, phantom.sequence.spacing_mm))
    truth = tmp_path / "truth.npy"
    np.save(truth, phantom.displacement)
    return sample, landmarks, truth


def test_tre_prints_before_and_after_and_writes_json(tmp_path, files, phantom, capsys):
    _, landmarks, truth = files
    out = tmp_path / "tre.json"
    assert main(["tre", str(truth), str(landmarks), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["landmark", "frames", "before", "(mm)"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(phantom.landmarks) | {"overall"}
    assert float(rows["overall"][-1]) == pytest.approx(0.0, abs=1e-3)  # the true field
    assert float(rows["overall"][-2]) > 1.0  # the motion
    content = json.loads(out.read_text())
    assert content["after_mm"]["overall"] == pytest.approx(0.0, abs=1e-3)
    assert content["spacing_mm"] == pytest.approx(list(phantom.sequence.spacing_mm))
    assert content["spacing_source"].endswith("(mm columns)")
    # --spacing-mm overrides the CSV; distances scale with it
    assert main(["tre", str(truth), str(landmarks), "--spacing-mm", "3", "--out", str(out), "--overwrite"]) == 0
    doubled = json.loads(out.read_text())
    assert doubled["before_mm"]["overall"] == pytest.approx(2 * content["before_mm"]["overall"])
    assert main(["tre", str(truth), str(landmarks), "--out", str(out)]) == 1  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def test_tre_in_pixels_without_spacing_and_clear_errors(tmp_path, files, phantom, capsys):
    _, _, truth = files
    pixels = tmp_path / "pixels.csv"
    table = LandmarkTable.from_positions(phantom.landmarks)
    pixels.write_text("\n".join(",".join(line.split(",")[:4]) for line in landmarks_csv_text(table).splitlines()) + "\n")
    assert main(["tre", str(truth), str(pixels)]) == 0
    captured = capsys.readouterr()
    assert "distances are in pixels" in captured.err and "before (px)" in captured.out
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,label,y,x\n0,a,1,2\n")
    assert main(["tre", str(truth), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("any2reg: error:") and "missing column(s) name" in err and err.count("\n") == 1
    assert main(["tre", str(tmp_path / "none.npy"), str(pixels)]) == 1
    assert "no such displacement file" in capsys.readouterr().err
    np.save(tmp_path / "flat.npy", np.zeros((3, 4)))
    assert main(["tre", str(tmp_path / "flat.npy"), str(pixels)]) == 1
    assert "not a displacement field" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error
        main(["tre", str(truth), str(pixels), "--spacing-mm", "1,2,3"])
    assert exit_info.value.code == 2


def test_register_export_all_writes_everything_once(tmp_path, files, capsys):
    sample, landmarks, _ = files
    out = tmp_path / "out"
    code = main(["register", str(sample), "-o", str(out), *FAST, "--export", "all", "--landmarks", str(landmarks)])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    for name in ("registered.tif", "displacement.npy", "metrics.json", "registered.nii.gz", "displacement.nii.gz",
                 "jacobian.tif", "t1_raw.tif", "t1_registered.tif", "qc.json", "qc_frames.csv", "landmarks.csv",
                 "landmarks_common.csv", "tre.csv", "report.png", "run.json"):
        assert name in names, name
    assert not any(name.startswith(".") for name in names)  # no staging left
    printed = capsys.readouterr().out
    assert "TRE overall" in printed and "wrote" in printed
    record = json.loads((out / "run.json").read_text())
    assert record["command"][:3] == ["any2reg", "register", str(sample)]
    assert record["input"]["path"] == str(sample) and record["engine"] == "groupwise"
    assert "metrics.json" in record["exported"]["sha256"]
    with open(out / "tre.csv") as handle:
        overall = [r for r in csv.DictReader(handle) if r["landmark"] == "overall"][0]
    assert float(overall["tre_after_mm"]) < float(overall["tre_before_mm"])

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["register", str(sample), "-o", str(out), *FAST, "--export", "all", "--landmarks", str(landmarks)]) == 1
    assert "already exist" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_register_export_list_and_argument_errors(tmp_path, files, capsys):
    sample, landmarks, _ = files
    out = tmp_path / "o"
    assert main(["register", str(sample), "-o", str(out), *FAST, "--export", "nifti,report", "--report-format", "pdf", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "displacement.json", "displacement.nii.gz", "displacement.npy", "metrics.json", "registered.json",
        "registered.nii.gz", "registered.tif", "report.pdf",
    ]
    for argv, message in (
        (["--export", "stack,tiff"], "unknown export item"),
        (["--export", "landmarks"], "needs --landmarks"),
        (["--landmarks", str(landmarks)], "add --export"),
        (["--export", "dice"], "labels of every frame"),
    ):
        assert main(["register", str(sample), "-o", str(tmp_path / "x"), *FAST, *argv, "-q"]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before registering
    far = tmp_path / "far.csv"
    far.write_text("frame,name,y,x\n8,a,1,2\n")
    assert main(["register", str(sample), "-o", str(tmp_path / "x"), *FAST, "--export", "all", "--landmarks", str(far), "-q"]) == 1
    assert "frame 8" in capsys.readouterr().err
