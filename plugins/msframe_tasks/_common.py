"""Pieces shared by the built-in tasks: validated ranges, uniform draws and the draw stored in a batch."""

from __future__ import annotations

from typing import Annotated, Any

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
