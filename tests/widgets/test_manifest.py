"""The npe2 manifest is valid, importable and discovered from the installed package."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[2]
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
        "t2prep": "Phantom T2-prep (4 preparations, known T2)",
        "mge": "Phantom multi-echo T2* (8 echoes, known T2*)",
        "ecv_pair": "Phantom MOLLI native + post-contrast, heart labels, RV insertion (ECV)",
    }
    assert [w.display_name for w in contributions.widgets] == DOCK_WIDGETS


@pytest.mark.napari
def test_napari_lists_the_plugin(make_napari_viewer):
    """The Plugins menu lists our docks and File > Open Sample our phantoms (napari's menus)."""
    viewer = make_napari_viewer()
    name = "Any2Reg cardiac motion correction"

    def submenu(menu, text):
        (found,) = [a.menu() for a in menu.actions() if a.text() == text and a.menu() is not None]
        return [a.text() for a in found.actions()], found

    docks, _ = submenu(viewer.window.plugins_menu, name)
    assert docks == [f"{dock} ({name})" for dock in DOCK_WIDGETS]
    _, samples_menu = submenu(viewer.window.file_menu, "Open Sample")
    samples, _ = submenu(samples_menu, name)
    assert samples == ["Phantom MOLLI 5(3)3 with motion", "Phantom STONE-like (11 frames)", "Phantom cine (30 frames)",
                       "Phantom T2-prep (4 preparations, known T2)", "Phantom multi-echo T2* (8 echoes, known T2*)",
                       "Phantom MOLLI native + post-contrast, heart labels, RV insertion (ECV)"]


def test_manifest_contributes_layers_menus():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    menus = {key: [item.command for item in items] for key, items in manifest.contributions.menus.items()}
    assert menus["napari/layers/register"] == [f"{PLUGIN}.menu_registration", f"{PLUGIN}.menu_review",
                                               f"{PLUGIN}.menu_apply", f"{PLUGIN}.menu_batch"]
    assert menus["napari/layers/measure"] == [f"{PLUGIN}.menu_mapping", f"{PLUGIN}.menu_landmarks"]


@pytest.mark.napari
def test_layers_menus_open_the_panels_tabbed(make_napari_viewer, qtbot):
    """Layers > Register / Measure list our commands once named (napari appends the plugin's
    name, so the title does not repeat it); clicking them docks the panels as tabs."""
    viewer = make_napari_viewer()
    suffix = " (Any2Reg cardiac motion correction)"

    def entries(submenu):
        (menu,) = [a.menu() for a in viewer.window.layers_menu.actions() if a.text() == submenu]
        return {a.text(): a for a in menu.actions() if a.text().endswith(suffix)}

    register, measure = entries("Register"), entries("Measure")
    assert list(register) == [f"{title}{suffix}" for title in (
        "Groupwise cardiac registration", "Review a cardiac registration",
        "Apply a registration to another layer", "Register a cohort of series")]
    assert list(measure) == [f"{title}{suffix}" for title in (
        "T1 mapping before and after registration", "Landmarks, TRE and Dice")]
    assert not any("(Any2Reg)" in text for text in [*register, *measure])

    from napari_any2reg.widgets._dock import dock_of
    from napari_any2reg.widgets.apply import ApplyWidget
    from napari_any2reg.widgets.batch import BatchWidget
    from napari_any2reg.widgets.mapping import MappingWidget
    from napari_any2reg.widgets.registration import RegistrationWidget

    def opened():
        return list(viewer.window.dock_widgets.values())  # napari's public mapping: name -> widget

    register[f"Groupwise cardiac registration{suffix}"].trigger()
    measure[f"T1 mapping before and after registration{suffix}"].trigger()
    qtbot.waitUntil(lambda: any(isinstance(w, MappingWidget) for w in opened()), timeout=10_000)
    registration = next(w for w in opened() if isinstance(w, RegistrationWidget))
    mapping = next(w for w in opened() if isinstance(w, MappingWidget))
    # the second panel is a tab beside the first, not stacked under it
    main = registration.window()  # Qt's top-level window of the dock: napari's main window
    qtbot.waitUntil(lambda: dock_of(mapping) in main.tabifiedDockWidgets(dock_of(registration)), timeout=10_000)

    register[f"Apply a registration to another layer{suffix}"].trigger()
    register[f"Register a cohort of series{suffix}"].trigger()
    qtbot.waitUntil(lambda: any(isinstance(w, BatchWidget) for w in opened()), timeout=10_000)
    assert any(isinstance(w, ApplyWidget) for w in opened())
