"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture
def shared_real_dir():
    """``../shared/data/real`` beside the repository; skips the test when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    if not path.is_dir():
        pytest.skip("../shared is absent")
    return path


@pytest.fixture
def viewer(make_napari_viewer):
    """A real napari viewer (Xvfb), closed by napari's fixture after the test."""
    return make_napari_viewer()


PLUGIN = "napari-any2reg"


def plugin_dock(viewer, name: str):
    """Add the dock ``name`` as the Plugins menu does (napari hands it a public-only proxy of
    the viewer, as users' docks get) and return the widget."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def capture_notifications(monkeypatch, module) -> dict[str, list[str]]:
    """Replace ``show_error`` / ``show_info`` of ``module`` and of the docks' base
    (``widgets._base``, where the worker errors are reported) by recorders; returns the records."""
    from napari_any2reg.widgets import _base

    calls: dict[str, list[str]] = {"error": [], "info": []}
    for target in {module, _base}:
        monkeypatch.setattr(target, "show_error", lambda msg: calls["error"].append(str(msg)), raising=False)
        monkeypatch.setattr(target, "show_info", lambda msg: calls["info"].append(str(msg)), raising=False)
    return calls
