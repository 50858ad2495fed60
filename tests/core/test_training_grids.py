"""Random training grids (issue 22): phantoms and real draws at random spacings and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_any2reg.cli import main
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.training import TrainingConfig, _Sampler
from napari_any2reg.io.model_io import read_log
from napari_any2reg.pipeline.training import train


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**changes) -> TrainingConfig:
    base = dict(
        seed=5, steps=3, shape=(32, 32), spacing_mm=(9.0, 9.0), n_frames_range=(3, 5),
        kinds={"stone": 1.0, "molli-5(3)3": 1.0}, motion_mm_range=(6.0, 10.0),
        net={"scales": 3, "base_channels": 4}, checkpoint_every=10, validate_every=1000,
        validation_seeds=(10000,), validation_kinds=("stone",), num_threads=1, adacs=False,
        spacing_mm_range=(6.0, 12.0), size_px_range=(24, 40),
    )
    base.update(changes)
    return TrainingConfig(**base)


def test_phantoms_are_drawn_at_random_grids_and_regenerated_exactly():
    config = _config()
    sampler = _Sampler(config)
    shapes = set()
    for index in range(8):
        phantom = sampler.phantom(index)
        h, w = phantom.sequence.frames.shape[-2:]
        dy, dx = phantom.sequence.spacing_mm
        assert h == w and h % 8 == 0 and 24 <= h <= 40
        assert dy == dx and 6.0 <= dy <= 12.0
        # the true motion is the phantom's, in pixels of its own grid: its amplitude in mm is in range
        shapes.add((h, round(dy, 3)))
    assert len(shapes) >= 4  # the grid really varies
    again = _Sampler(config).phantom(5)  # a resumed run regenerates the same phantom
    assert np.array_equal(again.sequence.frames, sampler.phantom(5).sequence.frames)


def test_fixed_grid_stream_is_unchanged_without_the_ranges():
    fixed = _config(spacing_mm_range=None, size_px_range=None)
    phantom = _Sampler(fixed).phantom(2)
    assert phantom.sequence.frames.shape[-2:] == (32, 32) and tuple(phantom.sequence.spacing_mm) == (9.0, 9.0)


def test_ranges_go_together_and_are_checked():
    with pytest.raises(ValueError, match="give both or neither"):
        _config(size_px_range=None)
    with pytest.raises(ValueError, match="spacing_mm_range"):
        _config(spacing_mm_range=(3.0, 1.0))
    with pytest.raises(ValueError, match="size_px_range"):
        _config(size_px_range=(8, 12))


def test_real_draws_are_resampled_to_the_drawn_grid_with_motion_in_its_pixels(tmp_path):
    # a "real" series at 4 mm, 48 x 40: every draw at a random spacing keeps its field of view
    real = make_phantom("molli", seed=11, shape=(48, 40), spacing_mm=(4.0, 4.0), motion_mm=0.0).sequence
    config = _config(real_data_paths=("molli.tif",), real_data_probability=1.0, real_motion_mm_range=(8.0, 8.0),
                     rotation_deg_range=(0.0, 0.0), nonrigid_mm_range=(0.0, 0.0))
    sampler = _Sampler(config, real_sequences=[real])
    sizes = set()
    for draw in range(6):
        rng = np.random.default_rng([config.seed, draw])
        sample, info = sampler.draw(rng, draw)
        h, w = sample.frames.shape[-2:]
        assert info["source"] == "real" and h == w and 24 <= h <= 40 and sample.displacement.shape[-2:] == (h, w)
        sizes.add(h)
        peak_px = float(sample.displacement.norm(dim=1).amax())
        assert peak_px <= 8.0 / 6.0 + 0.5  # 8 mm peak-to-peak is at most 8 mm / 6 mm px (+ a margin)
    assert len(sizes) >= 2


def test_training_runs_on_random_grids_and_the_cli_maps_the_flags(tmp_path):
    summary = train(_config(), tmp_path / "api")
    assert summary["start_step"] == 0
    log = read_log(tmp_path / "api")
    assert len(log) == 3 and all(np.isfinite(entry["loss"]) for entry in log)
    out = tmp_path / "cli"
    assert main(["train", "--steps", "1", "--size", "32", "--spacing-mm-range", "2,3", "--size-px-range", "32,40",
                 "--no-adacs", "-q", "--out", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert tuple(ckpt["config"]["spacing_mm_range"]) == (2.0, 3.0) and tuple(ckpt["config"]["size_px_range"]) == (32, 40)
