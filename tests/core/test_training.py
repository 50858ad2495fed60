"""Training pipeline: CAR augmentation, loss decrease, checkpoint / resume, cancel, CLI.

Tiny grids (32–48 px), ``base_channels=8`` and 3 scales keep the whole file fast on a CPU.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_any2reg.cli import main
from napari_any2reg.core.augmentation import car_augment, random_intensity_curve
from napari_any2reg.core.network import Any2RegNet
from napari_any2reg.core.training import (
    TrainingConfig,
    _Sampler,
    sample_training_sequence,
    training_loss,
)
from napari_any2reg.io.model_io import load_network, read_log
from napari_any2reg.pipeline.training import read_user_sequences, train


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_config(**changes) -> TrainingConfig:
    base = dict(
        seed=3,
        steps=4,
        shape=(32, 32),
        spacing_mm=(9.0, 9.0),
        n_frames_range=(3, 6),
        kinds={"stone": 1.0, "molli-5(3)3": 1.0, "sasha": 1.0},
        motion_mm_range=(10.0, 16.0),
        net={"scales": 3, "base_channels": 8},
        checkpoint_every=2,
        validate_every=1000,
        validation_seeds=(10000, 10001),
        validation_kinds=("stone", "molli"),
        validation_motion_mm=12.0,
        num_threads=1,
    )
    base.update(changes)
    return TrainingConfig(**base)


def _frames(seed: int = 0, n: int = 6, size: int = 40) -> torch.Tensor:
    config = _tiny_config(shape=(size, size), spacing_mm=(288 / size, 288 / size))
    return sample_training_sequence(np.random.default_rng(seed), config).frames[:n]


# ------------------------------------------------------------------ augmentation
def test_car_augment_shape_range_and_determinism():
    frames = _frames()
    out = car_augment(frames, torch.Generator().manual_seed(5))
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    per_frame = out.reshape(out.shape[0], -1)
    assert torch.allclose(per_frame.amin(1), torch.zeros(out.shape[0])) and torch.allclose(per_frame.amax(1), torch.ones(out.shape[0]))
    again = car_augment(frames, torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    other = car_augment(frames, torch.Generator().manual_seed(6))
    assert not torch.allclose(out, other)
    # (N, 1, H, W) input keeps its shape
    assert car_augment(frames[:, None], torch.Generator().manual_seed(5)).shape == frames[:, None].shape


def test_car_augment_gives_each_frame_its_own_nonlinear_contrast():
    frames = _frames(n=1).expand(8, -1, -1).contiguous()  # the same image 8 times
    out = car_augment(frames, torch.Generator().manual_seed(1)).reshape(8, -1).double()
    src = frames[0].reshape(-1).double()
    corr = torch.corrcoef(torch.cat((src[None], out)))
    to_source = corr[0, 1:]
    between = corr[1:, 1:][~torch.eye(8, dtype=bool)]
    assert float(between.abs().min()) < 0.95  # frames differ in contrast from each other
    # not just a scaling / inversion of the input: some frame is far from |corr| = 1
    assert float(to_source.abs().min()) < 0.95
    # geometry untouched: where the input is constant the output is constant
    background = frames[0].reshape(-1) == frames[0].reshape(-1).min()
    if int(background.sum()) > 1:
        assert float(out[:, background].std(dim=1).max()) < 1e-6


def test_random_intensity_curve_is_monotone_per_frame():
    frames = _frames(n=4)
    out = random_intensity_curve(frames, torch.Generator().manual_seed(2))
    assert out.shape == frames.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    for i in range(frames.shape[0]):
        x = frames[i].reshape(-1).clamp(0, 1)
        y = out[i].reshape(-1)
        order = torch.argsort(x)
        d = torch.diff(y[order])
        assert bool((d >= -1e-6).all()) or bool((d <= 1e-6).all())


def test_sample_training_sequence_is_seeded_and_normalised():
    config = _tiny_config()
    a = sample_training_sequence(np.random.default_rng(11), config)
    b = sample_training_sequence(np.random.default_rng(11), config)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.displacement, b.displacement)
    n = a.frames.shape[0]
    assert 3 <= n <= 9 and a.frames.shape[-2:] == (32, 32)
    assert a.displacement.shape == (n, 2, 32, 32) and a.heart_mask.shape == (32, 32) and a.heart_mask.dtype == torch.bool
    assert -0.6 < float(a.frames.min()) and float(a.frames.max()) < 1.6


# ------------------------------------------------------------------ learning
def test_short_training_lowers_the_training_loss(tmp_path):
    # one phantom reused at every step (pool of 1, no subset / flips / augmentation): the
    # optimisation itself must lower the loss on it within 20 steps
    config = _tiny_config(
        steps=20, shape=(40, 40), spacing_mm=(7.2, 7.2), learning_rate=3e-3, warmup_steps=0,
        lr_schedule="constant", lambda_contrast=0.0, car_probability=0.0, curve_probability=0.0,
        checkpoint_every=20, validate_every=20, kinds={"stone": 1.0}, n_frames_range=(6, 6),
        frame_subset_probability=0.0, phantom_pool=1, phantom_reuse=10**6, dihedral=False,
    )
    frames = _Sampler(config).draw(np.random.default_rng(0), 0)[0].frames

    def loss_of(net):
        with torch.no_grad():
            return float(training_loss(net, frames, config, torch.Generator().manual_seed(0), augment=False)[0])

    torch.manual_seed(config.seed)
    before = loss_of(Any2RegNet(**config.net))  # the run's initial network
    summary = train(config, tmp_path)
    assert summary["steps_done"] == 20 and not summary["cancelled"]
    net, info = load_network(tmp_path / "checkpoint.pt")
    after = loss_of(net)
    assert after < before - 0.05, (before, after)
    log = read_log(tmp_path)
    assert len(log) == 20
    first, last = np.mean([e["loss"] for e in log[:3]]), np.mean([e["loss"] for e in log[-3:]])
    assert last < first - 0.05, (first, last)
    assert info["training_spacing_mm"] == (7.2, 7.2) and info["step"] == 20
    # validation ran at the last step and best.pt holds the network it selected
    assert np.isfinite(log[-1]["val_epe_ratio"]) and log[-1].get("best")
    _, best_info = load_network(tmp_path)  # a folder: best.pt first
    assert best_info["path"].endswith("best.pt") and best_info["step"] == 20
    assert best_info["validation"]["epe_ratio"] == pytest.approx(log[-1]["val_epe_ratio"], abs=1e-4)


# ------------------------------------------------------------------ checkpoint / resume / cancel
def test_resume_continues_step_count_and_log(tmp_path):
    config = _tiny_config(steps=4, checkpoint_every=2)
    first = train(config, tmp_path)
    assert first["step"] == 4 and first["start_step"] == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["elapsed_seconds"] > 0
    for key in ("model_state", "optimizer_state", "projection_state", "rng_states", "config", "net_config", "best_validation"):
        assert key in ckpt
    second = train(config.replace(steps=6), tmp_path)
    assert second["start_step"] == 4 and second["step"] == 6 and second["steps_done"] == 2
    assert second["elapsed_seconds"] > ckpt["elapsed_seconds"]
    log = read_log(tmp_path / "train_log.jsonl")
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert all(log[i]["seconds"] <= log[i + 1]["seconds"] for i in range(5))
    # a resumed run draws the same sequences as an uninterrupted one
    straight = train(config.replace(steps=6), tmp_path / "straight")
    log2 = read_log(tmp_path / "straight")
    assert [e["kind"] for e in log2] == [e["kind"] for e in log] and [e["n"] for e in log2] == [e["n"] for e in log]
    assert straight["step"] == 6
    # --no-resume starts afresh
    fresh = train(config.replace(steps=2), tmp_path, resume=False)
    assert fresh["start_step"] == 0 and len(read_log(tmp_path)) == 2


def test_cancel_stops_early_and_leaves_a_valid_checkpoint(tmp_path):
    config = _tiny_config(steps=50, checkpoint_every=100)
    stop = threading.Event()
    seen = []

    def log(entry):
        seen.append(entry["step"])
        if entry["step"] == 3:
            stop.set()

    summary = train(config, tmp_path, cancel=stop, log=log)
    assert summary["cancelled"] and summary["step"] == 3 and seen == [1, 2, 3]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3
    net, _ = load_network(tmp_path / "checkpoint.pt")
    u = net(_frames(size=32)[:4])
    assert u.shape == (4, 2, 32, 32) and bool(torch.isfinite(u).all())
    again = train(config.replace(steps=4), tmp_path, cancel=lambda: False)
    assert again["start_step"] == 3 and again["step"] == 4


def test_user_sequences_can_be_mixed_in(tmp_path):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io import write_tiff

    folder = tmp_path / "user"
    folder.mkdir()
    # a different size and spacing than the training grid: resampled and cropped / padded
    write_tiff(folder / "a.tif", make_phantom("molli", seed=1, shape=(40, 48), spacing_mm=(6.0, 6.0)).sequence)
    (folder / "notes.txt").write_text("not a sequence")
    (folder / "broken.tif").write_bytes(b"not a TIFF")
    sequences, skipped = read_user_sequences(folder)
    assert len(sequences) == 1 and len(skipped) == 1 and skipped[0].startswith("broken.tif: ")
    config = _tiny_config(steps=2, user_data_dir=str(folder), user_data_probability=1.0)
    train(config, tmp_path / "run")
    log = read_log(tmp_path / "run")
    assert [e["kind"] for e in log] == ["user", "user"]
    assert all(3 <= e["n"] <= 8 and np.isfinite(e["loss"]) for e in log)


class _MemoryStore:
    """A run kept in memory: the core loop's whole state passes through these methods."""

    checkpoint_name = "memory:checkpoint"

    def __init__(self):
        self.checkpoint, self.best, self.log, self.calls = None, None, [], []

    def load_checkpoint(self):
        return self.checkpoint

    def has_checkpoint(self):
        return self.checkpoint is not None

    def load_log(self):
        return list(self.log)

    def load_init_weights(self, source):
        raise AssertionError("not fine-tuning")

    def save_checkpoint(self, state):
        self.calls.append("checkpoint")
        self.checkpoint = state

    def save_best(self, state):
        self.calls.append("best")
        self.best = state

    def discard_best(self):
        self.best = None

    def rewrite_log(self, entries):
        self.log = list(entries)

    def append_log(self, entry):
        self.log.append(entry)

    def describe(self):
        return {"checkpoint": self.checkpoint_name, "best": None, "log": "memory:log"}


def test_core_training_loop_reads_and_writes_no_file(tmp_path, monkeypatch):
    """core.training keeps its state in the store it is given and needs the sequences read for it."""
    from napari_any2reg.core import training as core_training

    config = _tiny_config(steps=1, user_data_dir=str(tmp_path), user_data_probability=1.0)
    with pytest.raises(ValueError, match="not read"):
        core_training.train(config, _MemoryStore())
    monkeypatch.chdir(tmp_path)
    store = _MemoryStore()
    summary = core_training.train(_tiny_config(steps=2, validate_every=2), store)
    assert list(tmp_path.iterdir()) == []  # nothing was written anywhere here
    assert summary["step"] == 2 and summary["checkpoint"] == "memory:checkpoint"
    assert [e["step"] for e in store.log] == [1, 2] and store.checkpoint["step"] == 2
    assert "best" in store.calls and store.best["step"] == 2
    again = core_training.train(_tiny_config(steps=3, validate_every=2), store)  # resumes from the store
    assert again["start_step"] == 2 and [e["step"] for e in store.log] == [1, 2, 3]


def test_mismatched_network_config_is_refused(tmp_path):
    train(_tiny_config(steps=1), tmp_path)
    with pytest.raises(ValueError, match="network"):
        train(_tiny_config(steps=2, net={"scales": 3, "base_channels": 4}), tmp_path)


def test_validation_seeds_must_be_held_out():
    with pytest.raises(ValueError, match="10000"):
        _tiny_config(validation_seeds=(5, 6))


@pytest.mark.parametrize("threads", [1e9, 10**9, float("inf"), 0, 2.5])
def test_training_api_thread_count_is_bounded(threads, tmp_path):
    # 10**9 would kill the process (libgomp out of memory); the CLI's --threads was checked, Python's was not
    with pytest.raises(ValueError, match=r"num_threads must be a whole number >= 1 and at most \d+"):
        _tiny_config(num_threads=threads)
    config = _tiny_config(num_threads=1)
    config.num_threads = threads  # set after construction: train checks it again before torch sees it
    with pytest.raises(ValueError, match="num_threads must be a whole number"):
        train(config, tmp_path)
    assert torch.get_num_threads() == 1


def test_training_thread_count_error_speaks_the_cli():
    from napari_any2reg.core.vocabulary import speaking

    with speaking("cli"), pytest.raises(ValueError, match="--threads must be a whole number") as caught:
        _tiny_config(num_threads=1e9)
    assert "num_threads" not in str(caught.value)


# ------------------------------------------------------------------ CLI
def test_cli_train_writes_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--steps", "2", "--size", "32", "--out", str(out)])
    assert code == 0
    assert (out / "checkpoint.pt").exists() and (out / "train_log.jsonl").exists()
    text = capsys.readouterr().out
    assert "checkpoint" in text and str(out / "checkpoint.pt") in text
    assert len(read_log(out)) == 2


def test_cli_train_ablation_flags(tmp_path):
    out = tmp_path / "ablation"
    assert main(["train", "--steps", "1", "--size", "32", "--aggregation", "mean", "--no-auxiliary", "--no-adacs", "-q", "--out", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["net_config"]["aggregation"] == "mean" and ckpt["net_config"]["use_auxiliary"] is False
    assert ckpt["config"]["adacs"] is False and ckpt["scorer_state"] is None


# ------------------------------------------------------------------ fine-tuning, supervision, real data
def test_supervised_term_pulls_towards_the_known_motion_and_zero_motion_draws():
    config = _tiny_config(lambda_supervised=1.0, zero_motion_probability=1.0, car_probability=0.0, curve_probability=0.0)
    sample = sample_training_sequence(np.random.default_rng(5), config)
    assert float(sample.displacement.abs().max()) == 0.0  # every draw motionless
    net = Any2RegNet(**config.net)
    _, terms, u = training_loss(net, sample.frames, config, torch.Generator().manual_seed(0),
                                true_displacement=sample.displacement, heart_mask=sample.heart_mask)
    assert "supervised" in terms and terms["supervised"] >= 0
    unsupervised = _tiny_config(car_probability=0.0, curve_probability=0.0)
    _, plain, _ = training_loss(net, sample.frames, unsupervised, torch.Generator().manual_seed(0),
                                true_displacement=sample.displacement, heart_mask=sample.heart_mask)
    assert "supervised" not in plain  # lambda_supervised = 0: the loss is unchanged
    assert plain["loss"] == pytest.approx(terms["loss"] - terms["supervised"], abs=1e-5)


def test_still_unsupervised_weight_scales_only_the_motion_free_draws():
    kw = dict(lambda_supervised=2.0, car_probability=0.0, curve_probability=0.0)
    still_sample = sample_training_sequence(np.random.default_rng(5), _tiny_config(zero_motion_probability=1.0, **kw))
    moved_sample = sample_training_sequence(np.random.default_rng(5), _tiny_config(**kw))
    assert float(moved_sample.displacement.abs().max()) > 0
    net = Any2RegNet(**_tiny_config().net)

    def terms_of(sample, weight):
        _, terms, _ = training_loss(net, sample.frames, _tiny_config(still_unsupervised_weight=weight, **kw),
                                    torch.Generator().manual_seed(0), true_displacement=sample.displacement,
                                    heart_mask=sample.heart_mask)
        return terms

    full, supervised_only = terms_of(still_sample, 1.0), terms_of(still_sample, 0.0)
    assert full["loss"] > supervised_only["loss"]
    # weight 0 on a still draw: only the supervised (zero-target) term is left
    assert supervised_only["loss"] == pytest.approx(2.0 * supervised_only["supervised"], rel=1e-5)
    # a moved draw keeps its unsupervised loss whatever the weight
    assert terms_of(moved_sample, 0.0)["loss"] == pytest.approx(terms_of(moved_sample, 1.0)["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="still_unsupervised_weight"):
        _tiny_config(still_unsupervised_weight=1.5)


def test_fine_tuning_on_semisynthetic_real_sequences(tmp_path):
    from napari_any2reg.core.phantom import make_phantom

    first = _tiny_config(steps=2)
    train(first, tmp_path / "base")
    # a "real" sequence at another size and spacing: pre-aligned, then moved by known motion
    real = make_phantom("molli", seed=11, shape=(56, 40), spacing_mm=(6.0, 6.0), motion_mm=4.0).sequence
    config = _tiny_config(steps=3, init_weights=str(tmp_path / "base" / "checkpoint.pt"), lambda_supervised=1.0,
                          real_data_paths=("molli.tif",), real_data_probability=1.0, real_motion_mm_range=(6.0, 12.0),
                          validate_every=3, validation_still_seed=10009)
    start, _ = load_network(tmp_path / "base" / "checkpoint.pt")
    summary = train(config, tmp_path / "tuned", real_sequences=[real])
    log = read_log(tmp_path / "tuned")
    assert summary["start_step"] == 0 and [e["kind"] for e in log] == ["real"] * 3
    assert all(e["supervised"] > 0 and e["n"] >= 3 for e in log)
    assert log[-1]["val_still_mm"] >= 0  # spurious motion on a still MOLLI is measured
    # the run started from the given weights, not from a fresh initialisation
    fresh = Any2RegNet(**config.net)
    tuned, _ = load_network(tmp_path / "tuned" / "checkpoint.pt")
    name = next(iter(start.state_dict()))
    d_start = (tuned.state_dict()[name] - start.state_dict()[name]).abs().max()
    d_fresh = (tuned.state_dict()[name] - fresh.state_dict()[name]).abs().max()
    assert d_start < d_fresh
    with pytest.raises(ValueError, match="real_data_paths"):
        _tiny_config(real_data_probability=0.5)
    with pytest.raises(ValueError, match="network"):
        train(_tiny_config(steps=1, init_weights=str(tmp_path / "base" / "checkpoint.pt"),
                           net={"scales": 3, "base_channels": 4}), tmp_path / "mismatch")


def test_motion_free_model_base_for_real_training_sequences():
    """``real_base="model"``: the real base is regenerated from fitted MOLLI maps (one anatomy
    in every frame) and every draw gets fresh Rician noise after the motion; still draws are
    labelled zero and are never the same frames twice."""
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.semisynthetic import motion_free_series
    from napari_any2reg.core.training import _RealData

    real = make_phantom("molli", seed=12, shape=(48, 48), spacing_mm=(6.0, 6.0), motion_mm=0.0, rotation_deg=0.0,
                        nonrigid_mm=0.0, snr=None).sequence
    config = _tiny_config(real_data_paths=("molli.tif",), real_data_probability=1.0, real_base="model",
                          zero_motion_probability=1.0, real_snr_range=(30.0, 30.0), n_frames_range=(8, 8))
    data = _RealData([real], config)
    base = data.bases[0].numpy()
    again, how = motion_free_series(base, real.timings_ms, "molli")
    assert how == "t1 model molli"
    assert np.abs(again - base).mean() < 0.005 * np.abs(base).max()  # already follows the model
    rng = np.random.default_rng(0)
    first, second = data.draw(rng), data.draw(rng)
    assert first.displacement is not None and float(first.displacement.abs().max()) == 0.0
    assert not torch.equal(first.frames, second.frames)  # fresh noise on every draw
    with pytest.raises(ValueError, match="real_base"):
        _tiny_config(real_base="elastix")


def test_real_molli_maps_regenerated_at_random_schedules():
    """``real_schedule_probability``: a real MOLLI base is regenerated from its fitted maps at
    other MOLLI schedules — at the acquired schedule that is the base itself, at others the
    signal follows the same per-pixel T1 (the null crossing moves to other inversion times) —
    and such draws stay motion-free."""
    from napari_any2reg.core.mapping import fit_t1, model_signal
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.core.training import _RealData, _series_at_random_schedule

    real = make_phantom("molli", seed=12, shape=(48, 48), spacing_mm=(6.0, 6.0), motion_mm=0.0, rotation_deg=0.0,
                        nonrigid_mm=0.0, snr=None).sequence
    config = _tiny_config(real_data_paths=("molli.tif",), real_data_probability=1.0, real_base="model",
                          zero_motion_probability=1.0, real_snr_range=(30.0, 30.0), n_frames_range=(8, 9),
                          real_schedule_probability=1.0)
    data = _RealData([real], config)
    maps, base = data.maps[0], data.bases[0].numpy()
    assert maps is not None and maps["usable"].mean() > 0.5
    at_acquired = np.where(maps["usable"][None], np.abs(model_signal("molli", maps["params"], real.timings_ms)), base)
    assert np.abs(at_acquired - base).max() < 0.02 * base.max()
    series, schedule_tis = _series_at_random_schedule(maps, np.random.default_rng(1))
    assert series.shape == (len(schedule_tis),) + base.shape[1:] and len(schedule_tis) in (8, 9, 11)
    assert np.isfinite(series).all() and series.min() >= 0
    # the frames carry the same T1 (MOLLI T1*) map as the base, at new inversion times
    refit = fit_t1(series, schedule_tis, "molli", device="cpu", mask=maps["usable"])
    ok = maps["usable"] & ~refit.failed
    ratio = refit.params["t1_star_ms"][ok] / maps["params"]["t1_star_ms"][ok]
    assert ok.mean() > 0.4 and np.median(np.abs(ratio - 1)) < 0.02
    sample = data.draw(np.random.default_rng(2))
    assert float(sample.displacement.abs().max()) == 0.0
    with pytest.raises(ValueError, match="real_base='model'"):
        _tiny_config(real_schedule_probability=0.5)
    with pytest.raises(ValueError, match="real_schedule_probability"):
        _tiny_config(real_base="model", real_schedule_probability=1.5)

