"""What a run checks before it computes: the input, the export items, the landmarks, the
output files (never one the run reads), free disk space and the network's weights.

The orchestrators (:func:`.series.register_series`, :func:`.fit.fit_series`, the ECV, apply and
TRE commands) call these first, so a problem stops the run with one line that names the fix,
before any work and before any file is written. :mod:`.series` re-exports them (the names the
pipeline API has used).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable
from typing import Sequence as Seq

import numpy as np

from ..core.vocabulary import arg, interface

__all__ = [
    "read_input",
    "refuse_replacing_inputs",
    "scanner_map_files",
    "check_weights",
    "output_bytes",
    "fit_problem_for",
    "resolve_export_items",
    "read_landmarks_for",
]


def read_input(source: Any, **options: Any):
    """``read_sequence`` with its warnings kept in ``metadata["read_warnings"]`` only.

    Callers show them in their own form (one line each on the command line, a column in the
    batch summary), so the Python warnings are silenced here.
    """
    from ..io import SequenceReadWarning, read_sequence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SequenceReadWarning)
        return read_sequence(source, **options)


def refuse_replacing_inputs(targets: Seq[Path], inputs: Seq[Any]) -> None:
    """Never let an output (even with overwrite) replace a file this run reads.

    ``any2reg register out/registered.tif -o out --overwrite`` would otherwise replace the very
    data being processed (and a NIfTI input's JSON sidecar is as much input as the image).
    """
    from ..io._common import find_sidecar

    read: list[Path] = []
    for name in inputs:
        if name is None or isinstance(name, (list, tuple)) or not Path(name).is_file():
            continue
        read.append(Path(name))
        sidecar = find_sidecar(Path(name))
        if sidecar is not None:
            read.append(sidecar)
    for target in targets:
        if not target.is_file():
            continue
        for source in read:
            if os.path.samefile(target, source):
                alias = "" if Path(os.path.abspath(source)) == Path(os.path.abspath(target)) else f" (as {source})"
                raise ValueError(
                    f"{target} is also read by this run{alias}; writing the outputs there would "
                    "replace it. Choose another output folder or file name."
                )


def scanner_map_files(sequence: Any) -> dict[str, Callable[[Path], Any]]:
    """``{file name: writer(path)}`` of the scanner's own maps that the reader left out of the
    frames (``metadata["scanner_maps"]``, e.g. a Philips MOLLI's T1 MAP images): written beside
    the registration (``scanner_t1_map.tif``) so a reader can compare them with a fit after
    correction."""
    from ..io import save_map_tiff

    maps = sequence.metadata.get("scanner_maps") or {}
    files = {}
    for label, array in maps.items():
        stem = "_".join("".join(c if c.isalnum() else " " for c in label.lower()).split())
        files[f"{stem}.tif"] = (lambda p, a=np.asarray(array, np.float32), text=label:
                                save_map_tiff(p, a, sequence.spacing_mm, {"map": text, "source": "scanner (DICOM)"},
                                              axes="YX"))
    return files


def check_weights(device: str, weights: str | None) -> None:
    """Load the network the any2reg engines will use now, so a weights problem stops the run
    before any work, with one line that says what to do (the loaded network is cached, so a
    batch worker that calls this once serves every later series from memory)."""
    from ..core.device import resolve_device
    from ..core.engines.any2reg import load_pretrained, shipped_weights_name
    from ..core.weights import WeightsError

    device = resolve_device(device)
    if shipped_weights_name(weights) is not None:  # the default, or a shipped file by name
        load_pretrained(device, weights)  # its WeightsError already names the file and the fix
        return
    # the interface's words (core.vocabulary): --weights on the command line, weights= in Python
    named = arg("weights", str(weights))
    fix = f"pass a best.pt / checkpoint.pt written by 'any2reg train', or omit {arg('weights')} to use the shipped weights."
    from ..io._common.errors import special_file_kind

    what = special_file_kind(weights)
    if what is not None:  # a FIFO would block the loader forever; "no such file" would be false
        raise WeightsError(f"{named}: it is {what}, not a regular file; {fix}")
    import zipfile

    if Path(weights).is_file() and not zipfile.is_zipfile(weights):
        # torch's own message for this case is a page about weights_only that misleads
        raise WeightsError(f"{named}: not a PyTorch checkpoint (those are zip archives); {fix}")
    try:
        load_pretrained(device, weights)
    except Exception as exc:  # torch and the checkpoint layout raise many types for a wrong file
        if not Path(weights).is_file():
            raise WeightsError(f"{named}: no such file; {fix}") from exc
        cause = " ".join(str(exc).split())
        for spelling in {str(weights), str(Path(weights).resolve())}:
            cause = cause.replace(f"Weights file {spelling} ", "").replace(f"{spelling}: ", "").replace(spelling, "the file")
        cause = cause if len(cause) <= 160 else cause[:157] + "..."  # torch's messages run to pages
        if not isinstance(exc, WeightsError):
            cause = f"{type(exc).__name__}: {cause}"
        raise WeightsError(f"{named}: not a usable any2reg network ({cause}); {fix}") from exc


def output_bytes(sequence: Any, per_voxel: int, extra: int = 0) -> int:
    """Rough size of the outputs, to refuse a disk that cannot hold them before computing."""
    return sequence.n_frames * sequence.shape[0] * sequence.shape[1] * per_voxel + extra


def fit_problem_for(sequence: Any) -> str | None:
    """Why no T1 map can be fitted to ``sequence`` (``None``: it can)."""
    from ..core.mapping import T1_MODELS, fit_problem, model_for_kind

    model = model_for_kind(sequence.kind)
    if model is None:
        return f"no T1 model for a {sequence.kind!r} sequence (pass {arg('kind')} molli|stone|sasha if it is one)"
    quantity = T1_MODELS[model].quantity
    if quantity != "T1":  # the export's map items are T1 maps (t1_*.tif); T2 / T2* come from 'fit'
        return (f"a {sequence.kind!r} sequence gives a {quantity} map, not a T1 map: fit it from the registered "
                f"stack with 'any2reg fit registered.tif --model {model}' (or fit_t1(..., model={model!r}))")
    if sequence.timings_ms is None:
        return f"no inversion/saturation times (pass {arg('timings_ms')})"
    return fit_problem(sequence.timings_ms, sequence.n_frames, model)


def resolve_export_items(
    export: str | None, sequence: Any, *, landmarks_given: bool, input_label: str = "the input",
    engine: str | None = None,
) -> tuple[tuple[str, ...] | None, dict[str, str]]:
    """The export items requested, resolved against what this run can provide.

    Returns the items (``None`` without an export) and, for ``all``, the items left out and why
    (printed and kept in metrics.json). An item named explicitly whose input is missing is an
    error, raised here, before the registration runs.
    """
    from .export import EXPORT_ITEMS, MAP_ITEMS, parse_export_items

    if export is None:
        return None, {}
    requested = parse_export_items(export)
    if not requested:
        raise ValueError("--export needs 'all' or a comma-separated list of items.")
    no_fit = fit_problem_for(sequence)
    if requested == ("all",):
        skipped = {"dice": "needs labels of every frame; export from napari or with pipeline.export"}
        if not landmarks_given:
            skipped["landmarks"] = "no --landmarks CSV"
        if no_fit is not None:
            skipped.update(dict.fromkeys(MAP_ITEMS, f"no T1 fit possible: {no_fit}"))
        if engine is not None and not engine.startswith("any2reg"):
            skipped["uncertainty"] = f"the {engine} engine gives no per-pixel uncertainty (the network engines do)"
        return tuple(item for item in EXPORT_ITEMS if item not in skipped), skipped
    if "dice" in requested:
        raise ValueError("--export dice needs labels of every frame; export from napari (Export panel) or with pipeline.export.")
    if "uncertainty" in requested and engine is not None and not engine.startswith("any2reg"):
        raise ValueError(f"--export uncertainty: the {engine} engine gives no per-pixel uncertainty; use --engine any2reg "
                         "or any2reg-io, or leave uncertainty out of --export.")
    if "landmarks" in requested and not landmarks_given:
        raise ValueError("--export landmarks needs --landmarks CSV (frame,name,y,x in pixels).")
    if set(MAP_ITEMS) & set(requested) and no_fit is not None:
        raise ValueError(f"--export maps: no T1 fit is possible for {input_label}: {no_fit}")
    # the plain outputs (registered.tif, displacement.npy) are always part of an export
    return tuple(item for item in EXPORT_ITEMS if item in set(requested) | {"stack", "displacement"}), {}


def read_landmarks_for(path: str, sequence: Any):
    """A landmark CSV checked against the sequence's frames (before registering)."""
    from ..io._common.errors import special_file_kind
    from ..io.landmarks import read_landmarks_csv

    # the interface's words (core.vocabulary): --landmarks on the command line, landmarks_path= in Python
    named = arg("landmarks" if interface() == "cli" else "landmarks_path", str(path))
    what = special_file_kind(path)
    if what is not None:  # a FIFO would block the reader forever; "no such file" would be false
        raise ValueError(f"{named}: it is {what}, not a landmark CSV file; give a CSV file with the columns frame,name,y,x.")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{named}: no such landmark CSV; check the path.")
    table = read_landmarks_csv(path, spacing_mm=sequence.spacing_mm)
    if table.n_frames > sequence.n_frames:
        raise ValueError(
            f"{named}: a point is on frame {table.n_frames - 1} but {sequence.name!r} has "
            f"{sequence.n_frames} frames (0..{sequence.n_frames - 1}); frames are 0-based."
        )
    table.positions(sequence.n_frames)  # a landmark placed twice on a frame: fail before registering
    return table
