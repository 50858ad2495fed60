"""Any2Reg: set-based, permutation-equivariant groupwise registration network (``docs/design.md`` §3).

Architecture (``S`` scales, level 0 = input resolution, level ``S-1`` = coarsest)::

    encoder, fine → coarse, the same weights for every frame:
        h_i^0 = E^0(frame_i)                  h_i^s = E^s(f_i^{s-1})      (stride-2 conv)
        [aux]   a_i^s = A^s(a_i^{s-1})        h_i^s <- Fuse^s([h_i^s, a_i^s])  (1x1 conv)
        g^s, a^s = Agg(h^s)                   (correlation-guided, permutation-invariant)
        f_i^s = h_i^s + U^s([h_i^s, g^s])     (broadcast + shared update)
    decoder, coarse → fine, the same weights for every frame:
        ū_i = upsample(u_i^{s+1})             (0 at the coarsest scale)
        f̃_i = warp(f_i^s, ū_i);  g̃ = Agg(f̃)   (features and canonical feature of the current alignment)
        δ_i = D^s([f̃_i, g̃, ū_i])              (incremental flow; or a velocity, integrated)
        δ_i <- δ_i - mean_j δ_j               (groupwise)   |   δ_ref <- 0   (all-to-one)
        u_i^s = ū_i ∘ δ_i = δ_i + ū_i(x + δ_i)   (:func:`core.spatial.compose_displacements`)

Every per-frame operation uses shared weights with frames on the batch axis and instance
normalisation (no statistic mixes frames); the only cross-frame operations are
:class:`~.blocks.SetAggregation` (invariant) and the mean over frames of the centring
(invariant), so the network is permutation-equivariant and accepts any ``N >= 2``.

Decoder note: the paper feeds ``[f_i^s, g^s, upsampled flow]``; we feed the features *warped by
the current flow* and the canonical feature re-aggregated from them. With compositional
coarse-to-fine flows the increment ``δ`` is defined on the coarsely warped grid
(``compose_displacements(first=coarse, second=δ)``), so the decoder must see the features on
that grid; the extra aggregation is an ``N x N`` eigenproblem per scale (negligible).

Groupwise centring: subtracting the frame mean of each increment keeps the composed field
centred to first order. With ``mean_i ū_i = 0`` and ``mean_i δ_i = 0``,
``mean_i u_i(x) = mean_i [δ_i + ū_i(x) + ∇ū_i(x) δ_i + O(δ²)] = mean_i ∇ū_i(x) δ_i + O(δ²)``,
a product of two small quantities (upsampling is linear, so it keeps the mean at 0). The
group-motion loss term handles the remainder during training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..intensity import normalise_intensities
from ..spatial import compose_displacements, upsample_displacement, warp
from .auxiliary import ContrastInsensitiveFeatures
from .blocks import ConvBlock, FlowHead, SetAggregation, SharedUpdate, conv_block_on_parts, integrate_velocity

__all__ = ["Any2RegNet", "Any2RegOutput", "predict", "pad_to_multiple", "DEFAULT_TRAINING_SPACING_MM"]

#: Pixel spacing (mm) the network is trained at (the paper's STONE crops: 192 x 192 at ~1.5 mm).
DEFAULT_TRAINING_SPACING_MM = (1.5, 1.5)


@dataclasses.dataclass
class Any2RegOutput:
    """Everything :meth:`Any2RegNet.forward` computed (``return_intermediates=True``).

    Attributes
    ----------
    displacement : Tensor (N, 2, H, W)
        Final pull-back displacement on the input grid, pixels ``(dy, dx)``.
    increments : list of Tensor
        Incremental displacement ``δ^s`` (after integration, centring / reference fixing) per
        scale, coarsest first, in pixels of that scale (on the padded grid).
    velocities : list of Tensor
        Stationary velocity fields per scale (``diffeomorphic=True`` only; else empty).
    weights : list of Tensor (N,)
        Encoder aggregation weights ``a^s`` per scale, finest first.
    """

    displacement: torch.Tensor
    increments: list[torch.Tensor]
    velocities: list[torch.Tensor]
    weights: list[torch.Tensor]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad the last two axes of ``(N, C, H, W)`` up to a multiple of ``multiple``.

    The padding is split evenly between both sides (content stays centred). Returns the padded
    tensor and ``(top, bottom, left, right)``; crop with ``x[..., top:top + H, left:left + W]``.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if ph == 0 and pw == 0:
        return x, pads
    return F.pad(x, (pads[2], pads[3], pads[0], pads[1]), mode="replicate"), pads


class Any2RegNet(nn.Module):
    """Set-based groupwise registration network (Any2Reg).

    Parameters
    ----------
    scales : int
        Number of scales ``S`` (level 0 is the input resolution, each further level halves it).
    base_channels : int
        Feature channels at level 0; level ``s`` has ``base_channels * min(2**s, max_multiplier)``.
    max_multiplier : int
        Cap on the channel growth (2 keeps the default network at ~0.3 M parameters).
    in_channels : int
        Channels per frame (1 for magnitude images).
    use_auxiliary : bool
        Add the auxiliary contrast-insensitive stream: its own shared encoder, fused into the
        image features by concatenation + 1x1 conv at every scale, before aggregation.
    auxiliary_kind : {"mind", "ngf"}
        Built-in weight-free extractor (:class:`~.auxiliary.ContrastInsensitiveFeatures`) used
        when ``forward`` gets no ``auxiliary_features``.
    auxiliary_channels : int, optional
        Channels of the auxiliary features. Default: the built-in extractor's. Set it to the
        channel count of user-supplied feature maps (e.g. a segmentation model's logits); the
        built-in extractor is then only usable if its channel count matches.
    auxiliary_base_channels : int, optional
        Level-0 channels of the auxiliary encoder (default ``base_channels // 2``).
    aggregation : {"pca", "mean"}
        Correlation-guided aggregation (Any2Reg) or the mean (ablation).
    diffeomorphic : bool
        Predict a stationary velocity field per scale and integrate it by scaling and squaring.
    integration_steps : int
        Squarings for the diffeomorphic option (7).
    groupwise_centring : bool
        In groupwise mode (no reference frame) subtract the frame mean of every increment (or
        velocity) so that the mean displacement stays ≈ 0 (see the module docstring).
    differentiable_weights : bool
        Back-propagate through the eigenvector weights (see :class:`~.blocks.SetAggregation`).
    flow_init_std : float
        Standard deviation of the flow heads' initial weights (near zero → ~identity).
    """

    def __init__(
        self,
        scales: int = 4,
        base_channels: int = 16,
        *,
        max_multiplier: int = 2,
        in_channels: int = 1,
        use_auxiliary: bool = True,
        auxiliary_kind: str = "mind",
        auxiliary_channels: int | None = None,
        auxiliary_base_channels: int | None = None,
        aggregation: str = "pca",
        diffeomorphic: bool = False,
        integration_steps: int = 7,
        groupwise_centring: bool = True,
        differentiable_weights: bool = False,
        flow_init_std: float = 1e-5,
    ):
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be >= 1; got {scales}")
        if base_channels < 1 or max_multiplier < 1:
            raise ValueError("base_channels and max_multiplier must be >= 1")
        self.scales = int(scales)
        self.diffeomorphic = bool(diffeomorphic)
        self.integration_steps = int(integration_steps)
        self.groupwise_centring = bool(groupwise_centring)
        self.in_channels = int(in_channels)
        self.use_auxiliary = bool(use_auxiliary)
        self.channels = [base_channels * min(2**s, max_multiplier) for s in range(self.scales)]

        # image encoder + per-scale aggregation and shared update
        self.encoder = nn.ModuleList()
        for s, c in enumerate(self.channels):
            if s == 0:
                self.encoder.append(nn.Sequential(ConvBlock(in_channels, c), ConvBlock(c, c)))
            else:
                self.encoder.append(nn.Sequential(ConvBlock(self.channels[s - 1], c, stride=2), ConvBlock(c, c)))
        self.aggregation = SetAggregation(aggregation, differentiable_weights=differentiable_weights)
        self.update = nn.ModuleList(SharedUpdate(c) for c in self.channels)

        # auxiliary stream
        self.auxiliary_extractor: ContrastInsensitiveFeatures | None = None
        self.auxiliary_encoder = nn.ModuleList()
        self.fusion = nn.ModuleList()
        self.auxiliary_channels = 0
        if self.use_auxiliary:
            self.auxiliary_extractor = ContrastInsensitiveFeatures(auxiliary_kind)
            self.auxiliary_channels = int(auxiliary_channels or self.auxiliary_extractor.out_channels)
            aux_base = auxiliary_base_channels or max(1, base_channels // 2)
            aux_ch = [aux_base * min(2**s, max_multiplier) for s in range(self.scales)]
            for s, c in enumerate(aux_ch):
                if s == 0:
                    self.auxiliary_encoder.append(ConvBlock(self.auxiliary_channels, c))
                else:
                    self.auxiliary_encoder.append(ConvBlock(aux_ch[s - 1], c, stride=2))
                self.fusion.append(
                    nn.Sequential(nn.Conv2d(self.channels[s] + c, self.channels[s], 1), nn.LeakyReLU(0.2))
                )

        # decoder: [warped f_i, canonical g, upsampled flow] -> incremental flow (or velocity)
        self.decoder = nn.ModuleList(
            nn.Sequential(ConvBlock(2 * c + 2, c), ConvBlock(c, c), FlowHead(c, flow_init_std)) for c in self.channels
        )

        self.config: dict[str, Any] = {
            "scales": self.scales,
            "base_channels": base_channels,
            "max_multiplier": max_multiplier,
            "in_channels": in_channels,
            "use_auxiliary": self.use_auxiliary,
            "auxiliary_kind": auxiliary_kind,
            "auxiliary_channels": self.auxiliary_channels or None,
            "auxiliary_base_channels": auxiliary_base_channels,
            "aggregation": self.aggregation.mode,
            "diffeomorphic": self.diffeomorphic,
            "integration_steps": self.integration_steps,
            "groupwise_centring": self.groupwise_centring,
            "differentiable_weights": differentiable_weights,
            "flow_init_std": flow_init_std,
        }

    #: Frames per chunk of the frame-shared layers at inference (``None``: all at once).
    inference_chunk: int | None = 16

    # ------------------------------------------------------------------ helpers
    @property
    def size_multiple(self) -> int:
        """Input sizes are padded to a multiple of this (``2**scales``)."""
        return 2**self.scales

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_inputs(self, frames: torch.Tensor, auxiliary_features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if frames.ndim == 3 and self.in_channels == 1:
            frames = frames.unsqueeze(1)
        if frames.ndim != 4 or frames.shape[1] != self.in_channels:
            raise ValueError(
                f"frames must be (N, H, W) or (N, {self.in_channels}, H, W); got {tuple(frames.shape)}"
            )
        if frames.shape[0] < 2:
            raise ValueError(f"groupwise registration needs at least 2 frames; got {frames.shape[0]}")
        if auxiliary_features is None:
            return frames, None
        if not self.use_auxiliary:
            raise ValueError("auxiliary_features were given but this network has no auxiliary stream (use_auxiliary=False)")
        aux = auxiliary_features
        if aux.ndim == 3:
            aux = aux.unsqueeze(1)
        expected = (frames.shape[0], self.auxiliary_channels, *frames.shape[-2:])
        if aux.ndim != 4 or tuple(aux.shape) != expected:
            raise ValueError(
                f"auxiliary_features must have shape (N, C_aux, H, W) = {expected} to match the frames "
                f"and the network's auxiliary_channels={self.auxiliary_channels}; got {tuple(auxiliary_features.shape)}"
            )
        return frames, aux.to(frames)

    def _auxiliary(self, frames: torch.Tensor) -> torch.Tensor:
        assert self.auxiliary_extractor is not None
        if self.auxiliary_extractor.out_channels != self.auxiliary_channels:
            raise ValueError(
                f"this network expects {self.auxiliary_channels}-channel auxiliary features; the built-in "
                f"{self.auxiliary_extractor.kind!r} extractor gives {self.auxiliary_extractor.out_channels}: "
                "pass auxiliary_features"
            )
        return self.auxiliary_extractor(frames[:, :1])

    def _decode(self, scale: int, features: torch.Tensor, canonical: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """The decoder of ``scale`` on ``[f_i, g, u_i]``, given as parts: ``g``'s share of its
        first convolution is computed once, not per frame (:func:`.blocks.conv_block_on_parts`)."""
        first, *rest = self.decoder[scale]
        x = conv_block_on_parts(first, [features, canonical, field])
        for layer in rest:
            x = layer(x)
        return x

    def _constrain(self, field: torch.Tensor, reference_frame: int | None) -> torch.Tensor:
        """Fix the reference frame's field to 0, or centre the group (mean over frames = 0)."""
        if reference_frame is not None:
            keep = torch.ones(field.shape[0], 1, 1, 1, dtype=field.dtype, device=field.device)
            keep[reference_frame] = 0.0
            return field * keep
        if self.groupwise_centring:
            return field - field.mean(dim=0, keepdim=True)
        return field

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        frames: torch.Tensor,
        auxiliary_features: torch.Tensor | None = None,
        reference_frame: int | None = None,
        return_intermediates: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> torch.Tensor | Any2RegOutput:
        """Predict the pull-back displacement of every frame to the common grid.

        Parameters
        ----------
        frames : Tensor (N, H, W) or (N, in_channels, H, W)
            Intensities normalised to about [0, 1] (:func:`predict` does this). Any ``N >= 2``
            and any ``H x W``: the input is replicate-padded to a multiple of ``2**scales`` and
            the field cropped back.
        auxiliary_features : Tensor (N, auxiliary_channels, H, W), optional
            Per-frame features replacing the built-in extractor (e.g. from a segmentation
            model), on the same grid as ``frames``. Requires ``use_auxiliary=True``.
        reference_frame : int, optional
            All-to-one mode: this frame's field is exactly 0. ``None``: groupwise.
        return_intermediates : bool
            Return an :class:`Any2RegOutput` instead of the displacement tensor.
        progress : callable(fraction), optional
            Called after every chunk of frames of every frame-shared layer with the fraction
            of the forward pass done (0–1); it may raise to cancel the pass.

        Returns
        -------
        Tensor (N, 2, H, W) in pixels ``(dy, dx)`` (or :class:`Any2RegOutput`).
        """
        frames, aux = self._check_inputs(frames, auxiliary_features)
        n = frames.shape[0]
        if reference_frame is not None:
            reference_frame = int(reference_frame)
            if not -n <= reference_frame < n:
                raise ValueError(f"reference_frame {reference_frame} is outside 0..{n - 1}")
            reference_frame %= n
        h, w = frames.shape[-2:]
        x, pads = pad_to_multiple(frames, self.size_multiple)

        # Frame-shared layers see the frames in chunks when no gradient is needed: the result is
        # the same (every layer, instance norm included, works per frame) but the working set
        # stays cache-sized, so the time grows ~linearly with N instead of faster.
        chunk = None if torch.is_grad_enabled() else self.inference_chunk
        # the built-in extractor works per frame: in inference it runs chunk by chunk inside
        # the first auxiliary encoder layer (its full-resolution features are never all held)
        fused_extractor = self.use_auxiliary and aux is None and chunk is not None
        if self.use_auxiliary and not fused_extractor:
            aux = self._auxiliary(x) if aux is None else pad_to_multiple(aux, self.size_multiple)[0]
        tick = None
        if progress is not None:
            # frame-shared passes: per scale (auxiliary encoder,) encoder/fusion, update, decoder
            passes = self.scales * (4 if self.use_auxiliary else 3)
            done = [0]

            def tick(frames_done: int) -> None:
                done[0] += frames_done
                progress(min(1.0, done[0] / (passes * n)))

        # encoder with per-scale aggregation + shared update
        features: list[torch.Tensor] = []
        weights: list[torch.Tensor] = []
        f, a = x, aux
        for s in range(self.scales):
            if self.use_auxiliary:
                if s == 0 and fused_extractor:
                    a = _per_frame(lambda xi: self.auxiliary_encoder[0](self._auxiliary(xi)), chunk, x, tick=tick)
                else:
                    a = _per_frame(self.auxiliary_encoder[s], chunk, a, tick=tick)
                f = _per_frame(lambda fi, ai, s=s: self.fusion[s](torch.cat((self.encoder[s](fi), ai), dim=1)), chunk, f, a, tick=tick)
            else:
                f = _per_frame(self.encoder[s], chunk, f, tick=tick)
            g, wts = self.aggregation(f)
            # in place when chunked (inference): the update's input is not needed afterwards
            f = _per_frame(lambda fi, s=s, g=g: self.update[s](fi, g), chunk, f, tick=tick, out=f if chunk else None)
            features.append(f)
            weights.append(wts)
        aux = a = None  # the decoder works on the fused features only

        # decoder, coarse to fine, compositional
        u: torch.Tensor | None = None
        increments: list[torch.Tensor] = []
        velocities: list[torch.Tensor] = []
        for s in reversed(range(self.scales)):
            f = features[s]
            shape = tuple(f.shape[-2:])
            if u is None:
                u_up = f.new_zeros(n, 2, *shape)
                f_w = f
            else:
                u_up = upsample_displacement(u, shape)
                if chunk and not return_intermediates:
                    # warped in place, chunk by chunk (each frame's warp reads only that frame):
                    # one copy of the frame set's features at the finest scale instead of two
                    f_w = _per_frame(warp, chunk, f, u_up, out=f)
                else:
                    f_w = warp(f, u_up)
            if not return_intermediates:
                features[s] = f = None
            g, _ = self.aggregation(f_w)
            raw = _per_frame(
                # [f_i, g, u_i] as parts: g's share of the first convolution is computed once
                lambda fi, ui, s=s, g=g: self._decode(s, fi, g, ui),
                chunk, f_w, u_up, tick=tick,
            )
            delta = self._constrain(raw, reference_frame)
            if self.diffeomorphic:
                velocities.append(delta)
                delta = integrate_velocity(delta, self.integration_steps)
                if reference_frame is not None:  # exp(0) = 0 exactly; keep it exact anyway
                    delta = self._constrain(delta, reference_frame)
            increments.append(delta)
            u = delta if s == self.scales - 1 else compose_displacements(u_up, delta)

        top, _, left, _ = pads
        displacement = u[..., top : top + h, left : left + w]
        if not return_intermediates:
            return displacement
        return Any2RegOutput(displacement, increments, velocities, weights)


# ------------------------------------------------------------------ inference wrapper
#: (flip y, flip x) of the test-time orientations, in the order they are used.
_ORIENTATIONS = ((False, False), (True, True), (True, False), (False, True))


def _per_frame(fn, chunk: int | None, *tensors: torch.Tensor, tick=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``fn(*tensors)`` for frame-wise ``fn``, evaluated ``chunk`` frames at a time.

    ``tick(frames_done)`` is called after every chunk (progress reporting; it may raise to
    cancel: on hundreds of frames one pass takes seconds). ``out``: write the chunks into
    this tensor (it may be an input: a chunk's result depends only on its own frames, so
    overwriting them once it is computed is safe; used in inference to keep one copy of
    the frame set's features instead of two)."""
    n = tensors[0].shape[0]
    if chunk is None or n <= chunk:
        result = fn(*tensors)
        if tick is not None:
            tick(n)
        return result
    # chunks are written into one preallocated output: concatenating a list of chunks would
    # hold every frame's result twice at the peak (hundreds of frames: gigabytes)
    for i in range(0, n, chunk):
        part = fn(*(t[i : i + chunk] for t in tensors))
        if out is None:
            out = part.new_empty((n, *part.shape[1:]))
        out[i : i + part.shape[0]] = part
        if tick is not None:
            tick(part.shape[0])
        del part
    return out


def _resize_images(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize ``(N, C, h, w)`` with corner alignment (the grid convention of
    :func:`core.spatial.upsample_displacement`), anti-aliased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=True, antialias=shrink)


def _working_shape(shape: tuple[int, int], spacing_mm, training_spacing_mm, tolerance: float = 0.1) -> tuple[int, int]:
    """Grid at the training spacing covering the same field of view (corner-aligned), or ``shape``
    when the spacing is unknown or within ``tolerance`` (relative) of the training spacing."""
    if spacing_mm is None:
        return tuple(shape)
    spacing = [float(s) for s in spacing_mm]
    train = [float(s) for s in training_spacing_mm]
    if len(spacing) != 2 or len(train) != 2 or min(spacing) <= 0 or min(train) <= 0:
        raise ValueError(f"spacings must be two positive numbers (dy, dx); got {spacing_mm}, {training_spacing_mm}")
    if all(abs(s / t - 1.0) <= tolerance for s, t in zip(spacing, train)):
        return tuple(shape)
    # at least 8 pixels per axis (or the input's own size): a tiny field of view at a fine
    # spacing would otherwise shrink to a grid too small for the loss and the scorer
    return tuple(max(min(8, size), int(round((size - 1) * s / t)) + 1) for size, s, t in zip(shape, spacing, train))


def predict(
    net: Any2RegNet,
    frames,
    spacing_mm: tuple[float, float] | None = None,
    training_spacing_mm: tuple[float, float] = DEFAULT_TRAINING_SPACING_MM,
    *,
    reference_frame: int | None = None,
    auxiliary_features=None,
    progress: Callable[[float], None] | None = None,
    orientations: int = 1,
    normalised: bool = False,
    spread: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Run ``net`` on a raw sequence and return fields on the input grid.

    Steps: robust per-sequence intensity normalisation (1st–99.5th percentile of all frames,
    :func:`core.registration.normalise_intensities`); when ``spacing_mm`` is known and differs
    from ``training_spacing_mm`` by more than 10 % on either axis, bilinear resampling of the
    frames (and auxiliary features) to the training spacing; the network's forward pass (which
    replicate-pads to a multiple of ``2**S`` and crops back); resampling of the predicted field
    back to the input grid with :func:`core.spatial.upsample_displacement` (which also rescales
    the pixel units).

    Parameters
    ----------
    net : Any2RegNet
    frames : ndarray or Tensor (N, H, W)
    spacing_mm : (dy, dx), optional
        Pixel spacing of ``frames``; ``None``: assume the training spacing.
    training_spacing_mm : (dy, dx)
        Spacing the network was trained at.
    reference_frame : int, optional
        All-to-one mode (``u_ref = 0``).
    auxiliary_features : ndarray or Tensor (N, C_aux, H, W), optional
        User-supplied per-frame features on the input grid.
    progress : callable(fraction), optional
        Passed to the forward pass (called per chunk of frames; may raise to cancel).
    orientations : {1, 2, 4}
        Test-time augmentation: the mean of the fields predicted for the sequence as given,
        rotated by 180° (2) and also flipped along each axis (4), each mapped back. The
        network is not exactly flip-equivariant, so its small orientation-dependent errors
        (e.g. motion invented from contrast change alone) partly cancel; the time grows
        with the number of passes. The same transform is applied to every frame, so the
        result stays permutation-equivariant.
    normalised : bool
        ``frames`` are already normalised (:func:`core.intensity.normalise_intensities`, as
        the engines receive them): skip that step (it sorts every pixel of the sequence).
    spread : bool
        Also return the per-component standard deviation of the field over the
        ``orientations`` (input pixels, ``(N, 2, H, W)``; zeros for one orientation): how much
        the network's answer depends on the orientation it was shown (the engines' per-pixel
        uncertainty, ``displacement_sd``).

    The network runs on the device of its parameters (move it with ``net.to(device)``) and is
    put in eval mode for the call (its previous mode is restored).

    Returns
    -------
    ndarray float32 (N, 2, H, W): pull-back displacement in input pixels ``(dy, dx)``.
    """
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 3:
        raise ValueError(f"frames must be (N, H, W); got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("frames contain NaN or infinite values")
    param = next(net.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    shape = tuple(array.shape[-2:])
    array = array.astype(np.float32, copy=False)
    x = torch.from_numpy(array if normalised else normalise_intensities(array)).to(dev)[:, None]
    aux = None
    if auxiliary_features is not None:
        aux = torch.as_tensor(np.asarray(auxiliary_features) if not isinstance(auxiliary_features, torch.Tensor) else auxiliary_features)
        aux = aux.to(device=dev, dtype=torch.float32)
        if aux.ndim == 3:
            aux = aux[:, None]
        if aux.ndim != 4 or aux.shape[0] != array.shape[0] or tuple(aux.shape[-2:]) != shape:
            raise ValueError(
                f"auxiliary_features must be (N, C_aux, H, W) on the frames' grid {(array.shape[0], '*', *shape)}; "
                f"got {tuple(aux.shape)}"
            )

    work = _working_shape(shape, spacing_mm, training_spacing_mm)
    x = _resize_images(x, work)
    if aux is not None:
        aux = _resize_images(aux, work)

    if orientations not in (1, 2, 4):
        raise ValueError(f"orientations must be 1, 2 or 4; got {orientations}")
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            fields = []
            for k, (flip_y, flip_x) in enumerate(_ORIENTATIONS[:orientations]):
                def passes(fraction, k=k):
                    if progress is not None:
                        progress((k + fraction) / orientations)

                dims = [d for d, flip in ((-2, flip_y), (-1, flip_x)) if flip]
                xi = x.flip(dims) if dims else x
                ai = aux.flip(dims) if (dims and aux is not None) else aux
                ui = net(xi, auxiliary_features=ai, reference_frame=reference_frame, progress=passes)
                if dims:  # back to the input orientation: flip the grid and the flipped components
                    sign = ui.new_tensor([-1.0 if flip_y else 1.0, -1.0 if flip_x else 1.0]).view(1, 2, 1, 1)
                    ui = ui.flip(dims) * sign
                fields.append(ui)
            stacked = torch.stack(fields)
            u = stacked.mean(dim=0)
            # population SD written out: torch's std over a short leading axis took ~0.1 s here
            # (N = 11, 192 x 192), a tenth of the whole pass
            sd = (stacked - u).square().mean(dim=0).sqrt() if spread else None
            if tuple(u.shape[-2:]) != shape:
                u = upsample_displacement(u, shape)
                if sd is not None:  # an SD in pixels rescales with the grid like a displacement
                    sd = upsample_displacement(sd, shape).abs()
    finally:
        net.train(was_training)
    u_np = u.float().cpu().numpy().astype(np.float32, copy=False)
    if spread:
        return u_np, sd.float().cpu().numpy().astype(np.float32, copy=False)
    return u_np
