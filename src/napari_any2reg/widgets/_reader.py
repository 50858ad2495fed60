"""napari reader contribution: TIFF / OME-TIFF, NIfTI and DICOM series → an image layer.

The reading itself is :func:`napari_any2reg.io.read_sequence`; this module only decides
whether a path is ours (:func:`napari_any2reg.io.supported_path`) and turns the
:class:`Sequence` into layer data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence as _Seq
from typing import Any

from ._layers import LayerDataTuple, sequence_to_layer_data

__all__ = ["get_reader", "read_layers"]

PathLike = str | os.PathLike


def _normalise(path: PathLike | _Seq[PathLike]) -> str | list[str]:
    """One path as ``str``; a list of one path as that path; longer lists as a list of str."""
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    paths = [os.fspath(p) for p in path]
    return paths[0] if len(paths) == 1 else paths


def get_reader(path: PathLike | _Seq[PathLike]) -> Callable[[Any], list[LayerDataTuple]] | None:
    """Return a reader function for ``path``, or ``None`` when the io layer cannot read it.

    A file, a DICOM folder, or a list of DICOM files (one series) is accepted.
    """
    from ..io import supported_path

    target = _normalise(path)
    if isinstance(target, list) and not target:
        return None
    try:
        if not supported_path(target):
            return None
    except Exception:  # a probe must never break napari's reader selection
        return None
    return read_layers


def read_layers(path: PathLike | _Seq[PathLike]) -> list[LayerDataTuple]:
    """Read a file, DICOM folder or DICOM file list: one image-layer tuple per slice.

    A multi-slice series (e.g. 3-4 MOLLI slices in one DICOM folder) opens as one layer per
    slice, named ``"<series> slice K"``, each registered on its own.
    """
    from ..io import read_slices

    return [sequence_to_layer_data(seq) for seq in read_slices(_normalise(path))]
