"""The coarse stage on large motion — validation material only (never bench_real's held-out split).

For each case the network's field with the coarse translation as starting point, without it,
and what the ``any2reg`` engine keeps (the one its own objective prefers, see
``core.engines.any2reg._run``) are scored by the median relative EPE ratio in the heart /
organ ROI. Cases: MOLLI / STONE / SASHA phantoms of the validation seeds 10000-10003 with 20
and 30 mm breathing motion, and the two training-base real slices (kidney MOLLI z0, ACDC cine;
motion-free bases of ``benchmarks/validate_weights.py``) with 15-30 mm known motion, three
draws each. Cases where the coarse stage does not fire count in all three columns alike.

Usage::

    python benchmarks/validate_coarse.py [WEIGHTS] > benchmarks/results/validate_coarse.jsonl

Requires ``../shared/data/real``; about 4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_real import CASES, REAL  # noqa: E402
from validate_weights import CACHE, TRAINING_BASE, validation_cases  # noqa: E402

from napari_any2reg.core.engine_api import Progress  # noqa: E402
from napari_any2reg.core.engines.any2reg import _network_field, coarse_translation, load_pretrained  # noqa: E402
from napari_any2reg.core.intensity import normalise_intensities  # noqa: E402
from napari_any2reg.core.metrics import relative_epe  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.semisynthetic import add_rician_noise, breathing_motion, move_frames  # noqa: E402
from napari_any2reg.io import read_sequence  # noqa: E402


def large_motion_cases():
    """Labelled ``(name, sequence, true displacement, roi)`` with 15-30 mm motion."""
    cases = []
    for seed in (10000, 10001, 10002, 10003):
        for kind in ("molli", "stone", "sasha"):
            for amplitude in (20.0, 30.0):
                p = make_phantom(kind, seed=seed, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=amplitude, snr=40.0)
                cases.append((f"{kind} {seed} {amplitude:g} mm", p.sequence, p.displacement, p.heart_mask))
    validation_cases()  # makes sure the motion-free bases are cached
    for name in TRAINING_BASE:
        case = next(c for c in CASES if c.name == name)
        seq = read_sequence(REAL / case.file)
        roi = case.roi(seq.shape)
        base = np.clip(np.load(CACHE / f"{name.replace(' ', '_')}.npy"), 0, None)
        for amplitude in (15.0, 20.0, 25.0, 30.0):
            for draw in range(3):
                truth = breathing_motion(np.random.default_rng([98, int(amplitude), draw]), seq.n_frames, seq.shape,
                                         seq.spacing_mm, translation_mm=amplitude, rotation_deg=4.0, nonrigid_mm=1.5,
                                         centre_px=case.centre_px, decay_mm=70.0)
                moved = add_rician_noise(move_frames(base, truth), np.random.default_rng([7, draw]), 30.0)
                cases.append((f"{name} {amplitude:g} mm draw {draw}", seq.replace(frames=moved), truth, roi))
    return cases


def main(argv: list[str]) -> int:
    if not REAL.is_dir():
        print(f"{REAL} is absent: the validation set needs the real training-base slices", file=sys.stderr)
        return 1
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    weights = argv[0] if argv else None
    model = load_pretrained("cpu", weights)
    rows = []
    for label, seq, truth, roi in large_motion_cases():
        before = relative_epe(np.zeros_like(truth), truth, roi, spacing_mm=seq.spacing_mm)
        frames = torch.from_numpy(normalise_intensities(seq.frames))
        shift = coarse_translation(frames, spacing_mm=seq.spacing_mm, training_spacing_mm=model.training_spacing_mm)
        fired = bool(shift.any())
        ratio = {}
        for key, t in (("with_shift", shift if fired else None), ("without", None)):
            u, _ = _network_field(model, frames, t, spacing_mm=seq.spacing_mm, reference_frame=None, auxiliary_features=None,
                               orientations=2, progress=Progress())
            ratio[key] = relative_epe(u.numpy(), truth, roi, spacing_mm=seq.spacing_mm) / before
        result = register(seq, engine="any2reg", device="cpu", scores=False, weights=weights)
        ratio["engine"] = relative_epe(result.displacement, truth, roi, spacing_mm=seq.spacing_mm) / before
        row = {"case": label, "coarse_fired": fired, "kept_shift": bool(result.params["coarse_used"]),
               **{k: round(v, 4) for k, v in ratio.items()}, "losses": result.params.get("coarse_losses")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: round(statistics.median(r[k] for r in rows), 4) for k in ("with_shift", "without", "engine")}
    summary.update({f"{k}_mean": round(statistics.mean(r[k] for r in rows), 4) for k in ("with_shift", "without", "engine")})
    print(json.dumps({"summary": summary, "cases": len(rows), "fired": sum(r["coarse_fired"] for r in rows),
                      "kept_shift": sum(r["kept_shift"] for r in rows)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
