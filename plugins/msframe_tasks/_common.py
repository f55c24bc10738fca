"""Pieces shared by the built-in tasks: validated ranges, uniform draws and the draw stored in a batch."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator
from torch import Tensor

from msframe.components import Degraded


def _ordered(bounds):
    low, high = bounds
    if not 0 <= low <= high:
        raise ValueError("must be [low, high] with 0 <= low <= high")
    return bounds


def _fraction(bounds):
    if bounds[1] > 1:
        raise ValueError("must lie within [0, 1] (a fraction of the image side)")
    return bounds


#: ``[low, high]`` with ``0 <= low <= high``; a value is drawn uniformly from it per sample.
Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
#: A :data:`Range` of fractions of the image side (``high <= 1``).
FractionRange = Annotated[tuple[float, float], AfterValidator(_ordered), AfterValidator(_fraction)]
#: ``[low, high]`` of whole numbers, both ends included.
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


def uniform(bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Independent draws from U[low, high) of ``shape``, on ``like``'s device and dtype."""
    low, high = bounds
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def state_of(batch: Degraded, what: str) -> Any:
    """The draw that ``degrade`` stored in ``batch.state``; a clear error if it was lost on the way.

    ``what`` names the task and option that need it, for the message.
    """
    if batch.state is None:
        raise RuntimeError(
            f"{what} restricts using the draw stored in the batch its degrade() returned, but the batch has "
            f"no state: something between degrade() and restrict() rebuilt the batch"
        )
    return batch.state


#: The per-sample losses a built-in task offers (its ``loss`` parameter).
LossKind = Literal["mse", "l1", "log_mse"]


class ChosenLoss:
    """Mixin of the built-in tasks: the per-sample loss named by ``params.loss``, and its divergence rule."""

    def loss(self, restored: Tensor, batch: Degraded) -> Tensor:
        return per_sample_loss(self.params.loss, restored, batch.target)

    def exploded(self, loss: float, first: float, factor: float) -> bool:
        """For ``log_mse`` (in dB) a factor on the squared error is an offset: loss > first + 10·log10(factor)."""
        if self.params.loss == "log_mse":
            return loss > first + 10 * math.log10(factor)
        return super().exploded(loss, first, factor)


def per_sample_loss(kind: str, restored: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample loss ``[N]`` of ``restored`` against ``target``, over the pixels ``weight`` selects.

    - ``mse``: mean squared error.
    - ``l1``: mean absolute error.
    - ``log_mse``: 10·log10(mse + 1e-10), i.e. minus the sample's PSNR (for images in [0, 1]). Its mean
      over a batch is minus the mean per-image PSNR, the figure evaluation reports, so every sample
      counts by its *relative* error: smooth, nearly clean samples are not drowned by textured ones,
      as they are under plain MSE.

    ``weight`` (``[N, 1, H, W]`` of 0/1, optional) restricts the mean to the selected pixels (a
    sample with none selected scores 0 for mse/l1).
    """
    error = (restored - target).abs() if kind == "l1" else (restored - target).pow(2)
    if weight is None:
        per = error.flatten(1).mean(1)
    else:
        per = (error * weight).flatten(1).sum(1) / (weight.flatten(1).sum(1).clamp_min(1) * target.shape[1])
    return 10 * torch.log10(per + 1e-10) if kind == "log_mse" else per
