"""Apply a saved registration to other data: ``any2reg apply FIELD INPUT -o OUT``.

A registration exports its displacement ``u`` (``displacement.npy`` ``(N, 2, H, W)`` pixels,
``displacement.nii.gz`` in mm, or the per-frame ITK fields); with it, anything on the raw
frames' grid can be brought onto the registered (common) grid without registering again:

=======================  ====================================================================
``apply_to_sequence``    another image series of the same frames (a second echo, a T2* or
                         contrast-enhanced series acquired in the same breath-holds):
                         ``registered_i(x) = frame_i(x + u_i(x))``, bilinear
``apply_to_labels``      a label stack ``(N, H, W)`` drawn on the raw frames, or one 2-D label
                         image used for every frame: the same pull-back, nearest neighbour
``apply_to_points``      landmarks clicked on the raw frames (``frame,name,y,x``): each point
                         ``p`` of frame ``i`` goes to the common-grid point ``x`` solving
                         ``x + u_i(x) = p`` (:func:`.core.landmarks.landmarks_to_common`)
``apply_file``           the file-level command: reads, checks, applies, writes atomically
=======================  ====================================================================

The functions are numpy in, numpy out; ``apply_file`` reads and writes through :mod:`..io`
and keeps the input's timings, spacing and geometry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..core.vocabulary import arg
from ._requests import output_path as output_path_checked

__all__ = [
    "ApplyOutcome",
    "check_field_shape",
    "apply_to_sequence",
    "apply_to_labels",
    "apply_to_points",
    "apply_file",
    "APPLY_KINDS",
]

#: What ``apply_file`` can move (``"auto"``: a ``.csv`` is points, anything else an image series).
APPLY_KINDS = ("auto", "image", "labels", "points")


def _field(displacement: Any) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"a displacement field is (N, 2, H, W) in pixels (dy, dx); got shape {u.shape}.")
    bad = ~np.isfinite(u)
    if bad.any():  # NaN would fill the images and erase the labels without a word
        frames = sorted({int(k) for k in np.nonzero(bad.any(axis=(1, 2, 3)))[0]})
        raise ValueError(
            f"the displacement field holds NaN or Inf ({int(bad.sum())} values, frame(s) "
            f"{', '.join(map(str, frames[:8]))}{', ...' if len(frames) > 8 else ''}): it is damaged; "
            "use the displacement file written by the registration, or register again."
        )
    from ..core.registration import field_problem

    what = field_problem(u, u.shape[-2:])  # the rule the registration applies to its own fields
    if what is not None:  # 1e31 px would write garbage (all edge values, erased labels) with exit 0
        beyond = np.abs(u).max(axis=(1, 2, 3)) > max(u.shape[-2:])
        frames = [int(k) for k in np.nonzero(beyond)[0]]
        raise ValueError(
            f"the displacement field holds {what} (frame(s) {', '.join(map(str, frames[:8]))}"
            f"{', ...' if len(frames) > 8 else ''}): no registration makes it, it is damaged; use the "
            "displacement file written by the registration, or register again."
        )
    return u


def check_field_shape(data_shape: Any, displacement_shape: Any, what: str = "the input", *, single_image: bool = True) -> None:
    """Refuse data whose frames or grid differ from the field's, naming both shapes and the fix.

    Parameters
    ----------
    data_shape : tuple
        ``(N, H, W)`` (a series or label stack) or ``(H, W)`` (one label image for every frame).
    displacement_shape : tuple
        ``(N, 2, H, W)``.
    what : str
        How the message names the data (a file name).
    single_image : bool
        Whether one ``(H, W)`` image for every frame is acceptable (labels: yes; a series: no).
    """
    data_shape, field_shape = tuple(int(v) for v in data_shape), tuple(int(v) for v in displacement_shape)
    n, _, h, w = field_shape
    grid_ok = data_shape[-2:] == (h, w)
    frames_ok = (single_image and len(data_shape) == 2) or (len(data_shape) == 3 and data_shape[0] == n)
    if grid_ok and frames_ok:
        return
    raise ValueError(
        f"{what} has shape {data_shape} but the registration's field is {field_shape} (N, 2, H, W): "
        f"it needs {n} frames of {h}x{w} pixels" + (f" (or one {h}x{w} label image)" if single_image else "") + ". Apply a field to "
        "data on the grid of the sequence it was computed from (same frames, same matrix, no crop "
        "or resampling), or register this series itself."
    )


def apply_to_sequence(frames: Any, displacement: Any) -> np.ndarray:
    """Warp an image series ``(N, H, W)`` onto the common grid (bilinear pull-back).

    Parameters
    ----------
    frames : array_like (N, H, W)
        Frames on the raw grid of the registered sequence, in the same frame order.
    displacement : array_like (N, 2, H, W)
        Pixels ``(dy, dx)``, pull-back: ``registered_i(x) = frame_i(x + u_i(x))``.

    Returns
    -------
    ndarray (N, H, W) float32
        Exactly what the registration produced when ``frames`` is its own input.

    Raises
    ------
    ValueError
        On a shape mismatch (:func:`check_field_shape`).
    """
    from ..core.spatial import warp_images

    u = _field(displacement)
    data = np.asarray(frames, dtype=np.float32)
    check_field_shape(data.shape, u.shape, "the image series", single_image=False)
    return np.asarray(warp_images(data, u), dtype=np.float32)


def apply_to_labels(labels: Any, displacement: Any) -> np.ndarray:
    """Warp integer labels onto the common grid (nearest neighbour, so no new label values).

    Parameters
    ----------
    labels : array_like of int, (N, H, W) or (H, W)
        A label stack drawn on the raw frames, or one label image used for every frame (then
        the result has one label frame per registered frame).
    displacement : array_like (N, 2, H, W)

    Returns
    -------
    ndarray (N, H, W), the labels' integer dtype
    """
    from ..core.spatial import warp_labels

    u = _field(displacement)
    data = np.asarray(labels)
    check_field_shape(data.shape, u.shape, "the label image")
    if data.dtype.kind not in "iub":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError("labels must be whole numbers (0 = background).")
        data = data.astype(np.int64)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    # float32 carries integers exactly up to 2**24, far beyond any label count
    return np.asarray(warp_labels(data, u)).astype(data.dtype)


def apply_to_points(table: Any, displacement: Any):
    """Move landmarks clicked on the raw frames onto the common grid.

    Parameters
    ----------
    table : core.landmarks.LandmarkTable
        Rows ``frame, name, (y, x)`` in raw-frame pixels.
    displacement : array_like (N, 2, H, W)

    Returns
    -------
    LandmarkTable
        Same rows, positions on the registered grid (``x`` with ``x + u_frame(x) = p``); after a
        good registration every frame's point of one landmark lands on the same position.
    """
    from ..core.landmarks import landmarks_to_common

    return landmarks_to_common(table, _field(displacement))


@dataclasses.dataclass(frozen=True)
class ApplyOutcome:
    """What :func:`apply_file` wrote."""

    kind: str  # "image", "labels" or "points"
    output: Path
    shape: tuple[int, ...]  # of what was written ((N, H, W), or (rows, 2) for points)
    n_frames: int


def _kind_for(path: Path, kind: str) -> str:
    if kind not in APPLY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(APPLY_KINDS)}; got {kind!r}.")
    if kind != "auto":
        return kind
    return "points" if path.suffix.lower() == ".csv" else "image"


def apply_file(
    field_path: Any,
    input_path: Any,
    output_path: Any,
    *,
    kind: str = "auto",
    slice_index: int | None = None,
    spacing_mm: Any = None,
    overwrite: bool = False,
) -> ApplyOutcome:
    """Apply a saved displacement to an image series, a label image or a landmark CSV file.

    Parameters
    ----------
    field_path : str or Path
        ``displacement.npy``, ``displacement.nii.gz`` or the ITK per-frame fields (base name or
        one frame file), as :func:`..io.fields.read_displacement` reads them.
    input_path : str or Path
        A sequence (any reader: TIFF, NIfTI, DICOM), a label image / stack (TIFF, NIfTI, .npy),
        or a landmark CSV (``frame,name,y,x``).
    output_path : str or Path
        Images: ``.tif`` / ``.ome.tif`` / ``.nii`` / ``.nii.gz`` (timings, spacing and geometry
        of the input kept). Labels: ``.tif`` or ``.npy``. Points: ``.csv``.
    kind : {"auto", "image", "labels", "points"}
        ``"auto"``: a ``.csv`` input is points, anything else an image series; label images must
        be named (``"labels"``) because an integer TIFF may be either.
    slice_index : int, optional
        The slice of multi-slice image input.
    spacing_mm : (dy, dx), optional
        Points only: the spacing of the mm columns (default: the CSV's, else the field's).
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    ApplyOutcome

    Raises
    ------
    ValueError
        Shape mismatch (both shapes and the fix in the message), unreadable inputs, an output
        type that does not fit the data.
    FileExistsError
        If the output exists and ``overwrite`` is false.
    """
    from ..io import atomic_write
    from ..io.fields import read_displacement
    from .series import read_input, refuse_replacing_inputs

    field_path, input_path, output = Path(field_path), Path(input_path), output_path_checked(output_path, "output_path")
    refuse_replacing_inputs([output], [str(field_path), str(input_path)])
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass {arg('overwrite', True)} to replace it.")
    kind = _kind_for(input_path, kind)
    u, field_spacing = read_displacement(field_path)
    try:
        u = _field(u)  # NaN / Inf refused before anything is read or written
    except ValueError as exc:
        raise ValueError(f"{field_path}: {exc}") from None
    ext = "".join(output.suffixes[-2:]).lower() if output.name.lower().endswith((".nii.gz", ".ome.tif", ".ome.tiff")) else output.suffix.lower()

    if kind == "points":
        from ..core.landmarks import landmarks_csv_text
        from ..io.landmarks import read_landmarks_csv

        if ext != ".csv":
            raise ValueError(f"{output}: moved landmarks are written as a .csv file.")
        table = read_landmarks_csv(input_path, spacing_mm=spacing_mm)
        if spacing_mm is None and table.spacing_source == "default" and field_spacing is not None:
            table = table.with_spacing(field_spacing, f"{field_path} (header)")
        moved = apply_to_points(table, u)
        text = landmarks_csv_text(moved)
        atomic_write(output, lambda temp: temp.write_text(text, encoding="utf-8"), overwrite=overwrite)
        return ApplyOutcome("points", output, tuple(moved.points.shape), u.shape[0])

    if kind == "labels":
        from ..io.fields import read_label_stack, save_label_stack

        if ext not in (".tif", ".tiff", ".npy"):
            raise ValueError(f"{output}: moved labels are written as .tif, .tiff or .npy.")
        labels = read_label_stack(input_path)
        check_field_shape(labels.shape, u.shape, str(input_path))
        moved = apply_to_labels(labels, u)
        spacing = field_spacing or (1.0, 1.0)
        atomic_write(output, lambda temp: save_label_stack(temp, moved, spacing), overwrite=overwrite)
        return ApplyOutcome("labels", output, tuple(moved.shape), u.shape[0])

    from ..io import write_nifti, write_tiff

    writers = {".tif": write_tiff, ".tiff": write_tiff, ".ome.tif": write_tiff, ".ome.tiff": write_tiff,
               ".nii": write_nifti, ".nii.gz": write_nifti}
    if ext not in writers:
        raise ValueError(f"{output}: the moved series is written as .tif, .ome.tif, .nii or .nii.gz; got {ext or 'no extension'!r}.")
    options = {} if slice_index is None else {"slice_index": int(slice_index)}
    sequence = read_input(input_path, **options)
    check_field_shape(sequence.frames.shape, u.shape, str(input_path), single_image=False)
    moved = sequence.replace(frames=apply_to_sequence(sequence.frames, u), name=f"{sequence.name} registered")
    writers[ext](output, moved, overwrite=overwrite)  # the writers are atomic (image and sidecar together)
    return ApplyOutcome("image", output, tuple(moved.frames.shape), u.shape[0])
