"""``any2reg ecv`` and ``any2reg segments`` on two synthetic T1 maps (a ring myocardium): what the
summary line says was done, the "synthetic" mark in ``segments.csv``, and ``--erode-px``.

Truth: native myocardium 1000 ms, blood 1550 ms; post myocardium 450 ms, blood 300 ms.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_any2reg.cli import main

SIZE = 48
RV = "14,18;34,18"  # anterior, inferior (pixels), on the septal (left) side of the ring


def _ring_maps():
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(yy - SIZE / 2, xx - SIZE / 2)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[r < 8] = 1
    labels[(r >= 8) & (r < 14)] = 2
    labels[(r >= 15) & (r < 21) & (xx < SIZE / 2 - 6)] = 3
    native = np.full((SIZE, SIZE), 1200.0)
    post = np.full((SIZE, SIZE), 500.0)
    for value, (t1n, t1p) in {1: (1550.0, 300.0), 2: (1000.0, 450.0), 3: (1550.0, 300.0)}.items():
        native[labels == value], post[labels == value] = t1n, t1p
    # partial volume: the myocardium's border pixels (those one erosion removes) mix with blood
    from scipy import ndimage

    border = (labels == 2) & ~ndimage.binary_erosion(labels == 2)
    native[border], post[border] = 1300.0, 360.0
    return native, post, labels


@pytest.fixture
def maps(tmp_path):
    native, post, labels = _ring_maps()
    np.save(tmp_path / "native.npy", native)
    np.save(tmp_path / "post.npy", np.roll(post, 2, axis=0))  # the post map 2 px lower
    np.save(tmp_path / "post_still.npy", post)
    np.save(tmp_path / "labels.npy", labels)
    return tmp_path


def test_two_maps_say_they_were_aligned_not_registered_as_one_set(maps, capsys):
    out = maps / "aligned"
    assert main(["ecv", str(maps / "native.npy"), str(maps / "post.npy"), "-o", str(out), "--mask",
                 str(maps / "labels.npy"), "--hematocrit", "0.42", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "T1 maps aligned (groupwise" in line and "registered as one set" not in line
    registration = json.loads((out / "ecv_stats.json").read_text())["registration"]
    assert registration["what"] == "T1 maps aligned" and registration["engine"] == "groupwise"
    out = maps / "raw"
    assert main(["ecv", str(maps / "native.npy"), str(maps / "post_still.npy"), "-o", str(out), "--mask",
                 str(maps / "labels.npy"), "--hematocrit", "0.42", "--no-register"]) == 0
    assert "not registered" in capsys.readouterr().out


def test_segments_csv_of_a_synthetic_ecv_is_marked_and_erode_px_is_reported(maps, capsys):
    out = maps / "synthetic"
    args = ["ecv", str(maps / "native.npy"), str(maps / "post_still.npy"), "-o", str(out), "--mask",
            str(maps / "labels.npy"), "--synthetic-hematocrit", "--no-register", "--rv-insertion", RV]
    assert main(args + ["-q"]) == 0
    stats = json.loads((out / "ecv_stats.json").read_text())
    assert stats["quantity"] == "synthetic ECV" and stats["myocardium_erode_px"] == 0
    with open(out / "segments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["segment"]) for r in rows] == list(range(7, 13))
    assert {r["quantity"] for r in rows} == {stats["quantity"]} and {r["unit"] for r in rows} == {"%"}
    whole_mean = stats["myocardial_mean_percent"]

    # --erode-px 1: the border layer (blood values) leaves the statistics, the mean drops to the truth
    eroded = maps / "eroded"
    assert main(args[:4] + [str(eroded)] + args[5:] + ["--erode-px", "1"]) == 0
    assert "1 border px of the myocardium left out" in capsys.readouterr().out
    stats = json.loads((eroded / "ecv_stats.json").read_text())
    hct = stats["hematocrit"]
    truth = 100 * (1 - hct) * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1550)
    assert stats["myocardium_erode_px"] == 1 and stats["segments"]["erode_px"] == 1
    assert stats["myocardial_mean_percent"] == pytest.approx(truth, abs=0.01)
    assert stats["myocardial_mean_percent"] < whole_mean - 1.0
    myocardium = next(r for r in stats["roi"] if r["label"] == 2)
    labels = np.load(maps / "labels.npy")
    assert myocardium["n_pixels"] + myocardium["n_border_excluded"] == int((labels == 2).sum())
    assert all(s["mean"] == pytest.approx(truth, abs=0.01) for s in stats["segments"]["segments"])
    # the map itself is the same
    from napari_any2reg.io import read_map_tiff

    np.testing.assert_array_equal(read_map_tiff(eroded / "ecv.tif")[0], read_map_tiff(out / "ecv.tif")[0])

    # any2reg segments: the same option, and the mark from the map's own quantity
    seg = maps / "seg"
    assert main(["segments", str(eroded / "ecv.tif"), "-o", str(seg), "--mask", str(maps / "labels.npy"),
                 "--rv-insertion", RV, "--erode-px", "1", "-q"]) == 0
    with open(seg / "segments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["quantity"] for r in rows} == {"synthetic ECV"}
    assert all(float(r["mean"]) == pytest.approx(truth, abs=0.01) for r in rows)
    assert main(["segments", str(eroded / "ecv.tif"), "-o", str(maps / "bad"), "--mask", str(maps / "labels.npy"),
                 "--rv-insertion", RV, "--erode-px", "9", "-q"]) == 1
    assert "--erode-px 9 removes every LV myocardium pixel" in capsys.readouterr().err
    assert not (maps / "bad").exists()


def test_ecv_and_segments_read_the_scanners_dicom_t1_maps(tmp_path, capsys):
    # issue 26: the inline MOLLI T1 maps as exported (ImageType T1 MAP, values in ms after the rescale)
    import tifffile
    from conftest import write_dicom
    from pydicom.uid import generate_uid

    native, post, labels = _ring_maps()
    for name, t1, slope, intercept in (("native", native, 0.5, 0.0), ("post", post, 1.0, -50.0)):
        folder = tmp_path / name
        folder.mkdir()
        write_dicom(folder / "IM_0001.dcm", np.round((t1 - intercept) / slope), generate_uid(), spacing_mm=(1.4, 1.4),
                    ImageType=["DERIVED", "PRIMARY", "T1 MAP", "T1"], RescaleSlope=slope, RescaleIntercept=intercept,
                    SeriesDescription=f"MOLLI {name} T1 map")
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    out = tmp_path / "out"
    assert main(["ecv", str(tmp_path / "native"), str(tmp_path / "post" / "IM_0001.dcm"), "-o", str(out), "--mask",
                 str(tmp_path / "labels.tif"), "--hematocrit", "0.42", "--no-register", "-q"]) == 0, capsys.readouterr().err
    truth = 100 * (1 - 0.42) * (1 / post - 1 / native) / (1 / 300 - 1 / 1550)
    ecv = tifffile.imread(out / "ecv.tif")
    np.testing.assert_allclose(ecv, truth, atol=1e-3)
    assert 25.0 < ecv[labels == 2].mean() < 40.0
    stats = json.loads((out / "ecv_stats.json").read_text())
    assert stats["inputs"]["native_kind"] == stats["inputs"]["post_kind"] == "T1 map"
    assert stats["spacing_mm"] == [1.4, 1.4]  # the DICOM's PixelSpacing
    from napari_any2reg.io import read_map_tiff

    values, info = read_map_tiff(out / "native_t1.tif")
    np.testing.assert_allclose(values, native)
    assert list(info["spacing_mm"]) == [1.4, 1.4]

    seg = tmp_path / "seg"
    assert main(["segments", str(tmp_path / "native"), "-o", str(seg), "--mask", str(tmp_path / "labels.tif"),
                 "--rv-insertion", RV, "--erode-px", "1", "-q"]) == 0, capsys.readouterr().err
    with open(seg / "segments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["segment"]) for r in rows] == list(range(7, 13))
    assert {r["quantity"] for r in rows} == {"T1"} and {r["unit"] for r in rows} == {"ms"}
    assert all(float(r["mean"]) == pytest.approx(1000.0, abs=0.01) for r in rows)
