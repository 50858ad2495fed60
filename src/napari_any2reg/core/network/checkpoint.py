"""Rebuild the network (and its AdaCS scorer) from a saved state: weights file or training checkpoint."""

from __future__ import annotations

from typing import Any

import torch

from .any2reg_net import Any2RegNet
from .scoring import CorrespondenceScorer

__all__ = ["networks_from_checkpoint"]


def networks_from_checkpoint(
    checkpoint: dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[Any2RegNet, CorrespondenceScorer | None]:
    """``(net, scorer)`` in eval mode on ``device`` from a loaded checkpoint dictionary.

    The dictionary needs ``net_config`` and ``model_state``; ``scorer_state`` (with
    ``scorer_config``) is optional (``None`` scorer when absent).
    """
    if "net_config" not in checkpoint or "model_state" not in checkpoint:
        raise ValueError("not an any2reg weights file or training checkpoint (no net_config / model_state)")
    net = Any2RegNet(**checkpoint["net_config"])
    net.load_state_dict(checkpoint["model_state"])
    net.to(device).eval()
    scorer = None
    if checkpoint.get("scorer_state") is not None:
        scorer = CorrespondenceScorer(**(checkpoint.get("scorer_config") or {}))
        scorer.load_state_dict(checkpoint["scorer_state"])
        scorer.to(device).eval()
    return net, scorer
