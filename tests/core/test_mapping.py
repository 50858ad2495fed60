"""T1 mapping (core.mapping, core.mapping.roi): accuracy, polarity, uncertainty, failures, ROI stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_any2reg.core.mapping import (
    DecayModel,
    FAILURE_REASONS,
    T1_MODELS,
    fit_t1,
    model_for_kind,
    model_signal,
    t1_gradient,
)
from napari_any2reg.core.mapping.roi import r2_survival, roi_masks, roi_statistics, survival_thresholds
from napari_any2reg.core.phantom import (
    ir_inversion_times,
    make_phantom,
    molli_inversion_times,
    sasha_saturation_times,
    signal_model,
    stone_inversion_times,
)

T1_RANGE = np.linspace(200.0, 2000.0, 37)  # the 200-2000 ms, every 50 ms


def _rel_error(fitted, truth):
    return np.abs(np.asarray(fitted, np.float64) / truth - 1.0)


# ---------------------------------------------------------------------- noiseless accuracy
@pytest.mark.parametrize("schedule", ["5(3)3", "4(1)3(1)2"])
@pytest.mark.parametrize("b_over_a", [2.0, 2.15, 2.3])
def test_molli_noiseless_recovers_t1_and_t1_star(schedule, b_over_a):
    ti = molli_inversion_times(schedule)
    m0 = 850.0  # scanner units: the fit must not depend on the intensity scale
    curves = m0 * signal_model("molli", T1_RANGE, 1.0, ti, b_over_a=b_over_a)
    result = fit_t1(curves, ti, "molli", device="cpu")
    assert result.n_failed == 0
    assert _rel_error(result.t1_ms, T1_RANGE).max() < 0.005
    t1_star = T1_RANGE / (b_over_a - 1.0)
    assert _rel_error(result.t1_star_ms, t1_star).max() < 0.005
    np.testing.assert_allclose(result.params["A"], m0, rtol=1e-3)
    np.testing.assert_allclose(result.params["B"], b_over_a * m0, rtol=1e-3)
    assert np.all(result.r_squared > 0.99999)
    assert result.t1_ms.dtype == np.float32 and result.t1_ms.shape == T1_RANGE.shape


@pytest.mark.parametrize("model", ["stone", "stone2", "ir"])
def test_stone_noiseless_recovers_t1_with_the_non_inverted_frame(model):
    ti = stone_inversion_times(11)
    assert np.isinf(ti).sum() == 1  # the reference frame without inversion
    curves = 500.0 * signal_model("stone", T1_RANGE, 1.0, ti)
    result = fit_t1(curves, ti, model, device="cpu")
    assert result.n_failed == 0
    assert _rel_error(result.t1_ms, T1_RANGE).max() < 0.005
    amplitude = result.params["M0" if model == "stone2" else "A"]
    np.testing.assert_allclose(amplitude, 500.0, rtol=1e-3)  # the TI = inf frame gives S = M0


def test_generic_inversion_recovery_with_user_timings():
    ti = ir_inversion_times(10)  # geometric 100..3000 ms
    curves = signal_model("ir", T1_RANGE, 2.0, ti, inversion_efficiency=0.93)
    result = fit_t1(curves, ti, "ir", device="cpu")
    assert result.n_failed == 0
    assert _rel_error(result.t1_ms, T1_RANGE).max() < 0.005
    np.testing.assert_allclose(result.params["B"] / result.params["A"], 2 * 0.93, rtol=1e-3)


def test_sasha_three_and_two_parameter_models():
    ts = sasha_saturation_times(10)
    imperfect = signal_model("sasha", T1_RANGE, 1.0, ts, saturation_efficiency=0.95)
    three = fit_t1(imperfect, ts, "sasha", device="cpu")
    assert three.n_failed == 0
    assert _rel_error(three.t1_ms, T1_RANGE).max() < 0.005
    np.testing.assert_allclose(three.params["B"], 0.95, rtol=1e-3)
    ideal = signal_model("sasha", T1_RANGE, 1.0, ts)
    two = fit_t1(ideal, ts, "sasha2", device="cpu")
    assert two.n_failed == 0
    assert _rel_error(two.t1_ms, T1_RANGE).max() < 0.005
    assert two.param_names == ("A", "t1_ms")


def test_frame_order_does_not_matter():
    ti = molli_inversion_times("5(3)3")
    curves = signal_model("molli", T1_RANGE, 1.0, ti, b_over_a=2.1)
    order = np.random.default_rng(3).permutation(ti.size)
    sorted_fit = fit_t1(curves, ti, "molli", device="cpu")
    shuffled = fit_t1(curves[order], ti[order], "molli", device="cpu")
    np.testing.assert_allclose(shuffled.t1_ms, sorted_fit.t1_ms, rtol=1e-5)
    np.testing.assert_array_equal(shuffled.n_inverted, sorted_fit.n_inverted)


def test_model_signal_reproduces_the_fitted_curves():
    ti = stone_inversion_times(11)
    for model in T1_MODELS:
        kind = "sasha" if model.startswith("sasha") else "stone"
        timings = sasha_saturation_times(10) if kind == "sasha" else ti
        curves = signal_model(kind, T1_RANGE[:5], 1.0, timings)
        if isinstance(T1_MODELS[model], DecayModel):  # T2 / T2*: a decay over echo times
            timings = np.array([2.0, 10.0, 25.0, 40.0, 55.0, 80.0])
            curves = np.exp(-timings[:, None] / np.array([20.0, 45.0, 60.0, 120.0, 250.0])[None])
        result = fit_t1(curves, timings, model, device="cpu")
        np.testing.assert_allclose(np.abs(model_signal(model, result.params, timings)), curves, atol=1e-4)


# ---------------------------------------------------------------------- polarity restoration
def test_polarity_restoration_negates_exactly_the_inverted_samples():
    ti = molli_inversion_times("4(1)3(1)2")  # 100, 180, 260, 1100, ... ms
    b_over_a = 2.15
    t1 = np.array([200.0, 300.0, 450.0, 700.0, 1000.0, 1500.0, 2000.0])
    t1_star = t1 / (b_over_a - 1.0)
    signed = 1.0 - b_over_a * np.exp(-ti[:, None] / t1_star[None, :])
    expected = (signed < 0).sum(axis=0)
    assert len(set(expected.tolist())) > 2  # the set spans several sign patterns
    result = fit_t1(np.abs(signed), ti, "molli", device="cpu")
    np.testing.assert_array_equal(result.n_inverted, expected)
    assert _rel_error(result.t1_ms, t1).max() < 0.005

    # without restoration the magnitude curve cannot be fitted: worse fit or no fit at all
    plain = fit_t1(np.abs(signed), ti, "molli", device="cpu", polarity_restoration=False)
    bad = ~np.isfinite(plain.t1_ms) | (_rel_error(plain.t1_ms, t1) > 0.05)
    assert bad.all()


def test_sasha_does_not_restore_polarity_by_default():
    ts = sasha_saturation_times(10)
    result = fit_t1(signal_model("sasha", T1_RANGE, 1.0, ts), ts, "sasha", device="cpu")
    assert np.all(result.n_inverted == 0)


# ---------------------------------------------------------------------- uncertainty (SD map)
def _rician_curves(signed, snr, n, seed):
    """``n`` magnitude realisations of each signed curve (amplitude 1, complex Gaussian noise)."""
    rng = np.random.default_rng(seed)
    sigma = 1.0 / snr
    shape = signed.shape + (n,)
    real = signed[..., None] + sigma * rng.standard_normal(shape)
    imag = sigma * rng.standard_normal(shape)
    return np.sqrt(real**2 + imag**2)


MC_CASES = [
    # (model, timings, signed-curve maker, T1 ms, SNR)
    ("molli", molli_inversion_times("5(3)3"), "molli", 1000.0, 25.0),
    ("molli", molli_inversion_times("5(3)3"), "molli", 1550.0, 40.0),
    ("molli", molli_inversion_times("4(1)3(1)2"), "molli", 600.0, 30.0),
    ("stone", stone_inversion_times(11), "ir", 700.0, 25.0),
    ("stone2", stone_inversion_times(11), "ir", 1000.0, 40.0),
    ("sasha", sasha_saturation_times(10), "sr", 1000.0, 30.0),
    ("sasha2", sasha_saturation_times(10), "sr", 1500.0, 25.0),
]


def _signed_curve(maker, timings, t1, b_over_a=2.15):
    decay = np.exp(-timings / (t1 / (b_over_a - 1.0) if maker == "molli" else t1))
    if maker == "molli":
        return 1.0 - b_over_a * decay
    if maker == "ir":
        return 1.0 - 2.0 * decay
    return 1.0 - decay


@pytest.mark.parametrize("model, timings, maker, t1, snr", MC_CASES, ids=[f"{c[0]}-{c[3]:.0f}ms-snr{c[4]:.0f}" for c in MC_CASES])
def test_sd_map_matches_monte_carlo(model, timings, maker, t1, snr):
    data = _rician_curves(_signed_curve(maker, timings, t1), snr, 2000, seed=int(t1 + snr))
    result = fit_t1(data, timings, model, device="cpu")
    ok = np.isfinite(result.t1_ms)
    assert ok.mean() > 0.99
    empirical = result.t1_ms[ok].std(ddof=1)
    # E[s²] = σ², so the root-mean-square of the per-pixel SD is the estimator to compare
    predicted = np.sqrt(np.mean(result.t1_sd_ms[ok] ** 2))
    assert abs(predicted / empirical - 1.0) < 0.15, (predicted, empirical)


def test_molli_sd_is_propagated_through_b_over_a_not_scaled_from_t1_star():
    ti = molli_inversion_times("5(3)3")
    b_over_a = 2.15
    data = _rician_curves(_signed_curve("molli", ti, 1000.0, b_over_a), 25.0, 2000, seed=11)
    result = fit_t1(data, ti, "molli", device="cpu")
    ok = np.isfinite(result.t1_ms)
    empirical = result.t1_ms[ok].std(ddof=1)
    propagated = np.sqrt(np.mean(result.t1_sd_ms[ok] ** 2))
    # the shortcut docs/design.md §8 warns about: SD(T1*) times (B/A - 1), ignoring the correlation
    naive = result.t1_star_ms[ok].std(ddof=1) * (b_over_a - 1.0)
    assert abs(propagated / empirical - 1.0) < 0.15
    assert naive > 1.5 * empirical


def test_t1_gradient_matches_finite_differences():
    theta = np.array([1.3, 2.9, 850.0])
    analytic = t1_gradient("molli", theta)

    def t1_of(th):
        return th[2] * (th[1] / th[0] - 1.0)

    numeric = np.array(
        [(t1_of(theta + h * np.eye(3)[i]) - t1_of(theta - h * np.eye(3)[i])) / (2 * h) for i, h in enumerate((1e-6, 1e-6, 1e-3))]
    )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
    np.testing.assert_array_equal(t1_gradient("stone", theta), [0.0, 0.0, 1.0])


# ---------------------------------------------------------------------- failures and masks
def test_failed_pixels_are_nan_and_counted_never_clipped():
    ti = molli_inversion_times("5(3)3")
    good = signal_model("molli", np.array([900.0, 1200.0]), 1.0, ti, b_over_a=2.1)
    rng = np.random.default_rng(0)
    zero = np.zeros((ti.size, 1))  # no signal
    constant = np.full((ti.size, 1), 5.0)  # no recovery at all
    very_long = signal_model("molli", 80000.0, 1.0, ti, b_over_a=2.1)[:, None]  # T1 far above the range
    curves = np.concatenate([good, zero, constant, very_long, rng.random((ti.size, 3))], axis=1)
    result = fit_t1(curves, ti, "molli", device="cpu")
    assert result.failed.tolist()[:5] == [False, False, True, True, True]
    assert result.n_failed == int(result.failed.sum()) >= 3
    assert result.failure_code[2] == 1  # zero signal
    assert result.failure_code[4] == 3  # ends on the bound of t1_range_ms, reported as such
    for name in ("t1_ms", "t1_sd_ms", "r_squared", "residual_rms"):
        values = getattr(result, name)
        assert np.all(np.isnan(values[result.failed])), name
        assert np.all(np.isfinite(values[~result.failed])), name
    for values in result.params.values():
        assert np.all(np.isnan(values[result.failed]))
    assert np.all(result.n_inverted[result.failed] == -1)
    assert set(result.failure_counts()) <= set(FAILURE_REASONS.values())
    assert sum(result.failure_counts().values()) == result.n_failed


def test_mask_limits_the_fit_and_the_failure_count():
    ti = molli_inversion_times("5(3)3")
    frames = np.zeros((ti.size, 16, 16), np.float32)  # all zero: would fail everywhere
    frames[:, 4:8, 4:8] = signal_model("molli", 1000.0, 300.0, ti, b_over_a=2.1)[:, None, None]
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    result = fit_t1(frames, ti, "molli", mask=mask, device="cpu")
    assert result.n_fitted == 16 and result.n_failed == 0
    assert np.all(np.isnan(result.t1_ms[~mask]))
    np.testing.assert_allclose(result.t1_ms[mask], 1000.0, rtol=1e-3)
    everywhere = fit_t1(frames, ti, "molli", device="cpu")
    assert everywhere.n_failed == 256 - 16


def test_sequence_input_gives_model_and_timings_and_is_not_modified():
    phantom = make_phantom("molli", seed=2, shape=(32, 32), spacing_mm=(6.0, 6.0), snr=None, motion_mm=0.0,
                           rotation_deg=0.0, nonrigid_mm=0.0)
    sequence = phantom.sequence
    before = sequence.frames.copy()
    result = fit_t1(sequence, device="cpu", mask=phantom.heart_mask)
    assert result.model == "molli"
    np.testing.assert_array_equal(result.timings_ms, sequence.timings_ms)
    np.testing.assert_array_equal(sequence.frames, before)
    summary = result.summary()
    assert summary["model"] == "molli" and summary["n_failed"] == result.n_failed
    assert summary["inversion_times_ms"] == sequence.timings_ms.tolist()
    assert result.params_stack().shape == (3, 32, 32)


def test_input_array_is_not_modified_and_integer_input_works():
    ti = stone_inversion_times(11)
    frames = np.round(1000 * signal_model("stone", np.full((8, 8), 800.0), 1.0, ti)).astype(np.int16)
    copy = frames.copy()
    result = fit_t1(frames, ti, "stone", device="cpu")
    np.testing.assert_array_equal(frames, copy)
    np.testing.assert_allclose(result.t1_ms, 800.0, rtol=0.01)


# ---------------------------------------------------------------------- errors
def test_timings_count_mismatch_names_both_numbers_and_the_fix():
    ti = molli_inversion_times("5(3)3")
    curves = signal_model("molli", T1_RANGE[:3], 1.0, ti)
    with pytest.raises(ValueError, match=r"7 inversion times given for 8 frames.*one time \(ms\) per frame"):
        fit_t1(curves, ti[:7], "molli", device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "t1rho"}, "Unknown T1 model"),
        ({"timings_ms": None}, "no inversion times given"),
        ({"mask": np.ones((3, 3), bool)}, "mask has shape"),
        ({"timings_ms": [100.0] * 8}, "at least 2 distinct"),
        ({"timings_ms": [-5.0, 100, 200, 300, 400, 500, 600, 700]}, ">= 0 ms"),
        ({"t1_range_ms": (100.0, 10.0)}, "t1_range_ms"),
    ],
)
def test_clear_errors(kwargs, message):
    ti = molli_inversion_times("5(3)3")
    args = {"model": "molli", "timings_ms": ti}
    args.update(kwargs)
    curves = signal_model("molli", T1_RANGE[:4], 1.0, ti)
    with pytest.raises(ValueError, match=message):
        fit_t1(curves, args.pop("timings_ms"), args.pop("model"), device="cpu", **args)


def test_other_input_errors():
    ti = molli_inversion_times("5(3)3")
    with pytest.raises(ValueError, match="magnitude"):
        fit_t1(np.ones((8, 4), complex), ti, "molli")
    with pytest.raises(ValueError, match="needs at least 4 frames"):
        fit_t1(np.ones((3, 4)), [100.0, 200.0, 300.0], "molli")
    cine = make_phantom("cine", seed=0, shape=(32, 32), n_frames=6).sequence
    with pytest.raises(ValueError, match="No T1 model for sequence kind 'cine'"):
        fit_t1(cine)
    assert model_for_kind("MOLLI") == "molli" and model_for_kind("perfusion") is None


def test_cancel_raises():
    from napari_any2reg.core.engine_api import Cancelled
    from napari_any2reg.core.mapping import FitCancelled

    ti = molli_inversion_times("5(3)3")
    with pytest.raises(FitCancelled):
        fit_t1(signal_model("molli", T1_RANGE, 1.0, ti), ti, "molli", cancel=lambda: True, device="cpu")
    # the one cancellation exception of the package catches a cancelled fit too
    with pytest.raises(Cancelled, match="cancelled"):
        fit_t1(signal_model("molli", T1_RANGE, 1.0, ti), ti, "molli", cancel=lambda: True, device="cpu")


def test_progress_reaches_one():
    ti = molli_inversion_times("5(3)3")
    seen = []
    fit_t1(signal_model("molli", T1_RANGE, 1.0, ti), ti, "molli", device="cpu",
           progress=lambda fraction, message: seen.append(fraction))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    ti = molli_inversion_times("5(3)3")
    data = _rician_curves(_signed_curve("molli", ti, 1000.0), 30.0, 500, seed=5)
    cpu = fit_t1(data, ti, "molli", device="cpu")
    gpu = fit_t1(data, ti, "molli", device="cuda")
    assert gpu.device.startswith("cuda")
    np.testing.assert_allclose(gpu.t1_ms, cpu.t1_ms, rtol=1e-3, equal_nan=True)


# ---------------------------------------------------------------------- ROI statistics
def test_roi_statistics_by_label_and_boolean_mask():
    t1 = np.array([[1000.0, 1010.0, np.nan], [1500.0, 1550.0, 1600.0]])
    sd = np.array([[20.0, 30.0, np.nan], [40.0, 40.0, 40.0]])
    r2 = np.array([[0.99, 0.85, np.nan], [0.95, 0.999, 0.91]])
    labels = np.array([[2, 2, 2], [1, 1, 0]])
    rows = {row["label"]: row for row in roi_statistics(t1, labels, t1_sd_ms=sd, r_squared=r2)}
    myo = rows[2]
    assert myo["name"] == "LV myocardium"
    assert (myo["n_pixels"], myo["n_valid"], myo["n_failed"]) == (3, 2, 1)
    assert myo["t1_mean_ms"] == pytest.approx(1005.0)
    assert myo["t1_sd_ms"] == pytest.approx(np.std([1000.0, 1010.0], ddof=1))
    assert myo["fit_sd_mean_ms"] == pytest.approx(25.0)
    assert myo["r2_above_fraction"] == pytest.approx(1 / 3)  # the failed pixel counts as not good
    blood = rows[1]
    assert blood["name"] == "LV blood pool" and blood["t1_mean_ms"] == pytest.approx(1525.0)
    assert blood["r2_above_fraction"] == pytest.approx(1.0)
    (single,) = roi_statistics(t1, labels > 0, r2_threshold=0.98, r_squared=r2)
    assert single["name"] == "ROI" and single["n_pixels"] == 5
    assert single["r2_above_fraction"] == pytest.approx(2 / 5)
    assert roi_masks(np.zeros((2, 2), bool)) == {}


def test_r2_survival_curve():
    r2 = np.array([0.85, 0.92, 0.95, 0.99, 0.999, np.nan])
    roi = np.ones(6, bool)
    thresholds, fraction = r2_survival(r2, roi)
    np.testing.assert_array_equal(thresholds, survival_thresholds())
    assert thresholds[0] == 0.9 and thresholds[-1] == 1.0 and thresholds.size == 101
    assert fraction[0] == pytest.approx(4 / 6) and fraction[-1] == 0.0
    assert np.all(np.diff(fraction) <= 0)
    with pytest.raises(ValueError, match="empty"):
        r2_survival(r2, np.zeros(6, bool))
    with pytest.raises(ValueError, match="same grid"):
        roi_statistics(np.zeros((2, 2)), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="integers"):
        roi_masks(np.array([[0.5, 1.0]]))


# ---------------------------------------------------------------------- registration helps the map
def _any2reg_weights_available() -> bool:
    from napari_any2reg.io.model_io import read_manifest, weights_dir

    try:
        manifest = read_manifest()
    except Exception:
        return False
    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS in manifest and (weights_dir() / DEFAULT_WEIGHTS).is_file()


def _myocardial_t1_quality(phantom, frames):
    myo = phantom.common_labels == 2
    result = fit_t1(frames, phantom.sequence.timings_ms, "molli", mask=phantom.heart_mask, device="cpu")
    error = np.abs(result.t1_ms[myo] - phantom.t1_map[myo])
    error = np.where(np.isfinite(error), error, phantom.t1_map[myo])  # a failed pixel is a 100 % error
    return float(error.mean()), float(np.nan_to_num(result.r_squared[myo], nan=0.0).mean())


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["groupwise", "any2reg"])
def test_registration_improves_myocardial_t1_and_r2(engine):
    from napari_any2reg.core.registration import register

    if engine == "any2reg" and not _any2reg_weights_available():
        pytest.skip("the default any2reg weights are not shipped")
    torch.manual_seed(0)
    phantom = make_phantom("molli", seed=0, shape=(64, 64), spacing_mm=(2.25, 2.25), motion_mm=10)
    options = {"iterations_scale": 0.5} if engine == "groupwise" else {}
    registered = register(phantom.sequence, engine=engine, device="cpu", **options).registered
    error_before, r2_before = _myocardial_t1_quality(phantom, phantom.sequence.frames)
    error_after, r2_after = _myocardial_t1_quality(phantom, registered)
    assert error_after < 0.8 * error_before, (error_before, error_after)
    assert r2_after > r2_before, (r2_before, r2_after)


# ---------------------------------------------------------------------- models as classes
def test_a_registered_toy_model_is_fitted_listed_and_defaulted(request):
    from napari_any2reg.core import mapping

    # registration is undone after the test: T1_MODELS is one dict that the modules of
    # core.mapping share, so its contents are restored (rebinding one module's name would not do)
    saved = dict(mapping.T1_MODELS)
    request.addfinalizer(lambda: (mapping.T1_MODELS.clear(), mapping.T1_MODELS.update(saved)))

    @mapping.register_t1_model
    class HalfTime(mapping.RecoveryModel):
        """Toy: T1 is half the fitted time constant (a derived T1 with its own gradient)."""

        name = "toy-half"
        description = "toy A - B exp(-t/T), T1 = T / 2"
        param_names = ("A", "B", "time_constant_ms")
        kinds = ("toykind",)

        def t1(self, theta):
            grad = torch.zeros_like(theta)
            grad[..., -1] = 0.5
            return 0.5 * theta[..., -1], grad

    @mapping.register_t1_model
    class PartialInversion(mapping.FixedEfficiencyModel):
        name = "toy-ir80"
        description = "toy M0 (1 - 1.6 exp(-t/T1)): 80 % inversion efficiency"
        param_names = ("M0", "t1_ms")
        kappa = 1.6

    ti = np.array([100.0, 180.0, 260.0, 500.0, 900.0, 1400.0, 2200.0, 3500.0])
    time_constants = np.array([600.0, 900.0, 1500.0])
    half = np.abs(3.0 - 5.0 * np.exp(-ti[:, None] / time_constants))  # magnitude data
    result = fit_t1(half, ti, "toy-half", device="cpu")
    np.testing.assert_allclose(result.t1_ms, time_constants / 2, rtol=1e-4)
    np.testing.assert_allclose(result.params["time_constant_ms"], time_constants, rtol=1e-4)
    np.testing.assert_allclose(result.params["A"], 3.0, rtol=1e-4)
    assert result.param_names == ("A", "B", "time_constant_ms") and result.summary()["model"] == "toy-half"
    assert np.all(result.t1_sd_ms < 1e-2)  # noiseless: the propagated SD (gradient 0.5) is ~0
    np.testing.assert_allclose(np.abs(model_signal("toy-half", result.params, ti)), half, atol=1e-5)

    partial = 700.0 * np.abs(1.0 - 1.6 * np.exp(-ti[:, None] / time_constants))
    fitted = fit_t1(partial, ti, "toy-ir80", device="cpu")
    np.testing.assert_allclose(fitted.t1_ms, time_constants, rtol=1e-4)
    np.testing.assert_allclose(fitted.params["M0"], 700.0, rtol=1e-4)
    # the wrong efficiency does not fit the same curve
    assert np.nanmax(_rel_error(fit_t1(partial, ti, "stone2", device="cpu").t1_ms, time_constants)) > 0.05

    assert {"toy-half", "toy-ir80"} <= set(mapping.T1_MODELS)
    assert model_for_kind("toykind") == "toy-half"
    assert fit_t1(half, ti, HalfTime, device="cpu").t1_ms == pytest.approx(result.t1_ms)  # a class works unregistered too

    with pytest.raises(ValueError, match="param_names"):
        @mapping.register_t1_model
        class Broken(mapping.RecoveryModel):
            name = "broken"
            param_names = ("A",)

    with pytest.raises(TypeError):
        mapping.register_t1_model(object)
