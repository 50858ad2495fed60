"""Training runs on files: read the training data, write checkpoints and shippable weights.

The training loop is :func:`napari_any2reg.core.training.train` (numpy / torch only, no
file access). This layer gives it what lives in files:

* the unlabelled sequences of ``config.user_data_dir`` and the real sequences of
  ``config.real_data_paths`` (read with :func:`napari_any2reg.io.read_sequence`);
* the run folder (:class:`napari_any2reg.io.model_io.RunFolder`: ``checkpoint.pt``,
  ``best.pt`` and ``train_log.jsonl``, written atomically, so an interrupted run never leaves
  a torn file) and the run record ``config.json`` (the settings grouped as the config's
  groups, and the command line);

and :func:`export_weights` / :func:`average_weights` turn runs into a shippable weights file
plus its ``manifest.json`` entry (through :mod:`napari_any2reg.io.model_io`). ``any2reg
train`` calls :func:`train`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["train", "read_user_sequences", "read_real_sequences", "export_weights", "average_weights", "RUN_RECORD"]

#: The run record of a training run folder (settings grouped as the config's groups).
RUN_RECORD = "config.json"


def read_user_sequences(folder: str | os.PathLike) -> tuple[list[Any], list[str]]:
    """The readable sequences of a folder (its top level), and the files skipped with why.

    Files the readers do not recognise are ignored; a recognised file that fails to read is
    reported in the second list rather than stopping the run.

    Raises
    ------
    ValueError
        If ``folder`` is not a folder.
    """
    from ..io import read_sequence, supported_path

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"user_data_dir {root} is not a folder")
    sequences, skipped = [], []
    for path in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        try:
            if not supported_path(path):
                continue
            sequences.append(read_sequence(path))
        except Exception as exc:  # unreadable files are reported, not fatal
            skipped.append(f"{path.name}: {' '.join(str(exc).split())}")
    return sequences, skipped


def read_real_sequences(paths: list[str] | tuple[str, ...]) -> list[Any]:
    """The real sequences used semi-synthetically (``config.real_data_paths``), in order."""
    from ..io import read_sequence

    return [read_sequence(path) for path in paths]


def train(config: Any, out_dir: str | os.PathLike, *, real_sequences: list[Any] | None = None,
          user_sequences: list[Any] | None = None, command: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`napari_any2reg.core.training.train` with its data read and its files written atomically.

    Parameters
    ----------
    config : TrainingConfig
    out_dir : path
        Folder for ``checkpoint.pt``, ``train_log.jsonl`` and ``best.pt``.
    real_sequences, user_sequences : list of Sequence, optional
        Already read; by default read from ``config.real_data_paths`` (when
        ``real_data_probability > 0``) and ``config.user_data_dir`` (when
        ``user_data_probability > 0``).
    command : list of str, optional
        The command line, kept in the run record ``OUT/config.json``.
    **kwargs
        ``resume``, ``progress``, ``cancel``, ``log`` as for the core function.

    Returns
    -------
    dict
        The core summary.
    """
    import torch

    from .._version import __version__
    from ..core.training import check_init_weights, run_record
    from ..core.training import train as train_loop
    from ..io.model_io import CHECKPOINT_NAME, RunFolder, read_model_file
    from ._requests import output_path

    out_dir = output_path(out_dir, "out_dir")
    if real_sequences is None and config.real_data_probability > 0:
        real_sequences = read_real_sequences(config.real_data_paths)
    if user_sequences is None and config.user_data_dir and config.user_data_probability > 0:
        user_sequences, _ = read_user_sequences(config.user_data_dir)
    resuming = kwargs.get("resume", True) and (Path(out_dir) / CHECKPOINT_NAME).exists()
    if config.init_weights and not resuming:
        # checked before the run folder is made (the loop checks again when it loads them):
        # damaged weights must leave nothing behind, not an empty run with its config.json
        check_init_weights(read_model_file(config.init_weights), config.init_weights)
    store = RunFolder(out_dir)
    record = {"version": __version__, "command": None if command is None else list(command), **run_record(config)}
    store.write_record(record, RUN_RECORD)
    try:
        return train_loop(config, store, real_sequences=real_sequences, user_sequences=user_sequences, **kwargs)
    except torch.linalg.LinAlgError as exc:
        # the network's output broke a linear-algebra step (the PCA weights' eigh on NaN or
        # enormous features): a property of the settings or weights, not a bug to trace back
        entries = store.load_log()
        step = int(entries[-1]["step"]) + 1 if entries else 1
        raise ValueError(
            f"training failed at step {step}: the network's output is not usable (a linear-algebra step "
            f"failed: {' '.join(str(exc).split())[:160]}); try a smaller learning rate, other initial weights "
            f"or none, and check the other settings"
        ) from exc


def export_weights(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    scorer_source: str | os.PathLike | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Write a training run's network (and AdaCS scorer) as a shippable weights file.

    Parameters
    ----------
    source : path
        ``best.pt`` or ``checkpoint.pt`` (or a run folder: ``best.pt`` first).
    destination : path
        The weights file to write (e.g. ``weights/any2reg-v1.pt``); its folder's
        ``manifest.json`` gets (or updates) the entry for this file name.
    scorer_source : path, optional
        Take the scorer from this file instead (e.g. the final ``checkpoint.pt`` when the best
        network was saved before the scorer finished its warm-up).
    description : str
        Free text kept in the manifest.

    Returns
    -------
    The manifest entry (``sha256``, ``bytes``, ``net_config``, ``scorer_config``, ``step``,
    ``training_spacing_mm``, ``validation``, ``config``, ``description``).

    Only the state dicts (float32), configs and validation numbers are kept
    (:func:`~napari_any2reg.core.training.weights_payload`). Both files are written atomically.
    """
    from ..core.training import weights_payload
    from ..io.model_io import load_training_file, run_file

    src = run_file(source)
    data = load_training_file(src)
    scorer_data = load_training_file(scorer_source) if scorer_source is not None else None
    payload = weights_payload(data, scorer_data, source=scorer_source or src)
    return _write_weights(payload, destination, description)


def _write_weights(payload: dict[str, Any], destination: str | os.PathLike, description: str) -> dict[str, Any]:
    """Write a weights payload atomically and record it in its folder's manifest."""
    from ..core.training import manifest_entry
    from ..io.model_io import record_in_manifest, sha256_of, write_model_file

    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_model_file(dest, payload)
    entry = manifest_entry(payload, sha256=sha256_of(dest), n_bytes=dest.stat().st_size, description=description)
    record_in_manifest(dest, entry)
    return entry


def average_weights(
    sources: list[str | os.PathLike],
    destination: str | os.PathLike,
    *,
    weights: list[float] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Write the weight average of training runs of one network as a shippable weights file.

    Parameters
    ----------
    sources : list of path
        ``checkpoint.pt`` / ``best.pt`` / weights files (or run folders), at least two, of
        the same network configuration (typically fine-tuning runs chained from one another).
    destination : path
        The weights file to write; its folder's ``manifest.json`` gets the entry, with each
        source's file name, SHA-256, step and weight under ``averaged_from``.
    weights : list of float, optional
        Relative weight of each source (default: uniform).
    description : str
        Free text kept in the manifest.

    Returns
    -------
    The manifest entry. See :func:`napari_any2reg.core.training.average_payloads`.
    """
    from ..core.training import average_payloads, weights_payload
    from ..io.model_io import load_training_file, run_file, sha256_of

    files = [run_file(source) for source in sources]
    payloads = [weights_payload(load_training_file(f), source=f) for f in files]
    payload = average_payloads(payloads, weights)
    for record, f in zip(payload["averaged_from"], files):
        record.update(file=f"{Path(f).parent.name}/{Path(f).name}", sha256=sha256_of(f))
    return _write_weights(payload, destination, description)
