"""``any2reg fit``: T1, R², SD and parameter maps plus stats.json from a sequence file."""

import json

import numpy as np
import pytest
import tifffile

from napari_any2reg.cli import main
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.io import read_sequence, write_tiff

OUTPUTS = ("t1.tif", "r2.tif", "t1_sd.tif", "params.tif", "stats.json")


@pytest.fixture(scope="module")
def molli_file(tmp_path_factory):
    """A still, 48x48 MOLLI phantom file and its truth (no motion: the map must be right)."""
    folder = tmp_path_factory.mktemp("fit")
    phantom = make_phantom("molli", seed=5, shape=(48, 48), spacing_mm=(3.0, 3.0), motion_mm=0.0,
                           rotation_deg=0.0, nonrigid_mm=0.0, snr=60.0)
    path = write_tiff(folder / "molli.tif", phantom.sequence)
    return path, phantom


def test_help_documents_fit(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("--model", "--times-ms", "--mask", "--device", "--overwrite", "t1.tif", "stats.json", "stone2"):
        assert text in out


def test_fit_writes_maps_and_stats_with_roi(tmp_path, molli_file, capsys):
    path, phantom = molli_file
    labels = phantom.common_labels.astype(np.uint8)
    mask_path = tmp_path / "labels.tif"
    tifffile.imwrite(mask_path, labels)
    out = tmp_path / "out"
    assert main(["fit", str(path), "-o", str(out), "--mask", str(mask_path), "--device", "cpu"]) == 0
    assert "molli fit of 48x48 pixels" in capsys.readouterr().out
    for name in OUTPUTS:
        assert (out / name).is_file(), name

    t1 = tifffile.imread(out / "t1.tif")
    assert t1.shape == (48, 48) and t1.dtype == np.float32
    r2, sd = tifffile.imread(out / "r2.tif"), tifffile.imread(out / "t1_sd.tif")
    params = tifffile.imread(out / "params.tif")
    assert params.shape == (3, 48, 48)
    # ImageJ maps with axes (Fiji opens them with their pixel size); the JSON travels as a property
    from napari_any2reg.io import read_map_tiff

    info = read_map_tiff(out / "params.tif")[1]
    assert info["param_names"] == ["A", "B", "t1_star_ms"] and info["spacing_mm"] == [3.0, 3.0]
    assert read_map_tiff(out / "t1.tif")[1]["unit"] == "ms"
    with tifffile.TiffFile(out / "params.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "CYX"

    myo = labels == 2
    assert abs(np.nanmedian(t1[myo]) - 1000.0) < 30.0  # native myocardium at 1.5 T
    assert np.nanmedian(r2[myo]) > 0.99 and np.nanmedian(sd[myo]) > 0

    stats = json.loads((out / "stats.json").read_text())
    assert stats["model"] == "molli" and stats["n_frames"] == 8
    assert stats["inversion_times_ms"] == phantom.sequence.timings_ms.tolist()
    assert stats["n_failed"] == int(np.isnan(t1).sum())
    rows = {row["name"]: row for row in stats["roi"]}
    assert set(rows) == {"LV blood pool", "LV myocardium", "RV blood pool"}
    assert rows["LV myocardium"]["n_pixels"] == int(myo.sum())
    assert abs(rows["LV myocardium"]["t1_mean_ms"] - 1000.0) < 60.0
    assert len(stats["r2_survival_thresholds"]) == 101
    curve = rows["LV myocardium"]["r2_survival"]
    assert len(curve) == 101 and curve == sorted(curve, reverse=True)

    # never overwrite without --overwrite; with it, the files are replaced
    assert main(["fit", str(path), "-o", str(out), "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["fit", str(path), "-o", str(out), "--model", "ir", "--overwrite", "-q"]) == 0
    assert json.loads((out / "stats.json").read_text())["model"] == "ir"


def test_fit_timings_override_and_count_mismatch(tmp_path, molli_file, capsys):
    path, phantom = molli_file
    seven = ",".join(str(t) for t in phantom.sequence.timings_ms[:7])
    assert main(["fit", str(path), "-o", str(tmp_path / "bad"), "--times-ms", seven, "-q"]) == 1
    err = capsys.readouterr().err
    assert "--times-ms has 7 values" in err and "8 frames" in err
    assert not (tmp_path / "bad" / "t1.tif").exists()

    doubled = ",".join(str(2 * t) for t in phantom.sequence.timings_ms)
    out = tmp_path / "override"
    assert main(["fit", str(path), "-o", str(out), "--times-ms", doubled, "-q"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["inversion_times_ms"] == (2 * phantom.sequence.timings_ms).tolist()


def test_fit_errors_exit_one(tmp_path, capsys):
    cine = make_phantom("cine", seed=0, shape=(32, 32), n_frames=6).sequence
    cine_path = write_tiff(tmp_path / "cine.tif", cine)
    assert main(["fit", str(cine_path), "-o", str(tmp_path / "o1"), "-q"]) == 1
    assert "--model" in capsys.readouterr().err

    stone = make_phantom("stone", seed=0, shape=(32, 32)).sequence
    no_times = write_tiff(tmp_path / "stone.tif", stone.replace(timings_ms=None))
    assert main(["fit", str(no_times), "-o", str(tmp_path / "o2"), "-q"]) == 1
    assert "--times-ms" in capsys.readouterr().err

    stone_path = write_tiff(tmp_path / "stone_ok.tif", stone)
    np.save(tmp_path / "wrong.npy", np.ones((16, 16), np.uint8))
    assert main(["fit", str(stone_path), "-o", str(tmp_path / "o3"), "--mask", str(tmp_path / "wrong.npy"), "-q"]) == 1
    assert "shape (16, 16)" in capsys.readouterr().err
    assert main(["fit", str(stone_path), "-o", str(tmp_path / "o4"), "--mask", str(tmp_path / "missing.tif"), "-q"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_fit_reads_nifti_masks_in_reader_orientation(tmp_path):
    import nibabel

    stone = make_phantom("stone", seed=1, shape=(32, 40), spacing_mm=(6.0, 6.0)).sequence
    path = write_tiff(tmp_path / "stone.tif", stone)
    labels = np.zeros((32, 40), np.int16)
    labels[5:10, 3:30] = 2
    nibabel.save(nibabel.Nifti1Image(labels.T.copy(), np.eye(4)), str(tmp_path / "mask.nii.gz"))
    out = tmp_path / "out"
    assert main(["fit", str(path), "-o", str(out), "--mask", str(tmp_path / "mask.nii.gz"), "-q"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["model"] == "stone" and stats["roi"][0]["n_pixels"] == 5 * 27
    assert read_sequence(path).n_frames == 11
