"""Spatial transforms on displacement fields (torch, CPU or CUDA).

Convention (``docs/design.md`` §2): a displacement ``u`` is ``(N, 2, H, W)`` in **pixels**, with
components ``(dy, dx)``, and is a **pull-back**: ``registered_i(x) = frame_i(x + u_i(x))``.

All pixel ↔ normalised-coordinate conversion happens in :func:`pixel_to_normalised` (and its
inverse); nothing else in the project converts coordinates for ``grid_sample``.

Functions accept numpy arrays or torch tensors; numpy in → numpy out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "pixel_to_normalised",
    "normalised_to_pixel",
    "identity_grid",
    "warp",
    "warp_images",
    "warp_labels",
    "compose_displacements",
    "upsample_displacement",
    "resize_displacement",
    "jacobian_determinant",
    "folding_fraction",
    "invert_displacement",
    "map_points_to_common",
    "sample_displacement_at_points",
    "gaussian_smooth",
]


# ------------------------------------------------------------------ array helpers
def _as_tensor(x: Any, dtype=torch.float32, device=None) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)``."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device or x.device), False
    array = np.asarray(x)
    if not array.flags.writeable:  # torch warns on read-only buffers; copy, never write back
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device), True


def _back(x: torch.Tensor, was_numpy: bool, dtype=np.float32):
    return x.detach().cpu().numpy().astype(dtype, copy=False) if was_numpy else x


# ------------------------------------------------------------------ coordinates
def pixel_to_normalised(displacement: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Convert a ``(..., 2, H, W)`` pixel displacement ``(dy, dx)`` to ``grid_sample`` units.

    With ``align_corners=True`` the first and last pixel centres sit at -1 and +1, so one pixel
    is ``2 / (size - 1)`` normalised units. The returned field has components ``(dx, dy)``
    (``grid_sample``'s ``(x, y)`` order) and is laid out ``(..., H, W, 2)``.
    """
    h, w = shape
    scale = displacement.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    xy = torch.stack((displacement[..., 1, :, :], displacement[..., 0, :, :]), dim=-1)
    return xy * scale


def normalised_to_pixel(grid_xy: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalised`: ``(..., H, W, 2)`` ``(x, y)`` → ``(..., 2, H, W)``."""
    h, w = shape
    scale = grid_xy.new_tensor([(max(w - 1, 1)) / 2.0, (max(h - 1, 1)) / 2.0])
    px = grid_xy * scale
    return torch.stack((px[..., 1], px[..., 0]), dim=-3)


def identity_grid(shape: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised identity sampling grid ``(1, H, W, 2)`` in ``(x, y)`` order."""
    h, w = shape
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype) if h > 1 else torch.zeros(1, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype) if w > 1 else torch.zeros(1, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)[None]


def _pixel_coordinates(shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates ``(2, H, W)`` with components ``(y, x)``."""
    h, w = shape
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gy, gx), dim=0)


# ------------------------------------------------------------------ warping
def warp(
    images: torch.Tensor,
    displacement: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Pull-back warp of ``images`` ``(N, C, H, W)`` by ``displacement`` ``(N, 2, H, W)`` (tensors).

    ``out[i](x) = images[i](x + u_i(x))``. Differentiable with respect to both inputs.
    """
    shape = tuple(images.shape[-2:])
    grid = identity_grid(shape, images.device, images.dtype) + pixel_to_normalised(
        displacement.to(images.dtype), shape
    )
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def warp_images(frames, displacement, padding_mode: str = "border"):
    """Warp a stack of frames ``(N, H, W)`` with bilinear interpolation (pull-back).

    Parameters
    ----------
    frames : ndarray or Tensor, shape (N, H, W)
    displacement : ndarray or Tensor, shape (N, 2, H, W)
        Pixels, components ``(dy, dx)``.

    Returns
    -------
    warped : same type as ``frames``, shape (N, H, W)
    """
    img, was_numpy = _as_tensor(frames)
    disp, _ = _as_tensor(displacement, device=img.device)
    _check_pair(img, disp)
    out = warp(img[:, None], disp, "bilinear", padding_mode)[:, 0]
    return _back(out, was_numpy)


def warp_labels(labels, displacement):
    """Warp integer labels ``(N, H, W)`` (or ``(H, W)`` broadcast to N) with nearest neighbour."""
    lab = np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels
    was_numpy = not isinstance(lab, torch.Tensor)
    disp, _ = _as_tensor(displacement)
    if lab.ndim == 2:
        lab = lab[None].repeat(disp.shape[0], 0) if was_numpy else lab[None].expand(disp.shape[0], -1, -1)
    lab_t, _ = _as_tensor(lab, device=disp.device)
    _check_pair(lab_t, disp)
    out = warp(lab_t[:, None], disp, "nearest", "border")[:, 0].round()
    if was_numpy:
        return out.cpu().numpy().astype(np.asarray(labels).dtype)
    return out.to(labels.dtype)


def _check_pair(images: torch.Tensor, disp: torch.Tensor) -> None:
    if disp.ndim != 4 or disp.shape[1] != 2:
        raise ValueError(f"displacement must be (N, 2, H, W); got {tuple(disp.shape)}")
    if images.shape[0] != disp.shape[0] or tuple(images.shape[-2:]) != tuple(disp.shape[-2:]):
        raise ValueError(
            f"frames {tuple(images.shape)} and displacement {tuple(disp.shape)} do not match"
        )


# ------------------------------------------------------------------ field algebra
def compose_displacements(first, second):
    """Displacement of the composed pull-back: apply ``second`` after ``first``.

    For pull-back fields, warping by ``first`` then by ``second`` samples
    ``f(y + first(y))`` at ``y = x + second(x)``, so the composed field is
    ``w(x) = second(x) + first(x + second(x))``. In coarse-to-fine registration ``first`` is
    the coarse field and ``second`` the fine increment estimated on the coarsely warped images.
    """
    a, was_numpy = _as_tensor(first)
    b, _ = _as_tensor(second, device=a.device)
    out = b + warp(a, b, "bilinear", "border")
    return _back(out, was_numpy)


def upsample_displacement(displacement, shape: tuple[int, int]):
    """Resample a ``(N, 2, h, w)`` field to ``shape`` and rescale its pixel units.

    Sampling uses ``align_corners=True`` so corner pixels map onto corner pixels; the vectors
    are multiplied by ``(H-1)/(h-1)`` and ``(W-1)/(w-1)`` because they are in pixels.
    """
    d, was_numpy = _as_tensor(displacement)
    h, w = d.shape[-2:]
    H, W = shape
    out = F.interpolate(d, size=(H, W), mode="bilinear", align_corners=True)
    factor = out.new_tensor([(H - 1) / max(h - 1, 1), (W - 1) / max(w - 1, 1)]).view(1, 2, 1, 1)
    return _back(out * factor, was_numpy)


resize_displacement = upsample_displacement  # down-sampling uses the same arithmetic


def gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of a ``(N, C, H, W)`` tensor (reflect padding)."""
    if sigma <= 0:
        return field
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=field.device, dtype=field.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    n, c, h, w = field.shape
    flat = field.reshape(n * c, 1, h, w)
    pad_y, pad_x = min(radius, h - 1), min(radius, w - 1)
    ky = kernel[radius - pad_y : radius + pad_y + 1]
    kx = kernel[radius - pad_x : radius + pad_x + 1]
    ky, kx = ky / ky.sum(), kx / kx.sum()
    flat = _filter_1d(F.pad(flat, (0, 0, pad_y, pad_y), mode="reflect"), ky, dim=-2)
    flat = _filter_1d(F.pad(flat, (pad_x, pad_x, 0, 0), mode="reflect"), kx, dim=-1)
    return flat.reshape(n, c, h, w)


def _filter_1d(padded: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Valid 1-D correlation of ``(B, 1, H, W)`` with ``kernel`` along ``dim`` (-2 or -1)."""
    taps = kernel.numel()
    if taps > 13:
        shape = (1, 1, -1, 1) if dim == -2 else (1, 1, 1, -1)
        return F.conv2d(padded, kernel.view(shape))
    # short kernels (MIND's sigma = 0.8 has 5 taps) as a sum of shifted slices: a
    # single-channel conv2d runs at a fraction of memory speed on CPU (MIND descriptors were
    # a third of the network engine's time; this is about 6x faster, same values to 1e-7)
    size = padded.shape[dim] - taps + 1
    out = kernel[0] * padded.narrow(dim, 0, size)
    for k in range(1, taps):
        out = out + kernel[k] * padded.narrow(dim, k, size)
    return out


# ------------------------------------------------------------------ Jacobian
def _spatial_gradient(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (one-sided at the borders) along y and x of ``(N, C, H, W)``."""
    gy = torch.empty_like(d)
    gx = torch.empty_like(d)
    gy[..., 1:-1, :] = (d[..., 2:, :] - d[..., :-2, :]) / 2
    gy[..., 0, :] = d[..., 1, :] - d[..., 0, :]
    gy[..., -1, :] = d[..., -1, :] - d[..., -2, :]
    gx[..., :, 1:-1] = (d[..., :, 2:] - d[..., :, :-2]) / 2
    gx[..., :, 0] = d[..., :, 1] - d[..., :, 0]
    gx[..., :, -1] = d[..., :, -1] - d[..., :, -2]
    return gy, gx


def jacobian_determinant(displacement):
    """Determinant of ``I + ∇u`` per pixel, shape ``(N, H, W)``.

    Values below 1 mean local compression, above 1 expansion, and ``<= 0`` folding. Derivatives
    are central differences in pixel units (spacing-independent for isotropic pixels; an
    anisotropic spacing scales both the identity and the gradient equally, so the determinant is
    unchanged).
    """
    d, was_numpy = _as_tensor(displacement)
    if d.ndim == 3:
        d = d[None]
    gy, gx = _spatial_gradient(d)
    # rows: (y, x) components; columns: derivatives along (y, x)
    det = (1 + gy[:, 0]) * (1 + gx[:, 1]) - gx[:, 0] * gy[:, 1]
    return _back(det, was_numpy)


def folding_fraction(displacement, mask=None) -> float:
    """Fraction (0–1) of pixels with ``det(I + ∇u) <= 0``, optionally inside ``mask``."""
    det = jacobian_determinant(displacement)
    det = det.detach().cpu().numpy() if isinstance(det, torch.Tensor) else det
    folded = det <= 0
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, bool), folded.shape)
        return float(folded[m].mean()) if m.any() else 0.0
    return float(folded.mean())


# ------------------------------------------------------------------ inversion / points
def invert_displacement(displacement, iterations: int = 30):
    """Inverse pull-back field ``v`` with ``x + u(x) = y  ⇔  y + v(y) = x``.

    Solved by the fixed-point iteration ``v(y) = -u(y + v(y))`` (converges for fields whose
    gradient norm is below 1, i.e. any fold-free field a registration produces).
    """
    u, was_numpy = _as_tensor(displacement)
    v = -u
    for _ in range(iterations):
        v = -warp(u, v, "bilinear", "border")
    return _back(v, was_numpy)


def sample_displacement_at_points(displacement: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample one field ``(2, H, W)`` at pixel points ``(P, 2)`` ``(y, x)`` → ``(P, 2)``."""
    shape = tuple(displacement.shape[-2:])
    # points are positions, not displacements: offset from the origin pixel, then convert
    pts = points.T.reshape(1, 2, 1, -1)
    grid = pixel_to_normalised(pts, shape) - 1.0  # pixel 0 sits at -1
    out = F.grid_sample(displacement[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0, :].T


def map_points_to_common(displacement, frame_index: int, points, iterations: int = 50):
    """Map points seen in frame ``i`` to the common grid: solve ``x + u_i(x) = p``.

    Parameters
    ----------
    displacement : (N, 2, H, W)
    frame_index : int
    points : (P, 2) pixel positions ``(y, x)`` in frame ``frame_index``

    Returns
    -------
    (P, 2) positions on the common (registered) grid.
    """
    u, was_numpy = _as_tensor(displacement)
    p, _ = _as_tensor(points, device=u.device)
    field = u[frame_index]
    x = p.clone()
    for _ in range(iterations):
        x = p - sample_displacement_at_points(field, x)
    return _back(x, was_numpy)
