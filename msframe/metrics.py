"""Image quality: PSNR and SSIM per image (images in [0, 1]), averaged by the caller."""

from __future__ import annotations

import kornia
import torch
from torch import Tensor


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB, ``10 log10(1 / mse)``, shape ``[N]``."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def ssim(x: Tensor, y: Tensor, window: int = 11) -> Tensor:
    """Per-image mean SSIM (Gaussian window, σ 1.5, as in Wang et al. 2004), shape ``[N]``."""
    return kornia.metrics.ssim(x, y, window_size=window, max_val=1.0).flatten(1).mean(1)
