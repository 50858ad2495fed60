"""The QC report's verdict (core/report.py): the box fits the page, the outlier frames are in
the frame strip and the "flagged frames" row is the verdict's outlier frames (issue 27)."""

import numpy as np
import pytest

from napari_any2reg.core.phantom.bad_frames import inject_bad_frame
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.report import montage_frames, report_bytes, report_figure, report_rows
from napari_any2reg.core.qc.verdict import assess_registration, make_verdict

BAD = 5


@pytest.fixture(scope="module")
def series():
    """A motion-free 64x64 MOLLI phantom (8 frames) with frame 5 from another slice position,
    "registered" by the identity (the outlier test needs no engine)."""
    phantom = make_phantom("molli", seed=20712, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=0.0,
                           rotation_deg=0.0, nonrigid_mm=0.0)
    frames = inject_bad_frame(phantom, BAD, "other_slice")
    field = np.zeros((frames.shape[0], 2) + frames.shape[1:], np.float32)
    out = assess_registration(frames, frames, field, spacing_mm=phantom.sequence.spacing_mm,
                              timings_ms=phantom.sequence.timings_ms)
    out.pop("_verdict_inputs")
    return phantom, frames, field, out


def _verdict_text(figure):
    return next(t for t in figure.texts if t.get_gid() == "verdict")


def _inside(box, page):
    return box.x0 >= page.x0 and box.x1 <= page.x1 and box.y0 >= page.y0 and box.y1 <= page.y1


@pytest.mark.parametrize("long", [False, True])
def test_verdict_box_fits_the_page_and_outlier_frames_are_shown(series, long):
    phantom, frames, field, out = series
    assert out["outlier_frames"]["indices"] == [BAD]
    assert BAD not in montage_frames(frames.shape[0], 6)  # the even spread alone would miss it
    verdict = out["verdict"]
    if long:  # many reasons: the box grows downwards, still inside the page
        verdict = make_verdict(n_frames=8, folding_percent=0.5, folding_per_frame=[0, 0, 0, 4.0, 0, 0, 0, 0],
                               alignment_before=0.9, alignment_after=0.8, outliers=out["outlier_frames"],
                               uncertainty={"available": True, "p95_mm": 4.0, "worst_frame": 2, "region": "heart box",
                                            "p95_mm_per_frame": [0, 0, 4.5] + [0] * 5},
                               r2_after=0.6, r2_region="the LV myocardium (mask label 2)", myocardium=True)
        assert len(verdict["reasons"]) == 5
    info = {"engine": "any2reg", "device": "cpu", **out, "verdict": verdict}
    figure = report_figure(frames, frames, field, spacing_mm=phantom.sequence.spacing_mm, name="molli", kind="molli",
                           timings_ms=phantom.sequence.timings_ms, info=info, flagged_frames=[])
    assert report_bytes(figure, "png").startswith(b"\x89PNG")  # attaches the Agg canvas the report is written with
    figure.canvas.draw()  # at the figure's own dpi: the extents below are in its pixels
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    text = _verdict_text(figure)
    assert text.get_text().startswith(f"verdict — {verdict['level']}:")
    assert _inside(text.get_window_extent(renderer), page)
    patch = text.get_bbox_patch()  # placed around the text by the draw
    assert _inside(patch.get_window_extent(renderer), page)
    # every word of the verdict is drawn (wrapped, not cut off)
    assert text.get_text().replace("\n", " ").split() == f"verdict — {verdict_line_of(verdict)}".split()
    # the box sits above the frame strip, not over it
    top_axes = max(ax.get_window_extent(renderer).y1 for ax in figure.axes)
    assert patch.get_window_extent(renderer).y0 > top_axes
    # the outlier frame is in the strip (raw and registered), marked
    titles = [ax.get_title() for ax in figure.axes]
    marked = [t for t in titles if t.startswith(f"frame {BAD},")]
    assert len(marked) == 2 and all("outlier" in t for t in marked), titles
    assert not any("outlier" in t for t in titles if not t.startswith(f"frame {BAD},"))


def verdict_line_of(verdict):
    from napari_any2reg.core.qc.verdict import verdict_line

    return verdict_line(verdict)


def test_flagged_frames_row_is_the_verdicts_outlier_frames(series):
    _, _, _, out = series
    rows = {name: after for name, _, after in report_rows(info=out, flagged_frames=[2])}
    assert rows["flagged frames (outliers, see verdict)"] == str(BAD)
    assert rows["frames past the per-frame QC thresholds"] == "2"
    same = {name: after for name, _, after in report_rows(info=out, flagged_frames=[BAD])}
    assert same["flagged frames (outliers, see verdict)"] == str(BAD)
    assert "frames past the per-frame QC thresholds" not in same
    # without a verdict (a dock's export) the QC table's flags are shown as before
    assert report_rows(info={}, flagged_frames=[1, 3]) == [("flagged frames", "", "1, 3")]


def test_montage_keeps_requested_frames_and_its_length():
    assert montage_frames(8, 6, include=[5]) == [0, 1, 3, 5, 6, 7]
    assert montage_frames(20, 4, include=[2, 9, 15]) == [2, 9, 15, 19]
    assert montage_frames(20, 3, include=range(10)) == [0, 1, 2]
    assert montage_frames(5, 6, include=[4]) == list(range(5))
