"""Any2Reg network architecture: shapes, set symmetry, constraints, inference wrapper.

Small images (32–64 px) and ``base_channels=8`` keep the file fast on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_any2reg.core.losses import conditional_template_entropy, gradient_regulariser
from napari_any2reg.core.network import (
    Any2RegNet,
    ContrastInsensitiveFeatures,
    FlowHead,
    SetAggregation,
    integrate_velocity,
    mind_descriptors,
    normalised_gradient_fields,
    predict,
)
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import normalise_intensities
from napari_any2reg.core.spatial import folding_fraction, jacobian_determinant, warp

PERMUTATION_TOLERANCE_PX = 1e-4


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantom_frames() -> torch.Tensor:
    ph = make_phantom("stone", seed=1, shape=(48, 48), spacing_mm=(6, 6))
    return torch.from_numpy(normalise_intensities(ph.sequence.frames))


def _net(seed: int = 0, perturb: float = 0.02, **kwargs) -> Any2RegNet:
    """Seeded small network in eval mode; ``perturb`` re-draws the flow heads so the output is not ~0."""
    torch.manual_seed(seed)
    kwargs.setdefault("base_channels", 8)
    net = Any2RegNet(**kwargs).eval()
    if perturb:
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, FlowHead):
                    module.weight.normal_(0.0, perturb)
    return net


def _random_frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(n, 1, h + 6, w + 6, generator=g), 7, stride=1)
    return smooth[:, 0]


# ------------------------------------------------------------------ set symmetry
@pytest.mark.parametrize(
    "options",
    [{}, {"diffeomorphic": True}, {"use_auxiliary": False, "aggregation": "mean"}],
    ids=["default", "diffeomorphic", "mean-noaux"],
)
def test_permuting_frames_permutes_fields(phantom_frames, options):
    net = _net(**options)
    perm = torch.randperm(phantom_frames.shape[0], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        u = net(phantom_frames)
        u_perm = net(phantom_frames[perm])
    assert u.abs().max() > 0.5  # the perturbed net really moves pixels
    # tolerance: float32 round-off of the reordered sums / N x N eigenproblem, 1e-4 px
    assert (u_perm - u[perm]).abs().max() < PERMUTATION_TOLERANCE_PX


def test_set_aggregation_is_invariant_and_mean_mode():
    f = torch.randn(7, 4, 8, 8) + 1.0
    perm = torch.tensor([6, 2, 0, 5, 1, 3, 4])
    agg = SetAggregation("pca")
    g, a = agg(f)
    g_p, a_p = agg(f[perm])
    assert g.shape == (1, 4, 8, 8) and torch.all(a >= 0) and abs(float(a.sum()) - 1) < 1e-5
    torch.testing.assert_close(a_p, a[perm], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_p, g, atol=1e-5, rtol=1e-5)
    g_mean, a_mean = SetAggregation("mean")(f)
    torch.testing.assert_close(g_mean[0], f.mean(0))
    torch.testing.assert_close(a_mean, torch.full((7,), 1 / 7))
    with pytest.raises(ValueError, match="aggregation mode"):
        SetAggregation("max")


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("n", [2, 11, 64])
def test_any_sequence_length(n):
    net = _net()
    with torch.no_grad():
        u = net(_random_frames(n, 32, 32))
    assert u.shape == (n, 2, 32, 32) and torch.isfinite(u).all()


def test_odd_sizes_and_spacing_resampling_return_input_grid():
    net = _net()
    frames = _random_frames(5, 37, 45).numpy() * 300.0
    u = predict(net, frames)
    assert u.shape == (5, 2, 37, 45) and u.dtype == np.float32 and np.isfinite(u).all()
    # 2.4 mm vs the 1.5 mm training spacing: resampled to a ~58 x 71 grid and back
    u_mm = predict(net, torch.from_numpy(frames), spacing_mm=(2.4, 2.4))
    assert u_mm.shape == (5, 2, 37, 45) and np.isfinite(u_mm).all()
    # within 10 % of the training spacing: no resampling, same result as no spacing
    np.testing.assert_allclose(predict(net, frames, spacing_mm=(1.6, 1.45)), u, atol=1e-6)


def test_spacing_resampling_rescales_pixel_units():
    """A net whose finest head outputs a constant 1-pixel shift (on its working grid) gives
    ~2 input pixels when the input has half the training spacing: the same shift in mm."""
    net = _net(perturb=0.0, use_auxiliary=False)
    with torch.no_grad():
        for s, block in enumerate(net.decoder):
            block[-1].weight.zero_()
            block[-1].bias.copy_(torch.tensor([1.0 if s == 0 else 0.0, 0.0]))
    frames = _random_frames(3, 48, 48).numpy()
    u_same = predict(net, frames, spacing_mm=(1.5, 1.5), reference_frame=0)
    np.testing.assert_allclose(u_same[1:, 0], 1.0, atol=1e-5)
    u_fine = predict(net, frames, spacing_mm=(0.75, 0.75), reference_frame=0)
    # working grid: 25 x 25 px covering the same field of view (corner-aligned), so one
    # working pixel is 47 / 24 input pixels (1.47 mm)
    np.testing.assert_allclose(u_fine[1:, 0], 47 / 24, atol=1e-4)
    assert np.abs(u_fine[:, 1]).max() < 1e-5 and np.all(u_fine[0] == 0)


def test_untrained_net_is_near_identity(phantom_frames):
    net = _net(perturb=0.0)
    with torch.no_grad():
        u = net(phantom_frames)
    assert u.abs().max() < 0.05
    assert np.abs(predict(net, phantom_frames.numpy() * 1000, spacing_mm=(3, 3))).max() < 0.1


# ------------------------------------------------------------------ variants and auxiliary stream
def test_variants_run(phantom_frames):
    for options in ({"aggregation": "mean"}, {"use_auxiliary": False}, {"auxiliary_kind": "ngf"}):
        with torch.no_grad():
            u = _net(**options)(phantom_frames)
        assert u.shape == (11, 2, 48, 48) and torch.isfinite(u).all()


def test_user_auxiliary_features(phantom_frames):
    n, h, w = phantom_frames.shape
    net = _net(auxiliary_channels=4)
    feats = torch.rand(n, 4, h, w)
    with torch.no_grad():
        u = net(phantom_frames, auxiliary_features=feats)
    assert u.shape == (n, 2, h, w)
    assert predict(net, phantom_frames.numpy(), spacing_mm=(3.0, 3.0), auxiliary_features=feats.numpy()).shape == (n, 2, h, w)
    with pytest.raises(ValueError, match="auxiliary_features must have shape"):
        net(phantom_frames, auxiliary_features=torch.rand(n, 3, h, w))
    with pytest.raises(ValueError, match="auxiliary_features must have shape"):
        net(phantom_frames, auxiliary_features=torch.rand(n - 1, 4, h, w))
    with pytest.raises(ValueError, match="auxiliary_features must"):
        predict(net, phantom_frames.numpy(), auxiliary_features=np.zeros((n, 4, h + 1, w), np.float32))
    with pytest.raises(ValueError, match="built-in"):  # 4 channels, but MIND gives 8
        net(phantom_frames)
    with pytest.raises(ValueError, match="no auxiliary stream"):
        _net(use_auxiliary=False)(phantom_frames, auxiliary_features=feats)


def test_builtin_extractors_are_contrast_insensitive(phantom_frames):
    x = phantom_frames[:3]
    extractor = ContrastInsensitiveFeatures("mind")
    mind = extractor(x)
    assert mind.shape == (3, extractor.out_channels, 48, 48) and extractor.out_channels == 8
    assert not any(True for _ in extractor.parameters())
    torch.testing.assert_close(mind_descriptors(2.5 - 3.0 * x), mind, atol=1e-4, rtol=1e-4)  # scale + inversion
    ngf = normalised_gradient_fields(x)
    torch.testing.assert_close(normalised_gradient_fields(1.0 - 2.0 * x), ngf, atol=1e-4, rtol=1e-4)
    # frame-wise: a frame's features do not depend on the other frames
    torch.testing.assert_close(extractor(x[1:2]), mind[1:2])


def test_mind_descriptors_in_chunks_equal_the_whole_stack(monkeypatch):
    """Long series are described in cache-sized chunks of frames: same values, same gradient."""
    from napari_any2reg.core.network import auxiliary

    x = torch.rand(7, 40, 36, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(auxiliary, "_MIND_CHUNK_PIXELS", 10**9)
    whole = mind_descriptors(x)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), x)
    monkeypatch.setattr(auxiliary, "_MIND_CHUNK_PIXELS", 3 * 40 * 36)  # chunks of 3, 3 and 1 frames
    chunked = mind_descriptors(x)
    (grad_chunked,) = torch.autograd.grad(chunked.square().sum(), x)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_chunked, grad_whole, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ diffeomorphic option
def test_integrate_velocity_translation_and_no_folding():
    const = torch.zeros(2, 2, 40, 40)
    const[:, 0], const[:, 1] = 0.7, -1.3
    torch.testing.assert_close(integrate_velocity(const, steps=7), const, atol=1e-5, rtol=0)
    # a smooth radial velocity whose direct use as a displacement folds (~15 % of pixels)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    g = 3.0 * torch.exp(-((yy - 31.5) ** 2 + (xx - 31.5) ** 2) / (2 * 8.0**2))
    v = torch.stack(((yy - 31.5) * g, (xx - 31.5) * g))[None]
    assert folding_fraction(v) > 0.05
    u = integrate_velocity(v, steps=7)
    assert jacobian_determinant(u).min() > 0
    assert u.abs().max() > 5  # a large deformation, not a trivial one


# ------------------------------------------------------------------ group constraints
@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_reference_frame_field_is_exactly_zero(phantom_frames, diffeomorphic):
    net = _net(diffeomorphic=diffeomorphic)
    with torch.no_grad():
        u = net(phantom_frames, reference_frame=4)
    assert torch.all(u[4] == 0)
    assert u.abs().max() > 0.5
    u_np = predict(net, phantom_frames.numpy(), spacing_mm=(4.0, 4.0), reference_frame=4)
    assert np.all(u_np[4] == 0)


def test_groupwise_mode_keeps_mean_near_zero(phantom_frames):
    """Increments are centred exactly; the composed field is centred to first order.

    Stated tolerance: max over pixels of |mean_i u_i| below 5 % of max |u|, and its average
    below 5 % of the average |u| (a random net here moves pixels by up to ~2 px)."""
    with torch.no_grad():
        u = _net()(phantom_frames)
        u_free = _net(groupwise_centring=False)(phantom_frames)
    mean = u.mean(dim=0)
    assert mean.abs().max() < 0.05 * u.abs().max()
    assert mean.abs().mean() < 0.05 * u.abs().mean()
    assert mean.abs().mean() < 0.2 * u_free.mean(dim=0).abs().mean()  # centring really acts


def test_config_rebuilds_the_same_network():
    net = _net(diffeomorphic=True, aggregation="mean")
    clone = Any2RegNet(**net.config)
    clone.load_state_dict(net.state_dict())
    assert clone.config == net.config and clone.parameter_count() == net.parameter_count()
    assert 0 < Any2RegNet().parameter_count() < 400_000  # default config stays CPU-trainable


def test_invalid_inputs():
    net = _net()
    with pytest.raises(ValueError, match="at least 2 frames"):
        net(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match="reference_frame"):
        net(torch.rand(3, 32, 32), reference_frame=3)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        predict(net, np.zeros((32, 32), np.float32))


# ------------------------------------------------------------------ trainability
def test_few_adam_steps_lower_the_loss(phantom_frames):
    net = _net(perturb=0.0, use_auxiliary=True).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    frames = phantom_frames

    def loss_fn():
        u = net(frames)
        warped = warp(frames[:, None], u)[:, 0]
        return conditional_template_entropy(warped) + 1.0 * gradient_regulariser(u)

    with torch.no_grad():
        initial = float(loss_fn())
    for _ in range(30):
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        final = float(loss_fn())
    assert np.isfinite(final)
    assert final < initial - 1e-3, (initial, final)


# ------------------------------------------------------------------ test-time orientations
def test_test_time_orientations_map_fields_back_and_average(phantom_frames):
    net = _net(seed=3)
    frames = phantom_frames.numpy()
    single = predict(net, frames, spacing_mm=None)
    # the 180-degree pass alone, mapped back by hand: rotate the input, rotate the field back
    rotated = predict(net, np.ascontiguousarray(frames[:, ::-1, ::-1]), spacing_mm=None)
    back = -rotated[:, :, ::-1, ::-1]
    two = predict(net, frames, spacing_mm=None, orientations=2)
    np.testing.assert_allclose(two, 0.5 * (single + back), atol=1e-5)
    four = predict(net, frames, spacing_mm=None, orientations=4, reference_frame=1)
    assert np.abs(four[1]).max() == 0.0  # the fixed frame stays fixed in every orientation
    order = np.random.default_rng(0).permutation(frames.shape[0])
    shuffled = predict(net, frames[order], spacing_mm=None, orientations=2)
    assert np.abs(shuffled - two[order]).max() < 0.02  # still permutation-equivariant
    with pytest.raises(ValueError, match="orientations"):
        predict(net, frames, spacing_mm=None, orientations=3)


@pytest.mark.parametrize("norm", [True, False])
def test_conv_block_on_parts_equals_the_block_on_the_concatenation(norm):
    """The set layers read [f_i, g] (and the decoder [f_i, g, u_i]) as parts: g's share of the
    convolution is computed once and broadcast. Same result as concatenating, borders included."""
    from napari_any2reg.core.network.blocks import ConvBlock, conv_block_on_parts

    torch.manual_seed(0)
    block = ConvBlock(2 * 6 + 2, 6, norm=norm).eval()
    f, g, u = torch.randn(5, 6, 17, 20), torch.randn(1, 6, 17, 20), torch.randn(5, 2, 17, 20)
    with torch.no_grad():
        expected = block(torch.cat((f, g.expand(5, -1, -1, -1), u), dim=1))
        got = conv_block_on_parts(block, [f, g, u])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="13 channels; the convolution takes 14"):
        conv_block_on_parts(block, [f, g, u[:, :1]])
