"""The npe2 manifest is valid, importable and discovered from the installed package."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
PLUGIN = "napari-any2reg"


def test_manifest_file_is_valid_and_importable():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == PLUGIN
    assert manifest.display_name == "Any2Reg cardiac motion correction"
    # every python_name resolves (the command modules import lazily, so this is cheap)
    manifest.validate_imports()


def test_npe2_validate_cli():
    from npe2.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(MANIFEST)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_installed_package_ships_the_manifest():
    resource = importlib.resources.files("napari_any2reg") / "napari.yaml"
    assert resource.is_file()
    assert f"name: {PLUGIN}" in resource.read_text()


#: The dock widgets, in menu order.
DOCK_WIDGETS = ["Registration", "Review", "T1 mapping", "Landmarks", "Export"]


def _discovered_manifest():
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert PLUGIN in {m.name for m in pm.iter_manifests()}
    return pm, pm.get_manifest(PLUGIN)


def test_npe2_discovers_all_contributions(tmp_path):
    pm, manifest = _discovered_manifest()
    contributions = manifest.contributions

    # reader: files by extension, and folders (DICOM series)
    patterns = set(contributions.readers[0].filename_patterns)
    assert {"*.tif", "*.tiff", "*.ome.tif", "*.nii", "*.nii.gz", "*.dcm"} <= patterns
    for name in ("scan.tif", "scan.TIFF", "scan.ome.tif", "scan.nii", "scan.nii.gz", "im0001.dcm"):
        readers = {r.command for r in pm.iter_compatible_readers([str(tmp_path / name)])}
        assert f"{PLUGIN}.get_reader" in readers, name
    folder = tmp_path / "dicom_series"
    folder.mkdir()
    assert f"{PLUGIN}.get_reader" in {r.command for r in pm.iter_compatible_readers([str(folder)])}

    # writers: image layers to TIFF and NIfTI
    writers = {w.command: w for w in pm.iter_compatible_writers(["image"])}
    assert {".tif", ".tiff"} <= set(writers[f"{PLUGIN}.write_tiff"].filename_extensions)
    assert ".nii.gz" in writers[f"{PLUGIN}.write_nifti"].filename_extensions
    points_writers = {w.command: w for w in pm.iter_compatible_writers(["points"])}
    assert points_writers[f"{PLUGIN}.write_landmarks"].filename_extensions == [".csv"]

    samples = {s.key: s.display_name for s in contributions.sample_data}
    assert samples == {
        "molli": "Phantom MOLLI 5(3)3 with motion",
        "stone": "Phantom STONE-like (11 frames)",
        "cine": "Phantom cine (30 frames)",
    }
    assert [w.display_name for w in contributions.widgets] == DOCK_WIDGETS


@pytest.mark.napari
def test_napari_lists_the_plugin(make_napari_viewer):
    from napari.plugins import _initialize_plugins, _npe2

    make_napari_viewer()  # initialises napari's plugin system
    _initialize_plugins()
    docks = dict(item for kind, item in _npe2.widget_iterator() if kind == "dock")
    assert docks[PLUGIN] == DOCK_WIDGETS
    samples = dict(_npe2.sample_iterator())
    assert set(samples[PLUGIN]) == {"molli", "stone", "cine"}
