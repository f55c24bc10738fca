"""``resnet``: a flat residual network (no downsampling)."""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities, Params

from .layers import CondEmbedding, ResBlock, divisible, zero_output


class ResNetModule(nn.Module):
    """The network of :class:`ResNet`; called as ``module(x, cond)``."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, p: ResNet.Params):
        super().__init__()
        emb_dim = p.channels if cond_channels else 0
        self.embed = CondEmbedding(cond_channels, emb_dim) if cond_channels else None
        self.stem = nn.Conv2d(in_channels, p.channels, 3, padding=1)
        self.body = nn.ModuleList(ResBlock(p.channels, p.channels, p.groups, p.dropout, emb_dim) for _ in range(p.blocks))
        self.head = nn.Sequential(nn.GroupNorm(p.groups, p.channels), nn.SiLU(),
                                  zero_output(nn.Conv2d(p.channels, out_channels, 3, padding=1)))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = None if self.embed is None else self.embed(cond)
        h = self.stem(x)
        for block in self.body:
            h = block(h, emb)
        return self.head(h)


class ResNet(Backbone):
    """The paper's flat residual network: a 3x3 convolution to ``channels`` features, ``blocks``
    pre-activation residual blocks (GroupNorm, SiLU, two 3x3 convolutions) at full resolution, and
    a 3x3 convolution to the output. The defaults follow the paper's reference implementation
    (128 channels, two blocks). A conditioning input (e.g. the noise level) is embedded by an MLP
    and scales and shifts every block. Any input size works.
    """

    class Params(Params):
        channels: int = Field(128, ge=1)
        blocks: int = Field(2, ge=1)  # residual blocks, two convolutions each
        groups: int = Field(8, ge=1)  # GroupNorm groups
        dropout: float = Field(0.0, ge=0, lt=1)

        @model_validator(mode="after")
        def _groups(self):
            divisible(self.channels, self.groups, "GroupNorm groups (groups)")
            return self

    def capabilities(self) -> Capabilities:
        return Capabilities(min_size=1, multiple=1, conditioning=True, scale=1, batch_independent=True)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        return ResNetModule(in_channels, out_channels, cond_channels, self.params)
