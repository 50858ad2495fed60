"""The batched per-pixel solver behind :func:`~.fitting.fit_t1`: grid search over the time
constant with closed-form amplitudes (polarity candidates by prefix sums), Levenberg–Marquardt
on small normal equations in float64, and the quality maps (R², residual RMS, T1 SD)."""

from __future__ import annotations

from typing import Any

import torch

from .models import T1Model, _decay


# ====================================================================== grid search


def _grid_search(
    y: torch.Tensor, t: torch.Tensor, grid: torch.Tensor, spec: T1Model, restore: bool, chunk: int = 8192
) -> list[tuple[int | torch.Tensor, torch.Tensor]]:
    """Best two polarity candidates per pixel: a list of ``(k, grid_index)`` tensors.

    ``y`` is the TI-sorted magnitude data ``(N, P)``. For each time constant ``T`` the closed
    form of the linear amplitudes gives ``RSS = sum(y²) − F`` with ``F`` below; only ``F``
    is compared. Candidates with non-physical amplitudes are excluded. A grid index of -1
    marks "no valid candidate" (the pixel then fails).
    """
    n, p = y.shape
    decay = _decay(t[None, :], grid[:, None]).to(torch.float32)  # (G, N)
    n_k = n if restore else 1
    f32 = torch.float32
    nf = float(n)
    sums = {"n": nf, "se": decay.sum(1, keepdim=True), "see": (decay * decay).sum(1, keepdim=True)}  # (G, 1)
    out_k = [torch.zeros(p, dtype=torch.long, device=y.device) for _ in range(2)]
    out_g = [torch.full((p,), -1, dtype=torch.long, device=y.device) for _ in range(2)]
    for s in range(0, p, chunk):
        yc = y[:, s : s + chunk].to(f32)  # (N, c)
        total = yc.sum(0)  # (c,)
        q_all = decay @ yc  # (G, c): sum_j |y_j| e_j
        q_k = torch.zeros_like(q_all)
        prefix = torch.zeros_like(total)
        best = [torch.full_like(total, -float("inf")) for _ in range(2)]
        best_k = [torch.zeros_like(total, dtype=torch.long) for _ in range(2)]
        best_g = [torch.full_like(total, -1, dtype=torch.long) for _ in range(2)]
        for k in range(n_k):
            if k:
                q_k.addmm_(decay[:, k - 1 : k], yc[k - 1 : k])
                prefix += yc[k - 1]
            sy = total - 2.0 * prefix  # (c,)   sum of the signed data
            u = q_all - 2.0 * q_k  # (G, c) sum of signed data times e
            f, valid = spec.grid_score(u, sy, sums)
            f = f.masked_fill(~valid, -float("inf"))
            f_max, g_idx = f.max(0)
            g_idx = torch.where(torch.isfinite(f_max), g_idx, torch.full_like(g_idx, -1))
            first = f_max > best[0]
            second = ~first & (f_max > best[1])
            best[1] = torch.where(first, best[0], torch.where(second, f_max, best[1]))
            best_k[1] = torch.where(first, best_k[0], torch.where(second, torch.full_like(best_k[1], k), best_k[1]))
            best_g[1] = torch.where(first, best_g[0], torch.where(second, g_idx, best_g[1]))
            best[0] = torch.where(first, f_max, best[0])
            best_k[0] = torch.where(first, torch.full_like(best_k[0], k), best_k[0])
            best_g[0] = torch.where(first, g_idx, best_g[0])
        for i in range(2):
            out_k[i][s : s + chunk] = best_k[i]
            out_g[i][s : s + chunk] = best_g[i]
    candidates = [(out_k[0], out_g[0])]
    if n_k > 1 and bool((out_g[1] >= 0).any()):
        candidates.append((out_k[1], out_g[1]))
    return candidates


# ====================================================================== Levenberg–Marquardt
def _signed(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Negate the first ``k[p]`` (shortest-TI) samples of each pixel's curve."""
    rank = torch.arange(y.shape[0], device=y.device)[:, None]
    return torch.where(rank < k[None, :], -y, y)


def _dot(u: torch.Tensor | float, v: torch.Tensor | float, n: int) -> torch.Tensor:
    """Sum over frames of ``u * v`` where either may be the constant 1."""
    if isinstance(u, float) and isinstance(v, float):
        return torch.tensor(float(n) * u * v, dtype=torch.float64)
    if isinstance(u, float):
        return u * v.sum(0)
    if isinstance(v, float):
        return v * u.sum(0)
    return (u * v).sum(0)


def _normal_matrix(jac: list, n: int) -> list[list[torch.Tensor]]:
    """``JᵀJ`` as a nested list of per-pixel tensors (symmetric)."""
    p = len(jac)
    h: list[list[Any]] = [[None] * p for _ in range(p)]
    for i in range(p):
        for j in range(i, p):
            h[i][j] = h[j][i] = _dot(jac[i], jac[j], n)
    return h


def _solve_symmetric(h: list[list[torch.Tensor]], b: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Solve the per-pixel 2x2 / 3x3 symmetric systems ``h x = b`` in closed form.

    Returns the solution and a mask of pixels whose system is numerically regular. Cramer's
    rule on the batch is exact enough in float64 for these tiny, well-scaled systems and much
    faster than a batched LAPACK call.
    """
    if len(b) == 2:
        (a, c), (_, d) = h
        det = a * d - c * c
        x = [(d * b[0] - c * b[1]) / det, (a * b[1] - c * b[0]) / det]
        scale = (a * d).abs()
    else:
        (a, b_, c), (_, d, e), (_, _, f) = h
        c00, c01, c02 = d * f - e * e, c * e - b_ * f, b_ * e - c * d
        c11, c12, c22 = a * f - c * c, b_ * c - a * e, a * d - b_ * b_
        det = a * c00 + b_ * c01 + c * c02
        x = [
            (c00 * b[0] + c01 * b[1] + c02 * b[2]) / det,
            (c01 * b[0] + c11 * b[1] + c12 * b[2]) / det,
            (c02 * b[0] + c12 * b[1] + c22 * b[2]) / det,
        ]
        scale = (a * d * f).abs()
    regular = torch.isfinite(det) & (det.abs() > 1e-13 * scale) & (scale > 0)
    return x, regular


def _levenberg_marquardt(
    y_abs: torch.Tensor,
    t: torch.Tensor,
    k: torch.Tensor,
    start: torch.Tensor,
    spec: T1Model,
    bounds: tuple[float, float],
    iterations: int,
) -> dict[str, torch.Tensor]:
    """Batched LM from the grid's time constant; returns ``theta``, ``rss`` and ``k``.

    Pixels drop out of the working set once converged (most converge in under ten
    iterations; noise-only background pixels may wander for all ``iterations``).
    """
    lo, hi = bounds
    n = y_abs.shape[0]
    y_all = _signed(y_abs, k)
    theta_all = spec.initial_guess(y_all, t, start)
    f, e = spec.signal(theta_all, t)
    rss_all = ((y_all - f) ** 2).sum(0)
    idx = torch.nonzero(torch.isfinite(rss_all))[:, 0]
    y, theta, rss = y_all[:, idx], theta_all[idx], rss_all[idx]
    f, e = f[:, idx], e[:, idx]
    lam = torch.full_like(rss, 1e-3)
    for _ in range(int(iterations)):
        if idx.numel() == 0:
            break
        jac = spec.jacobian(theta, t, e)
        r = y - f
        h = _normal_matrix(jac, n)
        g = [_dot(column, r, n) for column in jac]
        # Marquardt's scaling: damp each parameter relative to its own curvature
        damped = [[h[i][j] * (1.0 + lam) if i == j else h[i][j] for j in range(len(g))] for i in range(len(g))]
        step, regular = _solve_symmetric(damped, g)
        trial = theta + torch.stack(step, dim=1)
        trial[:, -1] = trial[:, -1].clamp(lo, hi)  # keep exp(-t/T) finite; a bound hit is flagged later
        f_trial, e_trial = spec.signal(trial, t)
        rss_trial = ((y - f_trial) ** 2).sum(0)
        better = regular & torch.isfinite(rss_trial) & (rss_trial < rss)
        stalled = better & (rss - rss_trial <= 1e-10 * rss)
        theta = torch.where(better[:, None], trial, theta)
        rss = torch.where(better, rss_trial, rss)
        f = torch.where(better[None], f_trial, f)
        e = torch.where(better[None], e_trial, e)
        lam = torch.where(better, lam * 0.3, lam * 5.0).clamp(1e-12, 1e12)
        # converged: negligible step or gain, or no step helps even when strongly damped
        small = torch.stack([(s_.abs() <= 1e-9 * (th.abs() + 1e-12)) for s_, th in zip(step, theta.T)]).all(0)
        converged = small | stalled | (lam >= 1e4)
        if bool(converged.any()):
            theta_all[idx] = theta
            rss_all[idx] = rss
            keep = ~converged
            idx, y, theta, rss, lam = idx[keep], y[:, keep], theta[keep], rss[keep], lam[keep]
            f, e = f[:, keep], e[:, keep]
    theta_all[idx] = theta
    rss_all[idx] = rss
    return {"theta": theta_all, "rss": rss_all, "k": k.clone()}


def _where_rows(take: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (new.dim() - 1)
    return torch.where(take.reshape(shape), new, old)


# ====================================================================== quality maps
def _quality(
    fit: dict[str, torch.Tensor],
    y_abs: torch.Tensor,
    t: torch.Tensor,
    spec: T1Model,
    bounds: tuple[float, float],
    usable: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """R², residual RMS, SD of T1 and failure codes at the optimum."""
    lo, hi = bounds
    theta, rss, k = fit["theta"], fit["rss"], fit["k"]
    n, p = y_abs.shape[0], spec.n_params
    y = _signed(y_abs, k)
    _, e = spec.signal(theta, t)
    h = _normal_matrix(spec.jacobian(theta, t, e), n)
    s2 = rss / (n - p)
    t1, grad = spec.t1(theta)
    # var(T1) = s² gradᵀ (JᵀJ)⁻¹ grad, with (JᵀJ)⁻¹ grad from one symmetric solve
    x, regular = _solve_symmetric(h, list(grad.unbind(1)))
    var = s2 * sum(gi * xi for gi, xi in zip(grad.unbind(1), x))
    tss = ((y - y.mean(0, keepdim=True)) ** 2).sum(0)
    r2 = 1.0 - rss / tss
    rms = torch.sqrt(rss / n)

    code = torch.zeros(theta.shape[0], dtype=torch.uint8, device=theta.device)
    finite = torch.isfinite(theta).all(1) & torch.isfinite(rss) & torch.isfinite(t1) & torch.isfinite(var)
    finite = finite & regular & (var >= 0) & fit["valid_candidate"]
    physical = spec.physical(theta)
    tol = 1e-3
    time_constant = theta[:, -1]
    at_bound = (time_constant <= lo * (1 + tol)) | (time_constant >= hi * (1 - tol))
    at_bound = at_bound | (physical & ((t1 <= lo * (1 + tol)) | (t1 >= hi * (1 - tol))))
    code = torch.where(~physical, torch.full_like(code, 4), code)
    code = torch.where(at_bound, torch.full_like(code, 3), code)
    code = torch.where(~finite, torch.full_like(code, 2), code)
    code = torch.where(~usable, torch.full_like(code, 1), code)
    return {
        "theta": theta,
        "k": k,
        "t1": t1,
        "t1_sd": torch.sqrt(var.clamp(min=0)),
        "r2": r2,
        "rms": rms,
        "code": code,
    }
