"""The phantom's known motion: respiratory translation and rotation weighted toward the heart
and liver, smooth non-rigid perturbations, and the cardiac contraction of cine (blood pool
shrinks, myocardium thickens at constant area, RV squeezes)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage, special

from ..spatial import gaussian_smooth
from .anatomy import _ellipse_distance, _grid_mm, _smooth_noise


# ====================================================================== motion
def _motion_weight(anat, shape, spacing, wall_weight=0.25) -> np.ndarray:
    """1 around the heart and liver (thoracic cavity), decaying to ``wall_weight`` at the
    body wall: the chest wall moves less than the heart with breathing."""
    Y, X = _grid_mm(shape, spacing)
    d = np.minimum(
        _ellipse_distance(Y, X, anat["cavity_centre"], anat["cavity_radii"]),
        _ellipse_distance(Y, X, anat["liver_centre"], anat["liver_radii"], math.radians(anat["liver_angle_deg"])),
    )
    w = wall_weight + (1.0 - wall_weight) * special.expit(-(d + 5.0) / 8.0)
    sigma_px = 5.0 / float(min(spacing))
    return gaussian_smooth(torch.from_numpy(w.astype(np.float32))[None, None], sigma_px)[0, 0].numpy()


def _breathing_displacement(rng, anat, n, shape, spacing, motion_mm, rotation_deg, nonrigid_mm, nonrigid_scale_mm):
    """Respiratory translation + rotation about the LV centre (weighted) + smooth non-rigid
    field, in pixels ``(N, 2, H, W)``, zero-mean over frames. Also returns per-frame values."""
    # breathing positions: superior-inferior (image y) spans exactly motion_mm over the frames
    s = rng.uniform(0.0, 1.0, n)
    if np.ptp(s) > 0:
        s = (s - s.min()) / np.ptp(s)
    ap_ratio = rng.uniform(-0.35, 0.35)
    ty = motion_mm * s
    tx = motion_mm * (ap_ratio * s + 0.1 * rng.uniform(-1.0, 1.0, n))
    theta = np.radians(rotation_deg) * rng.uniform(-1.0, 1.0, n)
    ty, tx, theta = ty - ty.mean(), tx - tx.mean(), theta - theta.mean()
    weight = torch.from_numpy(_motion_weight(anat, shape, spacing))
    Y, X = (torch.from_numpy(g) for g in _grid_mm(shape, spacing))
    ry, rx = Y - anat["lv_centre"][0], X - anat["lv_centre"][1]
    th = torch.from_numpy(theta.astype(np.float32)).view(-1, 1, 1)
    cos, sin = torch.cos(th), torch.sin(th)
    dy_mm = (cos - 1) * ry + sin * rx + torch.from_numpy(ty.astype(np.float32)).view(-1, 1, 1)
    dx_mm = -sin * ry + (cos - 1) * rx + torch.from_numpy(tx.astype(np.float32)).view(-1, 1, 1)
    u_mm = torch.stack((dy_mm, dx_mm), dim=1) * weight
    if nonrigid_mm > 0:
        fields = _smooth_noise(rng, 2 * n, shape, spacing, nonrigid_scale_mm).view(n, 2, *shape)
        u_mm = u_mm + (nonrigid_mm / math.sqrt(2.0)) * fields * (0.5 + 0.5 * weight)
    u_mm = u_mm - u_mm.mean(dim=0, keepdim=True)  # groupwise centring: common grid = mean position
    scale = torch.tensor(spacing, dtype=torch.float32).view(1, 2, 1, 1)
    return u_mm / scale, {"translations_mm": np.stack([ty, tx], 1), "rotations_deg": np.degrees(theta)}


def _contraction_profile(phase: np.ndarray, es_phase: float) -> np.ndarray:
    """Contraction state in [0, 1] over the cardiac cycle (0 = end-diastole, 1 = end-systole):
    systole, rapid filling, diastasis, atrial kick."""
    p = np.mod(phase, 1.0)
    fill_end = es_phase + 0.2
    out = np.where(p < es_phase, 0.5 * (1.0 - np.cos(np.pi * p / es_phase)), 0.0)
    rapid = 1.0 - 0.8 * 0.5 * (1.0 - np.cos(np.pi * (p - es_phase) / (fill_end - es_phase)))
    out = np.where((p >= es_phase) & (p < fill_end), rapid, out)
    diastasis = 0.2 - 0.05 * (p - fill_end) / max(0.8 - fill_end, 1e-3)
    out = np.where((p >= fill_end) & (p < 0.8), diastasis, out)
    atrial = 0.15 * 0.5 * (1.0 + np.cos(np.pi * (p - 0.8) / 0.2))
    return np.where(p >= max(0.8, fill_end), atrial, out)


def _radial_ratio(anat, contraction, r, es_radius_ratio, pixel_mm) -> np.ndarray:
    """``rho(r) / r`` of the LV contraction's radius map for each frame, ``(N,) + r.shape``.

    ``rho`` is tabulated on a fine radial grid, made odd in ``r`` and smoothed by a Gaussian
    of 1.5 pixels (keeps it monotonic, hence fold-free, and removes the kinks at the endo- and
    epicardium that bilinear sampling would turn into errors), then interpolated at ``r``.
    """
    r_endo, r_epi = anat["r_endo"], anat["r_epi"]
    step = min(0.1, pixel_mm / 10.0)
    r_max = float(r.max()) + 6.0 * pixel_mm
    grid = np.arange(-6.0 * pixel_mm, r_max + step, step)
    a = np.abs(grid)
    c = np.asarray(contraction, np.float64)[:, None]
    endo_t = r_endo * (1.0 - (1.0 - es_radius_ratio) * c)
    epi_t = np.sqrt(endo_t**2 + (r_epi**2 - r_endo**2))
    rho_blood = a * endo_t / r_endo
    rho_myo = np.sqrt(np.clip(endo_t**2 + a**2 - r_endo**2, 0.0, None))
    rho_out = a + (epi_t - r_epi) * np.exp(-0.5 * (np.clip(a - r_epi, 0.0, None) / 15.0) ** 2)
    rho = np.sign(grid) * np.where(a <= r_endo, rho_blood, np.where(a <= r_epi, rho_myo, rho_out))
    rho = ndimage.gaussian_filter1d(rho, sigma=1.5 * pixel_mm / step, axis=1, mode="nearest")
    ratio_tab = np.where(np.abs(grid) > 1e-9, rho / np.where(grid == 0, 1.0, grid), 0.0)
    # at r = 0 the ratio is rho'(0): take it from the first positive node
    zero = np.argmin(np.abs(grid))
    ratio_tab[:, zero] = ratio_tab[:, zero + 1]
    flat = r.reshape(-1)
    out = np.stack([np.interp(flat, grid[zero:], ratio_tab[i, zero:]) for i in range(c.shape[0])])
    return out.reshape((-1,) + r.shape).astype(np.float32)


def _contraction_displacement(anat, contraction, shape, spacing, es_radius_ratio, rv_squeeze):
    """Cardiac contraction, anatomy (end-diastole) -> frame, in pixels ``(N, 2, H, W)``.

    LV: radial map about the LV centre; the blood pool scales by ``R_endo(t)/R_endo``, every
    myocardial annulus keeps its area (wall thickens), and outside the epicardium the radial
    shift decays over ~15 mm (monotonic radius map: fold-free). RV: a Gaussian-weighted
    squeeze toward the RV centre (fold-free for a squeeze below 1), applied after the LV map.
    """
    Y, X = (torch.from_numpy(g) for g in _grid_mm(shape, spacing))
    ry, rx = Y - anat["lv_centre"][0], X - anat["lv_centre"][1]
    r = torch.sqrt(ry**2 + rx**2)
    c = torch.from_numpy(np.asarray(contraction, np.float32)).view(-1, 1, 1)
    ratio = torch.from_numpy(_radial_ratio(anat, contraction, r.numpy(), es_radius_ratio, min(spacing)))
    py, px = anat["lv_centre"][0] + ry * ratio, anat["lv_centre"][1] + rx * ratio  # positions after LV map
    # RV squeeze evaluated at the LV-mapped positions (analytic composition): the crescent
    # narrows along the septal direction e_s about its middle, u = -g s e_s with a Gaussian g
    # (det J = 1 - g (1 - s^2 / sigma_s^2) >= 1 - rv_squeeze > 0: fold-free).
    ly, lx = anat["lv_centre"]
    es_y, es_x = math.sin(anat["septal_angle"]), math.cos(anat["septal_angle"])
    middle = anat["r_epi"] + 0.5 * anat["rv_width_mm"]
    sy, sx = ly + middle * es_y, lx + middle * es_x
    sigma_s, sigma_p = 0.6 * anat["rv_width_mm"] + 3.0, anat["rv_radii"][1]
    s_coord = (py - sy) * es_y + (px - sx) * es_x
    p_coord = -(py - sy) * es_x + (px - sx) * es_y
    g = torch.exp(-0.5 * (s_coord / sigma_s) ** 2 - 0.5 * (p_coord / sigma_p) ** 2) * (rv_squeeze * c)
    fy, fx = py - g * s_coord * es_y, px - g * s_coord * es_x
    u_mm = torch.stack((fy - Y, fx - X), dim=1)
    return u_mm / torch.tensor(spacing, dtype=torch.float32).view(1, 2, 1, 1)
