"""``xcoreg``: X-CoReg groupwise co-registration (X-metric paper), O(N) per iteration.

Generative model: a latent common anatomy ``Z`` with ``K`` tissue classes; given class ``k``,
frame ``j`` shows intensity level ``l`` (of ``L``) with probability ``f_jk(l)``; classes have
priors ``pi_k``. Registration alternates

* **E-step** — posterior ``gamma_xk ∝ pi_k prod_j f_jk(mu_j(x))`` at every pixel ``x`` of the
  common grid (intensity levels of the warped frames, soft-binned with a Parzen window);
* **M-step** — ``pi_k = mean_x gamma_xk`` and ``f_jk(l) ∝ sum_x gamma_xk [mu_j(x) = l]``;
* a **gradient step** on the transforms maximising ``sum_j I(U_j ∘ phi_j ; Z)``, i.e.
  minimising ``sum_j H(U_j | Z) - H(U_j)`` with the posteriors held fixed.

Every term is a sum over frames, so the cost grows linearly with N (no N x N pairs). The
transforms follow the X-CoReg schedule — translation, then free-form deformation — using the
shared multi-resolution optimiser.
"""

from __future__ import annotations

from typing import Any

import torch

from ..losses import parzen_weights, rescale_to_unit, weighted_template
from ..engine_api import EngineOutput, Progress, register_engine
from ._transform import run_classical_engine

_EPS = 1e-8



class LatentAnatomyModel:
    """EM state of X-CoReg: class priors ``pi`` (K,) and appearance ``f`` (N, K, L)."""

    def __init__(self, n_classes: int, n_levels: int, em_steps: int = 1):
        self.n_classes = n_classes
        self.n_levels = n_levels
        self.em_steps = em_steps

    def initial_posterior(self, levels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Start from ``K`` soft intensity classes of the PCA-weighted template.

        Deterministic and invariant to frame order (the template is), so the engine stays
        permutation-equivariant.
        """
        template = weighted_template(x)
        template = rescale_to_unit(template[None])[0]
        centres = (torch.arange(self.n_classes, device=x.device, dtype=x.dtype) + 0.5) / self.n_classes
        logits = -0.5 * ((template[:, None] - centres) / (0.5 / self.n_classes)) ** 2
        return torch.softmax(logits, dim=1)  # (P, K)

    def m_step(self, levels: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pi`` (K,) and ``f`` (N, K, L) from soft levels ``(N, P, L)`` and posterior ``(P, K)``."""
        counts = torch.einsum("pk,npl->nkl", gamma, levels)  # expected joint counts
        f = (counts + _EPS) / (counts.sum(-1, keepdim=True) + self.n_levels * _EPS)
        pi = gamma.mean(dim=0)
        return pi, f

    def e_step(self, levels: torch.Tensor, pi: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Posterior ``gamma (P, K)`` ∝ ``pi_k prod_j f_jk(mu_j(x))`` (soft levels, in log space)."""
        log_lik = torch.einsum("npl,nkl->pk", levels, torch.log(f))
        return torch.softmax(log_lik + torch.log(pi + _EPS), dim=1)

    def fit(self, levels: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        for _ in range(self.em_steps):
            pi, f = self.m_step(levels, gamma)
            gamma = self.e_step(levels, pi, f)
        return gamma


def negative_mutual_information(levels: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``mean_j [H(U_j | Z) - H(U_j)] = -mean_j I(U_j; Z)`` with ``Z`` given by ``gamma`` (fixed)."""
    p = levels.shape[1]
    joint = torch.einsum("pk,npl->nkl", gamma, levels) / p  # (N, K, L)
    p_z = joint.sum(-1, keepdim=True)
    p_u = joint.sum(1, keepdim=True)
    mi = (joint * (torch.log(joint + _EPS) - torch.log(p_z + _EPS) - torch.log(p_u + _EPS))).sum(dim=(1, 2))
    return -mi.mean()


@register_engine("xcoreg")
def xcoreg_engine(
    frames: torch.Tensor,
    *,
    progress: Progress,
    reference_frame: int | None,
    spacing_mm: tuple[float, float],
    n_classes: int = 6,
    n_levels: int = 24,
    em_steps: int = 1,
    iterations_scale: float = 1.0,
    regulariser_weight: float = 20.0,
    nonrigid: bool = True,
    region_mask: torch.Tensor | None = None,
    **unused: Any,
) -> EngineOutput:
    """Register ``frames`` ``(N, H, W)`` with X-CoReg.

    Parameters
    ----------
    n_classes : int
        ``K``, tissue classes of the latent common anatomy (paper: 4; 6 separates blood,
        myocardium, fat, liver, lung and background better on cardiac slices).
    n_levels : int
        ``L``, intensity levels per frame (paper: 32–64; fewer suit small images).
    em_steps : int
        EM iterations between consecutive gradient steps on the transforms.
    iterations_scale, regulariser_weight, nonrigid
        As for the ``groupwise`` engine.
    region_mask : torch.Tensor (H, W) bool, optional
        User mask (heart / body region): the similarity is evaluated only inside it
        (:func:`._transform.border_mask`); ``register(mask=...)`` passes it.
    """
    if unused:
        raise TypeError(f"xcoreg: unknown option(s) {', '.join(sorted(unused))}")
    model = LatentAnatomyModel(n_classes, n_levels, em_steps)
    state: dict[str, Any] = {"gamma": None, "shape": None}

    def loss_fn(warped, disp, mask):
        n = warped.shape[0]
        x = warped.reshape(n, -1)[:, mask.reshape(-1)]
        levels = parzen_weights(rescale_to_unit(x), n_levels)  # (N, P, L)
        with torch.no_grad():
            if state["gamma"] is None or state["shape"] != tuple(warped.shape):
                # a new pyramid level: restart the posterior from the current template
                state["gamma"] = model.initial_posterior(levels, x.detach())
                state["shape"] = tuple(warped.shape)
            state["gamma"] = model.fit(levels.detach(), state["gamma"])
        return negative_mutual_information(levels, state["gamma"]), {}

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
        "n_classes": n_classes,
        "n_levels": n_levels,
        "em_steps": em_steps,
        "iterations_scale": iterations_scale,
        "regulariser_weight": regulariser_weight,
        "nonrigid": nonrigid,
        "stages": stages,
    }
    return EngineOutput(displacement=displacement, loss_history=history, params=params)
