"""A training step with no host synchronisation: what the dispatch mode refuses, every built-in
backbone and estimator stepping under it, and the conformance kit's check naming a planted sync."""

from __future__ import annotations

import tempfile

import pytest
import torch

import msframe.testing as mt
from msframe import plugins
from msframe.assembly import assemble
from msframe.components import Backbone, Capabilities, Degraded, Task
from msframe.hostsync import HostSync, NoHostSync, check_step, crosses_host, running
from msframe.train import Trainer
from test_merged_passes import BACKBONES, ESTIMATORS, make_recipe

#: every built-in backbone, small; timm with a two-level resnet18 encoder (1/4 of the side)
STEP_BACKBONES = {**BACKBONES, "timm": {"backbone.type": '"timm"', "backbone.model": '"resnet18"',
                                        "backbone.out_indices": "[0, 1]", "backbone.decoder_channels": 8,
                                        "backbone.groups": 4}}


def test_every_backbone_is_a_built_in():
    assert set(STEP_BACKBONES) == set(plugins.load().registry.names("backbone"))


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("backbone", STEP_BACKBONES)
def test_a_training_step_of_every_built_in_makes_no_host_sync(backbone, estimator):
    # 16 px; superres for espcn; on the CPU also where CUDA is (there the step's AdamW is fused, and not proven here)
    recipe = make_recipe({**STEP_BACKBONES[backbone], **ESTIMATORS[estimator], "run.device": '"cpu"'})
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(assemble(recipe, plugins.load()), folder, loggers=[])
        stage = len(trainer.plan.stages) - 1  # every mesh of the run
        terms = trainer.terms(stage)
        g = torch.Generator().manual_seed(0)
        cleans = [torch.rand((t.batch, 3, 16, 16), generator=g) for t in terms]
        before = [p.detach().clone() for p in trainer.model.parameters()]
        loss, stats = check_step(trainer.program(stage, terms), recipe, 0, cleans, 1e-3)
    assert torch.isfinite(loss) and len(stats) == len(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # the optimizer stepped


def _refused(fn) -> str:
    with pytest.raises(HostSync) as caught, NoHostSync(), running("the test"):
        fn()
    return str(caught.value)


@pytest.mark.parametrize("name, fn, op", [
    ("item", lambda x: x.sum().item(), "_local_scalar_dense"),
    ("bool", lambda x: bool(x.sum() > 0), "_local_scalar_dense"),
    ("float", lambda x: float(x[0]), "_local_scalar_dense"),
    ("equal", lambda x: torch.equal(x, x), "aten.equal"),
    ("allclose", lambda x: torch.allclose(x, x), "aten.allclose"),
    ("nonzero", lambda x: x.nonzero(), "aten.nonzero"),
    ("where of one argument", lambda x: torch.where(x > 0.5), "aten.nonzero"),
    ("masked_select", lambda x: x.masked_select(x > 0.5), "aten.masked_select"),
    ("mask index", lambda x: x[x > 0.5], "aten.index.Tensor"),
    ("mask assignment", lambda x: x.__setitem__(x > 0.5, torch.zeros(())), "aten.index_put_"),
    ("unique", lambda x: x.unique(), "unique"),
    ("bincount", lambda x: (x * 4).long().bincount(), "aten.bincount"),
    ("repeat_interleave", lambda x: x.repeat_interleave(torch.ones(4, dtype=torch.long)), "aten.repeat_interleave"),
    ("host to device", lambda x: x.to("meta"), "copies between host and device memory (cpu → meta)"),
    ("copy_ into a device", lambda x: torch.empty(4, device="meta").copy_(x), "(cpu → meta)"),
    ("device to host", lambda x: torch.empty(4, device="meta").cpu(), "(meta → cpu)"),
])
def test_the_mode_refuses_host_reads_value_shapes_and_host_device_copies(name, fn, op):
    message = _refused(lambda: fn(torch.rand(4)))
    assert message.startswith("host sync in the test: ") and op in message


def test_the_mode_lets_through_static_shapes_host_values_and_what_it_is_allowed():
    x = torch.rand(4)
    mode = NoHostSync()
    with mode:
        x[torch.tensor([0, 2])]  # integer indices: a static shape
        torch.where(x > 0.5, x, 0)  # three arguments: a static shape
        x.masked_fill(x > 0.5, 0)
        x.repeat_interleave(torch.ones(4, dtype=torch.long), output_size=4)
        x.to(torch.float64)  # another dtype on the same device
        # a value the host made from Python numbers, and what is computed from it alone: no device waits
        sigma = torch.tensor([[0.5, 0.5]])
        assert bool((sigma > 0).all()) and float(sigma.sum() * 2) == 2.0
        with mode.allowing():
            x.sum().item()
    with pytest.raises(HostSync), mode:
        (torch.tensor([0.5]) + x[:1]).item()  # the step's data flowed in
    with pytest.raises(HostSync), mode:
        h = torch.tensor([0.5])
        h.add_(x[:1])
        h.item()


def test_host_device_copies_are_those_that_cross_between_host_and_a_device():
    cpu, cuda, meta = torch.device("cpu"), torch.device("cuda", 0), torch.device("meta")
    assert crosses_host(cpu, cuda) and crosses_host(cuda, cpu) and crosses_host(cpu, meta)
    assert not crosses_host(cpu, cpu) and not crosses_host(cuda, torch.device("cuda", 1))


class _SyncInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float(grad.abs().max())


def test_a_sync_in_backward_is_named_by_its_autograd_node():
    x = torch.rand(4, requires_grad=True)
    message = _refused(lambda: _SyncInBackward.apply(x).sum().backward())
    assert "host sync in backward of _SyncInBackwardBackward" in message and "_local_scalar_dense" in message


class CountingTask(Task):
    """Denoising that reads how noisy the batch came out on the host: a host sync."""

    def degrade(self, clean, generator):
        noisy = clean + 0.1 * torch.randn(clean.shape, generator=generator)
        if (noisy - clean).abs().max() > 1:  # a tensor in an `if`
            noisy = noisy.clamp(0, 1)
        return Degraded(noisy, clean)


class MaskedCNN(Backbone):
    """A convolution whose output zeroes negative pixels by boolean-mask assignment: a host sync."""

    def capabilities(self):
        return Capabilities(conditioning=True)

    def build(self, in_channels, out_channels, cond_channels, scale=1):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)

            def forward(self, x, cond=None):
                y = self.conv(x)
                y[y < 0] = 0
                return y

        return Net()


def test_the_kit_names_a_syncing_task_and_backbone_with_the_operator():
    with pytest.raises(AssertionError) as task:
        mt.check_no_host_sync("task", CountingTask)
    assert str(task.value).startswith(f"task {__name__}.CountingTask: host sync in task 'checked-CountingTask' degrade: "
                                      "aten._local_scalar_dense")
    with pytest.raises(AssertionError) as backbone:
        mt.check_no_host_sync("backbone", MaskedCNN)
    assert "host sync in backbone 'checked-MaskedCNN' forward: aten.index_put_" in str(backbone.value)
    mt.check_no_host_sync("backbone", plugins.load().registry.get("backbone", "unet").cls, {"base": 8, "multipliers": [1, 2]})
    mt.check_no_host_sync("task", plugins.load().registry.get("task", "superres").cls)
    with pytest.raises(ValueError, match="runs no code inside a training step"):
        mt.check_no_host_sync("logger", CountingTask)
