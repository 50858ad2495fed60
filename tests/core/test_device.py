"""core.device: choosing CUDA or CPU, saying which, and torch CPU threads."""

from __future__ import annotations

import pytest
import torch

from napari_any2reg.core.device import cpu_threads, cuda_available, describe_device, resolve_device


def _no_gpu(monkeypatch, *, broken: bool) -> None:
    def is_available():
        if broken:
            raise RuntimeError("CUDA driver initialization failed")
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)


@pytest.mark.parametrize("broken", [False, True], ids=["no-gpu", "broken-driver"])
def test_auto_falls_back_to_cpu_and_cuda_is_refused_with_the_fix(monkeypatch, broken):
    _no_gpu(monkeypatch, broken=broken)
    assert cuda_available() is False
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert describe_device("auto").startswith("cpu (")
    with pytest.raises(ValueError, match="no GPU is available.*device='cpu'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="no GPU is available"):
        resolve_device(torch.device("cuda", 0))


def test_unknown_devices_are_named():
    with pytest.raises(ValueError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="Unsupported device 'meta'"):
        resolve_device("meta")


def test_cpu_threads_sets_and_restores():
    before = torch.get_num_threads()
    with cpu_threads(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    for bad in (0, 1.5, True, float("inf"), float("nan"), 10**9, "2"):
        with pytest.raises(ValueError, match="whole number >= 1 and at most"):
            with cpu_threads(bad):
                pass
