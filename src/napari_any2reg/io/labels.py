"""Label images and masks (2-D, on the image grid): TIFF, NIfTI or ``.npy``.

Used for ``register --mask`` (the region that drives the similarity) and for the ROI of T1
statistics (``fit --mask``, cohort summaries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.vocabulary import arg

__all__ = ["read_label_image"]


def read_label_image(path: Any, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D label image or mask from TIFF, NIfTI (rows = j, like the sequence reader) or .npy."""
    from ._common import split_name

    from ._common.errors import special_file_kind

    file = Path(path)
    what = special_file_kind(file)
    if what is not None:  # a FIFO would block forever; "no such file" would be false
        raise ValueError(f"{arg('mask')} {file}: it is {what}, not a regular file; give a {shape[0]} x {shape[1]} "
                         "label image (TIFF, NIfTI or .npy).")
    if not file.is_file():
        raise FileNotFoundError(f"{arg('mask')} {file}: no such file; check the path.")
    ext = split_name(file)[1]
    if ext not in (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".nii", ".nii.gz", ".npy"):
        raise ValueError(f"{arg('mask')} {file}: unsupported type {ext or '(none)'!r}; use a TIFF, NIfTI or .npy file.")
    try:
        data = _read(file, ext)
    except Exception as exc:  # tifffile, nibabel and numpy raise many types for a damaged file
        cause = " ".join(str(exc).split())[:160]
        raise ValueError(f"{arg('mask')} {file}: not a readable {ext} label image ({type(exc).__name__}: {cause}); "
                         f"give a {shape[0]} x {shape[1]} label image (TIFF, NIfTI or .npy).") from None
    if data.shape != tuple(shape):
        raise ValueError(
            f"{arg('mask')} {file} has shape {data.shape} but the images are {tuple(shape)} (rows x columns); give one 2-D "
            "label image on the same grid (draw it on the registered series for registered input)."
        )
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError(f"{arg('mask')} {file}: labels must be integers (0 = background) or 0/1.")
        data = data.astype(np.int64)
    return data


def _read(file: Path, ext: str) -> np.ndarray:
    if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        import tifffile

        return np.squeeze(tifffile.imread(file))
    if ext in (".nii", ".nii.gz"):
        import nibabel

        data = np.squeeze(np.asanyarray(nibabel.load(str(file)).dataobj))
        return data.T if data.ndim == 2 else data  # NIfTI (i, j) -> (rows = j, columns = i)
    from ._common.errors import load_npy

    return np.squeeze(load_npy(file, what="a label image (H, W) or stack (N, H, W)"))
