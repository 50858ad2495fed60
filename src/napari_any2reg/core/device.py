"""Choosing the torch device: CUDA when present, else CPU, and saying which."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "describe_device", "DEVICE_CHOICES"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:1"``) into a :class:`torch.device`.

    ``"auto"`` picks CUDA when a GPU is visible, else CPU. Asking for CUDA on a machine without
    one is an error rather than a silent fall-back, so a user never reads CPU timings as GPU ones.
    """
    if isinstance(device, torch.device):
        chosen = device
    else:
        name = (device or "auto").strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            chosen = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"Unknown device {device!r}; use auto, cpu or cuda.") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no GPU is available; use --device cpu or auto.")
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"Unsupported device {device!r}; use auto, cpu or cuda.")
    return chosen


def describe_device(device: str | torch.device | None = "auto") -> str:
    """Human-readable name, e.g. ``"cpu (2 threads)"`` or ``"cuda:0 (NVIDIA H100)"``."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"
