"""Issue 13: multi-slice reading, DICOM robustness and scanner geometry kept end to end.

Every DICOM / NIfTI file here is synthetic, written in the test with pydicom / nibabel.
"""

import json

import numpy as np
import pytest

from napari_any2reg.core.geometry import SliceGeometry
from napari_any2reg.io import (
    SequenceReadError,
    SequenceReadWarning,
    read_sequence,
    read_slices,
    supported_path,
    write_nifti,
)

H, W = 12, 16  # H != W so a transposed image cannot pass
# an oblique short-axis-like orientation (LPS): rows along r, columns along c
ROW_DIR = np.array([0.8, 0.6, 0.0])
COL_DIR = np.array([0.0, 0.0, -1.0])
NORMAL = np.cross(ROW_DIR, COL_DIR)
ORIGIN = np.array([-40.0, 25.0, 60.0])
SPACING = (1.4, 0.9)  # (dy, dx)


def _write_dicom(path, pixels, series_uid, *, preamble=True, private_ti=None, **fields):
    from conftest import write_dicom

    write_dicom(path, pixels, series_uid, spacing_mm=SPACING, preamble=preamble, private_ti=private_ti, **fields)


def _slice_origin(z):
    return ORIGIN + z * 8.0 * NORMAL


def _philips_molli(folder, n_slices=3, tis=(250.0, 100.0, 1100.0, 180.0)):
    """A Philips-style export: all slices and frames in one folder, TI only in (2005,1572)."""
    from pydicom.uid import generate_uid

    folder.mkdir()
    uid = generate_uid()
    rng = np.random.default_rng(1)
    pixels = (rng.random((n_slices, len(tis), H, W)) * 1000).astype(np.uint16)
    count = 0
    for z in reversed(range(n_slices)):  # slices written out of order
        for k, ti in enumerate(tis):
            count += 1
            _write_dicom(
                folder / f"IM_{count:04d}", pixels[z, k], uid, private_ti=ti,
                SeriesDescription="MOLLI 5(3)3 SAX", InstanceNumber=(count * 5) % 97 + 1,
                ImagePositionPatient=list(_slice_origin(z)),
                ImageOrientationPatient=list(ROW_DIR) + list(COL_DIR), SliceThickness=8.0,
            )
    return pixels, np.asarray(tis)


def test_philips_multi_slice_molli_reads_every_slice_with_private_ti(tmp_path):
    pixels, tis = _philips_molli(tmp_path / "philips")
    assert supported_path(tmp_path / "philips") and supported_path(tmp_path / "philips" / "IM_0001")
    slices = read_slices(tmp_path / "philips")
    assert len(slices) == 3
    order = np.argsort(tis)
    for z, seq in enumerate(slices):  # sorted along the slice normal
        assert seq.kind == "molli" and seq.metadata["slice_index"] == z and seq.metadata["n_slices"] == 3
        np.testing.assert_array_equal(seq.timings_ms, tis[order])
        assert "2005,1572" in seq.metadata["timings_source"]
        np.testing.assert_array_equal(seq.frames, pixels[z][order].astype(np.float32))
        assert seq.spacing_mm == SPACING
        np.testing.assert_allclose(seq.geometry.origin, _slice_origin(z), atol=1e-6)
        np.testing.assert_allclose(seq.geometry.normal, NORMAL, atol=1e-6)
    with pytest.raises(SequenceReadError, match=r"3 slice.*--slice K"):
        read_sequence(tmp_path / "philips")
    one = read_sequence(tmp_path / "philips", slice_index=2)
    np.testing.assert_array_equal(one.frames, slices[2].frames)


def _enhanced_mr(path, n_slices=2, tis=(300.0, 120.0, 900.0), n_maps=0):
    """One enhanced multi-frame MR file: per-frame position, MR modifier TI, pixel transformation;
    ``n_maps`` more frames per slice are the scanner's T1 maps (per-frame FrameType ``T1 MAP``, TI
    0), as a Philips enhanced MOLLI export holds them; the inversion frames say ``M_IR``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    enhanced_mr = "1.2.840.10008.5.1.4.1.1.4.1"
    rng = np.random.default_rng(2)
    pixels = (rng.random((n_slices, len(tis), H, W)) * 1000).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = enhanced_mr
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = enhanced_mr, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription = generate_uid(), "MR", "T1 MOLLI"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = H, W, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(ROW_DIR) + list(COL_DIR)
    measures.PixelSpacing, measures.SliceThickness = list(SPACING), 8.0
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 2.0, -5.0, "US"
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame, stored = [], []
    maps = (rng.random((n_slices, n_maps, H, W)) * 2000).astype(np.uint16)
    for z in range(n_slices):
        for k, ti in enumerate(list(tis) + [0.0] * n_maps):
            item, position, modifier = Dataset(), Dataset(), Dataset()
            position.ImagePositionPatient = list(_slice_origin(z))
            modifier.InversionTimes = [ti]
            item.PlanePositionSequence = DicomSequence([position])
            item.MRModifierSequence = DicomSequence([modifier])
            if n_maps:
                frame_type = Dataset()
                frame_type.FrameType = (["DERIVED", "PRIMARY", "T1 MAP", "T1"] if k >= len(tis)
                                        else ["ORIGINAL", "PRIMARY", "M_IR", "NONE"])
                item.MRImageFrameTypeSequence = DicomSequence([frame_type])
            per_frame.append(item)
            stored.append(pixels[z, k] if k < len(tis) else maps[z, k - len(tis)])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.NumberOfFrames = len(per_frame)
    ds.PixelData = np.ascontiguousarray(np.stack(stored), dtype=np.uint16).tobytes()
    if n_maps:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "MIXED"]
    ds.save_as(str(path), enforce_file_format=True)
    return (pixels, np.asarray(tis)) if not n_maps else (pixels, np.asarray(tis), maps)


def test_enhanced_multi_frame_mr_is_split_into_slices_and_frames(tmp_path):
    folder = tmp_path / "enhanced"
    folder.mkdir()
    pixels, tis = _enhanced_mr(folder / "MR0001.dcm")
    slices = read_slices(folder)
    order = np.argsort(tis)
    assert len(slices) == 2
    for z, seq in enumerate(slices):
        np.testing.assert_array_equal(seq.timings_ms, tis[order])
        np.testing.assert_array_equal(seq.frames, pixels[z][order].astype(np.float32) * 2 - 5)
        np.testing.assert_allclose(seq.geometry.origin, _slice_origin(z), atol=1e-6)
        assert seq.spacing_mm == SPACING and seq.kind == "molli"


def test_an_enhanced_file_with_the_scanners_t1_maps_reads_the_frames_and_offers_the_maps(tmp_path):
    """Issue 24 item 10 for an enhanced multi-frame export: per slice 3 inversion frames and the
    scanner's 2 T1 maps (per-frame FrameType T1 MAP, TI 0). The maps were read as frames (TIs 0, 0,
    120, ...); now each slice has its 3 frames and its own maps as ``scanner_maps``."""
    folder = tmp_path / "enhanced"
    folder.mkdir()
    pixels, tis, maps = _enhanced_mr(folder / "MR0001.dcm", n_maps=2)
    slices = read_slices(folder)
    order = np.argsort(tis)
    assert len(slices) == 2
    for z, seq in enumerate(slices):
        assert seq.n_frames == 3 and seq.kind == "molli"
        np.testing.assert_array_equal(seq.timings_ms, tis[order])
        np.testing.assert_array_equal(seq.frames, pixels[z][order].astype(np.float32) * 2 - 5)
        found = seq.metadata["scanner_maps"]
        assert sorted(found) == ["scanner T1 map", "scanner T1 map (2)"]
        np.testing.assert_array_equal(found["scanner T1 map"], maps[z, 0].astype(np.float32) * 2 - 5)
        np.testing.assert_array_equal(found["scanner T1 map (2)"], maps[z, 1].astype(np.float32) * 2 - 5)
        assert len(seq.metadata["dicom_derived_left_out"]) == 4  # both slices' maps, named by frame


def test_preamble_less_ima_and_copies_and_ambiguous_order(tmp_path):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    folder = tmp_path / "bare"
    folder.mkdir()
    rng = np.random.default_rng(3)
    pixels = (rng.random((3, H, W)) * 1000).astype(np.uint16)
    sops = [generate_uid() for _ in range(3)]
    for k in range(3):
        _write_dicom(folder / f"f{k}", pixels[k], uid, preamble=False, InversionTime=[300.0, 100.0, 200.0][k],
                     SOPInstanceUID=sops[k], SeriesDescription="MOLLI")
    # a copy of frame 0 under another name (same SOPInstanceUID) and a junk file
    _write_dicom(folder / "f0_copy.IMA", pixels[0], uid, InversionTime=300.0, SOPInstanceUID=sops[0],
                 SeriesDescription="MOLLI")
    (folder / "junk.bin").write_bytes(b"\x08\x00" + bytes(range(200)) * 50)
    assert supported_path(folder / "f1") and supported_path(folder / "f0_copy.IMA")
    with pytest.warns(SequenceReadWarning, match="appear twice"):
        seq = read_sequence(folder)
    np.testing.assert_array_equal(seq.timings_ms, [100.0, 200.0, 300.0])
    np.testing.assert_array_equal(seq.frames, pixels[[1, 2, 0]].astype(np.float32))
    assert len(seq.metadata["dicom_duplicates_dropped"]) == 1

    # two different images that nothing orders: no timings, the same InstanceNumber
    tie = tmp_path / "tie"
    tie.mkdir()
    for k in range(3):
        _write_dicom(tie / f"IM{k}.dcm", pixels[k], uid, InstanceNumber=1 if k < 2 else 2)
    with pytest.raises(SequenceReadError, match=r"share InstanceNumber 1.*order cannot be told"):
        read_sequence(tie)


def test_folder_scan_time_guard(tmp_path, monkeypatch):
    _philips_molli(tmp_path / "slow", n_slices=1)
    monkeypatch.setenv("ANY2REG_DICOM_SCAN_SECONDS", "0")
    with pytest.raises(SequenceReadError, match=r"took more than 0 s.*ANY2REG_DICOM_SCAN_SECONDS"):
        read_sequence(tmp_path / "slow")


# ---------------------------------------------------------------------------- geometry end to end
def _world_of_voxel(image, i, j, k=0):
    return (image.affine @ np.array([i, j, k, 1.0]))[:3]


def _ras(lps):
    return np.array([-lps[0], -lps[1], lps[2]])


def test_same_scan_as_dicom_and_as_dcm2niix_nifti_reads_the_same_and_exports_overlay(tmp_path):
    import nibabel

    pixels, tis = _philips_molli(tmp_path / "dicom", n_slices=1)
    from_dicom = read_sequence(tmp_path / "dicom")
    frames = pixels[0][np.argsort(tis)].astype(np.float32)
    # the same scan as dcm2niix writes it: rows reversed, negative-determinant RAS affine
    dy, dx = SPACING
    lps = np.eye(4)
    lps[:3, 0] = ROW_DIR * dx
    lps[:3, 1] = -COL_DIR * dy
    lps[:3, 2] = NORMAL * 8.0
    lps[:3, 3] = ORIGIN + (H - 1) * dy * COL_DIR
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    assert np.linalg.det(affine[:3, :3]) < 0
    data = np.transpose(frames[:, ::-1, :], (2, 1, 0))[:, :, None, :]  # (I, J, 1, N)
    image = nibabel.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    path = tmp_path / "molli_dcm2niix.nii.gz"
    nibabel.save(image, str(path))
    (tmp_path / "molli_dcm2niix.json").write_text(json.dumps({"InversionTime": (np.sort(tis) / 1000).tolist()}))
    from_nifti = read_sequence(path)
    np.testing.assert_array_equal(from_nifti.frames, from_dicom.frames)  # no vertical flip between them
    np.testing.assert_allclose(from_nifti.timings_ms, np.sort(tis))  # BIDS seconds -> ms
    assert from_nifti.geometry.allclose(from_dicom.geometry)

    # exports of both overlay the source: world position of pixel (r, c) is the DICOM one
    r, c = 7, 3
    world_lps = ORIGIN + c * dx * ROW_DIR + r * dy * COL_DIR
    for name, seq in (("a.nii.gz", from_dicom), ("b.nii.gz", from_nifti)):
        out = nibabel.load(str(write_nifti(tmp_path / name, seq)))
        assert out.shape == (W, H, 1, len(tis))  # (I, J, 1, N): time is not z
        assert out.header.get_xyzt_units() == ("mm", "msec")
        assert int(out.header["sform_code"]) == 1
        np.testing.assert_allclose(_world_of_voxel(out, c, r), _ras(world_lps), atol=1e-4)
        assert np.asanyarray(out.dataobj)[c, r, 0, 2] == seq.frames[2, r, c]
        back = read_sequence(tmp_path / name)
        np.testing.assert_array_equal(back.frames, seq.frames)
        assert back.geometry.allclose(seq.geometry)
    # the source NIfTI's own voxel for that pixel is at the same world point
    np.testing.assert_allclose(_world_of_voxel(image, c, H - 1 - r), _ras(world_lps), atol=1e-4)


def test_multi_slice_nifti_and_ome_tiff(tmp_path):
    import nibabel
    import tifffile

    rng = np.random.default_rng(4)
    data = rng.random((W, H, 3, 5)).astype(np.float32)  # (I, J, Z, T)
    affine = np.diag([0.9, 1.4, 8.0, 1.0])
    affine[:3, 3] = [5.0, -7.0, 20.0]
    nibabel.save(nibabel.Nifti1Image(data, affine), str(tmp_path / "stack.nii.gz"))
    slices = read_slices(tmp_path / "stack.nii.gz")
    assert [s.metadata["slice_index"] for s in slices] == [0, 1, 2]
    for z, seq in enumerate(slices):
        np.testing.assert_array_equal(seq.frames, np.transpose(data[:, :, z], (2, 1, 0)))
        np.testing.assert_allclose(_ras(seq.geometry.origin), [5.0, -7.0, 20.0 + 8.0 * z])
    with pytest.raises(SequenceReadError, match=r"3 slices"):
        read_sequence(tmp_path / "stack.nii.gz")
    frames = rng.random((5, 2, H, W)).astype(np.float32)  # T, Z, Y, X
    tifffile.imwrite(tmp_path / "tz.ome.tif", frames, ome=True, photometric="minisblack", metadata={"axes": "TZYX"})
    tiff_slices = read_slices(tmp_path / "tz.ome.tif")
    assert len(tiff_slices) == 2
    np.testing.assert_array_equal(tiff_slices[1].frames, frames[:, 1])


def test_geometry_round_trips_through_tiff_and_layer_metadata(tmp_path):
    from napari_any2reg.core.sequence import Sequence
    from napari_any2reg.io import write_tiff

    geometry = SliceGeometry.from_dicom(list(ROW_DIR) + list(COL_DIR), ORIGIN, 8.0)
    seq = Sequence(np.random.default_rng(5).random((3, H, W)), spacing_mm=SPACING, geometry=geometry)
    back = read_sequence(write_tiff(tmp_path / "g.tif", seq))
    assert back.geometry.allclose(geometry)
    from napari_any2reg.widgets._layers import sequence_from_layer, sequence_layer_metadata

    again = sequence_from_layer(seq.frames, metadata=sequence_layer_metadata(seq))
    assert again.geometry.allclose(geometry) and "geometry" not in again.metadata
    # pixel_to_world follows DICOM: origin + c dx row_direction + r dy column_direction
    np.testing.assert_allclose(geometry.pixel_to_world(2, 5, SPACING),
                               ORIGIN + 5 * SPACING[1] * ROW_DIR + 2 * SPACING[0] * COL_DIR)


def test_cli_register_slice_all_and_one(tmp_path, capsys):
    from napari_any2reg.cli import main

    _philips_molli(tmp_path / "philips", tis=(250.0, 100.0, 1100.0))
    common = ["--engine", "groupwise", "--device", "cpu", "--iterations-scale", "0.05", "-q"]
    assert main(["register", str(tmp_path / "philips"), "-o", str(tmp_path / "all"), "--slice", "all", *common]) == 0
    slices = read_slices(tmp_path / "philips")
    for k in range(3):
        registered = read_sequence(tmp_path / "all" / f"slice_{k}" / "registered.tif")
        np.testing.assert_array_equal(registered.timings_ms, [100.0, 250.0, 1100.0])
        assert registered.geometry.allclose(slices[k].geometry)  # geometry kept in the export
    assert main(["register", str(tmp_path / "philips"), "-o", str(tmp_path / "one"), "--slice", "1", *common]) == 0
    assert (tmp_path / "one" / "registered.tif").is_file()
    assert main(["register", str(tmp_path / "philips"), "-o", str(tmp_path / "none"), *common]) != 0
    assert "--slice" in capsys.readouterr().err
