"""``cnn``: a plain residual convolutional network (DnCNN-like)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities, Params

from .layers import zero_output

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU}


class PlainCNN(nn.Module):
    """``depth`` 3x3 convolutions with ``channels`` features; the last starts at zero (see
    :func:`~msframe_backbones.layers.zero_output`), so the output is a correction to the task's baseline.

    A conditioning vector (e.g. the noise level) is appended to the input as constant channels, so
    the same weights apply on every mesh.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, channels: int, depth: int, norm: bool,
                 activation: str = "silu"):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1), act()]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=not norm))
            if norm:
                layers.append(nn.GroupNorm(min(8, channels), channels))
            layers.append(act())
        layers.append(zero_output(nn.Conv2d(channels, out_channels, 3, padding=1)))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x
        if cond is not None:
            h = torch.cat([x, cond[:, :, None, None].expand(-1, -1, *x.shape[2:]).to(x.dtype)], 1)
        return self.body(h)


class CNN(Backbone):
    """A plain CNN (:class:`PlainCNN`) that keeps the input size; any input size works."""

    class Params(Params):
        channels: int = Field(32, ge=1)
        depth: int = Field(6, ge=2)  # convolution layers, first and last included
        norm: bool = False  # GroupNorm after the inner convolutions
        # silu, not relu: with the zero-initialised output layer, relu features can die early (measured
        # on deblur: the output stayed at zero), silu keeps a gradient everywhere
        activation: Literal["relu", "leaky_relu", "silu"] = "silu"

    def capabilities(self) -> Capabilities:
        return Capabilities(min_size=1, multiple=1, conditioning=True, scale=1, batch_independent=True)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        p = self.params
        return PlainCNN(in_channels, out_channels, cond_channels, p.channels, p.depth, p.norm, p.activation)
