"""Choosing the torch device: CUDA when present, else CPU, and saying which."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from typing import Iterator

import torch

from .vocabulary import arg

__all__ = ["resolve_device", "describe_device", "cuda_available", "DEVICE_CHOICES", "default_cpu_threads", "cpu_threads",
           "max_cpu_threads", "check_threads"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether torch can use a CUDA GPU; ``False`` also when torch cannot tell.

    A broken driver or CUDA install makes ``torch.cuda.is_available()`` raise on some systems:
    that machine has no usable GPU, and must still register on the CPU.
    """
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


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
            return torch.device("cuda" if cuda_available() else "cpu")
        try:
            chosen = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"Unknown device {device!r}; use auto, cpu or cuda.") from exc
    if chosen.type == "cuda" and not cuda_available():
        raise ValueError(f"CUDA was requested but no GPU is available; use {arg('device', 'cpu')} or {arg('device', 'auto')}.")
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


def default_cpu_threads() -> int:
    """torch CPU threads for one registration when the caller names none: the cores this
    process may use that other work is not already using (1-minute load average), at least 1.

    Why not torch's default (every core): on this project's 2-core machine two threads make
    ``any2reg`` about 1.6x faster than one when idle (``benchmarks/results/fullres_speed_cpu.md``:
    1.35 s vs 2.19 s), but oversubscribed threads cost 4-14x when the other core is busy
    (threads wait on each other at every barrier). The load average tells the two apart cheaply. An explicit
    ``OMP_NUM_THREADS`` wins: the user has decided.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, torch.get_num_threads())
    cores = _usable_cores()
    busy = _other_runnable_tasks()
    return max(1, min(cores, int(cores - busy + 0.5)))


def _usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask on Linux, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


#: Threads allowed per usable core: more only makes threads wait on each other at every barrier.
THREADS_PER_CORE_MAX = 4


def max_cpu_threads() -> int:
    """The most torch CPU threads a call may ask for: 4 x the cores this process may use.

    Why a bound: OpenMP allocates a stack per thread up front, so ``threads=10**9`` is not a
    slow run but a dead process (libgomp out of memory), and ``inf`` overflows inside torch.
    """
    return THREADS_PER_CORE_MAX * _usable_cores()


def check_threads(threads: object, name: str = "threads") -> int:
    """``threads`` as an int when it is a whole number from 1 to :func:`max_cpu_threads`, else
    a :class:`ValueError` naming the option ``name`` as the interface in charge spells it."""
    limit = max_cpu_threads()
    number = float(threads) if isinstance(threads, numbers.Real) else math.nan  # "2": not a number
    if isinstance(threads, bool) or not math.isfinite(number) or number != int(number) or not 1 <= number <= limit:
        raise ValueError(
            f"{arg(name)} must be a whole number >= 1 and at most {limit} ({THREADS_PER_CORE_MAX} x the "
            f"{_usable_cores()} CPU core(s) this process may use); got {threads!r}."
        )
    return int(number)


def _other_runnable_tasks() -> float:
    """Tasks running or ready to run now besides the caller: the instantaneous count of
    ``/proc/loadavg`` minus this one. Not the 1-minute average: that includes this process's
    own earlier work, and made a registration right after another one pick 1 thread on an
    otherwise idle machine (``benchmarks/results/fullres_speed_cpu.md``)."""
    try:
        with open("/proc/loadavg") as handle:
            running = int(handle.read().split()[3].split("/")[0])
        return float(max(0, running - 1))
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` torch CPU threads (``None``: :func:`default_cpu_threads`),
    restoring the previous number afterwards; yields the number used."""
    if threads is None:
        threads = default_cpu_threads()
    threads = check_threads(threads)
    previous = torch.get_num_threads()
    if int(threads) != previous:
        torch.set_num_threads(int(threads))
    try:
        yield int(threads)
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
