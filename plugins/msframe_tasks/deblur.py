"""``deblur``: Gaussian or motion blur plus a little white noise."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from msframe.components import Degraded, Params, Resampler, Task
from msframe.errors import UserError

from ._common import ChosenLoss, LossKind, Range, state_of, uniform
from .denoise import noise_gain

#: boundary name -> torch.nn.functional.pad mode
_PAD = {"reflect": "reflect", "replicate": "replicate", "circular": "circular", "zero": "constant"}


class Deblur(ChosenLoss, Task):
    """Blur every sample with its own random kernel, then add white Gaussian noise (images in [0, 1]).

    Kernels (lengths in pixels of the finest mesh; every kernel sums to 1):

    - ``gaussian``: isotropic, σ fixed (``sigma``) or drawn per sample from ``sigma_range``; the
      weights are the Gaussian integrated over each pixel, so small σ tends to the identity.
    - ``line``: linear motion of length drawn from ``length`` at a uniform random angle.
    - ``walk``: camera shake, a random walk of that length whose heading drifts like a Brownian
      motion with ``turn`` radians of standard deviation over the whole path.

    Motion kernels are their path spread bilinearly onto the pixel grid, centred on the path's
    centroid so that blurring does not shift the image. The blur is a convolution (by FFT) of the
    image extended by ``boundary``; then noise of standard deviation ``noise_sigma`` is added.

    Coarse meshes (``coarse``):

    - ``"pixels"`` (default): every mesh poses the same problem per pixel: the clean target is
      restricted and blurred with the same kernel *in that mesh's pixels* (σ and motion paths in
      pixels unchanged), and the same noise draw is restricted and rescaled to ``noise_sigma`` per
      pixel. A network is a stack of convolutions that sees pixels, so what it learns to undo on a
      coarse mesh is exactly the operation it must undo on the fine one: the hot start carries over.
    - ``"operator"``: the same draw posed on the coarse mesh: the clean target is restricted and
      blurred with the same kernel expressed in coarse pixels (Gaussian σ and motion path halved per
      coarsening), and the same noise draw is restricted and rescaled to ``noise_sigma`` per pixel
      (as ``denoise``'s ``coarse_noise = "rescaled"``): the physical blur seen at a coarser
      resolution, so the blur narrows (in pixels) with every coarsening.
    - ``"restricted"`` (the reference code): the fine blurred, noisy image and the clean target are
      restricted, so the blur narrows and the noise weakens on every coarser mesh.
    """

    class Params(Params):
        kernel: Literal["gaussian", "line", "walk"] = "gaussian"
        sigma: float = Field(1.5, ge=0)  # Gaussian σ in finest-mesh pixels
        sigma_range: Range | None = None  # [low, high]: draw σ per sample instead
        length: Range = (3.0, 9.0)  # motion path length in finest-mesh pixels, drawn per sample
        turn: float = Field(1.0, ge=0)  # walk: std of the heading change along the whole path, radians
        noise_sigma: float = Field(0.01, ge=0)
        boundary: Literal["reflect", "replicate", "circular", "zero"] = "reflect"
        coarse: Literal["pixels", "operator", "restricted"] = "pixels"
        loss: LossKind = "log_mse"  # per-sample training loss (see _common.per_sample_loss); measured best

    def draw(self, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
        """One blur draw per sample, in finest-mesh pixels: σ ``[n]`` (gaussian) or path ``[n, T, 2]`` (x, y)."""
        p = self.params
        if p.kernel == "gaussian":
            if p.sigma_range is None:
                return torch.full((n,), p.sigma, device=like.device, dtype=like.dtype)
            return uniform(p.sigma_range, (n,), generator, like)
        # Points at most 1/4 px apart, so the bilinear splat draws a continuous stroke.
        points = max(2, math.ceil(4 * p.length[1]) + 1)
        length = uniform(p.length, (n, 1), generator, like)
        heading = uniform((0.0, 2 * math.pi), (n, 1), generator, like).expand(n, points - 1)
        if p.kernel == "walk":
            drift = torch.randn((n, points - 1), generator=generator, device=like.device, dtype=like.dtype)
            heading = heading + p.turn / math.sqrt(points - 1) * drift.cumsum(1)
        steps = length[:, :, None] / (points - 1) * torch.stack([heading.cos(), heading.sin()], -1)
        path = torch.cat([steps.new_zeros(n, 1, 2), steps.cumsum(1)], 1)
        return path - path.mean(1, keepdim=True)

    def radius(self, level: int) -> int:
        """Kernel radius on mesh ``level`` below the finest, in that mesh's pixels (side 2·radius + 1)."""
        p, scale = self.params, 0.5**level
        if p.kernel == "gaussian":
            sigma = p.sigma if p.sigma_range is None else p.sigma_range[1]
            return math.ceil(3 * sigma * scale)
        # A centred straight path reaches length/2 from its centroid, a curved one at most length.
        reach = p.length[1] / 2 if p.kernel == "line" else p.length[1]
        return math.ceil(reach * scale) + 1

    def kernels(self, draw: Tensor, level: int) -> Tensor:
        """The draw's kernels on mesh ``level``: ``[N, 2r+1, 2r+1]``, each summing to 1, centre at ``[r, r]``.

        Entry ``[i, j]`` weighs the displacement (dy, dx) = (i - r, j - r).
        """
        r, scale = self.radius(level), 0.5**level
        offsets = torch.arange(-r, r + 1, device=draw.device, dtype=draw.dtype)
        if self.params.kernel == "gaussian":
            # ∫ over each pixel of N(0, σ²): Φ((i + ½)/σ) − Φ((i − ½)/σ); σ → 0 gives the identity.
            s = (draw * scale).clamp_min(1e-6)[:, None] * math.sqrt(2)
            w = 0.5 * (torch.erf((offsets + 0.5) / s) - torch.erf((offsets - 0.5) / s))
            k = w[:, :, None] * w[:, None, :]
        else:
            path = draw * scale
            wx = (1 - (path[..., 0, None] - offsets).abs()).clamp_min(0)  # [N, T, 2r+1]
            wy = (1 - (path[..., 1, None] - offsets).abs()).clamp_min(0)
            k = torch.einsum("nti,ntj->nij", wy, wx)
        return k / k.sum((1, 2), keepdim=True)

    def degrade(self, clean: Tensor, generator: torch.Generator) -> Degraded:
        draw = self.draw(clean.shape[0], generator, clean)
        noise = self.params.noise_sigma * torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        degraded = self.blur(clean, self.kernels(draw, 0)) + noise
        if self.params.coarse == "restricted":
            return Degraded(degraded, clean)
        return Degraded(degraded, clean, None, _OperatorDraw(draw, 0, noise))

    def restrict(self, batch: Degraded, resampler: Resampler) -> Degraded:
        if self.params.coarse == "restricted":
            return super().restrict(batch, resampler)
        draw, level, noise = state_of(batch, f"task 'deblur' with coarse = '{self.params.coarse}'")
        target = resampler.restrict(batch.target)
        noise = resampler.restrict(noise) / noise_gain(resampler)
        kernels = self.kernels(draw, level + 1 if self.params.coarse == "operator" else 0)
        degraded = self.blur(target, kernels) + noise
        return Degraded(degraded, target, None, _OperatorDraw(draw, level + 1, noise))

    def blur(self, x: Tensor, kernels: Tensor) -> Tensor:
        """Each sample's channels convolved with its kernel: y(p) = Σ_d k(d) x(p − d).

        ``x`` is extended by the kernel radius with the ``boundary`` rule, convolved by FFT (the
        padding keeps the FFT's wrap-around out of the kept pixels), and cropped back.
        """
        h, w = x.shape[-2:]
        r = (kernels.shape[-1] - 1) // 2
        mode = self.params.boundary
        if (mode == "reflect" and r >= min(h, w)) or (mode == "circular" and r > min(h, w)):
            raise UserError(
                f"a blur kernel of radius {r} px does not fit a {h}x{w} px image with boundary '{mode}'; "
                "use smaller kernels (sigma, sigma_range, length) or boundary 'replicate' or 'zero'",
                key="task.boundary",
            )
        padded = F.pad(x, (r, r, r, r), mode=_PAD[mode])
        size = padded.shape[-2:]
        # The kernel placed with its centre at index (0, 0) of the padded grid.
        k = F.pad(kernels, (0, size[1] - 2 * r - 1, 0, size[0] - 2 * r - 1)).roll((-r, -r), (1, 2))
        spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(k)[:, None]
        return torch.fft.irfft2(spectrum, s=size)[..., r : r + h, r : r + w]


class _OperatorDraw(NamedTuple):
    """What ``coarse = "pixels"`` or ``"operator"`` needs to pose the same draw one mesh coarser."""

    blur: Tensor  # the draw in finest-mesh pixels (σ or path)
    level: int  # meshes below the finest of the batch it is attached to
    noise: Tensor  # the noise of that batch, on its mesh
