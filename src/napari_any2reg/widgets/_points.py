"""Points layers as landmark tables: coordinates between a Points layer and an image's pixels.

Shared by the Landmarks, Export and Apply docks. A landmark Points layer is 3-D (frame, y, x)
and carries each point's landmark in the ``name`` feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Points

from ..core.landmarks import LandmarkTable

__all__ = ["NAME_FEATURE", "TAG_FEATURE", "landmark_tag", "points_in_image_pixels", "spacing_of", "points_to_table",
           "table_points_data"]

#: The Points feature naming each point's landmark.
NAME_FEATURE = "name"

#: The Points feature with the short tag drawn beside each point (the name is in the dock).
TAG_FEATURE = "tag"


def landmark_tag(name: str) -> str:
    """Short canvas label of a landmark: ``rv_insertion_anterior`` -> ``RIA``, ``apex`` -> ``apex``.

    A full name drawn beside every point covers the anatomy it marks; the dock lists the names.
    """
    text = str(name)
    words = [w for w in text.replace("-", " ").replace("_", " ").split() if w]
    if len(text) <= 6 or len(words) < 2:
        return text[:6]
    return "".join(w[0] for w in words).upper()[:4]


def _world_scale_translate(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(layer.scale, float)[-3:], np.asarray(layer.translate, float)[-3:]


def points_in_image_pixels(points: Points, image: Image) -> np.ndarray:
    """``(M, 3)`` positions of ``points`` in ``image``'s data (frame, row, column) coordinates."""
    data = np.asarray(points.data, float)
    if data.size == 0:
        return np.zeros((0, 3))
    if data.shape[1] != 3:
        raise ValueError(
            f"Points layer {points.name!r} is {data.shape[1]}-D; landmarks need (frame, y, x) points: make "
            "one with 'New' (it has the frame axis)."
        )
    p_scale, p_translate = _world_scale_translate(points)
    i_scale, i_translate = _world_scale_translate(image)
    return (data * p_scale + p_translate - i_translate) / i_scale


def spacing_of(layer: Any) -> tuple[float, float]:
    """Pixel spacing ``(dy, dx)`` in mm: the layer's ``spacing_mm`` metadata, else its scale."""
    spacing = (getattr(layer, "metadata", None) or {}).get("spacing_mm")
    if spacing is None:
        spacing = np.asarray(layer.scale, float)[-2:]
    return float(spacing[0]), float(spacing[1])


def points_to_table(points: Points, image: Image) -> LandmarkTable:
    """The landmark table of a Points layer on ``image``'s pixels (a re-clicked point replaces).

    Raises
    ------
    ValueError
        If the points have no ``name`` feature, lie outside the image's frames, or none exist.
    """
    coords = points_in_image_pixels(points, image)
    features = points.features
    if NAME_FEATURE not in features.columns:
        for alternative in ("id", "label"):
            if alternative in features.columns:
                features = features.rename(columns={alternative: NAME_FEATURE})
                break
        else:
            raise ValueError(
                f"Points layer {points.name!r} has no 'name' feature; make the layer with 'New' or import a CSV "
                "so every point carries the landmark it marks."
            )
    names = features[NAME_FEATURE].astype(str).to_numpy(dtype=object)
    frames = np.round(coords[:, 0]).astype(np.int64)
    n_frames = int(image.data.shape[0])
    outside = (frames < 0) | (frames >= n_frames)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} point(s) of {points.name!r} are outside the frames 0..{n_frames - 1} of "
            f"{image.name!r}; delete them or choose the image they were clicked on."
        )
    table = LandmarkTable(frames, names, coords[:, 1:], spacing_of(image), "layer")
    return table.keep_last()


# ====================================================================== the widget


def table_points_data(table: LandmarkTable) -> tuple[np.ndarray, dict[str, Any]]:
    """``(M, 3)`` (frame, y, x) pixel data and the ``features`` of a Points layer showing ``table``."""
    coords = np.column_stack([table.frames.astype(float), table.points]) if len(table) else np.zeros((0, 3))
    names = table.names.astype(object)
    return coords, {NAME_FEATURE: names, TAG_FEATURE: np.array([landmark_tag(n) for n in names], dtype=object)}
