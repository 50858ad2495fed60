"""Issue 24: the napari reader hook on hostile and scanner-derived inputs.

* the scanner's own T1 map of a DICOM series (``metadata["scanner_maps"]``) opens as its own
  layer beside the sequence;
* a file the plugin cannot read shows napari the reason, not "refused the file" (item 13).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PLUGIN

H, W = 12, 10


def _philips_molli(folder, *, with_maps: int = 2):
    """A synthetic Philips MOLLI series: 10 inversion frames and the scanner's T1 MAP images."""
    from pydicom.uid import generate_uid

    from test_io import _write_dicom

    folder.mkdir()
    uid = generate_uid()
    tis = [231.0, 350.0, 1231.0, 1350.0, 2231.0, 2350.0, 3231.0, 3350.0, 4231.0, 5231.0]
    rng = np.random.default_rng(3)
    pixels = (rng.random((10 + with_maps, H, W)) * 1000).astype(np.uint16)
    common = dict(SeriesDescription="MOLLI 5(3)3", SeriesNumber=801, ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    for k, ti in enumerate(tis):
        _write_dicom(folder / f"IM_{k:04d}", pixels[k], uid, InstanceNumber=k + 3, InversionTime=ti,
                     ImageType=["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"], **common)
    for j in range(with_maps):
        _write_dicom(folder / f"IM_map{j}", pixels[10 + j], uid, InstanceNumber=j + 1, InversionTime=0.0,
                     ImageType=["ORIGINAL", "PRIMARY", "T1 MAP", "T1"], **common)
    return pixels, tis


def test_scanner_t1_map_opens_as_its_own_layer(viewer, tmp_path):
    pixels, tis = _philips_molli(tmp_path / "molli")
    layers = viewer.open(tmp_path / "molli", plugin=PLUGIN)
    assert [layer.name for layer in layers] == [
        "MOLLI 5(3)3", "MOLLI 5(3)3 scanner T1 map", "MOLLI 5(3)3 scanner T1 map (2)"]
    sequence, first, second = layers
    assert sequence.data.shape == (10, H, W)  # the maps are not frames
    np.testing.assert_allclose(sequence.metadata["timings_ms"], tis)
    for layer, expected in ((first, pixels[10]), (second, pixels[11])):
        assert layer.ndim == 2
        np.testing.assert_array_equal(layer.data, expected.astype(np.float32))
        # on the sequence's grid: same pixel size and in-plane position
        np.testing.assert_allclose(layer.scale, sequence.scale[-2:])
        np.testing.assert_allclose(layer.translate, sequence.translate[-2:])
        assert layer.metadata["any2reg_scanner_map"] in layer.name
        assert layer.metadata["sequence_layer"] == sequence.name
        assert not layer.visible and layer.colormap.name == "turbo"


def test_a_series_without_scanner_maps_opens_as_one_layer(viewer, tmp_path):
    _philips_molli(tmp_path / "plain", with_maps=0)
    (layer,) = viewer.open(tmp_path / "plain", plugin=PLUGIN)
    assert layer.data.shape == (10, H, W)
