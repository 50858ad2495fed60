"""Outlier frames (core/outliers.py) on phantoms with known bad frames; T1 with auto exclusion."""

import numpy as np
import pytest
from scipy import ndimage

from napari_any2reg.core.bad_frames import inject_bad_frame
from napari_any2reg.core.mapping import fit_t1
from napari_any2reg.core.outliers import auto_exclusion, detect_outlier_frames, parse_exclude_frames
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register
from napari_any2reg.core.verdict import assess_registration


@pytest.fixture(scope="module")
def molli():
    return make_phantom("molli", seed=20711, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=8.0)


def _assess(phantom, frames):
    seq = phantom.sequence.replace(frames=frames)
    result = register(seq, engine="any2reg", device="cpu")
    out = assess_registration(frames, result.registered, result.displacement, scores=result.extras.get("correspondence"),
                              spacing_mm=seq.spacing_mm, timings_ms=seq.timings_ms,
                              labels=ndimage.binary_dilation(phantom.heart_mask, iterations=2),
                              displacement_sd_mm=result.extras.get("displacement_sd_mm"))
    return result, out


@pytest.mark.parametrize("kind", ["other_slice", "ghosting"])
def test_one_injected_bad_frame_is_flagged_and_no_other(molli, kind):
    _, out = _assess(molli, inject_bad_frame(molli, 5, kind))
    assert out["outlier_frames"]["indices"] == [5]
    assert out["verdict"]["level"] != "good"
    assert "frame 5" in out["verdict"]["reasons"][0]["text"] and out["verdict"]["reasons"][0]["frames"] == [5]


def test_well_corrected_series_has_no_outliers_and_is_good(molli):
    result, out = _assess(molli, molli.sequence.frames)
    assert out["outlier_frames"]["indices"] == []
    assert out["verdict"]["level"] == "good", out["verdict"]
    sd = result.extras["displacement_sd_mm"]
    assert sd.shape == molli.sequence.frames.shape and np.isfinite(sd).all() and sd.max() > 0


def test_motion_free_series_has_no_outliers():
    still = make_phantom("molli", seed=20712, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=0.0, rotation_deg=0.0,
                         nonrigid_mm=0.0)
    result, out = _assess(still, still.sequence.frames)
    assert out["outlier_frames"]["indices"] == [] and out["verdict"]["level"] == "good", out["verdict"]


def test_auto_exclusion_brings_t1_closer_to_truth_and_changes_nothing_without_outliers(molli):
    frames = inject_bad_frame(molli, 5, "other_slice")
    result, out = _assess(molli, frames)
    exclude, note = auto_exclusion(out["outlier_frames"]["indices"], molli.sequence.n_frames, 3)
    assert exclude == (5,) and "left out" in note
    registered = result.registered_sequence()
    myo = molli.heart_mask & (molli.t1_map > 0)  # blood pools and myocardium, the truth on the common grid
    plain = fit_t1(registered, device="cpu")
    excluded = fit_t1(registered, device="cpu", exclude_frames=exclude)
    assert excluded.frames_used == (0, 1, 2, 3, 4, 6, 7)
    error = lambda fit: np.nanmedian(np.abs(fit.t1_ms[myo] - molli.t1_map[myo]))
    assert error(excluded) < error(plain)
    assert auto_exclusion([], 8, 3)[0] == ()
    same = fit_t1(registered, device="cpu", exclude_frames=())
    np.testing.assert_array_equal(same.t1_ms, plain.t1_ms)


def test_exclusion_is_refused_when_too_few_frames_would_remain():
    exclude, note = auto_exclusion([0, 1, 2], 6, 3)
    assert exclude == () and "fewer than the 5" in note


def test_exclude_frames_spec():
    assert parse_exclude_frames("auto", 8) == "auto"
    assert parse_exclude_frames("none", 8) == ()
    assert parse_exclude_frames("7,3", 8) == (3, 7)
    with pytest.raises(ValueError, match="--exclude-frames: frame 9 is outside"):
        parse_exclude_frames("9", 8)
    with pytest.raises(ValueError, match="auto, none or frame numbers"):
        parse_exclude_frames("x", 8)


def test_too_few_frames_are_not_tested():
    report = detect_outlier_frames(np.random.default_rng(0).random((3, 16, 16)))
    assert report.frames == () and not report.tested and "too few" in report.to_json()["not_tested"]
