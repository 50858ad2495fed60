"""Intensity scaling and the PCA-weighted template, shared by registration, QC and the network.

Both are written once here: the network is trained on frames scaled by
:func:`normalise_intensities`, and :func:`.registration.register` and :mod:`.qc` must make the
same template from registered frames, so a second copy drifting would silently change results.
"""

from __future__ import annotations

import numpy as np
import torch

from .losses import pca_weights

__all__ = ["normalise_intensities", "pca_template"]


def normalise_intensities(frames: np.ndarray) -> np.ndarray:
    """Robust per-sequence scaling to about [0, 1] (1st–99.5th percentile of all frames).

    One scale for the whole sequence keeps the relaxation contrast between frames intact.

    Parameters
    ----------
    frames : ndarray (N, H, W)

    Returns
    -------
    ndarray (N, H, W) float32, clipped to [-0.5, 1.5].
    """
    lo, hi = np.percentile(frames, [1.0, 99.5])
    if hi <= lo:
        lo, hi = float(frames.min()), float(frames.max())
    return np.clip((frames - lo) / (hi - lo), -0.5, 1.5).astype(np.float32)


def pca_template(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The implicit common reference ``T = sum_i a_i frame_i`` of (registered) frames.

    ``a`` are the correlation-guided aggregation weights (:func:`.losses.pca_weights`: the
    leading eigenvector of the frames' correlation matrix, non-negative, summing to 1), so
    frames that agree with the rest dominate and an outlier frame contributes little.

    Parameters
    ----------
    frames : ndarray (N, H, W)
        Usually normalised (:func:`normalise_intensities`) registered frames.

    Returns
    -------
    template : ndarray (H, W) float32
    weights : ndarray (N,) float32
    """
    frames = np.asarray(frames, dtype=np.float32)
    weights = pca_weights(torch.from_numpy(frames)).numpy().astype(np.float32)
    return np.tensordot(weights, frames, axes=(0, 0)).astype(np.float32), weights
