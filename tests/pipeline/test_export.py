"""pipeline.export / core.export / core.report / io.atomic_write_folder: every format reads back, and failures leave nothing.

One quick groupwise registration of a 64x64 phantom per module, T1 fits of raw and registered.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_any2reg.core.landmarks import LandmarkTable, landmarks_to_common
from napari_any2reg.io.landmarks import read_landmarks_csv
from napari_any2reg.pipeline import export as ex
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.spatial import jacobian_determinant

SPACING = (4.5, 4.0)


@pytest.fixture(scope="module")
def run():
    from napari_any2reg.core.mapping import fit_t1
    from napari_any2reg.core.registration import register

    torch.manual_seed(0)
    phantom = make_phantom("molli", seed=1, shape=(64, 64), spacing_mm=SPACING, motion_mm=10)
    sequence = phantom.sequence.replace(metadata={"source": "/data/molli.tif"})
    result = register(sequence, engine="groupwise", device="cpu", iterations_scale=0.3)
    fits = {
        "raw": ex.t1_maps_from_fit(fit_t1(sequence, device="cpu")),
        "registered": ex.t1_maps_from_fit(fit_t1(result.registered_sequence(), device="cpu")),
    }
    landmarks = LandmarkTable.from_positions(phantom.landmarks, SPACING)
    return phantom, result, fits, landmarks


def export_all(run, folder, **kwargs):
    phantom, result, fits, landmarks = run
    kwargs.setdefault("landmarks", landmarks)
    kwargs.setdefault("labels", phantom.labels)
    kwargs.setdefault("t1_maps", fits)
    return ex.export_result(result, folder, **kwargs)


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else None


# ---------------------------------------------------------------------- round trips
def test_every_export_format_reads_back_equal(tmp_path, run):
    from matplotlib.image import imread

    from napari_any2reg.io import read_displacement, read_map_tiff, read_sequence

    phantom, result, fits, landmarks = run
    out = export_all(run, tmp_path / "out", command=["any2reg", "register"])
    folder = tmp_path / "out"
    # no displacement_sd given (a classical engine): the uncertainty item is the one left out
    assert out.items == tuple(i for i in ex.EXPORT_ITEMS if i != "uncertainty") and set(out.skipped) == {"uncertainty"}
    assert sorted(p.name for p in out.files) == listing(folder)
    assert set(listing(folder)) == set(ex.planned_files(out.items, n_frames=result.displacement.shape[0]))

    registered = result.registered_sequence()
    for name in ("registered.tif", "registered.nii.gz"):  # timings and spacing kept
        back = read_sequence(folder / name)
        np.testing.assert_array_equal(back.frames, registered.frames)
        np.testing.assert_array_equal(back.timings_ms, registered.timings_ms)
        assert back.spacing_mm == pytest.approx(SPACING) and back.kind == "molli"

    np.testing.assert_array_equal(np.load(folder / "displacement.npy"), result.displacement)
    u_npy, spacing_npy = read_displacement(folder / "displacement.npy")
    assert spacing_npy == pytest.approx(SPACING)  # from displacement.json
    u_nii, spacing_nii = read_displacement(folder / "displacement.nii.gz")
    np.testing.assert_allclose(u_nii, result.displacement, rtol=1e-6, atol=1e-6)
    assert spacing_nii == pytest.approx(SPACING)
    import nibabel

    nii = nibabel.load(str(folder / "displacement.nii.gz"))
    assert nii.shape == (64, 64, 8, 1, 2) and nii.header.get_intent()[0] == "vector"
    np.testing.assert_allclose(np.asarray(nii.dataobj)[5, 7, 2, 0], [result.displacement[2, 1, 7, 5] * SPACING[1],
                                                                   result.displacement[2, 0, 7, 5] * SPACING[0]], rtol=1e-6)

    det, info = read_map_tiff(folder / "jacobian.tif")
    np.testing.assert_array_equal(det, jacobian_determinant(result.displacement))
    assert info["spacing_mm"] == pytest.approx(list(SPACING)) and "det" in info["quantity"]
    for role in ("raw", "registered"):
        for key, prefix in (("t1", "t1"), ("r2", "r2"), ("t1_sd", "t1_sd")):
            array, info = read_map_tiff(folder / f"{prefix}_{role}.tif")
            np.testing.assert_array_equal(array, fits[role][key])
            assert info["role"] == role

    qc = json.loads((folder / "qc.json").read_text())
    assert qc["folding_percent"] == pytest.approx(result.folding_percent)
    assert qc["alignment_score_after"] > qc["alignment_score_before"]
    assert len(qc["frames"]) == 8 and qc["tre"]["after_mm"]["overall"] == pytest.approx(out.tre.after["overall"])
    assert qc["dice"]["labels"][1]["dice_after"] == pytest.approx(out.dice.after[2])
    with open(folder / "qc_frames.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(8))
    for row, record in zip(rows, qc["frames"]):
        assert float(row["folding_percent"]) == pytest.approx(record["folding_percent"])
        assert float(row["template_correlation"]) == pytest.approx(record["template_correlation"])
    # the inversion times travel with the frames (issue 23 item 5: they were nan / null)
    tis = [float(t) for t in phantom.sequence.timings_ms]
    assert [float(r["time_ms"]) for r in rows] == pytest.approx(tis)
    assert [record["time_ms"] for record in qc["frames"]] == pytest.approx(tis)

    back = read_landmarks_csv(folder / "landmarks.csv")
    np.testing.assert_array_equal(back.points, landmarks.points)
    assert back.names.tolist() == landmarks.names.tolist() and back.spacing_mm == pytest.approx(SPACING)
    common = read_landmarks_csv(folder / "landmarks_common.csv")
    np.testing.assert_array_equal(common.points, landmarks_to_common(landmarks, result.displacement).points)
    with open(folder / "tre.csv") as handle:
        tre_rows = {r["landmark"]: r for r in csv.DictReader(handle)}
    for name in landmarks.landmark_names + ("overall",):
        assert float(tre_rows[name]["tre_before_mm"]) == out.tre.before[name]
        assert float(tre_rows[name]["tre_after_mm"]) == out.tre.after[name]
    with open(folder / "dice.csv") as handle:
        dice_rows = list(csv.DictReader(handle))
    assert [float(r["dice_after"]) for r in dice_rows] == [out.dice.after[v] for v in (1, 2, 3)]

    image = imread(folder / "report.png")
    assert image.ndim == 3 and image.shape[0] > image.shape[1] > 500  # one A4 portrait page

    record = json.loads((folder / "run.json").read_text())
    assert record["software"] == "napari-any2reg" and record["engine"] == "groupwise"
    assert "weights_sha256" in record and record["params"]["iterations_scale"] == 0.3
    assert record["device"].startswith("cpu") and record["input"]["path"] == "/data/molli.tif"
    assert record["input"]["timings_ms"] == pytest.approx(phantom.sequence.timings_ms.tolist())
    assert record["command"] == ["any2reg", "register"] and record["created_utc"].endswith("+00:00")
    from napari_any2reg._version import __version__

    assert record["version"] == __version__
    for name, digest in record["exported"]["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert set(record["exported"]["sha256"]) == set(listing(folder)) - {"run.json"}


def test_report_as_pdf_and_a_subset_of_items(tmp_path, run):
    out = export_all(run, tmp_path, items="report,record", report_format="pdf")
    assert listing(tmp_path) == ["report.pdf", "run.json"]
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert out.items == ("report", "record")


def test_all_skips_what_is_missing_and_explicit_items_say_what_to_pass(tmp_path, run):
    phantom, result, _, _ = run
    out = ex.export_registration(tmp_path / "a", result.registered_sequence(), result.displacement)
    assert out.items == ("stack", "nifti", "displacement", "itk", "jacobian", "record")
    assert set(out.skipped) == {"maps", "maps_nifti", "qc", "landmarks", "dice", "report", "uncertainty"}
    assert "raw" in out.skipped["qc"] and "--landmarks" in out.skipped["landmarks"]
    with pytest.raises(ValueError, match="cannot export 'landmarks'.*--landmarks CSV"):
        ex.export_result(result, tmp_path / "b", items=["stack", "landmarks"])
    with pytest.raises(ValueError, match="cannot export 'maps'"):
        ex.export_result(result, tmp_path / "b", items="maps")
    with pytest.raises(ValueError, match="cannot export 'maps_nifti'.*T1 mapping"):
        ex.export_result(result, tmp_path / "b", items="maps_nifti")
    with pytest.raises(ValueError, match="unknown export item.*'tiff'"):
        ex.export_result(result, tmp_path / "b", items="stack,tiff")
    with pytest.raises(ValueError, match="report_format"):
        ex.export_result(result, tmp_path / "b", items="report", report_format="svg")
    with pytest.raises(ValueError, match="do not match"):
        ex.export_registration(tmp_path / "b", result.registered, result.displacement[:3])
    assert not (tmp_path / "b").exists()
    assert ex.parse_export_items("all") == ("all",)
    assert ex.parse_export_items(" QC , stack ") == ("stack", "qc")  # canonical order


# ---------------------------------------------------------------------- never overwrite, never leave partial files
def test_existing_files_are_never_replaced_without_asking(tmp_path, run):
    _, result, _, _ = run
    ex.export_result(result, tmp_path, items="stack,qc")
    before = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path)}
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="registered.tif.*overwrite"):
        ex.export_result(result, tmp_path, items="stack,qc,jacobian")
    assert listing(tmp_path) == sorted(list(before) + ["notes.txt"])  # no jacobian.tif, no staging folder
    assert all((tmp_path / name).read_bytes() == data for name, data in before.items())
    out = ex.export_result(result, tmp_path, items="stack,qc,jacobian", overwrite=True)
    assert "jacobian.tif" in listing(tmp_path) and len(out.files) == 4
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("fresh", [True, False])
def test_a_writer_failing_mid_export_leaves_no_partial_files(tmp_path, run, monkeypatch, fresh):
    """A full disk (ENOSPC) while writing the Jacobian: nothing appears, a new folder is removed."""
    from napari_any2reg.io import fields

    folder = tmp_path / "new" / "out" if fresh else tmp_path
    if not fresh:
        (tmp_path / "keep.txt").write_text("user file")
    real = fields.save_map_tiff

    def full_disk(path, *args, **kwargs):
        real(path, *args, **kwargs)  # part of the file is there...
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fields, "save_map_tiff", full_disk)
    import napari_any2reg.io as io_package

    monkeypatch.setattr(io_package, "save_map_tiff", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_all(run, folder)
    if fresh:
        assert listing(tmp_path) == []  # "new/out" created by the export and removed again
    else:
        assert listing(tmp_path) == ["keep.txt"]


def test_an_unwritable_location_fails_cleanly(tmp_path, run):
    _, result, _, _ = run
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        ex.export_result(result, blocker / "out", items="stack")
    with pytest.raises(NotADirectoryError, match="is a file"):
        ex.export_result(result, blocker, items="stack")
    assert listing(tmp_path) == ["a_file"]


def test_a_failed_move_rolls_back_and_restores_replaced_files(tmp_path, monkeypatch):
    from napari_any2reg.io import _atomic, atomic_write_folder

    def writer(staging):
        for name in ("a.txt", "b.txt", "c.txt"):
            (staging / name).write_text("new " + name)

    (tmp_path / "b.txt").write_text("old b")
    real_move = _atomic._move_exclusive

    def failing_for_c(source, target):
        if target.name == "c.txt":
            raise OSError(errno.EIO, "I/O error")
        return real_move(source, target)

    # a.txt is moved in, b.txt replaced (the old one kept aside), then moving c.txt fails
    monkeypatch.setattr(_atomic, "_move_exclusive", failing_for_c)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_folder(tmp_path, writer, overwrite=True)
    assert listing(tmp_path) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "old b"
    (tmp_path / "b.txt").unlink()
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_folder(tmp_path, writer)
    assert listing(tmp_path) == []
    monkeypatch.setattr(_atomic, "_move_exclusive", real_move)
    written = atomic_write_folder(tmp_path / "x", writer, expected=["a.txt"])
    assert [p.name for p in written] == ["a.txt", "b.txt", "c.txt"]
    with pytest.raises(FileExistsError, match="a.txt"):
        atomic_write_folder(tmp_path / "x", writer, expected=["a.txt"])


# ---------------------------------------------------------------------- the item table
def test_one_table_drives_names_planning_and_availability():
    names = [item.name for item in ex.ITEMS]
    assert list(ex.EXPORT_ITEMS) == names and len(set(names)) == len(names)
    assert ex.MAP_ITEMS == ("maps", "maps_nifti")
    plan = ex.ExportPlan(t1_roles=("registered",), report_format="pdf", n_frames=3)
    for item in ex.ITEMS:
        assert ex.planned_files([item.name], t1_roles=("registered",), report_format="pdf", n_frames=3) == item.files(plan)
    assert ex.planned_files(["itk"], n_frames=2) == ["displacement_itk_frame000.nii.gz", "displacement_itk_frame000.txt",
                                                     "displacement_itk_frame001.nii.gz", "displacement_itk_frame001.txt"]
    assert ex.planned_files(["itk"]) == []  # per-frame names are unknown without the frame count
    context = ex.ExportContext(registered=ex.Sequence(np.arange(128, dtype=np.float32).reshape(2, 8, 8)), displacement=np.zeros((2, 2, 8, 8), np.float32))
    missing = {item.name for item in ex.ITEMS if item.available(context) is not None}
    assert missing == {"maps", "maps_nifti", "qc", "landmarks", "dice", "report", "uncertainty"}


def test_map_nifti_voxels_lie_where_the_source_pixels_lie(tmp_path, run):
    """maps_nifti: (I, J, 1) maps with the source's affine; a voxel's world point is the source pixel's."""
    import nibabel

    from napari_any2reg.core.geometry import SliceGeometry
    from napari_any2reg.io import read_sequence, write_nifti

    _, result, fits, _ = run
    geometry = SliceGeometry(origin=(-12.5, 30.0, 41.0), row_direction=(0.8, 0.6, 0.0), column_direction=(0.0, 0.0, -1.0),
                             slice_thickness_mm=8.0)
    source = result.sequence.replace(geometry=geometry)
    write_nifti(tmp_path / "source.nii.gz", source)
    out = ex.export_registration(tmp_path / "out", result.registered_sequence().replace(geometry=geometry), result.displacement,
                                 raw=source, items="maps_nifti,maps", t1_maps=fits)
    assert out.items == ("maps", "maps_nifti")
    stack = nibabel.load(str(tmp_path / "source.nii.gz"))
    for role in ("raw", "registered"):
        for key, prefix in (("t1", "t1"), ("r2", "r2"), ("t1_sd", "t1_sd")):
            image = nibabel.load(str(tmp_path / "out" / f"{prefix}_{role}.nii.gz"))
            assert image.shape == (64, 64, 1)
            data = np.asarray(image.dataobj)
            np.testing.assert_array_equal(data[:, :, 0].T, np.asarray(fits[role][key], np.float32))
            np.testing.assert_allclose(image.affine, stack.affine)
    # pixel (row 10, column 20): the map voxel (i=20, j=10, k=0) is at the source pixel's world point
    image = nibabel.load(str(tmp_path / "out" / "t1_registered.nii.gz"))
    world_ras = image.affine @ np.array([20.0, 10.0, 0.0, 1.0])
    world_lps = geometry.pixel_to_world(10, 20, source.spacing_mm)
    np.testing.assert_allclose(world_ras[:3] * [-1, -1, 1], np.ravel(world_lps), atol=1e-4)
    assert read_sequence(tmp_path / "source.nii.gz").geometry.allclose(geometry)


def test_itk_item_writes_one_field_per_frame_that_reads_back(tmp_path, run):
    from napari_any2reg.io.fields import read_displacement_itk, read_elastix_transform

    _, result, _, _ = run
    out = ex.export_result(result, tmp_path / "out", items="itk")
    n, _, height, width = result.displacement.shape
    assert out.items == ("itk",)
    assert listing(tmp_path / "out") == sorted(f"displacement_itk_frame{k:03d}{ext}" for k in range(n) for ext in (".nii.gz", ".txt"))
    back, spacing = read_displacement_itk(tmp_path / "out" / "displacement_itk_frame000.nii.gz")
    np.testing.assert_allclose(back, result.displacement, atol=1e-4)
    assert spacing == pytest.approx(SPACING)
    # each elastix parameter file names its own frame's field relative to itself (issue 24 item 15:
    # never the staging folder, and a moved or copied export folder keeps working)
    import shutil

    moved = shutil.move(str(tmp_path / "out"), str(tmp_path / "moved"))
    for k in range(n):
        parameters = read_elastix_transform(Path(moved) / f"displacement_itk_frame{k:03d}.txt")
        assert parameters["Transform"] == ["DeformationFieldTransform"]
        (field,) = parameters["DeformationFieldFileName"]
        assert field == f"displacement_itk_frame{k:03d}.nii.gz" and (Path(moved) / field).is_file()
        assert parameters["Size"] == [width, height] and parameters["Spacing"] == pytest.approx(SPACING[::-1])


# ---------------------------------------------------------------------- the report's verdict
def test_a_report_from_a_run_summary_carries_the_verdict_register_would_write(tmp_path, monkeypatch):
    """The napari Export dock passes the run's summary (no verdict): the report still shows the
    verdict and outlier frames that ``register``'s metrics.json holds for the same run."""
    from napari_any2reg.core import report as report_module
    from napari_any2reg.core.phantom.bad_frames import inject_bad_frame
    from napari_any2reg.core.registration import register
    from napari_any2reg.core.qc.verdict import assess_registration

    phantom = make_phantom("molli", seed=20711, shape=(64, 64), spacing_mm=(4.5, 4.5), motion_mm=8.0)
    sequence = phantom.sequence.replace(frames=inject_bad_frame(phantom, 5, "other_slice"))
    result = register(sequence, engine="any2reg", device="cpu")
    drawn = {}
    real_figure = report_module.report_figure

    def spy(*args, **kwargs):
        drawn["info"] = kwargs["info"]
        return real_figure(*args, **kwargs)

    monkeypatch.setattr(report_module, "report_figure", spy)
    summary = result.summary()
    assert "verdict" not in summary
    ex.export_result(result, tmp_path / "out", items="report", info=summary)
    expected = assess_registration(
        sequence.frames, result.registered, result.displacement, scores=result.extras.get("correspondence"),
        spacing_mm=sequence.spacing_mm, timings_ms=sequence.timings_ms,
        displacement_sd_mm=result.extras.get("displacement_sd_mm"), uncertainty_note=result.params.get("uncertainty"))
    info = drawn["info"]
    assert info["outlier_frames"]["indices"] == expected["outlier_frames"]["indices"] == [5]
    assert info["verdict"] == expected["verdict"] and info["verdict"]["level"] in ("check", "poor")
    assert info["displacement_sd"]["p95_mm"] == expected["displacement_sd"]["p95_mm"]
    assert "verdict" not in summary  # the caller's summary is not modified
    # a caller that has the verdict (register's metrics) keeps its own
    drawn.clear()
    mine = {**summary, "verdict": {"level": "good", "reasons": []}}
    ex.export_result(result, tmp_path / "again", items="report", info=mine)
    assert drawn["info"]["verdict"] == {"level": "good", "reasons": []}
