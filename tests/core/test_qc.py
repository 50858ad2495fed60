"""core.qc: review overlays, Jacobian/folding, QC table, flags and the run summary (headless)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_any2reg.core import qc
from napari_any2reg.core.spatial import jacobian_determinant, warp_images

SHAPE = (64, 64)
SPACING = (4.5, 4.5)


def coordinates(shape=SHAPE):
    ys, xs = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    return ys, xs


def field(n, uy, ux):
    """Stack one (H, W) component pair into (n, 2, H, W)."""
    return np.repeat(np.stack([uy, ux])[None], n, axis=0).astype(np.float32)


@pytest.fixture(scope="module")
def phantom():
    from napari_any2reg.core.phantom import make_phantom

    return make_phantom("molli", seed=0, shape=SHAPE, spacing_mm=SPACING)


# ---------------------------------------------------------------------- Jacobian and folding
def test_identity_field_has_unit_jacobian_and_no_folding():
    u = np.zeros((3, 2, *SHAPE), np.float32)
    det = jacobian_determinant(u)
    np.testing.assert_allclose(det, 1.0)
    assert not qc.folding_mask(u).any()
    np.testing.assert_allclose(qc.log_jacobian_std(det), 0.0, atol=1e-7)
    np.testing.assert_allclose(qc.jacobian_gradient_norm(det), 0.0, atol=1e-7)


@pytest.mark.parametrize("a, b", [(0.2, 0.2), (-0.3, 0.5), (0.1, -0.25)])
def test_scaling_field_has_its_constant_jacobian(a, b):
    # u = (s - 1) x per axis: the map x -> x + u is a scaling by (1 + a, 1 + b), det = (1 + a)(1 + b)
    ys, xs = coordinates()
    cy, cx = (SHAPE[0] - 1) / 2, (SHAPE[1] - 1) / 2
    u = field(2, a * (ys - cy), b * (xs - cx))
    det = jacobian_determinant(u)
    np.testing.assert_allclose(det, (1 + a) * (1 + b), rtol=1e-5)
    np.testing.assert_allclose(qc.log_jacobian_std(det), 0.0, atol=1e-5)
    np.testing.assert_allclose(qc.jacobian_gradient_norm(det), 0.0, atol=1e-5)
    assert not qc.folding_mask(u).any()


def test_fold_is_detected_at_the_right_pixels():
    # u_x falls with slope -3 over columns 20..30: d(x + u_x)/dx = -2 there, the columns fold
    ys, xs = coordinates()
    ux = -3.0 * np.clip(xs - 20, 0, 10)
    u = np.zeros((2, 2, *SHAPE), np.float32)
    u[1, 1] = ux  # frame 0 is the identity, frame 1 folds
    mask = qc.folding_mask(u)
    expected = np.zeros(SHAPE, bool)
    expected[:, 20:31] = True
    assert not mask[0].any()
    np.testing.assert_array_equal(mask[1], expected)

    table = qc.frame_qc_table(np.ones((2, *SHAPE), np.float32) + xs, np.ones((2, *SHAPE), np.float32) + xs, u,
                              scores=np.ones((2, *SHAPE), np.float32))
    assert table.rows[0].folding_percent == 0.0
    assert table.rows[1].folding_percent == pytest.approx(100 * 11 / 64)
    assert table.flagged_frames == [1]
    assert "folding" in table.rows[1].reasons[0]
    # a frame with a fold has a non-uniform Jacobian
    assert table.rows[1].jacobian_gradient > table.rows[0].jacobian_gradient == 0.0


def test_log_jacobian_std_ignores_folded_pixels():
    det = np.ones((2, 8, 8))
    det[0, :4] = np.e  # half the pixels log det = 1, half 0 -> std 0.5
    det[1, :, :4] = -1.0  # folded pixels are left out: the rest are all 1
    np.testing.assert_allclose(qc.log_jacobian_std(det), [0.5, 0.0])
    assert np.isnan(qc.log_jacobian_std(-np.ones((1, 4, 4))))[0]


# ---------------------------------------------------------------------- deformation grid / quiver
def test_grid_has_the_expected_lines_and_follows_a_translation_exactly():
    n, (h, w) = 3, SHAPE
    shifts = np.array([[1.5, -2.25], [0.0, 0.0], [-3.0, 4.0]], np.float32)
    u = np.zeros((n, 2, h, w), np.float32)
    u[:, 0] = shifts[:, 0, None, None]
    u[:, 1] = shifts[:, 1, None, None]

    grid = qc.deformation_grid(u, 8.0, spacing_mm=SPACING)
    # 64 px = 63 px between the outer pixel centres: floor(63 / 8) + 1 = 8 lines per axis
    assert grid.rows.size == 8 and grid.columns.size == 8
    assert len(grid) == n * 16 == len(grid.frame) == len(grid.magnitude_mm)
    np.testing.assert_allclose(np.diff(grid.rows), 8.0)
    assert grid.rows[0] == pytest.approx(h - 1 - grid.rows[-1])  # centred

    reference = qc.deformation_grid(np.zeros_like(u), 8.0)
    for path, still, frame in zip(grid.paths, reference.paths, grid.frame):
        assert path.shape[1] == 3
        np.testing.assert_array_equal(path[:, 0], frame)  # frame axis first, constant per path
        np.testing.assert_allclose(path[:, 1:] - still[:, 1:], np.broadcast_to(shifts[frame], path[:, 1:].shape), atol=1e-5)
    expected_mm = np.hypot(shifts[:, 0] * SPACING[0], shifts[:, 1] * SPACING[1])
    np.testing.assert_allclose(grid.magnitude_mm, expected_mm[grid.frame], rtol=1e-5)

    # an undeformed row line runs along x from border to border at constant y
    row = reference.paths[0]
    np.testing.assert_allclose(row[:, 1], reference.rows[0])
    assert row[0, 2] == 0 and row[-1, 2] == w - 1

    # spacing in mm: 18 mm / 4.5 mm = 4 px -> floor(63 / 4) + 1 = 16 lines per axis
    in_mm = qc.deformation_grid(u, 18.0, unit="mm", spacing_mm=SPACING)
    assert in_mm.lines_per_frame == 32 and len(in_mm) == n * 32


def test_grid_vertices_are_moved_by_the_field():
    ys, xs = coordinates()
    u = field(1, 0.05 * xs, np.sin(ys / 10.0))  # smooth, spatially varying
    grid = qc.deformation_grid(u, 10.0, step=1.0)
    for path, kind in zip(grid.paths, grid.orientation):
        if kind != "column" or abs(path[0, 2] - round(path[0, 2])) > 0:
            continue
        # a vertical line through integer x: vertex (y, x) -> (y + 0.05 x, x + sin(y / 10))
        x0 = round(path[0, 2])
        y = np.arange(SHAPE[0])
        np.testing.assert_allclose(path[:, 1], y + 0.05 * x0, atol=1e-4)
        np.testing.assert_allclose(path[:, 2], x0 + np.sin(y / 10.0), atol=1e-4)


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        qc.deformation_grid(np.zeros((2, 64, 64)), 8)
    with pytest.raises(ValueError, match="'px' or 'mm'"):
        qc.deformation_grid(np.zeros((1, 2, 8, 8)), 2, unit="inch")
    with pytest.raises(ValueError, match="positive"):
        qc.deformation_grid(np.zeros((1, 2, 8, 8)), 0)


def test_quiver_vectors_start_on_the_common_grid_and_point_along_u():
    u = np.zeros((2, 2, 32, 32), np.float32)
    u[1, 0], u[1, 1] = 2.0, -1.0
    quiver = qc.quiver_vectors(u, step=8, spacing_mm=(2.0, 1.0))
    per_frame = 4 * 4  # floor(31 / 8) + 1 = 4 per axis
    assert quiver.vectors.shape == (2 * per_frame, 2, 3)
    np.testing.assert_array_equal(quiver.vectors[:per_frame, 0, 0], 0)
    np.testing.assert_array_equal(quiver.vectors[per_frame:, 0, 0], 1)
    np.testing.assert_array_equal(quiver.vectors[:, 1, 0], 0)  # arrows stay on their frame
    np.testing.assert_allclose(quiver.vectors[per_frame:, 1, 1:], [[2.0, -1.0]] * per_frame, atol=1e-6)
    np.testing.assert_allclose(quiver.magnitude_mm[per_frame:], np.hypot(4.0, 1.0), rtol=1e-6)
    np.testing.assert_allclose(quiver.magnitude_mm[:per_frame], 0.0)


# ---------------------------------------------------------------------- correspondence scores
def test_scores_are_in_unit_range_and_drop_where_a_frame_is_corrupted(phantom):
    frames = phantom.sequence.frames.copy()
    u = phantom.displacement
    h, w = SHAPE
    ys, xs = coordinates()
    cy, cx = np.argwhere(phantom.heart_mask).mean(axis=0)
    artefact = (ys - cy) ** 2 + (xs - cx) ** 2 < 8**2  # a noisy blob over the heart
    k = 3
    rng = np.random.default_rng(0)
    frames[k][artefact] = np.percentile(frames, 99) * rng.random(int(artefact.sum()))

    clean = qc.correspondence_maps(phantom.sequence.frames, u)
    scores = qc.correspondence_maps(frames, u)
    for s in (clean, scores):
        assert s.shape == frames.shape and s.dtype == np.float32
        assert 0.0 <= s.min() and s.max() <= 1.0
    # the motion is a few pixels: the blob's region on the common grid is the inner part
    inner = (ys - cy) ** 2 + (xs - cx) ** 2 < 5**2
    corrupted = scores[k][inner].mean()
    assert corrupted < 0.5 * clean[k][inner].mean()
    assert corrupted < min(scores[i][inner].mean() for i in range(len(frames)) if i != k)
    # the frame's mean score (ROI) in the QC table drops too, the others barely move
    table = qc.frame_qc_table(frames, warp_images(frames, u), u, scores=scores, spacing_mm=SPACING)
    reference = qc.frame_qc_table(phantom.sequence.frames, warp_images(phantom.sequence.frames, u), u,
                                  scores=clean, spacing_mm=SPACING)
    drop = reference.column("mean_score") - table.column("mean_score")
    assert drop[k] > 0.1 and np.abs(np.delete(drop, k)).max() < 0.05


def test_stored_scores_are_used_when_they_fit(phantom):
    u = phantom.displacement
    stored = np.full(phantom.sequence.frames.shape, 0.25, np.float32)
    np.testing.assert_array_equal(qc.correspondence_maps(phantom.sequence.frames, u, stored=stored), stored)
    wrong = np.full((2, 8, 8), 0.25, np.float32)  # not this sequence: computed instead
    assert qc.correspondence_maps(phantom.sequence.frames, u, stored=wrong).shape == stored.shape


# ---------------------------------------------------------------------- QC table, flags, summary
def test_qc_table_on_the_true_motion(phantom):
    raw, u = phantom.sequence.frames, phantom.displacement
    registered = warp_images(raw, u)
    table = qc.frame_qc_table(raw, registered, u, spacing_mm=SPACING)
    n = raw.shape[0]
    assert len(table) == n and [row.frame for row in table.rows] == list(range(n))
    magnitude = np.hypot(u[:, 0] * SPACING[0], u[:, 1] * SPACING[1])
    np.testing.assert_allclose(table.column("mean_displacement_mm"), magnitude.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(table.column("max_displacement_mm"), magnitude.max(axis=(1, 2)), rtol=1e-5)
    assert np.all(table.column("folding_percent") == 0)
    assert np.all((table.column("mean_score") >= 0) & (table.column("mean_score") <= 1))
    after, before = table.column("template_correlation"), table.column("template_correlation_before")
    assert np.all(np.abs(after) <= 1 + 1e-9)
    assert after.mean() > before.mean()  # motion correction raises the agreement with the template
    assert table.flagged_frames == []  # the true motion is trustworthy under the defaults

    formatted = table.formatted()
    assert len(formatted) == n and len(formatted[0]) == len(qc.QCTable.COLUMNS) + 1
    records = table.to_records()
    assert records[0]["frame"] == 0 and records[0]["reasons"] == []


def test_flags_follow_the_thresholds(phantom):
    raw, u = phantom.sequence.frames, phantom.displacement
    table = qc.frame_qc_table(raw, warp_images(raw, u), u, spacing_mm=SPACING)
    strict = table.with_thresholds(qc.QCThresholds(max_folding_percent=None, min_mean_score=1.01,
                                                   min_template_correlation=None))
    assert strict.flagged_frames == list(range(len(table)))
    assert all(row.reasons[0].startswith("score") for row in strict.rows)
    worst = int(np.argmin(np.abs(table.column("template_correlation"))))
    limit = float(np.sort(np.abs(table.column("template_correlation")))[1])  # between the two lowest
    corr = table.with_thresholds(qc.QCThresholds(min_template_correlation=limit - 1e-9, min_mean_score=None))
    assert corr.flagged_frames == [worst]
    assert "template correlation" in corr.rows[worst].reasons[0]
    off = table.with_thresholds(qc.QCThresholds(None, None, None))
    assert off.flagged_frames == []
    # re-flagging keeps the numbers
    np.testing.assert_array_equal(off.column("mean_score"), table.column("mean_score"))


def test_a_misplaced_frame_is_flagged_by_correlation(phantom):
    raw, u = phantom.sequence.frames, phantom.displacement
    registered = warp_images(raw, u)
    k = 5
    registered[k] = np.roll(registered[k], (20, 20), axis=(0, 1))  # a grossly wrong frame
    table = qc.frame_qc_table(raw, registered, u, spacing_mm=SPACING)
    assert k in table.flagged_frames
    assert any("template correlation" in reason for reason in table.rows[k].reasons)


def test_run_summary_line(phantom):
    raw, u = phantom.sequence.frames, phantom.displacement
    registered = warp_images(raw, u)
    info = {"engine": "groupwise", "device": "cpu (1 thread)", "seconds": 1.234, "folding_percent": 0.0}
    summary = qc.run_summary(raw, registered, u, info)
    assert summary.alignment_after > summary.alignment_before
    line = str(summary)
    assert "\n" not in line
    for part in ("groupwise", "cpu (1 thread)", "1.2 s", "folding 0.00 %", "→",
                 f"{summary.alignment_before:.3f}", f"{summary.alignment_after:.3f}"):
        assert part in line


def test_review_bundles_every_map(phantom):
    raw, u = phantom.sequence.frames, phantom.displacement
    registered = warp_images(raw, u)
    steps = []
    review = qc.review_registration(raw, registered, u, spacing_mm=SPACING,
                                    progress=lambda f, m: steps.append(f))
    n, h, w = raw.shape
    for name in ("jacobian", "folding", "scores", "difference_before", "difference_after"):
        assert getattr(review, name).shape == (n, h, w), name
    assert review.template.shape == (h, w)
    assert review.folding.dtype == bool and not review.folding.any()
    assert steps[0] == 0.0 and steps[-1] == 1.0 and steps == sorted(steps)
    from napari_any2reg.core.metrics import default_roi

    roi = default_roi((h, w))
    assert np.abs(review.difference_after[:, roi]).mean() < np.abs(review.difference_before[:, roi]).mean()
    assert len(review.table) == n


# ---------------------------------------------------------------------- composites and profile
def test_template_difference_removes_gain_and_offset():
    rng = np.random.default_rng(1)
    template = rng.random(SHAPE).astype(np.float32)
    frames = np.stack([3.0 * template + 1.0, -2.0 * template + 0.5]).astype(np.float32)
    np.testing.assert_allclose(qc.template_difference(frames, template), 0.0, atol=1e-4)
    np.testing.assert_allclose(qc.template_correlation(frames, template), [1.0, -1.0], atol=1e-6)


def test_frame_templates_reproduce_a_low_rank_series():
    rng = np.random.default_rng(2)
    mean, c1, c2 = (rng.random(SHAPE) for _ in range(3))
    t = np.linspace(0.0, 1.0, 6)
    frames = (mean + np.exp(-3 * t)[:, None, None] * c1 + np.sin(4 * t)[:, None, None] * c2).astype(np.float32)
    np.testing.assert_allclose(qc.frame_templates(frames, rank=2), frames, atol=1e-5)
    np.testing.assert_allclose(qc.template_difference(frames, qc.frame_templates(frames, rank=2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(qc.frame_templates(frames, rank=0), np.broadcast_to(frames.mean(0), frames.shape), atol=1e-6)
    assert np.abs(qc.frame_templates(frames, rank=1) - frames).max() > 1e-2  # two components are needed
    with pytest.raises(ValueError, match="rank"):
        qc.frame_templates(frames, rank=6)


def test_checkerboard_and_curtain():
    a, b = np.zeros((2, 8, 8), np.float32), np.ones((2, 8, 8), np.float32)
    board = qc.checkerboard(a, b, tiles=4)
    expected = np.kron(np.array([[0, 1, 0, 1], [1, 0, 1, 0]] * 2), np.ones((2, 2)))
    np.testing.assert_array_equal(board[0], expected)
    np.testing.assert_array_equal(board[1], expected)
    assert qc.checkerboard(a[0], b[0], tiles=1).max() == 0  # one tile: all first
    with pytest.raises(ValueError, match="same shape"):
        qc.checkerboard(a, b[:, :4])
    cut = qc.curtain(a, b, position=0.25)
    np.testing.assert_array_equal(cut[:, :, :2], 0)
    np.testing.assert_array_equal(cut[:, :, 2:], 1)


def test_temporal_profile_follows_the_tissue_after_registration(phantom):
    raw, u = phantom.sequence.frames, phantom.displacement
    registered = warp_images(raw, u)
    truth = phantom.motion_free_frames  # the motion-free relaxation curve of every pixel
    errors = []
    for y, x in np.argwhere(phantom.common_labels == 2):  # myocardium, where motion hurts
        before, after = qc.temporal_profile(raw, registered, y, x)
        errors.append((np.abs(before - truth[:, y, x]).mean(), np.abs(after - truth[:, y, x]).mean()))
    errors = np.asarray(errors)
    assert errors[:, 1].mean() < 0.8 * errors[:, 0].mean()  # what is left is mostly noise
    y, x = np.argwhere(phantom.common_labels == 2)[0]
    before, after = qc.temporal_profile(raw, registered, y, x)
    np.testing.assert_allclose(before, raw[:, y, x])
    np.testing.assert_allclose(after, registered[:, y, x])
    mean_before, _ = qc.temporal_profile(raw, registered, y, x, radius=1)
    np.testing.assert_allclose(mean_before, raw[:, y - 1 : y + 2, x - 1 : x + 2].mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        qc.temporal_profile(raw, registered, 64, 0)


# ------------------------------------------------------------------ display settings (issue 11, item 12)
def test_grid_lines_and_arrows_stay_visible_on_large_images():
    assert qc.grid_line_width((64, 64)) == pytest.approx(0.35)
    assert qc.grid_line_width((320, 320)) >= 1.0  # a 320 x 320 grid does not break into dashes
    assert qc.grid_vertex_step((64, 64)) == 1.0 and qc.grid_vertex_step((320, 320)) == pytest.approx(2.5)
    # arrows of 1-3 px drawn long enough to see: the 95th percentile at 80 % of the spacing
    lengths = np.linspace(1.0, 3.0, 101)
    factor = qc.arrow_display_scale(lengths, step=6.0)
    assert np.percentile(lengths * factor, 95) == pytest.approx(4.8)
    assert qc.arrow_display_scale([20.0, 30.0], step=6.0) == 1.0  # long arrows are never shrunk
    assert qc.arrow_display_scale(np.zeros(5), step=6.0) == 1.0


def test_jacobian_limits_follow_the_data_centred_at_one():
    det = 1.0 + 0.03 * np.sin(np.linspace(0, 6, 4096)).reshape(1, 64, 64)
    lo, hi = qc.jacobian_display_limits(det)
    assert lo + hi == pytest.approx(2.0) and 0.025 < hi - 1 <= 0.0301  # not a uniform 0-2 wash
    assert qc.jacobian_display_limits(np.ones((1, 4, 4))) == pytest.approx((0.98, 1.02))  # no change: floor
    assert qc.jacobian_display_limits(np.full((1, 4, 4), 5.0)) == pytest.approx((0.0, 2.0))  # capped
    assert qc.symmetric_limit([-3.0, 1.0, np.nan], percentile=100) == 3.0


def test_qc_table_has_times_and_lengths_in_mm():
    from napari_any2reg.core.phantom import make_phantom

    phantom = make_phantom("molli", seed=2, shape=SHAPE, spacing_mm=SPACING)
    raw, u = phantom.sequence.frames, phantom.displacement
    times = phantom.sequence.timings_ms
    table = qc.frame_qc_table(raw, warp_images(raw, u), u, spacing_mm=SPACING, timings_ms=times)
    np.testing.assert_allclose(table.column("time_ms"), times)
    # isotropic 4.5 mm pixels: the gradient per mm is the gradient per pixel / 4.5
    np.testing.assert_allclose(table.column("jacobian_gradient_mm"), table.column("jacobian_gradient") / SPACING[0],
                               rtol=1e-6)
    headers = [header for _, header, _ in qc.QCTable.COLUMNS]
    assert headers[1] == "TI (ms)" and not any("px" in h for h in headers)
    assert table.formatted()[0][1] == f"{times[0]:g}"
    untimed = qc.frame_qc_table(raw, raw, u, spacing_mm=SPACING)
    assert untimed.formatted()[0][1] == "—"
