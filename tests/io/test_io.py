"""Readers, writers and the atomic writer of ``napari_any2reg.io``."""

import gzip
import json
import os
import stat

import numpy as np
import pytest
import tifffile

from napari_any2reg.core.sequence import Sequence
from napari_any2reg.io import (
    SequenceReadError,
    atomic_write,
    read_dicom_series,
    read_nifti,
    read_sequence,
    read_tiff,
    supported_path,
    write_nifti,
    write_tiff,
)

N, H, W = 5, 12, 16  # H != W so that a transposed image cannot pass


def _frames(n=N, h=H, w=W, seed=0):
    return np.random.default_rng(seed).random((n, h, w)).astype(np.float32) * 100


def _sequence(**changes):
    fields = dict(
        frames=_frames(),
        timings_ms=[100.0, 180.0, 260.0, 1000.5, np.inf],
        spacing_mm=(1.3, 0.7),
        kind="stone",
        name="patient slice",
        metadata={"note": "ok", "count": np.int64(3), "gain": np.float32(0.5), "obj": object()},
    )
    fields.update(changes)
    return Sequence(**fields)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.frames, b.frames)
    if a.timings_ms is None:
        assert b.timings_ms is None
    else:
        np.testing.assert_array_equal(a.timings_ms, b.timings_ms)
    assert a.spacing_mm == b.spacing_mm
    assert a.kind == b.kind
    assert a.name == b.name


# ---------------------------------------------------------------------------- TIFF
@pytest.mark.parametrize("name", ["seq.tif", "seq.tiff", "seq.ome.tif"])
def test_tiff_round_trip_keeps_frames_timings_spacing_kind(tmp_path, name):
    frames = _frames()
    original = frames.copy()
    seq = _sequence(frames=frames)
    out = write_tiff(tmp_path / name, seq)
    assert out == tmp_path / name and out.is_file()
    back = read_sequence(out)
    _assert_same(seq, back)
    assert np.isinf(back.timings_ms[-1])
    assert back.frames.dtype == np.float32 and back.frames.shape == (N, H, W)
    assert back.metadata["note"] == "ok" and back.metadata["count"] == 3 and back.metadata["gain"] == 0.5
    assert "obj" not in back.metadata  # not JSON-serialisable: dropped, not fatal
    np.testing.assert_array_equal(frames, original)  # the caller's array is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


def test_written_tiff_is_imagej_with_mm_spacing_and_json(tmp_path):
    out = write_tiff(tmp_path / "s.tif", _sequence())
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        assert tif.series[0].dtype == np.float32
        assert tif.imagej_metadata["unit"] == "mm"
        page = tif.pages[0]
        xres, yres = (v[0] / v[1] for v in (page.tags["XResolution"].value, page.tags["YResolution"].value))
        assert 1 / yres == pytest.approx(1.3) and 1 / xres == pytest.approx(0.7)
        line = [l for l in page.description.splitlines() if l.startswith("any2reg=")][0]
    content = json.loads(line[len("any2reg="):])
    assert content["any2reg"] == 1 and content["kind"] == "stone"
    assert content["timings_ms"][-1] == "inf" and content["spacing_mm"] == [1.3, 0.7]


def test_ome_tiff_written_with_physical_size(tmp_path):
    out = write_tiff(tmp_path / "s.ome.tif", _sequence())
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        assert 'PhysicalSizeY="1.3"' in tif.ome_metadata and 'PhysicalSizeYUnit="mm"' in tif.ome_metadata


def test_read_ome_tiff_spacing_in_micron_and_deltat_timings(tmp_path):
    path = tmp_path / "other.ome.tif"
    tifffile.imwrite(
        path,
        _frames(),
        metadata={
            "axes": "TYX",
            "PhysicalSizeX": 700.0,  # default unit µm
            "PhysicalSizeY": 1300.0,
            "Plane": {"DeltaT": [0.1, 0.2, 0.3, 0.4, 0.5]},  # default unit s
        },
    )
    seq = read_tiff(path)
    assert seq.frames.shape == (N, H, W)
    assert seq.spacing_mm == pytest.approx((1.3, 0.7))
    np.testing.assert_allclose(seq.timings_ms, [100, 200, 300, 400, 500])
    assert seq.metadata["format"] == "ome-tiff"


def test_read_ome_tiff_map_annotation_timings(tmp_path):
    path = tmp_path / "ann.ome.tif"
    tifffile.imwrite(
        path,
        _frames(),
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.7,
            "PhysicalSizeXUnit": "mm",
            "PhysicalSizeY": 1.3,
            "PhysicalSizeYUnit": "mm",
            "MapAnnotation": {"Value": {"inversion_times_ms": "100, 200, 300, 400, inf"}},
        },
    )
    seq = read_sequence(path)
    np.testing.assert_array_equal(seq.timings_ms, [100, 200, 300, 400, np.inf])
    assert seq.spacing_mm == pytest.approx((1.3, 0.7))


@pytest.mark.parametrize(
    "shape, axes",
    [((N, H, W), "ZYX"), ((N, H, W), "TYX"), ((N, 1, 1, H, W), "TZCYX"), ((1, N, 1, H, W), "TZCYX")],
)
def test_read_imagej_hyperstack_frames_along_t_or_z_with_spacing(tmp_path, shape, axes):
    path = tmp_path / "ij.tif"
    data = _frames().reshape(shape)
    # 700 x 1300 micron pixels, as Fiji stores them (pixels per unit + unit name)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 700, 1 / 1300),
                     metadata={"axes": axes, "unit": "micron"})
    seq = read_tiff(path)
    np.testing.assert_array_equal(seq.frames, _frames())
    assert seq.spacing_mm == (1.3, 0.7)  # rational/unit rounding noise removed
    assert seq.metadata["format"] == "imagej-tiff"


def test_plain_tiff_picks_up_json_sidecar(tmp_path):
    path = tmp_path / "molli_raw.tif"
    tifffile.imwrite(path, _frames(), metadata=None)
    (tmp_path / "molli_raw.json").write_text(
        json.dumps({"inversion_times_ms": [100, 180, 260, 1000, "inf"], "spacing_mm": [1.3, 0.7], "kind": "sasha"})
    )
    seq = read_sequence(path)
    np.testing.assert_array_equal(seq.timings_ms, [100, 180, 260, 1000, np.inf])
    assert seq.spacing_mm == (1.3, 0.7)
    assert seq.kind == "sasha"  # sidecar beats the name guess (molli)
    assert seq.metadata["timings_source"].endswith("molli_raw.json")


def test_plain_tiff_without_anything_gets_defaults_and_name_guess(tmp_path):
    path = tmp_path / "cine_sax.tiff"
    tifffile.imwrite(path, _frames(), metadata=None)
    seq = read_sequence(path)
    assert seq.timings_ms is None and seq.spacing_mm == (1.0, 1.0)
    assert seq.kind == "cine" and seq.name == "cine_sax"
    assert seq.metadata["spacing_source"] == "default"


def test_plain_tiff_resolution_in_cm(tmp_path):
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, _frames(), resolution=(10 / 0.7, 10 / 1.3), resolutionunit="CENTIMETER", metadata=None)
    assert read_tiff(path).spacing_mm == pytest.approx((1.3, 0.7))


def test_sidecar_timing_count_mismatch_names_both_numbers(tmp_path):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, _frames(), metadata=None)
    (tmp_path / "t.json").write_text(json.dumps({"timings_ms": [1, 2, 3]}))
    with pytest.raises(SequenceReadError) as info:
        read_sequence(path)
    message = str(info.value)
    assert "t.json" in message and "3 timings" in message and f"{N} frames" in message
    # an explicit argument makes the bad sidecar irrelevant
    seq = read_sequence(path, timings_ms=[5, 4, 3, 2, 1])
    np.testing.assert_array_equal(seq.timings_ms, [5, 4, 3, 2, 1])


def test_keyword_overrides_beat_the_file(tmp_path):
    out = write_tiff(tmp_path / "s.tif", _sequence())
    seq = read_sequence(out, kind="molli", timings_ms=[1, 2, 3, 4, 5], spacing_mm=2.0)
    assert seq.kind == "molli" and seq.spacing_mm == (2.0, 2.0)
    np.testing.assert_array_equal(seq.timings_ms, [1, 2, 3, 4, 5])
    with pytest.raises(SequenceReadError, match=r"s\.tif.*3 timings given for 5 frames"):
        read_sequence(out, timings_ms=[1, 2, 3])
    with pytest.raises(SequenceReadError, match="s.tif"):
        read_sequence(out, kind="t2star")


# ---------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    missing = tmp_path / "missing.tif"
    with pytest.raises(SequenceReadError, match="missing.tif") as info:
        read_sequence(missing)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(SequenceReadError, match="missing.nii.gz"):
        read_nifti(tmp_path / "missing.nii.gz")


def test_corrupt_tiff(tmp_path):
    path = tmp_path / "noise.tif"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(SequenceReadError, match=r"noise\.tif.*not a readable TIFF"):
        read_sequence(path)


def test_truncated_nifti(tmp_path):
    good = write_nifti(tmp_path / "full.nii.gz", _sequence(frames=_frames(h=40, w=48)))
    raw = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SequenceReadError, match=r"cut\.nii\.gz.*not a readable NIfTI"):
        read_sequence(bad)
    not_gzip = tmp_path / "plain.nii.gz"
    not_gzip.write_bytes(b"definitely not gzip")
    with pytest.raises(SequenceReadError, match="plain.nii.gz"):
        read_sequence(not_gzip)


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "movie.mp4"
    path.write_bytes(b"\0" * 200)
    with pytest.raises(SequenceReadError) as info:
        read_sequence(path)
    message = str(info.value)
    assert "movie.mp4" in message and "'.mp4'" in message
    for ext in (".tif", ".ome.tif", ".nii", ".nii.gz", ".dcm"):
        assert ext in message


def test_single_2d_image_is_refused(tmp_path):
    tif = tmp_path / "one.tif"
    tifffile.imwrite(tif, _frames()[0])
    with pytest.raises(SequenceReadError, match=r"one\.tif: single image.*need a time series"):
        read_sequence(tif)
    import nibabel

    nii = tmp_path / "one.nii"
    nibabel.save(nibabel.Nifti1Image(_frames()[0].T.copy(), np.eye(4)), str(nii))
    with pytest.raises(SequenceReadError, match=r"one\.nii: single image"):
        read_sequence(nii)


def test_rgb_and_multi_axis_tiff_are_refused(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8), photometric="rgb")
    with pytest.raises(SequenceReadError, match=r"rgb\.tif: RGB"):
        read_sequence(rgb)
    both = tmp_path / "zt.tif"
    tifffile.imwrite(both, np.random.default_rng(0).random((3, 2, H, W)).astype(np.float32),
                     imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(SequenceReadError, match=r"zt\.tif: holds 2 slices.*--slice K"):
        read_sequence(both)


def test_planar_rgb_tagged_float_stack_is_read_as_frames(tmp_path):
    # tifffile.imwrite tags a (3 or 4, H, W) array as planar RGB(A) unless told otherwise
    path = tmp_path / "four.tif"
    frames = _frames(n=4)
    tifffile.imwrite(path, frames, photometric="rgb", planarconfig="separate", extrasamples=["unassalpha"])
    seq = read_sequence(path)
    np.testing.assert_array_equal(seq.frames, frames)
    colour = tmp_path / "colour.tif"
    tifffile.imwrite(colour, (frames[:3] * 100).astype(np.uint16), photometric="rgb", planarconfig="separate")
    with pytest.raises(SequenceReadError, match=r"colour\.tif: RGB.*minisblack"):
        read_sequence(colour)


def test_bad_sidecar_json_is_named(tmp_path):
    path = tmp_path / "b.tif"
    tifffile.imwrite(path, _frames(), metadata=None)
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(SequenceReadError, match=r"b\.json"):
        read_sequence(path)


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_write_never_overwrites_without_permission(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "precious"
    tif = write_tiff(target.with_suffix(".tif"), _sequence())
    before = tif.read_bytes()
    with pytest.raises(FileExistsError, match="data.tif"):
        write_tiff(tif, _sequence(kind="molli"))
    assert tif.read_bytes() == before
    assert atomic_write(target, lambda p: p.write_text("new"), overwrite=True) == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.tif", "data.txt"]


def test_atomic_write_failure_leaves_nothing(tmp_path):
    def broken(path):
        path.write_bytes(b"half a file")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(tmp_path / "out.tif", broken)
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "keep.bin"
    existing.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(existing, broken, overwrite=True)
    assert existing.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


def test_atomic_write_when_every_hidden_name_is_taken(tmp_path, monkeypatch):
    """A folder full of leftovers: a clear error naming the folder's hidden files, nothing replaced."""
    from napari_any2reg.io import _atomic

    monkeypatch.setattr(_atomic.secrets, "token_hex", lambda n: "0" * (2 * n))
    (tmp_path / f".{_atomic._host_tag()}-{os.getpid()}-00000000~out.txt").write_text("leftover")  # a live writer's
    with pytest.raises(FileExistsError, match=r"100 random names were all taken.*\.\*~ files"):
        atomic_write(tmp_path / "out.txt", lambda p: p.write_text("new"))
    assert not (tmp_path / "out.txt").exists()
    keep = tmp_path / "keep.txt"
    keep.write_text("old")
    (tmp_path / ".00000000~replaced~keep.txt").write_text("leftover")
    monkeypatch.setattr(_atomic, "_reserve_temp", lambda target: target.with_name("staged~" + target.name))
    with pytest.raises(FileExistsError, match=r"cannot set .*keep\.txt aside.*~replaced~ files"):
        atomic_write(keep, lambda p: p.write_text("new"), overwrite=True)
    assert keep.read_text() == "old"


def test_atomic_write_keeps_extension_for_extension_sensitive_writers(tmp_path):
    out = atomic_write(tmp_path / "u.npy", lambda p: np.save(p, np.arange(3)))  # np.save appends .npy otherwise
    np.testing.assert_array_equal(np.load(out), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["u.npy"]


def test_atomic_write_into_missing_or_read_only_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "a.txt", lambda p: p.write_text("x"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        with pytest.raises(PermissionError, match="not writable"):
            write_tiff(locked / "a.tif", _sequence())
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(stat.S_IRWXU)


def test_atomic_write_permission_error_is_clean(tmp_path, monkeypatch):
    # the same path as a read-only folder, simulated so it also runs as root
    import napari_any2reg.io._atomic as atomic

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.os, "open", refuse)
    with pytest.raises(PermissionError, match=r"a\.tif.*not writable"):
        write_tiff(tmp_path / "a.tif", _sequence())
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- NIfTI
def test_nifti_round_trip_with_sidecar(tmp_path):
    frames = _frames()
    original = frames.copy()
    seq = _sequence(frames=frames, kind="molli", name="slice 3")
    out = write_nifti(tmp_path / "reg.nii.gz", seq)
    sidecar = tmp_path / "reg.json"
    assert sidecar.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["reg.json", "reg.nii.gz"]
    content = json.loads(sidecar.read_text())
    assert content["kind"] == "molli" and content["timings_ms"][-1] == "inf"
    back = read_sequence(out)
    _assert_same(seq, back)
    assert back.metadata["note"] == "ok"
    np.testing.assert_array_equal(frames, original)
    # and the plain .nii variant
    _assert_same(seq, read_nifti(write_nifti(tmp_path / "plain.nii", seq)))


def test_nifti_writer_refuses_existing_sidecar(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(FileExistsError, match="x.json"):
        write_nifti(tmp_path / "x.nii.gz", _sequence())
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    write_nifti(tmp_path / "x.nii.gz", _sequence(), overwrite=True)
    assert json.loads((tmp_path / "x.json").read_text())["kind"] == "stone"


def test_nifti_orientation_is_documented_transpose(tmp_path):
    import nibabel

    data = np.zeros((W, H, N), np.float32)  # NIfTI (i, j, t)
    data += np.arange(N, dtype=np.float32)[None, None, :] + 1
    data[3, 7, :] = 50  # a marker at i=3, j=7
    image = nibabel.Nifti1Image(data, np.diag([0.7, 1.3, 8.0, 1.0]))
    path = tmp_path / "marker_cine.nii.gz"
    nibabel.save(image, str(path))
    seq = read_nifti(path)
    assert seq.frames.shape == (N, H, W)  # rows = j, columns = i
    np.testing.assert_array_equal(seq.frames, np.transpose(data, (2, 1, 0)))
    assert np.all(seq.frames[:, 7, 3] == 50)
    assert seq.spacing_mm == (1.3, 0.7)  # (pixdim[2], pixdim[1]), float32 noise removed
    assert seq.kind == "cine" and seq.timings_ms is None
    # the writer applies the inverse: the file holds the same voxel layout, as (I, J, 1, N)
    out = write_nifti(tmp_path / "again.nii.gz", seq)
    np.testing.assert_array_equal(np.asanyarray(nibabel.load(str(out)).dataobj), data[:, :, None, :])


def test_nifti_4d_with_singleton_slice_axis(tmp_path):
    import nibabel

    data = np.transpose(_frames(), (2, 1, 0))[:, :, None, :]  # (W, H, 1, N)
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(tmp_path / "v.nii"))
    seq = read_sequence(tmp_path / "v.nii")
    np.testing.assert_array_equal(seq.frames, _frames())


def test_shared_real_nifti_samples(shared_real_dir, tmp_path):
    import nibabel

    for name, n, kind, spacing in (
        ("stone_0138_slice4_t1map.nii.gz", 11, "stone", (1.5625, 1.5625)),
        ("acdc_patient101_slice3_cine.nii.gz", 30, "cine", (1.0, 1.0)),
    ):
        path = shared_real_dir / name
        image = nibabel.load(str(path))
        data = np.asanyarray(image.dataobj)
        seq = read_sequence(path)
        i, j = data.shape[:2]
        assert seq.frames.shape == (n, j, i)  # rows = NIfTI j, columns = NIfTI i
        assert seq.spacing_mm == spacing
        zooms = image.header.get_zooms()
        assert seq.spacing_mm == (float(zooms[1]), float(zooms[0]))
        assert seq.kind == kind and seq.timings_ms is None
        np.testing.assert_array_equal(seq.frames[n // 2], data[:, :, n // 2].T.astype(np.float32))
        back = read_sequence(write_nifti(tmp_path / name, seq))
        _assert_same(seq, back)
        reread = nibabel.load(str(tmp_path / name))
        np.testing.assert_allclose(reread.affine, image.affine)  # original affine kept


# ---------------------------------------------------------------------------- DICOM
def _write_dicom(path, pixels, series_uid, **fields):
    """The shared writer with a patient identity (the anonymisation tests look for it) and a position."""
    from conftest import write_dicom

    fields = {"PatientName": "Doe^Jane", "PatientID": "SECRET123", "ImagePositionPatient": [10.0, -20.0, 30.5], **fields}
    write_dicom(path, pixels, series_uid, spacing_mm=(1.4, 0.9), **fields)


def _dicom_series(folder, *, tis=None, comments=None, triggers=None, description="MOLLI 5(3)3",
                  shape=(H, W), seed=0, order=None, uid=None, prefix="IM"):
    from pydicom.uid import generate_uid

    folder.mkdir(exist_ok=True)
    uid = uid or generate_uid()
    n = len(next(v for v in (tis, comments, triggers) if v is not None))
    pixels = (np.random.default_rng(seed).random((n, *shape)) * 1000).astype(np.uint16)
    order = range(n) if order is None else order
    for k in order:  # file k written in shuffled order, InstanceNumber scrambled too
        fields = dict(SeriesDescription=description, InstanceNumber=(k * 7) % n + 1,
                      RescaleSlope=0.5, RescaleIntercept=-10)
        if tis is not None:
            fields["InversionTime"] = tis[k]
        if comments is not None:
            fields["ImageComments"] = comments[k]
        if triggers is not None:
            fields["TriggerTime"] = triggers[k]
        _write_dicom(folder / f"{prefix}{n - 1 - k:04d}.dcm", pixels[k], uid, **fields)
    return pixels


def test_dicom_series_sorted_by_inversion_time(tmp_path):
    tis = [400.0, 100.0, 1200.0, 180.0, 260.0]
    pixels = _dicom_series(tmp_path / "molli", tis=tis, order=[3, 0, 4, 2, 1])
    (tmp_path / "molli" / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "molli" / "DICOMDIR").write_bytes(b"\0" * 300)
    (tmp_path / "molli" / "notes.txt").write_text("not dicom")
    seq = read_sequence(tmp_path / "molli")
    order = np.argsort(tis)
    np.testing.assert_array_equal(seq.timings_ms, np.sort(tis))
    np.testing.assert_allclose(seq.frames, pixels[order].astype(np.float32) * 0.5 - 10)
    assert seq.spacing_mm == (1.4, 0.9)
    assert seq.kind == "molli" and seq.name == "MOLLI 5(3)3"
    assert seq.metadata["frame_order"] == "inversion_time"
    text = json.dumps(seq.metadata, default=str)
    assert "Doe" not in text and "SECRET123" not in text
    assert seq.metadata["dicom"]["Modality"] == "MR"
    assert supported_path(tmp_path / "molli")


def test_dicom_ti_from_image_comments_and_single_file(tmp_path):
    comments = ["TI 300", "TI=120ms", "T1 prep TI: 210.5", "TI 950", "TI 1500"]
    pixels = _dicom_series(tmp_path / "c", comments=comments, description="t1map_shmolli")
    seq = read_dicom_series(tmp_path / "c")
    np.testing.assert_array_equal(seq.timings_ms, [120, 210.5, 300, 950, 1500])
    np.testing.assert_allclose(seq.frames[0], pixels[1] * 0.5 - 10)
    assert seq.kind == "molli" and seq.metadata["timings_source"].startswith("ImageComments")
    one = sorted((tmp_path / "c").iterdir())[0]
    assert read_sequence(one).n_frames == 5  # a single .dcm reads its whole series


def test_dicom_cine_by_trigger_time(tmp_path):
    triggers = [float(t) for t in (90, 0, 30, 60, 120)]
    pixels = _dicom_series(tmp_path / "cine", triggers=triggers, description="SAX stack")
    seq = read_sequence(tmp_path / "cine")
    np.testing.assert_array_equal(seq.timings_ms, [0, 30, 60, 90, 120])
    np.testing.assert_allclose(seq.frames[0], pixels[1] * 0.5 - 10)
    assert seq.kind == "cine" and seq.timing_name == "trigger_times_ms"


def test_dicom_mapping_series_without_ti_gets_no_trigger_timings(tmp_path):
    # trigger delays are not inversion times: a MOLLI series without TI must not be fitted with them
    _dicom_series(tmp_path / "m", triggers=[300.0, 310.0, 320.0, 330.0, 340.0], description="MOLLI")
    seq = read_sequence(tmp_path / "m")
    assert seq.kind == "molli" and seq.timings_ms is None
    assert seq.metadata["frame_order"] == "instance_number" and "timings_ms" in seq.metadata["timings_note"]
    fixed = read_sequence(tmp_path / "m", timings_ms=[100, 180, 260, 340, 1000])
    np.testing.assert_array_equal(fixed.timings_ms, [100, 180, 260, 340, 1000])


@pytest.mark.parametrize(
    "comment, expected",
    [("TI 120", 120.0), ("TI=120ms", 120.0), ("T1 prep TI: 120.5", 120.5), ("MOLLI_TI95", 95.0),
     ("Inversion time 250", 250.0), ("TIME 5", None), ("T1 map", None), ("", None), (None, None)],
)
def test_parse_ti_comment(comment, expected):
    from napari_any2reg.io.dicom import parse_ti_comment

    assert parse_ti_comment(comment) == expected


@pytest.mark.parametrize(
    "text, kind",
    [("stone_0138_slice4_t1map", "stone"), ("acdc_patient101_slice3_cine", "cine"), ("ShMOLLI_192i", "molli"),
     ("MOLLI 5(3)3 MOCO", "molli"), ("SASHA_T1", "sasha"), ("tfl_perf_SR", "perfusion"), ("pCASL M0", "asl"),
     ("medicine_scan", None), ("t1map", None)],
)
def test_guess_kind(text, kind):
    from napari_any2reg.io._common import guess_kind

    assert guess_kind(text) == kind


def test_dicom_list_of_files_and_several_series(tmp_path):
    folder = tmp_path / "mixed"
    _dicom_series(folder, tis=[100.0, 200.0, 300.0, 400.0, 500.0], prefix="A")
    _dicom_series(folder, tis=[100.0, 200.0, 300.0], description="other", prefix="B")
    seq = read_sequence(folder)
    assert seq.n_frames == 5 and seq.metadata["dicom_other_series"][0]["files"] == 3
    files = sorted(folder.glob("B*.dcm"))
    assert supported_path([str(f) for f in files])
    assert read_sequence(files).n_frames == 3
    assert read_sequence(files[0]).n_frames == 3  # the named file's series, not the largest


def test_dicom_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hello")
    with pytest.raises(SequenceReadError, match=r"empty: no DICOM image files"):
        read_sequence(empty)
    assert not supported_path(empty)

    mixed = tmp_path / "sizes"
    from pydicom.uid import generate_uid

    uid = generate_uid()
    _dicom_series(mixed, tis=[100.0, 200.0, 300.0], uid=uid, prefix="big")
    _dicom_series(mixed, tis=[400.0, 500.0], uid=uid, shape=(10, 10), prefix="small")
    with pytest.raises(SequenceReadError) as info:
        read_sequence(mixed)
    message = str(info.value)
    assert "sizes" in message and "different sizes" in message and "small" in message and "big" in message

    tie = tmp_path / "tie"
    _dicom_series(tie, tis=[100.0, 200.0], prefix="a", description="one")
    _dicom_series(tie, tis=[100.0, 200.0], prefix="b", description="two")
    with pytest.raises(SequenceReadError, match=r"tie: holds 2 DICOM series") as info:
        read_sequence(tie)
    assert "'one'" in str(info.value) and "'two'" in str(info.value)


# ---------------------------------------------------------------------------- dispatch helpers
def test_supported_path(tmp_path):
    for name in ("a.tif", "a.TIFF", "a.ome.tif", "a.nii", "a.nii.gz", "a.dcm"):
        assert supported_path(tmp_path / name), name
    for name in ("a.png", "a.json", "a.npy"):
        assert not supported_path(tmp_path / name), name
    assert not supported_path(tmp_path)  # empty folder
    assert not supported_path(None) and not supported_path([])
    raw = tmp_path / "IM0001"
    raw.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    assert supported_path(raw) and supported_path(tmp_path)


def test_extensionless_dicom_is_dispatched(tmp_path):
    folder = tmp_path / "noext"
    _dicom_series(folder, tis=[100.0, 200.0, 300.0])
    for f in folder.iterdir():
        f.rename(f.with_suffix(""))
    first = sorted(folder.iterdir())[0]
    assert supported_path(first)
    assert read_sequence(first).n_frames == 3


def test_gzip_sanity_of_written_nifti(tmp_path):
    out = write_nifti(tmp_path / "g.nii.gz", _sequence())
    with gzip.open(out) as handle:
        assert len(handle.read()) > N * H * W * 4


def test_unicode_name_and_no_timings_round_trip(tmp_path):
    seq = _sequence(name="Ünïcode séq", timings_ms=None, kind="cine")
    _assert_same(seq, read_sequence(write_tiff(tmp_path / "u.tif", seq)))
    _assert_same(seq, read_sequence(write_nifti(tmp_path / "u.nii.gz", seq)))


def test_writers_check_extension_and_type(tmp_path):
    with pytest.raises(ValueError, match=r"x\.png"):
        write_tiff(tmp_path / "x.png", _sequence())
    with pytest.raises(ValueError, match=r"x\.tif"):
        write_nifti(tmp_path / "x.tif", _sequence())
    with pytest.raises(TypeError, match="Sequence"):
        write_tiff(tmp_path / "x.tif", _frames())
    assert list(tmp_path.iterdir()) == []


def test_io_does_not_import_qt_or_napari():
    import subprocess
    import sys

    code = (
        "import sys, napari_any2reg.io; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------- issue 11
def test_tiff_reader_refuses_absurd_decoded_sizes_before_decoding(tmp_path, monkeypatch):
    from napari_any2reg.io._common import check_decoded_size

    # the header is checked, not the data: 3.1 GB claimed by a small file is refused at once
    with pytest.raises(SequenceReadError, match=r"x\.tif.*3\.1 GB decoded.*ANY2REG_MAX_DECODED_GB"):
        check_decoded_size(tmp_path / "x.tif", (12, 8000, 8000), np.uint32)
    check_decoded_size(tmp_path / "x.tif", (300, 512, 512), np.float32)  # a large real series is fine
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((20, 256, 256), np.float32), compression="zlib")
    assert path.stat().st_size < 100_000  # compresses 5 MB of zeros to almost nothing
    monkeypatch.setenv("ANY2REG_MAX_DECODED_GB", "0.001")  # 1 MB: the same check at test size
    import tifffile as tf

    decoded = []
    monkeypatch.setattr(tf.TiffPageSeries, "asarray", lambda self, *a, **k: decoded.append(1))
    with pytest.raises(SequenceReadError, match=r"bomb\.tif: the header claims \(20, 256, 256\) float32 values, 5\.2 MB decoded from a [\d.]+ KB file; more than the 1\.0 MB limit"):
        read_sequence(path)
    assert decoded == []  # refused before any pixel was decoded
    monkeypatch.setenv("ANY2REG_MAX_DECODED_GB", "lots")
    with pytest.raises(SequenceReadError, match="ANY2REG_MAX_DECODED_GB='lots' is not a number"):
        read_sequence(path)


def test_nifti_reader_refuses_absurd_decoded_sizes(tmp_path, monkeypatch):
    import nibabel

    path = tmp_path / "big.nii.gz"
    data = np.random.default_rng(0).random((64, 64, 40)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(path))
    monkeypatch.setenv("ANY2REG_MAX_DECODED_GB", "0.0005")
    with pytest.raises(SequenceReadError, match=r"big\.nii\.gz: the header claims \(64, 64, 40\) float32"):
        read_sequence(path)
    monkeypatch.delenv("ANY2REG_MAX_DECODED_GB")
    assert read_sequence(path).n_frames == 40


def _warned(path, **kwargs):
    from napari_any2reg.io import SequenceReadWarning

    with pytest.warns(SequenceReadWarning) as record:
        seq = read_sequence(path, **kwargs)
    assert seq.spacing_mm == (1.0, 1.0) and seq.metadata["spacing_source"] == "default"
    assert seq.metadata["read_warnings"] == [str(w.message) for w in record]
    assert "using 1 x 1 mm" in record[0].message.args[0] and "--spacing-mm" in record[0].message.args[0]
    return seq.metadata["read_warnings"][0]


def test_invalid_pixel_sizes_are_warned_about_and_recorded(tmp_path):
    import warnings

    import nibabel

    frames = _frames()
    image = nibabel.Nifti1Image(np.transpose(frames, (2, 1, 0)), np.eye(4))
    image.header["pixdim"][1:4] = [0.0, -1.5, 1.0]  # nibabel would silently read 1 and 1.5
    nibabel.save(image, str(tmp_path / "zero.nii.gz"))
    assert "pixdim[1:3] = [0.0, -1.5]" in _warned(tmp_path / "zero.nii.gz")
    tifffile.imwrite(tmp_path / "ij.tif", frames, imagej=True, resolution=(0.0, 0.0), metadata={"axes": "TYX", "unit": "mm"})
    assert "ImageJ pixel size is not positive" in _warned(tmp_path / "ij.tif")
    tifffile.imwrite(
        tmp_path / "bad.ome.tif", frames, ome=True, photometric="minisblack",
        metadata={"axes": "TYX", "PhysicalSizeX": -1.0, "PhysicalSizeY": 0.0, "PhysicalSizeXUnit": "mm", "PhysicalSizeYUnit": "mm"},
    )
    assert "OME pixel size" in _warned(tmp_path / "bad.ome.tif")
    tifffile.imwrite(tmp_path / "cm.tif", frames, resolution=(0.0, 0.0), resolutionunit=3)
    assert "TIFF pixel size is not positive" in _warned(tmp_path / "cm.tif")
    # an explicit spacing replaces the bad value: nothing to warn about; a valid file warns never
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_sequence(tmp_path / "zero.nii.gz", spacing_mm=(2.0, 2.0)).metadata.get("read_warnings") is None
        good = read_sequence(write_tiff(tmp_path / "good.tif", _sequence()))
        assert good.spacing_mm == (1.3, 0.7) and "read_warnings" not in good.metadata


def test_nonfinite_pixels_can_be_masked_instead_of_refused(tmp_path):
    frames = _frames()
    frames[1, 2, 3] = np.nan
    frames[:, 4, 5] = -np.inf
    tifffile.imwrite(tmp_path / "n.tif", frames)
    with pytest.raises(SequenceReadError, match="NaN or Inf"):
        read_sequence(tmp_path / "n.tif")
    seq = read_sequence(tmp_path / "n.tif", nonfinite="mask")
    expected = np.zeros((H, W), bool)
    expected[2, 3] = expected[4, 5] = True
    np.testing.assert_array_equal(seq.metadata["nonfinite_mask"], expected)
    assert seq.metadata["nonfinite_pixels"] == 2 and seq.frames[1, 2, 3] == 0 and np.isfinite(seq.frames).all()
    with pytest.raises(ValueError, match="nonfinite must be"):
        read_sequence(tmp_path / "n.tif", nonfinite="ignore")


def test_atomic_write_all_rolls_back_when_a_later_rename_fails(tmp_path, monkeypatch):
    import napari_any2reg.io._atomic as atomic
    from napari_any2reg.io import atomic_write_all

    (tmp_path / "a.txt").write_text("old a")
    real_commit = atomic._commit

    def fail_on_b(temp, target, overwrite):
        if target.name == "b.txt":
            raise KeyboardInterrupt  # Ctrl-C / SIGTERM between the renames
        real_commit(temp, target, overwrite)

    monkeypatch.setattr(atomic, "_commit", fail_on_b)
    items = [(tmp_path / name, lambda p, n=name: p.write_text("new " + n)) for name in ("a.txt", "b.txt")]
    with pytest.raises(KeyboardInterrupt):
        atomic_write_all(items, overwrite=True)
    # a.txt had already been replaced: it is restored, b.txt never appears, nothing hidden is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
    monkeypatch.setattr(atomic, "_commit", real_commit)
    assert atomic_write_all(items, overwrite=True) == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "new a.txt" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_full_disk_and_bad_output_folders_have_clear_messages(tmp_path, monkeypatch):
    import errno

    import napari_any2reg.io._atomic as atomic
    from napari_any2reg.io import atomic_write_folder, check_output_folder

    def full(path):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"u\.npy: the disk is full.*nothing was written.*Free some space") as info:
        atomic_write(tmp_path / "u.npy", full)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="disk is full"):
        atomic_write_folder(tmp_path / "new" / "out", lambda staging: full(staging / "x.bin"))
    assert list(tmp_path.iterdir()) == []  # the folders made for the export are gone too
    # checked before any work: nothing is created by the check itself
    assert check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"f is a file, not a folder"):
        check_output_folder(tmp_path / "f" / "out")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: type("U", (), {"free": 5_000})())
    with pytest.raises(OSError, match=r"need about 2\.0 MB but only 0\.0 MB are free") as info:
        check_output_folder(tmp_path / "out", needed_bytes=2_000_000)
    assert info.value.errno == errno.ENOSPC


# ---------------------------------------------------------------------------- compressed DICOM
def _series_from_testdata(folder, name, n=3):
    """``n`` copies of one pydicom test file as a series with distinct inversion times."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    uid = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.InversionTime = 100.0 + 250.0 * k
        ds.save_as(str(folder / f"IM{k:04d}.dcm"))
    return folder


def test_rle_lossless_dicom_reads_like_uncompressed(tmp_path):
    # RLE Lossless: pydicom encodes and decodes it with numpy alone, so this runs everywhere
    import pydicom
    from pydicom.uid import RLELossless

    pixels = _dicom_series(tmp_path / "plain", tis=[100.0, 350.0, 600.0, 1200.0])
    (tmp_path / "rle").mkdir()
    for path in sorted((tmp_path / "plain").iterdir()):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        assert ds.file_meta.TransferSyntaxUID == RLELossless
        ds.save_as(str(tmp_path / "rle" / path.name))
    plain, rle = read_sequence(tmp_path / "plain"), read_sequence(tmp_path / "rle")
    np.testing.assert_array_equal(rle.frames, plain.frames)
    np.testing.assert_array_equal(rle.timings_ms, [100.0, 350.0, 600.0, 1200.0])
    assert rle.frames.shape == (4, *pixels.shape[1:]) and rle.spacing_mm == plain.spacing_mm
    # and pydicom's own RLE test file (a third-party encoder) matches its uncompressed twin
    reference = read_sequence(_series_from_testdata(tmp_path / "mr", "MR_small.dcm"))
    np.testing.assert_array_equal(read_sequence(_series_from_testdata(tmp_path / "mr_rle", "MR_small_RLE.dcm")).frames, reference.frames)


@pytest.mark.parametrize("name, syntax", [("MR_small_jpeg_ls_lossless.dcm", "JPEGLSLossless"),
                                          ("MR_small_jp2klossless.dcm", "JPEG2000Lossless")])
def test_lossless_jpeg_dicom_reads_like_uncompressed(tmp_path, name, syntax):
    import pydicom.uid
    from pydicom.pixels import get_decoder

    if not get_decoder(getattr(pydicom.uid, syntax)).is_available:
        pytest.skip(f"no {syntax} decoder installed (pip install 'napari-any2reg[dicom]')")
    reference = read_sequence(_series_from_testdata(tmp_path / "mr", "MR_small.dcm"))
    compressed = read_sequence(_series_from_testdata(tmp_path / "mr_c", name))
    np.testing.assert_array_equal(compressed.frames, reference.frames)
    np.testing.assert_array_equal(compressed.timings_ms, [100.0, 350.0, 600.0])
    assert compressed.spacing_mm == reference.spacing_mm == (0.3125, 0.3125)


def test_philips_molli_with_scanner_t1_maps_reads_the_frames_and_offers_the_maps(tmp_path, capsys):
    # issue 24 item 10: one series number, 10 inversion frames plus the scanner's 2 T1 MAP images
    from pydicom.uid import generate_uid

    from napari_any2reg.cli import main
    from napari_any2reg.pipeline.series import fit_problem_for

    folder = tmp_path / "molli"
    folder.mkdir()
    uid = generate_uid()
    tis = [231.0, 350.0, 1231.0, 1350.0, 2231.0, 2350.0, 3231.0, 3350.0, 4231.0, 5231.0]
    rng = np.random.default_rng(3)
    pixels = (rng.random((12, H, W)) * 1000).astype(np.uint16)
    for k, ti in enumerate(tis):
        _write_dicom(folder / f"IM_{k:04d}", pixels[k], uid, SeriesDescription="MOLLI 5(3)3", SeriesNumber=801,
                     InstanceNumber=k + 3, InversionTime=ti, ImageType=["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"])
    for j in range(2):
        _write_dicom(folder / f"IM_map{j}", pixels[10 + j], uid, SeriesDescription="MOLLI 5(3)3", SeriesNumber=801,
                     InstanceNumber=j + 1, InversionTime=0.0, ImageType=["ORIGINAL", "PRIMARY", "T1 MAP", "T1"])
    seq = read_sequence(folder)
    assert seq.n_frames == 10 and seq.kind == "molli"  # was 12 frames, TIs 0, 0, 231, ... and kind unknown
    np.testing.assert_array_equal(seq.timings_ms, tis)
    maps = seq.metadata["scanner_maps"]
    assert sorted(maps) == ["scanner T1 map", "scanner T1 map (2)"]
    np.testing.assert_array_equal(maps["scanner T1 map"], pixels[10].astype(np.float32))
    assert len(seq.metadata["dicom_derived_left_out"]) == 2
    assert fit_problem_for(seq) is None  # a T1 fit is offered
    # the command line registers the 10 frames and writes the scanner's maps beside the result
    out = tmp_path / "out"
    assert main(["register", str(folder), "-o", str(out), "--engine", "groupwise", "--iterations-scale", "0.05",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    assert "10 frames" in capsys.readouterr().out
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(out / "scanner_t1_map.tif"), pixels[10].astype(np.float32))
    assert (out / "scanner_t1_map_2.tif").is_file()
    # a series of maps alone is read as it is (nothing left to leave out)
    only = tmp_path / "maps"
    only.mkdir()
    for j in range(3):
        _write_dicom(only / f"IM_{j}", pixels[j], uid, InstanceNumber=j + 1, ImageType=["DERIVED", "PRIMARY", "T1 MAP"])
    assert read_sequence(only).n_frames == 3


@pytest.mark.parametrize("unit, step, expected_ms", [("sec", 1.0, 1000.0), ("sec", 0.045, 45.0), ("msec", 45.0, 45.0),
                                                     ("usec", 45000.0, 45.0), ("unknown", 1.0, None)])
@pytest.mark.parametrize("dcm2niix_sidecar", [False, True])
def test_nifti_time_units_survive_a_re_export(tmp_path, unit, step, expected_ms, dcm2niix_sidecar):
    # issue 24 item 16: pixdim[4] = 1.0 in seconds was re-exported as 1.0 ms (a x1000 error)
    import json

    import nibabel

    data = np.random.default_rng(0).random((W, H, 1, 6)).astype(np.float32) * 100
    image = nibabel.Nifti1Image(data, np.diag([1.5, 1.5, 8.0, 1.0]))
    image.header.set_xyzt_units("mm", unit)
    image.header["pixdim"][4] = step
    source = tmp_path / "cine.nii.gz"
    nibabel.save(image, str(source))
    if dcm2niix_sidecar:  # as dcm2niix writes it: BIDS fields, seconds
        (tmp_path / "cine.json").write_text(json.dumps({"Modality": "MR", "Manufacturer": "Philips",
                                                        "RepetitionTime": 0.0032, "SeriesDescription": "cine"}))
    seq = read_sequence(source)
    assert seq.metadata.get("frame_interval_ms") == (pytest.approx(expected_ms) if expected_ms else None)
    out = write_nifti(tmp_path / "re.nii.gz", seq)
    header = nibabel.load(str(out)).header
    assert header.get_xyzt_units()[1] == ("msec" if expected_ms is not None else "unknown")
    if expected_ms is not None:
        assert float(header["pixdim"][4]) == pytest.approx(expected_ms)
    # and read back once more: the same interval in ms
    assert read_sequence(out).metadata.get("frame_interval_ms") == (pytest.approx(expected_ms) if expected_ms else None)


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """SIGKILL during atomic_write left a hidden ``.<...>~name`` temporary that nothing removed.
    Temporaries name their writer (host tag, pid): the next write into the folder removes those
    of dead writers and keeps those of live ones, other hosts and unknown origin."""
    import signal
    import subprocess
    import sys

    from napari_any2reg.io import _atomic

    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from napari_any2reg.io._atomic import atomic_write\n"
         "def writer(temp):\n"
         "    temp.write_text('half written')\n"
         "    print(temp.name, flush=True)\n"
         "    sys.stdin.readline()  # killed here, mid-write\n"
         f"atomic_write({str(tmp_path / 'result.txt')!r}, writer)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    leftover = tmp_path / child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert leftover.is_file() and leftover.name.endswith("~result.txt")
    assert leftover.name.startswith(f".{_atomic._host_tag()}-{child.pid}-")
    live = tmp_path / f".{_atomic._host_tag()}-{os.getpid()}-0123abcd~busy.txt"  # this process: alive
    other_host = tmp_path / f".ffffffff-{child.pid}-0123abcd~shared.txt"  # another machine's: cannot check
    unknown = tmp_path / ".0123abcd~mine.txt"  # no owner in the name (or the user's own file): kept
    for path in (live, other_host, unknown):
        path.write_text("x")
    atomic_write(tmp_path / "next.txt", lambda p: p.write_text("ok"))
    assert not leftover.exists() and not (tmp_path / "result.txt").exists()
    assert live.exists() and other_host.exists() and unknown.exists()
    assert (tmp_path / "next.txt").read_text() == "ok"
