"""What a training run's files hold, as objects: the checkpoint and weights formats, the
shippable weights payload, the weight average ("model soup") and the manifest entry.

No file is read or written here: :mod:`napari_any2reg.io.model_io` loads and saves these
dictionaries (one ``torch.load`` site, ``weights_only=True``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..network import Any2RegNet, networks_from_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "WEIGHTS_FORMAT",
    "FORMAT_VERSION",
    "check_training_data",
    "network_from_training_data",
    "weights_payload",
    "average_payloads",
    "manifest_entry",
]

CHECKPOINT_FORMAT = "any2reg-training-checkpoint"
WEIGHTS_FORMAT = "any2reg-weights"
FORMAT_VERSION = 1


def check_training_data(data: Any, source: Any) -> dict[str, Any]:
    """``data`` when it is a training checkpoint or weights file's content, else ``ValueError``
    naming ``source``."""
    if not isinstance(data, dict) or data.get("format") not in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        raise ValueError(f"{source} is not an any2reg training checkpoint or weights file")
    return data


def network_from_training_data(data: dict[str, Any], device: str | torch.device = "cpu", *,
                               source: Any = "the file") -> tuple[Any2RegNet, dict[str, Any]]:
    """The network of a loaded ``best.pt`` / ``checkpoint.pt`` / weights file.

    Returns ``(net, info)`` with ``net`` in eval mode on ``device`` and ``info`` holding
    ``training_spacing_mm`` (pass it to :func:`core.network.predict`), ``training_shape``,
    ``step``, ``validation``, ``config``, ``path`` (``source``) and ``scorer`` (the AdaCS
    :class:`~core.network.CorrespondenceScorer` in eval mode, or ``None`` when the file has none).
    """
    check_training_data(data, source)
    net, scorer = networks_from_checkpoint(data, device)
    info = {
        "scorer": scorer,
        "training_spacing_mm": tuple(data["config"]["spacing_mm"]),
        "training_shape": tuple(data["config"]["shape"]),
        "step": data["step"],
        "validation": data.get("validation") or data.get("last_validation"),
        "config": data["config"],
        "path": str(source),
    }
    return net, info


def weights_payload(data: dict[str, Any], scorer_data: dict[str, Any] | None = None, *,
                    source: Any = "the checkpoint") -> dict[str, Any]:
    """The shippable weights of a training file: network (and AdaCS scorer) state in float32.

    Parameters
    ----------
    data : dict
        The loaded content of ``best.pt`` / ``checkpoint.pt``.
    scorer_data : dict, optional
        Another training file to take the scorer from (default: ``data``).
    source : str
        Named in the error when the scorer is missing.

    Only the state dicts, configs and validation numbers are kept: no optimiser state, so the
    file is ~1 MB. :func:`napari_any2reg.pipeline.training.export_weights` writes it.
    """
    scorer_data = data if scorer_data is None else scorer_data
    if scorer_data.get("scorer_state") is None:
        raise ValueError(
            f"{source} holds no AdaCS scorer (was it saved before the scorer started?); "
            "pass scorer_source=<a later checkpoint.pt>"
        )
    return {
        "format": WEIGHTS_FORMAT,
        "version": FORMAT_VERSION,
        "step": _step_or_none(data.get("step")),  # None: a weight average (no single step)
        "model_state": {k: v.float() if v.is_floating_point() else v for k, v in data["model_state"].items()},
        "net_config": data["net_config"],
        "scorer_state": {k: v.float() if v.is_floating_point() else v for k, v in scorer_data["scorer_state"].items()},
        "scorer_config": scorer_data["scorer_config"],
        "scorer_step": _step_or_none(scorer_data.get("scorer_step", scorer_data.get("step"))),
        "config": data["config"],
        "training_spacing_mm": list(data["config"]["spacing_mm"]),
        "validation": data.get("validation") or data.get("last_validation"),
    }


def _step_or_none(step: Any) -> int | None:
    return None if step is None else int(step)


def average_payloads(payloads: list[dict[str, Any]], weights: list[float] | None = None) -> dict[str, Any]:
    """The weight average ("model soup") of :func:`weights_payload` dicts of one network.

    Fine-tuning runs that start from one another stay in one basin of the loss, so the mean of
    their parameters is a network too, and it often sits past the trade-off the runs trace one
    by one (here: invented motion against accuracy; see ``weights/README.md``). Network and
    scorer states are averaged (float tensors; integer buffers are taken from the first);
    configurations must agree.

    Parameters
    ----------
    payloads : list of dict
        At least two :func:`weights_payload` results.
    weights : list of float, optional
        Relative weight of each (default: uniform).

    Returns
    -------
    A payload like :func:`weights_payload`'s with ``step`` ``None``, ``validation`` ``None``
    (an average has not been through a run's validation) and ``averaged_from`` (each source's
    step, scorer step and weight); ``config`` is the first payload's.
    """
    if len(payloads) < 2:
        raise ValueError(f"averaging needs at least two weights files; got {len(payloads)}")
    weights = [1.0] * len(payloads) if weights is None else [float(w) for w in weights]
    if len(weights) != len(payloads) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("weights must be one non-negative number per file, not all zero")
    first = payloads[0]
    for key in ("net_config", "scorer_config", "training_spacing_mm"):
        for other in payloads[1:]:
            if other.get(key) != first.get(key):
                raise ValueError(f"cannot average networks with different {key}: {first.get(key)} vs {other.get(key)}")
    total = sum(weights)

    def mean_state(key: str) -> dict[str, torch.Tensor]:
        states = [p[key] for p in payloads]
        return {name: (sum(w * st[name].float() for w, st in zip(weights, states)) / total) if tensor.is_floating_point() else tensor
                for name, tensor in states[0].items()}

    averaged = dict(first)
    averaged.update(
        step=None,
        scorer_step=None,
        model_state=mean_state("model_state"),
        scorer_state=mean_state("scorer_state"),
        validation=None,
        averaged_from=[{"step": p.get("step"), "scorer_step": p.get("scorer_step"), "weight": w / total}
                       for p, w in zip(payloads, weights)],
    )
    return averaged


def manifest_entry(payload: dict[str, Any], *, sha256: str, n_bytes: int, description: str = "") -> dict[str, Any]:
    """The ``weights/manifest.json`` entry of a written :func:`weights_payload` (validation without
    the per-sequence numbers)."""
    validation = payload["validation"]
    return {
        "sha256": sha256,
        "bytes": int(n_bytes),
        "format": WEIGHTS_FORMAT,
        "step": payload["step"],
        "scorer_step": payload["scorer_step"],
        "net_config": payload["net_config"],
        "scorer_config": payload["scorer_config"],
        "training_spacing_mm": payload["training_spacing_mm"],
        "validation": None if validation is None else {k: v for k, v in validation.items() if k != "per_sequence"},
        "config": payload["config"],
        "description": description,
        **({"averaged_from": payload["averaged_from"]} if payload.get("averaged_from") else {}),
    }


