"""The coarse stage before the network: a per-frame translation to the group found by phase
correlation of MIND descriptors at a coarse grid, with sub-pixel peaks
(:func:`coarse_translation`)."""

from __future__ import annotations

import math

import torch

from ...network import mind_descriptors
from ...network.any2reg_net import _resize_images, _working_shape


# ---------------------------------------------------------------- coarse stage
def _subpixel_peaks(correlation: torch.Tensor) -> torch.Tensor:
    """Positions of the maxima of circular correlation maps ``(N, h, w)`` as signed shifts
    ``(N, 2)``, refined by a parabola through each peak and its neighbours on each axis."""
    n, h, w = correlation.shape
    index = torch.argmax(correlation.reshape(n, -1), dim=1)
    py, px = index // w, index % w
    rows = torch.arange(n, device=correlation.device)
    shifts = []
    for p, size, sample in ((py, h, lambda q: correlation[rows, q % h, px]), (px, w, lambda q: correlation[rows, py, q % w])):
        left, centre, right = sample(p - 1), sample(p), sample(p + 1)
        denominator = left - 2 * centre + right
        offset = torch.where(denominator < 0, 0.5 * (left - right) / denominator.clamp(max=-1e-12), torch.zeros_like(centre))
        value = p.to(correlation.dtype) + offset.clamp(-0.5, 0.5)
        shifts.append(torch.where(value > size / 2, value - size, value))
    return torch.stack(shifts, dim=1)


def coarse_translation(
    frames: torch.Tensor,
    *,
    spacing_mm,
    training_spacing_mm,
    reference_frame: int | None = None,
    iterations: int = 3,
    threshold_mm: float = 8.0,
    max_shift_mm: float = 45.0,
) -> torch.Tensor:
    """Groupwise translation of every frame, the coarse stage before the network.

    Breathing can shift whole frames by 20–30 mm (real STONE frames 0–1 sit 15–20 px away
    from the rest), more than a network captures well in one pass. On the network's working
    grid (training spacing), each frame's contrast-insensitive MIND descriptors (centre-
    weighted by a Hann window: the heart is near the centre of a cardiac scan) are
    cross-correlated by FFT with the mean of the other frames' descriptors, shifted by the
    current estimate; the peak (parabolic sub-pixel refinement) gives the frame's shift. Three
    rounds, then the shifts are centred over frames (or ``t_ref = 0``). Costs milliseconds.

    Do-no-harm: if no frame is more than ``threshold_mm`` away from the group after this
    stage, the motion is left to the network entirely (returns zeros): a small, noisy shift
    estimate would only add error where the network is accurate on its own. 8 mm: on
    motion-free real kidney MOLLI the estimate reaches 3 mm at the null-crossing frames (MIND
    still sees contrast there); on the validation set (see ``benchmarks/validate_weights.py``)
    4 mm let the stage fire on 10 mm phantom motion that the network captures better alone
    (median EPE ratio 0.297 -> 0.288 with 6-10 mm; still 25 mm shifts fire). The engine also
    runs the network without the shift and keeps the field its objective prefers.

    Parameters
    ----------
    frames : Tensor (N, H, W), normalised
    spacing_mm, training_spacing_mm : (dy, dx)
    reference_frame : int, optional
    iterations : int
    threshold_mm, max_shift_mm : float

    Returns
    -------
    Tensor (N, 2): translation ``(dy, dx)`` of each frame in input pixels (pull-back:
    ``registered_i(x) = frame_i(x + t_i)``).
    """
    n = frames.shape[0]
    shape = tuple(frames.shape[-2:])
    work = _working_shape(shape, spacing_mm, training_spacing_mm)
    work_spacing = training_spacing_mm if work != shape else (spacing_mm or training_spacing_mm)
    x = _resize_images(frames[:, None].float(), work)[:, 0]
    features = mind_descriptors(x)
    features = features - features.mean(dim=(-2, -1), keepdim=True)
    window = torch.outer(torch.hann_window(work[0], periodic=False, device=x.device),
                         torch.hann_window(work[1], periodic=False, device=x.device))
    spectra = torch.fft.rfft2(features * window)  # (N, C, h, w/2+1)
    ky = torch.fft.fftfreq(work[0], device=x.device)[:, None]
    kx = torch.fft.rfftfreq(work[1], device=x.device)[None, :]
    limit_px = [max_shift_mm / float(s) for s in work_spacing]
    shifts = torch.zeros(n, 2, dtype=torch.float64)
    for _ in range(iterations):
        # the spectra moved back by the current shifts (Fourier shift theorem)
        phase = torch.exp(2j * math.pi * (ky * shifts[:, 0, None, None].to(x.device) + kx * shifts[:, 1, None, None].to(x.device)))
        aligned = spectra * phase[:, None].to(spectra.dtype)
        total = aligned.sum(dim=0, keepdim=True)
        # each frame against the mean of the *other* frames (its own noise does not attract it)
        templates = (total - aligned) / max(n - 1, 1)
        correlation = torch.fft.irfft2((spectra * templates.conj()).sum(dim=1), s=work)
        peaks = _subpixel_peaks(correlation).to(torch.float64).cpu()
        new = torch.stack([peaks[:, 0].clamp(-limit_px[0], limit_px[0]), peaks[:, 1].clamp(-limit_px[1], limit_px[1])], dim=1)
        shifts = new - (new.mean(dim=0, keepdim=True) if reference_frame is None else new[reference_frame : reference_frame + 1])
    spread_mm = (shifts * torch.tensor(work_spacing, dtype=torch.float64)).norm(dim=1).max()
    if float(spread_mm) < threshold_mm:
        shifts = torch.zeros_like(shifts)
    scale = torch.tensor([(shape[0] - 1) / max(work[0] - 1, 1), (shape[1] - 1) / max(work[1] - 1, 1)], dtype=torch.float64)
    return (shifts * scale).to(device=frames.device, dtype=frames.dtype)
