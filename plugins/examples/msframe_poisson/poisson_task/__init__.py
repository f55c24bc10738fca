"""``poisson``: photon shot noise, a worked example of a third-party msframe plugin.

The whole plugin is this module: one :class:`msframe.components.Task` subclass with its parameter
model, and one hook that registers it. ``pyproject.toml`` points the ``msframe`` entry-point group
at this module, so installing the distribution is all it takes for recipes to say
``[task] type = "poisson"``.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

import msframe
from msframe.components import Degraded, Params, Task

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"

__all__ = ["Poisson"]


class Poisson(Task):
    """Photon shot noise: ``y = Poisson(peak · x) / peak`` for a clean image x in [0, 1].

    ``peak`` is the expected photon count of a pixel of intensity 1, so the noise at intensity x
    has mean 0 and variance x / peak: the smaller the peak, the darker the scene and the noisier the
    image. ``peak_range = [low, high]`` draws the peak per sample instead, log-uniformly (each
    factor of ten equally likely). With ``condition = true`` the network also receives the noise
    level ``1 / sqrt(peak)`` (the standard deviation at intensity 1) as a one-value conditioning
    input. Every draw (peaks and photon counts) comes from the generator ``degrade`` is given.

    Coarse meshes follow the default rule of :class:`msframe.components.Task`, "degrade, then
    restrict": the noisy image and the clean target are both restricted with the run's resampler.
    An averaging restriction pools the photons of four pixels, so each coarsening halves the noise's
    standard deviation, as for ``denoise`` with ``coarse_noise = "restricted"``.
    """

    class Params(Params):
        peak: float = Field(30.0, gt=0)  # photons expected at intensity 1
        peak_range: tuple[float, float] | None = None  # [low, high]: draw the peak per sample instead
        condition: bool = False  # give the noise level 1/sqrt(peak) to the network

        @model_validator(mode="after")
        def _range(self):
            if self.peak_range is not None and not 0 < self.peak_range[0] <= self.peak_range[1]:
                raise ValueError("peak_range must be [low, high] with 0 < low <= high")
            return self

    def cond_channels(self) -> int:
        return 1 if self.params.condition else 0

    def peaks(self, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
        """One peak per sample, ``[n]`` on ``like``'s device and dtype: ``peak``, or log-uniform in ``peak_range``."""
        p = self.params
        if p.peak_range is None:
            return torch.full((n,), p.peak, device=like.device, dtype=like.dtype)
        low, high = p.peak_range
        u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
        return low * (high / low) ** u

    def degrade(self, clean: Tensor, generator: torch.Generator) -> Degraded:
        peak = self.peaks(clean.shape[0], generator, clean).view(-1, 1, 1, 1)
        counts = torch.poisson(clean * peak, generator=generator)  # whole photon counts per pixel
        cond = peak.view(-1, 1).rsqrt() if self.params.condition else None
        return Degraded(counts / peak, clean, cond)


@msframe.hookimpl
def register_tasks(register):
    register("poisson", Poisson)
