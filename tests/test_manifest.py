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
DOCK_WIDGETS = ["Registration", "Review", "T1 mapping", "Landmarks", "Export", "Apply registration", "Batch"]


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
    # only our extensions (issue 23 item 4): a PNG or a CSV is never offered to this plugin
    for name in ("photo.png", "table.csv", "notes.txt", "IM_0001", "00000001"):
        readers = {r.command for r in pm.iter_compatible_readers([str(tmp_path / name)])}
        assert f"{PLUGIN}.get_reader" not in readers, name

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


def test_manifest_contributes_layers_menus():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    menus = {key: [item.command for item in items] for key, items in manifest.contributions.menus.items()}
    assert menus["napari/layers/register"] == [f"{PLUGIN}.menu_registration", f"{PLUGIN}.menu_review",
                                               f"{PLUGIN}.menu_apply", f"{PLUGIN}.menu_batch"]
    assert menus["napari/layers/measure"] == [f"{PLUGIN}.menu_mapping", f"{PLUGIN}.menu_landmarks"]


@pytest.mark.napari
def test_layers_menus_open_the_panels_tabbed(make_napari_viewer, qtbot):
    """Layers > Register / Measure list our commands, and running them docks the panels as tabs."""
    from napari._app_model import get_app_model
    from napari.plugins import _initialize_plugins

    viewer = make_napari_viewer()
    _initialize_plugins()
    app = get_app_model()

    def commands(menu_id):
        return [getattr(getattr(item, "command", None), "id", None) for item in app.menus.get_menu(menu_id)]

    assert {f"{PLUGIN}.menu_registration", f"{PLUGIN}.menu_review"} <= set(commands("napari/layers/register"))
    assert {f"{PLUGIN}.menu_mapping", f"{PLUGIN}.menu_landmarks"} <= set(commands("napari/layers/measure"))

    from napari_any2reg.widgets.mapping import MappingWidget
    from napari_any2reg.widgets.registration import RegistrationWidget

    app.commands.execute_command(f"{PLUGIN}.menu_registration").result()
    app.commands.execute_command(f"{PLUGIN}.menu_mapping").result()
    docks = viewer.window._dock_widgets
    inner = {name: dock.widget() for name, dock in docks.items()}
    registration = next(w for w in inner.values() if isinstance(w, RegistrationWidget))
    mapping = next(w for w in inner.values() if isinstance(w, MappingWidget))
    # the second panel is a tab beside the first, not stacked under it
    main = viewer.window._qt_window
    from napari_any2reg.widgets._dock import dock_of

    assert dock_of(mapping) in main.tabifiedDockWidgets(dock_of(registration))

    from napari_any2reg.widgets.apply import ApplyWidget
    from napari_any2reg.widgets.batch import BatchWidget

    assert {f"{PLUGIN}.menu_apply", f"{PLUGIN}.menu_batch"} <= set(commands("napari/layers/register"))
    app.commands.execute_command(f"{PLUGIN}.menu_apply").result()
    app.commands.execute_command(f"{PLUGIN}.menu_batch").result()
    opened = [dock.widget() for dock in viewer.window._dock_widgets.values()]
    assert any(isinstance(w, ApplyWidget) for w in opened) and any(isinstance(w, BatchWidget) for w in opened)
