"""The README screenshots come from scripts that run here, at 1280x800 (issue 23).

``scripts/screenshot.py`` and ``scripts/screenshot_review.py`` open their own napari window,
add the docks as the Plugins menu does and press the buttons; here on a 64x64 sample with a
quick groupwise run. The written PNGs have the window's size, and the frame label the
screenshots show carries each visible colour map's quantity, unit and range.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.napari, pytest.mark.usefixtures("small_samples")]

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_screenshot_script_writes_the_window_at_1280x800(tmp_path, qapp):
    out = tmp_path / "screenshot.png"
    assert _script("screenshot").main(["-o", str(out), "--engine", "groupwise", "--iterations-scale", "0.2"]) == 0
    width, height = _png_size(out)
    ratio = qapp.devicePixelRatio() if hasattr(qapp, "devicePixelRatio") else 1.0
    assert (width, height) == (round(1280 * ratio), round(800 * ratio))


def test_review_screenshots_show_legends_with_unit_and_range(tmp_path, qapp, capsys):
    from napari_any2reg.widgets import _dock

    seen = []
    real = _dock.legend_text

    def recording(layer):
        text = real(layer)
        seen.append(text)
        return text

    import unittest.mock

    with unittest.mock.patch.object(_dock, "legend_text", recording):
        assert _script("screenshot_review").main(["-o", str(tmp_path), "--engine", "groupwise",
                                                  "--iterations-scale", "0.2"]) == 0
    for name in ("review_window.png", "review_overlays.png", "review_profile.png"):
        assert (tmp_path / name).stat().st_size > 5_000, name
    ratio = qapp.devicePixelRatio() if hasattr(qapp, "devicePixelRatio") else 1.0
    assert _png_size(tmp_path / "review_window.png") == (round(1280 * ratio), round(800 * ratio))
    # the panel titles are the legends: quantity (unit): low – high
    titles = [t for t in seen if t]
    assert any(t.startswith("grid colour |u| (mm): 0 – ") for t in titles), titles
    assert any(t.startswith("det J (no unit): ") for t in titles)
    assert any(t.startswith("frame − template (signal): -") for t in titles)
    assert all(np.isfinite(float(t.split(": ")[1].split(" – ")[0])) for t in titles)
