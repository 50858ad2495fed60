"""Issue 13 in napari: one layer per slice placed by the scanner geometry; a Labels layer as mask."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.napari

PLUGIN = "napari-any2reg"


def test_multi_slice_dicom_folder_opens_one_layer_per_slice(viewer, tmp_path):
    from test_geometry_io import NORMAL, ORIGIN, SPACING, _philips_molli, _slice_origin

    _philips_molli(tmp_path / "philips")
    layers = viewer.open(str(tmp_path / "philips"), plugin=PLUGIN)
    assert [layer.name for layer in layers] == [f"MOLLI 5(3)3 SAX slice {k}" for k in range(3)]
    for z, layer in enumerate(layers):
        np.testing.assert_allclose(layer.scale, (1.0, *SPACING))
        geometry = layer.metadata["geometry"]
        np.testing.assert_allclose(geometry["origin"], _slice_origin(z), atol=1e-6)
        # in-plane translate: the same for every slice of the stack (slices differ along the normal only)
        np.testing.assert_allclose(layer.translate[1:], layers[0].translate[1:], atol=1e-6)
        assert layer.metadata["timings_ms"] == sorted(layer.metadata["timings_ms"])


def test_labels_layer_is_offered_and_used_as_registration_mask(viewer, qtbot):
    from test_transforms_masks import _two_objects

    from napari_any2reg.widgets._layers import sequence_to_layer_data

    seq, left, _ = _two_objects()
    data, kwargs, _ = sequence_to_layer_data(seq.replace(name="two discs"))
    viewer.add_image(data, **kwargs)
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Registration")
    viewer.add_labels(left, name="heart", scale=kwargs["scale"][1:])
    assert [w.mask_combo.itemText(i) for i in range(w.mask_combo.count())] == ["(none)", "heart"]
    w.mask_combo.setCurrentIndex(1)
    w.engine_combo.setCurrentIndex(w.engine_combo.findData("groupwise"))
    w.iterations_spin.setValue(0.3)
    w.run("two discs")
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    result = w.last_result
    assert result is not None and "pixels drive the similarity" in result.params["mask"]
    assert viewer.layers["heart"].data is not None and np.array_equal(viewer.layers["heart"].data, left)
