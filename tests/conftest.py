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


def capture_notifications(monkeypatch, module) -> dict[str, list[str]]:
    """Replace ``module.show_error`` / ``module.show_info`` by recorders; returns the records."""
    calls: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(module, "show_error", lambda msg: calls["error"].append(str(msg)))
    monkeypatch.setattr(module, "show_info", lambda msg: calls["info"].append(str(msg)))
    return calls
