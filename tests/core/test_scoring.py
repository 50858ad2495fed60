"""AdaCS correspondence scoring: residual, scorer, loss, weighted CTE, training and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_any2reg.core.losses import conditional_template_entropy, joint_histograms
from napari_any2reg.core.network import (
    Any2RegNet,
    CorrespondenceScorer,
    correspondence_residual,
    predict_scores,
    residual_scores,
    scoring_inputs,
    scoring_loss,
    total_variation,
)
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import normalise_intensities
from napari_any2reg.core.training import TrainingConfig
from napari_any2reg.io.model_io import load_network, read_log
from napari_any2reg.pipeline.training import export_weights, train
from napari_any2reg.io.model_io import load_weights, sha256_of


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def still_phantom():
    """A motion-free STONE phantom (the frames are aligned)."""
    return make_phantom("stone", seed=4, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=0.0,
                        rotation_deg=0.0, nonrigid_mm=0.0, snr=60)


def _with_artefact(frames: np.ndarray, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Insert a bright striped artefact (no counterpart in other frames) into one frame."""
    out = frames.copy()
    region = np.zeros(frames.shape[1:], bool)
    region[20:36, 20:36] = True
    stripes = (np.indices(frames.shape[1:])[1] % 4 < 2)
    out[frame][region & stripes] = frames.max()
    return out, region


def test_residual_is_zero_for_identical_frames_and_contrast_blind():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.random((32, 32)).astype(np.float32))
    same = torch.stack([base, 2 * base + 1, 1 - base])  # scaled, offset, inverted
    assert float(correspondence_residual(same).max()) < 1e-5


def test_residual_and_scores_flag_an_artefact(still_phantom):
    frames, region = _with_artefact(still_phantom.sequence.frames, frame=3)
    x = torch.from_numpy(normalise_intensities(frames))
    r = correspondence_residual(x)
    assert r[3][torch.from_numpy(region)].mean() > 3 * r[3][torch.from_numpy(~region)].mean()
    s = residual_scores(x)
    assert s.shape == x.shape and float(s.min()) >= 0 and float(s.max()) <= 1
    inside = s[3][torch.from_numpy(region)].mean()
    assert inside < 0.6 * s[3][torch.from_numpy(~region)].mean()
    assert inside < 0.6 * s[2][torch.from_numpy(region)].mean()  # the same place in a clean frame


def test_scorer_shape_range_and_permutation_equivariance():
    torch.manual_seed(0)
    scorer = CorrespondenceScorer(channels=4)
    # a non-trivial head so that the output depends on the input
    torch.nn.init.normal_(scorer.head.weight, std=0.5)
    x = torch.rand(5, 30, 37)
    with torch.no_grad():
        s = scorer(scoring_inputs(x))
        s_perm = scorer(scoring_inputs(x[torch.tensor([3, 0, 4, 1, 2])]))
    assert s.shape == (5, 30, 37) and float(s.min()) > 0 and float(s.max()) < 1
    order = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(s_perm, s[order], atol=1e-5)


def test_scoring_loss_optimum_follows_the_residual():
    """Without TV the pixel-wise optimum is s = min(1, beta * m / r)."""
    r = torch.tensor([[[0.1, 0.5, 1.0, 2.0, 4.0]]])
    logits = torch.zeros_like(r, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(600):
        opt.zero_grad()
        loss, _ = scoring_loss(torch.sigmoid(logits), r, momentum=1.0, beta=0.5, gamma=0.0)
        loss.backward()
        opt.step()
    s = torch.sigmoid(logits).detach()[0, 0]
    expected = torch.clamp(0.5 / r[0, 0], max=1.0)
    # sigmoid can only approach 1: compare where the optimum is interior
    assert torch.allclose(s[2:], expected[2:], atol=0.02), (s, expected)
    assert s[0] > 0.95 and s[1] > 0.9
    assert total_variation(torch.ones(1, 4, 4)) == 0


def test_weighted_histograms_match_masking():
    rng = np.random.default_rng(1)
    frames = torch.from_numpy(rng.random((3, 200)).astype(np.float32))
    template = frames.mean(0)
    ones = torch.ones(3, 200)
    assert torch.allclose(joint_histograms(frames, template, 8, pixel_weights=ones), joint_histograms(frames, template, 8), atol=1e-6)
    keep = torch.zeros(200, dtype=torch.bool)
    keep[:120] = True
    weights = keep.float().expand(3, 200)
    assert torch.allclose(
        joint_histograms(frames, template, 8, pixel_weights=weights)[:, :, :],
        joint_histograms(frames[:, keep], template[keep], 8),
        atol=1e-6,
    )
    # the CTE with binary pixel weights is the CTE of the kept pixels with the same template
    warped = frames.view(3, 10, 20)
    a = conditional_template_entropy(warped, bins=8, pixel_weights=torch.ones(3, 10, 20))
    b = conditional_template_entropy(warped, bins=8)
    assert torch.allclose(a, b, atol=1e-6)


def test_predict_scores_on_the_input_grid(still_phantom):
    frames = still_phantom.sequence.frames
    zero = np.zeros((frames.shape[0], 2, *frames.shape[1:]), np.float32)
    scores = predict_scores(None, frames, zero)
    assert scores.shape == frames.shape and scores.dtype == np.float32
    assert 0 <= scores.min() and scores.max() <= 1
    scorer = CorrespondenceScorer(channels=4)
    scores = predict_scores(scorer, frames, zero, spacing_mm=(4.5, 4.5), training_spacing_mm=(9.0, 9.0))
    assert scores.shape == frames.shape
    with pytest.raises(ValueError, match="must match"):
        predict_scores(None, frames, zero[:, :1])


# ------------------------------------------------------------------ training and export
def _config(**changes) -> TrainingConfig:
    base = dict(
        seed=5, steps=6, shape=(32, 32), spacing_mm=(9.0, 9.0), n_frames_range=(3, 5),
        kinds={"stone": 1.0, "sasha": 1.0}, net={"scales": 2, "base_channels": 4}, scorer_channels=4,
        adacs_start_step=2, adacs_warmup_steps=2, checkpoint_every=3, validate_every=3,
        validation_seeds=(10000,), validation_kinds=("stone",), num_threads=1,
    )
    base.update(changes)
    return TrainingConfig(**base)


def test_adacs_alternation_saves_scorer_and_exports_verified_weights(tmp_path):
    config = _config()
    train(config, tmp_path / "run")
    log = read_log(tmp_path / "run")
    # registration-only warm-up, then the scorer trains every step
    assert all("score_loss" not in e for e in log[:2])
    assert all(np.isfinite(e["score_loss"]) and 0 < e["score_mean"] < 1 for e in log[2:])
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["scorer_state"] is not None and ckpt["residual_momentum"] > 0
    net, info = load_network(tmp_path / "run" / "checkpoint.pt")
    assert isinstance(info["scorer"], CorrespondenceScorer)
    # resuming restores the scorer and continues
    summary = train(config.replace(steps=8), tmp_path / "run")
    assert summary["start_step"] == 6 and summary["step"] == 8

    weights = tmp_path / "weights"
    entry = export_weights(tmp_path / "run" / "checkpoint.pt", weights / "tiny.pt", description="test")
    assert entry["sha256"] == sha256_of(weights / "tiny.pt") and entry["step"] == 8
    checkpoint, manifest_entry = load_weights("tiny.pt", weights)
    assert manifest_entry["net_config"] == net.config
    assert "optimizer_state" not in checkpoint and checkpoint["scorer_state"] is not None


def test_export_without_scorer_names_the_fix(tmp_path):
    train(_config(steps=2, adacs=False), tmp_path)
    with pytest.raises(ValueError, match="scorer_source"):
        export_weights(tmp_path / "checkpoint.pt", tmp_path / "w" / "x.pt")


def _weights_file(path, seed, base_channels=4):
    """A weights file of a tiny untrained network (and scorer), as export_weights writes one."""
    from napari_any2reg.core.training import weights_payload

    torch.manual_seed(seed)
    net = Any2RegNet(scales=2, base_channels=base_channels)
    scorer = CorrespondenceScorer(channels=4)
    data = {"step": 10 * seed, "model_state": net.state_dict(), "net_config": net.config,
            "scorer_state": scorer.state_dict(), "scorer_config": {"channels": 4},
            "config": _config().to_dict(), "validation": None}
    torch.save(weights_payload(data), path)
    return net


def test_average_weights_is_the_parameter_mean_and_a_loadable_verified_file(tmp_path):
    from napari_any2reg.core.engines.any2reg import load_pretrained
    from napari_any2reg.pipeline.training import average_weights

    nets = [_weights_file(tmp_path / f"run{k}.pt", seed=k + 1) for k in range(3)]
    weights = tmp_path / "weights"
    entry = average_weights([tmp_path / f"run{k}.pt" for k in range(3)], weights / "soup.pt", weights=[1, 1, 2],
                            description="test soup")
    checkpoint, listed = load_weights("soup.pt", weights)  # hash-verified through the manifest
    assert listed["sha256"] == entry["sha256"] == sha256_of(weights / "soup.pt")
    assert [r["file"] for r in entry["averaged_from"]] == [f"{tmp_path.name}/run{k}.pt" for k in range(3)]
    assert [r["weight"] for r in entry["averaged_from"]] == pytest.approx([0.25, 0.25, 0.5])
    assert entry["averaged_from"][2]["sha256"] == sha256_of(tmp_path / "run2.pt") and entry["validation"] is None
    name, tensor = next((n, t) for n, t in checkpoint["model_state"].items() if t.is_floating_point() and t.numel() > 1)
    states = [net.state_dict()[name] for net in nets]
    assert torch.allclose(tensor, 0.25 * states[0] + 0.25 * states[1] + 0.5 * states[2], atol=1e-6)
    assert not torch.allclose(tensor, states[0])
    # the average is a network like any other: it loads and predicts
    model = load_pretrained("cpu", weights / "soup.pt")
    frames = torch.rand(3, 1, 32, 32)
    assert model.net(frames).shape == (3, 2, 32, 32)
    # an average can seed another average (it has no single training step)
    again = average_weights([weights / "soup.pt", tmp_path / "run0.pt"], weights / "soup2.pt")
    assert [r["step"] for r in again["averaged_from"]][0] is None
    tensor2 = load_weights("soup2.pt", weights)[0]["model_state"][name]
    assert torch.allclose(tensor2, 0.5 * tensor + 0.5 * states[0], atol=1e-6)


def test_average_weights_refuses_different_networks_and_single_files(tmp_path):
    from napari_any2reg.pipeline.training import average_weights

    _weights_file(tmp_path / "a.pt", seed=1)
    _weights_file(tmp_path / "b.pt", seed=2, base_channels=8)
    with pytest.raises(ValueError, match="net_config"):
        average_weights([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "w" / "x.pt")
    with pytest.raises(ValueError, match="at least two"):
        average_weights([tmp_path / "a.pt"], tmp_path / "w" / "x.pt")
    assert not (tmp_path / "w" / "x.pt").exists()
