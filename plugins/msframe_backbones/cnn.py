"""``cnn``: a plain residual convolutional network (DnCNN-like)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities, Params


class PlainCNN(nn.Module):
    """``depth`` 3x3 convolutions with ``channels`` features; predicts a residual added to the input.

    A conditioning vector (e.g. the noise level) is appended to the input as constant channels, so
    the same weights apply on every mesh.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, channels: int, depth: int, norm: bool, residual: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=not norm))
            if norm:
                layers.append(nn.GroupNorm(min(8, channels), channels))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.residual = residual

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x
        if cond is not None:
            h = torch.cat([x, cond[:, :, None, None].expand(-1, -1, *x.shape[2:]).to(x.dtype)], 1)
        out = self.body(h)
        return x[:, : self.out_channels] + out if self.residual else out


class CNN(Backbone):
    """A plain CNN (:class:`PlainCNN`) that keeps the input size; any input size works."""

    class Params(Params):
        channels: int = Field(32, ge=1)
        depth: int = Field(6, ge=2)  # convolution layers, first and last included
        norm: bool = False  # GroupNorm after the inner convolutions
        residual: bool = True  # predict the correction to the input, not the image

    def capabilities(self) -> Capabilities:
        return Capabilities(min_size=1, multiple=1, conditioning=True, scale=1, batch_independent=True)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        p = self.params
        return PlainCNN(in_channels, out_channels, cond_channels, p.channels, p.depth, p.norm, p.residual)
