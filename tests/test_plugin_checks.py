"""Third-party components checked where it matters: the engine refuses a backbone whose output has the
wrong shape before training, naming the backbone and the shape."""

from __future__ import annotations

import tomllib

import pytest
import torch
from torch import nn

import msframe.testing as mt
from conftest import TINY_RECIPE
from msframe import plugins
from msframe import recipe as recipe_mod
from msframe.assembly import assemble
from msframe.components import Backbone, Capabilities, Degraded, Task
from msframe.errors import UserError
from msframe.train import Trainer


class _Wrong(nn.Module):
    """Returns one channel, or a tensor one pixel short, instead of the target's shape."""

    def __init__(self, fault: str):
        super().__init__()
        self.fault = fault
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, cond=None):
        y = self.conv(x)
        if self.fault == "channels":
            return y[:, :1]
        if self.fault == "side" and x.shape[-1] <= 8:  # right at 16 px, wrong on the coarser meshes
            return y[..., :-1, :-1]
        if self.fault == "raises" and x.shape[-1] < 16:
            raise ValueError("needs a side of at least 16")
        return y


@pytest.mark.parametrize("fault, fragments", [
    ("channels", ["backbone.type: backbone 'cnn' returns (1, 1, 16, 16)", "needs (1, 3, 16, 16)"]),
    ("side", ["backbone 'cnn' returns (1, 3, 7, 7) for a (1, 3, 8, 8) input at 8 px (mesh 1)", "needs (1, 3, 8, 8)"]),
    ("raises", ["backbone 'cnn' fails on a (1, 3, 8, 8) input (mesh 1, 8 px): ValueError: needs a side of at least 16"]),
])
def test_a_backbone_with_the_wrong_output_is_named_before_training(tmp_path, monkeypatch, fault, fragments):
    from msframe_backbones.cnn import CNN

    monkeypatch.setattr(CNN, "build", lambda self, *a, **k: _Wrong(fault))
    loaded = plugins.load()
    recipe = recipe_mod.validate(tomllib.loads(TINY_RECIPE), loaded.registry)
    with pytest.raises(UserError) as info:
        Trainer(assemble(recipe, loaded), tmp_path, loggers=[])
    for f in fragments:
        assert f in str(info.value), (f, str(info.value))
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_the_output_check_leaves_training_unchanged(tmp_path):
    """The dry run draws from its own generator in eval mode: the global RNG and weights are untouched."""
    loaded = plugins.load()
    recipe = recipe_mod.validate(tomllib.loads(TINY_RECIPE), loaded.registry)
    trainer = Trainer(assemble(recipe, loaded), tmp_path, loggers=[])
    after = torch.get_rng_state()
    torch.manual_seed(__import__("msframe").rng.derive_seed(recipe.run.seed, "init"))
    fresh = recipe.backbone.build().build(3, 3, 0, 1)
    assert torch.equal(after, torch.get_rng_state())
    for a, b in zip(trainer.model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a.cpu(), b)
    assert trainer.model.training


def test_plugin_name_picks_between_two_plugins_claiming_one_name(plugin_paths, tiny_recipe, tmp_path):
    from conftest import only_run_dir, pythonpath, run_cli

    env = pythonpath(plugin_paths["duplicate"])
    ambiguous = run_cli(str(tiny_recipe), "--plan", env=env)
    assert ambiguous.returncode == 2 and "write PLUGIN:denoise" in ambiguous.stderr
    assert run_cli(str(tiny_recipe), "--plan", "--set", "task.type=msframe_tasks:denoise", env=env).returncode == 0
    # the other plugin's denoise takes no sigma: its refusal shows which component was picked
    picked = run_cli(str(tiny_recipe), "--plan", "--set", "task.type=duplicate:denoise", env=env)
    assert picked.returncode == 2 and "task.sigma: unknown key" in picked.stderr
    assert run_cli(str(tiny_recipe), "--plan", "--set", 'task={type="duplicate:denoise"}', env=env).returncode == 0
    wrong = run_cli(str(tiny_recipe), "--plan", "--set", "task.type=nobody:denoise", env=env)
    assert wrong.returncode == 2 and "task.type: 'nobody:denoise': plugin 'nobody' registers no task 'denoise'" in wrong.stderr
    # the resolved recipe keeps the qualified name, so the run resumes with the same component
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path), "--set", "task.type=msframe_tasks:denoise", env=env)
    assert proc.returncode == 0, proc.stderr
    assert 'type = "msframe_tasks:denoise"' in (only_run_dir(tmp_path) / "recipe.resolved.toml").read_text()


def test_a_plugin_import_failure_names_file_and_line(plugin_paths):
    from conftest import pythonpath, run_cli

    proc = run_cli("plugins", env=pythonpath(plugin_paths["broken"]))
    line = next(l for l in proc.stderr.splitlines() if "broken_import" in l)
    assert "msframe_broken_import.py:" in line, line


# ------------------------------------------------------------------ the conformance kit catches these


def _backbone(forward, caps=Capabilities(min_size=1, multiple=1, conditioning=False, scale=1)):
    """A backbone class whose network is a 3x3 convolution followed by ``forward(net, x, cond, y)``; both layers
    start at zero, as the output contract asks (an untrained network outputs zero)."""

    class Net(nn.Module):
        def __init__(self, cin, cout, k):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)
            self.film = nn.Linear(max(k, 1), cout)
            for p in self.parameters():
                nn.init.zeros_(p)

        def forward(self, x, cond=None):
            return forward(self, x, cond, self.conv(x))

    class Bad(Backbone):
        def capabilities(self):
            return caps

        def build(self, in_channels, out_channels, cond_channels, scale=1):
            return Net(in_channels, out_channels, cond_channels)

    return Bad


def _touch(net):
    """Zero that still gives the conditioning layer's parameters a gradient (the kit asks for one)."""
    return 0 * sum(p.sum() for p in net.film.parameters())


def _uses_film(net, x, cond, y):
    return y + _touch(net) if cond is None else y + net.film(cond)[:, :, None, None]


@pytest.mark.parametrize("forward, caps, fragment", [
    (lambda net, x, cond, y: y + x.mul_(0.5).sum() * 0 + _touch(net), None, "modified its input in place"),
    (lambda net, x, cond, y: y - y.mean(0, keepdim=True) + _touch(net), None,
     "depends on the other samples of the batch"),
    (lambda net, x, cond, y: y + _touch(net) + 0 * (cond.sum() if cond is not None else 0),
     Capabilities(conditioning=True), "ignores it"),
    # claims multiple 4 but pools by 8: fails at a side the plan may ask for (12 px), not at 32
    (lambda net, x, cond, y: nn.functional.interpolate(nn.functional.avg_pool2d(y, 8), scale_factor=8)
     + _touch(net), Capabilities(min_size=8, multiple=4), "on 12 px"),
])
def test_the_kit_catches_what_a_backbone_gets_wrong(forward, caps, fragment):
    caps = caps or Capabilities()
    with pytest.raises(AssertionError, match=fragment):
        mt.check_backbone(_backbone(forward, caps), in_channels=(3,), side=32, levels=2)


def test_the_kit_passes_a_backbone_that_uses_its_conditioning():
    mt.check_backbone(_backbone(_uses_film, Capabilities(conditioning=True)), in_channels=(3,), side=16, levels=2)


class _Noisy(Task):
    def degrade(self, clean, generator):
        return Degraded(clean + 0.1 * torch.randn(clean.shape, generator=generator), clean)


class _Redraws(_Noisy):
    """Restricts the clean target and draws new noise with a fixed seed: the coarse draw is uncoupled."""

    def restrict(self, batch, resampler):
        target = resampler.restrict(batch.target)
        g = torch.Generator().manual_seed(7)
        return Degraded(target + 0.1 * torch.randn(target.shape, generator=g), target)


class _Fresh(_Noisy):
    """Draws new noise from a generator of its own at every call."""

    calls = 0

    def restrict(self, batch, resampler):
        type(self).calls += 1
        target = resampler.restrict(batch.target)
        g = torch.Generator().manual_seed(1000 + type(self).calls)
        return Degraded(target + 0.1 * torch.randn(target.shape, generator=g), target)


@pytest.mark.parametrize("cls, fragment", [(_Redraws, "not coupled"), (_Fresh, "different batches")])
def test_the_kit_catches_a_restrict_that_loses_the_coupling(cls, fragment):
    resampler = mt.registered_resamplers()["area"]
    with pytest.raises(AssertionError, match=fragment):
        mt.check_task(cls, side=16, levels=2, resamplers={"area": resampler})


def test_the_kit_passes_a_coupled_task():
    mt.check_task(_Noisy, side=16, levels=2, resamplers={"area": mt.registered_resamplers()["area"]})


def test_a_network_that_changes_its_input_in_place_cannot_corrupt_the_input_psnr(tmp_path, monkeypatch):
    from msframe_backbones.cnn import CNN

    loaded = plugins.load()
    recipe = recipe_mod.validate(tomllib.loads(TINY_RECIPE), loaded.registry)
    honest = Trainer(assemble(recipe, loaded), tmp_path / "a", loggers=[]).evaluate("val")

    class Vandal(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x, cond=None):
            return self.conv(x.mul_(0.0))

    monkeypatch.setattr(CNN, "build", lambda self, *a, **k: Vandal())
    vandalised = Trainer(assemble(recipe, loaded), tmp_path / "b", loggers=[])
    first, second = vandalised.evaluate("val"), vandalised.evaluate("val")
    assert first["input_psnr"] == second["input_psnr"] == honest["input_psnr"]
