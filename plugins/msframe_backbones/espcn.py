"""``espcn``: the efficient sub-pixel convolutional network for super-resolution (Shi et al., 2016)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities, Params

from .layers import zero_output

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}


class ESPCNModule(nn.Module):
    """The network of :class:`ESPCN`; called as ``module(x, cond)`` (``cond`` is not used)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, p: ESPCN.Params):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(p.features):
            kernel = p.first_kernel if i == 0 else 3
            layers += [nn.Conv2d(cin, width, kernel, padding=kernel // 2), ACTIVATIONS[p.activation]()]
            cin = width
        # out_channels · scale² low-resolution maps, rearranged into one map of scale× the side
        layers += [zero_output(nn.Conv2d(cin, out_channels * scale**2, 3, padding=1)), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.body(x)


class ESPCN(Backbone):
    """ESPCN: convolutions with ``features`` channels (the first ``first_kernel`` wide, the others 3x3)
    on the low-resolution input, a 3x3 convolution to out_channels × scale² maps, and a pixel
    shuffle that rearranges them into an image ``scale`` times larger. The scale is the task's (1,
    for a task without upsampling, makes it a plain CNN). The defaults are the original network's
    (64 and 32 channels, 5x5 first kernel, tanh). Like every backbone it predicts a correction to
    the task's baseline (for super-resolution the bicubic upsampling); its last convolution starts at
    zero. Any input size works.
    """

    class Params(Params):
        features: tuple[Annotated[int, Field(ge=1)], ...] = Field((64, 32), min_length=1)  # widths of the hidden layers
        first_kernel: int = Field(5, ge=1)  # odd kernel size of the first convolution
        activation: Literal["tanh", "relu", "silu"] = "tanh"

        @field_validator("first_kernel")
        @classmethod
        def _odd(cls, v: int) -> int:
            if v % 2 == 0:
                raise ValueError("must be odd, so that the output keeps the input's size")
            return v

    def capabilities(self) -> Capabilities:
        return Capabilities(min_size=1, multiple=1, conditioning=False, scale=None, batch_independent=True)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        return ESPCNModule(in_channels, out_channels, scale, self.params)
