"""The two shared real cardiac slices load and register; alignment improves.

Skipped cleanly when ../shared (beside the repository) is absent.
"""

from pathlib import Path

import numpy as np
import pytest

from napari_any2reg.core.metrics import alignment_score
from napari_any2reg.core.registration import register
from napari_any2reg.io import read_sequence

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
CASES = [("stone_0138_slice4_t1map.nii.gz", 11), ("acdc_patient101_slice3_cine.nii.gz", 30)]


@pytest.mark.slow
@pytest.mark.parametrize("name, n_frames", CASES)
@pytest.mark.parametrize("engine", ["groupwise", "xcoreg"])
def test_real_slice_registers_and_alignment_improves(name, n_frames, engine):
    path = REAL / name
    if not path.exists():
        pytest.skip("../shared/data/real is absent")
    sequence = read_sequence(path)
    assert sequence.n_frames == n_frames
    result = register(sequence, engine=engine, device="cpu", iterations_scale=0.5)
    assert np.isfinite(result.registered).all()
    assert result.folding_percent < 0.5
    before, after = alignment_score(sequence.frames), alignment_score(result.registered)
    assert after > before, f"{engine} on {name}: alignment {before:.4f} -> {after:.4f}"
