"""The metrics against independent references: hand-computed cases and scikit-image.

Tolerances: PSNR within 1e-3 dB of ``skimage.metrics.peak_signal_noise_ratio(data_range=1)`` (float32
against float64); whole-image SSIM within 1e-4 of ``skimage.metrics.structural_similarity(
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``: both leave out the 5 px
border the 11 px window would reach past, so only rounding differs. The tile metric (``metrics.ssim``)
averages the whole map, border included (computed on reflected pixels), and is not held to it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from msframe import metrics


def _t(a: np.ndarray) -> torch.Tensor:
    """An H x W (x 3) float array as a [1, C, H, W] float32 tensor."""
    a = a[..., None] if a.ndim == 2 else a
    return torch.tensor(a, dtype=torch.float32).permute(2, 0, 1)[None]


def _photos():
    rng = np.random.default_rng(0)
    for name in ("astronaut", "camera", "chelsea", "coffee"):
        clean = getattr(skimage.data, name)().astype(np.float64) / 255
        noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
        yield name, clean, noisy


def test_psnr_of_hand_computed_cases():
    x = torch.zeros(1, 1, 2, 2)
    assert float(metrics.psnr(x, x + 0.1)) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    y = x.clone()
    y[0, 0, 0, 0] = 0.5  # mse 0.25 / 4
    assert float(metrics.psnr(x, y)) == pytest.approx(10 * math.log10(16), abs=1e-4)
    assert float(metrics.psnr(x, x)) == pytest.approx(120.0)  # identical: the 1e-12 floor, not inf


@pytest.mark.parametrize("name, clean, noisy", list(_photos()), ids=lambda v: v if isinstance(v, str) else "")
def test_psnr_and_whole_ssim_agree_with_scikit_image_on_photographs(name, clean, noisy):
    channel_axis = 2 if clean.ndim == 3 else None
    assert float(metrics.psnr(_t(noisy), _t(clean))) == pytest.approx(
        peak_signal_noise_ratio(clean, noisy, data_range=1), abs=1e-3)
    reference = structural_similarity(clean, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1, channel_axis=channel_axis)
    assert float(metrics.whole_ssim(_t(noisy), _t(clean))) == pytest.approx(reference, abs=1e-4)


def test_whole_ssim_of_an_image_with_itself_is_one_and_the_tile_ssim_differs_by_its_border():
    clean, noisy = next(_photos())[1:]
    assert float(metrics.whole_ssim(_t(clean), _t(clean))) == pytest.approx(1.0, abs=1e-5)  # float32 rounding
    cut = (slice(0, 64), slice(0, 64))
    whole, tile = metrics.whole_ssim(_t(noisy[cut]), _t(clean[cut])), metrics.ssim(_t(noisy[cut]), _t(clean[cut]))
    assert float(whole) != pytest.approx(float(tile), abs=1e-4)


def test_luma_is_bt601_studio_swing_as_matlab_and_scikit_image():
    corners = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).view(5, 3, 1, 1)
    expected = torch.tensor([16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966]) / 255
    torch.testing.assert_close(metrics.luma(corners).flatten(), expected)
    photo = skimage.data.astronaut().astype(np.float64) / 255
    torch.testing.assert_close(metrics.luma(_t(photo))[0, 0], torch.tensor(rgb2ycbcr(photo)[..., 0] / 255, dtype=torch.float32),
                               atol=1e-5, rtol=0)


def test_shaved_leaves_out_the_border_on_every_side():
    x = torch.arange(7 * 9, dtype=torch.float32).view(1, 1, 7, 9)
    assert torch.equal(metrics.shaved(x, 2), x[..., 2:5, 2:7])
    assert metrics.shaved(x, 0) is x


def test_region_psnr_counts_the_masked_pixels_only():
    clean = torch.zeros(2, 3, 2, 2)
    restored = clean.clone()
    restored[0, :, 0, 0] = 0.1  # inside the hole: mse 0.01 over the hole's 3 values
    restored[0, :, 1, 1] = 0.9  # outside: ignored
    hole = torch.zeros(2, 1, 2, 2)
    hole[0, 0, 0, 0] = 1
    scores = metrics.region_psnr(restored, clean, hole)
    assert float(scores[0]) == pytest.approx(20.0, abs=1e-4)
    assert math.isnan(float(scores[1]))  # no hole in the second image
