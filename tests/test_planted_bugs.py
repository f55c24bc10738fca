"""Planted contract bugs, each caught by the conformance kit or smoke_train with the rule it breaks named.

Every planted component below breaks exactly one rule of the plugin API 2 contract (docs/plugins.md,
section 7); the clean components beside them pass every check and a smoke run. The loader's share
(an old API major, a misspelled hook, a plugin that registers nothing, strict mode for one plugin)
is in tests/test_plugin_api.py.
"""

from __future__ import annotations

import random
import re
import time

import numpy as np
import pytest
import torch
from pydantic import ConfigDict
from torch import nn

import msframe.testing as mt
from msframe.components import Backbone, Capabilities, Dataset, Degraded, Params, Resampler, Task
from msframe.images import InMemorySplit

AREA = mt.registered_resamplers()["area"]


# ------------------------------------------------------------------------------------ backbones


class _Net(nn.Module):
    """conv-SiLU-conv with the last layer zero-initialised; ``fault`` plants one bug."""

    def __init__(self, cin, cout, k=0, fault=None):
        super().__init__()
        self.fault = fault
        self.body = nn.Conv2d(cin, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8) if fault == "batchnorm" else nn.Identity()
        self.film = nn.Linear(max(k, 1), 8)
        self.head = nn.Conv2d(8, cout, 3, padding=1)
        if fault != "random_head":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if fault == "numpy_init":
            with torch.no_grad():
                self.body.weight.copy_(torch.from_numpy(np.random.randn(*self.body.weight.shape)))

    def forward(self, x, cond=None):
        h = self.norm(self.body(x))
        unused = 0 * sum(p.sum() for p in self.film.parameters())  # the kit asks every parameter for a gradient
        h = h + (unused if cond is None else self.film(cond)[:, :, None, None])
        if self.fault == "batch_mean":  # mixes samples in eval mode too: x minus the batch mean
            h = h - h.mean(0, keepdim=True)
        correction = self.head(nn.functional.silu(h))
        if self.fault in ("restored_image", "api1"):
            return x[:, : correction.shape[1]] + correction  # the plugin API 1 output: the restored image
        return correction


def _backbone(fault=None, caps=Capabilities(batch_independent=True)):
    class Planted(Backbone):
        def capabilities(self):
            return caps

        def build(self, in_channels, out_channels, cond_channels, scale=1):
            return _Net(in_channels, out_channels, cond_channels, fault)

    Planted.__qualname__ = Planted.__name__ = f"Backbone_{fault or 'clean'}"
    return Planted


class NanBackbone(_backbone()):
    class Params(Params):
        model_config = ConfigDict(allow_inf_nan=True)
        dropout: float = 0.0


# ------------------------------------------------------------------------------------ tasks


class Noisy(Task):
    """The clean task: Gaussian noise drawn from the generator; the default restrict and baseline."""

    class Params(Params):
        sigma: float = 0.1

    def degrade(self, clean, generator):
        return Degraded(clean + self.params.sigma * torch.randn(clean.shape, generator=generator), clean)


class Float64Baseline(Noisy):
    def baseline(self, batch):
        return batch.input.double()


class Float64Loss(Noisy):
    def loss(self, restored, batch):
        return (restored - batch.target).double().pow(2).flatten(1).mean(1)


class NanTask(Noisy):
    class Params(Params):
        model_config = ConfigDict(allow_inf_nan=True)
        sigma: float = 0.1


class NeverExplodes(Noisy):
    def exploded(self, loss, first, factor):
        return False


class AlwaysExplodes(Noisy):
    def exploded(self, loss, first, factor):
        return loss >= first


class HashedRedraw(Noisy):
    """Re-draws coarse noise from a seed made of its input: reproducible, but uncoupled from the fine draw."""

    def restrict(self, batch, resampler):
        target = resampler.restrict(batch.target)
        g = torch.Generator().manual_seed(int(batch.input.abs().sum() * 1e4))
        return Degraded(target + self.params.sigma / 2 * torch.randn(target.shape, generator=g), target)


class Counting(Noisy):
    """Keeps a counter in self and draws from it."""

    def degrade(self, clean, generator):
        self.calls = getattr(self, "calls", 0) + 1
        return Degraded(clean + 0.01 * self.calls * torch.randn(clean.shape, generator=generator), clean)


class NumpyNoise(Noisy):
    def degrade(self, clean, generator):
        return Degraded(clean + torch.from_numpy(np.random.normal(0, 0.1, clean.shape)).to(clean.dtype), clean)


class PythonRandom(Noisy):
    def degrade(self, clean, generator):
        return Degraded(clean + random.random() * torch.randn(clean.shape, generator=generator), clean)


class TorchGlobal(Noisy):
    def degrade(self, clean, generator):
        return Degraded(clean + 0.1 * torch.randn(clean.shape), clean)


class DropsBaseline(Noisy):
    """The plugin API 1 reading of a task: the network output is the image."""

    def restored(self, output, batch):
        return output


# ------------------------------------------------------------------------------ resamplers, datasets


class Clean(Resampler):
    def restrict(self, x):
        return nn.functional.avg_pool2d(x, 2)


class WideKernel(Clean):
    """A 4x4 box with no padding: claims the default min_side of 2, needs 4 px."""

    def restrict(self, x):
        return nn.functional.avg_pool2d(x, 4, stride=2, padding=0)[..., : x.shape[-2] // 2, : x.shape[-1] // 2] \
            if x.shape[-1] >= 4 else nn.functional.avg_pool2d(x, 4, stride=2)


class NanResampler(Clean):
    class Params(Params):
        model_config = ConfigDict(allow_inf_nan=True)
        sharpness: float = 1.0


class NumpyCrops(Dataset):
    def channels(self):
        return 3

    def split(self, name):
        images = [torch.full((3, 24, 24), 40 * i, dtype=torch.uint8) for i in range(3)]
        return _NumpyCropSplit(images, [f"{name}{i}.png" for i in range(3)])


class _NumpyCropSplit(InMemorySplit):
    def crops(self, n, size, generator):
        return torch.from_numpy(np.random.rand(n, 3, size, size)).float()


class ClockCrops(NumpyCrops):
    def split(self, name):
        split = super().split(name)
        split.__class__ = _ClockCropSplit
        return split


class _ClockCropSplit(InMemorySplit):
    def crops(self, n, size, generator):
        return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(time.perf_counter_ns()))


#: what the kit says when two calls with every global generator seeded alike differ: it cannot tell these apart
STATE = "keeps state between calls (e.g. in self) or draws from a source no seed reaches"


def _task(cls, **kw):
    return mt.check_task(cls, resamplers={"area": AREA}, side=16, levels=2, **kw)


def _bb(cls):
    return mt.check_backbone(cls, in_channels=(3,), side=16, levels=2)


#: (planted bug, the check that catches it, the rule its message names, a fragment of the cause)
PLANTED = [
    ("backbone returns the restored image (plugin API 1)", lambda: _bb(_backbone("restored_image")),
     "output-is-correction", "returns the restored image"),
    ("backbone output not zero at init", lambda: _bb(_backbone("random_head")), "zero-at-init", "max |output|"),
    ("BatchNorm behind a zero head, declared batch_independent", lambda: _bb(_backbone("batchnorm")),
     "batch-independent", "batch mates changed"),
    ("batch-mixing backbone with conditioning", lambda: mt.check_backbone(
        _backbone("batch_mean", Capabilities(conditioning=True)), in_channels=(3,), side=16, levels=2),
     "batch-independent", "in eval mode a sample's output depends on the other samples"),
    ("weights from numpy: two builds with the same seed differ", lambda: _bb(_backbone("numpy_init")),
     "same-seed-weights", "after np.random.seed changed: it draws from numpy's global generator"),
    ("backbone parameter accepts NaN", lambda: _bb(NanBackbone), "finite-params", "'dropout' accepts nan"),
    ("task parameter accepts NaN", lambda: _task(NanTask), "finite-params", "'sigma' accepts nan"),
    ("resampler parameter accepts NaN", lambda: mt.check_resampler(NanResampler), "finite-params", "'sharpness'"),
    ("baseline in float64", lambda: _task(Float64Baseline), "dtype-device", "baseline is torch.float64"),
    ("loss in float64", lambda: _task(Float64Loss), "dtype-device", "loss is torch.float64"),
    ("restored drops the baseline", lambda: _task(DropsBaseline), "zero-output-restores-baseline", "not the baseline"),
    ("exploded never triggers", lambda: _task(NeverExplodes), "exploded", "is false for an output whose error"),
    ("exploded triggers at the first loss", lambda: _task(AlwaysExplodes), "exploded", "the first loss itself"),
    ("restrict re-draws noise from a hash of its input", lambda: _task(HashedRedraw), "coupling", "correlation"),
    ("degrade keeps state in self", lambda: _task(Counting), "reproducible", STATE),
    ("degrade draws from numpy", lambda: _task(NumpyNoise), "reproducible", "after np.random.seed changed"),
    ("degrade draws from Python's random", lambda: _task(PythonRandom), "reproducible", "after random.seed changed"),
    ("degrade draws from torch's global generator", lambda: _task(TorchGlobal), "reproducible",
     "after torch.manual_seed changed"),
    ("resampler fails at its min_side", lambda: mt.check_resampler(WideKernel), "min-side", "min_side() is 2"),
    ("crops from numpy", lambda: mt.check_dataset(NumpyCrops, None), "reproducible", "after np.random.seed changed"),
    ("crops from the clock", lambda: mt.check_dataset(ClockCrops, None), "reproducible", STATE),
]


@pytest.mark.parametrize("check, rule, cause", [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_the_kit_names_the_rule_a_planted_bug_breaks(check, rule, cause):
    with pytest.raises(AssertionError) as caught:
        check()
    message = str(caught.value)
    assert f"[{rule}]" in message and cause in message and "; fix: " in message, message
    # the component is named first, and no cause is blamed that was not the one planted
    assert re.match(r"(task|backbone|resampler|dataset) test_planted_bugs\.\w+", message), message
    for other in ("torch.manual_seed changed", "np.random.seed changed", "random.seed changed", "keeps state"):
        assert other not in message or other in cause, message


#: planted bugs smoke_train catches by the outcome alone: the run ends far below the naive baseline
SMOKED = [
    ("plugin API 1 backbone: input + correction", "backbone", _backbone("api1", Capabilities())),
    ("backbone with an untrained, non-zero head", "backbone", _backbone("random_head", Capabilities())),
    ("task whose restored drops the baseline", "task", DropsBaseline),
]


@pytest.mark.parametrize("kind, cls", [s[1:] for s in SMOKED], ids=[s[0] for s in SMOKED])
def test_smoke_train_judges_a_run_below_the_baseline(kind, cls, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(AssertionError, match=rf"{cls.__name__}: \[no-worse-than-baseline\] .* dB worse than not restoring"):
        mt.smoke_train(kind, cls, directory=tmp_path)


def test_the_clean_components_pass_every_check_and_a_smoke_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    clean_backbone = _backbone()
    _bb(clean_backbone)
    mt.check_backbone(_backbone(caps=Capabilities(conditioning=True, batch_independent=True)), in_channels=(3,),
                      side=16, levels=2)
    _task(Noisy)
    mt.check_resampler(Clean)
    summary = mt.smoke_train("backbone", clean_backbone, directory=tmp_path / "backbone")
    assert summary["test"]["psnr"] >= summary["test"]["input_psnr"] - 1.0
    mt.smoke_train("task", Noisy, directory=tmp_path / "task")
