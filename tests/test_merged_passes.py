"""One network pass per mesh: merging the same-mesh evaluations of an iteration into one forward over
the concatenated batch gives the loss, per-term statistics and gradient of the separate passes."""

from __future__ import annotations

import tomllib

import pytest
import torch

from conftest import TINY_RECIPE
from msframe import plugins, rng
from msframe import recipe as recipe_mod
from msframe.assembly import assemble, blueprint
from msframe.plan import passes
from msframe.telescoping import multiscale_loss

REGISTRY = plugins.load().registry

BACKBONES = {
    "cnn": {"backbone.channels": 8, "backbone.depth": 3, "backbone.norm": "true"},
    "unet": {"backbone.type": '"unet"', "backbone.base": 8, "backbone.multipliers": "[1, 2]", "backbone.groups": 4,
             "backbone.attention": "true", "backbone.heads": 2},
    "resnet": {"backbone.type": '"resnet"', "backbone.channels": 8, "backbone.blocks": 1, "backbone.groups": 4},
    "espcn": {"backbone.type": '"espcn"', "task.type": '"superres"', "task.scale": 2},
}
ESTIMATORS = {"single": {"estimator.type": '"single"'}, "mge": {}, "mlmc": {"estimator.type": '"mlmc"'}}


def make_recipe(overrides: dict) -> recipe_mod.Recipe:
    data = tomllib.loads(TINY_RECIPE)
    for section in ("backbone", "task", "estimator"):  # another type: the tiny recipe's keys do not apply
        if f"{section}.type" in overrides:
            data[section] = {}
    data = recipe_mod.apply_overrides(data, [f"{k}={v}" for k, v in overrides.items()])
    return recipe_mod.validate(data, REGISTRY)


def run_both(recipe: recipe_mod.Recipe, stage: int = -1):
    """Loss, statistics and gradients of the separate and of the merged passes, from one model."""
    plan = blueprint(recipe).plan
    task, resampler = recipe.task.build(), recipe.resampler.build()
    terms = plan.stages[stage].terms
    torch.manual_seed(0)
    model = recipe.backbone.build().build(task.input_channels(3), 3, task.cond_channels(), task.scale())
    g = torch.Generator().manual_seed(1)
    cleans = [torch.rand((t.batch, 3, plan.resolution, plan.resolution), generator=g) for t in terms]
    results = []
    for merge in (False, True):
        model.zero_grad(set_to_none=True)
        gens = [rng.generator(7, "degrade", 0, 0, t.index) for t in terms]
        total, stats = multiscale_loss(model, task, resampler, terms, cleans, gens, merge)
        total.backward()
        results.append((total.detach(), stats, [p.grad.clone() for p in model.parameters()]))
    return terms, results


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_merged_and_separate_passes_agree(backbone, estimator):
    recipe = make_recipe({**BACKBONES[backbone], **ESTIMATORS[estimator]})
    assert recipe.backbone.build().capabilities().batch_independent
    terms, ((loss, stats, grads), (loss2, stats2, grads2)) = run_both(recipe)
    assert torch.allclose(loss, loss2, rtol=1e-5, atol=1e-7)
    assert [s.keys() for s in stats] == [s.keys() for s in stats2]
    for s, s2 in zip(stats, stats2):
        for key, value in s.items():
            if isinstance(value, torch.Tensor):
                assert torch.allclose(value, s2[key], rtol=1e-4, atol=1e-7), (key, value, s2[key])
            else:
                assert value == s2[key]
    for g, g2 in zip(grads, grads2):
        assert torch.allclose(g, g2, rtol=1e-4, atol=1e-6)


def test_a_stage_of_l_meshes_needs_l_merged_passes_instead_of_2l_minus_1():
    terms = blueprint(make_recipe({})).plan.stages[-1].terms  # 3 meshes: 16, 8, 4 px; batches 2, 4, 8
    assert passes(terms, merge=False) == [(16, 2), (8, 2), (8, 4), (4, 4), (4, 8)]
    assert passes(terms, merge=True) == [(16, 2), (8, 6), (4, 12)]


class Counting(torch.nn.Module):
    """Counts its forward calls and the batch of each."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.calls: list[tuple[int, int]] = []

    def forward(self, x, cond=None):
        self.calls.append((x.shape[-1], x.shape[0]))
        return self.conv(x)


def test_merged_loss_runs_the_planned_passes():
    recipe = make_recipe({})
    plan = blueprint(recipe).plan
    task, resampler = recipe.task.build(), recipe.resampler.build()
    terms = plan.stages[-1].terms
    cleans = [torch.rand(t.batch, 3, 16, 16) for t in terms]
    for merge in (False, True):
        model = Counting()
        gens = [rng.generator(0, "degrade", t.index) for t in terms]
        multiscale_loss(model, task, resampler, terms, cleans, gens, merge)
        assert sorted(model.calls) == sorted(passes(terms, merge))


def test_trainer_merges_only_when_declared_and_not_switched_off(tmp_path):
    from msframe.train import Trainer

    loaded = plugins.load()
    on = Trainer(assemble(make_recipe({}), loaded), tmp_path / "a", loggers=[])
    off = Trainer(assemble(make_recipe({"run.merge_passes": '"off"'}), loaded), tmp_path / "b", loggers=[])
    assert on.plan.merge and not off.plan.merge


def test_timm_declares_batch_independence_from_its_encoder():
    pytest.importorskip("timm")
    from msframe.testing import check_backbone
    from msframe_backbones.timm_encoder import TimmEncoder

    assert not TimmEncoder(TimmEncoder.Params(model="resnet18", decoder_channels=16, groups=4)).capabilities().batch_independent
    params = {"model": "convnext_atto", "decoder_channels": 16, "groups": 4}
    assert TimmEncoder(TimmEncoder.Params(**params)).capabilities().batch_independent
    check_backbone(TimmEncoder, params, in_channels=(3,), side=32, levels=1)
