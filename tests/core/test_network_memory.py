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


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_do_no_harm_objective_in_chunks_equals_the_whole_set_loss(chunk):
    """The engine's sequence objective makes the MIND descriptors chunk by chunk (never the whole
    set's, the peak memory at N = 500): the same value as the loss on held descriptors."""
    from napari_any2reg.core.engines._transform import border_mask
    from napari_any2reg.core.engines.any2reg.refinement import _SequenceObjective, sequence_loss
    from napari_any2reg.core.network import mind_descriptors

    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(13, 40, 52, generator=generator)
    field = torch.randn(13, 2, 40, 52, generator=generator) * 2.0
    mask = border_mask((40, 52), frames.device, region=None)
    held = float(sequence_loss(frames, field, mask=mask, descriptors=mind_descriptors(frames)))
    chunked = float(sequence_loss(frames, field, mask=mask, descriptors=None, mind_chunk=chunk))
    assert chunked == pytest.approx(held, rel=1e-6)
    without = float(sequence_loss(frames, field, mask=mask, descriptors=None))
    assert without < held - 1e-3  # the structure term is really in there
    objective = _SequenceObjective(frames, None, None)
    assert objective(field) == pytest.approx(held, rel=1e-6) and not hasattr(objective, "descriptors")
