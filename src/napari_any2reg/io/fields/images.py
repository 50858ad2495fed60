"""Label stacks and float maps as images: :func:`save_label_stack` / :func:`read_label_stack`
(TIFF, NIfTI, ``.npy``) and :func:`save_map_tiff` / :func:`read_map_tiff` (float32 maps with the
pixel size in the resolution tags and a JSON description)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._common import split_name
from .convention import _NIFTI


_LABEL_DTYPES = (np.uint8, np.uint16, np.int32)


def save_label_stack(path: Any, labels: Any, spacing_mm: Any = (1.0, 1.0)) -> Path:
    """Write integer labels ``(N, H, W)`` (or ``(H, W)``) as a TIFF (or ``.npy``), in place.

    The smallest of uint8 / uint16 / int32 that holds the labels is used, so label viewers
    (napari, Fiji) open the file as labels. A TIFF is an ImageJ hyperstack (axes ``TYX``: Fiji
    shows the frames as T, not Z), unit mm, the pixel size in the resolution tags; labels that
    need int32 (ImageJ has no such type) are a plain TIFF with the resolution in pixels per cm.
    """
    path = Path(path)
    data = np.asarray(labels)
    if data.dtype.kind not in "iub":
        raise ValueError(f"{path}: labels are integers; got {data.dtype}.")
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    dtype = next(t for t in _LABEL_DTYPES if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    data = np.ascontiguousarray(data, dtype=dtype)
    ext = split_name(path)[1]
    if ext == ".npy":
        with open(path, "wb") as handle:
            np.save(handle, data)
        return path
    if ext not in (".tif", ".tiff"):
        raise ValueError(f"{path}: labels are written as .tif, .tiff or .npy; got {ext or 'no extension'!r}.")
    import tifffile

    dy, dx = (float(s) for s in spacing_mm)
    description = json.dumps({"quantity": "labels", "spacing_mm": [dy, dx]})
    if data.dtype == np.int32 or data.ndim not in (2, 3):  # ImageJ has no 32-bit integer images
        tifffile.imwrite(path, data, photometric="minisblack", resolution=(10.0 / dx, 10.0 / dy),
                         resolutionunit="CENTIMETER", metadata=None, description=description)
        return path
    # an ImageJ hyperstack: Fiji opens (N, H, W) as N frames (T), not Z-slices, with the pixel
    # size in mm, as the other TIFF outputs (io.tiff, save_map_tiff)
    tifffile.imwrite(path, data, imagej=True, photometric="minisblack",
                     resolution=(1.0 / dx, 1.0 / dy),  # pixels per mm (unit=mm)
                     metadata={"axes": "TYX" if data.ndim == 3 else "YX", "unit": "mm",
                               "any2reg_labels": description, "Info": description})
    return path


def read_label_stack(path: Any) -> np.ndarray:
    """A 2-D label image ``(H, W)`` or label stack ``(N, H, W)`` from TIFF, NIfTI or ``.npy``.

    NIfTI data ``(I, J[, 1], N)`` are turned into rows = ``j`` like the sequence reader. Float
    files must hold whole numbers; the result is an integer array.

    Raises
    ------
    FileNotFoundError, ValueError
        With the file name and the fix.
    """
    from .._common.errors import special_file_kind

    path = Path(path)
    what = special_file_kind(path)
    if what is not None:  # a FIFO would block forever; "no such file" would be false
        raise ValueError(f"{path} is {what}, not a label file; give a label image or stack (TIFF, NIfTI or .npy).")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label file; check the path.")
    ext = split_name(path)[1]
    if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        import tifffile

        data = np.squeeze(tifffile.imread(path))
    elif ext in _NIFTI:
        import nibabel

        data = np.squeeze(np.asanyarray(nibabel.load(str(path)).dataobj))
        if data.ndim == 2:
            data = data.T  # (i, j) -> (rows = j, columns = i)
        elif data.ndim == 3:
            data = np.transpose(data, (2, 1, 0))  # (i, j, t) -> (t, j, i)
    elif ext == ".npy":
        from .._common.errors import load_npy

        data = np.squeeze(load_npy(path, what="a label image or stack"))
    else:
        raise ValueError(f"{path}: unsupported label file type {ext or '(none)'!r}; use a TIFF, NIfTI or .npy file.")
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: labels are one 2-D image (H, W) or a stack (N, H, W); got shape {data.shape}.")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError(f"{path}: labels must be whole numbers (0 = background).")
        data = data.astype(np.int64)
    elif data.dtype.kind not in "iub":
        raise ValueError(f"{path}: labels must be integers; got {data.dtype}.")
    return np.asarray(data)


#: ImageJ axes of a map TIFF: one map, one per frame (Fiji's T: a hyperstack of frames), several maps (C).
MAP_AXES = ("YX", "TYX", "CYX")


def save_map_tiff(path: Any, array: Any, spacing_mm: Any, info: dict[str, Any] | None = None,
                  axes: str | None = None) -> Path:
    """Write float32 map(s) ``(H, W)`` or ``(K, H, W)`` with the pixel size and a JSON description.

    Parameters
    ----------
    path : str or Path
        Target TIFF; written in place (callers make it atomic).
    array : array (H, W) or (K, H, W)
    spacing_mm : (dy, dx)
    info : dict, optional
        E.g. ``{"quantity": "T1", "unit": "ms"}``; stored as JSON together with ``spacing_mm``
        and read back by :func:`read_map_tiff`.
    axes : {"YX", "TYX", "CYX"}, optional
        Write an ImageJ TIFF that Fiji opens with these axes (``TYX``: one map per frame, such
        as the Jacobian determinant, a hyperstack of frames rather than a Z-stack; ``CYX``:
        several maps of one slice), unit ``mm`` and the pixel size in the resolution tags; the
        JSON is then the ImageJ property ``any2reg_map`` (Fiji: Image > Show Info). Default: a
        plain TIFF whose ImageDescription is the JSON, resolution in pixels per cm.
    """
    import tifffile

    dy, dx = (float(s) for s in spacing_mm)
    data = np.ascontiguousarray(array, dtype=np.float32)
    description = json.dumps({**dict(info or {}), "spacing_mm": [dy, dx]}, allow_nan=False, default=float)
    if axes is None:
        tifffile.imwrite(
            Path(path),
            data,
            photometric="minisblack",
            resolution=(10.0 / dx, 10.0 / dy),  # pixels per cm
            resolutionunit="CENTIMETER",
            description=description,
            metadata=None,
        )
        return Path(path)
    if axes not in MAP_AXES or len(axes) != data.ndim:
        raise ValueError(f"{path}: map axes are one of {', '.join(MAP_AXES)} matching the array; got {axes!r} "
                         f"for shape {data.shape}.")
    tifffile.imwrite(
        Path(path),
        data,
        imagej=True,
        photometric="minisblack",
        resolution=(1.0 / dx, 1.0 / dy),  # pixels per mm (unit=mm)
        metadata={"axes": axes, "unit": "mm", "any2reg_map": description, "Info": description},
    )
    return Path(path)


def read_map_tiff(path: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a map written by :func:`save_map_tiff`: ``(array float32, info dict)``."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such map file; check the path.")
    with tifffile.TiffFile(path) as tif:
        array = tif.asarray()
        description = tif.pages[0].description or ""
        if tif.is_imagej:  # ImageJ maps keep the JSON in their any2reg_map property
            description = str((tif.imagej_metadata or {}).get("any2reg_map", description))
    try:
        info = json.loads(description)
        if not isinstance(info, dict):
            info = {}
    except ValueError:
        info = {}
    return np.asarray(array, dtype=np.float32), info
