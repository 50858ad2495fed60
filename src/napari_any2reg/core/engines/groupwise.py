"""``groupwise``: classical multi-resolution groupwise registration (no training needed).

Per-frame translation first, then a coarse-to-fine control-point FFD, all frames optimised
jointly against a groupwise similarity:

* ``metric="cte"`` — conditional template entropy ``sum_i H(I_i | T)`` with a PCA-weighted
  template (contrast-insensitive, Any2Reg's loss);
* ``metric="pca2"`` — variance not explained by the first two principal components (suited
  to relaxation series, whose aligned frames are nearly rank 2).

The zero-mean group constraint (or a fixed reference frame) is enforced exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from ..losses import conditional_template_entropy, pca_residual_variance
from ..engine_api import EngineOutput, Progress, register_engine
from ._transform import run_classical_engine

@register_engine("groupwise")
def groupwise_engine(
    frames: torch.Tensor,
    *,
    progress: Progress,
    reference_frame: int | None,
    spacing_mm: tuple[float, float],
    metric: str = "cte",
    iterations_scale: float = 1.0,
    regulariser_weight: float = 20.0,
    bins: int = 24,
    pca_components: int = 2,
    nonrigid: bool = True,
    region_mask: torch.Tensor | None = None,
    **unused: Any,
) -> EngineOutput:
    """Register ``frames`` ``(N, H, W)`` (normalised to ~[0, 1]) groupwise.

    Parameters
    ----------
    metric : {"cte", "pca2"}
    iterations_scale : float
        Multiplies every stage's iteration count (0.2 for a quick preview, 2 for hard cases).
    regulariser_weight : float
        Weight of the diffusion regulariser ``mean |∇u|^2`` on the FFD stages.
    bins : int
        Parzen histogram bins for CTE.
    pca_components : int
        ``k`` for the PCA2 metric.
    nonrigid : bool
        ``False`` stops after the translation stages.
    region_mask : torch.Tensor (H, W) bool, optional
        User mask (heart / body region): the similarity is evaluated only inside it
        (:func:`._transform.border_mask`); ``register(mask=...)`` passes it.
    """
    if unused:
        raise TypeError(f"groupwise: unknown option(s) {', '.join(sorted(unused))}")
    metric = metric.lower()
    if metric == "cte":
        def loss_fn(warped, disp, mask):
            return conditional_template_entropy(warped, bins=bins, mask=mask), {}
    elif metric == "pca2":
        def loss_fn(warped, disp, mask):
            return pca_residual_variance(warped, k=pca_components, mask=mask), {}
    else:
        raise ValueError(f"groupwise: unknown metric {metric!r}; use 'cte' or 'pca2'.")

    displacement, history, stages = run_classical_engine(
        frames,
        loss_fn,
        progress=progress,
        reference_frame=reference_frame,
        spacing_mm=spacing_mm,
        iterations_scale=iterations_scale,
        regulariser_weight=regulariser_weight,
        nonrigid=nonrigid,
        region=region_mask,
    )
    params = {
        "metric": metric,
        "iterations_scale": iterations_scale,
        "regulariser_weight": regulariser_weight,
        "bins": bins,
        "nonrigid": nonrigid,
        "stages": stages,
    }
    if metric == "pca2":
        params["pca_components"] = pca_components
    return EngineOutput(displacement=displacement, loss_history=history, params=params)
