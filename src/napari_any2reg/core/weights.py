"""Shipped model weights: locate, verify (SHA-256) and load them once.

The weights live in the repository's ``weights/`` folder, which is packaged inside the wheel as
``napari_any2reg/weights`` (a symlink in the source tree). ``weights/manifest.json`` lists each
file with its SHA-256 and the configuration needed to rebuild the model; the model card
(``weights/README.md``) records the same hash for people.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

__all__ = ["WeightsError", "weights_dir", "sha256_of", "read_manifest", "load_weights", "weights_problem"]

MANIFEST = "manifest.json"


class WeightsError(RuntimeError):
    """Model weights are missing, altered or unreadable."""


def weights_dir() -> Path:
    """The installed ``weights`` folder (package resource, or the repository root in a checkout)."""
    packaged = Path(str(resources.files("napari_any2reg") / "weights"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "weights"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    """The ``manifest.json`` of a weights folder (``{}`` when the folder ships none yet)."""
    directory = Path(directory) if directory is not None else weights_dir()
    path = directory / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable weights manifest ({exc}); reinstall napari-any2reg.") from exc


def load_weights(name: str, directory: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify and load ``name`` from the weights folder.

    Returns
    -------
    (checkpoint, entry)
        The ``torch.load``-ed object (on CPU) and its manifest entry (sha256, config, ...).

    Raises
    ------
    WeightsError
        If the manifest has no entry for ``name``, the file is missing, or its SHA-256 differs
        from the manifest (a corrupted or altered file is never used).
    """
    directory = Path(directory) if directory is not None else weights_dir()
    return _load_verified(str(directory.resolve()), name)


def weights_problem(name: str, directory: Path | None = None) -> str | None:
    """What is wrong with the shipped weights ``name`` (missing, altered, unlisted), or ``None``.

    Hashes the file against the manifest without loading it and without caching, so it sees a
    file that changed since it was last loaded (``any2reg engines`` reports with it).
    """
    directory = Path(directory) if directory is not None else weights_dir()
    try:
        _verify(directory, name)
    except WeightsError as exc:
        return str(exc)
    return None


def _verify(folder: Path, name: str) -> dict[str, Any]:
    """The manifest entry of ``name`` once the file exists and its SHA-256 matches; else WeightsError."""
    entry = read_manifest(folder).get(name)
    path = folder / name
    if entry is None:
        raise WeightsError(
            f"No weights named {name!r} are listed in {folder / MANIFEST}; this installation "
            "ships no trained model for that engine. Reinstall napari-any2reg, or use a "
            "classical engine (groupwise, xcoreg)."
        )
    if not path.is_file():
        raise WeightsError(
            f"Weights file {path} is missing; reinstall napari-any2reg (the wheel ships it), "
            "or use a classical engine (groupwise, xcoreg)."
        )
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise WeightsError(f"Weights file {path} cannot be read ({exc.strerror or exc}); check its permissions or reinstall napari-any2reg.") from exc
    if actual != entry.get("sha256"):
        raise WeightsError(
            f"Weights file {path} has SHA-256 {actual}, but the manifest expects "
            f"{entry.get('sha256')}: the file is corrupted or was altered. Reinstall napari-any2reg."
        )
    return dict(entry)


@functools.lru_cache(maxsize=8)
def _load_verified(directory: str, name: str):
    # cached: the first use of an engine loads its weights once per process
    folder = Path(directory)
    entry = _verify(folder, name)
    path = folder / name
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad pickle/zip
        raise WeightsError(f"Weights file {path} could not be read ({exc}); reinstall napari-any2reg.") from exc
    return checkpoint, entry
