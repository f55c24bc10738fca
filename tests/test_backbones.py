"""The built-in backbones: shapes, gradients, conditioning, capabilities, device hygiene, errors, a real run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import msframe_backbones as B
from conftest import ROOT, only_run_dir, run_cli
from msframe import plugins, recipe
from msframe.errors import UserError

# name -> (class, small parameters that keep each test well under a second)
SMALL = {
    "cnn": (B.CNN, {"channels": 8, "depth": 3}),
    "unet": (B.UNet, {"base": 8, "multipliers": [1, 2, 4], "groups": 4, "dropout": 0.1, "attention": True, "heads": 2}),
    "resnet": (B.ResNet, {"channels": 16, "blocks": 2, "groups": 4}),
    "espcn": (B.ESPCN, {"features": [16, 8]}),
    "timm": (B.TimmEncoder, {"model": "resnet18", "decoder_channels": 16, "groups": 4}),
}


def backbone(name: str, **overrides):
    cls, params = SMALL[name]
    return cls(cls.Params(**{**params, **overrides}))


def scales(caps) -> tuple[int, ...]:
    return (1, 2, 4) if caps.scale is None else (caps.scale,)


@pytest.fixture(scope="module")
def registry():
    return plugins.load().registry


def test_every_backbone_is_registered_through_the_hook(registry):
    for name, (cls, _) in SMALL.items():
        assert registry.get("backbone", name).cls is cls


@pytest.mark.parametrize("name", sorted(SMALL))
def test_default_params_build_a_network_that_keeps_the_input_shape(name):
    cls = SMALL[name][0]
    b = cls(cls.Params())
    caps = b.capabilities()
    side = max(caps.min_size, 8)
    for scale in scales(caps):
        x = torch.rand(2, 3, side, side)
        with torch.no_grad():
            assert b.build(3, 3, 0, scale)(x).shape == (2, 3, side * scale, side * scale)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("in_channels", [3, 4])
def test_output_shape_and_backward_at_the_smallest_input(name, in_channels):
    """An input of side ``min_size`` works, gives ``scale``× the side and ``out_channels``, and every
    parameter gets a gradient (with a conditioning input where the backbone takes one)."""
    b = backbone(name)
    caps = b.capabilities()
    cond_channels = 2 if caps.conditioning else 0
    for scale in scales(caps):
        torch.manual_seed(0)
        model = b.build(in_channels, 3, cond_channels, scale)
        x = torch.rand(2, in_channels, caps.min_size, caps.min_size)
        cond = torch.rand(2, cond_channels) if cond_channels else None
        out = model(x, cond)
        assert out.shape == (2, 3, caps.min_size * scale, caps.min_size * scale)
        out.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing


@pytest.mark.parametrize("name", ["cnn", "unet", "resnet"])
def test_conditioning_changes_the_output(name):
    b = backbone(name, dropout=0.0) if name != "cnn" else backbone(name)
    assert b.capabilities().conditioning
    model = b.build(3, 3, 1).eval()
    _wake(model)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        low, high = model(x, torch.full((2, 1), 0.05)), model(x, torch.full((2, 1), 0.2))
    assert not torch.allclose(low, high)


def test_a_conditioned_network_called_without_cond_says_so():
    model = backbone("unet").build(3, 3, 1)
    with pytest.raises(ValueError, match="conditioning input"):
        model(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("multipliers, multiple", [([1, 2, 4], 4), ([1, 1, 2, 2], 8), ([2], 1)])
def test_unet_accepts_every_size_its_capabilities_allow(multipliers, multiple):
    b = backbone("unet", multipliers=multipliers)
    caps = b.capabilities()
    assert (caps.min_size, caps.multiple, caps.conditioning, caps.scale) == (multiple, multiple, True, 1)
    model = b.build(3, 3, 1).eval()
    with torch.no_grad():
        for k in (1, 2, 3, 5):  # odd multiples too: coarse meshes of odd size must line up with their skips
            side = k * multiple
            assert model(torch.rand(1, 3, side, side), torch.rand(1, 1)).shape == (1, 3, side, side)


def test_resnet_and_cnn_take_any_size():
    for name in ("resnet", "cnn"):
        caps = backbone(name).capabilities()
        assert (caps.min_size, caps.multiple, caps.scale) == (1, 1, 1)
        with torch.no_grad():
            assert backbone(name).build(3, 3, 0)(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)


def test_espcn_has_a_pixel_shuffle_and_adapts_to_the_scale():
    b = backbone("espcn")
    assert b.capabilities().scale is None
    for scale in (1, 2, 3, 4):
        model = b.build(1, 1, 0, scale)
        assert isinstance(model.body[-1], nn.PixelShuffle) and model.body[-1].upscale_factor == scale
        assert model(torch.rand(1, 1, 5, 6)).shape == (1, 1, 5 * scale, 6 * scale)


def _wake(model: nn.Module) -> None:
    """Give the zero-initialised output layer random weights, so behaviour beyond it is visible."""
    g = torch.Generator().manual_seed(0)
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.copy_(0.1 * torch.randn(last.weight.shape, generator=g))


@pytest.mark.parametrize("name", ["cnn", "unet", "resnet", "espcn", "timm"])
def test_a_fresh_network_predicts_no_correction(name):
    # the output contract: backbones predict a correction to the task's baseline, starting at zero,
    # so an untrained network restores exactly the baseline (Task.restored)
    params = {"model": "resnet18"} if name == "timm" else {}
    model = backbone(name, **params).build(3, 3, 0)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32) and torch.count_nonzero(out) == 0
    with pytest.raises(ValueError, match="residual"):
        backbone(name, residual=True)  # the old per-backbone residual is gone: one contract for all


def test_different_channel_counts_in_and_out():
    with torch.no_grad():  # no residual to the input any more: a 1 -> 3 channel network is fine
        assert backbone("unet").build(1, 3, 0)(torch.rand(1, 1, 8, 8)).shape == (1, 3, 8, 8)


def test_params_reject_impossible_widths():
    with pytest.raises(ValueError, match="GroupNorm groups"):
        B.UNet.Params(base=6, groups=4)
    with pytest.raises(ValueError, match="attention heads"):
        B.UNet.Params(base=8, groups=4, attention=True, heads=3)
    with pytest.raises(ValueError, match="odd"):
        B.ESPCN.Params(first_kernel=4)
    with pytest.raises(ValueError, match="extra"):
        B.ResNet.Params(width=4)


# ------------------------------------------------------------------ no host tensors in forward


#: torch functions that make a tensor from Python data: on CUDA each is a host-to-device copy
HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


class HostDataWatch(TorchFunctionMode):
    """Records every call of a :data:`HOST_DATA` function, whatever device it targets."""

    def __init__(self, ops: list[str]):
        super().__init__()
        self.ops = ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_DATA:
            self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


class HostTensorWatch(TorchDispatchMode):
    """Records every operator, forward or backward, that touches a tensor outside the meta device."""

    def __init__(self, ops: list[str]):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type != "meta" for t in tree_leaves((args, kwargs, out))):
            self.ops.append(str(func))
        return out


def host_ops(model: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> list[str]:
    """The operations of one forward and backward pass that make or use host tensors.

    The network and its inputs live on ``meta``, so a host tensor (``torch.arange`` without a device,
    a CPU constant, a numpy array) shows up as an operator on a non-meta tensor, and a tensor made
    from Python data shows up as its constructor even when it is created on the right device: the
    host tensors and host-to-device copies that break CUDA-graph capture.
    """
    ops: list[str] = []
    model = model.to("meta")
    with HostDataWatch(ops), HostTensorWatch(ops):
        model(x, cond).sum().backward()
    return ops


class Leaky(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, cond=None):
        return self.fn(x)


@pytest.mark.parametrize("leak", [
    lambda x: x * torch.arange(4).to(x.device),
    lambda x: x * torch.tensor(2.0),
    lambda x: x + torch.tensor([1.0, 2.0, 3.0, 4.0], device=x.device),
    lambda x: x + x.new_tensor([1.0, 2.0, 3.0, 4.0]),
], ids=["arange-to", "cpu-scalar", "tensor-on-device", "new_tensor"])
def test_the_host_tensor_check_catches_host_tensors(leak):
    assert host_ops(Leaky(leak), torch.empty(1, 1, 4, 4, device="meta", requires_grad=True), None)


@pytest.mark.parametrize("name", ["unet", "resnet", "espcn", "cnn"])
def test_forward_and_backward_make_no_host_tensors(name):
    b = backbone(name)
    caps = b.capabilities()
    cond_channels = 1 if caps.conditioning else 0
    model = b.build(3, 3, cond_channels, scales(caps)[-1])
    x = torch.empty(2, 3, 8, 8, device="meta")
    cond = torch.empty(2, cond_channels, device="meta") if cond_channels else None
    assert host_ops(model, x, cond) == []


# ------------------------------------------------------------------------------ timm specifics


def test_timm_capabilities_come_from_the_encoder_reduction():
    caps = backbone("timm").capabilities()
    assert (caps.min_size, caps.multiple, caps.conditioning, caps.scale) == (32, 32, False, 1)
    caps = backbone("timm", out_indices=[0, 1, 2]).capabilities()  # stop at 1/8 of the side
    assert (caps.min_size, caps.multiple) == (8, 8)
    with torch.no_grad():
        assert backbone("timm", out_indices=[0, 1, 2]).build(3, 3, 0)(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)


def recipe_errors(registry, *overrides: str) -> dict[str, str]:
    """Validate the quickstart recipe with ``overrides``; return the messages by dotted key."""
    with pytest.raises(UserError) as err:
        recipe.load(ROOT / "recipes" / "quickstart.toml", registry, list(overrides))
    return {e.key: str(e) for e in getattr(err.value, "errors", [err.value])}


def test_unknown_timm_model_lists_close_names(registry):
    errors = recipe_errors(registry, 'backbone={type="timm", model="resnet181"}')
    message = errors["backbone.model"]
    assert "quickstart.toml" in message and "not a timm model" in message and "resnet18" in message


def test_missing_pretrained_file_names_the_path(registry, tmp_path):
    path = tmp_path / "nowhere.pth"
    errors = recipe_errors(registry, f'backbone={{type="timm", pretrained_path="{path}"}}')
    assert str(path) in errors["backbone.pretrained_path"]


def test_timm_encoders_that_cannot_serve_are_user_errors():
    with pytest.raises(UserError) as err:
        backbone("timm", out_indices=[2, 7]).capabilities()
    assert err.value.key == "backbone.out_indices" and "indices 0 to 4" in str(err.value)
    with pytest.raises(UserError) as err:  # a vision transformer built for 224 px images only
        backbone("timm", model="vit_tiny_patch16_224").capabilities()
    assert err.value.key == "backbone.model" and "any size" in str(err.value)


def test_pretrained_weights_load_into_the_encoder_and_the_report_names_odd_keys(tmp_path):
    import timm

    classifier = timm.create_model("resnet18", pretrained=False)  # a full classifier's state dict, as timm saves it
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    with pytest.warns(UserWarning) as caught:
        model = backbone("timm", pretrained_path=str(path)).build(4, 3, 0)
    report = str(caught[0].message)
    assert "unexpected: 2 (fc.weight, fc.bias)" in report  # the classifier head the encoder lacks
    assert "adapted to the input channels: 1 (conv1.weight)" in report  # pretrained for 3 channels, built for 4
    assert torch.equal(model.encoder.layer1[0].conv1.weight, classifier.layer1[0].conv1.weight)
    assert model.encoder.conv1.weight.shape[1] == 4

    bad = tmp_path / "garbage.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError) as err:
        backbone("timm", pretrained_path=str(bad)).build(3, 3, 0)
    assert err.value.key == "backbone.pretrained_path" and str(bad) in str(err.value)


# --------------------------------------------------------------------------------- a real run


def test_a_conditioned_unet_trains_full_multiscale_through_the_command_line(tmp_path):
    out = tmp_path / "runs"
    proc = run_cli(
        str(ROOT / "recipes" / "quickstart.toml"), "--out", str(out),
        "--set", 'backbone={type="unet", base=8, groups=4, attention=true, heads=2}',
        "--set", "task.condition=true",
        "--set", "schedule.resolution=32", "--set", "schedule.iterations=[2, 2, 2]", "--set", "schedule.batch=[4, 2, 2]",
        "--set", "eval.tiles_per_image=1",
        # one intra-op thread: on a small, shared CPU machine the OpenMP threads of many tiny
        # convolutions wait on each other and make this run ten times slower
        env={"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((only_run_dir(out) / "summary.json").read_text())
    assert summary["iterations"] == 6


# ----------------------------------------------------------------------------- CUDA graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["unet", "resnet", "espcn", "timm"])
def test_a_training_step_is_captured_in_a_cuda_graph(name):
    """Forward, backward and optimizer step replay from one CUDA graph and change the weights."""
    b = backbone(name)
    caps = b.capabilities()
    cond_channels = 1 if caps.conditioning else 0
    scale = scales(caps)[-1]
    model = b.build(3, 3, cond_channels, scale).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    side = max(caps.min_size, 32)
    x = torch.rand(4, 3, side, side, device="cuda")
    y = torch.rand(4, 3, side * scale, side * scale, device="cuda")
    cond = torch.rand(4, cond_channels, device="cuda") if cond_channels else None

    def step():
        opt.zero_grad(set_to_none=False)
        loss = (model(x, cond) - y).square().mean()
        loss.backward()
        opt.step()
        return loss

    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(3):  # warm up allocator and optimizer state outside the graph
            step()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
    before = [p.detach().clone() for p in model.parameters()]
    graph.replay()  # capture only records: the first replay is the first step that runs
    first = float(loss.detach())
    for _ in range(20):
        graph.replay()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert float(loss.detach()) < first
