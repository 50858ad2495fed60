"""Registration quality metrics (numpy in, numbers out)."""

from __future__ import annotations

import numpy as np
import torch

from .spatial import map_points_to_common, sample_displacement_at_points

__all__ = ["relative_epe", "alignment_score", "default_roi", "dice", "all_pair_dice"]


def relative_epe(
    estimated: np.ndarray,
    true: np.ndarray,
    mask: np.ndarray,
    *,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    max_points: int = 400,
) -> float:
    """Mean end-point error of the relative motion between all frame pairs, inside ``mask``.

    Two groupwise results may use different common grids, so fields are not compared
    directly. For each point ``x`` of the true common grid inside ``mask`` its true position
    in frame ``i`` is ``p_i = x + u_i(x)``. The estimate maps ``p_j`` back to its own common
    grid (``y: y + v_j(y) = p_j``) and forward to frame ``i`` (``y + v_i(y)``); the error is the
    distance to ``p_i``, averaged over points and ordered pairs ``i != j``. With no
    registration (``estimated = 0``) it equals the mean true relative motion.

    Parameters
    ----------
    estimated, true : ndarray (N, 2, H, W)
        Pull-back displacements in pixels.
    mask : ndarray (H, W) bool
        Region on the true common grid (e.g. the phantom's heart mask).
    spacing_mm : (dy, dx)
        The error is returned in mm.
    max_points : int
        Deterministic subsample (regular stride) of mask pixels for speed.

    Returns
    -------
    float, mm.
    """
    est = torch.as_tensor(np.asarray(estimated, np.float32))
    tru = torch.as_tensor(np.asarray(true, np.float32))
    ys, xs = np.nonzero(np.asarray(mask, bool))
    if ys.size == 0:
        raise ValueError("relative_epe: the mask is empty.")
    stride = max(1, ys.size // max_points)
    pts = torch.as_tensor(np.stack([ys[::stride], xs[::stride]], 1), dtype=torch.float32)
    n = est.shape[0]
    true_pos = torch.stack([pts + sample_displacement_at_points(tru[i], pts) for i in range(n)])  # (N,P,2)
    scale = torch.tensor(spacing_mm, dtype=torch.float32)
    total, count = 0.0, 0
    for j in range(n):
        common = map_points_to_common(est, j, true_pos[j])  # estimated common grid
        for i in range(n):
            if i == j:
                continue
            predicted = common + sample_displacement_at_points(est[i], common)
            err = ((predicted - true_pos[i]) * scale).norm(dim=1)
            total += float(err.sum())
            count += err.numel()
    return total / count


def default_roi(shape: tuple[int, int], fraction: float = 0.5) -> np.ndarray:
    """Central box covering ``fraction`` of each axis: cardiac scans centre the heart."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    dh, dw = int(h * (1 - fraction) / 2), int(w * (1 - fraction) / 2)
    mask[dh : h - dh, dw : w - dw] = True
    return mask


def alignment_score(frames: np.ndarray, mask: np.ndarray | None = None, k: int = 2) -> float:
    """Model-free alignment: share of variance in the first ``k`` principal components.

    Frames ``(N, H, W)`` are standardised inside ``mask`` (default: :func:`default_roi`); the
    score is ``sum(top-k eigenvalues of the frame correlation matrix) / N`` in [0, 1]. A
    relaxation series whose frames are aligned is nearly rank ``k`` (higher = better aligned).
    """
    frames = np.asarray(frames, np.float64)
    n = frames.shape[0]
    if mask is None:
        mask = default_roi(frames.shape[-2:])
    x = frames[:, np.asarray(mask, bool)]
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    eigenvalues = np.linalg.eigvalsh(x @ x.T)
    return float(eigenvalues[-min(k, n):].sum() / n)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def all_pair_dice(labels: np.ndarray, label_values=(1, 2, 3)) -> dict[int, float]:
    """Mean Dice over all frame pairs ``i < j`` for each label of ``(N, H, W)`` labels."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    out = {}
    for value in label_values:
        m = labels == value
        scores = [dice(m[i], m[j]) for i in range(n) for j in range(i + 1, n)]
        out[int(value)] = float(np.mean(scores))
    return out
