"""Commands behind the plugin's napari menu entries (npe2 ``menus`` in ``napari.yaml``).

napari lists widget contributions under Plugins only, so Layers > Register and Layers >
Measure get small commands that open the dock widget the usual way
(``add_plugin_dock_widget``), tabbed with the other Any2Reg panels.
"""

from __future__ import annotations

from typing import Any

from napari.viewer import Viewer

__all__ = ["open_registration", "open_review", "open_apply", "open_batch", "open_mapping", "open_landmarks"]

PLUGIN = "napari-any2reg"


def _open(viewer: Viewer, name: str) -> Any:
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
    return widget


def open_registration(viewer: Viewer) -> Any:
    """Layers > Register > Groupwise cardiac registration (napari appends the plugin name)."""
    return _open(viewer, "Registration")


def open_review(viewer: Viewer) -> Any:
    """Layers > Register > Review a cardiac registration (napari appends the plugin name)."""
    return _open(viewer, "Review")


def open_apply(viewer: Viewer) -> Any:
    """Layers > Register > Apply a registration to another layer (napari appends the plugin name)."""
    return _open(viewer, "Apply registration")


def open_batch(viewer: Viewer) -> Any:
    """Layers > Register > Register a cohort of series (napari appends the plugin name)."""
    return _open(viewer, "Batch")


def open_mapping(viewer: Viewer) -> Any:
    """Layers > Measure > T1 mapping (napari appends the plugin name)."""
    return _open(viewer, "T1 mapping")


def open_landmarks(viewer: Viewer) -> Any:
    """Layers > Measure > Landmarks, TRE and Dice (napari appends the plugin name)."""
    return _open(viewer, "Landmarks")
