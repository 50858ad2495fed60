"""Landmark TRE (DESIGN §6) against phantom truth."""

import numpy as np
import pytest

from napari_any2reg.core.metrics import landmark_tre
from napari_any2reg.core.phantom import make_phantom


def test_tre_is_zero_with_the_true_field_and_the_motion_without():
    phantom = make_phantom("molli", seed=3, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=10.0)
    truth = landmark_tre(phantom.landmarks, phantom.displacement, (3.0, 3.0))
    assert truth["overall"] < 0.01 and set(truth) == set(phantom.landmarks) | {"overall"}
    before = landmark_tre(phantom.landmarks, None, (3.0, 3.0))
    # no registration: the mean pairwise distance of the raw positions (the motion itself)
    raw = phantom.landmarks["lv_centre"] * 3.0
    n = len(raw)
    expected = np.mean([np.linalg.norm(raw[i] - raw[j]) for i in range(n) for j in range(i + 1, n)])
    assert before["lv_centre"] == pytest.approx(expected, rel=1e-6)
    assert before["overall"] > 2.0


def test_tre_skips_missing_points_and_checks_shapes():
    points = np.array([[10.0, 10.0], [np.nan, np.nan], [13.0, 14.0]])
    assert landmark_tre({"a": points}, None, (2.0, 2.0))["a"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        landmark_tre({"a": np.zeros((3, 3))})


def test_alignment_score_does_not_depend_on_the_intensity_scale():
    from napari_any2reg.core.metrics import alignment_score

    phantom = make_phantom("molli", seed=2, shape=(48, 48))
    frames = phantom.sequence.frames.astype(np.float64)
    reference = alignment_score(frames)
    assert 0.5 < reference < 1.0
    # a fixed epsilon in the normalisation used to turn data ~1e-30 into noise (score ~0)
    for scale in (1e-30, 1e-150, 1e30, 1e150):
        assert alignment_score(frames * scale) == pytest.approx(reference, rel=1e-9)
    # a frame constant in the ROI contributes nothing instead of dividing by zero
    flat = frames.copy()
    flat[0] = 7.0
    assert np.isfinite(alignment_score(flat)) and alignment_score(flat) < reference
