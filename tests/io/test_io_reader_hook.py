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


# ---------------------------------------------------------------- item 13: napari says why
def _hostile_files(tmp_path):
    """(path napari is asked to open, words its error must show) for files this plugin refuses."""
    import tifffile

    fake_dcm = tmp_path / "IM_0001.dcm"
    fake_dcm.write_bytes(b"this is a text file, not an image\n" * 10)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((16, 16), np.float32))
    pngs = tmp_path / "photos"
    pngs.mkdir()
    (pngs / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    empty = tmp_path / "nothing"
    empty.mkdir()
    zero = tmp_path / "zero.nii.gz"
    zero.write_bytes(b"")
    return [
        (fake_dcm, "not a DICOM file"),
        (flat, "single image (16, 16); need a time series"),
        (pngs, "no DICOM file among its first"),
        (empty, "is an empty folder"),
        (zero, "is empty (0 bytes)"),
    ]


def test_napari_shows_why_a_file_is_refused(viewer, tmp_path):
    from napari.errors import ReaderPluginError

    for path, words in _hostile_files(tmp_path):
        with pytest.raises(Exception) as error:
            viewer.open(path, plugin=PLUGIN)
        # what napari puts in its reader dialog: str() of the error, with the plugin's message
        text = str(error.value) + "\n" + (str(error.value.__cause__) if isinstance(error.value, ReaderPluginError) else "")
        assert words in text and str(path.name) in text, text
        assert "refused the file" not in text and "returned no data" not in text
    assert len(viewer.layers) == 0
    # a folder that holds a series still opens (the probe did not get stricter)
    _philips_molli(tmp_path / "molli", with_maps=0)
    (layer,) = viewer.open(tmp_path / "molli", plugin=PLUGIN)
    assert layer.data.shape == (10, H, W)


def test_a_named_non_dicom_file_is_not_read_through_its_folder(tmp_path, monkeypatch):
    """A ``.dcm`` that is not DICOM is refused as that file (no scan of the folder beside it)."""
    from napari_any2reg.io import SequenceReadError, read_sequence
    from napari_any2reg.io.dicom import reader as dicom  # the module whose reader calls _scan

    _philips_molli(tmp_path / "molli", with_maps=0)
    junk = tmp_path / "molli" / "junk.dcm"
    junk.write_bytes(b"x" * 300)
    scanned = []
    real_scan = dicom._scan
    monkeypatch.setattr(dicom, "_scan", lambda files: scanned.append(files) or real_scan(files))
    with pytest.raises(SequenceReadError, match=r"junk\.dcm: not a DICOM file"):
        read_sequence(junk)
    assert scanned == []
    # a real file of the series still reads its series
    assert read_sequence(tmp_path / "molli" / "IM_0000").n_frames == 10
