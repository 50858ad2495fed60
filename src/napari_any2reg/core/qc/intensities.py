"""The intensity side of the review: correspondence-score maps, templates (the sequence template,
the per-frame matched template, templates from similar frames), correlation with the template,
template differences, checkerboard and curtain comparisons and temporal profiles."""

from __future__ import annotations

from typing import Any, Sequence as SequenceType

import numpy as np

from ._inputs import _as_displacement, _as_frames, _check_same_grid, _roi


# ------------------------------------------------------------------ intensities
def correspondence_maps(frames: Any, displacement: Any, *, spacing_mm: SequenceType[float] | None = None,
                        stored: Any = None) -> np.ndarray:
    """Per-frame correspondence scores ``(N, H, W)`` in [0, 1] on the common grid.

    ``stored`` (the scorer's maps kept with an Any2Reg result) is used when it fits; otherwise
    the model-free residual score, which has the same meaning (high = the pixel matches the
    group), is computed from the raw frames and the field.
    """
    f = _as_frames(frames)
    u = _as_displacement(displacement)
    _check_same_grid(f, u)
    if stored is not None:
        s = np.asarray(stored, dtype=np.float32)
        if s.shape == f.shape:
            return np.clip(s, 0.0, 1.0)
    from ..network.scoring import predict_scores

    return predict_scores(None, f, u, spacing_mm=spacing_mm)


def sequence_template(registered: Any) -> np.ndarray:
    """PCA-weighted template of registered frames (as :func:`.registration.register` makes it)."""
    from ..intensity import normalise_intensities, pca_template

    return pca_template(normalise_intensities(_as_frames(registered, "registered")))[0]


def template_correlation(frames: Any, template: Any, mask: Any = None) -> np.ndarray:
    """Pearson correlation of each frame with the template inside ``mask``, ``(N,)``.

    Insensitive to a per-frame gain and offset; a relaxation series keeps a high correlation
    when its frames are aligned, and a misplaced or corrupted frame loses it.
    """
    f = _as_frames(frames).astype(np.float64)
    t = np.asarray(template, dtype=np.float64)
    if t.shape != f.shape[1:]:
        raise ValueError(f"template must be (H, W) = {f.shape[1:]}; got {t.shape}.")
    m = _roi(mask, t.shape)
    x = f[:, m] - f[:, m].mean(axis=1, keepdims=True)
    y = t[m] - t[m].mean()
    denom = np.linalg.norm(x, axis=1) * np.linalg.norm(y)
    return np.where(denom > 0, x @ y / np.maximum(denom, 1e-300), 0.0)


def matched_template(frames: Any, template: Any, mask: Any = None) -> np.ndarray:
    """The template mapped into each frame's intensities, ``a_i T + b_i``, ``(N, H, W)``.

    ``a_i, b_i`` are the least-squares fit inside ``mask``: frames of a relaxation series differ
    in contrast, so a difference image needs the template at each frame's gain and offset.
    """
    f = _as_frames(frames).astype(np.float64)
    t = np.asarray(template, dtype=np.float64)
    if t.shape != f.shape[1:]:
        raise ValueError(f"template must be (H, W) = {f.shape[1:]}; got {t.shape}.")
    m = _roi(mask, t.shape)
    design = np.stack([t[m], np.ones(int(m.sum()))], 1)
    coeffs, *_ = np.linalg.lstsq(design, f[:, m].T, rcond=None)  # (2, N)
    return (coeffs[0][:, None, None] * t[None] + coeffs[1][:, None, None]).astype(np.float32)


def frame_templates(registered: Any, rank: int = 2) -> np.ndarray:
    """The template at each frame's contrast: rank-``rank`` PCA model of the registered frames.

    A relaxation series changes contrast tissue by tissue (near a null point the myocardium is
    dark while the blood is bright), which no gain and offset of one template reproduces. Once
    the frames are aligned, every pixel's curve lies close to a ``rank``-dimensional subspace
    (the PCA2 model of the engines), so the mean image plus the first ``rank`` principal
    components across frames, evaluated at frame ``i``, is frame ``i``'s template with the
    motion left out. ``rank=0`` gives the mean image for every frame.

    Returns
    -------
    ndarray (N, H, W) float32, in the registered frames' units.
    """
    f = _as_frames(registered, "registered").astype(np.float64)
    n = f.shape[0]
    rank = int(rank)
    if not 0 <= rank < n:
        raise ValueError(f"rank must be in 0..{n - 1} for {n} frames; got {rank}.")
    x = f.reshape(n, -1)
    mean = x.mean(axis=0, keepdims=True)
    model = np.repeat(mean, n, axis=0)
    if rank:
        # SVD of the small N x N Gram matrix instead of the N x HW data: same components
        centred = x - mean
        values, vectors = np.linalg.eigh(centred @ centred.T)
        top = vectors[:, np.argsort(values)[::-1][:rank]]  # (N, rank) frame loadings
        model += top @ (top.T @ centred)
    return model.reshape(f.shape).astype(np.float32)


def template_difference(frames: Any, template: Any, mask: Any = None) -> np.ndarray:
    """Frames minus their template, in the frames' units.

    ``template`` is either per frame ``(N, H, W)`` (e.g. :func:`frame_templates`), subtracted
    as it is, or one ``(H, W)`` image, first matched to each frame's gain and offset
    (:func:`matched_template`). Computed on the raw frames it shows the motion ("before"); on
    the registered frames what is left after correction ("after").
    """
    f = _as_frames(frames)
    t = np.asarray(template, dtype=np.float32)
    if t.ndim == 3:
        if t.shape != f.shape:
            raise ValueError(f"per-frame templates must be (N, H, W) = {f.shape}; got {t.shape}.")
        return (f - t).astype(np.float32)
    return (f - matched_template(f, t, mask)).astype(np.float32)


def checkerboard(first: Any, second: Any, tiles: int = 8) -> np.ndarray:
    """Checkerboard composite: ``first`` in the even tiles, ``second`` in the odd ones.

    Works on ``(H, W)`` images or ``(N, H, W)`` stacks of the same shape; ``tiles`` is the
    number of tiles along each image axis. Edges that jump at tile borders show misalignment.
    """
    a, b = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"checkerboard needs two images of the same shape; got {a.shape} and {b.shape}.")
    if int(tiles) < 1:
        raise ValueError(f"tiles must be at least 1; got {tiles}.")
    h, w = a.shape[-2:]
    ty = (np.arange(h) * int(tiles)) // h
    tx = (np.arange(w) * int(tiles)) // w
    even = ((ty[:, None] + tx[None, :]) % 2) == 0
    return np.where(even, a, b).astype(np.float32)


def curtain(first: Any, second: Any, position: float = 0.5, axis: int = -1) -> np.ndarray:
    """Curtain composite: ``first`` before ``position`` (fraction 0–1 of ``axis``), ``second`` after."""
    a, b = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"curtain needs two images of the same shape; got {a.shape} and {b.shape}.")
    size = a.shape[axis]
    cut = int(round(float(np.clip(position, 0.0, 1.0)) * size))
    index = np.arange(size) < cut
    shape = [1] * a.ndim
    shape[axis] = size
    return np.where(index.reshape(shape), a, b).astype(np.float32)


def temporal_profile(raw: Any, registered: Any, y: int, x: int, radius: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Intensity of one pixel across frames, raw and registered, ``((N,), (N,))``.

    ``radius`` > 0 averages a ``(2r+1)^2`` neighbourhood (clipped at the border). In the raw
    frames the pixel sees whatever tissue moved under it; after registration it follows one
    piece of tissue, so a relaxation curve becomes smooth.
    """
    a, b = _as_frames(raw, "raw"), _as_frames(registered, "registered")
    if a.shape != b.shape:
        raise ValueError(f"raw {a.shape} and registered {b.shape} frames must have the same shape.")
    h, w = a.shape[1:]
    y, x, r = int(round(float(y))), int(round(float(x))), int(radius)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {h}x{w} image.")
    ys, xs = slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)
    return a[:, ys, xs].mean(axis=(1, 2)), b[:, ys, xs].mean(axis=(1, 2))
