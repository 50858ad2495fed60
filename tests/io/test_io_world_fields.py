"""Issue 24 item 14: exported displacement fields carry the source series' scanner geometry.

An oblique, offset, anisotropic NIfTI series is registered and exported from the command line;
SimpleITK then resamples each *original* frame, as it lies in the scanner, with the exported
field in world coordinates and must reproduce the registered frame (interior max error below
1e-4 of the intensity range): once with the per-frame ITK fields (``.mha``), once with the frame
taken out of ``displacement.nii.gz``. The commands are the ones the README's Interoperability
section gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.core.geometry import LPS_TO_RAS, SliceGeometry
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.io import read_displacement, read_sequence, write_nifti
from napari_any2reg.io.fields import read_elastix_transform

sitk = pytest.importorskip("SimpleITK")

H, W = 30, 38
SPACING = (1.4, 0.9)  # (dy, dx): anisotropic


def _oblique_geometry() -> SliceGeometry:
    """A double-oblique short-axis plane far from the scanner origin."""
    a, b = np.deg2rad(35.0), np.deg2rad(-20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rotation = rx @ rz
    return SliceGeometry((-112.5, 37.25, 58.75), tuple(rotation[:, 0]), tuple(rotation[:, 1]), 8.0)


def _write_input(path, *, rows_reversed: bool):
    """The phantom with an oblique geometry, as NIfTI; ``rows_reversed`` writes it the way
    dcm2niix does (row axis reversed, negative determinant), which the reader undoes."""
    import nibabel

    from napari_any2reg.core.sequence import Sequence

    phantom = make_phantom("molli", seed=11, shape=(H, W), spacing_mm=SPACING, motion_mm=4.0).sequence
    geometry = _oblique_geometry()
    seq = Sequence(frames=phantom.frames, timings_ms=phantom.timings_ms, spacing_mm=SPACING, kind="molli",
                   name="oblique", geometry=geometry)
    if not rows_reversed:
        write_nifti(path, seq)
        return seq
    dy, dx = SPACING
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(geometry.row_direction) * dx
    lps[:3, 1] = -np.asarray(geometry.column_direction) * dy
    lps[:3, 2] = geometry.normal * 8.0  # the normal kept: determinant < 0
    lps[:3, 3] = np.asarray(geometry.origin) + (H - 1) * dy * np.asarray(geometry.column_direction)
    affine = lps.copy()
    affine[:3] = LPS_TO_RAS @ lps[:3]
    data = np.transpose(seq.frames[:, ::-1, :], (2, 1, 0))[:, :, None, :].astype(np.float32)
    image = nibabel.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nibabel.save(image, str(path))
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(
        '{"kind": "molli", "timings_ms": %s}' % list(map(float, seq.timings_ms)), encoding="utf-8")
    return seq


def _frame(image, k):
    """Frame ``k`` of a 4-D (W, H, 1, N) image: a 3-D one-slice image in its scanner geometry."""
    return image[:, :, :, k]


@pytest.mark.parametrize("rows_reversed", [False, True], ids=["positive-determinant", "dcm2niix-rows-reversed"])
def test_simpleitk_reproduces_registered_frames_from_the_exported_fields_in_world_coordinates(tmp_path, capsys, rows_reversed):
    source = tmp_path / "oblique.nii.gz"
    _write_input(source, rows_reversed=rows_reversed)
    read = read_sequence(source)
    assert read.geometry is not None and read.geometry.allclose(_oblique_geometry())
    out = tmp_path / "out"
    assert main(["register", str(source), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--iterations-scale", "0.1", "--export", "nifti,displacement,itk", "-q"]) == 0, capsys.readouterr().err
    u = np.load(out / "displacement.npy")
    n = u.shape[0]
    assert np.abs(u).max() > 0.3  # a field that moves pixels (else the check proves nothing)

    raw = sitk.ReadImage(str(source))  # as the user has it: the scanner's file, never our reader
    registered = sitk.ReadImage(str(out / "registered.nii.gz"))
    all_frames = sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    assert all_frames.GetDimension() == 4 and all_frames.GetNumberOfComponentsPerPixel() == 3
    margin = int(np.ceil(np.abs(u).max())) + 2
    errors = []
    for k in range(n):
        moving, fixed = _frame(raw, k), _frame(registered, k)
        expected = sitk.GetArrayFromImage(fixed)[0]
        scale = float(expected.max() - expected.min())
        per_frame = sitk.ReadImage(str(out / f"displacement_itk_frame{k:03d}.mha"), sitk.sitkVectorFloat64)
        # the field lies where the registered frame lies in the scanner
        assert per_frame.GetDimension() == 3 and per_frame.GetSize() == fixed.GetSize()
        np.testing.assert_allclose(per_frame.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(per_frame.GetDirection(), fixed.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(per_frame.GetSpacing()[:2], fixed.GetSpacing()[:2], rtol=1e-6)
        for field in (per_frame, _frame(all_frames, k)):
            transform = sitk.DisplacementFieldTransform(sitk.Image(field))
            resampled = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))[0]
            inside = (slice(margin, H - margin), slice(margin, W - margin))
            error = float(np.abs(resampled[inside] - expected[inside]).max())
            assert error < 1e-4 * scale, (k, error, scale)
            errors.append(error / scale)
        # the elastix parameter file describes the same 3-D grid, as transformix reads it
        parameters = read_elastix_transform(out / f"displacement_itk_frame{k:03d}.txt")
        assert parameters["DeformationFieldFileName"] == [f"displacement_itk_frame{k:03d}.mha"]
        assert parameters["FixedImageDimension"] == [3.0] and parameters["Size"] == [W, H, 1]
        np.testing.assert_allclose(parameters["Origin"], per_frame.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(parameters["Spacing"], per_frame.GetSpacing(), rtol=1e-6)
        # elastix reads Direction column by column (direction(j, i) = value[i * 3 + j])
        np.testing.assert_allclose(np.reshape(parameters["Direction"], (3, 3)).T.ravel(), per_frame.GetDirection(), atol=1e-6)
    print(f"max |u| {np.abs(u).max():.2f} px; worst interior error / intensity range {max(errors):.2e}")
    # both files read back to the pixel field (for any2reg apply)
    for name in ("displacement.nii.gz", "displacement_itk_frame000.mha"):
        back, spacing = read_displacement(out / name)
        np.testing.assert_allclose(back, u, atol=1e-4)
        assert spacing == pytest.approx(SPACING)


def test_a_series_without_geometry_keeps_the_in_plane_fields(tmp_path, capsys):
    """A TIFF has no scanner geometry: the fields stay 2-D in the slice's own axes, as before."""
    from napari_any2reg.io import write_tiff

    seq = make_phantom("molli", seed=11, shape=(H, W), spacing_mm=SPACING).sequence
    write_tiff(tmp_path / "plain.tif", seq)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "plain.tif"), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--iterations-scale", "0.05", "--export", "displacement,itk", "-q"]) == 0, capsys.readouterr().err
    assert (out / "displacement_itk_frame000.nii.gz").is_file() and not list(out.glob("*.mha"))
    field = sitk.ReadImage(str(out / "displacement_itk_frame000.nii.gz"))
    assert field.GetDimension() == 2 and field.GetOrigin() == (0.0, 0.0)


def _write_dicom_input(folder):
    """The oblique phantom as a scanner's DICOM series: one file per inversion time, each with
    the plane's ImagePositionPatient / ImageOrientationPatient (LPS) and PixelSpacing (dy, dx)."""
    from pydicom.uid import generate_uid

    from conftest import write_dicom

    phantom = make_phantom("molli", seed=11, shape=(H, W), spacing_mm=SPACING, motion_mm=4.0).sequence
    geometry = _oblique_geometry()
    pixels = np.round(phantom.frames / phantom.frames.max() * 4000.0).astype(np.uint16)
    folder.mkdir()
    series = generate_uid()
    files = []
    for k, (frame, ti) in enumerate(zip(pixels, phantom.timings_ms)):
        path = folder / f"IM{k:04d}.dcm"
        write_dicom(path, frame, series, spacing_mm=SPACING, InversionTime=float(ti), InstanceNumber=k + 1,
                    SeriesDescription="MOLLI 5(3)3", ImagePositionPatient=[float(v) for v in geometry.origin],
                    ImageOrientationPatient=[float(v) for v in (*geometry.row_direction, *geometry.column_direction)],
                    SliceThickness=8.0)
        files.append(path)
    return files, pixels


def test_simpleitk_reproduces_registered_frames_of_an_oblique_dicom_series_in_world_coordinates(tmp_path, capsys):
    """The same check from a DICOM series: each scanner file, read by SimpleITK as it lies in the
    scanner, resampled with the exported per-frame field, gives the registered frame."""
    files, _ = _write_dicom_input(tmp_path / "dicom")
    read = read_sequence(tmp_path / "dicom")
    assert read.geometry is not None and read.geometry.allclose(_oblique_geometry())
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "dicom"), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--iterations-scale", "0.1", "--export", "nifti,displacement,itk", "-q"]) == 0, capsys.readouterr().err
    u = np.load(out / "displacement.npy")
    assert np.abs(u).max() > 0.3
    registered = sitk.ReadImage(str(out / "registered.nii.gz"))
    margin = int(np.ceil(np.abs(u).max())) + 2
    inside = (slice(margin, H - margin), slice(margin, W - margin))
    for k, path in enumerate(files):
        moving = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)  # the scanner's file, not our reader
        np.testing.assert_allclose(moving.GetOrigin(), _oblique_geometry().origin, atol=1e-4)
        fixed = _frame(registered, k)
        expected = sitk.GetArrayFromImage(fixed)[0]
        scale = float(expected.max() - expected.min())
        field = sitk.ReadImage(str(out / f"displacement_itk_frame{k:03d}.mha"), sitk.sitkVectorFloat64)
        np.testing.assert_allclose(field.GetOrigin(), moving.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(np.reshape(field.GetDirection(), (3, 3))[:, :2],
                                   np.reshape(moving.GetDirection(), (3, 3))[:, :2], atol=1e-6)
        transform = sitk.DisplacementFieldTransform(sitk.Image(field))
        resampled = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))[0]
        error = float(np.abs(resampled[inside] - expected[inside]).max())
        # the registered frames are the raw scanner values warped (no rescaling by the reader here)
        assert error < 1e-4 * scale, (k, error, scale)


def test_transformix_reproduces_registered_frames_from_a_copied_export_folder(tmp_path, capsys):
    """elastix's own resampler, as docs/interoperability.md gives the command: the export folder
    copied elsewhere (the parameter files name their fields relative to themselves), transformix
    run in the copy on each raw frame (a 3-D one-slice image in its scanner geometry) gives the
    registered frame."""
    import shutil
    import subprocess

    transformix = shutil.which("transformix")
    if transformix is None:
        pytest.skip("transformix (elastix) is not installed: `apt-get install elastix`; "
                    "scripts/install.sh --testing installs it")
    source = tmp_path / "oblique.nii.gz"
    _write_input(source, rows_reversed=False)
    out = tmp_path / "out"
    assert main(["register", str(source), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--iterations-scale", "0.1", "--export", "nifti,displacement,itk", "-q"]) == 0, capsys.readouterr().err
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(out)  # nothing may still point at the old folder
    raw = sitk.ReadImage(str(source))
    registered = sitk.ReadImage(str(copy / "registered.nii.gz"))
    u = np.load(copy / "displacement.npy")
    assert np.abs(u).max() > 0.3
    margin = int(np.ceil(np.abs(u).max())) + 2
    inside = (slice(margin, H - margin), slice(margin, W - margin))
    for k in (0, u.shape[0] // 2, u.shape[0] - 1):
        frame = tmp_path / f"frame{k:03d}.nii.gz"
        sitk.WriteImage(_frame(raw, k), str(frame))
        result = tmp_path / f"result{k:03d}"
        result.mkdir()
        run = subprocess.run([transformix, "-tp", f"displacement_itk_frame{k:03d}.txt", "-in", str(frame),
                              "-out", str(result)], cwd=copy, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:]
        resampled = sitk.GetArrayFromImage(sitk.ReadImage(str(result / "result.nii.gz")))[0]
        expected = sitk.GetArrayFromImage(_frame(registered, k))[0]
        scale = float(expected.max() - expected.min())
        error = float(np.abs(resampled[inside] - expected[inside]).max())
        assert error < 1e-4 * scale, (k, error, scale)
