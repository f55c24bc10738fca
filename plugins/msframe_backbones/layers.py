"""Building blocks shared by the built-in backbones.

Every block is size-agnostic (the same weights apply on every mesh) and creates no tensor on the
host inside ``forward``, so a training step can be captured in a CUDA graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CondEmbedding(nn.Module):
    """Per-sample conditioning ``[N, k]`` → embedding ``[N, dim]``.

    Each conditioning value v contributes the features v, sin(2^j π v) and cos(2^j π v) for
    j = 0 … ``frequencies`` − 1 (made for values of order one or below, such as noise levels or
    times in [0, 1]); a two-layer MLP mixes them.
    """

    def __init__(self, cond_channels: int, dim: int, frequencies: int = 8):
        super().__init__()
        # A buffer, not a constant built in forward: it lives on the module's device, so forward
        # makes no host tensor and no host-to-device copy. Not persistent: it is derived, not learnt.
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(cond_channels * (2 * frequencies + 1), dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, cond: Tensor | None) -> Tensor:
        if cond is None:
            raise ValueError("this network was built for a conditioning input; call it as module(x, cond)")
        cond = cond.to(self.frequencies.dtype)
        angles = cond[:, :, None] * self.frequencies
        return self.mlp(torch.cat([cond, angles.sin().flatten(1), angles.cos().flatten(1)], 1))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))), width ``cin`` → ``cout``.

    With ``emb_dim > 0`` the block takes an embedding ``[N, emb_dim]`` that scales and shifts the
    normalised features after the first convolution (FiLM): h ← h·(1 + a) + b.
    """

    def __init__(self, cin: int, cout: int, groups: int, dropout: float = 0.0, emb_dim: int = 0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        if self.film is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, 1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all pixels, added to the input (pre-norm, one 1x1 projection each way)."""

    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, hgt, wid = x.shape
        # [N, 3C, H, W] -> three [N, heads, H·W, C/heads]
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, hgt * wid).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, hgt, wid))


def zero_output(layer: nn.Conv2d) -> nn.Conv2d:
    """``layer`` with weights and bias set to zero, in place.

    The last layer of every built-in backbone starts at zero: the network predicts a correction to
    the task's baseline (``Task.restored``), so an untrained network restores exactly the baseline
    instead of adding random structure to it. Gradients still reach the layer (its input is not zero),
    and through it the rest of the network from the second step on.
    """
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def divisible(channels: int, by: int, what: str) -> None:
    """Raise ValueError (a located recipe message) unless ``by`` divides ``channels``."""
    if channels % by:
        raise ValueError(f"{channels} channels cannot be split into {by} {what}")
