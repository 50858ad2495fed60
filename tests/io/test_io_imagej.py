"""Issue 24 item 17: Fiji / ImageJ hyperstacks.

Read: TZCYX / TCYX hyperstacks (one sequence per slice and channel, frames from T) with their
frame interval. Written: stacks, T1 maps and the Jacobian open in Fiji with the right axes
(frames on T), the pixel size in mm as the resolution, the frame interval when the timing is
uniform and per-frame timings in the metadata always.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_any2reg.cli import main
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.sequence import Sequence
from napari_any2reg.io import read_map_tiff, read_sequence, read_slices, save_map_tiff, write_tiff

H, W = 16, 18
SPACING = (1.4, 0.9)  # (dy, dx)


def _resolution_mm(page) -> tuple[float, float]:
    """Pixel size (dy, dx) in mm from the resolution tags of an ImageJ file with unit=mm."""
    (xn, xd), (yn, yd) = page.tags["XResolution"].value, page.tags["YResolution"].value
    return yd / yn, xd / xn


# ---------------------------------------------------------------- reading Fiji hyperstacks
def test_tzcyx_hyperstack_reads_one_sequence_per_slice_and_channel_with_the_frame_interval(tmp_path):
    data = np.random.default_rng(0).random((6, 3, 2, H, W)).astype(np.float32)  # T, Z, C, Y, X
    path = tmp_path / "cine_hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / SPACING[1], 1 / SPACING[0]),
                     metadata={"axes": "TZCYX", "unit": "mm", "finterval": 0.04})  # 40 ms, tunit default sec
    sequences = read_slices(path)
    assert len(sequences) == 3 * 2
    for seq in sequences:
        z, c = seq.metadata["slice_index"], seq.metadata["channel_index"]
        assert seq.name == f"cine_hyper slice {z} channel {c}"
        np.testing.assert_array_equal(seq.frames, data[:, z, c])  # frames from T, never from Z or C
        np.testing.assert_allclose(seq.timings_ms, np.arange(6) * 40.0)
        assert seq.metadata["frame_interval_ms"] == pytest.approx(40.0)
        assert seq.spacing_mm == pytest.approx(SPACING)
    assert [(s.metadata["slice_index"], s.metadata["channel_index"]) for s in sequences] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]  # slice-major
    np.testing.assert_array_equal(read_sequence(path, slice_index=3).frames, data[:, 1, 1])


def test_tcyx_hyperstack_uses_its_time_unit(tmp_path):
    data = np.random.default_rng(1).random((5, 2, H, W)).astype(np.float32)
    path = tmp_path / "tc.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX", "finterval": 25.0, "tunit": "ms"})
    first, second = read_slices(path)
    assert first.metadata["n_channels"] == 2 and "slice_index" not in first.metadata
    np.testing.assert_array_equal(second.frames, data[:, 1])
    np.testing.assert_allclose(first.timings_ms, [0.0, 25.0, 50.0, 75.0, 100.0])


def test_a_sidecar_timing_wins_over_the_frame_interval(tmp_path):
    data = np.random.default_rng(2).random((4, H, W)).astype(np.float32)
    path = tmp_path / "molli.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TYX", "finterval": 1.0})
    (tmp_path / "molli.json").write_text(json.dumps({"timings_ms": [100, 180, 260, 1100]}), encoding="utf-8")
    seq = read_sequence(path)
    np.testing.assert_allclose(seq.timings_ms, [100, 180, 260, 1100])
    assert seq.metadata["frame_interval_ms"] == pytest.approx(1000.0)


# ---------------------------------------------------------------- writing for Fiji
def test_written_stack_is_a_fiji_hyperstack_with_frame_interval_and_labels(tmp_path):
    cine = Sequence(frames=np.random.default_rng(3).random((5, H, W)).astype(np.float32),
                    timings_ms=[20.0, 60.0, 100.0, 140.0, 180.0], spacing_mm=SPACING, kind="cine", name="cine")
    path = write_tiff(tmp_path / "cine.tif", cine)
    with tifffile.TiffFile(path) as tif:
        ij = tif.imagej_metadata
        assert tif.series[0].axes == "TYX" and ij["frames"] == 5 and ij["hyperstack"]
        assert ij["unit"] == "mm" and _resolution_mm(tif.pages[0]) == pytest.approx(SPACING)
        assert ij["finterval"] == pytest.approx(0.04) and ij["tunit"] == "sec"  # 40 ms in Fiji's unit
        assert ij["Labels"] == ["trigger 20 ms", "trigger 60 ms", "trigger 100 ms", "trigger 140 ms", "trigger 180 ms"]
    back = read_sequence(path)
    np.testing.assert_allclose(back.timings_ms, cine.timings_ms)  # the any2reg JSON, not k * interval

    molli = make_phantom("molli", seed=1, shape=(H, W), spacing_mm=SPACING).sequence
    with tifffile.TiffFile(write_tiff(tmp_path / "molli.tif", molli)) as tif:
        ij = tif.imagej_metadata
        assert "finterval" not in ij  # MOLLI's inversion times are not evenly spaced
        assert ij["Labels"] == [f"TI {t:g} ms" for t in molli.timings_ms]


def test_maps_and_jacobian_open_in_fiji_with_their_axes_and_pixel_size(tmp_path, capsys):
    t1 = np.random.default_rng(4).random((H, W)).astype(np.float32) * 1000
    save_map_tiff(tmp_path / "t1.tif", t1, SPACING, {"quantity": "T1", "unit": "ms"}, axes="YX")
    with tifffile.TiffFile(tmp_path / "t1.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "YX" and tif.imagej_metadata["unit"] == "mm"
        assert _resolution_mm(tif.pages[0]) == pytest.approx(SPACING)
    array, info = read_map_tiff(tmp_path / "t1.tif")
    np.testing.assert_array_equal(array, t1)
    assert info == {"quantity": "T1", "unit": "ms", "spacing_mm": list(SPACING)}

    sample = tmp_path / "molli.tif"
    phantom = make_phantom("molli", seed=2, shape=(24, 24), spacing_mm=SPACING).sequence
    write_tiff(sample, phantom)
    out = tmp_path / "out"
    assert main(["register", str(sample), "-o", str(out), "--engine", "groupwise", "--device", "cpu",
                 "--iterations-scale", "0.05", "--export", "jacobian,maps", "-q"]) == 0, capsys.readouterr().err
    with tifffile.TiffFile(out / "jacobian.tif") as tif:
        ij = tif.imagej_metadata
        assert tif.series[0].axes == "TYX" and ij["frames"] == phantom.n_frames and ij["unit"] == "mm"  # frames, not slices
        assert _resolution_mm(tif.pages[0]) == pytest.approx(SPACING)
    with tifffile.TiffFile(out / "t1_registered.tif") as tif:
        assert tif.series[0].axes == "YX" and _resolution_mm(tif.pages[0]) == pytest.approx(SPACING)
    assert read_map_tiff(out / "t1_registered.tif")[1]["quantity"].startswith("T1")
    # a map whose axes do not match its array is refused
    with pytest.raises(ValueError, match="map axes"):
        save_map_tiff(tmp_path / "bad.tif", t1, SPACING, axes="TYX")


def test_apply_labels_writes_a_fiji_hyperstack_of_frames_in_mm(tmp_path, capsys):
    """Label stacks from ``apply --labels`` were plain TIFFs (resolution in cm, no ImageJ axes):
    Fiji opened (N, H, W) as Z-slices. They are ImageJ hyperstacks, frames on T, unit mm."""
    from napari_any2reg.io.fields import read_label_stack, save_displacement, save_label_stack

    n = 5
    labels = np.zeros((n, H, W), np.uint8)
    labels[:, 4:10, 5:12] = 2
    labels[np.arange(n), 2, np.arange(n)] = 3  # a different pixel per frame: frame order is checked
    np.save(tmp_path / "labels.npy", labels)
    field = tmp_path / "displacement.nii.gz"
    save_displacement(field, np.zeros((n, 2, H, W), np.float32), SPACING)  # the field carries the spacing
    moved = tmp_path / "moved_labels.tif"
    assert main(["apply", str(field), str(tmp_path / "labels.npy"), "--labels", "-o", str(moved)]) == 0
    with tifffile.TiffFile(moved) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        assert meta["frames"] == n and "slices" not in meta and meta["unit"] == "mm"
        assert tif.series[0].axes == "TYX"
        assert _resolution_mm(tif.pages[0]) == pytest.approx(SPACING)
        info = json.loads(meta["any2reg_labels"])  # the NIfTI header keeps the spacing as float32
        assert info["quantity"] == "labels" and info["spacing_mm"] == pytest.approx(SPACING)
        back = tif.asarray()
    assert back.dtype == np.uint8 and np.array_equal(back, labels)  # a zero field moves nothing
    assert np.array_equal(read_label_stack(moved), labels)
    wide = tmp_path / "wide.tif"  # 70000 labels need int32, which ImageJ lacks: still written, values kept
    save_label_stack(wide, np.full((2, H, W), 70000, np.int32), SPACING)
    assert np.array_equal(read_label_stack(wide), np.full((2, H, W), 70000))
