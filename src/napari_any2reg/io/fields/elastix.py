"""elastix / transformix parameter files for a frame's field (``DeformationFieldTransform`` and
the fixed-image grid): written by :func:`save_elastix_transform`, read back by
:func:`read_elastix_transform`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .._common import split_name
from .convention import DISPLACEMENT_CONVENTION


def elastix_transform_text(field_file: str, shape: Any, spacing_mm: Any = (1.0, 1.0), geometry: Any = None) -> str:
    """An elastix transform parameter file for one 2-D ITK displacement frame.

    Parameters
    ----------
    field_file : str
        The field's file name as transformix should open it; :func:`save_elastix_transform`
        writes it relative to the parameter file (beside it: the bare file name), and
        transformix resolves a relative name against its working folder, so run it in the
        folder that holds both (``cd out && transformix -tp displacement_itk_frame000.txt ...``).
    shape : (H, W)
    spacing_mm : (dy, dx)

    Notes
    -----
    The grid is the one ITK reads from :func:`write_itk_frame`: size ``(W, H)``, spacing
    ``(dx, dy)``, origin ``(0, 0)``, identity direction; with ``geometry`` the 3-D one-slice grid
    of :func:`write_itk_world_frame` (size ``(W, H, 1)``, the slice's spacing, origin and
    direction in LPS). Entries follow elastix's parameter
    file syntax: one ``(Name value ...)`` per line, strings in double quotes.
    """
    height, width = (int(v) for v in shape)
    dy, dx = (float(s) for s in spacing_mm)
    if geometry is None:
        dimension, size, index = 2, f"{width} {height}", "0 0"
        spacing, origin, direction = f"{dx:.10g} {dy:.10g}", "0 0", "1 0 0 1"
    else:  # the 3-D one-slice grid of write_itk_world_frame, in scanner (LPS) coordinates
        from ...core.geometry import SliceGeometry

        g = SliceGeometry.from_dict(geometry)
        numbers = lambda values: " ".join(f"{float(v):.10g}" for v in values)  # noqa: E731
        dimension, size, index = 3, f"{width} {height} 1", "0 0 0"
        spacing = numbers((dx, dy, g.slice_thickness_mm or 1.0))
        origin = numbers(g.origin)
        # elastix reads Direction column by column: the axis vectors one after the other
        direction = numbers((*g.row_direction, *g.column_direction, *g.normal))
    entries = [
        ("Transform", '"DeformationFieldTransform"'),
        ("DeformationFieldFileName", json.dumps(str(field_file))),
        ("DeformationFieldInterpolationOrder", "1"),
        ("NumberOfParameters", "0"),
        ("InitialTransformParametersFileName", '"NoInitialTransform"'),
        ("HowToCombineTransforms", '"Compose"'),
        ("FixedImageDimension", str(dimension)),
        ("MovingImageDimension", str(dimension)),
        ("FixedInternalImagePixelType", '"float"'),
        ("MovingInternalImagePixelType", '"float"'),
        ("Size", size),
        ("Index", index),
        ("Spacing", spacing),
        ("Origin", origin),
        ("Direction", direction),
        ("UseDirectionCosines", '"true"'),
        # linear resampling as the B-spline interpolator of order 1: every elastix build has it,
        # while "FinalLinearInterpolator" is missing from some (Debian's 5.0.1: transformix
        # stopped with "This component is not installed")
        ("ResampleInterpolator", '"FinalBSplineInterpolator"'),
        ("FinalBSplineInterpolationOrder", "1"),
        ("Resampler", '"DefaultResampler"'),
        ("DefaultPixelValue", "0"),
        ("ResultImageFormat", '"nii.gz"'),
        ("ResultImagePixelType", '"float"'),
    ]
    lines = ["// napari-any2reg: pull-back displacement of one frame, " + DISPLACEMENT_CONVENTION]
    lines += [f"({name} {value})" for name, value in entries]
    return "\n".join(lines) + "\n"


def save_elastix_transform(field_path: Any, shape: Any, spacing_mm: Any = (1.0, 1.0), path: Any = None,
                           geometry: Any = None) -> Path:
    """Write the elastix parameter file of one ITK field frame (default ``<field stem>.txt`` beside it).

    Written in place (callers make it atomic). See :func:`elastix_transform_text`.
    """
    field_path = Path(field_path)
    target = Path(path) if path is not None else field_path.with_name(split_name(field_path)[0] + ".txt")
    # relative to the parameter file: a moved or copied folder keeps working (transformix run
    # in that folder opens it); an absolute path would name the old place
    name = os.path.relpath(field_path.resolve(), target.resolve().parent)
    target.write_text(elastix_transform_text(Path(name).as_posix(), shape, spacing_mm, geometry), encoding="utf-8")
    return target


_ELASTIX_ENTRY = re.compile(r"^\((\w+)\s*(.*)\)$")


def read_elastix_transform(path: Any) -> dict[str, list]:
    """Parse an elastix parameter file: ``{name: [values]}`` (strings unquoted, numbers as float)."""
    out: dict[str, list] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("//", 1)[0].strip()
        match = _ELASTIX_ENTRY.match(line)
        if not match:
            continue
        values = []
        for token in re.findall(r'"[^"]*"|\S+', match.group(2)):
            if token.startswith('"'):
                values.append(token[1:-1])
            else:
                try:
                    values.append(float(token))
                except ValueError:
                    values.append(token)
        out[match.group(1)] = values
    return out
