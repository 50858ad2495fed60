"""The verdict (core/verdict.py): levels from stated thresholds, reasons naming frames and numbers."""

import numpy as np

from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register
from napari_any2reg.core.spatial import warp_images
from napari_any2reg.core.verdict import assess_registration, make_verdict, verdict_line, verdict_rank
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
