"""``unet``: an encoder-decoder with skip connections, residual blocks and GroupNorm."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities, Params

from .layers import CondEmbedding, ResBlock, SelfAttention2d, divisible, zero_output


class UNetModule(nn.Module):
    """The network of :class:`UNet`; called as ``module(x, cond)``."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, p: UNet.Params):
        super().__init__()
        widths = [p.base * m for m in p.multipliers]
        emb_dim = 4 * p.base if cond_channels else 0
        self.embed = CondEmbedding(cond_channels, emb_dim) if cond_channels else None
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        def blocks(cin: int, cout: int) -> nn.ModuleList:
            return nn.ModuleList(ResBlock(cin if i == 0 else cout, cout, p.groups, p.dropout, emb_dim) for i in range(p.blocks))

        self.down = nn.ModuleList()  # per level: its blocks, then (except the deepest) a stride-2 convolution
        self.downsample = nn.ModuleList()
        ch = widths[0]
        for level, w in enumerate(widths):
            self.down.append(blocks(ch, w))
            ch = w
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.mid1 = ResBlock(ch, ch, p.groups, p.dropout, emb_dim)
        self.attention = SelfAttention2d(ch, p.groups, p.heads) if p.attention else None
        self.mid2 = ResBlock(ch, ch, p.groups, p.dropout, emb_dim)
        self.up = nn.ModuleList()  # deepest first: blocks on [features, skip of the same level]
        self.upsample = nn.ModuleList()  # convolution after each nearest-neighbour doubling
        for level in reversed(range(len(widths))):
            w = widths[level]
            self.up.append(blocks(ch + w, w))
            ch = w
            if level > 0:
                self.upsample.append(nn.Conv2d(w, widths[level - 1], 3, padding=1))
                ch = widths[level - 1]
        self.head = nn.Sequential(nn.GroupNorm(p.groups, ch), nn.SiLU(), zero_output(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = None if self.embed is None else self.embed(cond)
        h = self.stem(x)
        skips = []
        for level, level_blocks in enumerate(self.down):
            for block in level_blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.mid1(h, emb)
        if self.attention is not None:
            h = self.attention(h)
        h = self.mid2(h, emb)
        for i, level_blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], 1)
            for block in level_blocks:
                h = block(h, emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)


class UNet(Backbone):
    """A U-Net: ``len(multipliers)`` levels of ``blocks`` residual blocks of width base × multiplier,
    a stride-2 convolution between levels, a middle of two residual blocks (with optional
    self-attention between them), and a mirrored decoder that concatenates each level's features.

    The defaults are the paper's configuration (32 base channels, multipliers 1, 2, 4, one block
    per level, GroupNorm) except dropout, which the paper sets to 0.5: dropout draws independent
    masks for the fine and the coarse evaluation of one MGE correction, which adds variance to it.
    A conditioning input (e.g. the noise level) is embedded by an MLP and scales and shifts every
    residual block. Input sides must be multiples of 2^(len(multipliers) − 1), the total downsampling.
    """

    class Params(Params):
        base: int = Field(32, ge=1)  # channels of the finest level
        multipliers: tuple[Annotated[int, Field(ge=1)], ...] = Field((1, 2, 4), min_length=1)  # width per level, × base
        blocks: int = Field(1, ge=1)  # residual blocks per level
        groups: int = Field(8, ge=1)  # GroupNorm groups
        dropout: float = Field(0.0, ge=0, lt=1)
        attention: bool = False  # self-attention in the middle (the coarsest level)
        heads: int = Field(4, ge=1)  # attention heads

        @model_validator(mode="after")
        def _widths(self):
            for m in self.multipliers:
                divisible(self.base * m, self.groups, "GroupNorm groups (groups)")
            if self.attention:
                divisible(self.base * self.multipliers[-1], self.heads, "attention heads (heads)")
            return self

    def capabilities(self) -> Capabilities:
        side = 2 ** (len(self.params.multipliers) - 1)
        return Capabilities(min_size=side, multiple=side, conditioning=True, scale=1, batch_independent=True)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        return UNetModule(in_channels, out_channels, cond_channels, self.params)
