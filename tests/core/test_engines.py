"""Classical engines against phantom ground truth, permutation equivariance, API behaviour."""

import threading

import numpy as np
import pytest

from napari_any2reg.core.metrics import alignment_score, relative_epe
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import RegistrationCancelled, available_engines, register
from napari_any2reg.core.sequence import SequenceError

# 96x96 at 3 mm covers the same field of view as the 192x192 / 1.5 mm default, 4x cheaper.
SMALL = dict(shape=(96, 96), spacing_mm=(3.0, 3.0))
# Ground-truth tests use the default 192x192 / 1.5 mm grid and free-breathing motion (10 mm
# peak to peak): the residual floor of ~0.8 mm is then well below half the motion.
TRUTH = dict(shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=10.0)


def _phantom(kind, seed, **kw):
    options = dict(SMALL)
    if kind == "molli":
        options["schedule"] = "5(3)3"
    options.update(kw)
    return make_phantom(kind, seed=seed, **options)


def test_engines_are_listed():
    assert {"groupwise", "xcoreg"} <= set(available_engines())


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["groupwise", "xcoreg"])
@pytest.mark.parametrize("kind", ["molli", "stone"])
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_ground_truth_motion_is_recovered(engine, kind, seed):
    phantom = _phantom(kind, seed, **TRUTH)
    spacing = phantom.sequence.spacing_mm
    before = relative_epe(np.zeros_like(phantom.displacement), phantom.displacement, phantom.heart_mask, spacing_mm=spacing)
    result = register(phantom.sequence, engine=engine, device="cpu")
    after = relative_epe(result.displacement, phantom.displacement, phantom.heart_mask, spacing_mm=spacing)
    assert before > 1.0, "the phantom should move by more than a millimetre"
    assert after <= 0.5 * before, f"{engine} on {kind} seed {seed}: EPE {before:.2f} -> {after:.2f} mm"
    assert result.folding_percent < 0.5
    # groupwise centring: the mean displacement over frames is ~0 everywhere
    assert np.abs(result.displacement.mean(axis=0)).max() < 1e-3


def _plain_and_shuffled(engine, threads):
    """(phantom, result, result on the frames shuffled, the order) of a quick run at ``threads``."""
    phantom = _phantom("stone", 5)
    order = np.random.default_rng(0).permutation(phantom.sequence.n_frames)
    options = dict(engine=engine, device="cpu", iterations_scale=0.3, threads=threads)
    return phantom, register(phantom.sequence, **options), register(phantom.sequence.permuted(order), **options), order


@pytest.mark.parametrize("engine", ["groupwise", "xcoreg"])
def test_permutation_equivariance(engine):
    """Shuffling the frames shuffles the fields identically.

    At one CPU thread the loss is symmetric in the frames and torch's reductions run in a
    fixed order, so the fields agree to float rounding (bit-identical on this machine).
    Multi-threaded reductions split work by memory layout, which the shuffle changes; that
    case is checked separately against a physical tolerance.
    """
    _, plain, shuffled, order = _plain_and_shuffled(engine, threads=1)
    difference = np.abs(shuffled.displacement - plain.displacement[order])
    assert difference.max() < 1e-3, (difference.mean(), difference.max())
    np.testing.assert_allclose(shuffled.weights, plain.weights[order], atol=1e-5)


@pytest.mark.parametrize("engine", ["groupwise", "xcoreg"])
def test_permutation_equivariance_with_several_threads_stays_far_below_a_pixel(engine):
    """Two threads: summation order differs with the frame order, and ~150 optimiser steps
    amplify that rounding in flat background (measured up to 0.12 px, mean 0.003 px, on a
    2-core machine). The bound is well below the 3 mm pixel and the ~2 px motion."""
    phantom, plain, shuffled, order = _plain_and_shuffled(engine, threads=2)
    difference = np.abs(shuffled.displacement - plain.displacement[order])
    assert difference.mean() < 0.02 and difference.max() < 0.3, (difference.mean(), difference.max())
    # the equivariance that matters to the reader: the heart's fields agree to a tenth of the motion
    motion = np.abs(plain.displacement).max()
    assert difference[:, :, phantom.heart_mask].max() < 0.1 * motion


def test_reference_frame_mode_keeps_that_frame_fixed():
    phantom = _phantom("molli", 3)
    result = register(phantom.sequence, engine="groupwise", reference_frame=2, iterations_scale=0.3)
    assert result.reference_frame == 2
    assert np.abs(result.displacement[2]).max() == 0.0
    assert np.abs(result.displacement).max() > 0.5
    np.testing.assert_allclose(result.registered[2], phantom.sequence.frames[2], rtol=1e-5, atol=1e-5)


def test_result_fields_progress_and_input_untouched():
    phantom = _phantom("molli", 4)
    frames_before = phantom.sequence.frames.copy()
    seen = []
    result = register(phantom.sequence, engine="groupwise", iterations_scale=0.2, progress=lambda f, m: seen.append(f))
    n, h, w = phantom.sequence.frames.shape
    assert result.registered.shape == (n, h, w) and result.registered.dtype == np.float32
    assert result.displacement.shape == (n, 2, h, w) and result.displacement.dtype == np.float32
    assert result.template.shape == (h, w)
    assert result.weights.shape == (n,) and abs(result.weights.sum() - 1) < 1e-4
    assert result.device.startswith("cpu") and result.seconds > 0
    assert set(result.loss_history) >= {"translation 1/4", "ffd 1/2"}
    assert seen[0] == 0.0 and seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:]))
    np.testing.assert_array_equal(phantom.sequence.frames, frames_before)
    assert result.registered_sequence().timings_ms is not None
    assert alignment_score(result.registered) > alignment_score(phantom.sequence.frames)


def test_cancel_stops_the_run():
    phantom = _phantom("molli", 4)
    cancel = threading.Event()
    calls = []

    def progress(fraction, message):
        calls.append(fraction)
        if len(calls) == 5:
            cancel.set()

    with pytest.raises(RegistrationCancelled):
        register(phantom.sequence, engine="groupwise", progress=progress, cancel=cancel)
    assert len(calls) == 5  # stopped at the next check


def test_bad_requests_raise_clear_errors():
    phantom = _phantom("molli", 4)
    with pytest.raises(ValueError, match="Unknown engine"):
        register(phantom.sequence, engine="elastix")
    with pytest.raises(SequenceError, match="99 is outside"):
        register(phantom.sequence, reference_frame=99)
    with pytest.raises(TypeError, match="unknown option"):
        register(phantom.sequence, engine="groupwise", bogus=1)
    with pytest.raises(ValueError, match="metric"):
        register(phantom.sequence, engine="groupwise", metric="mi")
    with pytest.raises(SequenceError, match="3-D"):
        register(np.zeros((32, 32)))


def test_pca2_metric_also_recovers_motion():
    phantom = _phantom("molli", 21)
    spacing = phantom.sequence.spacing_mm
    before = relative_epe(np.zeros_like(phantom.displacement), phantom.displacement, phantom.heart_mask, spacing_mm=spacing)
    result = register(phantom.sequence, engine="groupwise", metric="pca2")
    after = relative_epe(result.displacement, phantom.displacement, phantom.heart_mask, spacing_mm=spacing)
    assert after < 0.6 * before
