"""The network at the scan's own grid (issue 22): working spacing, passes composed exactly,
permutation equivariance at the new grids, the do-no-harm fallback and CPU threads."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from napari_any2reg.core.device import cpu_threads, default_cpu_threads
from napari_any2reg.core.engine_api import EngineOptionError
from napari_any2reg.core.engines.any2reg import engine as engine_module
from napari_any2reg.core.engines.any2reg import passes as passes_module  # where the network passes call predict
from napari_any2reg.core.engines.any2reg import MAX_WORKING_PIXELS, pass_schedule, working_grid
from napari_any2reg.core.metrics import relative_epe
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register
from napari_any2reg.core.spatial import compose_displacements, folding_fraction, warp_images

SMALL = dict(shape=(96, 96), spacing_mm=(1.5, 1.5), motion_mm=8.0, snr=40.0)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def molli():
    return make_phantom("molli", seed=20011, **SMALL)


def _epe(u, phantom):
    return relative_epe(u, phantom.displacement, phantom.heart_mask, spacing_mm=phantom.sequence.spacing_mm)


def test_working_grid_is_native_unless_asked_or_over_budget():
    assert working_grid((192, 192), (1.5, 1.5)) == ((1.5, 1.5), "native")
    assert working_grid((192, 192), (1.5, 1.5), 2.0) == ((2.0, 2.0), "requested")
    spacing, why = working_grid((512, 512), (0.7, 0.7))
    assert "coarsened" in why and spacing[0] == pytest.approx(spacing[1])
    pixels = ((512 - 1) * 0.7 / spacing[0] + 1) ** 2
    assert pixels == pytest.approx(MAX_WORKING_PIXELS, rel=1e-6)
    # the coarse pass only where it is coarser than the working grid
    assert [label for label, _ in pass_schedule((1.5, 1.5), (1.5, 1.5), 2, 3.0)] == ["coarse", "pass 1/2", "pass 2/2"]
    assert [label for label, _ in pass_schedule((3.0, 3.0), (3.0, 3.0), 1, 3.0)] == ["pass 1/1"]
    assert [label for label, _ in pass_schedule((1.5, 1.5), (1.5, 1.5), 1, 0.0)] == ["pass 1/1"]


def test_working_spacing_is_reported_and_changes_the_grid_the_network_sees(molli, monkeypatch):
    seen = []
    original = passes_module.predict

    def spy(net, frames, *args, training_spacing_mm=None, **kwargs):
        seen.append(tuple(training_spacing_mm))
        return original(net, frames, *args, training_spacing_mm=training_spacing_mm, **kwargs)

    monkeypatch.setattr(passes_module, "predict", spy)
    native = register(molli.sequence, scores=False, coarse=False, orientations=1, coarse_pass_mm=0, uncertainty_shifts=0)
    assert seen == [(1.5, 1.5)]
    assert native.params["working_grid"] == {"spacing_mm": [1.5, 1.5], "why": "native", "resampled": False}
    assert native.notes()[0] == "network grid 1.5 x 1.5 mm (native); pass 1/1 at 1.5 mm"
    seen.clear()
    coarse = register(molli.sequence, scores=False, coarse=False, orientations=1, coarse_pass_mm=0, working_spacing_mm=3.0,
                      uncertainty_shifts=0)
    assert seen == [(3.0, 3.0)] and coarse.params["working_grid"]["resampled"] is True
    assert coarse.displacement.shape == native.displacement.shape == (molli.sequence.n_frames, 2, 96, 96)
    assert not np.allclose(coarse.displacement, native.displacement, atol=1e-3)
    with pytest.raises(EngineOptionError, match="working_spacing_mm"):
        register(molli.sequence, working_spacing_mm=0.0)


def test_passes_compose_exactly_one_interpolation_of_the_raw_frames(molli, monkeypatch):
    """Two passes = the second pass run on the frames warped by the first, composed by
    u = v + u1(x + v): the registered frames are the raw frames warped once by u."""
    options = dict(scores=False, coarse=False, orientations=1, coarse_pass_mm=0, do_no_harm=False)
    one = register(molli.sequence, passes=1, **options)
    two = register(molli.sequence, passes=2, **options)
    # the second pass on its own, run on the once-registered frames (normalised as the engine does)
    second = register(molli.sequence.replace(frames=one.registered), passes=1, **options)
    expected = compose_displacements(one.displacement, second.displacement)
    expected = expected - expected.mean(axis=0, keepdims=True)  # the group constraint, restored after composing
    assert np.abs(two.displacement.mean(axis=0)).max() < 1e-4
    # intensity normalisation of the warped frames differs a hair from the engine's (it
    # normalises once, on the raw frames): a tolerance far below a pixel
    assert np.abs(two.displacement - expected).max() < 0.05
    np.testing.assert_allclose(two.registered, warp_images(molli.sequence.frames, two.displacement), atol=1e-4)
    assert folding_fraction(two.displacement) == 0.0
    assert two.params["network_passes"] == [{"pass": "pass 1/2", "spacing_mm": [1.5, 1.5]}, {"pass": "pass 2/2", "spacing_mm": [1.5, 1.5]}]
    # the second pass corrects what the first left: closer to the truth
    assert _epe(two.displacement, molli) < _epe(one.displacement, molli)


def test_the_coarse_pass_can_run_in_more_orientations_than_the_fine_one(molli, monkeypatch):
    """The default: the cheap 3 mm pass averages two orientations, the native pass after it
    runs once (fine_pass_orientations=1); the SD map comes from the coarse pass's spread and
    says so. Without a coarse pass, orientations applies to the native pass."""
    seen = []
    original = passes_module.predict

    def spy(net, frames, *args, training_spacing_mm=None, orientations=1, **kwargs):
        seen.append((tuple(training_spacing_mm), orientations))
        return original(net, frames, *args, training_spacing_mm=training_spacing_mm, orientations=orientations, **kwargs)

    monkeypatch.setattr(passes_module, "predict", spy)
    base = dict(scores=False, coarse=False, coarse_pass_mm=3.0, passes=1, uncertainty_shifts=0)
    mixed = register(molli.sequence, **base)
    assert seen == [((3.0, 3.0), 2), ((1.5, 1.5), 1)]
    assert mixed.params["pass_orientations"] == {"coarse": 2, "pass 1/1": 1}
    sd = mixed.extras.get("displacement_sd_mm")
    assert sd is not None and sd.shape == (molli.sequence.n_frames, 96, 96) and np.isfinite(sd).all() and sd.max() > 0
    assert "2, 1, coarse first" in mixed.params["uncertainty"]
    seen.clear()
    both = register(molli.sequence, orientations=2, fine_pass_orientations=2, **base)
    assert seen == [((3.0, 3.0), 2), ((1.5, 1.5), 2)] and both.params["pass_orientations"] == {"coarse": 2, "pass 1/1": 2}
    seen.clear()
    single = register(molli.sequence, orientations=1, **base)
    assert seen == [((3.0, 3.0), 1), ((1.5, 1.5), 1)] and "displacement_sd_mm" not in single.extras
    assert single.params["uncertainty"].startswith("none")
    # the coarse pass's orientations change its field, hence the result
    assert not np.allclose(mixed.displacement, single.displacement, atol=1e-4)
    seen.clear()
    native_only = register(molli.sequence, **dict(base, coarse_pass_mm=0.0))
    assert seen == [((1.5, 1.5), 2)]  # no coarse pass: orientations (2) for the native pass
    assert native_only.params["pass_orientations"] == {"pass 1/1": 2}
    with pytest.raises(EngineOptionError, match="fine_pass_orientations"):
        register(molli.sequence, fine_pass_orientations=3)


@pytest.mark.parametrize("options", [
    dict(passes=2, coarse_pass_mm=3.0, orientations=1),
    dict(passes=1, working_spacing_mm=2.2, coarse_pass_mm=0.0, orientations=2),
    dict(passes=1, coarse_pass_mm=3.0, orientations=2, fine_pass_orientations=1),
])
def test_permutation_equivariance_at_the_new_grids(options):
    phantom = make_phantom("stone", seed=20012, shape=(80, 88), spacing_mm=(1.3, 1.3), motion_mm=6.0)
    frames = phantom.sequence.frames
    order = np.random.default_rng(3).permutation(frames.shape[0])
    kwargs = dict(scores=True, coarse=False, do_no_harm=False, **options)
    a = register(phantom.sequence, **kwargs)
    b = register(phantom.sequence.replace(frames=frames[order], timings_ms=phantom.sequence.timings_ms[order]), **kwargs)
    np.testing.assert_allclose(b.displacement, a.displacement[order], atol=2e-3)
    np.testing.assert_allclose(b.extras["correspondence"], a.extras["correspondence"][order], atol=2e-3)


def test_do_no_harm_returns_identity_when_the_field_is_worse_than_none(molli, monkeypatch):
    """A network that returns a harmful field (here: a large random shift per frame) is
    overruled by the sequence objective; the result says so."""
    def harmful(model, frames, start, **kwargs):
        n, _, h, w = frames.shape[0], 2, *frames.shape[-2:]
        shifts = torch.tensor(np.random.default_rng(1).uniform(-6, 6, (n, 2)), dtype=frames.dtype)
        field = (shifts - shifts.mean(0))[:, :, None, None].expand(n, 2, h, w).contiguous()
        return field, torch.zeros_like(field)  # (field, variance over the orientations)

    monkeypatch.setattr(engine_module, "_network_field", harmful)
    still = make_phantom("molli", seed=20013, shape=(96, 96), spacing_mm=(1.5, 1.5), motion_mm=0.0, rotation_deg=0.0,
                         nonrigid_mm=0.0, snr=40.0)
    kept = register(still.sequence, scores=False, coarse=False, do_no_harm=False)
    assert np.abs(kept.displacement).max() > 1.0
    guarded = register(still.sequence, scores=False, coarse=False)
    harm = guarded.params["do_no_harm"]
    assert harm["fallback"] is True and harm["registered"] >= harm["identity"]
    assert not guarded.displacement.any()
    assert any(note.startswith("do no harm") for note in guarded.notes())
    assert guarded.summary()["notes"] == guarded.notes()
    assert not any(note.startswith("do no harm") for note in kept.notes())
    np.testing.assert_allclose(guarded.registered, still.sequence.frames, atol=1e-5)


def test_do_no_harm_keeps_a_field_that_helps(molli):
    result = register(molli.sequence, scores=False, coarse=False, orientations=1)
    harm = result.params["do_no_harm"]
    assert harm["fallback"] is False and harm["registered"] < harm["identity"]
    assert _epe(result.displacement, molli) < 0.6 * _epe(np.zeros_like(result.displacement), molli)


def test_threads_are_set_for_the_call_and_restored(molli, monkeypatch):
    torch.set_num_threads(1)
    seen = []
    original = passes_module.predict

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(passes_module, "predict", spy)
    result = register(molli.sequence, scores=False, coarse=False, orientations=1, coarse_pass_mm=0, threads=2,
                      uncertainty_shifts=0)
    assert seen == [2] and result.params["cpu_threads"] == 2
    assert torch.get_num_threads() == 1  # restored
    with pytest.raises(ValueError, match="threads"):
        register(molli.sequence, threads=0)
    with pytest.raises(ValueError, match="threads"):
        register(molli.sequence, threads=1.5)


def test_default_threads_follow_the_load_and_respect_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    from napari_any2reg.core import device

    monkeypatch.setattr(device, "_other_runnable_tasks", lambda: 0.0)
    assert default_cpu_threads() == 2
    monkeypatch.setattr(device, "_other_runnable_tasks", lambda: 1.0)
    assert default_cpu_threads() == 1
    monkeypatch.setattr(device, "_other_runnable_tasks", lambda: 6.0)
    assert default_cpu_threads() == 1
    assert device.__dict__["_other_runnable_tasks"] is not None
    monkeypatch.undo()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= default_cpu_threads() <= (os.cpu_count() or 1)  # the real /proc reading
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert default_cpu_threads() == 1
    with cpu_threads(None) as used:
        assert used == 1 == torch.get_num_threads()
