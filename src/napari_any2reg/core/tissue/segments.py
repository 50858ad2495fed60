"""AHA segments of a short-axis slice and statistics of any map per segment (numpy only).

``docs/design.md`` §8. Numbering and names are those of the AHA 17-segment model (Cerqueira et
al., Circulation 2002;105:539-542); a short-axis slice is basal (segments 1-6), mid (7-12) or
apical (13-16); segment 17 (the apex cap) is never in a short-axis slice.

Convention
----------
* **Centre**: the centroid of the LV blood pool (label 1), or of the myocardium (label 2) when
  there is no label 1. Each myocardial pixel gets its polar angle about the centre.
* **Direction**: angles run from the *anterior* RV insertion point towards the septum, i.e.
  through the RV side. The side is the one holding the centroid of the RV blood pool (label 3);
  with two insertion points and no label 3, it is the shorter arc between them (the septum spans
  well under 180 degrees). Because the direction comes from the anatomy, not from the image
  axes, a rotated or a mirrored image gives every pixel the same segment.
* **Basal and mid** (6 segments): the anterior RV insertion is the boundary between the anterior
  (1 / 7) and the anteroseptal (2 / 8) segment. With two insertion points the septum spans the
  arc between them through the RV side, split in two equal halves: anteroseptal (2 / 8) from the
  anterior point, inferoseptal (3 / 9) up to the inferior point; the free wall (the rest of the
  circle) is split in four equal parts: inferior (4 / 10), inferolateral (5 / 11),
  anterolateral (6 / 12) and anterior (1 / 7), ending at the anterior point. With one insertion
  point every segment spans 60 degrees (the septum 120).
* **Apical** (4 segments): 90 degrees each; the septal segment (14) is centred on the middle of
  the septal arc defined as above, followed (in the same direction) by inferior (15), lateral
  (16) and anterior (13).

Points are ``(y, x)`` pixels on the label image's grid (row, column), anterior first.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..vocabulary import arg

__all__ = [
    "LEVELS",
    "SEGMENT_NAMES",
    "LEVEL_SEGMENTS",
    "segment_name",
    "parse_insertion_points",
    "lv_centre",
    "myocardium_core",
    "septal_geometry",
    "assign_segments",
    "segment_statistics",
    "segment_boundaries",
    "segment_label_positions",
]

#: Slice levels of a short-axis slice.
LEVELS = ("basal", "mid", "apical")

_SIX = ("anterior", "anteroseptal", "inferoseptal", "inferior", "inferolateral", "anterolateral")
_FOUR = ("anterior", "septal", "inferior", "lateral")

#: AHA 17-segment names (1-16; 17 = apex, never in a short-axis slice).
SEGMENT_NAMES: dict[int, str] = {
    **{k + 1: f"basal {name}" for k, name in enumerate(_SIX)},
    **{k + 7: f"mid {name}" for k, name in enumerate(_SIX)},
    **{k + 13: f"apical {name}" for k, name in enumerate(_FOUR)},
    17: "apex",
}

#: Segment numbers of each level.
LEVEL_SEGMENTS: dict[str, tuple[int, ...]] = {"basal": tuple(range(1, 7)), "mid": tuple(range(7, 13)),
                                              "apical": tuple(range(13, 17))}

_BLOOD, _MYOCARDIUM, _RV = 1, 2, 3


def segment_name(segment: int) -> str:
    return SEGMENT_NAMES[int(segment)]


def _check_level(level: str) -> str:
    text = str(level).lower()
    if text not in LEVELS:
        raise ValueError(f"{arg('level', level)}: the slice level is one of {', '.join(LEVELS)}.")
    return text


def parse_insertion_points(points: Any) -> np.ndarray:
    """RV insertion points as a float ``(K, 2)`` array of ``(y, x)`` pixels, K = 1 or 2.

    Accepts ``"Y1,X1;Y2,X2"`` (the CLI's ``--rv-insertion``) or a sequence of pairs.
    """
    if isinstance(points, str):
        try:
            rows = [[float(v) for v in part.split(",")] for part in points.split(";") if part.strip()]
        except ValueError:
            rows = [[]]
    else:
        rows = np.asarray(points, dtype=np.float64).reshape(-1, 2).tolist() if np.size(points) else []
    if not rows or len(rows) > 2 or any(len(r) != 2 for r in rows) or not np.all(np.isfinite(rows)):
        raise ValueError(f"{arg('rv_insertion', points)}: give one or two RV insertion points as 'Y1,X1;Y2,X2' "
                         "(pixels, row then column; anterior first).")
    return np.asarray(rows, np.float64)


def _labels(labels: Any) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"{arg('mask')} must be one 2-D label image (1 LV blood, 2 LV myocardium, 3 RV blood); "
                         f"got shape {array.shape}.")
    if array.dtype.kind == "f" and (not np.all(np.isfinite(array)) or np.any(array != np.round(array))):
        raise ValueError(f"{arg('mask')}: labels must be integers (1 LV blood, 2 LV myocardium, 3 RV blood).")
    return array.astype(np.int64)


def lv_centre(labels: Any) -> np.ndarray:
    """``(y, x)`` of the LV centre: centroid of label 1, else of label 2."""
    lab = _labels(labels)
    for value in (_BLOOD, _MYOCARDIUM):
        ys, xs = np.nonzero(lab == value)
        if ys.size:
            return np.array([ys.mean(), xs.mean()])
    raise ValueError(f"{arg('mask')} has no LV myocardium (label 2); the segments are parts of it: label the "
                     "myocardium 2.")


def _angle(point: np.ndarray, centre: np.ndarray) -> float:
    return math.atan2(point[0] - centre[0], point[1] - centre[1])


def septal_geometry(labels: Any, insertion_points: Any) -> dict[str, Any]:
    """Centre, start angle, direction and septal arc of the convention (module docstring).

    Returns ``{"centre": (y, x), "start": radians of the anterior point, "direction": +1 or -1
    (in image ``atan2(y, x)`` angles), "septal_arc": radians}``.
    """
    lab = _labels(labels)
    points = parse_insertion_points(insertion_points)
    if not (lab == _MYOCARDIUM).any():
        raise ValueError(f"{arg('mask')} has no LV myocardium (label 2); the segments are parts of it: label the "
                         "myocardium 2.")
    centre = lv_centre(lab)
    for p in points:
        if not (0 <= p[0] < lab.shape[0] and 0 <= p[1] < lab.shape[1]):
            raise ValueError(f"{arg('rv_insertion')}: the point ({p[0]:g}, {p[1]:g}) is outside the "
                             f"{lab.shape[0]} x {lab.shape[1]} image; give (row, column) pixels.")
        if np.hypot(*(p - centre)) < 1.0:
            raise ValueError(f"{arg('rv_insertion')}: the point ({p[0]:g}, {p[1]:g}) is the LV centre; give the "
                             "points where the RV wall meets the LV epicardium.")
    start = _angle(points[0], centre)
    rv = np.argwhere(lab == _RV)
    rv_angle = _angle(rv.mean(0), centre) if rv.size else None
    two_pi = 2.0 * math.pi
    if len(points) == 2:
        arc_plus = (_angle(points[1], centre) - start) % two_pi
        if arc_plus < 1e-6:
            raise ValueError(f"{arg('rv_insertion')}: the two insertion points lie in the same direction from the LV "
                             "centre; give the anterior and the inferior insertion point.")
        if rv_angle is not None:
            direction = 1 if 0.0 < (rv_angle - start) % two_pi < arc_plus else -1
        else:
            direction = 1 if arc_plus < math.pi else -1
        septal_arc = arc_plus if direction == 1 else two_pi - arc_plus
    else:
        if rv_angle is None:
            raise ValueError(f"{arg('rv_insertion')}: with one insertion point the septal side comes from the RV blood "
                             f"pool (label 3) of {arg('mask')}; label the RV or give both insertion points.")
        direction = 1 if (rv_angle - start) % two_pi < math.pi else -1
        septal_arc = two_pi / 3.0
    return {"centre": tuple(float(c) for c in centre), "start": float(start), "direction": int(direction),
            "septal_arc": float(septal_arc)}


def _segment_of_angle(alpha: np.ndarray, septal_arc: float, level: str) -> np.ndarray:
    """Segment numbers for angles ``alpha`` (radians from the anterior point, towards the septum)."""
    two_pi = 2.0 * math.pi
    if level == "apical":
        beta = (alpha - septal_arc / 2.0 + math.pi / 4.0) % two_pi
        index = np.minimum((beta // (math.pi / 2.0)).astype(np.int64), 3)
        return np.array([14, 15, 16, 13])[index]
    base = 0 if level == "basal" else 6
    septum = alpha < septal_arc
    half = np.where(alpha < septal_arc / 2.0, 2, 3)
    free = np.minimum(((alpha - septal_arc) / (two_pi - septal_arc) * 4.0).astype(np.int64), 3)
    free_segment = np.array([4, 5, 6, 1])[np.clip(free, 0, 3)]
    return base + np.where(septum, half, free_segment)


def assign_segments(labels: Any, insertion_points: Any, level: str = "mid") -> np.ndarray:
    """AHA segment of every LV myocardium pixel (label 2), 0 elsewhere, ``int16 (H, W)``.

    Parameters
    ----------
    labels : array_like (H, W)
        1 LV blood pool, 2 LV myocardium, 3 RV blood pool (label 3 decides the septal side).
    insertion_points : str or array_like (K, 2)
        RV insertion points ``(y, x)`` in pixels, anterior first, K = 1 or 2.
    level : {"basal", "mid", "apical"}

    Raises
    ------
    ValueError
        No myocardium, a point outside the image, or one point without an RV label.
    """
    level = _check_level(level)
    lab = _labels(labels)
    geo = septal_geometry(lab, insertion_points)
    ys, xs = np.nonzero(lab == _MYOCARDIUM)
    cy, cx = geo["centre"]
    theta = np.arctan2(ys - cy, xs - cx)
    alpha = (geo["direction"] * (theta - geo["start"])) % (2.0 * math.pi)
    out = np.zeros(lab.shape, np.int16)
    out[ys, xs] = _segment_of_angle(alpha, geo["septal_arc"], level)
    return out


def segment_statistics(values: Any, segments: Any, level: str = "mid") -> list[dict[str, Any]]:
    """Mean, SD (ddof 1), median and pixel count of ``values`` per segment of ``level``.

    ``n_pixels`` counts the segment's pixels with a finite value (those the statistics are over);
    ``n_excluded`` those without (a failed fit). Every segment of the level has a row, ``None``
    statistics where it has no valid pixel.
    """
    level = _check_level(level)
    v = np.asarray(values, np.float64)
    seg = np.asarray(segments)
    if v.shape != seg.shape:
        raise ValueError(f"the map has shape {v.shape} but the segments are {seg.shape}; use a map on the label "
                         "image's grid.")
    rows = []
    for number in LEVEL_SEGMENTS[level]:
        inside = v[seg == number]
        good = inside[np.isfinite(inside)]
        rows.append({
            "segment": int(number),
            "name": SEGMENT_NAMES[number],
            "mean": float(good.mean()) if good.size else None,
            "sd": float(good.std(ddof=1)) if good.size > 1 else None,
            "median": float(np.median(good)) if good.size else None,
            "n_pixels": int(good.size),
            "n_excluded": int(inside.size - good.size),
        })
    return rows


def segment_boundaries(segments: Any) -> np.ndarray:
    """Pixels of ``segments`` whose 4-neighbour belongs to another segment or to none
    (uint8 (H, W): the segment number there, 0 elsewhere) — the overlay of the boundaries."""
    seg = np.asarray(segments).astype(np.int64)
    edge = np.zeros(seg.shape, bool)
    edge[1:, :] |= seg[1:, :] != seg[:-1, :]
    edge[:-1, :] |= seg[:-1, :] != seg[1:, :]
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    return np.where(edge & (seg > 0), seg, 0).astype(np.uint8)


def segment_label_positions(segments: Any) -> dict[int, tuple[float, float]]:
    """``{segment: (y, x)}``: the pixel of each segment nearest its mean position (for its number)."""
    seg = np.asarray(segments)
    out = {}
    for number in np.unique(seg):
        if number == 0:
            continue
        pts = np.argwhere(seg == number).astype(np.float64)
        nearest = pts[np.argmin(((pts - pts.mean(0)) ** 2).sum(1))]
        out[int(number)] = (float(nearest[0]), float(nearest[1]))
    return out


def myocardium_core(labels: Any, erode_px: int = 0) -> np.ndarray:
    """The LV myocardium (label 2) without its border pixels: bool (H, W).

    ``erode_px`` binary erosions (4-neighbour cross; the image edge counts as outside) remove the
    pixels that touch blood, fat or lung, whose values mix the two tissues (partial volume: on
    the 3 mm ECV phantoms the whole label's mean ECV is ~2.4 %-points high, its core's is not).
    ``0``: the whole label.

    Raises
    ------
    ValueError
        A negative ``erode_px``, or one that leaves no myocardium pixel.
    """
    from scipy import ndimage

    lab = _labels(labels)
    if int(erode_px) != erode_px or erode_px < 0:
        raise ValueError(f"{arg('erode_px')} must be a whole number of pixels >= 0; got {erode_px!r}.")
    myo = lab == _MYOCARDIUM
    if erode_px == 0 or not myo.any():
        return myo
    core = ndimage.binary_erosion(myo, iterations=int(erode_px))
    if not core.any():
        raise ValueError(f"{arg('erode_px', int(erode_px))} removes every LV myocardium pixel (label 2 is at most "
                         f"{2 * int(erode_px)} pixels thick somewhere); use a smaller value.")
    return core


def level_of(segments: Sequence[int]) -> str:
    """The level whose numbers ``segments`` are."""
    for level, numbers in LEVEL_SEGMENTS.items():
        if set(segments) <= set(numbers):
            return level
    raise ValueError(f"segments {sorted(segments)} are not of one level")
