"""Conformance of backbones (:func:`check_backbone`): every network on every input its capabilities claim."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities
from msframe.testing.plumbing import (
    ParamsLike, _calling, _expect, _finite, _generator, _global_seed, _images, _prepare, _shape,
)


def _accepted_sides(caps: Capabilities, side: int, levels: int) -> list[int]:
    """The plan's mesh sides that ``caps`` accepts, and the smallest side it accepts at all."""
    smallest = math.ceil(caps.min_size / caps.multiple) * caps.multiple
    meshes = {side // 2**level for level in range(levels)}
    # a plan can ask for any accepted side: the smallest, and the next few multiples above it
    claimed = {smallest + k * caps.multiple for k in range(4)}
    return sorted(claimed | {r for r in meshes if r >= caps.min_size and r % caps.multiple == 0})


def check_backbone(cls: type, params: ParamsLike = None, *, in_channels: Iterable[int] = (3, 4), out_channels: int = 3,
                   side: int = 32, levels: int = 3, batch: int = 2, device: str = "cpu", seed: int = 0) -> None:
    """A backbone builds networks that run on every input its capabilities claim.

    Capabilities must be well-formed (``min_size`` and ``multiple`` ints >= 1, ``scale`` None or an
    int >= 1). Networks are built for every input channel count in ``in_channels``, every scale
    (the claimed one, or 1, 2 and 4 when ``scale`` is None, i.e. set by the task) and, when the
    backbone takes conditioning, both with a 2-value conditioning vector and without one (a task
    without conditioning). Each network is run, in training mode, on the mesh sides of a
    ``levels``-mesh plan at ``side`` px that the capabilities accept, on the smallest side they
    accept and on the next three multiples of ``multiple`` above it: the output is
    ``[batch, out_channels, r·scale, r·scale]``, float32 on the input's device and finite, and one
    backward pass gives every parameter a finite gradient. The network leaves its input (and
    conditioning) unchanged; in eval mode each sample's output does not depend on its batch mates;
    and a network built with conditioning uses it (with its weights perturbed away from their initial
    values, so that a zero-initialised conditioning path counts as used).

    A backbone that declares ``batch_independent`` must keep it in training mode too (dropout off,
    its draws are per sample anyway): a sample's output stays the same (to float rounding) when its
    batch mates and their number change, since the engine then evaluates several terms in one pass.
    """
    backbone, who = _prepare(cls, Backbone, "backbone", params)
    with _calling(who, "capabilities()"):
        caps = backbone.capabilities()
    _expect(isinstance(caps, Capabilities), who, f"capabilities() returned {caps!r}, not a Capabilities")
    _expect(all(isinstance(v, int) and v >= 1 for v in (caps.min_size, caps.multiple)), who,
            f"min_size and multiple must be ints >= 1, got {caps}")
    _expect(caps.scale is None or (isinstance(caps.scale, int) and caps.scale >= 1), who,
            f"scale must be None or an int >= 1, got {caps.scale!r}")
    scales = (1, 2, 4) if caps.scale is None else (caps.scale,)
    conds = (0, 2) if caps.conditioning else (0,)
    sides = _accepted_sides(caps, side, levels)
    for scale in scales:
        for cin in in_channels:
            for k in conds:
                built = f"build({cin}, {out_channels}, {k}, {scale})"
                with _calling(who, built), _global_seed(seed):
                    model = backbone.build(cin, out_channels, k, scale)
                _expect(isinstance(model, nn.Module), who, f"{built} returned {type(model).__qualname__}, not an nn.Module")
                model = model.to(device).train()
                for r in sides:
                    _check_network(model, cin, out_channels, k, scale, r, batch, device, seed, f"{built} on {r} px", who)
                if caps.batch_independent:
                    _check_batch_independent(model, cin, k, sides[-1], device, seed, f"{built} on {sides[-1]} px", who)
                _check_independence(model, cin, k, sides[-1], max(batch, 2), device, seed, built, who)
                if k:
                    _check_conditioning_used(model, cin, k, sides[-1], device, seed, built, who)


@torch.no_grad()
def _check_independence(model: nn.Module, cin: int, k: int, r: int, batch: int, device: str, seed: int,
                        built: str, who: str) -> None:
    """In eval mode, the outputs of samples 1.. do not change when sample 0 leaves the batch."""
    model.eval()
    x = _images(batch, cin, r, seed, device)
    cond = torch.rand((batch, k), generator=_generator(seed + 1, "cpu")).to(device) if k else None
    with _calling(who, f"{built} on {r} px in eval mode"):
        full = model(x, cond)
        part = model(x[1:], None if cond is None else cond[1:])
    model.train()
    _expect(torch.allclose(full[1:], part, atol=1e-5, rtol=1e-4), who,
            f"{built} on {r} px: in eval mode a sample's output depends on the other samples of the batch")


@torch.no_grad()
def _check_conditioning_used(model: nn.Module, cin: int, k: int, r: int, device: str, seed: int, built: str,
                             who: str) -> None:
    """With every weight perturbed (a copy), two different conditioning vectors give different outputs."""
    probe = copy.deepcopy(model).eval()
    g = _generator(seed + 2, "cpu")
    for p in probe.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.device))
    x = _images(1, cin, r, seed, device)
    lo, hi = torch.zeros((1, k), device=device), torch.ones((1, k), device=device)
    with _calling(who, f"{built} on {r} px with two conditioning vectors"):
        a, b = probe(x, lo), probe(x, hi)
    _expect(not torch.allclose(a, b), who, f"{built}: the output does not change with the conditioning input; "
                                           "capabilities() claims conditioning=True but the network ignores it")


def _check_network(model: nn.Module, cin: int, cout: int, k: int, scale: int, r: int, batch: int, device: str,
                   seed: int, where: str, who: str) -> None:
    model.zero_grad(set_to_none=True)
    x = _images(batch, cin, r, seed, device)
    cond = torch.rand((batch, k), generator=_generator(seed + 1, "cpu")).to(device) if k else None
    x_before, cond_before = x.clone(), None if cond is None else cond.clone()
    with _calling(who, f"{where}: forward"):
        out = model(x, cond)
    _expect(torch.equal(x, x_before) and (cond is None or torch.equal(cond, cond_before)), who,
            f"{where}: the network modified its input in place (evaluation compares that input with the target)")
    want = [batch, cout, r * scale, r * scale]
    _expect(isinstance(out, Tensor) and _shape(out) == want, who,
            f"{where}: output {_shape(out) if isinstance(out, Tensor) else out!r}, expected shape {want}")
    _expect(out.dtype == torch.float32 and out.device == x.device, who,
            f"{where}: output is {out.dtype} on {out.device}, expected float32 on {x.device}")
    _expect(_finite(out), who, f"{where}: output has NaN or infinite values")
    with _calling(who, f"{where}: backward"):
        out.square().mean().backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trained if p.grad is None]
    _expect(not missing, who, f"{where}: parameters without a gradient: {', '.join(missing[:8])}"
                              f"{' …' if len(missing) > 8 else ''}")
    bad = [n for n, p in trained if not _finite(p.grad)]
    _expect(not bad, who, f"{where}: parameters with NaN or infinite gradients: {', '.join(bad[:8])}")


@torch.no_grad()
def _check_batch_independent(model: nn.Module, cin: int, k: int, r: int, device: str, seed: int, where: str,
                             who: str) -> None:
    """Sample 0's output alone, among 2 batch mates and among 4 others, in training mode without dropout."""
    random_layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for m in random_layers:
        m.eval()
    x = _images(7, cin, r, seed + 2, device)
    cond = torch.rand((7, k), generator=_generator(seed + 3, "cpu")).to(device) if k else None
    picks = ([0, 1, 2], [0, 3, 4, 5, 6])
    try:
        with _calling(who, f"{where}: forward with other batch mates"):
            outs = [model(x[p], None if cond is None else cond[p])[0] for p in picks]
    finally:
        for m in random_layers:
            m.train()
    scale = float(outs[0].abs().max()) + 1.0
    error = float((outs[0] - outs[1]).abs().max())
    _expect(error <= 1e-4 * scale, who,
            f"{where}: declares batch_independent, but a sample's output changed by {error:.3g} when its batch mates "
            f"changed (BatchNorm in training mode mixes samples); declare batch_independent=False")
