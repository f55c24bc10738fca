"""The step program: a tensor learning rate changes nothing, and the Trainer's step runs through it."""

from __future__ import annotations

import pytest
import torch

from msframe.assembly import assemble
from msframe.optim import adamw, optimizer, set_lr


def _train(optimizer_of, set_rate):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(4, 3, 3, padding=1))
    optimizer = optimizer_of(model.parameters())
    g = torch.Generator().manual_seed(1)
    for i in range(6):
        set_rate(optimizer, 1e-2 * (1 + i) / 6)
        optimizer.zero_grad(set_to_none=True)
        model(torch.rand(2, 3, 8, 8, generator=g)).square().mean().backward()
        optimizer.step()
    return [p.detach() for p in model.parameters()]


def _set_float(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def test_tensor_learning_rate_gives_the_float_learning_rate_weights():
    cpu = torch.device("cpu")
    plain = _train(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01), _set_float)
    tensor = _train(lambda ps: adamw(ps, 1e-2, 0.01, cpu), lambda o, lr: set_lr(o, lr, cpu))
    assert all(isinstance(g["lr"], torch.Tensor) for g in adamw([torch.nn.Parameter(torch.ones(1))], 1e-3, 0, cpu).param_groups)
    for a, b in zip(plain, tensor):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_set_lr_writes_in_place_and_replaces_a_float_from_an_old_checkpoint():
    cpu = torch.device("cpu")
    optimizer = adamw([torch.nn.Parameter(torch.ones(1))], 1e-3, 0, cpu)
    rate = optimizer.param_groups[0]["lr"]
    set_lr(optimizer, 5e-4, cpu)
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(5e-4)
    optimizer.param_groups[0]["lr"] = 1e-3  # what loading a state dict saved with a float rate leaves
    set_lr(optimizer, 2e-4, cpu)
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(2e-4)


def test_trainer_builds_one_program_per_block(tmp_path):
    from msframe import plugins
    from msframe.train import Trainer
    from test_merged_passes import make_recipe

    trainer = Trainer(assemble(make_recipe({}), plugins.load()), tmp_path, loggers=[])
    terms = trainer.terms(0)
    batches = [torch.rand(t.batch, 3, 16, 16) for t in terms]
    first = trainer.program(0, terms)
    record = trainer.step(0, 0, batches, terms)
    assert trainer.program(0, terms) is first and torch.isfinite(record["loss"])
    assert trainer.program(1, trainer.terms(1)) is not first
    # a stage that resets the optimizer state gets a new program
    trainer.optimizer = optimizer(trainer.model, trainer.recipe.optim, trainer.device)
    assert trainer.program(1, trainer.terms(1)).optimizer is trainer.optimizer


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_adamw_on_cuda_matches_the_cpu_update():
    cuda = torch.device("cuda")
    cpu = _train(lambda ps: adamw(ps, 1e-2, 0.01, torch.device("cpu")), lambda o, lr: set_lr(o, lr, torch.device("cpu")))
    torch.manual_seed(0)
    conv = torch.nn.Conv2d
    model = torch.nn.Sequential(conv(3, 4, 3, padding=1), torch.nn.SiLU(), conv(4, 3, 3, padding=1)).to(cuda)
    optimizer = adamw(model.parameters(), 1e-2, 0.01, cuda)
    assert optimizer.defaults["fused"]
    g = torch.Generator().manual_seed(1)
    for i in range(6):
        set_lr(optimizer, 1e-2 * (1 + i) / 6, cuda)
        optimizer.zero_grad(set_to_none=True)
        model(torch.rand(2, 3, 8, 8, generator=g).to(cuda)).square().mean().backward()
        optimizer.step()
    for a, b in zip(cpu, model.parameters()):
        assert torch.allclose(a, b.detach().cpu(), rtol=1e-4, atol=1e-5)


def test_resident_auto_keeps_images_on_cuda_only_when_they_fit():
    from msframe.sampling import keep_resident

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not keep_resident("auto", 0, cpu, 10, None)  # on the CPU: the host path, as before
    assert keep_resident("auto", 0, cuda, 10, 40) and not keep_resident("auto", 0, cuda, 11, 40)
    assert not keep_resident("auto", 2, cuda, 10, 40)  # worker processes cannot share device memory
    assert not keep_resident("auto", 0, cuda, None, 40)  # a split that cannot say its size stays on the host
    assert keep_resident(True, 0, cpu, None, None) and not keep_resident(False, 0, cuda, 1, 40)


def test_plan_states_where_the_training_images_live(cli, tiny_recipe):
    text = cli(str(tiny_recipe), "--plan").stdout
    assert "training images: loader.resident = auto (on a CUDA device if they fit in 1/4 of its free memory" in text
    assert "training images: on the host (loader.resident = false)" in cli(str(tiny_recipe), "--plan", "--set",
                                                                           "loader.resident=false").stdout
