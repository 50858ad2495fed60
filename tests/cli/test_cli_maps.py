"""The maps the command line writes (fit, ecv) are ImageJ TIFFs with axes that Fiji opens with
their pixel size, and that ``read_map_tiff`` (and so ``segments`` and ``ecv``) reads back."""

import numpy as np
import tifffile

from napari_any2reg.cli import main
from napari_any2reg.io import read_map_tiff, save_map_tiff


def test_ecv_maps_are_imagej_maps_with_axes(tmp_path):
    labels = np.zeros((24, 24), np.uint8)
    labels[4:10, 4:10] = 1  # LV blood
    labels[12:20, 4:20] = 2  # LV myocardium
    native = np.where(labels == 1, 1550.0, 1000.0).astype(np.float32)
    post = np.where(labels == 1, 300.0, 450.0).astype(np.float32)
    for name, values in (("native.tif", native), ("post.tif", post)):
        save_map_tiff(tmp_path / name, values, (2.0, 2.0), {"quantity": "T1", "unit": "ms"}, axes="YX")
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "ecv"
    assert main(["ecv", str(tmp_path / "native.tif"), str(tmp_path / "post.tif"), "-o", str(out), "--mask",
                 str(tmp_path / "labels.npy"), "--hematocrit", "0.42", "--no-register", "-q"]) == 0
    for name in ("ecv.tif", "native_t1.tif", "post_t1.tif"):
        with tifffile.TiffFile(out / name) as tif:
            assert tif.is_imagej and tif.series[0].axes == "YX", name
        values, info = read_map_tiff(out / name)
        assert values.shape == (24, 24) and info["spacing_mm"] == [2.0, 2.0], name
    ecv, info = read_map_tiff(out / "ecv.tif")
    assert info["unit"] == "%"
    expected = 100 * (1 - 0.42) * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1550)
    assert abs(float(np.nanmedian(ecv[labels == 2])) - expected) < 0.1
