"""Label images and masks (2-D, on the image grid): TIFF, NIfTI or ``.npy``.

Used for ``register --mask`` (the region that drives the similarity) and for the ROI of T1
statistics (``fit --mask``, cohort summaries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_label_image"]


def read_label_image(path: Any, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D label image or mask from TIFF, NIfTI (rows = j, like the sequence reader) or .npy."""
    from ._common import split_name

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--mask {file}: no such file; check the path.")
    ext = split_name(file)[1]
    if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        import tifffile

        data = np.squeeze(tifffile.imread(file))
    elif ext in (".nii", ".nii.gz"):
        import nibabel

        data = np.squeeze(np.asanyarray(nibabel.load(str(file)).dataobj))
        data = data.T if data.ndim == 2 else data  # NIfTI (i, j) -> (rows = j, columns = i)
    elif ext == ".npy":
        data = np.squeeze(np.load(file, allow_pickle=False))
    else:
        raise ValueError(f"--mask {file}: unsupported type {ext or '(none)'!r}; use a TIFF, NIfTI or .npy file.")
    if data.shape != tuple(shape):
        raise ValueError(
            f"--mask {file} has shape {data.shape} but the images are {tuple(shape)}; give one 2-D "
            "label image on the same grid (draw it on the registered series for registered input)."
        )
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError(f"--mask {file}: labels must be integers (0 = background) or 0/1.")
        data = data.astype(np.int64)
    return data
