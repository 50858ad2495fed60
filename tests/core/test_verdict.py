"""The verdict (core/qc/verdict.py): levels from stated thresholds, reasons naming frames and numbers."""

import numpy as np

from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register
from napari_any2reg.core.spatial import warp_images
from napari_any2reg.core.qc.verdict import assess_registration, make_verdict, verdict_line, verdict_rank
from napari_any2reg.pipeline.summary import sort_for_review


def test_levels_follow_the_thresholds():
    good = make_verdict(n_frames=8, folding_percent=0.0, alignment_before=0.8, alignment_after=0.9)
    assert good["level"] == "good" and verdict_line(good).startswith("good: folding 0.00 %")
    check = make_verdict(n_frames=8, folding_percent=0.5, folding_per_frame=[0, 0, 0, 4.0, 0, 0, 0, 0])
    assert check["level"] == "check" and check["reasons"][0]["frames"] == [3] and "0.50 %" in check["reasons"][0]["text"]
    poor = make_verdict(n_frames=8, folding_percent=0.0, alignment_before=0.9, alignment_after=0.8,
                        uncertainty={"available": True, "p95_mm": 4.0, "worst_frame": 2, "p95_mm_per_frame": [0, 0, 4.5] + [0] * 5})
    assert poor["level"] == "poor" and len(poor["reasons"]) == 2
    r2 = make_verdict(n_frames=8, folding_percent=0.0, r2_after=0.85, r2_region="the LV myocardium", myocardium=True)
    assert r2["level"] == "check" and "0.850" in r2["reasons"][0]["text"]


def test_a_broken_engine_setting_is_not_good():
    """A field scaled up threefold (a deliberately broken setting) leaves the frames misaligned."""
    phantom = make_phantom("molli", seed=20713, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=10.0)
    result = register(phantom.sequence, engine="any2reg", device="cpu")
    broken = 3.0 * result.displacement
    registered = warp_images(phantom.sequence.frames, broken)
    out = assess_registration(phantom.sequence.frames, registered, broken, spacing_mm=phantom.sequence.spacing_mm,
                              timings_ms=phantom.sequence.timings_ms)
    assert out["verdict"]["level"] != "good", out["verdict"]
    fine = assess_registration(phantom.sequence.frames, result.registered, result.displacement,
                               scores=result.extras["correspondence"], spacing_mm=phantom.sequence.spacing_mm,
                               timings_ms=phantom.sequence.timings_ms, displacement_sd_mm=result.extras["displacement_sd_mm"])
    assert fine["verdict"]["level"] == "good", fine["verdict"]


def test_motion_left_uncorrected_is_not_good():
    """An engine that returns the identity on a moved series (what untrained weights give: the
    alignment unchanged, nothing folded, no frame unlike the others) is "poor" on the motion it
    left, naming the frame with the largest shift; on the same series registered by the shipped
    network and on a motion-free series the check passes (a shift gains nothing)."""
    phantom = make_phantom("molli", seed=20901, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=8.0)
    seq = phantom.sequence
    identity = np.zeros((seq.n_frames, 2) + seq.frames.shape[1:], np.float32)
    left = assess_registration(seq.frames, seq.frames, identity, spacing_mm=seq.spacing_mm, timings_ms=seq.timings_ms)
    motion = left["residual_motion"]
    assert motion["gain"] > 0.05 and motion["unit"] == "mm", motion
    true_shift = np.hypot(*phantom.displacement.mean(axis=(2, 3)).T * 4.5)
    assert abs(motion["shift_per_frame"][motion["worst_frame"]] - true_shift.max()) < 2.0, (motion, true_shift)
    assert left["verdict"]["level"] == "poor", left["verdict"]
    reason = left["verdict"]["reasons"][0]
    assert reason["text"].startswith("motion left after registration") and motion["worst_frame"] in reason["frames"]

    result = register(seq, engine="any2reg", device="cpu")
    fine = assess_registration(seq.frames, result.registered, result.displacement, spacing_mm=seq.spacing_mm,
                               timings_ms=seq.timings_ms)
    assert fine["residual_motion"]["gain"] < 0.02 and fine["verdict"]["level"] == "good", fine["verdict"]

    still = make_phantom("molli", seed=20902, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=0.0,
                         rotation_deg=0.0, nonrigid_mm=0.0).sequence
    quiet = assess_registration(still.frames, still.frames, identity[: still.n_frames], timings_ms=still.timings_ms)
    assert quiet["residual_motion"]["unit"] == "px" and quiet["residual_motion"]["gain"] < 0.02
    assert not any(r["text"].startswith("motion left") for r in quiet["verdict"]["reasons"]), quiet["verdict"]


def test_residual_motion_levels_follow_the_thresholds():
    base = {"alignment_registered": 0.9, "shift_per_frame": [0.2, 3.0, 0.1], "unit": "mm", "worst_frame": 1, "frames": [1]}
    levels = [make_verdict(n_frames=3, folding_percent=0.0, residual_motion=dict(base, gain=g, alignment_shifted=0.9 + g))
              for g in (0.01, 0.03, 0.08)]
    assert [v["level"] for v in levels] == ["good", "check", "poor"]
    assert "3.0 mm (frame 1)" in levels[1]["reasons"][0]["text"] and levels[2]["reasons"][0]["frames"] == [1]


def test_displacement_sd_is_read_against_the_pixel_size():
    """An SD p95 of 1.4 mm is "check" at 3 mm pixels (the 1 mm bound) but not at 12 mm pixels, where
    it is a ninth of a pixel (the bound is a third of a pixel there: 4 mm); 13 mm is "poor" at 12 mm
    (over one pixel), and without a known spacing the mm bounds apply."""
    def level(p95, pixel_mm):
        sd = {"available": True, "p95_mm": p95, "worst_frame": 0, "p95_mm_per_frame": [p95], "pixel_mm": pixel_mm}
        return make_verdict(n_frames=4, folding_percent=0.0, uncertainty=sd)

    assert level(1.4, 3.0)["level"] == "check" and "> 1 mm" in level(1.4, 3.0)["reasons"][0]["text"]
    assert level(1.4, 12.0)["level"] == "good"
    assert level(5.0, 12.0)["level"] == "check" and "> 4 mm" in level(5.0, 12.0)["reasons"][0]["text"]
    assert level(13.0, 12.0)["level"] == "poor"
    assert level(1.4, None)["level"] == "check" and level(3.5, None)["level"] == "poor"


def test_classical_engines_say_they_have_no_uncertainty():
    phantom = make_phantom("molli", seed=20714, shape=(48, 48), spacing_mm=(6.0, 6.0), motion_mm=4.0)
    result = register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=0.3)
    assert "displacement_sd_mm" not in result.extras
    out = assess_registration(phantom.sequence.frames, result.registered, result.displacement,
                              uncertainty_note="none: the groupwise engine has no spread")
    assert out["displacement_sd"] == {"available": False, "why": "none: the groupwise engine has no spread"}


def test_summary_rows_are_sorted_for_review():
    rows = [{"series": "a", "status": "ok", "verdict": "good"}, {"series": "b", "status": "ok", "verdict": "poor"},
            {"series": "c", "status": "failed"}, {"series": "d", "status": "ok", "verdict": "check"}]
    assert [r["series"] for r in sort_for_review(rows)] == ["c", "b", "d", "a"]
    assert verdict_rank("poor") < verdict_rank("check") < verdict_rank("good")


def test_displacement_sd_is_read_in_the_myocardium_when_the_mask_has_it():
    """A blood pool with a large SD (5 mm) and a myocardium with a small one (0.2 mm): with label 2
    the 95th percentile is the myocardium's and the verdict is good; with the labels merged (no
    label 2) it is the heart mask's, and without a mask the central box's, both poor."""
    phantom = make_phantom("molli", seed=20712, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=0.0,
                           rotation_deg=0.0, nonrigid_mm=0.0)
    frames = phantom.sequence.frames
    labels = np.asarray(phantom.common_labels)
    assert {1, 2} <= set(np.unique(labels))
    sd = np.full(frames.shape, 0.05, np.float32)
    sd[:, labels == 1] = 5.0
    sd[:, labels == 2] = 0.2
    field = np.zeros((frames.shape[0], 2) + frames.shape[1:], np.float32)

    def assess(mask):
        return assess_registration(frames, frames, field, spacing_mm=phantom.sequence.spacing_mm,
                                   timings_ms=phantom.sequence.timings_ms, labels=mask, displacement_sd_mm=sd)

    myo = assess(labels)
    assert myo["displacement_sd"]["region"] == "LV myocardium (label 2)"
    assert myo["displacement_sd"]["p95_mm"] == 0.2 and myo["verdict"]["level"] == "good", myo["verdict"]
    stack = assess(np.repeat(labels[None], frames.shape[0], axis=0))  # a label stack: any frame
    assert stack["displacement_sd"]["region"] == "LV myocardium (label 2)" and stack["displacement_sd"]["p95_mm"] == 0.2
    merged = assess((labels != 0).astype(np.int32))
    assert merged["displacement_sd"]["region"] == "heart mask (all labels)"
    assert merged["displacement_sd"]["p95_mm"] == 5.0 and merged["verdict"]["level"] == "poor"
    assert "in the heart mask (all labels)" in merged["verdict"]["reasons"][0]["text"]
    box = assess(None)
    assert box["displacement_sd"]["region"].startswith("heart box") and box["verdict"]["level"] == "poor"
