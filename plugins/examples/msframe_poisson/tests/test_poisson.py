"""The plugin's own tests: msframe's conformance checks first, then what is particular to Poisson noise.

Run them with the plugin installed (``pip install -e .`` in this folder, then ``pytest``): the
registration test reads the installed entry point, exactly as ``run.py`` will.
"""

from __future__ import annotations

import pytest
import torch
from poisson_task import Poisson

import msframe.testing as mt
from msframe.plugins import load

REGISTRY = load().registry


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("params", [{}, {"peak_range": (5.0, 60.0), "condition": True}], ids=["fixed", "drawn"])
def test_conformance(params):
    # shapes, dtypes, finiteness, loss and determinism on a 3-level plan with every installed resampler
    gaps = mt.check_task(Poisson, params)
    print("restriction gap per resampler:", {name: round(g, 3) for name, g in gaps.items()})
    mt.check_params_roundtrip(Poisson, params)


def test_registered_through_the_entry_point():
    entry = REGISTRY.get("task", "poisson")
    assert entry.cls is Poisson
    assert entry.origin.distribution == "msframe-poisson"


def test_noise_has_the_mean_and_variance_of_photon_counts():
    clean = torch.full((4, 1, 64, 64), 0.25)
    noisy = Poisson(Poisson.Params(peak=40.0)).degrade(clean, gen(0)).input
    counts = noisy * 40  # Poisson(10) photon counts
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    assert noisy.mean().item() == pytest.approx(0.25, rel=0.02)  # unbiased
    assert noisy.var().item() == pytest.approx(0.25 / 40, rel=0.06)  # variance x / peak


def test_drawn_peaks_stay_in_range_and_the_conditioning_is_the_noise_level():
    task = Poisson(Poisson.Params(peak_range=(4.0, 100.0), condition=True))
    batch = task.degrade(torch.full((64, 1, 32, 32), 0.5), gen(1))
    peaks = batch.cond.squeeze(1).pow(-2)
    assert peaks.min() >= 4.0 - 1e-3 and peaks.max() <= 100.0 + 1e-3
    assert peaks.std() > 5  # drawn per sample, not one value
    variance = batch.input.flatten(1).var(1)
    expected = 0.5 * batch.cond.squeeze(1).pow(2)  # x / peak
    assert torch.allclose(variance, expected, rtol=0.3)


def test_each_area_restriction_halves_the_noise():
    area_cls = REGISTRY.get("resampler", "area").cls  # a built-in, found like any plugin's component
    area = area_cls(area_cls.Params())
    task = Poisson(Poisson.Params(peak=20.0))
    fine = task.degrade(torch.full((8, 1, 64, 64), 0.5), gen(2))
    coarse = task.restrict(fine, area)
    fine_std = (fine.input - fine.target).std()
    coarse_std = (coarse.input - coarse.target).std()
    assert coarse_std.item() == pytest.approx(fine_std.item() / 2, rel=0.05)
