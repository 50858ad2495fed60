"""A scanner's DICOM T1 map as a 2-D map input (``read_map_or_sequence`` / ``read_map_image``, issue 26):
one map file, a folder of one map, a MOLLI folder offering its map, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_dicom
from pydicom.uid import generate_uid

from napari_any2reg.core.sequence import Sequence
from napari_any2reg.io.map_input import MapImage, read_map_image, read_map_or_sequence

H, W = 12, 10
IOP = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
T1_MAP = ["DERIVED", "PRIMARY", "T1 MAP", "T1"]


def _t1(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1000, 1200, size=(H, W)).astype(np.float64)


def _write_map(path, t1_ms, uid=None, *, slope=0.5, intercept=-100.0, image_type=T1_MAP, **fields):
    """``t1_ms`` stored as ``(t1 - intercept) / slope``, as a scanner rescales its maps."""
    stored = np.round((t1_ms - intercept) / slope)
    fields = {"ImagePositionPatient": [10.0, -20.0, 30.0], "SeriesDescription": "MOLLI T1 map", **fields}
    write_dicom(path, stored, uid or generate_uid(), spacing_mm=(1.25, 1.4), ImageType=image_type,
                RescaleSlope=slope, RescaleIntercept=intercept, ImageOrientationPatient=IOP, SliceThickness=8.0,
                **fields)


def test_a_dicom_t1_map_file_is_a_map_in_ms_with_its_spacing_and_geometry(tmp_path):
    t1 = _t1()
    _write_map(tmp_path / "t1map.dcm", t1)
    image = read_map_or_sequence(tmp_path / "t1map.dcm", flag="NATIVE")
    assert isinstance(image, MapImage) and image.shape == (H, W)
    np.testing.assert_allclose(image.values, t1)  # stored * 0.5 - 100: milliseconds
    assert image.spacing_mm == (1.25, 1.4)
    assert image.info["quantity"] == "T1" and image.info["unit"] == "ms"
    assert image.info["dicom_map_type"] == "T1 MAP"
    assert image.geometry is not None
    np.testing.assert_allclose(image.geometry.origin, [10.0, -20.0, 30.0])
    np.testing.assert_allclose(image.geometry.column_direction, [0.0, 0.0, -1.0])
    assert image.geometry.slice_thickness_mm == 8.0
    # the same through read_map_image (any2reg segments), and a folder of that one image
    np.testing.assert_allclose(read_map_image(tmp_path / "t1map.dcm").values, t1)
    folder = tmp_path / "folder"
    folder.mkdir()
    _write_map(folder / "IM_0001", t1, image_type=["DERIVED", "PRIMARY", "M", "ND", "MOCO", "T1"])  # Siemens
    image = read_map_image(folder)
    np.testing.assert_allclose(image.values, t1)
    assert image.info["quantity"] == "T1" and image.info["dicom_file"] == "IM_0001"


def test_a_molli_folder_stays_the_sequence_and_its_map_is_read_from_its_file(tmp_path):
    folder = tmp_path / "molli"
    folder.mkdir()
    uid = generate_uid()
    tis = [100.0, 180.0, 260.0, 1100.0, 1180.0, 2100.0, 3100.0, 4100.0]
    rng = np.random.default_rng(1)
    for k, ti in enumerate(tis):
        write_dicom(folder / f"IM_{k:04d}", rng.integers(0, 900, (H, W)), uid, SeriesDescription="MOLLI 5(3)3",
                    InstanceNumber=k + 2, InversionTime=ti, ImageType=["ORIGINAL", "PRIMARY", "M", "IR"])
    t1 = _t1(2)
    _write_map(folder / "IM_map", t1, uid, InstanceNumber=1, InversionTime=0.0)
    sequence = read_map_or_sequence(folder, flag="NATIVE")
    assert isinstance(sequence, Sequence) and sequence.n_frames == len(tis)  # what registration needs
    sequence = read_map_or_sequence(folder / "IM_0003", flag="NATIVE")  # a frame's file: its series
    assert isinstance(sequence, Sequence) and sequence.n_frames == len(tis)
    image = read_map_or_sequence(folder / "IM_map", flag="NATIVE")  # the map's file: the map
    assert isinstance(image, MapImage)
    np.testing.assert_allclose(image.values, t1)
    # a map is asked for (any2reg segments): the error names the map's file
    with pytest.raises(ValueError, match=r"MAP .*molli: a series of 8 images with 1 scanner map image\(s\) "
                                         r"\(IM_map \(T1 MAP"):
        read_map_image(folder)


def test_a_folder_of_several_maps_and_a_dicom_without_an_image_are_refused_by_name(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    uid = generate_uid()
    for k in range(2):
        _write_map(folder / f"slice{k}.dcm", _t1(k), uid, ImagePositionPatient=[10.0 * k, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"POST .*a series of 2 scanner map images \(slice0.dcm \(T1 MAP, at 0, 0, "
                                         r"0 mm\); slice1.dcm .*give the file of the map you mean"):
        read_map_or_sequence(folder, flag="POST")
    np.testing.assert_allclose(read_map_or_sequence(folder / "slice1.dcm").values, _t1(1))

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID = generate_uid()
    report.Modality, report.SeriesInstanceUID = "SR", generate_uid()
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    for read in (read_map_image, read_map_or_sequence):
        with pytest.raises(ValueError, match=r"NATIVE .*report.dcm: read as DICOM \(Basic Text SR.*, Modality SR\), "
                                             r"but it holds no image .*neither a 2-D map nor a sequence"):
            read(tmp_path / "report.dcm", flag="NATIVE")
