"""MGE as docs/method.md states it: coupled corrections, independent terms, planned batches, one backward,
and an unbiased estimate of the finest-mesh gradient."""

from __future__ import annotations

import torch
from torch import nn

from conftest import TINY_RECIPE
from msframe import plugins, rng
from msframe import recipe as recipe_mod
from msframe.assembly import assemble, blueprint
from msframe.images import InMemorySplit
from msframe.sampling import IterationBatches, loader
from msframe.telescoping import multiscale_loss, term_batches

REGISTRY = plugins.load().registry


def make_recipe(**overrides) -> recipe_mod.Recipe:
    data = recipe_mod.apply_overrides(__import__("tomllib").loads(TINY_RECIPE), [f"{k}={v}" for k, v in overrides.items()])
    return recipe_mod.validate(data, REGISTRY)


def random_split(n=6, side=40, seed=0) -> InMemorySplit:
    g = torch.Generator().manual_seed(seed)
    images = [(torch.rand(3, side, side + 7 * i, generator=g) * 255).to(torch.uint8) for i in range(n)]
    return InMemorySplit(images, [f"img{i}" for i in range(n)])


def test_each_term_gets_its_planned_batch_and_workers_change_nothing():
    recipe = make_recipe()
    plan = blueprint(recipe).plan
    split = random_split()
    serial, parallel = [], []
    for stage in plan.stages:
        keys = [(stage.index, i) for i in range(stage.iterations)]
        sizes = [t.batch for t in stage.terms]
        serial += list(loader(split, plan.resolution, sizes, keys, seed=5, workers=0, pin_memory=False))
        parallel += list(loader(split, plan.resolution, sizes, keys, seed=5, workers=2, pin_memory=False))
    assert [tuple(k) for k, _ in serial] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1)]
    for (key, batches), (key2, batches2) in zip(serial, parallel):
        assert key == key2
        stage = plan.stages[key[0]]
        assert [b.shape[0] for b in batches] == [t.batch for t in stage.terms]
        assert all(b.shape[1:] == (3, 16, 16) for b in batches)
        for a, b in zip(batches, batches2):
            assert torch.equal(a, b)
    # the last stage: batches 2, 4, 8 from the finest level down (growth 2)
    assert [t.batch for t in plan.stages[2].terms] == [2, 4, 8]


def test_terms_draw_independent_batches_and_iterations_differ():
    plan = blueprint(make_recipe(**{"schedule.batch": "[4, 4, 4]", "estimator.growth": 1})).plan
    data = IterationBatches(random_split(), plan.resolution, [t.batch for t in plan.stages[2].terms], seed=1)
    _, batches = data[(2, 0)]
    _, again = data[(2, 0)]
    _, later = data[(2, 1)]
    for i, a in enumerate(batches):
        assert torch.equal(a, again[i])  # a key always gives the same draw
        assert not torch.equal(a, later[i])  # the next iteration draws anew
        for b in batches[i + 1:]:
            assert not torch.equal(a, b)  # different terms never share a draw


def test_fine_and_coarse_of_a_correction_share_images_and_noise():
    recipe = make_recipe(**{"task.coarse_noise": '"restricted"'})
    task, resampler = recipe.task.build(), recipe.resampler.build()
    clean = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fine, coarse = term_batches(task, resampler, clean, rng.generator(0, "t"), 1, 2)
    noisy = task.degrade(clean, rng.generator(0, "t")).input
    # degrade once on the finest mesh, then restrict: the coarse input is the restriction of the fine one
    assert torch.allclose(fine.input, resampler.restrict(noisy))
    assert torch.allclose(coarse.input, resampler.restrict(fine.input))
    assert torch.allclose(coarse.target, resampler.restrict(fine.target))


def test_rescaled_noise_keeps_the_draw_and_sigma_on_coarse_meshes():
    recipe = make_recipe(**{"task.coarse_noise": '"rescaled"', "task.sigma": 0.2})
    task, resampler = recipe.task.build(), recipe.resampler.build()
    clean = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fine, coarse = term_batches(task, resampler, clean, rng.generator(0, "t"), 0, 1)
    fine_noise = fine.input - fine.target
    coarse_noise = coarse.input - coarse.target
    assert abs(float(coarse_noise.std()) - 0.2) < 0.01
    # area restriction averages 2x2 blocks: the coarse noise is the fine draw averaged and rescaled by 2
    assert torch.allclose(coarse_noise, resampler.restrict(fine_noise) * 2, atol=1e-5)


def test_one_backward_pass_per_iteration(tmp_path):
    from msframe.train import Trainer

    recipe = make_recipe()
    trainer = Trainer(assemble(recipe, plugins.load()), tmp_path, loggers=[])
    calls = []
    first = next(trainer.model.parameters())
    first.register_hook(lambda g: calls.append(1))
    terms = trainer.plan.stages[2].terms
    _, batches = IterationBatches(trainer.assembly.splits["train"], trainer.plan.resolution, [t.batch for t in terms], 0)[(2, 0)]
    record = trainer.step(2, 0, batches, terms)
    assert len(calls) == 1
    assert [lv["batch"] for lv in record["levels"]] == [2, 4, 8]
    assert record["loss"] == sum(lv["value"] for lv in record["levels"]) or abs(
        record["loss"] - sum(lv["value"] for lv in record["levels"])) < 1e-6


# ------------------------------------------------------------------------------ unbiasedness


class LinearConv(nn.Module):
    """A linear convolutional model: gradients are cheap and the estimator's algebra is exact."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(0.1 * torch.randn(self.conv.weight.shape, generator=torch.Generator().manual_seed(7)))

    def forward(self, x, cond=None):
        return self.conv(x)  # a correction to the task's baseline (Task.restored)


def _gradient(model, loss) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return model.conv.weight.grad.flatten().clone()


def _mge_gradients(recipe, draws: int) -> torch.Tensor:
    """One MGE gradient per draw, through the engine's sampler and loss, at fixed weights."""
    plan = blueprint(recipe).plan
    stage = plan.stages[-1]
    task, resampler = recipe.task.build(), recipe.resampler.build()
    data = IterationBatches(random_split(), plan.resolution, [t.batch for t in stage.terms], seed=11)
    model = LinearConv()
    grads = []
    for i in range(draws):
        _, cleans = data[(len(plan.stages) - 1, i)]
        gens = [rng.generator(11, "degrade", i, t.index) for t in stage.terms]
        loss, _ = multiscale_loss(model, task, resampler, stage.terms, cleans, gens)
        grads.append(_gradient(model, loss))
    return torch.stack(grads)


def _correction_gradients(recipe, draws: int, coupled: bool) -> torch.Tensor:
    """Gradients of the finest correction ℓ_0 − ℓ_1 alone; ``coupled=False`` draws the coarse noise anew."""
    plan = blueprint(recipe).plan
    term = plan.stages[-1].terms[0]
    task, resampler = recipe.task.build(), recipe.resampler.build()
    split = random_split()
    model = LinearConv()
    grads = []
    for i in range(draws):
        clean = split.crops(term.batch, plan.resolution, rng.generator(13, "crop", i))
        fine, coarse = term_batches(task, resampler, clean, rng.generator(13, "noise", i), 0, 1)
        if not coupled:  # the broken variant: same images, an independent noise draw on the coarse side
            _, coarse = term_batches(task, resampler, clean, rng.generator(14, "noise", i), 0, 1)
        loss = (task.loss(task.restored(model(fine.input), fine), fine).mean()
                - task.loss(task.restored(model(coarse.input), coarse), coarse).mean())
        grads.append(_gradient(model, loss))
    return torch.stack(grads)


def _plain_gradients(recipe, draws: int, batch: int, mesh: int = 0) -> torch.Tensor:
    """Plain gradients on one mesh over the same sample distribution (independent seeds)."""
    plan = blueprint(recipe).plan
    task, resampler = recipe.task.build(), recipe.resampler.build()
    split = random_split()
    model = LinearConv()
    grads = []
    for i in range(draws):
        clean = split.crops(batch, plan.resolution, rng.generator(12, "ref-crop", i))
        b, _ = term_batches(task, resampler, clean, rng.generator(12, "ref-noise", i), mesh, None)
        grads.append(_gradient(model, task.loss(task.restored(model(b.input), b), b).mean()))
    return torch.stack(grads)


def test_mge_gradient_is_unbiased_for_the_finest_mesh_gradient():
    recipe = make_recipe(**{"schedule.iterations": "[1]", "schedule.batch": 4, "task.sigma": 0.05})
    mge = _mge_gradients(recipe, draws=300)
    reference = _plain_gradients(recipe, draws=150, batch=32)
    # z-score of the difference of the two means, per weight, from the measured variances
    se = (mge.var(0) / mge.shape[0] + reference.var(0) / reference.shape[0]).sqrt()
    z = (mge.mean(0) - reference.mean(0)) / se
    assert z.abs().max() < 4.5, z
    # the comparison has power: the mean gradient is many standard errors away from zero, and the
    # coarsest mesh's gradient alone (a biased estimate) fails the same test
    assert (reference.mean(0).abs() / se).max() > 10
    coarse = _plain_gradients(recipe, draws=150, batch=32, mesh=2)
    se_c = (coarse.var(0) / coarse.shape[0] + reference.var(0) / reference.shape[0]).sqrt()
    assert ((coarse.mean(0) - reference.mean(0)) / se_c).abs().max() > 6


def test_broken_coupling_shows_as_higher_correction_variance():
    recipe = make_recipe(**{"schedule.iterations": "[1]", "schedule.batch": 4, "task.sigma": 0.2})
    coupled = _correction_gradients(recipe, draws=100, coupled=True).var(0).sum()
    broken = _correction_gradients(recipe, draws=100, coupled=False).var(0).sum()
    # rescaled coarse noise (the default) is as strong as the fine noise; coupling still cancels most of it
    assert broken > 2 * coupled, (float(broken), float(coupled))


def test_resident_images_give_the_same_batches_and_refuse_workers(cli, tiny_recipe):
    plan = blueprint(make_recipe()).plan
    sizes = [t.batch for t in plan.stages[2].terms]
    host = IterationBatches(random_split(), plan.resolution, sizes, seed=4)
    resident = IterationBatches(random_split().to(torch.device("cpu")), plan.resolution, sizes, seed=4)
    for a, b in zip(host[(2, 1)][1], resident[(2, 1)][1]):
        assert torch.equal(a, b)
    proc = cli(str(tiny_recipe), "--plan", "--set", "loader.resident=true", "--set", "loader.workers=2")
    assert proc.returncode == 2 and "loader: resident = true cuts crops on the device" in proc.stderr
    assert cli(str(tiny_recipe), "--out", str(tiny_recipe.parent / "runs"), "--set", "loader.resident=true").returncode == 0
