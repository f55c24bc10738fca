"""``denoise``: additive white Gaussian noise."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from msframe.components import Degraded, Params, Resampler, Task
from msframe.errors import UserError

from ._common import ChosenLoss, LossKind


class Denoise(ChosenLoss, Task):
    """Additive Gaussian noise of standard deviation σ (images in [0, 1]).

    σ is fixed (``sigma``) or drawn per sample uniformly from ``sigma_range``. With
    ``condition = true`` the network also receives σ as a one-value conditioning input.
    """

    class Params(Params):
        sigma: float = Field(0.1, ge=0)
        sigma_range: tuple[float, float] | None = None  # [low, high]: draw σ per sample instead
        condition: bool = False  # give σ to the network
        clip: bool = False  # clip the noisy image to [0, 1] (a camera would)
        # On coarse meshes: "rescaled" (default) restricts the same noise draw and rescales it to σ
        # per pixel, so every mesh poses the same denoising problem and a coarse stage hot-starts the
        # fine one; "restricted" restricts the noisy image (the reference code's literal
        # degrade-then-restrict: the noise shrinks by the resampler's gain with every restriction).
        coarse_noise: Literal["restricted", "rescaled"] = "rescaled"
        loss: LossKind = "log_mse"  # per-sample training loss (see _common.per_sample_loss); measured best

        @model_validator(mode="after")
        def _range(self):
            if self.sigma_range is not None and not (0 <= self.sigma_range[0] <= self.sigma_range[1]):
                raise ValueError("sigma_range must be [low, high] with 0 <= low <= high")
            return self

    def cond_channels(self) -> int:
        return 1 if self.params.condition else 0

    def degrade(self, clean: torch.Tensor, generator: torch.Generator) -> Degraded:
        p = self.params
        n = clean.shape[0]
        if p.sigma_range is None:
            sigma = torch.full((n,), p.sigma, device=clean.device, dtype=clean.dtype)
        else:
            lo, hi = p.sigma_range
            sigma = lo + (hi - lo) * torch.rand(n, generator=generator, device=clean.device, dtype=clean.dtype)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        noisy = clean + sigma.view(-1, 1, 1, 1) * noise
        if p.clip:
            noisy = noisy.clamp(0, 1)
        return Degraded(noisy, clean, sigma.view(-1, 1) if p.condition else None)

    def restrict(self, batch: Degraded, resampler: Resampler) -> Degraded:
        if self.params.coarse_noise == "restricted":
            return super().restrict(batch, resampler)
        if self.params.clip:
            raise UserError("coarse_noise = 'rescaled' needs clip = false (clipped noise is not additive)",
                            key="task.coarse_noise")
        target = resampler.restrict(batch.target)
        noise = resampler.restrict(batch.input - batch.target)  # the same draw, restricted
        return Degraded(target + noise / noise_gain(resampler), target, batch.cond)


_GAINS: dict[tuple, float] = {}


def noise_gain(resampler: Resampler) -> float:
    """Standard deviation of one restriction of unit white noise (how much it shrinks σ), exactly.

    For a linear restriction R, a coarse pixel j of R(n) has variance Σ_i R_ji²: the squared row of R,
    read off by restricting a unit impulse at every fine pixel of a 32x32 field around j.
    """
    key = (type(resampler), resampler.params)
    if key not in _GAINS:
        side = 32
        impulses = torch.eye(side * side, dtype=torch.float64).view(-1, 1, side, side)
        row = resampler.restrict(impulses)[:, 0, side // 4, side // 4]
        _GAINS[key] = float(row.pow(2).sum().sqrt())
    return _GAINS[key]
