"""Model weights as core sees them: the error type and the source the engines load from.

Core reads no file. The any2reg engines get their checkpoints from a :class:`WeightsSource`
(shipped weights by name, other files by path); :class:`napari_any2reg.io.model_io.ModelFiles`
is installed as the source when the package is imported (``napari_any2reg/__init__.py``, the
composition root), so ``register(seq, engine="any2reg")`` finds the default weights; a caller
(a test, another host) may install its own with :func:`install_weights_source`.

The shipped files live in the repository's ``weights/`` folder (packaged as
``napari_any2reg/weights``); ``weights/manifest.json`` lists each with its SHA-256, which the
io layer checks before any use.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

__all__ = ["WeightsError", "LoadedWeights", "WeightsSource", "install_weights_source", "weights_source"]


class WeightsError(RuntimeError):
    """Model weights are missing, altered or unreadable."""


class LoadedWeights(NamedTuple):
    """A loaded checkpoint (tensors and plain containers, on the CPU), where it came from
    (``weights/<name>`` or the path) and its SHA-256."""

    checkpoint: Any
    source: str
    sha256: str | None


class WeightsSource(Protocol):
    """Where the engines' weights come from."""

    def shipped_names(self) -> tuple[str, ...]:
        """The file names of the shipped weights (the manifest's entries)."""

    def is_path(self, weights: str) -> bool:
        """Whether ``weights`` names a file (a path) rather than shipped weights."""

    def load(self, weights: str, shipped: bool) -> LoadedWeights:
        """The shipped weights ``weights`` (hash-verified) or the file at path ``weights``;
        :class:`WeightsError` naming the file and the fix when it cannot be used."""

    def problem(self, name: str) -> str | None:
        """What is wrong with the shipped weights ``name`` (missing, altered, unlisted), or ``None``."""


_SOURCE: list[Any] = []  # [source] or [factory]: one slot


def install_weights_source(source: WeightsSource | Callable[[], WeightsSource]) -> None:
    """Make ``source`` (or the source ``factory()`` returns on first use) the engines' weights source."""
    _SOURCE[:] = [source]


def weights_source() -> WeightsSource:
    """The installed weights source; :class:`WeightsError` when none is installed."""
    if not _SOURCE:
        raise WeightsError("no weights source is installed; import napari_any2reg (it installs the package's "
                           "weights folder) or call napari_any2reg.core.weights.install_weights_source")
    source = _SOURCE[0]
    if not hasattr(source, "load"):  # a factory: build the source once, on first use
        source = source()
        _SOURCE[:] = [source]
    return source
