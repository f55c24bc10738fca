"""Image quality: PSNR and SSIM per image (images in [0, 1]), averaged by the caller.

:func:`psnr` and :func:`ssim` score batches of tiles (the ``tiles`` protocol). The whole-image protocol
scores one image at a time the way the restoration literature does: :func:`luma` (the BT.601 Y channel
of super-resolution papers), :func:`shaved` (the border they leave out), :func:`whole_ssim` (SSIM whose
map leaves out the window's border, as scikit-image's) and :func:`region_psnr` (PSNR over a mask, the
inpainting hole).
"""

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


def luma(x: Tensor) -> Tensor:
    """The Y channel of ITU-R BT.601 (studio swing) of RGB images ``[N, 3, H, W]`` in [0, 1], ``[N, 1, H, W]``:
    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``, MATLAB's ``rgb2ycbcr``, on which super-resolution
    papers report PSNR and SSIM. Y spans [16/255, 235/255]; the peak of the PSNR stays 1 (255 on 8 bits)."""
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (16.0 + (x * weights).sum(1, keepdim=True)) / 255.0


def shaved(x: Tensor, border: int) -> Tensor:
    """``x`` without ``border`` pixels on each of its four sides (super-resolution papers shave ``scale``)."""
    return x[..., border : x.shape[-2] - border, border : x.shape[-1] - border] if border > 0 else x


def whole_ssim(x: Tensor, y: Tensor, window: int = 11) -> Tensor:
    """Per-image SSIM of whole images (Gaussian window of 11 px, σ 1.5, K1 0.01, K2 0.03, data range 1),
    averaged over the map's "valid" part only: ``window // 2`` px from each side are left out, where the
    window would reach past the image. scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)`` leaves out the same border (its filter
    reflects the image but its mean skips ``(win_size - 1) // 2`` px), so the two agree to float32
    rounding (tests/test_metrics.py: within 1e-4 on photographs); :func:`ssim` instead averages the
    whole map, its border computed on reflected pixels. Images need sides above ``window``."""
    return kornia.metrics.ssim(x, y, window_size=window, max_val=1.0, padding="valid").flatten(1).mean(1)


def region_psnr(x: Tensor, y: Tensor, region: Tensor) -> Tensor:
    """Per-image PSNR in dB over the pixels where ``region`` ([N, 1, H, W], 1 inside) is set, all channels;
    NaN for an image whose region is empty."""
    inside = region.expand_as(x)
    squared = ((x - y).pow(2) * inside).flatten(1).sum(1)
    count = inside.flatten(1).sum(1)
    mse = (squared / count).clamp_min(1e-12)
    return torch.where(count > 0, -10.0 * torch.log10(mse), torch.full_like(mse, float("nan")))
