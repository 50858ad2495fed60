"""Similarity and regularisation losses for groupwise registration (torch, differentiable).

Frames are ``(N, H, W)`` (or ``(N, P)`` flattened) tensors scaled to about [0, 1]
(see :func:`core.registration.normalise_intensities`); displacements are ``(N, 2, H, W)``
in pixels.
"""

from __future__ import annotations

import torch

__all__ = [
    "pca_weights",
    "weighted_template",
    "parzen_weights",
    "rescale_to_unit",
    "bspline_bin_weights",
    "joint_histograms",
    "conditional_template_entropy",
    "pca_residual_variance",
    "local_ncc",
    "gradient_regulariser",
    "group_motion_penalty",
    "relative_endpoint_loss",
]

_EPS = 1e-8


# ------------------------------------------------------------------ PCA aggregation
def pca_weights(features: torch.Tensor) -> torch.Tensor:
    """Aggregation weights from the leading eigenvector of the frame correlation matrix.

    Each frame's features are flattened and L2-normalised (``v_i``), ``R_ij = <v_i, v_j>``,
    ``w`` is the leading eigenvector of ``R`` with the sign fixed so that ``sum(w) > 0``
    (deterministic, hence permutation-invariant), and ``a_i = |w_i| / sum |w|``.

    Parameters
    ----------
    features : Tensor, shape (N, ...)

    Returns
    -------
    Tensor, shape (N,), non-negative, sums to 1.
    """
    n = features.shape[0]
    raw = features.reshape(n, -1)
    scale = 1.0 / (raw.norm(dim=1) + _EPS)
    w = None
    if n > DIRECT_EIGENVECTOR_MAX_FRAMES and not torch.is_grad_enabled():
        # the rows are normalised inside the products: no normalised copy of every frame's features
        w = _leading_eigenvector_by_power_iteration(raw, scale)
    if w is None:
        v = raw * scale[:, None]
        # eigh on the small N x N matrix in float64: stable and cheap
        _, vectors = torch.linalg.eigh((v @ v.T).double())
        w = vectors[:, -1]
    w = torch.where(w.sum() < 0, -w, w)
    a = w.abs() / (w.abs().sum() + _EPS)
    return a.to(features.dtype)


#: Up to this many frames :func:`pca_weights` forms the N x N correlation matrix (cost
#: ``N^2 D`` for ``D`` features per frame); above it, in inference, power iteration on the
#: features (``~2 k N D`` for ``k`` iterations) keeps the network's time linear in N.
DIRECT_EIGENVECTOR_MAX_FRAMES = 64


def _leading_eigenvector_by_power_iteration(raw: torch.Tensor, scale: torch.Tensor, tolerance: float = 1e-7,
                                            max_iterations: int = 200) -> torch.Tensor | None:
    """Leading eigenvector of ``v v^T`` with ``v = diag(scale) raw`` (float64, unit norm),
    forming neither the matrix nor ``v``.

    ``v`` ``(N, D)`` has unit rows; the frames of a sequence correlate positively, so the
    leading eigenvalue stands well clear of the next and the uniform start converges in a few
    tens of iterations. ``None`` when it has not converged (the caller falls back to eigh).
    """
    n = raw.shape[0]
    u = torch.full((n,), n**-0.5, dtype=torch.float64, device=raw.device)
    for _ in range(max_iterations):
        product = ((raw @ (raw.T @ (u.to(raw.dtype) * scale))) * scale).double()
        new = product / product.norm().clamp_min(1e-300)
        if float((new - u).abs().max()) < tolerance:
            return new
        u = new
    return None


def weighted_template(frames: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Template ``T = sum_i a_i frame_i`` with PCA weights (computed from ``frames`` if not given)."""
    if weights is None:
        weights = pca_weights(frames)
    return torch.tensordot(weights, frames, dims=([0], [0]))


# ------------------------------------------------------------------ CTE
def parzen_weights(values: torch.Tensor, bins: int, sigma: float | None = None) -> torch.Tensor:
    """Soft (Gaussian Parzen) assignment of intensities in [0, 1] to ``bins`` bin centres.

    Returns ``(..., P, bins)`` weights that sum to 1 over bins; differentiable in ``values``.
    """
    centres = torch.linspace(0.0, 1.0, bins, device=values.device, dtype=values.dtype)
    sigma = sigma if sigma is not None else 1.0 / (bins - 1)
    d = values.clamp(-0.1, 1.1).unsqueeze(-1) - centres
    w = torch.exp(-0.5 * (d / sigma) ** 2)
    return w / (w.sum(-1, keepdim=True) + _EPS)


def rescale_to_unit(x: torch.Tensor) -> torch.Tensor:
    """Min–max scale each row of ``(N, P)`` to [0, 1] (histogram range per image)."""
    lo = x.min(dim=1, keepdim=True).values.detach()
    hi = x.max(dim=1, keepdim=True).values.detach()
    return (x - lo) / (hi - lo + _EPS)


def bspline_bin_weights(values: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cubic B-spline Parzen window: the 4 bins each value in [0, 1] touches, and their weights.

    Compact support makes joint histograms O(16 P) instead of O(B^2 P) and keeps the
    weights differentiable in ``values``. Returns ``(index, weight)``, each ``(..., 4)``;
    indices are clamped to ``[0, bins - 1]`` (edge mass folds into the edge bins).
    """
    pos = values.clamp(0.0, 1.0) * (bins - 1)
    base = torch.floor(pos.detach())
    frac = pos - base  # in [0, 1), carries the gradient
    offsets = torch.arange(-1, 3, device=values.device, dtype=values.dtype)
    d = (frac.unsqueeze(-1) - offsets).abs()  # distance to the 4 neighbouring bin centres
    w = torch.where(
        d < 1,
        (4 - 6 * d**2 + 3 * d**3) / 6,
        torch.where(d < 2, (2 - d) ** 3 / 6, torch.zeros_like(d)),
    )
    index = (base.unsqueeze(-1) + offsets).clamp(0, bins - 1).long()
    return index, w


def joint_histograms(frames: torch.Tensor, template: torch.Tensor, bins: int,
                     pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised joint histograms ``(N, B, B)`` of each frame ``(N, P)`` with ``template`` ``(P,)``.

    Intensities must be in [0, 1]. Rows index frame bins, columns template bins.
    ``pixel_weights`` ``(N, P)`` (non-negative, e.g. AdaCS correspondence scores) weight each
    frame's pixels; each histogram is normalised by its frame's total weight.
    """
    n, p = frames.shape
    ia, wa = bspline_bin_weights(frames, bins)  # (N, P, 4)
    it, wt = bspline_bin_weights(template, bins)  # (P, 4)
    flat_index = (ia.unsqueeze(-1) * bins + it.unsqueeze(-2)).reshape(n, -1)  # (N, P*16)
    products = wa.unsqueeze(-1) * wt.unsqueeze(-2)  # (N, P, 4, 4)
    if pixel_weights is not None:
        products = products * pixel_weights.reshape(n, p, 1, 1)
    flat_weight = products.reshape(n, -1)
    frame_offset = (torch.arange(n, device=frames.device) * bins * bins).unsqueeze(1)
    hist = torch.zeros(n * bins * bins, device=frames.device, dtype=frames.dtype)
    hist = hist.index_add(0, (flat_index + frame_offset).reshape(-1), flat_weight.reshape(-1))
    hist = hist.view(n, bins, bins)
    if pixel_weights is None:
        return hist / p
    return hist / pixel_weights.reshape(n, p).sum(dim=1).clamp_min(_EPS).view(n, 1, 1)


def conditional_template_entropy(
    warped: torch.Tensor,
    weights: torch.Tensor | None = None,
    bins: int = 32,
    mask: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conditional template entropy ``H(warped_i | T)`` averaged over frames (lower is better).

    ``T`` is the PCA-weighted template of the warped frames (Any2Reg's similarity);
    ``H(A|T) = H(A,T) - H(T)`` from differentiable joint histograms (cubic B-spline Parzen
    window). Each image is min–max scaled for its histogram, so the measure is insensitive to
    per-frame contrast scaling and to contrast inversion.

    Parameters
    ----------
    warped : Tensor (N, H, W) or (N, P)
    weights : Tensor (N,), optional
        Aggregation weights; by default the (detached) PCA weights of ``warped``.
    bins : int
        Histogram bins.
    mask : Tensor (H, W) or (P,), optional
        Pixels to include (e.g. to drop the border where warped pixels are extrapolated).
    pixel_weights : Tensor (N, H, W) or (N, P), optional
        Per-frame pixel weights of the joint histograms (AdaCS: detached correspondence
        scores, so that pixels without correspondence do not drive the registration).

    Returns
    -------
    Tensor, scalar, in nats.
    """
    n = warped.shape[0]
    x = warped.reshape(n, -1)
    pw = None if pixel_weights is None else pixel_weights.reshape(n, -1)
    if mask is not None:
        keep = mask.reshape(-1).bool()
        x = x[:, keep]
        pw = None if pw is None else pw[:, keep]
    if weights is None:
        weights = pca_weights(x.detach())  # the template moves with x, its weights do not
    template = weighted_template(x, weights)
    joint = joint_histograms(rescale_to_unit(x), rescale_to_unit(template[None])[0], bins, pixel_weights=pw)
    p_t = joint.sum(dim=1)  # (N, B) marginal of the template
    h_joint = -(joint * torch.log(joint + _EPS)).sum(dim=(1, 2))
    h_t = -(p_t * torch.log(p_t + _EPS)).sum(dim=1)
    return (h_joint - h_t).mean()


# ------------------------------------------------------------------ PCA2
def pca_residual_variance(warped: torch.Tensor, k: int = 2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PCA2-style metric: share of variance beyond the first ``k`` principal components.

    Frames are standardised (zero mean, unit variance each); the eigenvalues of the ``N x N``
    correlation matrix sum to ``N``; the loss is ``1 - sum(top k eigenvalues) / N``, i.e. the
    fraction of signal that a ``k``-component relaxation model cannot explain. Well-aligned
    relaxation series are low-rank, so lower is better.
    """
    n = warped.shape[0]
    x = warped.reshape(n, -1)
    if mask is not None:
        x = x[:, mask.reshape(-1).bool()]
    x = x - x.mean(dim=1, keepdim=True)
    x = x / (x.norm(dim=1, keepdim=True) + _EPS)
    corr = x @ x.T
    eigenvalues = torch.linalg.eigvalsh(corr.double())  # ascending
    k = min(k, n)
    explained = eigenvalues[-k:].sum()
    return (1.0 - explained / eigenvalues.sum().clamp_min(_EPS)).to(warped.dtype)


# ------------------------------------------------------------------ local NCC
def local_ncc(a: torch.Tensor, b: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Mean local normalised cross-correlation of ``(N, H, W)`` image pairs (higher = more similar).

    Returns the mean local NCC in [-1, 1]; use ``-local_ncc`` as a loss. Local means and
    variances use a ``window x window`` box filter.
    """
    a4, b4 = a.unsqueeze(1), b.unsqueeze(1)
    kernel = torch.ones(1, 1, window, window, device=a.device, dtype=a.dtype) / window**2
    pad = window // 2

    def box(x):
        return torch.nn.functional.conv2d(x, kernel, padding=pad)

    mu_a, mu_b = box(a4), box(b4)
    var_a = box(a4 * a4) - mu_a**2
    var_b = box(b4 * b4) - mu_b**2
    cov = box(a4 * b4) - mu_a * mu_b
    ncc = cov / torch.sqrt(var_a.clamp_min(0) * var_b.clamp_min(0) + 1e-10)
    return ncc.mean()


# ------------------------------------------------------------------ regularisers
def gradient_regulariser(displacement: torch.Tensor) -> torch.Tensor:
    """Diffusion regulariser ``mean |∇u|^2`` (forward differences, pixels)."""
    dy = displacement[..., 1:, :] - displacement[..., :-1, :]
    dx = displacement[..., :, 1:] - displacement[..., :, :-1]
    return (dy**2).mean() + (dx**2).mean()


def group_motion_penalty(displacement: torch.Tensor) -> torch.Tensor:
    """``mean_x |(1/N) sum_i u_i(x)|^2``: keeps the common grid at the group's mean position."""
    return (displacement.mean(dim=0) ** 2).sum(dim=0).mean()


# ------------------------------------------------------------------ supervised term
def relative_endpoint_loss(
    displacement: torch.Tensor,
    true_displacement: torch.Tensor,
    mask: torch.Tensor | None = None,
    focus: torch.Tensor | None = None,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Mean end-point error of the frame-centred fields (pixels; Charbonnier-smoothed norm).

    Groupwise fields are defined up to a common deformation of the reference grid, so both
    fields are centred over frames (``u_i - mean_j u_j``) before they are compared: only the
    relative motion between frames is supervised, as :func:`core.metrics.relative_epe`
    scores it. ``mask`` ``(H, W)`` bool restricts the mean (e.g. without the border);
    ``focus`` ``(H, W)`` bool (e.g. the heart) adds its own mean, so the organ of interest
    counts as much as the rest of the image. With a zero ``true_displacement`` the term asks
    for no relative motion at all (do-no-harm on a still sequence).
    """
    est = displacement - displacement.mean(dim=0, keepdim=True)
    tru = true_displacement - true_displacement.mean(dim=0, keepdim=True)
    error = torch.sqrt(((est - tru) ** 2).sum(dim=1) + eps**2)  # (N, H, W)
    loss = error[:, mask].mean() if mask is not None else error.mean()
    if focus is not None and bool(focus.any()):
        loss = loss + error[:, focus].mean()
    return loss
