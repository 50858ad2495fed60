"""The shipped network: which weights file is the default, :class:`Pretrained` (the network, its
AdaCS scorer and their provenance) and :func:`load_pretrained`, which loads a shipped or given
file once per process and device through the io layer's weights source and refuses a damaged
one."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch

from ...network import Any2RegNet, CorrespondenceScorer, networks_from_checkpoint
from ...weights import WeightsError, weights_source


#: The shipped weights file used by default.
DEFAULT_WEIGHTS = "any2reg-v13.pt"
#: Test-time orientations of the network pass (see :func:`core.network.predict`). Two (the
#: frames as given and flipped left-right, fields mapped back and averaged): on the validation
#: set (motion-free MOLLI phantoms seeds 10000-10003 and training-base real slices; moved
#: phantoms and real slices with 10 / 25 mm known motion) any2reg-v6 invents 13 % less motion
#: (mean 0.301 -> 0.261 mm) at the same accuracy (median EPE ratio 0.303 -> 0.301) for 1.4x
#: the network time; four passes add little more (0.254 mm, 0.298) for 2.6x.
DEFAULT_ORIENTATIONS = 2
#: Orientations of the passes at the working grid after a coarse pass (``None``: as
#: :data:`DEFAULT_ORIENTATIONS`; chosen on the validation set, see
#: :func:`.passes.orientations_per_pass`).
DEFAULT_FINE_PASS_ORIENTATIONS = 1


class Pretrained:
    """A loaded network with its scorer and provenance."""

    def __init__(self, net: Any2RegNet, scorer: CorrespondenceScorer | None, info: dict[str, Any]):
        self.net = net
        self.scorer = scorer
        self.info = info

    @property
    def training_spacing_mm(self) -> tuple[float, float]:
        return tuple(self.info["training_spacing_mm"])


def shipped_weights_name(weights: str | Path | None) -> str | None:
    """The manifest name of a shipped weights file given by name (``"any2reg-v1"`` or
    ``"any2reg-v1.pt"``); ``None`` for the default, for paths and for unknown names."""
    if weights is None:
        return DEFAULT_WEIGHTS
    text = str(weights)
    source = weights_source()
    if source.is_path(text):
        return None
    names = source.shipped_names()
    for name in (text, f"{text}.pt"):
        if name in names:
            return name
    return None


#: No trained weight comes near this (the shipped files: |w| < 3); a file beyond it is damaged.
_MAX_ABS_WEIGHT = 1e6


def _check_tensors(checkpoint: dict[str, Any]) -> None:
    """ValueError naming the first network tensor that holds NaN / Inf or an implausible value:
    a damaged file must not reach the network (NaN fields, a LinAlgError in the aggregation,
    or a field of 1e31 px)."""
    for group in ("model_state", "scorer_state"):
        state = checkpoint.get(group)
        if state is None:
            continue
        if not isinstance(state, dict):
            raise ValueError(f"its {group} is a {type(state).__name__}, not a state dictionary")
        for key, value in state.items():
            if not torch.is_tensor(value) or not value.is_floating_point() or value.numel() == 0:
                continue
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"tensor {group}[{key!r}] holds NaN or Inf: the file is damaged; use another copy")
            largest = float(value.abs().max())
            if largest > _MAX_ABS_WEIGHT:
                raise ValueError(f"tensor {group}[{key!r}] holds {largest:.3g}, far beyond any trained weight: "
                                 "the file is damaged; use another copy")


@functools.lru_cache(maxsize=8)
def _load_cached(weights: str | None, device: str, shipped: str | None = None) -> Pretrained:
    dev = torch.device(device)
    # the io layer reads the file (and checks a shipped one's SHA-256): core reads no file
    checkpoint, source, sha = weights_source().load(shipped if shipped is not None else weights, shipped is not None)
    try:
        if not isinstance(checkpoint, dict):
            raise ValueError(f"holds a {type(checkpoint).__name__}, not an any2reg checkpoint")
        _check_tensors(checkpoint)
        net, scorer = networks_from_checkpoint(checkpoint, dev)  # strict: expected keys and shapes
        spacing = checkpoint.get("training_spacing_mm") or checkpoint["config"]["spacing_mm"]
        if len(spacing) != 2 or not all(math.isfinite(float(s)) and float(s) > 0 for s in spacing):
            raise ValueError(f"training spacing {spacing!r} is not two positive mm values")
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"Weights file {source}: {exc}") from exc
    info = {
        "weights": source,
        "sha256": sha,
        "step": checkpoint.get("step"),
        "training_spacing_mm": tuple(float(s) for s in spacing),
        "net_config": dict(checkpoint["net_config"]),
        "has_scorer": scorer is not None,
    }
    return Pretrained(net, scorer, info)


def load_pretrained(device: str | torch.device = "cpu", weights: str | Path | None = None) -> Pretrained:
    """The Any2Reg network (and AdaCS scorer) on ``device``, loaded once per process.

    ``weights``: ``None`` for the default shipped, hash-verified file; the name of another
    shipped file (``"any2reg-v1"``, kept for comparison; hash-verified too); or a path to
    ``best.pt`` / ``checkpoint.pt`` / an exported weights file.
    """
    dev = torch.device(device)
    shipped = shipped_weights_name(weights)
    if shipped is not None:
        return _load_cached(None, str(dev), shipped)
    return _load_cached(str(Path(weights).resolve()), str(dev))


def shipped_weights_available() -> bool:
    """Whether the default weights are installed, listed and intact (SHA-256 checked)."""
    return weights_source().problem(DEFAULT_WEIGHTS) is None
