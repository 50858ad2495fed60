"""Model files: shipped weights, training checkpoints, ``best.pt``, weight averages and their
manifest, read and written in one place.

* :func:`read_model_file` is the package's only ``torch.load`` (``weights_only=True``: tensors
  and plain containers, never arbitrary pickled objects), :func:`write_model_file` its only
  ``torch.save`` (atomic: an interrupted write never leaves a torn file);
* shipped weights (``weights/``, packaged as ``napari_any2reg/weights``) are listed in
  ``weights/manifest.json`` with their SHA-256 and checked against it before they are used
  (:func:`load_weights`, :func:`weights_problem`);
* :class:`RunFolder` keeps a training run's ``checkpoint.pt``, ``best.pt`` and
  ``train_log.jsonl`` for the loop of :mod:`napari_any2reg.core.training` (which reads and
  writes no file itself);
* :class:`ModelFiles` serves the any2reg engines: installed as the weights source of
  :mod:`napari_any2reg.core.weights` when the package is imported, so
  ``register(seq, engine="any2reg")`` finds the default weights.

Every failure is a :class:`~napari_any2reg.core.weights.WeightsError` (or, for a file that is
not an any2reg training file, a ``ValueError``) naming the file and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.weights import LoadedWeights, WeightsError

__all__ = [
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "LOG_NAME",
    "MANIFEST",
    "read_model_file",
    "write_model_file",
    "sha256_of",
    "weights_dir",
    "read_manifest",
    "record_in_manifest",
    "load_weights",
    "weights_problem",
    "load_network",
    "load_training_file",
    "run_file",
    "read_log",
    "RunFolder",
    "ModelFiles",
]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
LOG_NAME = "train_log.jsonl"
MANIFEST = "manifest.json"


# ====================================================================== one read, one write
def read_model_file(path: str | os.PathLike) -> Any:
    """The content of a ``.pt`` file (on the CPU), loaded with ``weights_only=True``.

    Raises
    ------
    WeightsError
        If the file does not exist or cannot be read as a PyTorch file (torch raises several
        types for a bad zip or pickle; the message names the file).
    """
    import torch

    from ._common.errors import special_file_kind

    path = Path(path)
    what = special_file_kind(path)
    if what is not None:  # a FIFO would block forever; "does not exist" would be false
        raise WeightsError(f"Weights file {path} is {what}, not a regular file; pass a best.pt / checkpoint.pt from "
                           "`any2reg train` or omit weights.")
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist; pass a best.pt / checkpoint.pt from `any2reg train` or omit weights.")
    damaged = _damaged_entry(path)
    if damaged is not None:
        raise WeightsError(
            f"Weights file {path} is damaged: {damaged} (its bytes changed after it was written: a disk, "
            "copy or download error); copy it again from its source, or use the shipped weights."
        )
    try:
        # everything we save is tensors and plain containers: no arbitrary unpickling
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Weights file {path} could not be read ({exc}).") from exc


def _damaged_entry(path: Path) -> str | None:
    """What of the zip archive ``path`` (torch's format) fails its CRC-32 check, else ``None``.

    Why: torch.load does not check the CRCs, so a flipped byte in a tensor loads silently and
    gives a slightly wrong field with exit 0. A file that is not a zip (torch's legacy format,
    not a checkpoint at all) is left to torch.load, which says what it is not.
    """
    import zipfile
    import zlib

    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        return f"its zip archive cannot be read ({exc})"
    return None if bad is None else f"its entry {bad!r} fails its CRC-32 check"


def write_model_file(path: str | os.PathLike, content: Any) -> Path:
    """Write ``content`` (tensors and plain containers) to ``path`` atomically, replacing it."""
    import torch

    from ._atomic import atomic_write

    return atomic_write(Path(path), lambda p: torch.save(content, p), overwrite=True)


def _write_text(path: Path, text: str) -> Path:
    from ._atomic import atomic_write

    return atomic_write(path, lambda p: Path(p).write_text(text), overwrite=True)


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ====================================================================== shipped weights
def weights_dir() -> Path:
    """The installed ``weights`` folder (package resource, or the repository root in a checkout)."""
    packaged = Path(str(resources.files("napari_any2reg") / "weights"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "weights"


def read_manifest(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``manifest.json`` of a weights folder (``{}`` when the folder ships none yet)."""
    directory = Path(directory) if directory is not None else weights_dir()
    path = directory / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable weights manifest ({exc}); reinstall napari-any2reg.") from exc


def record_in_manifest(weights_file: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Add (or replace) the entry of ``weights_file`` in its folder's ``manifest.json`` (atomically)."""
    weights_file = Path(weights_file)
    manifest = read_manifest(weights_file.parent)
    manifest[weights_file.name] = entry
    _write_text(weights_file.parent / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def load_weights(name: str, directory: str | os.PathLike | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify and load ``name`` from the weights folder.

    Returns
    -------
    (checkpoint, entry)
        The loaded content (on CPU) and its manifest entry (sha256, config, ...).

    Raises
    ------
    WeightsError
        If the manifest has no entry for ``name``, the file is missing, or its SHA-256 differs
        from the manifest (a corrupted or altered file is never used).
    """
    directory = Path(directory) if directory is not None else weights_dir()
    return _load_verified(str(directory.resolve()), name)


def weights_problem(name: str, directory: str | os.PathLike | None = None) -> str | None:
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
    if not path.is_file() and entry.get("packaged", True) is False:
        raise WeightsError(
            f"Weights {name!r} are kept in the napari-any2reg source repository only (earlier weights, for "
            "benchmarks and history), not in the installed package; omit weights to use the default, or use a "
            "checkout of the repository (weights/README.md says how to rebuild them)."
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
    try:
        checkpoint = read_model_file(folder / name)
    except WeightsError as exc:
        raise WeightsError(f"{exc} Reinstall napari-any2reg.") from exc
    return checkpoint, entry


class ModelFiles:
    """The weights source of the any2reg engines (:class:`napari_any2reg.core.weights.WeightsSource`):
    shipped files by name from :func:`weights_dir`, other files by path."""

    def shipped_names(self) -> tuple[str, ...]:
        try:
            return tuple(read_manifest())
        except WeightsError:
            return ()

    def is_path(self, weights: str) -> bool:
        return "/" in weights or "\\" in weights or Path(weights).is_file()

    def load(self, weights: str, shipped: bool) -> LoadedWeights:
        if shipped:
            checkpoint, entry = load_weights(weights)
            return LoadedWeights(checkpoint, f"weights/{weights}", entry.get("sha256"))
        path = Path(weights)
        checkpoint = read_model_file(path)
        sha = sha256_of(path)
        listed = read_manifest(path.parent).get(path.name)  # an exported weights folder lists its files
        if isinstance(listed, dict) and listed.get("sha256") and listed["sha256"] != sha:
            raise WeightsError(
                f"Weights file {path} has SHA-256 {sha}, but {path.parent / MANIFEST} lists "
                f"{listed['sha256']}: the file is damaged or was altered; use another copy."
            )
        return LoadedWeights(checkpoint, str(path), sha)

    def problem(self, name: str) -> str | None:
        return weights_problem(name)


# ====================================================================== training files
def run_file(source: str | os.PathLike) -> Path:
    """The training file a path names: itself, or in a run folder ``best.pt`` first, else ``checkpoint.pt``."""
    path = Path(source)
    if path.is_dir():
        path = path / BEST_NAME if (path / BEST_NAME).exists() else path / CHECKPOINT_NAME
    return path


def load_training_file(path: str | os.PathLike) -> dict[str, Any]:
    """A ``checkpoint.pt`` / ``best.pt`` / weights file's content (tensors and plain containers only)."""
    from ..core.training import check_training_data

    return check_training_data(read_model_file(path), path)


def load_network(path: str | os.PathLike, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a trained network from ``best.pt`` or ``checkpoint.pt`` (or a folder holding them;
    ``best.pt`` first): ``(net, info)``, see
    :func:`napari_any2reg.core.training.network_from_training_data`."""
    from ..core.training import network_from_training_data

    path = run_file(path)
    return network_from_training_data(load_training_file(path), device, source=path)


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries of a ``train_log.jsonl`` (or of the one in a run folder; a truncated last line is ignored)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return entries


class RunFolder:
    """A training run's folder (:class:`napari_any2reg.core.training.RunStore`): ``checkpoint.pt``,
    ``best.pt`` and ``train_log.jsonl``, each replaced atomically; log entries are appended."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.folder / CHECKPOINT_NAME
        self.best_path = self.folder / BEST_NAME
        self.log_path = self.folder / LOG_NAME
        self.checkpoint_name = str(self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        return read_model_file(self.checkpoint_path) if self.checkpoint_path.exists() else None

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def load_log(self) -> list[dict[str, Any]]:
        return read_log(self.log_path)

    def load_init_weights(self, source: str) -> dict[str, Any]:
        return read_model_file(source)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        write_model_file(self.checkpoint_path, state)

    def save_best(self, state: dict[str, Any]) -> None:
        write_model_file(self.best_path, state)

    def discard_best(self) -> None:
        if self.best_path.exists():
            self.best_path.unlink()

    def rewrite_log(self, entries: list[dict[str, Any]]) -> None:
        _write_text(self.log_path, "".join(json.dumps(e) + "\n" for e in entries))

    def append_log(self, entry: dict[str, Any]) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def write_record(self, record: dict[str, Any], name: str = "config.json") -> Path:
        """The run record (settings grouped as the config's groups), next to the checkpoint."""
        return _write_text(self.folder / name, json.dumps(record, indent=2) + "\n")

    def describe(self) -> dict[str, str | None]:
        return {"checkpoint": str(self.checkpoint_path),
                "best": str(self.best_path) if self.best_path.exists() else None,
                "log": str(self.log_path)}
