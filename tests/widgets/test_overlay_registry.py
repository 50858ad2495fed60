"""The overlay registry (core/overlays.py, issue 25 item 7): one entry is all an overlay needs.

A temporary entry (the displacement magnitude |u| in mm, with an export file and a report
panel) is registered and removed again around each test; the Review dock offers it as a
button and draws it with its legend, the export writes it under its item name and the QC report
shows its panel — with no other edit. The built-in entries keep their names, layer suffixes and
export items.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_any2reg.core import overlays as ov

SPACING = (1.5, 2.0)


def _magnitude(inputs: ov.OverlayInputs) -> ov.OverlayData:
    from napari_any2reg.core.qc import displacement_magnitude_mm

    values = displacement_magnitude_mm(inputs.displacement, inputs.spacing_mm)
    return ov.OverlayData(values, (0.0, max(float(values.max()), 1e-3)), "|u| per pixel in mm.")


MAGNITUDE = ov.Overlay(
    "magnitude", "|u|", "Displacement |u|", "Length of each pixel's displacement in mm.", _magnitude,
    legend=ov.Legend("|u|", "mm", "length of the shift"), colormap="plasma", opacity=0.6,
    export=ov.OverlayExport("magnitude", "Displacement magnitude", "|u| per frame in mm (TIFF)",
                            "displacement_magnitude.tif", quantity="|u|", unit="mm"),
    report=ov.OverlayReport("|u|, max over frames", "max", "plasma"),
)


@pytest.fixture
def magnitude_overlay():
    ov.register_overlay(MAGNITUDE)
    try:
        yield MAGNITUDE
    finally:
        ov.unregister_overlay(MAGNITUDE.name)


def _field(n=4, h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    u = np.stack([np.stack([np.sin(3 * yy + k), np.cos(2 * xx - k)]) for k in range(n)]).astype(np.float32)
    frames = rng.random((n, h, w)).astype(np.float32)
    return frames, u


def test_builtin_entries_keep_their_names_suffixes_and_items():
    assert list(ov.OVERLAYS) == ["grid", "quiver", "jacobian", "folding", "scores", "difference_before",
                                 "difference_after", "checkerboard", "displacement_sd"]
    assert {name: o.suffix for name, o in ov.OVERLAYS.items()}["jacobian"] == "Jacobian"
    assert list(ov.overlay_groups())[5] == "difference"
    assert [o.export.item for o in ov.export_overlays()] == ["jacobian", "uncertainty"]
    assert ov.OVERLAYS["displacement_sd"].legend.unit == "mm"
    from napari_any2reg.pipeline import export as ex

    names = list(ex.EXPORT_ITEMS)
    assert names.index("itk") + 1 == names.index("jacobian") and names.index("jacobian") + 1 == names.index("uncertainty")


def test_registry_refuses_entries_that_cannot_work():
    with pytest.raises(ValueError, match="registered already"):
        ov.register_overlay(ov.OVERLAYS["jacobian"])
    with pytest.raises(ValueError, match="kind 'mesh'"):
        ov.register_overlay(ov.Overlay("x", "x", "X", "", _magnitude, kind="mesh"))
    with pytest.raises(ValueError, match="no review maps"):
        ov.register_overlay(ov.Overlay("x", "x", "X", "", _magnitude, needs=("review",),
                                       report=ov.OverlayReport("x")))
    with pytest.raises(ValueError, match="export item 'jacobian' is taken"):
        ov.register_overlay(ov.Overlay("x", "x", "X", "", _magnitude, export=ov.OverlayExport("jacobian", "", "", "x.npy")))
    with pytest.raises(ValueError, match="beside the other entries of group 'difference'"):
        ov.register_overlay(ov.Overlay("x", "x", "X", "", _magnitude, group="difference"))
    assert "x" not in ov.OVERLAYS


def test_displacement_sd_is_refused_with_the_reason():
    frames, u = _field()
    sd = ov.OVERLAYS["displacement_sd"]
    assert "groupwise engine" in ov.missing_input(sd, ov.OverlayInputs(u, engine="groupwise"))
    note = "none: one test-time orientation and no shifted passes give no spread"
    assert note in ov.missing_input(sd, ov.OverlayInputs(u, engine="any2reg", uncertainty_note=note))
    data = sd.compute(ov.OverlayInputs(u, displacement_sd_mm=np.full(frames.shape, 0.5, np.float32)))
    assert data.limits[0] == 0.0 and data.limits[1] == pytest.approx(0.5) and "mm" in data.status


def test_an_entry_is_an_export_item_without_other_edits(tmp_path, magnitude_overlay):
    from napari_any2reg.core.qc import displacement_magnitude_mm
    from napari_any2reg.core.sequence import Sequence
    from napari_any2reg.io import read_map_tiff
    from napari_any2reg.pipeline import export as ex

    assert "magnitude" in ex.EXPORT_ITEMS and ex.parse_export_items("magnitude,stack") == ("stack", "magnitude")
    frames, u = _field()
    registered = Sequence(frames, spacing_mm=SPACING, name="reg")
    out = ex.export_registration(tmp_path / "out", registered, u, items="magnitude,record")
    assert out.items == ("magnitude", "record")
    values, info = read_map_tiff(tmp_path / "out" / "displacement_magnitude.tif")
    np.testing.assert_allclose(values, displacement_magnitude_mm(u, SPACING), rtol=1e-6)
    assert info["quantity"] == "|u|" and info["unit"] == "mm"
    # the displacement SD item (same registry) is skipped with its reason when the run has none
    out = ex.export_registration(tmp_path / "all", registered, u, items="all", info={"engine": "groupwise"})
    assert "magnitude" in out.items and "groupwise engine" in out.skipped["uncertainty"]


def test_an_entry_is_a_report_panel_without_other_edits(magnitude_overlay):
    from napari_any2reg.core.qc import run_summary
    from napari_any2reg.core.report import report_figure

    frames, u = _field()
    summary = run_summary(frames, frames, u, {"engine": "groupwise"})

    def titles(**kwargs):
        figure = report_figure(frames, frames, u, spacing_mm=SPACING, summary=summary, **kwargs)
        return [axes.get_title() for axes in figure.axes]

    shown = titles()
    assert "|u|, max over frames (mm)" in shown and "displacement SD, max over frames (mm)" not in shown
    with_sd = titles(displacement_sd_mm=np.full(frames.shape, 0.3, np.float32))
    assert "displacement SD, max over frames (mm)" in with_sd
    ov.unregister_overlay("magnitude")
    try:
        assert "|u|, max over frames (mm)" not in titles()
    finally:
        ov.register_overlay(MAGNITUDE)  # the fixture removes it


@pytest.mark.napari
def test_an_entry_is_a_review_overlay_without_other_edits(viewer, qtbot, magnitude_overlay):
    from conftest import plugin_dock

    from napari_any2reg.core.qc import displacement_magnitude_mm
    from napari_any2reg.widgets._dock import LEGEND_KEY, legend_text

    review = plugin_dock(viewer, "Review")
    assert review.overlay_choices()["magnitude"] == "Displacement |u|"
    frames, u = _field()
    meta = {"displacement": u, "source_layer": "gone", "spacing_mm": SPACING,
            "any2reg_result": {"engine": "groupwise", "device": "cpu", "seconds": 1.0, "folding_percent": 0.0}}
    layer = viewer.add_image(frames, name="moved registered", metadata=meta, scale=(1, *SPACING))
    button = review.magnitude_button
    assert button.isEnabled() and button.text() == "Displacement |u|"
    button.click()
    qtbot.waitUntil(lambda: review.overlay_layer("magnitude") is not None and not review.busy(), timeout=60_000)
    shown = viewer.layers[f"{layer.name} |u|"]
    np.testing.assert_allclose(shown.data, displacement_magnitude_mm(u, SPACING), rtol=1e-6)
    assert shown.metadata[LEGEND_KEY] == {"quantity": "|u|", "unit": "mm", "note": "length of the shift"}
    assert legend_text(shown).startswith("|u| (mm)") and shown.colorbar.visible and shown.opacity == pytest.approx(0.6)
    np.testing.assert_allclose(shown.scale, layer.scale)
    assert review.status_label.text() == "|u| per pixel in mm."
    # the built-in buttons are all still there
    assert list(review.overlay_choices())[:8] == ["grid", "quiver", "jacobian", "folding", "scores", "difference",
                                                  "checkerboard", "displacement_sd"]
