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


def test_weights_kept_out_of_the_package_say_where_they_are(tmp_path):
    path = _ship(tmp_path, "old.pt")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["old.pt"]["packaged"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert load_weights("old.pt", tmp_path)[1]["packaged"] is False  # present (a checkout): used as before
    path.unlink()
    from napari_any2reg.io.model_io import weights_problem

    assert "source repository only" in weights_problem("old.pt", tmp_path)  # an installed package


def test_the_default_weights_are_packaged_and_the_others_are_marked():
    from napari_any2reg.core.engines.any2reg import DEFAULT_WEIGHTS
    from napari_any2reg.io.model_io import read_manifest

    manifest = read_manifest()
    assert manifest[DEFAULT_WEIGHTS].get("packaged", True) is True
    assert {name for name, entry in manifest.items() if entry.get("packaged", True)} == {DEFAULT_WEIGHTS}
