"""napari reader contribution: TIFF / OME-TIFF, NIfTI and DICOM series → an image layer.

A DICOM series that holds the scanner's own maps (a Philips MOLLI's T1 MAP images) also gives
one 2-D layer per map, ``"<series> scanner T1 map"``, on the sequence's grid.

The reading itself is :func:`napari_any2reg.io.read_sequence`; this module only decides
whether a path is ours (:func:`napari_any2reg.io.supported_path`) and turns the
:class:`Sequence` into layer data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence as _Seq
from typing import Any

import numpy as np

from ._layers import LayerDataTuple, sequence_to_layer_data

__all__ = ["get_reader", "read_layers", "scanner_map_layers"]

PathLike = str | os.PathLike


def _normalise(path: PathLike | _Seq[PathLike]) -> str | list[str]:
    """One path as ``str``; a list of one path as that path; longer lists as a list of str."""
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    paths = [os.fspath(p) for p in path]
    return paths[0] if len(paths) == 1 else paths


def get_reader(path: PathLike | _Seq[PathLike]) -> Callable[[Any], list[LayerDataTuple]]:
    """Return the reader function for ``path``: one that reads it, or one that says why it cannot.

    A file, a DICOM folder, or a list of DICOM files (one series) is read. napari only offers
    this plugin the paths its manifest claims (our extensions, folders); when one of them
    cannot be read, returning ``None`` would make napari say no more than "refused the file",
    so the function returned raises :class:`~napari_any2reg.io.SequenceReadError` with the
    reason (:func:`napari_any2reg.io.refusal_reason`: "not a DICOM file", "no DICOM file among
    its first 32 files", ...), which napari shows in its reader dialog. Reasons only a full read
    finds (a 2-D TIFF: "single image (H, W); need a time series") come from the reader itself.
    """
    from ..io import refusal_reason

    target = _normalise(path)
    try:
        reason = refusal_reason(target)
    except Exception as exc:  # a probe must never break napari's reader selection
        reason = f"{target}: could not be examined ({type(exc).__name__}: {exc})."
    if reason is None:
        return read_layers
    return _refusal(reason)


def _refusal(reason: str) -> Callable[..., list[LayerDataTuple]]:
    """A reader function that raises ``reason`` (napari shows the message of what a reader raises)."""
    from ..io import SequenceReadError

    def refuse(path: Any, **kwargs: Any) -> list[LayerDataTuple]:
        raise SequenceReadError(reason)

    refuse.reason = reason  # type: ignore[attr-defined]
    return refuse


def read_layers(path: PathLike | _Seq[PathLike]) -> list[LayerDataTuple]:
    """Read a file, DICOM folder or DICOM file list: one image-layer tuple per slice.

    A multi-slice series (e.g. 3-4 MOLLI slices in one DICOM folder) opens as one layer per
    slice, named ``"<series> slice K"``, each registered on its own.
    """
    from ..io import read_slices

    layers = []
    for seq in read_slices(_normalise(path)):
        layer = sequence_to_layer_data(seq)
        layers.append(layer)
        layers += scanner_map_layers(seq, layer)
    return layers


def scanner_map_layers(seq: Any, sequence_layer: LayerDataTuple) -> list[LayerDataTuple]:
    """One 2-D image layer per map the scanner computed itself (``metadata["scanner_maps"]``,
    e.g. a Philips MOLLI's T1 MAP images), named ``"<sequence layer> scanner T1 map"``.

    The maps are not frames (the reader left them out of the sequence); as their own layers
    they lie on the sequence's grid (same scale and translate), so a reader can compare the
    scanner's map with the fit after correction. Hidden at first: the frames stay in view.
    """
    from ._layers import axes_kwargs, robust_contrast_limits

    maps = dict(seq.metadata.get("scanner_maps") or {})
    kwargs = sequence_layer[1]
    out = []
    for name, array in maps.items():
        data = np.array(array, dtype=np.float32, copy=True)
        if data.ndim != 2:
            continue  # a map is one (H, W) image per slice
        metadata = {"any2reg_scanner_map": name, "source": "scanner (DICOM)",
                    "spacing_mm": list(seq.spacing_mm), "sequence_layer": kwargs["name"]}
        if seq.geometry is not None:
            metadata["geometry"] = seq.geometry.to_dict()
        out.append((data, {
            "name": f"{kwargs['name']} {name}",
            "scale": tuple(kwargs["scale"][-2:]),
            "translate": tuple(kwargs["translate"][-2:]),
            "metadata": metadata,
            # T1 / T2 maps in ms, as the fitted maps of the mapping dock are shown
            "colormap": "turbo",
            "contrast_limits": robust_contrast_limits(data),
            "visible": False,
            **axes_kwargs(2),
        }, "image"))
    return out
