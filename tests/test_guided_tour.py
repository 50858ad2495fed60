"""The README's guided tour: ``docs/tour/make_tour.py`` runs in a real 1280x800 napari window.

The script adds every dock as the Plugins menu does, presses the docks' buttons (open the
sample, Registration Run, Review, T1 mapping Fit, Landmarks New + clicks + TRE, ECV and AHA
segments, T2 fit of the T2-prep sample, Export) and saves one PNG per step. Here it runs on a
64x64 sample into a temporary folder; each PNG must be a real picture of the window and each
step must have produced what the tour says it does (layers, tables, files).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.napari
#: the whole tour takes 70-110 s on the shared 2-core machine (registrations, fits, export)
SLOW = pytest.mark.slow

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
TOUR = ROOT / "docs" / "tour"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"tour_{name}", TOUR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tour(tmp_path_factory, qapp):
    out = tmp_path_factory.mktemp("tour")
    module = _script("make_tour")
    assert module.main(["-o", str(out), "--sample-size", "64", "--iterations-scale", "0.2"]) == 0
    return module, out, json.loads((out / "tour.json").read_text())


@SLOW
def test_every_step_saves_a_picture_of_the_window(tour):
    from PIL import Image

    module, out, record = tour
    assert list(record["steps"]) == list(module.STEPS)
    for step in module.STEPS:
        path = out / f"{step}.png"
        assert record["steps"][step]["png"] == path.name
        assert 5_000 < path.stat().st_size < 200_000, (step, path.stat().st_size)
        with Image.open(path) as image:
            width, height = image.size
            pixels = np.asarray(image.convert("RGB"), float)
        assert width == 1024 and abs(height / width - 800 / 1280) < 0.01, (step, image.size)
        assert pixels.std() > 20, step  # not blank
        # the canvas (centre of the window) shows the images, not an empty background
        centre = pixels[height // 4 : 3 * height // 4, width // 4 : width // 2]
        assert centre.std() > 10, step
    assert not [n for n in record["notifications"] if n.startswith("error")], record["notifications"]


@SLOW
def test_each_step_produced_what_the_tour_shows(tour):
    _, out, record = tour
    steps = record["steps"]
    sample = steps["01_open"]["sample"]
    assert sample == "MOLLI 5(3)3 phantom" and steps["01_open"]["frames"] == 8
    registered = f"{sample} registered"
    assert registered in steps["02_register"]["layers"] and steps["02_register"]["status"].startswith("Done:")

    review = steps["03_review"]
    assert review["qc_rows"] == 8 and "alignment" in review["summary"]
    assert {f"{registered} grid", f"{registered} Jacobian"} <= set(review["visible"])

    t1 = steps["04_t1_fit"]
    assert {f"{sample} T1", f"{registered} T1"} <= set(t1["visible"])
    assert len(t1["table"]) == 2 and "median T1" in t1["status"]  # before and after

    landmarks = steps["05_landmarks"]
    assert f"{sample} landmarks" in landmarks["visible"] and landmarks["placed"].startswith("All 16 landmarks placed")
    assert landmarks["tre_after_mm"] < landmarks["tre_before_mm"]  # the registration brought the clicks together
    assert [row[0] for row in landmarks["table"]][:2] == ["rv_insertion_anterior", "rv_insertion_inferior"]

    ecv = steps["06_ecv"]
    assert {f"{sample} ECV", f"{sample} ECV AHA segments", f"{sample} ECV segment numbers"} <= set(ecv["visible"])
    assert {"RV insertion", "post-contrast MOLLI", "labels"} <= set(ecv["layers"])
    assert ecv["result"].startswith("Myocardial ECV:") and "registered as one set" in ecv["result"]
    assert 15 < ecv["myocardial_ecv_percent"] < 45  # phantom truth 26.4 %, partial volume at 4.5 mm pixels
    assert [int(row[0]) for row in ecv["segments"]] == list(range(7, 13))  # a mid slice: segments 7-12
    assert ecv["segments"][1][1] == "mid anteroseptal"

    t2 = steps["07_t2"]
    assert t2["model"] == "t2" and t2["times_ms"] == [0.0, 25.0, 40.0, 55.0]
    assert {"T2-prep phantom T2", "T2-prep phantom registered T2"} <= set(t2["visible"])
    assert "median T2" in t2["status"]

    export = steps["08_export"]
    assert {"registered.tif", "displacement.npy", "qc.json", "landmarks.csv", "tre.csv", "report.png",
            "run.json"} <= set(export["files"])
    assert (out / "export" / "report.png").is_file()
    assert export["status"].startswith("Wrote ")


def test_tour_data_are_the_sample_and_its_post_contrast_partner(tmp_path):
    from napari_any2reg.io import read_sequence
    from napari_any2reg.widgets._sample_data import phantom_layer

    module = _script("tour_data")
    paths = module.write_tour_data(tmp_path, size=48)
    native = read_sequence(paths["native.tif"])
    data, _, _ = phantom_layer("molli", shape=(48, 48))
    np.testing.assert_allclose(native.frames, data, atol=1e-5)  # the napari sample, frame for frame
    post = read_sequence(paths["post.tif"])
    assert post.frames.shape == native.frames.shape and not np.allclose(post.frames, native.frames)
    rv = [[float(v) for v in point.split(",")] for point in paths["rv_insertion.txt"].read_text().strip().split(";")]
    assert len(rv) == 2 and all(0 <= v < 48 for point in rv for v in point)
