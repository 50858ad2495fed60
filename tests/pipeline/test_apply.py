"""any2reg apply: a saved registration applied to another series, labels and landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_any2reg.cli import main
from napari_any2reg.core.landmarks import LandmarkTable, landmarks_to_common, propagate_points
from napari_any2reg.io.landmarks import read_landmarks_csv, write_landmarks_csv
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register
from napari_any2reg.core.spatial import sample_displacement_at_points
from napari_any2reg.io import read_sequence, write_tiff
from napari_any2reg.io.fields import (
    read_displacement,
    read_elastix_transform,
    read_label_stack,
    save_displacement,
    save_displacement_itk,
    save_elastix_transform,
)
from napari_any2reg.pipeline.apply import apply_file, apply_to_labels, apply_to_points, apply_to_sequence

SIZE = 48


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("molli", seed=7, shape=(SIZE, SIZE), spacing_mm=(6.0, 6.0))


@pytest.fixture(scope="module")
def result(phantom):
    return register(phantom.sequence, engine="groupwise", device="cpu", iterations_scale=0.2)


def test_own_field_reproduces_the_registered_stack(phantom, result):
    moved = apply_to_sequence(phantom.sequence.frames, result.displacement)
    assert moved.dtype == np.float32 and moved.shape == phantom.sequence.frames.shape
    np.testing.assert_allclose(moved, result.registered, rtol=1e-5, atol=1e-5)


def test_labels_stay_integer_with_the_same_label_set(phantom):
    moved = apply_to_labels(phantom.labels, phantom.displacement)
    assert moved.dtype == phantom.labels.dtype and moved.shape == phantom.labels.shape
    assert set(np.unique(moved)) <= set(np.unique(phantom.labels))
    assert set(np.unique(moved)) == set(np.unique(phantom.common_labels))
    # the true field brings each raw frame's labels onto the common anatomy
    agreement = np.mean(moved == phantom.common_labels[None])
    assert agreement > 0.97
    assert np.mean(phantom.labels == phantom.common_labels[None]) < agreement
    # one 2-D label image gives one label frame per registered frame
    single = apply_to_labels(phantom.common_labels, phantom.displacement)
    assert single.shape == phantom.labels.shape and single.dtype == phantom.common_labels.dtype
    # float whole numbers are accepted, fractions are not
    assert apply_to_labels(phantom.labels.astype(np.float32), phantom.displacement).dtype.kind == "i"
    with pytest.raises(ValueError, match="whole numbers"):
        apply_to_labels(phantom.labels + 0.5, phantom.displacement)


def test_points_round_trip_through_landmark_propagation(phantom, result):
    u = result.displacement
    source_points = np.array([[20.0, 18.0], [27.5, 30.25]])
    propagated = propagate_points(source_points, 2, u)  # (N, P, 2) on every raw frame
    n = u.shape[0]
    table = LandmarkTable(
        frames=np.repeat(np.arange(n), 2), names=np.tile(["a", "b"], n), points=propagated.reshape(-1, 2),
        spacing_mm=phantom.sequence.spacing_mm,
    )
    moved = apply_to_points(table, u)
    np.testing.assert_array_equal(moved.points, landmarks_to_common(table, u).points)
    np.testing.assert_array_equal(moved.frames, table.frames)
    common = moved.points.reshape(n, 2, 2)
    # every frame's copy of a point lands on the one common-grid position of the source point
    np.testing.assert_allclose(common, np.broadcast_to(common[2], common.shape), atol=2e-2)
    # and the field maps it back onto the clicked raw position: x + u_i(x) = p
    import torch

    for i in range(n):
        back = common[i] + sample_displacement_at_points(torch.as_tensor(np.array(u[i])), torch.as_tensor(np.array(common[i]), dtype=torch.float32)).numpy()
        np.testing.assert_allclose(back, propagated[i], atol=2e-2)


def test_true_field_moves_phantom_landmarks_to_the_common_grid(phantom):
    names = list(phantom.landmarks)
    n = phantom.sequence.n_frames
    table = LandmarkTable.from_positions({k: phantom.landmarks[k] for k in names}, phantom.sequence.spacing_mm)
    moved = apply_to_points(table, phantom.displacement)
    for name in names:
        rows = moved.names == name
        assert rows.sum() == n
        np.testing.assert_allclose(moved.points[rows], np.broadcast_to(phantom.common_landmarks[name], (n, 2)), atol=0.1)


def test_shape_mismatch_names_both_shapes_and_the_fix(phantom):
    u = phantom.displacement
    with pytest.raises(ValueError) as info:
        apply_to_sequence(phantom.sequence.frames[:, :40], u)
    text = str(info.value)
    assert f"({u.shape[0]}, 40, {SIZE})" in text and str(tuple(u.shape)) in text and "same frames" in text
    with pytest.raises(ValueError, match=r"\(3, 48, 48\)"):
        apply_to_labels(phantom.labels[:3], u)
    with pytest.raises(ValueError, match=r"\(48, 48\)"):
        apply_to_sequence(phantom.sequence.frames[0], u)  # one image is labels-only


def test_apply_file_reads_itk_and_nifti_fields(tmp_path, phantom):
    u = phantom.displacement
    spacing = phantom.sequence.spacing_mm
    write_tiff(tmp_path / "raw.tif", phantom.sequence)
    save_displacement(tmp_path / "displacement.nii.gz", u, spacing)
    save_displacement_itk(tmp_path / "displacement_itk.nii.gz", u, spacing)
    for field, spacing_read in ((tmp_path / "displacement.nii.gz", spacing),
                                (tmp_path / "displacement_itk.nii.gz", spacing),
                                (tmp_path / "displacement_itk_frame004.nii.gz", spacing)):
        back, got_spacing = read_displacement(field)
        np.testing.assert_allclose(back, u, atol=1e-4)
        assert got_spacing == pytest.approx(spacing_read)
    out = apply_file(tmp_path / "displacement_itk.nii.gz", tmp_path / "raw.tif", tmp_path / "moved.nii.gz")
    assert out.kind == "image" and out.shape == phantom.sequence.frames.shape
    moved = read_sequence(tmp_path / "moved.nii.gz")
    np.testing.assert_allclose(moved.frames, apply_to_sequence(phantom.sequence.frames, u), atol=1e-3)
    np.testing.assert_array_equal(moved.timings_ms, phantom.sequence.timings_ms)
    assert moved.spacing_mm == pytest.approx(spacing)
    with pytest.raises(FileExistsError, match="overwrite=True"):  # Python: the argument, not the flag
        apply_file(tmp_path / "displacement.nii.gz", tmp_path / "raw.tif", tmp_path / "moved.nii.gz")
    with pytest.raises(ValueError, match="replace"):
        apply_file(tmp_path / "displacement.nii.gz", tmp_path / "raw.tif", tmp_path / "raw.tif", overwrite=True)


def test_elastix_parameter_file_parses_back(tmp_path, phantom):
    u = phantom.displacement
    paths = save_displacement_itk(tmp_path / "d.nii.gz", u, (6.0, 5.0))
    parameters = save_elastix_transform(paths[3], (SIZE, SIZE), (6.0, 5.0))
    assert parameters == tmp_path / "d_frame003.txt"
    entries = read_elastix_transform(parameters)
    assert entries["Transform"] == ["DeformationFieldTransform"]
    assert entries["DeformationFieldFileName"] == [paths[3].name]  # relative: the folder may move
    assert entries["FixedImageDimension"] == [2.0] and entries["MovingImageDimension"] == [2.0]
    assert entries["Size"] == [SIZE, SIZE] and entries["Spacing"] == [5.0, 6.0]  # ITK order (x, y)
    assert entries["Origin"] == [0.0, 0.0] and entries["Direction"] == [1.0, 0.0, 0.0, 1.0]
    assert entries["NumberOfParameters"] == [0.0]
    # a non-square grid is written (width, height), and another name can be chosen
    other = read_elastix_transform(save_elastix_transform(paths[0], (30, 40), (2.0, 1.0), path=tmp_path / "tp.txt"))
    assert other["Size"] == [40.0, 30.0] and other["Spacing"] == [1.0, 2.0]
    # ITK reads the field with exactly that grid
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(paths[3]))
    assert list(image.GetSize()) == entries["Size"]
    assert list(image.GetSpacing()) == pytest.approx([5.0, 6.0])
    assert list(image.GetOrigin()) == pytest.approx(entries["Origin"])
    assert list(image.GetDirection()) == pytest.approx(entries["Direction"])


def test_cli_apply_end_to_end(tmp_path, capsys, phantom):
    sample = tmp_path / "molli.tif"
    assert main(["sample", "molli", "-o", str(sample), "--size", str(SIZE), "--seed", "3"]) == 0
    out = tmp_path / "reg"
    assert main(["register", str(sample), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--iterations-scale", "0.2", "-q"]) == 0
    field = out / "displacement.npy"
    # the same series: apply reproduces the registered stack, timings and spacing kept
    assert main(["apply", str(field), str(sample), "-o", str(tmp_path / "again.tif")]) == 0
    assert "wrote" in capsys.readouterr().out
    again, registered = read_sequence(tmp_path / "again.tif"), read_sequence(out / "registered.tif")
    np.testing.assert_allclose(again.frames, registered.frames, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(again.timings_ms, registered.timings_ms)
    assert again.spacing_mm == registered.spacing_mm
    # exists: refused without --overwrite (exit 1, one line naming the fix)
    assert main(["apply", str(field), str(sample), "-o", str(tmp_path / "again.tif"), "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["apply", str(field), str(sample), "-o", str(tmp_path / "again.tif"), "-q", "--overwrite"]) == 0
    # one 2-D label image for every frame
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[10:30, 12:28] = 2
    labels[15:25, 16:24] = 1
    np.save(tmp_path / "labels.npy", labels)
    assert main(["apply", str(field), str(tmp_path / "labels.npy"), "--labels", "-o", str(tmp_path / "labels_reg.tif"), "-q"]) == 0
    moved = read_label_stack(tmp_path / "labels_reg.tif")
    assert moved.shape == (registered.n_frames, SIZE, SIZE) and moved.dtype == np.uint8
    assert set(np.unique(moved)) == {0, 1, 2}
    # landmarks
    table = LandmarkTable(frames=[0, 1, 2], names=["a", "a", "a"], points=[[20, 20], [21, 20], [20, 22]],
                          spacing_mm=registered.spacing_mm)
    write_landmarks_csv(tmp_path / "points.csv", table)
    assert main(["apply", str(field), str(tmp_path / "points.csv"), "-o", str(tmp_path / "points_reg.csv"), "-q"]) == 0
    back = read_landmarks_csv(tmp_path / "points_reg.csv")
    np.testing.assert_allclose(back.points, landmarks_to_common(table, np.load(field)).points, atol=1e-9)
    # wrong grid: exit 1 with both shapes
    write_tiff(tmp_path / "small.tif", registered.replace(frames=registered.frames[:, :40, :40]))
    assert main(["apply", str(field), str(tmp_path / "small.tif"), "-o", str(tmp_path / "x.tif"), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"({registered.n_frames}, 40, 40)" in err and f"({registered.n_frames}, 2, {SIZE}, {SIZE})" in err
    assert not (tmp_path / "x.tif").exists()
    with pytest.raises(SystemExit) as info:
        main(["apply", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--labels" in text and "FIELD" in text and "nearest" in text
