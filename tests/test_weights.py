"""The weights loader verifies SHA-256 and says what to do when weights are missing or altered."""

import json

import pytest
import torch

from napari_any2reg.core.weights import WeightsError
from napari_any2reg.io.model_io import load_weights, sha256_of, weights_dir


def _ship(folder, name="net.pt"):
    path = folder / name
    torch.save({"state": {"w": torch.arange(4.0)}}, path)
    (folder / "manifest.json").write_text(json.dumps({name: {"sha256": sha256_of(path), "config": {"scales": 2}}}))
    return path


def test_verified_weights_load_with_their_entry(tmp_path):
    _ship(tmp_path)
    checkpoint, entry = load_weights("net.pt", tmp_path)
    assert torch.equal(checkpoint["state"]["w"], torch.arange(4.0))
    assert entry["config"] == {"scales": 2}


def test_altered_weights_are_refused(tmp_path):
    path = _ship(tmp_path, "altered.pt")
    with open(path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(WeightsError, match="corrupted or was altered"):
        load_weights("altered.pt", tmp_path)


def test_missing_weights_name_the_fix(tmp_path):
    _ship(tmp_path, "gone.pt").unlink()
    with pytest.raises(WeightsError, match="missing; reinstall"):
        load_weights("gone.pt", tmp_path)
    with pytest.raises(WeightsError, match="classical engine"):
        load_weights("never-shipped.pt", tmp_path)


def test_installed_weights_folder_resolves():
    folder = weights_dir()
    assert folder.is_dir()
    assert (folder / "README.md").is_file()
