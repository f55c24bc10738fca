"""Conformance of backbones (:func:`check_backbone`): every network on every input its capabilities claim."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities
from msframe.testing.plumbing import (
    ParamsLike,
    _calling,
    _expect,
    _finite,
    _generator,
    _global_seed,
    _images,
    _irreproducible,
    _perturbed,
    _prepare,
    _rule,
    _shape,
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
    conditioning) unchanged.

    The output contract (plugin API 2): two builds with the same torch seed have the same weights
    (``same-seed-weights``: the engine seeds only torch before building); the untrained network's
    output is a correction, not an image: it is not closer to the input image (upsampled by the
    scale) than to zero (``output-is-correction``); and it is zero, so that an untrained network
    restores exactly the task's baseline (``zero-at-init``).

    Checked on a copy whose weights are perturbed away from their initial values (so that a
    zero-initialised last layer, which makes every output zero, hides nothing): in eval mode each
    sample's output does not depend on its batch mates (``batch-independent``), and a network built
    with conditioning uses it (``conditioning-used``). A backbone that declares ``batch_independent``
    must keep it in training mode too (dropout off, its draws are per sample anyway): a sample's
    output stays the same (to float rounding) when its batch mates and their number change, since
    the engine then evaluates several terms in one pass.
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
                _check_same_seed_weights(backbone, model, (cin, out_channels, k, scale), seed, built, who)
                model = model.to(device).train()
                for r in sides:
                    _check_network(model, cin, out_channels, k, scale, r, batch, device, seed, f"{built} on {r} px", who)
                # batch mixing first: it can make a network look like it ignores its conditioning
                _check_independence(model, cin, k, sides[-1], max(batch, 2), device, seed, built, who)
                if caps.batch_independent:
                    _check_batch_independent(model, cin, k, sides[-1], device, seed, f"{built} on {sides[-1]} px", who)
                if k:
                    _check_conditioning_used(model, cin, k, sides[-1], device, seed, built, who)
                _check_output_at_init(model, cin, out_channels, k, scale, sides[-1], batch, device, seed, built, who)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[n].cpu(), sb[n].cpu()) for n in sa)


def _check_same_seed_weights(backbone: Backbone, model: nn.Module, args: tuple[int, int, int, int], seed: int,
                             built: str, who: str) -> None:
    """A second build after the same ``torch.manual_seed`` has the same weights; if not, the cause, tested."""
    with _calling(who, f"{built} a second time"), _global_seed(seed):
        twin = backbone.build(*args)
    if _same_weights(model, twin):
        return
    with _calling(who, f"{built} with the global generators seeded in turn"):
        cause = _irreproducible(lambda: backbone.build(*args), _same_weights, "weights", "the same torch.manual_seed",
                                allowed=("torch",))
    _rule(False, who, "same-seed-weights",
          f"{built}: {cause or 'two builds after the same torch.manual_seed gave different weights'}",
          "initialise every weight from torch's global generator (torch.nn.init, torch.randn without a generator), "
          "which the engine seeds from the run's seed before building")


@torch.no_grad()
def _check_output_at_init(model: nn.Module, cin: int, cout: int, k: int, scale: int, r: int, batch: int, device: str,
                          seed: int, built: str, who: str) -> None:
    """The untrained network returns a correction (not an image) and it is zero: the run starts at the baseline."""
    model.eval()
    x = _images(batch, cin, r, seed + 5, device)
    cond = torch.rand((batch, k), generator=_generator(seed + 6, "cpu")).to(device) if k else None
    with _calling(who, f"{built} on {r} px in eval mode"):
        out = model(x, cond).float()
    model.train()
    where = f"{built} on {r} px"
    if cin >= cout:
        image = x[:, :cout] if scale == 1 else F.interpolate(x[:, :cout], scale_factor=scale, mode="bilinear")
        near_image, size = float((out - image).norm()), float(out.norm())
        _rule(not near_image < size, who, "output-is-correction",
              f"{where}: the untrained network's output is closer to its input image (distance {near_image:.3g}) than "
              f"to zero ({size:.3g}): it returns the restored image, but a backbone returns the correction that "
              "Task.restored adds to the task's baseline (plugin API 2), so this run would add the input twice",
              "return only the correction (drop the `input +` skip connection) and initialise the last layer to zero")
    largest = float(out.abs().max())
    _rule(largest <= 1e-6, who, "zero-at-init",
          f"{where}: the untrained network's output is not zero (max |output| = {largest:.3g}), so an untrained network "
          "does not restore exactly the task's baseline",
          "initialise the last layer's weight and bias to zero (torch.nn.init.zeros_), as every built-in backbone does")


@torch.no_grad()
def _check_independence(model: nn.Module, cin: int, k: int, r: int, batch: int, device: str, seed: int,
                        built: str, who: str) -> None:
    """In eval mode, with perturbed weights, the outputs of samples 1.. do not change when sample 0 leaves the batch."""
    probe = _perturbed(model, seed + 4).eval()
    x = _images(batch, cin, r, seed, device)
    cond = torch.rand((batch, k), generator=_generator(seed + 1, "cpu")).to(device) if k else None
    with _calling(who, f"{built} on {r} px in eval mode, with perturbed weights"):
        full = probe(x, cond)
        part = probe(x[1:], None if cond is None else cond[1:])
    _rule(torch.allclose(full[1:], part, atol=1e-5, rtol=1e-4), who, "batch-independent",
          f"{built} on {r} px: in eval mode a sample's output depends on the other samples of the batch (checked with "
          "the weights perturbed from their initial values)",
          "compute no statistic over the batch dimension in eval mode (BatchNorm uses its running statistics there; "
          "a mean over dim 0 does not)")


@torch.no_grad()
def _check_conditioning_used(model: nn.Module, cin: int, k: int, r: int, device: str, seed: int, built: str,
                             who: str) -> None:
    """With every weight perturbed (a copy), two different conditioning vectors give different outputs."""
    probe = _perturbed(model, seed + 2).eval()
    x = _images(1, cin, r, seed, device)
    lo, hi = torch.zeros((1, k), device=device), torch.ones((1, k), device=device)
    with _calling(who, f"{built} on {r} px with two conditioning vectors"):
        a, b = probe(x, lo), probe(x, hi)
    _rule(not torch.allclose(a, b), who, "conditioning-used",
          f"{built}: the output does not change with the conditioning input (one sample, weights perturbed); "
          "capabilities() claims conditioning=True but the network ignores it",
          "feed cond into the network, or declare conditioning=False")


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
    """Sample 0's output among 2 batch mates and among 4 others, in training mode without dropout, with perturbed
    weights (a zero-initialised last layer would make every output zero, whatever the layers before it mix)."""
    probe = _perturbed(model, seed + 7).train()
    for m in probe.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    x = _images(7, cin, r, seed + 2, device)
    cond = torch.rand((7, k), generator=_generator(seed + 3, "cpu")).to(device) if k else None
    picks = ([0, 1, 2], [0, 3, 4, 5, 6])
    with _calling(who, f"{where}: forward with other batch mates"):
        outs = [probe(x[p], None if cond is None else cond[p])[0] for p in picks]
    scale = float(outs[0].abs().max()) + 1.0
    error = float((outs[0] - outs[1]).abs().max())
    _rule(error <= 1e-4 * scale, who, "batch-independent",
          f"{where}: declares batch_independent, but a sample's output changed by {error:.3g} when its batch mates "
          "changed, in training mode with the weights perturbed from their initial values",
          "declare batch_independent=False, or use no layer that mixes samples in training mode (BatchNorm does; "
          "GroupNorm, LayerNorm and InstanceNorm do not)")
