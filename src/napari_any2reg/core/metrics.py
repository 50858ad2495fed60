"""Registration quality metrics (numpy in, numbers out)."""

from __future__ import annotations

import numpy as np
import torch

from .spatial import map_points_to_common, sample_displacement_at_points

__all__ = ["relative_epe", "alignment_score", "default_roi", "dice", "all_pair_dice", "landmark_tre"]


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
    # the score is scale-free: bring the data to ~1 first, so neither a fixed epsilon (data
    # ~1e-30) nor squaring (under- or overflow of float64) decides the result
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak > 0:
        x = x / peak
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # a frame constant inside the ROI has no direction: it contributes nothing, not noise
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-12)
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


def landmark_tre(
    landmarks: dict[str, np.ndarray] | np.ndarray,
    displacement: np.ndarray | None = None,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> dict[str, float]:
    """Groupwise target registration error of landmarks clicked on every frame (``docs/design.md`` §9).

    Each frame's point is mapped to the common grid by inverting ``x + u_i(x) = p_i``
    (:func:`core.spatial.map_points_to_common`); the TRE of a landmark is the mean distance in
    mm over all frame pairs ``i < j`` of the mapped positions. With ``displacement=None`` the
    raw positions are used (the TRE before registration).

    Parameters
    ----------
    landmarks : dict name -> ndarray (N, 2), or ndarray (N, 2) / (N, K, 2)
        Pixel positions ``(y, x)`` per frame; NaN rows (landmark not placed on that frame) are
        left out of the pairs.
    displacement : ndarray (N, 2, H, W), optional
    spacing_mm : (dy, dx)

    Returns
    -------
    dict ``{name: TRE_mm, ..., "overall": mean over landmarks}``.
    """
    from .spatial import map_points_to_common

    if not isinstance(landmarks, dict):
        array = np.asarray(landmarks, dtype=np.float64)
        if array.ndim == 2:
            array = array[:, None]
        landmarks = {str(k): array[:, k] for k in range(array.shape[1])}
    scale = np.asarray(spacing_mm, dtype=np.float64)
    out: dict[str, float] = {}
    for name, points in landmarks.items():
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"landmark {name!r}: expected (N, 2) positions (y, x) per frame; got {points.shape}")
        if displacement is not None and points.shape[0] != displacement.shape[0]:
            raise ValueError(f"landmark {name!r} has {points.shape[0]} frames but the displacement has {displacement.shape[0]}")
        mapped = points.copy()
        if displacement is not None:
            for i in range(points.shape[0]):
                if np.isfinite(points[i]).all():
                    mapped[i] = np.asarray(map_points_to_common(displacement, i, points[i][None]))[0]
        valid = np.flatnonzero(np.isfinite(mapped).all(axis=1))
        distances = [
            float(np.linalg.norm((mapped[i] - mapped[j]) * scale)) for a, i in enumerate(valid) for j in valid[a + 1:]
        ]
        out[str(name)] = float(np.mean(distances)) if distances else float("nan")
    values = [v for v in out.values() if np.isfinite(v)]
    out["overall"] = float(np.mean(values)) if values else float("nan")
    return out
