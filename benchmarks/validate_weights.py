"""Validation of candidate network weights — the set every shipped choice was made on.

Never the held-out split of ``bench_real.py`` (STONE, kidney z1): only phantoms of validation
anatomy seeds and the two training-base real slices (ACDC cine, kidney MOLLI z0).

* still: motion-free MOLLI phantoms (seeds 10000–10003, 192 x 192 at 1.5 mm, SNR 40) and the
  training-base slices pre-aligned by ``groupwise`` and regenerated motion-free
  (:func:`core.semisynthetic.motion_free_series`) + Rician noise SNR 30 — mean invented
  relative motion in the heart / organ ROI (mm);
* moved: MOLLI / STONE / SASHA phantoms (seeds 10000–10001) with 10 mm breathing motion and the
  training-base slices with 10 and 25 mm known motion — median relative EPE ratio;
* raw: the training-base slices as acquired — PCA share in the ROI, kidney T1-fit R² median.

Usage::

    python benchmarks/validate_weights.py SPEC [SPEC ...]

A SPEC is a shipped name (``any2reg-v10``), a weights / checkpoint path, or an engine
(``groupwise``, ``xcoreg``, ``any2reg-io``), optionally followed by ``@`` and a JSON dict of
engine options (``any2reg-v6@{"orientations": 1}``). One JSON line per SPEC goes to stdout. The
motion-free bases are cached in ``benchmarks/runs/bases`` (they cost one ``groupwise`` run each).
Requires ``../shared/data/real``.
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
from bench_real import CASES, REAL, _fit_quality  # noqa: E402

from napari_any2reg.core.metrics import alignment_score, relative_epe  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.semisynthetic import add_rician_noise, breathing_motion, motion_free_series, move_frames  # noqa: E402
from napari_any2reg.io import read_sequence  # noqa: E402

CACHE = Path(__file__).parent / "runs" / "bases"
TRAINING_BASE = ("kidney MOLLI z0", "ACDC cine")


def validation_cases():
    """``(cases, raw)``: labelled ``(name, sequence, true displacement, roi)`` and raw ``(name, sequence, roi)``."""
    cases, raw = [], []
    for seed in (10000, 10001, 10002, 10003):
        p = make_phantom("molli", seed=seed, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=0.0, rotation_deg=0.0,
                         nonrigid_mm=0.0, snr=40.0)
        cases.append((f"still molli {seed}", p.sequence, p.displacement, p.heart_mask))
    for seed in (10000, 10001):
        for kind in ("molli", "stone", "sasha"):
            p = make_phantom(kind, seed=seed, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=10.0, snr=40.0)
            cases.append((f"moved {kind} {seed}", p.sequence, p.displacement, p.heart_mask))
    CACHE.mkdir(parents=True, exist_ok=True)
    for case in (c for name in TRAINING_BASE for c in CASES if c.name == name):
        assert case.split == "training-base"
        seq = read_sequence(REAL / case.file)
        roi = case.roi(seq.shape)
        raw.append((case.name, seq, roi))
        cached = CACHE / f"{case.name.replace(' ', '_')}.npy"
        if not cached.exists():
            aligned = register(seq, engine="groupwise", device="cpu").registered
            np.save(cached, motion_free_series(seq.replace(frames=aligned), rank=2)[0])
        base = np.clip(np.load(cached), 0, None)
        zero = np.zeros((seq.n_frames, 2) + seq.shape, np.float32)
        cases.append((f"still {case.name}", seq.replace(frames=add_rician_noise(base, np.random.default_rng(5), 30.0)), zero, roi))
        for amplitude in (10.0, 25.0):
            truth = breathing_motion(np.random.default_rng([99, int(amplitude)]), seq.n_frames, seq.shape, seq.spacing_mm,
                                     translation_mm=amplitude, rotation_deg=4.0, nonrigid_mm=1.5, centre_px=case.centre_px,
                                     decay_mm=70.0)
            moved = add_rician_noise(move_frames(base, truth), np.random.default_rng(6), 30.0)
            cases.append((f"moved {case.name} {amplitude:g}", seq.replace(frames=moved), truth, roi))
    return cases, raw


def run(sequence, spec: str):
    """Register ``sequence`` as ``spec`` says (see the module docstring)."""
    name, _, extra = spec.partition("@")
    options = json.loads(extra) if extra else {}
    if name in ("groupwise", "xcoreg", "any2reg-io"):
        return register(sequence, engine=name, device="cpu", **options)
    return register(sequence, engine="any2reg", device="cpu", scores=False, weights=name, **options)


def main(specs: list[str]) -> int:
    if not specs:
        print(__doc__)
        return 2
    if not REAL.is_dir():
        print(f"{REAL} is absent: the validation set needs the real training-base slices", file=sys.stderr)
        return 1
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    cases, raw = validation_cases()
    for spec in specs:
        scores: dict[str, list[float]] = {"still": [], "moved": []}
        for _, sequence, truth, roi in cases:
            before = relative_epe(np.zeros_like(truth), truth, roi, spacing_mm=sequence.spacing_mm)
            after = relative_epe(run(sequence, spec).displacement, truth, roi, spacing_mm=sequence.spacing_mm)
            scores["still" if before == 0 else "moved"].append(after if before == 0 else after / before)
        raw_scores = {}
        for name, sequence, roi in raw:
            registered = run(sequence, spec).registered
            raw_scores[name] = round(alignment_score(registered, roi), 4)
            if sequence.timings_ms is not None:
                raw_scores[f"{name} R2"] = round(_fit_quality(sequence, registered, roi)["r2_median"], 4)
        print(json.dumps({"spec": spec, "still_mean_mm": round(statistics.mean(scores["still"]), 3),
                          "still": [round(v, 3) for v in scores["still"]],
                          "moved_median": round(statistics.median(scores["moved"]), 3),
                          "moved": [round(v, 3) for v in scores["moved"]], "raw": raw_scores}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
