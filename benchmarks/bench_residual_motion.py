"""How much motion a registration left: the ``residual_motion`` check of the verdict, measured.

The verdict's "motion left" check (:func:`napari_any2reg.core.qc.verdict.residual_translation`)
aligns the registered frames once more by a rigid shift per frame and reads the gain in the
model-free alignment (PCA share). This benchmark is what its thresholds (0.02 "check", 0.05
"poor") were chosen from:

* MOLLI, STONE and SASHA phantoms (96 x 96 at 3 mm, seeds 20900-20902, motion-free and 8 mm),
  registered by the shipped ``any2reg`` and by an **untrained** checkpoint (the shipped file's
  network re-initialised at random, ``bench_verdict.untrained_weights``: it returns almost the
  identity, so the moved series stay moved);
* the real series of ``../shared/data/real`` as acquired (STONE, ACDC cine, kidney MOLLI z0 / z1),
  unregistered, registered by ``any2reg`` and by ``groupwise`` (skipped without ``../shared``).

Writes ``benchmarks/results/verdict_residual_motion.md`` and ``.json``. Run:
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_residual_motion.py`` (about 6 minutes on a
2-core CPU, one thread).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_verdict import PROTOCOLS, machine_description, untrained_weights  # noqa: E402
from napari_any2reg.core.phantom import make_phantom  # noqa: E402
from napari_any2reg.core.registration import register  # noqa: E402
from napari_any2reg.core.qc.verdict import VerdictThresholds, residual_translation  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
REAL_FILES = {"STONE": "stone_0138_slice4_t1map.nii.gz", "ACDC cine": "acdc_patient101_slice3_cine.nii.gz",
              "kidney MOLLI z0": "kidney_molli_mdreg_z0.tif", "kidney MOLLI z1": "kidney_molli_mdreg_z1.tif"}


def _row(case: str, registered_by: str, motion: str, frames: np.ndarray, spacing_mm, truth_error_mm=None) -> dict:
    found = residual_translation(frames, spacing_mm)
    row = {"case": case, "registered_by": registered_by, "motion": motion, "gain": found["gain"],
           "alignment": [found["alignment_registered"], found["alignment_shifted"]],
           "largest_shift": max(found["shift_per_frame"]), "unit": found["unit"], "true_error_mm": truth_error_mm}
    print(json.dumps(row), flush=True)
    return row


def collect(seeds: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        untrained = untrained_weights(Path(folder))
        for kind in PROTOCOLS:
            for s in range(seeds):
                for motion in (0.0, 8.0):
                    extra = {} if motion else {"rotation_deg": 0.0, "nonrigid_mm": 0.0}
                    phantom = make_phantom(kind, seed=20900 + s, shape=(96, 96), spacing_mm=(3.0, 3.0), motion_mm=motion,
                                           **extra)
                    seq = phantom.sequence
                    heart = np.asarray(phantom.common_labels) != 0
                    for name, options in (("any2reg", {}), ("untrained weights", {"weights": untrained})):
                        result = register(seq, engine="any2reg", device="cpu", **options)
                        error = np.hypot(*(result.displacement - phantom.displacement).transpose(1, 0, 2, 3))
                        rows.append(_row(f"{kind} seed {20900 + s}", name, f"{motion:g} mm", result.registered,
                                         seq.spacing_mm, round(float(error[:, heart].mean()) * 3.0, 3)))
    if REAL.is_dir():
        from napari_any2reg.io import read_sequence

        for case, file in REAL_FILES.items():
            seq = read_sequence(REAL / file)
            rows.append(_row(case, "unregistered", "as acquired", np.asarray(seq.frames, np.float32), seq.spacing_mm))
            for engine in ("any2reg", "groupwise"):
                result = register(seq, engine=engine, device="cpu")
                rows.append(_row(case, engine, "as acquired", result.registered, seq.spacing_mm))
    return rows


def to_markdown(data: dict) -> str:
    t = VerdictThresholds()
    lines = ["# Motion left after registration (the verdict's `residual_motion` check)", "",
             f"{data['seconds']:.0f} s on {data['machine']}. Thresholds: check gain > {t.residual_gain_check:g}, "
             f"poor > {t.residual_gain_poor:g} (`core/qc/verdict.py`). Gain: the PCA share (2 components, central box) "
             "of the registered frames after one more rigid shift per frame, minus before. Regenerate: "
             "`python benchmarks/bench_residual_motion.py`.", "",
             "## Summary", "", "| series | registered by | motion | cases | gain, min-max | largest shift, max | level |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        family = "phantoms" if "seed" in row["case"] else row["case"]
        groups.setdefault((family, row["registered_by"], row["motion"]), []).append(row)

    def level(gain: float) -> str:
        return "poor" if gain > t.residual_gain_poor else "check" if gain > t.residual_gain_check else "good"

    for (family, by, motion), group in groups.items():
        gains = [r["gain"] for r in group]
        levels = sorted({level(g) for g in gains})
        lines.append(f"| {family} | {by} | {motion} | {len(group)} | {min(gains):.4f}-{max(gains):.4f} | "
                     f"{max(r['largest_shift'] for r in group):.2f} {group[0]['unit']} | {', '.join(levels)} |")
    lines += ["", "## Every series", "", "| case | registered by | motion | gain | PCA share before -> after the shift | "
              "largest shift | true error in the heart (mm) |", "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        error = "—" if r["true_error_mm"] is None else f"{r['true_error_mm']:.2f}"
        lines.append(f"| {r['case']} | {r['registered_by']} | {r['motion']} | {r['gain']:.4f} | {r['alignment'][0]:.4f} -> "
                     f"{r['alignment'][1]:.4f} | {r['largest_shift']:.2f} {r['unit']} | {error} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="phantom seeds per protocol (default: %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verdict_residual_motion"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = collect(args.seeds)
    data = {"rows": rows, "seconds": time.perf_counter() - start, "machine": machine_description()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    text = to_markdown(data)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
