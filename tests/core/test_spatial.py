"""Spatial transforms against analytic fields (DESIGN §2 pull-back convention)."""

import numpy as np
import pytest
import torch

from napari_any2reg.core import spatial


def _ramp(n=2, h=20, w=24):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return np.stack([yy * 10 + xx] * n)


def test_warp_identity_and_integer_translation_follow_pull_back_convention():
    frames = _ramp()
    zero = np.zeros((2, 2, 20, 24), np.float32)
    np.testing.assert_allclose(spatial.warp_images(frames, zero), frames, atol=1e-4)
    u = zero.copy()
    u[:, 0] = 2.0  # dy
    u[:, 1] = -3.0  # dx
    out = spatial.warp_images(frames, u)
    # registered(x) = frame(x + u): value at (y, x) is frame at (y + 2, x - 3)
    np.testing.assert_allclose(out[:, 5, 10], frames[:, 7, 7], atol=1e-3)


def test_warp_labels_nearest_keeps_label_values():
    labels = np.zeros((2, 16, 16), np.uint8)
    labels[:, 4:8, 4:8] = 2
    u = np.full((2, 2, 16, 16), 0.4, np.float32)
    out = spatial.warp_labels(labels, u)
    assert set(np.unique(out)) <= {0, 2} and out.dtype == np.uint8
    single = spatial.warp_labels(labels[0], u)
    assert single.shape == (2, 16, 16)


def test_jacobian_identity_scaling_and_fold():
    h, w = 32, 32
    zero = np.zeros((1, 2, h, w), np.float32)
    np.testing.assert_allclose(spatial.jacobian_determinant(zero), 1.0)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    scale = np.stack([0.2 * yy, -0.1 * xx])[None]  # u = diag(0.2, -0.1) x  ->  det = 1.2 * 0.9
    np.testing.assert_allclose(spatial.jacobian_determinant(scale), 1.08, rtol=1e-5)
    fold = np.zeros((1, 2, h, w), np.float32)
    fold[0, 1, :, 10:20] = -1.5 * (xx[:, 10:20] - 10)  # x -> x - 1.5 (x - 10): reverses x
    det = spatial.jacobian_determinant(fold)
    assert (det[0, :, 11:19] < 0).all() and (det[0, :, :9] > 0).all()
    assert spatial.folding_fraction(fold) == pytest.approx(((det <= 0).sum()) / det.size)


def test_compose_matches_sequential_warping():
    rng = np.random.default_rng(0)
    frames = rng.random((1, 40, 40)).astype(np.float32)
    frames = spatial.gaussian_smooth(torch.from_numpy(frames)[None], 2.0)[0].numpy()
    yy, xx = np.mgrid[:40, :40].astype(np.float32)
    a = np.stack([1.5 * np.sin(xx / 9), 1.0 * np.cos(yy / 7)])[None].astype(np.float32)
    b = np.stack([0.8 * np.cos(xx / 11), -1.2 * np.sin(yy / 8)])[None].astype(np.float32)
    two_step = spatial.warp_images(spatial.warp_images(frames, a), b)
    one_step = spatial.warp_images(frames, spatial.compose_displacements(a, b))
    inner = (slice(None), slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(one_step[inner], two_step[inner], atol=0.01)


def test_upsample_rescales_pixel_units():
    u = np.zeros((1, 2, 9, 9), np.float32)
    u[:, 0] = 1.0
    up = spatial.upsample_displacement(u, (17, 17))
    np.testing.assert_allclose(up[:, 0], 2.0, atol=1e-6)
    np.testing.assert_allclose(up[:, 1], 0.0, atol=1e-6)


def test_inverse_and_point_mapping_on_smooth_field():
    h = w = 48
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    u = np.stack([2.0 * np.sin(xx / 10) + 1.0, 1.5 * np.cos(yy / 9) - 0.5])[None].astype(np.float32)
    v = spatial.invert_displacement(u)
    # x + u(x) = y  <=>  y + v(y) = x: composing both gives the identity
    composed = spatial.compose_displacements(u, v)
    np.testing.assert_allclose(composed[:, :, 6:-6, 6:-6], 0.0, atol=0.05)
    common = np.array([[20.0, 20.0], [30.5, 12.25]], np.float32)
    seen = common + np.stack([spatial.sample_displacement_at_points(torch.from_numpy(u[0]), torch.from_numpy(common)).numpy()])[0]
    back = spatial.map_points_to_common(u, 0, seen)
    np.testing.assert_allclose(back, common, atol=0.01)


def test_pixel_normalised_round_trip():
    d = torch.randn(3, 2, 7, 11)
    np.testing.assert_allclose(
        spatial.normalised_to_pixel(spatial.pixel_to_normalised(d, (7, 11)), (7, 11)).numpy(), d.numpy(), atol=1e-5
    )


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="do not match"):
        spatial.warp_images(np.zeros((2, 8, 8)), np.zeros((3, 2, 8, 8)))
