"""Validation of a training run on held-out phantoms (anatomy seeds >= 10000, never drawn for
training): the score is the mean over them of ``relative_epe(predicted) / relative_epe(0)``
(1 = no better than doing nothing, 0 = perfect); the best network is the one with the lowest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import relative_epe
from ..network import Any2RegNet, predict
from ..phantom import make_phantom
from ..spatial import folding_fraction
from .config import TrainingConfig

__all__ = ["validation_phantoms", "validate", "spurious_motion_mm"]


def validation_phantoms(config: TrainingConfig) -> list[Any]:
    """The held-out phantoms (``validation_kinds[i]`` at ``validation_seeds[i]``, training grid)."""
    out = []
    for kind, seed in zip(config.validation_kinds, config.validation_seeds):
        out.append(
            make_phantom(kind, seed=seed, shape=config.shape, spacing_mm=config.spacing_mm,
                         motion_mm=config.validation_motion_mm, snr=config.validation_snr)
        )
    return out


def validate(net: Any2RegNet, phantoms: list[Any], spacing_mm: tuple[float, float]) -> dict[str, Any]:
    """Register each phantom with :func:`core.network.predict` and score it.

    Returns ``{"epe_ratio": mean over phantoms of relative_epe(pred) / relative_epe(0),
    "epe_mm": mean relative EPE (mm), "epe0_mm": mean with no registration,
    "folding_percent": mean % of folded pixels, "per_sequence": {...}}``.
    """
    per: dict[str, dict[str, float]] = {}
    for ph in phantoms:
        seq = ph.sequence
        u = predict(net, seq.frames, spacing_mm=None)
        e = relative_epe(u, ph.displacement, ph.heart_mask, spacing_mm=spacing_mm)
        e0 = relative_epe(np.zeros_like(ph.displacement), ph.displacement, ph.heart_mask, spacing_mm=spacing_mm)
        name = f"{seq.kind}-{seq.metadata.get('seed')}"
        per[name] = {
            "epe_mm": e,
            "epe0_mm": e0,
            "epe_ratio": e / max(e0, 1e-9),
            "folding_percent": 100.0 * folding_fraction(u),
        }
    values = list(per.values())
    return {
        "epe_ratio": float(np.mean([v["epe_ratio"] for v in values])),
        "epe_mm": float(np.mean([v["epe_mm"] for v in values])),
        "epe0_mm": float(np.mean([v["epe0_mm"] for v in values])),
        "folding_percent": float(np.mean([v["folding_percent"] for v in values])),
        "per_sequence": per,
    }


def spurious_motion_mm(net: Any2RegNet, config: TrainingConfig) -> float:
    """Relative motion (mm, in the heart) the network invents on a motion-free MOLLI phantom.

    The phantom (anatomy seed ``config.validation_still_seed``, SNR ``validation_snr``) has no
    motion at all, only the MOLLI contrast changes with their null crossings: every
    millimetre returned is harm done.
    """
    phantom = make_phantom("molli", seed=int(config.validation_still_seed), shape=config.shape, spacing_mm=config.spacing_mm,
                           motion_mm=0.0, rotation_deg=0.0, nonrigid_mm=0.0, snr=config.validation_snr)
    u = predict(net, phantom.sequence.frames, spacing_mm=None)
    return relative_epe(u, np.zeros_like(u), phantom.heart_mask, spacing_mm=config.spacing_mm)


