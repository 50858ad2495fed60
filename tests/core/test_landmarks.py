"""core.landmarks: landmark tables and CSV, TRE before/after, propagation, all-pair Dice.

Small (64x64) phantoms whose true motion is known; one quick groupwise registration per module.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_any2reg.core import landmarks as lm
from napari_any2reg.core.landmarks import LandmarkError, LandmarkTable
from napari_any2reg.core.metrics import dice
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.spatial import gaussian_smooth, sample_displacement_at_points
from napari_any2reg.io import landmarks as lmio

SPACING = (4.5, 4.5)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("molli", seed=0, shape=(64, 64), spacing_mm=SPACING, motion_mm=10)


@pytest.fixture(scope="module")
def registration(phantom):
    from napari_any2reg.core.registration import register

    torch.manual_seed(0)
    return register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=1.0)


def smooth_field(n=5, shape=(48, 56), amplitude=3.0, seed=0):
    """Random smooth fold-free pull-back fields (pixels)."""
    rng = np.random.default_rng(seed)
    noise = torch.as_tensor(rng.standard_normal((n, 2) + shape), dtype=torch.float32)
    field = gaussian_smooth(noise, 6.0)
    field = field / field.abs().amax() * amplitude
    return field.numpy().astype(np.float32)


def mean_pairwise_mm(points, spacing):
    pairs = list(itertools.combinations(range(len(points)), 2))
    return np.mean([np.linalg.norm((points[i] - points[j]) * np.asarray(spacing)) for i, j in pairs])


# ---------------------------------------------------------------------- TRE
def test_tre_with_true_field_is_zero_and_without_registration_is_the_motion(phantom):
    table = LandmarkTable.from_positions(phantom.landmarks, SPACING)
    report = lm.tre_before_after(table, phantom.displacement)
    assert set(report.landmark_names) == set(phantom.landmarks)
    for name, points in phantom.landmarks.items():
        assert report.after[name] < 0.01  # mm
        assert report.before[name] == pytest.approx(mean_pairwise_mm(points, SPACING), rel=1e-6)
        assert report.before[name] > 2.0  # the phantom moves
        assert report.n_frames[name] == phantom.sequence.n_frames
    assert report.after["overall"] < 0.01
    # a zero field changes nothing: "after" equals "before"
    zero = lm.tre_before_after(table, np.zeros_like(phantom.displacement))
    for name in report.landmark_names:
        assert zero.after[name] == pytest.approx(zero.before[name], abs=1e-5)


def test_tre_improves_after_registration_and_skips_missing_frames(phantom, registration):
    positions = {name: p.astype(np.float64).copy() for name, p in phantom.landmarks.items()}
    positions["lv_centre"][2] = np.nan  # not placed on frame 2
    report = lm.tre_before_after(positions, registration.displacement, spacing_mm=SPACING)
    assert report.n_frames["lv_centre"] == phantom.sequence.n_frames - 1
    assert report.after["overall"] < 0.8 * report.before["overall"]
    rows = report.rows()
    assert [r["landmark"] for r in rows][-1] == "overall" and rows[-1]["n_frames"] is None
    text = report.csv_text().splitlines()
    assert text[0] == "landmark,n_frames,tre_before_mm,tre_after_mm" and len(text) == 1 + len(rows)
    assert report.to_dict()["after_mm"]["overall"] == pytest.approx(report.after["overall"])
    assert "before (mm)" in report.lines()[0]


def test_tre_errors_name_the_problem(phantom):
    table = LandmarkTable.from_positions(phantom.landmarks, SPACING)
    with pytest.raises(LandmarkError, match="frame 7 but the sequence has 4"):
        lm.tre_before_after(table, phantom.displacement[:4])
    with pytest.raises(LandmarkError, match="no landmarks"):
        lm.tre_before_after(table.subset(np.zeros(len(table), bool)), phantom.displacement)
    doubled = LandmarkTable(np.append(table.frames, 0), np.append(table.names, table.names[0]),
                            np.vstack([table.points, [[1.0, 1.0]]]), SPACING)
    with pytest.raises(LandmarkError, match="more than once on frame 0"):
        lm.tre_before_after(doubled, phantom.displacement)
    # a re-click replaces the earlier point
    assert len(doubled.keep_last()) == len(table)
    np.testing.assert_array_equal(doubled.keep_last().positions()[table.names[0]][0], [1.0, 1.0])


# ---------------------------------------------------------------------- inverse mapping and propagation
def test_inverse_mapping_is_accurate_to_a_tenth_of_a_pixel_on_smooth_fields():
    u = smooth_field()
    rng = np.random.default_rng(1)
    common = rng.uniform([8, 8], [40, 48], size=(12, 2)).astype(np.float32)
    seen = np.stack([(torch.as_tensor(common) + sample_displacement_at_points(torch.as_tensor(u[i]), torch.as_tensor(common))).numpy()
                     for i in range(len(u))])  # (N, P, 2): where each common point is seen in frame i
    frames = np.repeat(np.arange(len(u)), len(common))
    names = np.tile([f"p{k}" for k in range(len(common))], len(u))
    table = LandmarkTable(frames, names, seen.reshape(-1, 2))
    mapped = lm.landmarks_to_common(table, u)
    errors = np.abs(mapped.points - np.tile(common, (len(u), 1)))
    assert errors.max() < 0.1
    # propagation from one frame reaches every other frame's true position
    for k in (0, 3):
        moved = lm.propagate_points(seen[k], k, u)
        assert moved.shape == seen.shape
        assert np.abs(moved - seen).max() < 0.1
        np.testing.assert_array_equal(moved[k], seen[k])


def test_propagate_landmarks_from_one_frame_matches_the_truth(phantom):
    table = LandmarkTable.from_positions(phantom.landmarks, SPACING)
    propagated = lm.propagate_landmarks(table, 3, phantom.displacement)
    assert len(propagated) == len(table) and propagated.spacing_mm == SPACING
    for name, truth in phantom.landmarks.items():
        assert np.abs(propagated.positions()[name] - truth).max() < 0.1
    with pytest.raises(LandmarkError, match="no landmark is placed on frame 2"):
        lm.propagate_landmarks(table.subset(table.frames != 2), 2, phantom.displacement)
    with pytest.raises(LandmarkError, match="outside 0..7"):
        lm.propagate_points([[1.0, 2.0]], 8, phantom.displacement)


def test_propagated_labels_match_the_phantom_better_than_a_copied_mask(phantom, registration):
    k = 3
    n = phantom.sequence.n_frames
    source = phantom.labels[k].copy()
    for field, margin in ((phantom.displacement, 0.05), (registration.displacement, 0.02)):
        propagated = lm.propagate_labels(phantom.labels[k], k, field)
        assert propagated.shape == phantom.labels.shape and propagated.dtype == phantom.labels.dtype
        np.testing.assert_array_equal(propagated[k], phantom.labels[k])
        for value in (1, 2, 3):
            moved = np.mean([dice(propagated[i] == value, phantom.labels[i] == value) for i in range(n) if i != k])
            copied = np.mean([dice(source == value, phantom.labels[i] == value) for i in range(n) if i != k])
            assert moved > copied + margin, (value, moved, copied)
    np.testing.assert_array_equal(phantom.labels[k], source)  # input untouched
    nearest = lm.propagate_labels(phantom.labels, k, phantom.displacement, method="nearest")  # (N, H, W) input: frame k used
    assert set(np.unique(nearest)) <= {0, 1, 2, 3}
    w = lm.label_field_from_frame(phantom.displacement, k)
    assert w.shape == phantom.displacement.shape and not w[k].any()
    with pytest.raises(LandmarkError, match="on the image grid"):
        lm.propagate_labels(np.zeros((10, 10), np.int32), 0, phantom.displacement)
    with pytest.raises(ValueError, match="linear' or 'nearest"):
        lm.propagate_labels(phantom.labels[k], k, phantom.displacement, method="cubic")


# ---------------------------------------------------------------------- Dice
def test_all_pair_dice_improves_after_registration(phantom, registration):
    truth = lm.dice_before_after(phantom.labels, phantom.displacement)
    estimated = lm.dice_before_after(phantom.labels, registration.displacement)
    assert list(truth.before) == [1, 2, 3]
    assert truth.names == {1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool"}
    for value in (1, 2, 3):
        assert truth.after[value] > truth.before[value] + 0.03
        assert estimated.after[value] > estimated.before[value] + 0.02
        assert truth.after[value] > 0.85
    only_lv = lm.dice_before_after(phantom.labels, None, label_values=[1])
    assert list(only_lv.before) == [1] and only_lv.after == {}
    csv_lines = estimated.csv_text().splitlines()
    assert csv_lines[0] == "label,name,dice_before,dice_after" and len(csv_lines) == 4
    with pytest.raises(LandmarkError, match=r"\(N, H, W\)"):
        lm.dice_before_after(phantom.labels[0], phantom.displacement)
    with pytest.raises(LandmarkError, match="empty"):
        lm.dice_before_after(np.zeros_like(phantom.labels), phantom.displacement)


# ---------------------------------------------------------------------- tables and CSV
def test_csv_round_trip_is_exact(tmp_path, phantom):
    table = LandmarkTable.from_positions(phantom.landmarks, (2.25, 1.5))
    renamed = LandmarkTable(table.frames, [f"{n}, v2" for n in table.names], table.points, table.spacing_mm)  # commas survive
    path = lmio.write_landmarks_csv(tmp_path / "landmarks.csv", renamed)
    header = path.read_text().splitlines()[0]
    assert header == "frame,name,y,x,y_mm,x_mm"
    back = lmio.read_landmarks_csv(path)
    np.testing.assert_array_equal(back.frames, renamed.frames)
    assert back.names.tolist() == renamed.names.tolist()
    np.testing.assert_array_equal(back.points, renamed.points)
    assert back.spacing_mm == pytest.approx((2.25, 1.5)) and "mm columns" in back.spacing_source
    assert lmio.read_landmarks_csv(path, spacing_mm=(1.0, 1.0)).spacing_mm == (1.0, 1.0)
    with pytest.raises(FileExistsError):
        lmio.write_landmarks_csv(path, renamed)
    lmio.write_landmarks_csv(path, table, overwrite=True)
    assert lmio.read_landmarks_csv(path).names.tolist() == table.names.tolist()
    # the pixel-only form (frame,name,y,x) reads with a default spacing, flagged as such
    minimal = lmio.read_landmarks_csv("m.csv", text="frame,name,y,x\n0,a,1.5,2\n1,a,2.5,3\n")
    assert minimal.spacing_source == "default" and minimal.spacing_mm == (1.0, 1.0)
    np.testing.assert_array_equal(minimal.positions()["a"], [[1.5, 2.0], [2.5, 3.0]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("frame,name,y\n0,a,1\n", "missing column"),
        ("frame,name,y,x\n", "no points"),
        ("frame,name,y,x\n1.5,a,1,2\n", "line 2: frame"),
        ("frame,name,y,x\n-1,a,1,2\n", "frames are whole numbers from 0"),
        ("frame,name,y,x\n0,a,one,2\n", "y = 'one' is not a number"),
        ("frame,name,y,x\n0,a,nan,2\n", "not a finite number"),
        ("frame,name,y,x\n0, ,1,2\n", "name is empty"),
        ("frame,name,y,x\n0,a,1,2\n0,a,3,4\n", "more than once on frame 0"),
        ("frame,name,y,x\n0,a,1\n", "3 values for 4 columns"),
        ("frame,name,y,x,y_mm,x_mm\n0,a,2,2,4,4\n1,a,4,4,10,8\n", "y_mm column"),
    ],
)
def test_bad_csvs_are_rejected_with_the_line_and_the_fix(text, message):
    with pytest.raises(LandmarkError, match=message):
        lmio.read_landmarks_csv("bad.csv", text=text)


def test_missing_csv_and_table_validation(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such landmark CSV"):
        lmio.read_landmarks_csv(tmp_path / "nope.csv")
    with pytest.raises(LandmarkError, match="one frame, name"):
        LandmarkTable([0, 1], ["a"], [[1, 2], [3, 4]])
    with pytest.raises(LandmarkError, match="finite"):
        LandmarkTable([0], ["a"], [[np.nan, 2]])
    with pytest.raises(LandmarkError, match="spacing_mm"):
        LandmarkTable([0], ["a"], [[1, 2]], spacing_mm=(0, 1))
    points = np.array([[1.0, 2.0], [3.0, 4.0]])
    table = LandmarkTable([1, 0], ["b", "a"], points)
    points[0, 0] = 99.0  # the table keeps its own copy
    assert table.points[0, 0] == 1.0
    assert not table.points.flags.writeable
    assert table.sorted().frames.tolist() == [0, 1]
    assert table.landmark_names == ("b", "a") and table.n_frames == 2
    positions = table.positions(3)
    assert np.isnan(positions["a"][1]).all() and np.isnan(positions["b"][2]).all()
    with pytest.raises(LandmarkError, match="frame 1 but the sequence has 1 frames"):
        table.positions(1)
