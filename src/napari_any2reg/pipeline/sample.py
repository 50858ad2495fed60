"""The built-in phantoms as files: the code path of ``any2reg sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._requests import output_path

__all__ = ["write_sample"]


def write_sample(kind: str, output: Any, *, seed: int = 0, size: int = 192, truth: bool = False,
                 overwrite: bool = False):
    """Write a seeded cardiac phantom (with known motion) as a TIFF with timings.

    Parameters
    ----------
    kind : str
        Sequence type (:func:`napari_any2reg.core.phantom.make_phantom`: molli, stone, sasha,
        cine, t2prep, mge).
    output : str or Path
        The ``.tif`` to write.
    seed : int
    size : int
        Image size in pixels (square).
    truth : bool
        Also write the true displacement beside it (``<stem>_true_displacement.npy``); the stack
        and its truth are written together or not at all.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    Phantom
        The phantom written (its ``sequence`` and true ``displacement``).
    """
    from ..core.phantom import make_phantom
    from ..io import atomic_write_all, write_tiff

    phantom = make_phantom(kind, seed=seed, shape=(size, size))
    out = output_path(output, "output")
    items = [(out, lambda p: write_tiff(p, phantom.sequence, overwrite=True))]  # p: the reserved temp file
    if truth:
        items.append((out.with_name(out.name.split(".")[0] + "_true_displacement.npy"),
                      lambda p: np.save(p, phantom.displacement)))
    atomic_write_all(items, overwrite=overwrite)
    return phantom
