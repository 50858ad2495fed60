"""ECV: exact on a synthetic pair of maps, the synthetic hematocrit, clear errors, native + post
registered as one set (``register_pair``), the ``ecv`` command and ``fit --rv-insertion``.

Truth: native myocardium 1000 ms, blood 1550 ms; post-contrast myocardium 450 ms, blood 300 ms;
with Hct 0.42 the myocardial ECV is 100 * 0.58 * (1/450 - 1/1000) / (1/300 - 1/1550) = 26.3707 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_any2reg.core.tissue.ecv import ecv_map, synthetic_hematocrit

TRUE_ECV = 100 * 0.58 * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1550)


def _maps(size=48):
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    labels = np.zeros((size, size), np.uint8)
    labels[r < 8] = 1
    labels[(r >= 9) & (r < 14)] = 2
    labels[(r < 5) & (np.abs(xx - 6) < 4)] = 3
    native = np.full((size, size), 1200.0)
    post = np.full((size, size), 500.0)
    native[labels == 1], post[labels == 1] = 1550.0, 300.0
    native[labels == 2], post[labels == 2] = 1000.0, 450.0
    return native, post, labels


def test_ecv_exact_on_a_synthetic_pair_and_invalid_pixels_counted():
    native, post, labels = _maps()
    native[labels == 2] += np.linspace(-1, 1, int((labels == 2).sum()))  # not all one value
    native_in, post_in = native.copy(), post.copy()
    post[20, 24 + 12] = np.nan  # a failed post fit in the myocardium
    native[0, 0] = -5.0  # not a T1
    result = ecv_map(native, post, labels, hematocrit=0.42)
    myo = labels == 2
    expected = 100 * 0.58 * (1 / post - 1 / native) / (1 / 300 - 1 / 1550)
    ok = myo & np.isfinite(post)
    assert np.abs(result.ecv_percent[ok] - expected[ok]).max() < 1e-3  # float32 map
    assert abs(np.nanmedian(result.ecv_percent[myo]) - TRUE_ECV) < 0.1
    assert np.isnan(result.ecv_percent[20, 36]) and np.isnan(result.ecv_percent[0, 0])
    assert result.n_invalid == 2 and result.n_invalid_labelled == 1  # (0, 0) is background
    row = next(r for r in result.roi if r["label"] == 2)
    assert row["n_pixels"] == myo.sum() and row["n_valid"] == myo.sum() - 1
    assert abs(result.myocardial_mean() - TRUE_ECV) < 0.1
    assert result.label == "ECV" and result.summary()["hematocrit_synthetic"] is False
    assert np.array_equal(native[1:], native_in[1:]) and np.array_equal(post_in[labels == 1], post[labels == 1])
    # blood ECV = 1 - Hct by construction
    assert abs(np.nanmedian(result.ecv_percent[labels == 1]) - 58.0) < 1e-3


def test_synthetic_hematocrit_is_the_treibel_relation_and_labelled():
    assert synthetic_hematocrit(1550.0) == pytest.approx(866.0 / 1550.0 - 0.1232)
    native, post, labels = _maps()
    result = ecv_map(native, post, labels, synthetic_hematocrit=True)
    hct = 866.0 / 1550.0 - 0.1232
    assert result.hematocrit == pytest.approx(hct)
    assert result.label == "synthetic ECV" and result.summary()["quantity"] == "synthetic ECV"
    assert result.myocardial_mean() == pytest.approx(TRUE_ECV / 0.58 * (1 - hct), abs=1e-3)
    with pytest.raises(ValueError, match="outside 1000-2500 ms"):
        synthetic_hematocrit(300.0)


def test_bad_inputs_give_clear_errors():
    native, post, labels = _maps()
    with pytest.raises(ValueError, match="outside 0-1.*percentage"):
        ecv_map(native, post, labels, hematocrit=42)
    with pytest.raises(ValueError, match="outside 0-1"):
        ecv_map(native, post, labels, hematocrit=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        ecv_map(native, post, labels)
    with pytest.raises(ValueError, match="exactly one"):
        ecv_map(native, post, labels, hematocrit=0.4, synthetic_hematocrit=True)
    with pytest.raises(ValueError, match=r"mask has shape \(10, 10\)"):
        ecv_map(native, post, labels[:10, :10], hematocrit=0.4)
    with pytest.raises(ValueError, match="label 1"):
        ecv_map(native, post, np.where(labels == 1, 0, labels), hematocrit=0.4)
    with pytest.raises(ValueError, match="swapped"):
        ecv_map(post, native, labels, hematocrit=0.4)
    with pytest.raises(ValueError, match="one grid"):
        ecv_map(native, post[:-1], labels, hematocrit=0.4)


def test_register_pair_aligns_two_maps_to_the_native_one():
    from napari_any2reg.pipeline.ecv import register_pair

    native, post, labels = _maps(64)
    shifted = np.roll(post, 4, axis=0)  # the post map 4 px lower
    shifted[10, 10] = np.nan
    pair = register_pair(native, shifted, engine="groupwise", device="cpu", iterations_scale=0.5)
    assert pair.grid == "native"
    assert np.abs(pair.displacement_native).mean() < 0.3
    centre = pair.displacement_post[0, 0][24:40, 24:40].mean()
    assert 3.0 < centre < 5.0  # pull-back: the content is found 4 px lower
    myo = labels == 2
    result = ecv_map(pair.native, pair.post, labels, hematocrit=0.42)
    assert abs(np.nanmedian(result.ecv_percent[myo]) - TRUE_ECV) < 1.0


@pytest.fixture(scope="module")
def phantom_pair():
    from napari_any2reg.core.phantom import make_phantom

    common = dict(seed=20000, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=1.0, snr=None)
    native = make_phantom("molli", **common)
    post = make_phantom("molli", contrast="post", breath_hold_offset_mm=(13.5, 0.0), **common)
    return native, post


def test_joint_registration_recovers_the_myocardial_ecv(phantom_pair):
    from scipy import ndimage

    from napari_any2reg.pipeline.ecv import compute_ecv, register_pair

    native, post = phantom_pair
    labels = native.common_labels
    core = ndimage.binary_erosion(labels == 2)
    pair = register_pair(native.sequence, post.sequence, engine="any2reg", device="cpu")
    assert pair.native.n_frames == 8 and pair.post.n_frames == 8
    assert np.array_equal(pair.post.timings_ms, post.sequence.timings_ms)  # each keeps its own timings
    # the post frames are moved back by about the 3 px breath-hold offset around the heart
    heart = labels > 0
    assert 2.0 < pair.displacement_post[:, 0][:, heart].mean() < 4.0
    assert abs(pair.displacement_native[:, 0][:, heart].mean()) < 0.5  # on the native grid
    registered = compute_ecv(native.sequence, post.sequence, labels, hematocrit=0.42, engine="any2reg", device="cpu")
    raw = compute_ecv(native.sequence, post.sequence, labels, hematocrit=0.42, register=False, device="cpu")
    error = abs(np.nanmean(registered.ecv.ecv_percent[core]) - TRUE_ECV)
    error_raw = abs(np.nanmean(raw.ecv.ecv_percent[core]) - TRUE_ECV)
    assert error < 2.0 < error_raw
    assert registered.registration is not None and raw.registration is None


def test_ecv_cli_writes_all_files_and_refuses_bad_input(tmp_path, phantom_pair):
    import tifffile

    from napari_any2reg.cli import main
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io import read_map_tiff, write_tiff

    native, post = phantom_pair
    write_tiff(tmp_path / "native.tif", native.sequence)
    write_tiff(tmp_path / "post.tif", post.sequence)
    labels = native.common_labels
    np.save(tmp_path / "labels.npy", labels)
    points = native.common_landmarks
    rv = ";".join(f"{points[k][0]:.2f},{points[k][1]:.2f}" for k in ("rv_insertion_anterior", "rv_insertion_inferior"))
    out = tmp_path / "out"
    code = main(["ecv", str(tmp_path / "native.tif"), str(tmp_path / "post.tif"), "-o", str(out), "--mask",
                 str(tmp_path / "labels.npy"), "--synthetic-hematocrit", "--engine", "any2reg", "--device", "cpu",
                 "--rv-insertion", rv, "-q"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["bullseye.png", "ecv.tif", "ecv_stats.json", "native_t1.tif",
                                                     "post_t1.tif", "segments.csv"]
    stats = json.loads((out / "ecv_stats.json").read_text())
    assert stats["quantity"] == "synthetic ECV" and stats["hematocrit_synthetic"] is True
    assert stats["hematocrit"] == pytest.approx(866.0 / stats["native_blood_t1_ms"] - 0.1232)
    assert abs(stats["native_blood_t1_ms"] - 1550) < 30 and abs(stats["post_blood_t1_ms"] - 300) < 15
    assert [s["segment"] for s in stats["segments"]["segments"]] == list(range(7, 13))
    ecv, info = read_map_tiff(out / "ecv.tif")
    assert info["quantity"] == "synthetic ECV" and info["unit"] == "%" and ecv.dtype == np.float32
    native_t1, info = read_map_tiff(out / "native_t1.tif")
    assert info["unit"] == "ms" and abs(np.nanmedian(native_t1[labels == 2]) - 1000) < 30

    # two T1 maps (2-D) are told apart by their shape and aligned; --no-register uses them as they are
    maps = tmp_path / "maps"
    code = main(["ecv", str(out / "native_t1.tif"), str(out / "post_t1.tif"), "-o", str(maps), "--mask",
                 str(tmp_path / "labels.npy"), "--hematocrit", "0.42", "--no-register", "-q"])
    assert code == 0
    stats = json.loads((maps / "ecv_stats.json").read_text())
    assert stats["inputs"]["native_kind"] == "T1 map" and stats["registration"] is None
    assert stats["hematocrit"] == 0.42 and stats["quantity"] == "ECV"

    # bad inputs: one clear line, nothing written
    bad = tmp_path / "bad"
    np.save(tmp_path / "small.npy", labels[:20])
    for extra, message in ((["--hematocrit", "42"], "outside 0-1"), (["--hematocrit", "0.4", "--mask", str(tmp_path / "small.npy")], "shape"),
                           (["--hematocrit", "0.4", "--mask", str(tmp_path / "nolv.npy")], "label 1")):
        np.save(tmp_path / "nolv.npy", np.where(labels == 1, 0, labels))
        args = ["ecv", str(tmp_path / "native.tif"), str(tmp_path / "post.tif"), "-o", str(bad), "--no-register", "-q"]
        if "--mask" not in extra:
            args += ["--mask", str(tmp_path / "labels.npy")]
        assert main(args + extra) == 1
        assert not bad.exists()
    tifffile.imwrite(tmp_path / "other.tif", make_phantom("molli", seed=1, shape=(32, 32)).sequence.frames)
    assert main(["ecv", str(tmp_path / "native.tif"), str(tmp_path / "other.tif"), "-o", str(bad), "--mask",
                 str(tmp_path / "labels.npy"), "--hematocrit", "0.4", "-q"]) == 1
    assert not bad.exists()


def test_fit_writes_segments_with_rv_insertion(tmp_path):
    import csv

    from napari_any2reg.cli import main
    from napari_any2reg.io import write_tiff

    from napari_any2reg.core.phantom import make_phantom

    native = make_phantom("molli", seed=20001, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=0.0,
                          rotation_deg=0.0, nonrigid_mm=0.0, snr=None)  # still: the raw labels fit the raw fit
    write_tiff(tmp_path / "native.tif", native.sequence)
    labels = native.common_labels
    np.save(tmp_path / "labels.npy", labels)
    points = native.landmarks
    rv = f"{points['rv_insertion_anterior'][0][0]:.2f},{points['rv_insertion_anterior'][0][1]:.2f}"
    out = tmp_path / "fit"
    assert main(["fit", str(tmp_path / "native.tif"), "-o", str(out), "--mask", str(tmp_path / "labels.npy"),
                 "--rv-insertion", rv, "--level", "basal", "--device", "cpu", "-q"]) == 0
    with open(out / "segments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["segment"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    medians = [float(r["median"]) for r in rows if r["median"]]
    assert len(medians) == 6 and all(abs(m - 1000) < 60 for m in medians)
    assert (out / "bullseye.png").stat().st_size > 5000
    assert json.loads((out / "stats.json").read_text())["segments"]["level"] == "basal"
    assert main(["fit", str(tmp_path / "native.tif"), "-o", str(tmp_path / "x"), "--rv-insertion", rv, "-q"]) == 1


def test_compute_ecv_checks_before_registering(phantom_pair):
    from napari_any2reg.pipeline.ecv import compute_ecv, register_pair

    native, post = phantom_pair
    labels = native.common_labels
    untimed = post.sequence.replace(timings_ms=None)
    calls = []

    def fit(*args, **kwargs):  # never reached: the problem is found first
        calls.append(args)
        raise AssertionError("fitted")

    with pytest.raises(ValueError, match="no T1 map can be fitted to the post-contrast series"):
        compute_ecv(native.sequence, untimed, labels, hematocrit=0.42, fit=fit)
    with pytest.raises(ValueError, match="exactly one"):
        compute_ecv(native.sequence, post.sequence, labels, fit=fit)
    with pytest.raises(ValueError, match="Y1,X1;Y2,X2"):
        compute_ecv(native.sequence, post.sequence, labels, hematocrit=0.42, rv_insertion="1;2", fit=fit)
    with pytest.raises(ValueError, match="two sequences or two T1 maps"):
        register_pair(native.sequence, native.t1_map)
    assert calls == []


def test_phantom_breath_hold_offset_moves_the_heart(phantom_pair):
    native, post = phantom_pair
    heart = native.common_labels > 0
    assert abs(native.displacement[:, 0][:, heart].mean()) < 0.3  # zero-mean breathing only
    assert post.displacement[:, 0][:, heart].mean() == pytest.approx(3.0, abs=0.3)  # 13.5 mm at 4.5 mm
    assert abs(post.displacement[:, 1][:, heart].mean()) < 0.3
    lv = np.argwhere(post.labels[0] == 1).mean(0) - np.argwhere(post.common_labels == 1).mean(0)
    assert lv[0] == pytest.approx(3.0, abs=0.6)  # the heart appears 3 px lower in the frames
    assert post.params["arguments"]["breath_hold_offset_mm"] == (13.5, 0.0)
    assert np.array_equal(native.common_labels, post.common_labels)  # same patient


def test_eroding_the_myocardium_border_takes_the_mean_to_the_truth():
    """The benchmark's phantom pair (96 x 96 at 3 mm, SNR 40) without motion: the whole label's
    mean carries the partial volume with blood at its borders (+1.5 %-points for this seed), ``erode_px=1``
    does not; the map itself is unchanged, and the segments leave the same pixels out."""
    from scipy import ndimage

    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.pipeline.ecv import compute_ecv

    still = dict(seed=20000, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0,
                 snr=40.0)
    native, post = make_phantom("molli", **still), make_phantom("molli", contrast="post", **still)
    labels = native.common_labels
    points = native.common_landmarks
    rv = np.array([points["rv_insertion_anterior"], points["rv_insertion_inferior"]])
    kwargs = dict(hematocrit=0.42, register=False, device="cpu", rv_insertion=rv)
    whole = compute_ecv(native.sequence, post.sequence, labels, **kwargs)
    eroded = compute_ecv(native.sequence, post.sequence, labels, erode_px=1, **kwargs)
    np.testing.assert_array_equal(eroded.ecv.ecv_percent, whole.ecv.ecv_percent)
    error_whole = whole.ecv.myocardial_mean() - TRUE_ECV
    error_eroded = eroded.ecv.myocardial_mean() - TRUE_ECV
    assert error_whole > 1.0 and abs(error_eroded) < 0.6 and abs(error_eroded) < abs(error_whole) - 1.0, (error_whole, error_eroded)
    myo = labels == 2
    row = next(r for r in eroded.ecv.roi if r["label"] == 2)
    assert row["n_pixels"] == ndimage.binary_erosion(myo).sum()
    assert row["n_border_excluded"] == myo.sum() - row["n_pixels"] > 0
    assert eroded.stats()["myocardium_erode_px"] == 1 and whole.stats()["myocardium_erode_px"] == 0
    assert eroded.stats()["segments"]["erode_px"] == 1
    # the segments: fewer pixels each, every mean nearer the truth on average
    n_whole = [r["n_pixels"] for r in whole.segments.rows]
    n_eroded = [r["n_pixels"] for r in eroded.segments.rows]
    assert all(0 < e < w for e, w in zip(n_eroded, n_whole)) and sum(n_eroded) == row["n_valid"]
    assert (np.mean([abs(r["mean"] - TRUE_ECV) for r in eroded.segments.rows])
            < np.mean([abs(r["mean"] - TRUE_ECV) for r in whole.segments.rows]))
    with pytest.raises(ValueError, match="erode_px=20 removes every LV myocardium pixel"):
        compute_ecv(native.sequence, post.sequence, labels, erode_px=20, **kwargs)
