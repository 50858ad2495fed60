import numpy as np
import torch

from napari_any2reg.core import losses


def _blobs(n=6, size=32, shift=0, seed=0):
    yy, xx = np.mgrid[:size, :size]
    frames = []
    rng = np.random.default_rng(seed)
    for i in range(n):
        s = shift * (i - n / 2)
        disc = ((yy - size / 2 - s) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2).astype(np.float32)
        contrast = np.abs(1 - 1.9 * np.exp(-(i + 1) / 3))  # relaxation-like, with a null
        frames.append(disc * contrast + 0.2 + 0.01 * rng.standard_normal((size, size)))
    return torch.tensor(np.array(frames), dtype=torch.float32)


def test_pca_weights_of_many_frames_by_power_iteration_equal_the_direct_eigenvector():
    """Above DIRECT_EIGENVECTOR_MAX_FRAMES (inference only) the leading eigenvector comes from
    power iteration on the features, linear in N; it must be the same vector."""
    g = torch.Generator().manual_seed(3)
    shared = torch.rand(1, 4, 12, 12, generator=g)
    scale = torch.rand(150, 1, 1, 1, generator=g) + 0.2
    x = shared * scale + 0.3 * torch.rand(150, 4, 12, 12, generator=g)  # correlated frames
    x[7] = torch.rand(4, 12, 12, generator=g)  # one outlier frame gets a smaller weight
    direct = losses.pca_weights(x)  # gradients enabled: the N x N eigh path
    with torch.no_grad():
        iterated = losses.pca_weights(x)
        torch.testing.assert_close(iterated, direct, atol=1e-6, rtol=1e-4)
        perm = torch.randperm(150, generator=g)
        torch.testing.assert_close(losses.pca_weights(x[perm]), iterated[perm], atol=1e-7, rtol=1e-5)
    assert iterated[7] < iterated.median()


def test_pca_weights_are_positive_normalised_and_permutation_invariant():
    x = _blobs()
    a = losses.pca_weights(x)
    assert torch.all(a >= 0) and abs(float(a.sum()) - 1) < 1e-5
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(losses.pca_weights(x[perm]), a[perm], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses.pca_weights(-x), a, atol=1e-6, rtol=1e-5)  # sign-fixed


def test_cte_and_pca2_prefer_aligned_frames_and_are_differentiable():
    aligned, misaligned = _blobs(shift=0), _blobs(shift=2)
    for fn in (losses.conditional_template_entropy, losses.pca_residual_variance):
        assert fn(aligned) < fn(misaligned)
    x = misaligned.clone().requires_grad_(True)
    losses.conditional_template_entropy(x).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_cte_is_contrast_inversion_invariant():
    x = _blobs()
    flipped = x.clone()
    flipped[2] = 1.0 - flipped[2]
    assert abs(float(losses.conditional_template_entropy(x)) - float(losses.conditional_template_entropy(flipped))) < 0.1


def test_joint_histogram_is_a_distribution():
    x = torch.rand(3, 500)
    hist = losses.joint_histograms(x, torch.rand(500), bins=16)
    torch.testing.assert_close(hist.sum(dim=(1, 2)), torch.ones(3))
    assert torch.all(hist >= 0)


def test_local_ncc_and_regularisers():
    x = _blobs()
    assert float(losses.local_ncc(x, x)) > 0.95
    assert float(losses.local_ncc(x, -x)) < -0.95
    u = torch.zeros(4, 2, 16, 16)
    assert float(losses.gradient_regulariser(u)) == 0.0
    u[:, 0] = 3.0  # a common translation: smooth, but the group drifts
    assert float(losses.gradient_regulariser(u)) == 0.0
    assert float(losses.group_motion_penalty(u)) == 9.0
    u[:2, 0] = -3.0
    assert float(losses.group_motion_penalty(u)) == 0.0
