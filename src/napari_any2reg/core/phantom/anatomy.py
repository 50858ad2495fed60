"""The phantom's anatomy: a random short-axis layout in millimetres (body wall, lungs, liver,
aorta, LV, RV), rendered with anti-aliased edges into per-component coverage maps, the
landmark positions, and the smooth random fields used for texture, coil bias and motion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial import gaussian_smooth
from .tissues import _COMPONENTS, _INDEX


# ====================================================================== anatomy
def _draw_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Random short-axis anatomy in mm, origin at the image centre, ``y`` down (posterior),
    ``x`` right (patient's left). Image top = anterior chest wall, image left = patient's
    right (liver, RV side)."""
    u = rng.uniform
    a: dict[str, Any] = {}
    # body ellipse with a subcutaneous fat layer and a chest-wall muscle layer
    by, bx = u(0.0, 12.0), u(-10.0, 6.0)
    body_rx, body_ry = u(125.0, 150.0), u(95.0, 115.0)
    fat, wall = u(6.0, 14.0), u(8.0, 14.0)
    a.update(body_centre=(by, bx), body_radii=(body_rx, body_ry), body_angle_deg=u(-5.0, 5.0),
             fat_mm=fat, chest_wall_mm=wall)
    # thoracic cavity (lungs): under the anterior chest wall, posterior body is muscle/spine
    cav_rx = body_rx - fat - wall - u(5.0, 15.0)
    cav_ry = (body_ry - fat - wall) * u(0.75, 0.85)
    cav_cy = by - body_ry + fat + wall + cav_ry + 1.0
    a.update(cavity_centre=(cav_cy, bx + u(-4.0, 4.0)), cavity_radii=(cav_rx, cav_ry))
    # heart
    ly, lx = u(-8.0, 8.0), u(-2.0, 12.0)
    r_endo = u(20.0, 25.0)
    r_epi = r_endo + u(8.0, 11.0)
    septal = math.pi + math.radians(u(-12.0, 12.0))  # direction LV centre -> septum (image left)
    half = math.radians(u(50.0, 65.0))  # half angle between the RV insertion points
    # RV ellipse centre distance from the LV centre: a little beyond the chord joining the
    # insertion points, so the RV cavity meets the epicardium at a clear angle
    d = r_epi * (math.cos(half) + u(0.05, 0.2))
    rv_width = u(14.0, 22.0)
    rv_along = rv_width + r_epi - d
    ratio = (r_epi * math.cos(half) - d) / rv_along
    rv_across = r_epi * math.sin(half) / math.sqrt(1.0 - ratio**2)  # passes through the insertions
    a.update(lv_centre=(ly, lx), r_endo=r_endo, r_epi=r_epi, septal_angle=septal, insertion_half_angle=half,
             rv_centre=(ly + d * math.sin(septal), lx + d * math.cos(septal)), rv_radii=(rv_along, rv_across),
             rv_wall_mm=u(3.0, 5.0), rv_width_mm=rv_width)
    pap = []
    for sign in (-1.0, 1.0):  # antero-lateral and infero-lateral papillary muscles
        ang = septal + math.pi + sign * math.radians(u(30.0, 50.0))
        rp = u(2.5, 4.0)
        rad = r_endo - 0.7 * rp
        pap.append((ly + rad * math.sin(ang), lx + rad * math.cos(ang), rp))
    a["papillary"] = pap
    # mediastinal fat around the heart and an anterior band to the chest wall (splits the lungs)
    hy, hx = ly + 0.35 * d * math.sin(septal), lx + 0.35 * d * math.cos(septal) - 0.3 * rv_width
    a["mediastinum"] = ((hy, hx), (r_epi + 0.6 * rv_width + u(3.0, 8.0), r_epi * 1.15 + u(2.0, 6.0)))
    top = cav_cy - cav_ry
    band_half = max((ly - r_epi - top) / 2.0 + 12.0, 10.0)
    a["anterior_mediastinum"] = ((top + band_half - 8.0, lx - 0.4 * r_epi), (u(8.0, 15.0), band_half))
    # posterior mediastinum with the descending aorta, near the bottom of the cavity
    bottom = cav_cy + cav_ry
    ar = u(9.0, 12.0)
    ay, ax = bottom - ar - u(2.0, 8.0), lx + u(0.0, 15.0)
    a.update(aorta=(ay, ax, ar), posterior_mediastinum=((ay + 6.0, ax - 12.0), (u(24.0, 32.0), u(18.0, 24.0))))
    # liver: lower left of the image (patient's right, inferior)
    a.update(liver_centre=(ly + u(50.0, 70.0), lx - u(55.0, 75.0)), liver_radii=(u(60.0, 85.0), u(40.0, 55.0)),
             liver_angle_deg=u(-25.0, -5.0))
    # texture / coil bias
    a["bias_slope"] = u(-0.25, -0.05)
    return a


def _grid_mm(shape, spacing):
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2.0) * np.float32(spacing[0])
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2.0) * np.float32(spacing[1])
    return np.meshgrid(y, x, indexing="ij")


def _ellipse_distance(Y, X, centre, radii, angle_rad=0.0):
    """Approximate signed distance (mm, negative inside) to an ellipse whose first radius
    lies along the direction ``(sin angle, cos angle)`` in ``(y, x)``."""
    dy, dx = Y - np.float32(centre[0]), X - np.float32(centre[1])
    c, s = np.float32(math.cos(angle_rad)), np.float32(math.sin(angle_rad))
    a = c * dx + s * dy
    b = -s * dx + c * dy
    ra, rb = np.float32(radii[0]), np.float32(radii[1])
    q = np.maximum(np.sqrt((a / ra) ** 2 + (b / rb) ** 2), np.float32(1e-9))
    grad = np.sqrt((a / ra**2) ** 2 + (b / rb**2) ** 2) / q
    return (q - 1.0) / np.maximum(grad, np.float32(1e-6))


def _coverage(distance, edge_mm):
    """Pixel coverage from a signed distance: a smoothstep 1.5 pixels wide (anti-aliasing,
    like the blur of a band-limited MR image); pure tissue from 0.75 pixel inside."""
    c = np.clip(0.5 - distance / np.float32(1.5 * edge_mm), 0.0, 1.0)
    return c * c * (3.0 - 2.0 * c)


def _paints(anat, edge):
    """The anatomy as a painter's list ``[(component, coverage, extent), ...]`` in painting
    order (later paints cover earlier ones). ``coverage(Y, X)`` evaluates the shape at mm
    positions; ``extent = (cy, cx, r)`` is a disc (mm) outside which the coverage is 0, or
    ``None`` for shapes that span the image."""

    def ellipse(centre, radii, angle=0.0, grow=0.0):
        ra, rb = radii[0] + grow, radii[1] + grow
        return (lambda Y, X: _coverage(_ellipse_distance(Y, X, centre, (ra, rb), angle), edge),
                (centre[0], centre[1], max(ra, rb)))

    def circle(cy, cx, r):
        cy, cx, r = np.float32(cy), np.float32(cx), np.float32(r)
        return lambda Y, X: _coverage(np.sqrt((Y - cy) ** 2 + (X - cx) ** 2) - r, edge), (float(cy), float(cx), float(r))

    body_angle = math.radians(anat["body_angle_deg"])
    cache: dict[float, tuple[Any, np.ndarray]] = {}

    def body(Y, X, grow=0.0):  # the body ellipses span the image and are used twice: cache
        if grow not in cache or cache[grow][0] is not Y:
            cache[grow] = (Y, ellipse(anat["body_centre"], anat["body_radii"], body_angle, grow=grow)[0](Y, X))
        return cache[grow][1]

    fat, wall = anat["fat_mm"], anat["chest_wall_mm"]
    septal = anat["septal_angle"]
    (med_c, med_r), (band_c, band_r) = anat["mediastinum"], anat["anterior_mediastinum"]
    mediastinum, band = ellipse(med_c, med_r)[0], ellipse(band_c, band_r)[0]
    paints = [
        ("chest_wall", lambda Y, X: body(Y, X), None),
        ("lung", *ellipse(anat["cavity_centre"], anat["cavity_radii"])),
        ("posterior_mediastinum", *ellipse(*anat["posterior_mediastinum"])),
        ("aorta", *circle(*anat["aorta"])),
        ("liver", *ellipse(anat["liver_centre"], anat["liver_radii"], math.radians(anat["liver_angle_deg"]))),
        ("mediastinal_fat", lambda Y, X: np.maximum(mediastinum(Y, X), band(Y, X)), None),
        ("rv_wall", *ellipse(anat["rv_centre"], anat["rv_radii"], septal, grow=anat["rv_wall_mm"])),
        ("rv_blood", *ellipse(anat["rv_centre"], anat["rv_radii"], septal)),
        ("lv_myocardium", *circle(*anat["lv_centre"], anat["r_epi"])),
        ("lv_blood", *circle(*anat["lv_centre"], anat["r_endo"])),
    ]
    paints += [("papillary", *circle(*p)) for p in anat["papillary"]]
    paints += [  # chest wall and subcutaneous fat last, so organs stop at the ribs
        ("chest_wall", lambda Y, X: body(Y, X, -fat) * (1.0 - body(Y, X, -fat - wall)), None),
        ("subcutaneous_fat", lambda Y, X: body(Y, X) * (1.0 - body(Y, X, -fat)), None),
        ("air", lambda Y, X: 1.0 - body(Y, X), None),  # nothing outside the body
    ]
    return paints


def _render(anat, Y, X, edge, axes, margin_mm=0.0, values=None, fractions=False) -> dict[str, np.ndarray]:
    """Composite the anatomy at mm positions ``(Y, X)`` (shape ``S = (..., H, W)``).

    Paints are applied from the top down: each contributes ``coverage * remaining`` and what
    is left underneath shrinks by ``1 - coverage`` (the same fractions as painting bottom-up).
    A shape with a finite extent is only evaluated on the block of pixels it can reach.

    Parameters
    ----------
    axes : (ndarray (H,), ndarray (W,))
        Grid positions (mm); ``Y[..., i, j]`` lies within ``margin_mm`` of
        ``(axes[0][i], axes[1][j])``.
    values : callable, optional
        ``values(k, index)`` is the signal of component ``k`` on the block ``index`` of ``S``;
        the image ``sum_k fraction_k * values(k)`` is returned under ``"image"``.
    fractions : bool
        Also return the per-component fractions ``(K,) + S`` under ``"fractions"``.

    Returns
    -------
    dict with ``"dominant"``: index of the component with the largest single contribution.
    """
    shape = np.broadcast_shapes(Y.shape, X.shape)
    remaining = np.ones(shape, np.float32)
    best = np.zeros(shape, np.float32)
    dominant = np.zeros(shape, np.int64)
    image = None
    out: dict[str, np.ndarray] = {}
    if fractions:
        out["fractions"] = np.zeros((len(_COMPONENTS),) + shape, np.float32)
    layers = [(_INDEX[name], f, extent) for name, f, extent in _paints(anat, edge)][::-1]
    layers.append((_INDEX["air"], lambda Y_, X_: np.ones(np.broadcast_shapes(Y_.shape, X_.shape), np.float32), None))
    full = (Ellipsis, slice(None), slice(None))
    for k, coverage, extent in layers:
        index = full
        if extent is not None:
            # coverage vanishes 0.75 pixel outside a shape; 3 pixels also covers the
            # first-order ellipse distance of elongated ellipses (aspect ratio >= 1/4)
            reach = extent[2] + 3.0 * edge + margin_mm
            rows = np.nonzero(np.abs(axes[0] - extent[0]) <= reach)[0]
            cols = np.nonzero(np.abs(axes[1] - extent[1]) <= reach)[0]
            if rows.size == 0 or cols.size == 0:
                continue
            index = (Ellipsis, slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        mask = coverage(Y[index], X[index])
        contribution = mask * remaining[index]
        remaining[index] *= 1.0 - mask
        larger = contribution > best[index]
        best[index] = np.where(larger, contribution, best[index])
        dominant[index] = np.where(larger, k, dominant[index])
        if fractions:
            out["fractions"][(k,) + index] += contribution
        if values is not None:
            term = contribution * values(k, index)
            if image is None:
                image = np.zeros(np.broadcast_shapes(shape, term.shape[:-2] + shape[-2:]), np.float32)
            image[index] += term
    out["dominant"] = dominant
    if values is not None:
        out["image"] = image
    return out


def _landmarks_mm(anat) -> dict[str, tuple[float, float]]:
    """RV insertion points (where the RV cavity meets the LV epicardium) and the LV centre."""
    ly, lx = anat["lv_centre"]
    r, s, h = anat["r_epi"], anat["septal_angle"], anat["insertion_half_angle"]
    points = [(ly + r * math.sin(s + k * h), lx + r * math.cos(s + k * h)) for k in (-1.0, 1.0)]
    anterior, inferior = sorted(points)  # anterior = smaller y (top of the image)
    return {"rv_insertion_anterior": anterior, "rv_insertion_inferior": inferior, "lv_centre": (ly, lx)}


def _smooth_noise(rng, n, shape, spacing, correlation_mm) -> torch.Tensor:
    """``n`` smooth random fields ``(n, H, W)`` with unit standard deviation, correlation
    length ~``correlation_mm``: Gaussian-smoothed noise on a coarse grid, bicubic upsampled."""
    h, w = shape
    step = correlation_mm / 2.0
    gh = int(min(h, max(4, math.ceil((h - 1) * spacing[0] / step) + 1)))
    gw = int(min(w, max(4, math.ceil((w - 1) * spacing[1] / step) + 1)))
    z = torch.from_numpy(rng.standard_normal((n, 1, gh, gw), dtype=np.float32))
    z = gaussian_smooth(z, 1.0)
    z = z - z.mean(dim=(-2, -1), keepdim=True)
    z = z / z.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return F.interpolate(z, size=(h, w), mode="bicubic", align_corners=True)[:, 0]
