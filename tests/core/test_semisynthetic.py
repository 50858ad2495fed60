"""Semi-synthetic motion on real frames, the supervised term, the coarse translation stage,
small fields of view and per-chunk progress of the network engines."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_any2reg.core.engines.any2reg import coarse_translation
from napari_any2reg.core.losses import relative_endpoint_loss
from napari_any2reg.core.metrics import relative_epe
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import RegistrationCancelled, normalise_intensities, register
from napari_any2reg.core.mapping import model_signal
from napari_any2reg.core.semisynthetic import add_rician_noise, breathing_motion, motion_free_series, move_frames
from napari_any2reg.core.sequence import Sequence
from napari_any2reg.core.spatial import folding_fraction, gaussian_smooth, warp_images

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _still_phantom(seed=20501, kind="molli", shape=(96, 96), spacing=(3.0, 3.0), snr=40.0):
    return make_phantom(kind, seed=seed, shape=shape, spacing_mm=spacing, motion_mm=0.0, rotation_deg=0.0,
                        nonrigid_mm=0.0, snr=snr)


# ------------------------------------------------------------------ motion-free base
def _maps(shape=(40, 48)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-((yy - 20.0) ** 2 + (xx - 22.0) ** 2) / 120.0)
    return {"A": 100 + 400 * blob, "B": 200 + 700 * blob, "t1_star_ms": 600 + 500 * (xx / shape[1])}, blob


MOLLI_TIS = [118.0, 201.0, 1118.0, 1201.0, 2118.0, 2201.0, 3118.0, 4118.0]


def test_motion_free_series_reproduces_a_series_that_follows_the_t1_model():
    params, _ = _maps()
    frames = np.abs(model_signal("molli", params, MOLLI_TIS)).astype(np.float32)
    before = frames.copy()
    series, how = motion_free_series(frames, MOLLI_TIS, "molli")
    assert how == "t1 model molli"
    np.testing.assert_array_equal(frames, before)  # the input is not modified
    assert series.shape == frames.shape and series.dtype == np.float32
    assert np.abs(series - frames).max() < 1e-2 * frames.max()
    # a Sequence brings its timings and, through its kind, the model; a kind without one is low-rank
    from_sequence, how = motion_free_series(Sequence(frames, timings_ms=MOLLI_TIS, kind="molli"))
    assert how == "t1 model molli"
    np.testing.assert_allclose(from_sequence, series)
    assert motion_free_series(Sequence(frames, timings_ms=MOLLI_TIS, kind="cine"))[1] == "rank 2"


def test_motion_free_series_removes_a_shifted_frame_from_a_low_rank_series():
    _, blob = _maps()
    weights = np.linspace(-1.0, 1.0, 8)
    truth = np.stack([100 * blob + 60 * w * np.roll(blob, 6, axis=1) + 50 for w in weights]).astype(np.float32)
    moved = truth.copy()
    moved[3] = np.roll(truth[3], 2, axis=0)  # one frame displaced by 2 px
    series, how = motion_free_series(moved, rank=1)  # the truth varies along one component
    assert how == "rank 1"
    error_before = np.abs(moved[3] - truth[3]).mean()
    assert np.abs(series[3] - truth[3]).mean() < 0.5 * error_before
    assert (series >= 0).all()


def test_motion_free_series_says_what_is_wrong():
    frames = np.ones((4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="rank must be between 1 and N - 1"):
        motion_free_series(frames, rank=4)
    with pytest.raises(ValueError, match="T1 model name"):
        motion_free_series(frames, [100.0, 200.0, 300.0, 400.0])
    with pytest.raises(ValueError, match="N >= 2"):
        motion_free_series(frames[:1])


# ------------------------------------------------------------------ motion model
def test_breathing_motion_is_centred_fold_free_and_spans_the_amplitude():
    rng = np.random.default_rng(0)
    u = breathing_motion(rng, 9, (80, 96), (1.5, 1.5), translation_mm=12.0, rotation_deg=0.0, nonrigid_mm=0.0,
                         centre_px=(40, 48), decay_mm=1e6)  # no decay: a pure translation
    assert u.shape == (9, 2, 80, 96) and u.dtype == np.float32
    assert np.abs(u.mean(axis=0)).max() < 1e-4  # groupwise: zero mean over frames
    centre_mm = u[:, :, 40, 48] * 1.5
    spread = max(np.linalg.norm(a - b) for a in centre_mm for b in centre_mm)
    assert 11.5 < spread < 13.5  # peak-to-peak translation (plus the 10 % jitter)
    big = breathing_motion(rng, 6, (64, 64), (1.5, 1.5), translation_mm=30.0, rotation_deg=10.0, nonrigid_mm=6.0,
                           nonrigid_scale_mm=10.0)
    assert folding_fraction(big) == 0.0


def test_breathing_motion_decays_away_from_the_organ():
    u = breathing_motion(np.random.default_rng(1), 8, (101, 101), (2.0, 2.0), translation_mm=10.0, rotation_deg=0.0,
                         nonrigid_mm=0.0, centre_px=(50, 50), decay_mm=30.0, wall_weight=0.2)
    at_centre = np.linalg.norm(u[:, :, 50, 50], axis=1).mean()
    at_corner = np.linalg.norm(u[:, :, 2, 2], axis=1).mean()
    assert at_corner < 0.35 * at_centre


def test_moved_frames_warp_back_to_the_aligned_frames():
    # smooth images: the check is about the inverse field, not about bilinear blur of edges
    aligned = gaussian_smooth(torch.from_numpy(np.random.default_rng(8).random((8, 1, 96, 96), np.float32)), 3.0)[:, 0].numpy()
    aligned.flags.writeable = False
    u = breathing_motion(np.random.default_rng(2), aligned.shape[0], aligned.shape[1:], (3.0, 3.0), translation_mm=15.0)
    moved = move_frames(aligned, u)
    assert not np.shares_memory(moved, aligned) and aligned.flags.writeable is False
    recovered = warp_images(moved, u)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    residual = np.abs(recovered - aligned)[inner].mean()
    moved_by = np.abs(moved - aligned)[inner].mean()
    assert residual < 0.2 * moved_by, (residual, moved_by)  # only interpolation blur is left
    with pytest.raises(ValueError, match="does not match"):
        move_frames(aligned, u[:-1])


def test_rician_noise_level_follows_the_snr():
    frames = np.full((4, 32, 32), 100.0, np.float32)
    noisy = add_rician_noise(frames, np.random.default_rng(3), snr=20.0)
    assert noisy.min() >= 0 and abs(float(np.std(noisy)) - 5.0) < 0.5


# ------------------------------------------------------------------ supervised term
def test_relative_endpoint_loss_ignores_a_common_offset():
    truth = torch.randn(5, 2, 16, 16)
    assert float(relative_endpoint_loss(truth + 3.0, truth)) < 2e-3  # same relative motion
    worse = float(relative_endpoint_loss(truth + 0.5 * torch.randn(5, 2, 16, 16), truth))
    assert worse > 0.3
    still = torch.zeros(5, 2, 16, 16)
    focus = torch.zeros(16, 16, dtype=torch.bool)
    focus[4:8, 4:8] = True
    assert float(relative_endpoint_loss(still, still, focus=focus)) < 3e-3


# ------------------------------------------------------------------ coarse stage
def test_coarse_translation_recovers_large_shifts_and_leaves_still_frames_alone():
    phantom = _still_phantom(seed=20502, snr=None)
    frames = phantom.sequence.frames
    n = frames.shape[0]
    shifts = np.random.default_rng(4).uniform(-8, 8, (n, 2)).astype(np.float32)  # up to 24 mm at 3 mm
    shifts -= shifts.mean(axis=0)
    truth = np.broadcast_to(shifts[:, :, None, None], (n, 2, 96, 96)).copy()
    moved = move_frames(frames, truth)
    estimate = coarse_translation(torch.from_numpy(normalise_intensities(moved)), spacing_mm=(3.0, 3.0),
                                  training_spacing_mm=(3.0, 3.0)).numpy()
    assert np.abs(estimate - shifts).max() < 1.0, np.c_[estimate, shifts]
    still = coarse_translation(torch.from_numpy(normalise_intensities(add_rician_noise(frames, np.random.default_rng(5), 30))),
                               spacing_mm=(3.0, 3.0), training_spacing_mm=(3.0, 3.0))
    assert float(still.abs().max()) == 0.0  # below the threshold: the network alone decides
    fixed = coarse_translation(torch.from_numpy(normalise_intensities(moved)), spacing_mm=(3.0, 3.0),
                               training_spacing_mm=(3.0, 3.0), reference_frame=1).numpy()
    assert np.abs(fixed[1]).max() == 0.0
    assert np.abs((fixed - fixed[1]) - (shifts - shifts[1])).max() < 1.0



def test_engine_keeps_the_coarse_shift_only_where_its_objective_prefers_it():
    """Large breathing shifts make the coarse stage fire; the engine then also runs the network
    on the frames as given and keeps the field with the lower sequence objective (both losses
    reported), and the kept field removes most of the motion."""
    phantom = make_phantom("stone", seed=20504, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=25.0, snr=40.0)
    seq, truth = phantom.sequence, phantom.displacement
    result = register(seq, device="cpu", scores=False)
    losses = result.params["coarse_losses"]  # the stage fired: both candidates were scored
    assert np.isfinite(losses["with_shift"]) and np.isfinite(losses["without"])
    assert result.params["coarse_used"] == (losses["with_shift"] <= losses["without"])
    assert ("coarse_translation_px" in result.params) == result.params["coarse_used"]
    before = relative_epe(np.zeros_like(truth), truth, phantom.heart_mask, spacing_mm=seq.spacing_mm)
    after = relative_epe(result.displacement, truth, phantom.heart_mask, spacing_mm=seq.spacing_mm)
    assert after < 0.5 * before, (after, before)
    off = register(seq, device="cpu", scores=False, coarse=False)
    assert "coarse_losses" not in off.params and not off.params["coarse_used"]


# ------------------------------------------------------------------ do-no-harm and real data
def test_motion_free_sequence_gets_little_motion():
    """Contrast change alone (MOLLI null crossings) and noise must not be taken for motion.

    Bound: 0.3 mm of relative motion in the heart (the issue's test bound). any2reg-v10 with two
    orientations gives 0.17 mm here (v6 0.18, or 0.22 with one orientation; v2 0.38, v1 0.6+);
    the benchmark's 0.2 mm target: see benchmarks/results/real_cpu_model_base.md.
    """
    phantom = _still_phantom(seed=20503, shape=(128, 128), spacing=(2.25, 2.25))
    zero = np.zeros((phantom.sequence.n_frames, 2, 128, 128), np.float32)
    result = register(phantom.sequence, device="cpu")
    spurious = relative_epe(result.displacement, zero, phantom.heart_mask, spacing_mm=phantom.sequence.spacing_mm)
    assert spurious < 0.3, f"any2reg invented {spurious:.2f} mm of motion on a still MOLLI"
    assert not result.params["coarse_used"]  # nothing to shift: the coarse stage stays out


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")
def test_semisynthetic_real_case_improves_by_half():
    """Real STONE frames (held out from training; the 9 frames without the large breathing
    shift), pre-aligned, moved by 20 mm of known breathing motion around the heart: the default
    engine removes at least half of the relative motion in the heart."""
    from napari_any2reg.io import read_sequence

    real = read_sequence(REAL / "stone_0138_slice4_t1map.nii.gz")
    # 2x coarser (3.1 mm) keeps the test fast; the anatomy and contrast stay real
    frames = torch.nn.functional.avg_pool2d(torch.from_numpy(np.array(real.frames[2:]))[:, None], 2)[:, 0].numpy()
    spacing = tuple(2 * s for s in real.spacing_mm)
    seq = Sequence(frames, spacing_mm=spacing, kind="stone")
    base = register(seq, engine="groupwise", device="cpu").registered
    yy, xx = np.mgrid[: seq.shape[0], : seq.shape[1]]
    heart = (yy - 85) ** 2 + (xx - 75) ** 2 <= 27**2  # LV, RV and septum
    truth = breathing_motion(np.random.default_rng(6), seq.n_frames, seq.shape, seq.spacing_mm, translation_mm=20.0,
                             centre_px=(85, 75), decay_mm=70.0)
    moved = seq.replace(frames=move_frames(base, truth))
    before = relative_epe(np.zeros_like(truth), truth, heart, spacing_mm=seq.spacing_mm)
    after = relative_epe(register(moved, device="cpu").displacement, truth, heart, spacing_mm=seq.spacing_mm)
    assert after <= 0.5 * before, (before, after)


# ------------------------------------------------------------------ small fields of view, progress, cancel
@pytest.mark.parametrize("engine", ["any2reg", "any2reg-io"])
@pytest.mark.parametrize("shape, spacing", [((8, 8), (1.0, 1.0)), ((16, 16), (0.5, 0.5)), ((9, 12), (0.2, 0.2))])
def test_small_fields_of_view_are_registered(engine, shape, spacing):
    frames = np.random.default_rng(7).random((4,) + shape).astype(np.float32)
    options = {"io_steps": 3} if engine == "any2reg-io" else {}
    result = register(Sequence(frames, spacing_mm=spacing), engine=engine, device="cpu", **options)
    assert result.displacement.shape == (4, 2) + shape and np.isfinite(result.displacement).all()
    assert result.extras["correspondence"].shape == (4,) + shape


def test_network_progress_is_reported_per_chunk_and_cancel_is_prompt():
    phantom = make_phantom("ir", seed=20504, n_frames=48, shape=(64, 64), spacing_mm=(3.0, 3.0), motion_mm=6.0)
    reports = []
    register(phantom.sequence, device="cpu", progress=lambda fraction, message: reports.append((fraction, message)))
    network = [f for f, m in reports if m.startswith("network")]  # "network pass 1/1", ...
    scoring = [f for f, m in reports if m == "correspondence scores"]
    assert len(set(network)) >= 10 and network == sorted(network)  # 48 frames = 3 chunks per layer
    assert len(set(scoring)) >= 3
    assert [f for f, _ in reports] == sorted(f for f, _ in reports)  # never goes back

    cancel = threading.Event()
    seen_after_cancel = []

    def on_progress(fraction, message):
        if cancel.is_set():
            seen_after_cancel.append(message)
        if message.startswith("network") and fraction > 0.3:
            cancel.set()

    with pytest.raises(RegistrationCancelled):
        register(phantom.sequence, device="cpu", progress=on_progress, cancel=cancel)
    assert seen_after_cancel == []  # the very next check stopped it, inside the forward pass
