"""``superres``: recover the high-resolution image from an antialiased low-resolution copy."""

from __future__ import annotations

from typing import Literal

import kornia.geometry.transform as KT
import torch
from pydantic import Field
from torch import Tensor

from msframe.components import Degraded, Params, Task
from msframe.errors import UserError

from ._common import ChosenLoss, LossKind


class SuperRes(ChosenLoss, Task):
    """Network input: the clean image downsampled by ``scale`` (2 or 4), plus optional noise; target: the clean image.

    ``downsample``:

    - ``"bicubic"``: ``kornia.geometry.transform.resize`` to side/scale with bicubic interpolation,
      ``align_corners=False`` and ``antialias=True``, which first blurs with a Gaussian of
      σ = (scale − 1)/2 pixels (0.5 for ×2, 1.5 for ×4; kernel side the odd number ≥ max(4σ, 3),
      reflected borders).
    - ``"area"``: the mean of every scale × scale block.

    Then white Gaussian noise of standard deviation ``noise_sigma`` is added to the low-resolution
    image. Coarse meshes restrict input and target with the resampler (the default rule), so a
    target of side r/2 comes with an input of side r/(2·scale). With ``downsample = "area"`` and the
    ``area`` resampler and no noise, the coarse pair is exactly the same problem posed on the
    coarse mesh (block means commute); other choices approximate it, and restricted noise is weaker.
    """

    class Params(Params):
        scale: Literal[2, 4] = 2
        downsample: Literal["bicubic", "area"] = "bicubic"
        noise_sigma: float = Field(0.0, ge=0)
        loss: LossKind = "log_mse"  # per-sample training loss (see _common.per_sample_loss); measured best

    def scale(self) -> int:
        return self.params.scale

    def baseline(self, batch: Degraded) -> Tensor:
        """Bicubic upsampling of the low-resolution input: the usual reference for super-resolution."""
        return KT.resize(batch.input, tuple(batch.target.shape[-2:]), interpolation="bicubic", align_corners=False)

    def degrade(self, clean: Tensor, generator: torch.Generator) -> Degraded:
        p = self.params
        h, w = clean.shape[-2:]
        if h % p.scale or w % p.scale:
            raise UserError(f"a {h}x{w} px image cannot be downsampled by {p.scale}: sides must be multiples of it",
                            key="task.scale")
        size = (h // p.scale, w // p.scale)
        if p.downsample == "bicubic":
            low = KT.resize(clean, size, interpolation="bicubic", align_corners=False, antialias=True)
        else:
            low = KT.resize(clean, size, interpolation="area")
        noise = torch.randn(low.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return Degraded(low + p.noise_sigma * noise, clean)
