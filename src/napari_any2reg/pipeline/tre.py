"""Landmark TRE of a saved registration, from files: the code path of ``any2reg tre``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["tre_file"]


def tre_file(displacement: Any, landmarks: Any, *, spacing_mm: Any = None, out: Any = None,
             overwrite: bool = False):
    """The TRE before and after a registration of landmarks clicked on every raw frame.

    Each point is mapped to the common grid by inverting ``x + u_i(x) = p_i``; the TRE of a
    landmark is the mean distance over frame pairs.

    Parameters
    ----------
    displacement : str or Path
        ``displacement.npy`` ``(N, 2, H, W)`` in pixels, the exported ``displacement.nii.gz``
        or the per-frame ITK fields.
    landmarks : str or Path
        Landmark CSV (``frame,name,y,x`` in pixels, frame 0-based; ``y_mm,x_mm`` optional).
    spacing_mm : (dy, dx), optional
        Pixel spacing; default: the CSV's mm columns, else the field's header or sidecar, else
        1 (distances in pixels: ``report.spacing_source == "default"``).
    out : str or Path, optional
        Also write the numbers to this JSON file (atomically).
    overwrite : bool
        Replace an existing ``out`` file.

    Returns
    -------
    TREReport

    Raises
    ------
    ValueError, OSError, FileExistsError
        Unreadable inputs, a displacement holding NaN / Inf or shifts beyond the image (the
        check of ``apply``), an ``out`` that is one of the inputs, or that exists.
    """
    from ..core.landmarks import tre_before_after
    from ..io import atomic_write, read_displacement
    from ..io.landmarks import read_landmarks_csv
    from .apply import _field
    from ._requests import output_path
    from .series import refuse_replacing_inputs

    if out is not None:
        out = output_path(out, "out")
        refuse_replacing_inputs([out], [displacement, landmarks])
    field, field_spacing = read_displacement(displacement)
    try:  # the check of `apply`: NaN / Inf or shifts beyond the image gave a TRE of garbage with exit 0
        field = _field(field)
    except ValueError as exc:
        raise ValueError(f"{displacement}: {exc}") from None
    table = read_landmarks_csv(landmarks, spacing_mm=spacing_mm)
    if spacing_mm is None and table.spacing_source == "default" and field_spacing is not None:
        table = table.with_spacing(field_spacing, f"{displacement} (header)")
    report = tre_before_after(table, field)
    if out is not None:
        content = {"displacement": str(displacement), "landmarks": str(landmarks), **report.to_dict()}
        text = json.dumps(content, indent=2, allow_nan=False) + "\n"
        atomic_write(Path(out), lambda p: p.write_text(text, encoding="utf-8"), overwrite=overwrite)
    return report
