"""The cardiac phantom: determinism, conventions, and exactness of its ground truth."""

import functools

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_any2reg.core import phantom as ph
from napari_any2reg.core.phantom import (
    PHANTOM_KINDS,
    TISSUE_PROPERTIES,
    TISSUE_T1_MS,
    make_phantom,
    molli_inversion_times,
    sasha_saturation_times,
    signal_model,
    stone_inversion_times,
)
from napari_any2reg.core.sequence import Sequence
from napari_any2reg.core.spatial import jacobian_determinant, warp_images, warp_labels

# 96x96 at 3 mm and 64x64 at 4.5 mm show the same field of view as the 192x192 / 1.5 mm default.
SMALL = dict(shape=(96, 96), spacing_mm=(3.0, 3.0))
TINY = dict(shape=(64, 64), spacing_mm=(4.5, 4.5))


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """The phantom's tensors are small: one intra-op thread is as fast, and on a loaded
    2-core machine torch's thread pool is ~10x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def _phantom(kind, seed=0, size="small", **kw):
    return make_phantom(kind, seed=seed, **(SMALL if size == "small" else TINY), **kw)


def _interior(mask, iterations=1):
    return ndimage.binary_erosion(mask, iterations=iterations)


def _bilinear(field, point):
    """Independent bilinear sample of a (2, H, W) field at a (y, x) point."""
    return np.array([ndimage.map_coordinates(c, point.reshape(2, 1), order=1, mode="nearest")[0] for c in field])


# ---------------------------------------------------------------- determinism and structure
def test_same_seed_gives_identical_phantom_and_other_seed_differs():
    a = make_phantom("stone", seed=7, **TINY)
    b = make_phantom("stone", seed=7, **TINY)
    c = make_phantom("stone", seed=8, **TINY)
    for name in ("displacement", "labels", "common_labels", "heart_mask", "t1_map", "m0_map", "motion_free_frames"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.sequence.frames, b.sequence.frames)
    for name in a.landmarks:
        np.testing.assert_array_equal(a.landmarks[name], b.landmarks[name])
    assert not np.array_equal(a.sequence.frames, c.sequence.frames)
    assert not np.array_equal(a.displacement, c.displacement)
    assert not np.array_equal(a.common_labels, c.common_labels)


def test_params_arguments_reproduce_the_phantom():
    a = make_phantom("molli", seed=3, schedule="4(1)3(1)2", snr=25.0, **TINY)
    b = make_phantom(**a.params["arguments"])
    np.testing.assert_array_equal(a.sequence.frames, b.sequence.frames)
    np.testing.assert_array_equal(a.displacement, b.displacement)
    for key in ("kind", "seed", "schedule", "snr", "field_strength", "contrast", "motion_mm", "rotation_deg", "nonrigid_mm"):
        assert key in a.params


def test_noise_does_not_change_anatomy_or_motion():
    clean = make_phantom("stone", seed=2, snr=None, **TINY)
    noisy = make_phantom("stone", seed=2, snr=20.0, **TINY)
    np.testing.assert_array_equal(clean.displacement, noisy.displacement)
    np.testing.assert_array_equal(clean.motion_free_frames, noisy.motion_free_frames)
    assert not np.array_equal(clean.sequence.frames, noisy.sequence.frames)


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_every_field_has_the_documented_shape_and_dtype(kind):
    p = _phantom(kind)
    n, (h, w) = p.sequence.n_frames, SMALL["shape"]
    assert isinstance(p.sequence, Sequence)
    assert p.sequence.kind == kind
    assert p.sequence.frames.shape == (n, h, w) and p.sequence.frames.dtype == np.float32
    assert p.sequence.timings_ms.shape == (n,)
    assert p.sequence.spacing_mm == SMALL["spacing_mm"]
    assert p.displacement.shape == (n, 2, h, w) and p.displacement.dtype == np.float32
    assert p.labels.shape == (n, h, w) and p.labels.dtype == np.uint8
    assert p.common_labels.shape == (h, w) and p.common_labels.dtype == np.uint8
    assert set(np.unique(p.common_labels)) == {0, 1, 2, 3}
    assert set(np.unique(p.labels)) <= {0, 1, 2, 3}
    assert p.heart_mask.shape == (h, w) and p.heart_mask.dtype == bool
    assert p.heart_mask[p.common_labels > 0].all() and p.heart_mask.sum() > (p.common_labels > 0).sum()
    assert p.t1_map.shape == (h, w) and p.t1_map.dtype == np.float32
    assert p.m0_map.shape == (h, w) and p.m0_map.dtype == np.float32
    assert p.motion_free_frames.shape == (n, h, w) and p.motion_free_frames.dtype == np.float32
    assert {"rv_insertion_anterior", "rv_insertion_inferior", "lv_centre"} <= set(p.landmarks)
    assert set(p.landmarks) == set(p.common_landmarks)
    for name in p.landmarks:
        assert p.landmarks[name].shape == (n, 2) and p.landmarks[name].dtype == np.float32
        assert p.common_landmarks[name].shape == (2,) and p.common_landmarks[name].dtype == np.float32
    assert np.isfinite(p.sequence.frames).all() and (p.sequence.frames >= 0).all()
    assert p.params["kind"] == kind and p.params["n_frames"] == n


# ---------------------------------------------------------------- frame counts and timings
@pytest.mark.parametrize(
    "kind, options, expected",
    [("molli", {"schedule": "5(3)3"}, 8), ("molli", {"schedule": "4(1)3(1)2"}, 9), ("stone", {}, 11),
     ("sasha", {}, 10), ("cine", {}, 25)],
)
def test_default_number_of_frames(kind, options, expected):
    p = make_phantom(kind, seed=1, **TINY, **options)
    assert p.sequence.n_frames == expected == len(p.sequence.timings_ms)


@pytest.mark.parametrize("kind", ["stone", "ir", "cine", "perfusion", "asl", "sasha"])
@pytest.mark.parametrize("n", [2, 64])
def test_n_frames_override(kind, n):
    p = make_phantom(kind, seed=4, n_frames=n, **TINY)
    assert p.sequence.n_frames == n and p.displacement.shape[0] == n and p.labels.shape[0] == n
    assert float(jacobian_determinant(p.displacement).min()) > 0


def test_molli_inversion_times_are_sorted_and_realistic():
    tis = molli_inversion_times("5(3)3", heart_rate_bpm=60)
    np.testing.assert_allclose(tis, [100, 180, 1100, 1180, 2100, 2180, 3100, 4100])
    assert np.all(np.diff(tis) > 0) and tis[0] < 200 and tis[-1] > 2000
    tis9 = molli_inversion_times("4(1)3(1)2", heart_rate_bpm=75)
    assert tis9.size == 9 and np.all(np.diff(tis9) > 0) and tis9[0] < 200
    assert np.isclose(tis9[-1], 100 + 3 * 800)  # first experiment, 4th image, RR = 800 ms
    p = _phantom("molli", size="tiny")
    np.testing.assert_allclose(p.sequence.timings_ms, tis)
    with pytest.raises(ValueError, match="schedule"):
        molli_inversion_times("5-3-3")
    with pytest.raises(ValueError, match="n_frames"):
        make_phantom("molli", n_frames=11, **TINY)


def test_stone_and_sasha_have_one_unprepared_frame():
    stone = _phantom("stone", size="tiny").sequence.timings_ms
    assert np.isinf(stone).sum() == 1 and stone.size == 11
    finite = stone[np.isfinite(stone)]
    assert finite.min() <= 150 and finite.max() >= 1000
    assert np.isinf(stone_inversion_times(5)).sum() == 1
    sasha = sasha_saturation_times(10)
    assert np.isinf(sasha).sum() == 1 and 90 <= sasha[1] <= 150 and 600 <= sasha[-1] <= 800


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        make_phantom("dwi", **TINY)
    with pytest.raises(ValueError, match="field_strength"):
        make_phantom("stone", field_strength=7.0, **TINY)
    with pytest.raises(ValueError, match="contrast"):
        make_phantom("stone", contrast="late", **TINY)
    with pytest.raises(ValueError, match="n_frames"):
        make_phantom("stone", n_frames=1, **TINY)
    with pytest.raises(ValueError, match="fold"):
        make_phantom("stone", nonrigid_mm=40.0, nonrigid_scale_mm=8.0, **TINY)


# ---------------------------------------------------------------- motion
@pytest.mark.parametrize("kind", ["molli", "stone", "perfusion", "cine"])
def test_true_displacement_is_fold_free(kind):
    p = _phantom(kind)
    assert float(jacobian_determinant(p.displacement).min()) > 0
    assert p.params["min_jacobian"] > 0


@pytest.mark.parametrize("kind", ["molli", "stone", "sasha", "asl"])
def test_motion_is_zero_mean_over_frames(kind):
    p = _phantom(kind)
    assert np.abs(p.displacement.mean(axis=0)).max() < 1e-3
    assert np.abs(p.displacement).max() > 0.5  # but it does move


def test_motion_amplitude_follows_the_request():
    p = make_phantom("stone", seed=5, snr=None, motion_mm=6.0, rotation_deg=0.0, nonrigid_mm=0.0, **SMALL)
    centre = p.common_landmarks["lv_centre"]
    dy = np.array([_bilinear(u, centre)[0] for u in p.displacement]) * SMALL["spacing_mm"][0]
    assert 0.9 * 6.0 < np.ptp(dy) < 1.05 * 6.0  # peak-to-peak superior-inferior motion of the heart
    body_wall = np.abs(p.displacement[:, :, 2, :]).max()  # top row: anterior chest wall / air
    assert body_wall < np.abs(p.displacement[:, :, p.heart_mask]).max()  # the wall moves less
    full = _phantom("stone", seed=0)
    mm = np.linalg.norm(full.displacement[:, :, full.heart_mask], axis=1) * SMALL["spacing_mm"][0]
    assert 0.4 * 5.0 < mm.max() < 2.5 * 5.0
    still = make_phantom("stone", seed=5, motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0, **TINY)
    assert np.abs(still.displacement).max() == 0.0


# ---------------------------------------------------------------- the ground-truth property
@pytest.mark.parametrize("kind, seed, tolerance", [("molli", 1, 0.02), ("stone", 2, 0.02), ("cine", 3, 0.03)])
def test_true_displacement_registers_the_noise_free_frames(kind, seed, tolerance):
    p = make_phantom(kind, seed=seed, snr=None, motion_mm=8.0, **SMALL)
    frames, truth = p.sequence.frames, p.motion_free_frames
    roi = p.heart_mask.copy()
    roi[:4], roi[-4:], roi[:, :4], roi[:, -4:] = False, False, False, False
    scale = np.ptp(truth)
    registered = warp_images(frames, p.displacement)
    after = np.abs(registered - truth)[:, roi].mean() / scale
    before = np.abs(frames - truth)[:, roi].mean() / scale
    assert after < tolerance, f"registered error {after:.4f}"
    assert before > 2.5 * after, f"raw {before:.4f} vs registered {after:.4f}"
    assert p.params["inverse_residual_px"] < 0.1
    # the registered labels match the common labels almost everywhere in the heart
    registered_labels = warp_labels(p.labels, p.displacement)
    agree = (registered_labels[:, roi] == p.common_labels[roi]).mean()
    raw_agree = (p.labels[:, roi] == p.common_labels[roi]).mean()
    assert agree > 0.9 and agree > raw_agree


def test_zero_motion_frames_equal_the_common_grid_contrast():
    p = make_phantom("molli", seed=6, snr=None, motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0, **TINY)
    np.testing.assert_allclose(p.sequence.frames, p.motion_free_frames, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(p.labels, np.broadcast_to(p.common_labels, p.labels.shape))


# ---------------------------------------------------------------- landmarks
@pytest.mark.parametrize("kind, seed", [("stone", 0), ("molli", 1), ("cine", 2)])
def test_rv_insertion_landmarks_sit_between_myocardium_and_rv(kind, seed):
    p = _phantom(kind, seed)
    r = 2
    for name in ("rv_insertion_anterior", "rv_insertion_inferior"):
        y, x = np.rint(p.common_landmarks[name]).astype(int)
        around = p.common_labels[y - r : y + r + 1, x - r : x + r + 1]
        assert (around == 2).any() and (around == 3).any(), name
        for i in range(p.sequence.n_frames):  # and in every raw frame, at the moved position
            y, x = np.rint(p.landmarks[name][i]).astype(int)
            around = p.labels[i, y - r : y + r + 1, x - r : x + r + 1]
            assert (around == 2).any() and (around == 3).any(), (name, i)
    assert p.common_landmarks["rv_insertion_anterior"][0] < p.common_landmarks["rv_insertion_inferior"][0]
    y, x = np.rint(p.common_landmarks["lv_centre"]).astype(int)
    assert p.common_labels[y, x] == 1


def test_landmarks_move_with_the_displacement():
    p = _phantom("stone", 3)
    for name, common in p.common_landmarks.items():
        for i in range(p.sequence.n_frames):
            expected = common + _bilinear(p.displacement[i], common)
            np.testing.assert_allclose(p.landmarks[name][i], expected, atol=1e-3)
    spread = np.ptp(p.landmarks["lv_centre"], axis=0).max()
    assert spread > 0.5  # the heart is at different positions in different frames


# ---------------------------------------------------------------- contrast and signal
@pytest.mark.parametrize("field, contrast", [(1.5, "native"), (3.0, "native"), (1.5, "post"), (3.0, "post")])
def test_t1_map_matches_the_tissue_table(field, contrast):
    p = make_phantom("molli", seed=1, field_strength=field, contrast=contrast, snr=None, **TINY)
    table = TISSUE_T1_MS[field][contrast]
    assert np.all(p.t1_map[p.common_labels == 2] == table["myocardium"])
    pool = p.t1_map[_interior(p.common_labels == 1)]  # blood, plus the papillary muscles
    assert set(np.unique(pool)) <= {table["blood"], table["myocardium"]}
    assert np.mean(pool == table["blood"]) > 0.8
    assert np.all(p.t1_map[_interior(p.common_labels == 3)] == table["blood"])
    assert p.t1_map[0, 0] == 0 and p.t1_map[-1, -1] == 0  # air outside the body
    assert table["blood"] > table["myocardium"] if contrast == "native" else table["blood"] < table["myocardium"]


def test_tissue_table_has_literature_values():
    native15, native3 = TISSUE_T1_MS[1.5]["native"], TISSUE_T1_MS[3.0]["native"]
    assert 950 <= native15["myocardium"] <= 1050 and 1450 <= native15["blood"] <= 1650
    assert 1150 <= native3["myocardium"] <= 1250 and 1800 <= native3["blood"] <= 2000
    assert native15["fat"] < native15["liver"] < native15["myocardium"]
    for tissue in native15:
        assert native3[tissue] >= native15[tissue]


@pytest.mark.parametrize("kind", ["molli", "stone", "sasha", "ir", "cine", "asl"])
def test_noise_free_signal_follows_signal_model(kind):
    p = _phantom(kind, 0, snr=None)
    timings = p.sequence.timings_ms
    for label, tissue in ((2, "myocardium"), (3, "blood")):
        region = _interior(p.common_labels == label)
        assert region.sum() > 5
        props = TISSUE_PROPERTIES[tissue]
        model = signal_model(
            kind, p.t1_map[region], p.m0_map[region], timings,
            b_over_a=props["molli_b_over_a"], t2_ms=props["t2_ms"],
            label_fraction=ph._ASL_LABEL_FRACTION["lv_myocardium" if label == 2 else "rv_blood"],
        )
        np.testing.assert_allclose(p.motion_free_frames[:, region], model, rtol=1e-4, atol=1e-6)


def test_signal_model_is_vectorised_and_handles_unprepared_frames():
    t1 = np.full((3, 4), 1000.0)
    m0 = np.linspace(0.5, 1.0, 12).reshape(3, 4)
    out = signal_model("stone", t1, m0, [np.inf, 100.0, 1000.0])
    assert out.shape == (3, 3, 4)
    np.testing.assert_allclose(out[0], m0)  # TI = inf: no inversion
    np.testing.assert_allclose(out[1], m0 * np.abs(1 - 2 * np.exp(-0.1)))
    sasha = signal_model("sasha", 1000.0, 2.0, [np.inf, 500.0])
    np.testing.assert_allclose(sasha, [2.0, 2.0 * (1 - np.exp(-0.5))])
    molli = signal_model("molli", 1000.0, 1.0, [0.0, 1e6], b_over_a=2.2)
    np.testing.assert_allclose(molli, [1.2, 1.0])  # |A - B| and A
    # T1 = T1* (B/A - 1): the null is at TI = T1* ln(B/A)
    null = 1000.0 / 1.2 * np.log(2.2)
    assert signal_model("molli", 1000.0, 1.0, [null], b_over_a=2.2)[0] < 1e-9
    assert signal_model("stone", 0.0, 1.0, [100.0])[0] == 0.0  # no tissue, no signal


def test_molli_signal_polarity():
    p = _phantom("molli", 0, snr=None)
    tis = p.sequence.timings_ms
    blood = p.motion_free_frames[:, _interior(p.common_labels == 1, 2)].mean(axis=1)
    myo = p.motion_free_frames[:, _interior(p.common_labels == 2)].mean(axis=1)
    near_null = int(np.argmin(np.abs(tis - 1100)))
    assert blood[near_null] < 0.2 * blood[-1]  # blood crosses zero near TI ~ 1 s
    assert blood[near_null] < myo[near_null]  # dark blood around its null
    assert blood[-1] > myo[-1]  # bright blood at long TI
    assert blood[0] > 3 * blood[near_null]  # early TI: strongly inverted, bright in magnitude
    assert myo[1] < myo[0] and blood[1] < blood[0]  # inverted magnetisation recovering toward the null
    assert myo[1] / myo[0] < blood[1] / blood[0]  # shorter T1: the myocardium recovers faster


def test_perfusion_enhances_rv_then_lv_then_myocardium():
    p = _phantom("perfusion", 0, snr=None)
    region = {lab: _interior(p.common_labels == lab) for lab in (1, 2, 3)}
    curve = {lab: p.motion_free_frames[:, m].mean(axis=1) for lab, m in region.items()}
    peak = {lab: int(np.argmax(c)) for lab, c in curve.items()}
    assert peak[3] < peak[1] <= peak[2]
    assert curve[1].max() > 4 * curve[1][0]  # blood pool enhances strongly
    assert 1.5 * curve[2][0] < curve[2].max() < curve[1].max()  # myocardium modestly


def test_asl_label_and_control_differ_slightly():
    p = _phantom("asl", 0, snr=None)
    myo = p.motion_free_frames[:, _interior(p.common_labels == 2)].mean(axis=1)
    control, label = myo[0::2], myo[1::2]
    k = min(control.size, label.size)
    difference = (control[:k] - label[:k]) / control[:k]
    assert np.all(difference > 0.005) and np.all(difference < 0.05)


def test_rician_noise_level_follows_snr():
    p = make_phantom("stone", seed=1, snr=20.0, **SMALL)
    sigma = p.params["noise_sigma"]
    assert sigma > 0
    air = p.labels == 0
    air &= p.motion_free_frames == 0  # pure background: Rayleigh, mean sigma * sqrt(pi / 2)
    background = p.sequence.frames[air]
    assert background.size > 1000
    assert abs(background.mean() / (sigma * np.sqrt(np.pi / 2)) - 1) < 0.1


# ---------------------------------------------------------------- cine
def test_cine_contracts_over_the_cycle():
    p = make_phantom("cine", seed=2, snr=None, motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0, **SMALL)
    area = (p.labels == 1).sum(axis=(1, 2))
    myo = (p.labels == 2).sum(axis=(1, 2))
    es = p.params["end_systolic_frame"]
    assert area[es] < 0.8 * area[0]  # realistic ejection
    assert area.argmin() in (es - 1, es, es + 1)
    assert area[-1] > 0.9 * area[0]  # back to end-diastole
    assert abs(myo[es] / myo[0] - 1) < 0.25  # the myocardium thickens, keeping its area
    np.testing.assert_allclose(p.sequence.timings_ms, np.arange(25) * 1000.0 / 25)
    # the contraction is in the true displacement: warping back undoes it
    registered = warp_labels(p.labels, p.displacement)
    reg_area = (registered == 1).sum(axis=(1, 2))
    assert np.abs(reg_area / area[0] - 1).max() < 0.1
    assert float(jacobian_determinant(p.displacement).min()) > 0
