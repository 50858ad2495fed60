"""AHA segments: a synthetic ring with known per-segment values, rotated and mirrored; the
segments CLI; the bullseye figure.

The truth is written as explicit angle intervals (degrees of ``atan2(y, x)`` in image
coordinates, y down), independent of the code's arithmetic: anterior RV insertion at 230
degrees (up, left of centre), inferior at 130 degrees (down-left), the RV blood pool on the
left, so the septum spans 230 -> 180 -> 130 (100 degrees) and the free wall the other 260.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_any2reg.core.tissue.segments import (
    LEVEL_SEGMENTS,
    SEGMENT_NAMES,
    assign_segments,
    parse_insertion_points,
    segment_boundaries,
    segment_statistics,
)

SIZE = 81
CENTRE = 40.0
ANTERIOR_DEG, INFERIOR_DEG = 230.0, 130.0

# (segment offset within the level, from_deg, to_deg): the angles go *down* from from_deg to
# to_deg (towards the septum first), wrapping at 0
SIX = [(1, 230, 180), (2, 180, 130), (3, 130, 65), (4, 65, -1e-9), (5, 360, 295), (0, 295, 230)]
# anteroseptal, inferoseptal, inferior, inferolateral, anterolateral, anterior (offsets 1..5, 0)
FOUR = [(1, 225, 135), (2, 135, 45), (3, 45, -45), (0, 315, 225)]  # septal, inferior, lateral, anterior


def _ring():
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    r = np.hypot(yy - CENTRE, xx - CENTRE)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[r <= 12] = 1
    labels[(r >= 14) & (r <= 22)] = 2
    labels[np.hypot(yy - CENTRE, xx - 10.0) <= 5] = 3  # RV blood pool, image left
    angle = np.degrees(np.arctan2(yy - CENTRE, xx - CENTRE)) % 360.0
    points = [(CENTRE + 22 * math.sin(math.radians(a)), CENTRE + 22 * math.cos(math.radians(a)))
              for a in (ANTERIOR_DEG, INFERIOR_DEG)]
    return labels, angle, np.array(points)


def _truth(angle, level):
    """Truth segment number per pixel from the explicit intervals."""
    first = LEVEL_SEGMENTS[level][0]
    table = SIX if level != "apical" else FOUR
    out = np.zeros(angle.shape, np.int16)
    for offset, start, stop in table:
        a = angle if stop >= 0 else np.where(angle > 180, angle - 360, angle)
        inside = (a <= start) & (a > stop)
        out[inside] = first + offset
    return out


def _transform(array_or_points, how, shape=(SIZE, SIZE)):
    h, w = shape
    if isinstance(array_or_points, np.ndarray) and array_or_points.ndim == 2 and array_or_points.shape[1] == 2 and array_or_points.shape[0] <= 2:
        y, x = array_or_points[:, 0], array_or_points[:, 1]
        if how == "rot90":  # np.rot90: a[i, j] -> (w - 1 - j, i)
            return np.stack([w - 1 - x, y], 1)
        if how == "rot270":
            return np.stack([x, h - 1 - y], 1)
        if how == "mirror":
            return np.stack([y, w - 1 - x], 1)
        if how == "mirror_rot90":
            return _transform(_transform(array_or_points, "mirror"), "rot90")
        return array_or_points
    a = array_or_points
    return {"none": a, "rot90": np.rot90(a), "rot270": np.rot90(a, 3), "mirror": np.fliplr(a),
            "mirror_rot90": np.rot90(np.fliplr(a))}[how]


@pytest.mark.parametrize("level", ["basal", "mid", "apical"])
@pytest.mark.parametrize("how", ["none", "rot90", "rot270", "mirror", "mirror_rot90"])
def test_ring_segment_values_rotated_and_mirrored(level, how):
    labels, angle, points = _ring()
    truth = _truth(angle, level) * (labels == 2)
    values = np.where(truth > 0, 100.0 + 10.0 * truth, np.nan)  # segment k has value 100 + 10 k
    values[20, 40] = np.nan  # a failed pixel: excluded and counted
    lab_t, val_t, truth_t = (_transform(a, how) for a in (labels, values, truth))
    pts_t = _transform(points, how)
    segments = assign_segments(lab_t, pts_t, level)
    assert np.mean(segments[truth_t > 0] == truth_t[truth_t > 0]) > 0.98  # only boundary pixels may differ
    rows = segment_statistics(val_t, segments, level)
    assert [r["segment"] for r in rows] == list(LEVEL_SEGMENTS[level])
    for row in rows:
        expected = 100.0 + 10.0 * row["segment"]
        assert row["median"] == expected
        assert abs(row["mean"] - expected) < 1.0  # within rounding at the boundaries
        assert row["name"] == SEGMENT_NAMES[row["segment"]]
        assert row["n_pixels"] > 20
    assert sum(r["n_excluded"] for r in rows) == 1


def test_septal_side_without_rv_label_and_with_one_point():
    labels, angle, points = _ring()
    no_rv = np.where(labels == 3, 0, labels)
    two = assign_segments(no_rv, points, "mid")  # shorter arc = septum
    with_rv = assign_segments(labels, points, "mid")
    assert np.array_equal(two, with_rv)
    one = assign_segments(labels, points[:1], "mid")  # 60 degrees each from the anterior point
    truth_one = np.zeros_like(one)
    for k, (start, stop) in enumerate([(230, 170), (170, 110), (110, 50), (50, -10), (350, 290), (290, 230)]):
        a = angle if stop >= 0 else np.where(angle > 180, angle - 360, angle)
        truth_one[(a <= start) & (a > stop) & (labels == 2)] = [8, 9, 10, 11, 12, 7][k]
    myo = labels == 2
    assert np.mean(one[myo] == truth_one[myo]) > 0.98
    with pytest.raises(ValueError, match="label 3"):
        assign_segments(no_rv, points[:1], "mid")


def test_bad_inputs_are_clear():
    labels, _, points = _ring()
    with pytest.raises(ValueError, match="Y1,X1;Y2,X2"):
        parse_insertion_points("12;4")
    with pytest.raises(ValueError, match="outside"):
        assign_segments(labels, [(500.0, 3.0)], "mid")
    with pytest.raises(ValueError, match="label 2"):
        assign_segments(np.where(labels == 2, 0, labels), points, "mid")
    with pytest.raises(ValueError, match="basal, mid, apical"):
        assign_segments(labels, points, "apex")
    segments = assign_segments(labels, points, "mid")
    with pytest.raises(ValueError, match="grid"):
        segment_statistics(np.zeros((5, 5)), segments, "mid")
    assert parse_insertion_points("1.5,2;3,4").tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_boundaries_are_on_segment_edges():
    labels, _, points = _ring()
    segments = assign_segments(labels, points, "mid")
    edges = segment_boundaries(segments)
    assert set(np.unique(edges)) <= set(range(0, 13))
    assert edges[segments == 0].max() == 0
    # a pixel deep inside a segment (mid-wall, mid-angle) is no boundary
    y, x = int(round(CENTRE + 18 * math.sin(math.radians(205)))), int(round(CENTRE + 18 * math.cos(math.radians(205))))
    assert segments[y, x] == 8 and edges[y, x] == 0


def test_bullseye_figure_fills_the_level():
    from napari_any2reg.core.tissue.bullseye import bullseye_figure, figure_rgba, segment_wedges

    wedges = segment_wedges()
    assert sorted(wedges) == list(range(1, 17))
    assert wedges[1][:2] == (60.0, 120.0) and wedges[14][:2] == (135.0, 225.0)  # anterior top, septum left
    figure = bullseye_figure({7: 900.0, 8: 1000.0, 9: None, 10: 1100.0, 11: 950.0, 12: 1050.0},
                             quantity="T1", unit="ms", level="mid")
    rgba = figure_rgba(figure)
    assert rgba.ndim == 3 and rgba.shape[2] == 4 and rgba[..., :3].std() > 10
    labels = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert "8\n1000" in labels and "9" in labels
    assert figure.axes[1].get_ylabel() == "T1 (ms)"


def test_segments_cli_writes_csv_and_bullseye(tmp_path):
    import tifffile

    from napari_any2reg.cli import main

    labels, angle, points = _ring()
    truth = _truth(angle, "mid") * (labels == 2)
    values = np.where(labels > 0, 1000.0 + 10.0 * truth, np.nan).astype(np.float32)
    tifffile.imwrite(tmp_path / "t1.tif", values)
    np.save(tmp_path / "labels.npy", labels)
    rv = ";".join(f"{y:.3f},{x:.3f}" for y, x in points)
    out = tmp_path / "out"
    code = main(["segments", str(tmp_path / "t1.tif"), "-o", str(out), "--mask", str(tmp_path / "labels.npy"),
                 "--rv-insertion", rv, "--level", "mid", "-q"])
    assert code == 0
    with open(out / "segments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["segment", "name", "mean", "sd", "median", "n_pixels", "quantity", "unit"]
    assert {(r["quantity"], r["unit"]) for r in rows} == {("value", "")}  # a plain TIFF says nothing of its unit
    assert [int(r["segment"]) for r in rows] == list(range(7, 13))
    for row in rows:
        assert float(row["median"]) == 1000.0 + 10.0 * int(row["segment"])
    assert rows[1]["name"] == "mid anteroseptal"
    import matplotlib.image

    png = matplotlib.image.imread(out / "bullseye.png")
    assert png.shape[0] > 200 and png.shape[2] in (3, 4)
    # bad input: a mask on another grid is one clear line, nothing is written
    np.save(tmp_path / "small.npy", labels[:40, :40])
    code = main(["segments", str(tmp_path / "t1.tif"), "-o", str(tmp_path / "bad"), "--mask", str(tmp_path / "small.npy"),
                 "--rv-insertion", rv, "-q"])
    assert code == 1 and not (tmp_path / "bad").exists()


def test_qc_report_shows_the_segments(tmp_path):
    """register --export report --mask --rv-insertion: the report has the bullseye and the table."""
    from napari_any2reg.cli import main
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.report import report_figure
    from napari_any2reg.io import write_tiff
    from napari_any2reg.pipeline.segments import analyse_segments

    phantom = make_phantom("molli", seed=20003, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=2.0)
    marks = phantom.common_landmarks
    points = np.array([marks["rv_insertion_anterior"], marks["rv_insertion_inferior"]])
    analysis = analyse_segments(phantom.t1_map, phantom.common_labels, points, level="apical")
    frames = phantom.sequence.frames
    figure = report_figure(frames, frames, np.zeros((8, 2, 64, 64), np.float32), flagged_frames=[],
                           segments=analysis.summary())
    texts = [t.get_text() for ax in figure.axes for table in ax.tables for t in
             [c.get_text() for c in table.get_celld().values()]]
    assert "apical septal" in texts and "segment" in texts
    assert any(t.get_text().startswith("AHA segments, apical slice: T1") for ax in figure.axes for t in [ax.title])

    write_tiff(tmp_path / "molli.tif", phantom.sequence)
    np.save(tmp_path / "labels.npy", phantom.common_labels)
    rv = ";".join(f"{y:.2f},{x:.2f}" for y, x in points)
    out = tmp_path / "out"
    code = main(["register", str(tmp_path / "molli.tif"), "-o", str(out), "--engine", "any2reg", "--export", "report",
                 "--mask", str(tmp_path / "labels.npy"), "--rv-insertion", rv, "--level", "mid", "--device", "cpu", "-q"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["segments"]["segments"]
    assert [r["segment"] for r in rows] == list(range(7, 13)) and metrics["segments"]["quantity"] == "T1"
    assert all(abs(r["median"] - 1000.0) < 150 for r in rows)  # registered myocardial T1 (1000 ms phantom)
    assert any(p.suffix == ".png" and "report" in p.name for p in out.iterdir())
    # without the report item it is refused before registering, nothing written
    assert main(["register", str(tmp_path / "molli.tif"), "-o", str(tmp_path / "no"), "--mask",
                 str(tmp_path / "labels.npy"), "--rv-insertion", rv, "-q"]) == 1
    assert not (tmp_path / "no").exists()
