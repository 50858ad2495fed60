"""Choose the default number of test-time orientations of the shipped network.

Uses only the training run's own validation phantoms (anatomy seeds 10000-10005, the six
validation kinds, and the motion-free MOLLI seed 10010), at the resolution users scan at
(192 x 192, 1.5 mm) -- never the held-out real data. Writes orientations.json beside it.

    python training/any2reg-v2/choose_orientations.py WEIGHTS
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_any2reg.core.metrics import relative_epe
from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.core.registration import register

torch.set_num_threads(2)
weights = sys.argv[1]
kinds = ("molli", "stone", "sasha", "cine", "asl", "perfusion")
moving = [make_phantom(k, seed=10000 + i, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=10.0, snr=40.0) for i, k in enumerate(kinds)]
still = make_phantom("molli", seed=10010, shape=(192, 192), spacing_mm=(1.5, 1.5), motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0, snr=40.0)
rows = {}
for orientations in (1, 2, 4):
    ratios, seconds = [], []
    for ph in moving:
        start = time.perf_counter()
        u = register(ph.sequence, engine="any2reg", device="cpu", weights=weights, orientations=orientations).displacement
        seconds.append(time.perf_counter() - start)
        e0 = relative_epe(np.zeros_like(u), ph.displacement, ph.heart_mask, spacing_mm=(1.5, 1.5))
        ratios.append(relative_epe(u, ph.displacement, ph.heart_mask, spacing_mm=(1.5, 1.5)) / e0)
    u = register(still.sequence, engine="any2reg", device="cpu", weights=weights, orientations=orientations).displacement
    rows[orientations] = {"epe_ratio": float(np.mean(ratios)), "still_mm": relative_epe(u, np.zeros_like(u), still.heart_mask, spacing_mm=(1.5, 1.5)),
                          "seconds_median": float(np.median(seconds))}
    print(orientations, rows[orientations], flush=True)
Path(__file__).with_name("orientations.json").write_text(json.dumps(rows, indent=2) + "\n")
