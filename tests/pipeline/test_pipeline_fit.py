"""``pipeline.fit.fit_series``: the maps of one sequence, from file to files (``any2reg fit``)."""

import json

import numpy as np
import pytest
import tifffile

from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.io import read_map_tiff, write_tiff
from napari_any2reg.pipeline.fit import NOTE_KINDS, fit_series


@pytest.fixture(scope="module")
def still_molli(tmp_path_factory):
    """A motion-free 32x32 MOLLI phantom on file (the map must match the phantom's T1)."""
    folder = tmp_path_factory.mktemp("pipeline_fit")
    phantom = make_phantom("molli", seed=3, shape=(32, 32), spacing_mm=(4.0, 4.0), motion_mm=0.0,
                           rotation_deg=0.0, nonrigid_mm=0.0, snr=80.0)
    return write_tiff(folder / "molli.tif", phantom.sequence), phantom


def test_known_t1_of_a_phantom_and_imagej_maps(tmp_path, still_molli):
    path, phantom = still_molli
    labels = phantom.common_labels.astype(np.uint8)
    notes = []
    outcome = fit_series(path, tmp_path / "t1", mask=labels, device="cpu", on_note=lambda *n: notes.append(n))
    myo = labels == 2
    assert abs(np.nanmedian(outcome.result.t1_ms[myo]) - 1000.0) < 30.0  # native myocardium, 1.5 T
    assert outcome.files == ("t1.tif", "r2.tif", "t1_sd.tif", "params.tif", "stats.json")
    assert sorted(p.name for p in outcome.outdir.iterdir()) == sorted(outcome.files)
    assert outcome.excluded == () and notes == []  # no metrics.json beside the file: every frame fitted

    t1, info = read_map_tiff(tmp_path / "t1" / "t1.tif")
    np.testing.assert_array_equal(t1, outcome.result.t1_ms)
    assert info["quantity"] == "T1" and info["unit"] == "ms" and info["spacing_mm"] == [4.0, 4.0]
    with tifffile.TiffFile(tmp_path / "t1" / "t1.tif") as tif:  # Fiji: a map with its pixel size
        assert tif.is_imagej and tif.series[0].axes == "YX"
    with tifffile.TiffFile(tmp_path / "t1" / "params.tif") as tif:
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (3, 32, 32)

    stats = json.loads((tmp_path / "t1" / "stats.json").read_text())
    assert stats == json.loads(json.dumps(outcome.stats, default=float))
    assert stats["mask"] == "array" and {row["name"] for row in stats["roi"]} >= {"LV myocardium"}


def test_outlier_frames_of_the_registration_are_left_out_and_reported(tmp_path, still_molli):
    path, phantom = still_molli
    folder = tmp_path / "registration"
    folder.mkdir()
    registered = write_tiff(folder / "registered.tif", phantom.sequence)
    (folder / "metrics.json").write_text(json.dumps({"outlier_frames": {"indices": [5]}}))
    notes = []
    outcome = fit_series(registered, tmp_path / "auto", device="cpu", on_note=lambda *n: notes.append(n))
    assert outcome.excluded == (5,) and outcome.result.frames_used == (0, 1, 2, 3, 4, 6, 7)
    assert outcome.stats["exclude_frames"]["excluded"] == [5]
    assert [kind for kind, _ in notes] == ["exclusion"] and "outlier frames 5 left out" in notes[0][1]
    assert all(kind in NOTE_KINDS for kind, _ in notes)

    # the caller's choice wins: frames named, or none
    chosen = fit_series(registered, tmp_path / "chosen", exclude_frames=[2, 6], device="cpu")
    assert chosen.excluded == (2, 6) and chosen.stats["exclude_frames"]["requested"] == "[2, 6]"
    assert fit_series(registered, tmp_path / "none", exclude_frames="none", device="cpu").excluded == ()


def test_a_sequence_in_memory_and_errors_in_keyword_terms(tmp_path, still_molli):
    _, phantom = still_molli
    outcome = fit_series(phantom.sequence, tmp_path / "memory", model="ir", device="cpu")
    assert outcome.result.model == "ir" and outcome.stats["input"] == phantom.sequence.name
    with pytest.raises(ValueError, match=r"timings_ms has 3 values .* 8 frames"):
        fit_series(phantom.sequence, tmp_path / "bad", timings_ms=[100.0, 200.0, 300.0])
    with pytest.raises(ValueError, match="rv_insertion needs mask"):
        fit_series(phantom.sequence, tmp_path / "bad", rv_insertion="10,10;20,20")
    with pytest.raises(ValueError, match="mask has shape"):
        fit_series(phantom.sequence, tmp_path / "bad", mask=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="exclude_frames: frame 9 is outside"):
        fit_series(phantom.sequence, tmp_path / "bad", exclude_frames="9")
    assert not (tmp_path / "bad").exists()  # everything checked before the fit: nothing written
