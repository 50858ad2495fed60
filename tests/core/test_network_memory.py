"""Memory-lean inference (issue 22, N up to 500): chunked, in-place passes give the same field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_any2reg.core.losses import DIRECT_EIGENVECTOR_MAX_FRAMES, pca_weights
from napari_any2reg.core.network import Any2RegNet


def test_power_iteration_weights_equal_the_direct_ones_without_a_normalised_copy():
    rng = np.random.default_rng(0)
    n = DIRECT_EIGENVECTOR_MAX_FRAMES + 6
    base = rng.random((1, 3, 12, 12))
    features = torch.from_numpy((base + 0.3 * rng.random((n, 3, 12, 12))).astype(np.float32))
    with torch.no_grad():
        lean = pca_weights(features)  # power iteration on the raw rows
    with torch.enable_grad():
        direct = pca_weights(features)  # eigh of the normalised correlation matrix
    assert torch.allclose(lean, direct, atol=1e-6) and abs(float(lean.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("use_auxiliary", [False, True])
def test_chunked_in_place_forward_equals_the_whole_set_forward(use_auxiliary):
    torch.manual_seed(0)
    net = Any2RegNet(scales=3, base_channels=4, use_auxiliary=use_auxiliary).eval()
    x = torch.rand(23, 1, 40, 36)
    with torch.no_grad():
        net.inference_chunk = None
        whole = net(x)
        net.inference_chunk = 5  # uneven last chunk
        chunked = net(x)
    assert torch.allclose(whole, chunked, atol=1e-5)
    # the input is never overwritten by the in-place passes
    assert x.shape == (23, 1, 40, 36) and torch.isfinite(x).all()
    y = x.clone()
    with torch.no_grad():
        net(x)
    assert torch.equal(x, y)
