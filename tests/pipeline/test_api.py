"""The README's five-line Python API works as written."""

import numpy as np

import napari_any2reg


def test_readme_python_api(tmp_path):
    from napari_any2reg import make_phantom, read_sequence, register
    from napari_any2reg.io import write_tiff

    path = write_tiff(tmp_path / "molli.tif", make_phantom("molli", seed=1, shape=(64, 64), spacing_mm=(4.5, 4.5)).sequence)
    sequence = read_sequence(path)
    result = register(sequence, engine="groupwise", device="auto", iterations_scale=0.2)
    assert result.registered.shape == sequence.frames.shape
    assert result.displacement.shape == (sequence.n_frames, 2, 64, 64)
    summary = result.summary()
    assert {"engine", "device", "seconds", "folding_percent"} <= set(summary)
    assert isinstance(napari_any2reg.__version__, str)
    assert np.isfinite(result.registered).all()
