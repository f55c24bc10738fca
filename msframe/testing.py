"""Conformance checks for msframe components, for plugin authors to run in their own CI.

One plain function per kind of component. Each takes the component class and, optionally, its
parameters (a ``Params`` instance or a dict of keyword arguments; ``None`` means the defaults), builds
the component the way the engine does, and raises ``AssertionError`` with a message naming the
component and what is wrong. They use no ``assert`` statements, so they also check under
``python -O``, and they work from pytest, unittest or a plain script::

    import msframe.testing as mt
    from msframe.components import Degraded, Task

    class Dim(Task):
        def degrade(self, clean, generator):
            return Degraded(0.5 * clean, clean)

    gaps = mt.check_task(Dim)  # shapes, dtypes, losses, determinism on a 3-level plan
    print(gaps)  # {'area': 0.0, ...}: a pointwise scaling commutes with every linear restriction

What each check promises is in its docstring. Measurements that have no right answer (how far
"degrade, then restrict" is from "restrict, then degrade") are returned, not asserted. A worked
plugin that tests itself this way is ``plugins/examples/msframe_poisson``; the guide is
``docs/plugins.md``.

The checks know components only through the base classes of :mod:`msframe.components`; the
registry (``msframe.plugins.load()``) is consulted only when :func:`check_task` is asked for every
registered resampler (``resamplers=None``).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import tempfile
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import tomli_w
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from msframe import plugins
from msframe.components import (
    Backbone, Capabilities, Dataset, Degraded, Estimator, ImageSplit, Logger, Params, Resampler, RunInfo, Task,
    Term,
)
from msframe.errors import UserError
from msframe.recipe import PluginChoice
from msframe.records import ALLOCATION_RECORD, EVAL_RECORD, SUMMARY, TRAIN_RECORD

__all__ = [
    "ALLOCATION_RECORD", "CHECKS", "EVAL_RECORD", "SUMMARY", "TRAIN_RECORD", "check_backbone", "check_dataset",
    "check_estimator", "check_logger", "check_params_roundtrip", "check_resampler", "check_task", "smoke_train",
    "registered_resamplers", "restriction_gap",
]

ParamsLike = Params | Mapping[str, Any] | None


# ------------------------------------------------------------------------------------ plumbing


def _who(kind: str, cls: type) -> str:
    return f"{kind} {getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


def _expect(ok: bool, who: str, message: str) -> None:
    if not ok:
        raise AssertionError(f"{who}: {message}")


@contextmanager
def _calling(who: str, what: str) -> Iterator[None]:
    """Turn an exception raised by the component into an AssertionError that says what was called."""
    try:
        yield
    except AssertionError:
        raise
    except Exception as exc:  # whatever the component raises is the finding
        raise AssertionError(f"{who}: {what} raised {type(exc).__name__}: {exc}") from exc


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _params(cls: type, params: ParamsLike, who: str) -> Params:
    """``params`` as an instance of ``cls.Params`` (validated like a recipe section)."""
    if isinstance(params, cls.Params):
        return params
    _expect(not isinstance(params, Params), who,
            f"params is a {type(params).__qualname__}, not the component's own {cls.Params.__qualname__}")
    try:
        return cls.Params(**dict(params or {}))
    except ValidationError as exc:
        given = "its default parameters" if not params else f"parameters {dict(params)}"
        hint = "; pass params=... with the required keys" if not params else ""
        raise AssertionError(f"{who}: {given} do not validate{hint}:\n{exc}") from exc


def _prepare(cls: type, base: type, kind: str, params: ParamsLike):
    """Check what the registry checks, round-trip the parameters, and build the component."""
    who = _who(kind, cls)
    _expect(isinstance(cls, type) and issubclass(cls, base), who,
            f"is not a subclass of msframe.components.{base.__name__}")
    _expect(isinstance(cls.Params, type) and issubclass(cls.Params, Params), who,
            "its Params is not a subclass of msframe.components.Params")
    p = _params(cls, params, who)
    check_params_roundtrip(cls, p)
    _check_unknown_key_rejected(cls, p, who)
    with _calling(who, f"{cls.__qualname__}(params)"):
        component = cls(p)
    return component, who


def _check_unknown_key_rejected(cls: type, params: Params, who: str) -> None:
    # A misspelled recipe key must be an error, not a silently ignored default.
    data = {**params.model_dump(), "not_a_parameter_of_this_component": 1}
    try:
        cls.Params.model_validate(data)
    except ValidationError as exc:
        if any(e["type"] == "extra_forbidden" for e in exc.errors()):
            return
    raise AssertionError(f"{who}: its Params accepts unknown keys; keep model_config extra='forbid' "
                         "(inherit msframe.components.Params without overriding model_config)")


def _generator(seed: int, device: torch.device | str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _images(n: int, channels: int, side: int, seed: int, device: torch.device | str) -> Tensor:
    """``n`` images of uniform random pixels in [0, 1], the same for the same arguments."""
    return torch.rand((n, channels, side, side), generator=_generator(seed, "cpu")).to(device)


@contextmanager
def _global_seed(seed: int) -> Iterator[None]:
    """Run with torch's global generators seeded to ``seed``, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        yield


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


# ---------------------------------------------------------------------------------- parameters


def check_params_roundtrip(cls: type, params: ParamsLike = None) -> None:
    """The parameters survive the trip through a resolved recipe.

    ``params`` is dumped exactly as a run folder's ``recipe.resolved.toml`` is written
    (:meth:`msframe.recipe.PluginChoice.to_dict`, then ``tomli_w``), parsed back with ``tomllib`` and
    validated by ``cls.Params``; the result must equal ``params``. This fails for values TOML cannot
    hold (``None`` inside a list or table, arbitrary objects) and for validators that do not accept
    their own output (e.g. a tuple field whose dump does not validate back).
    """
    who = _who("component", cls)
    p = _params(cls, params, who)
    section = PluginChoice("component", cls, p).to_dict()
    try:
        text = tomli_w.dumps({"section": section})
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{who}: parameters {section} cannot be written as TOML: {exc}") from exc
    data = tomllib.loads(text)["section"]
    data.pop("type")
    try:
        again = cls.Params.model_validate(data)
    except ValidationError as exc:
        raise AssertionError(f"{who}: parameters written as TOML do not validate back:\n{text}\n{exc}") from exc
    _expect(again == p, who, f"parameters change on the way through TOML:\n  before {p!r}\n  after  {again!r}\n{text}")


# --------------------------------------------------------------------------------------- tasks


def registered_resamplers() -> dict[str, Resampler]:
    """Every resampler in the registry (``msframe.plugins.load()``), built with its default parameters."""
    registry = plugins.load().registry
    out = {}
    for name in registry.names("resampler"):
        cls = registry.get("resampler", name).cls
        out[name] = cls(_params(cls, None, f"registered resampler '{name}'"))
    return out


def _task_levels(task: Task, resampler: Resampler, clean: Tensor, seed: int, levels: int, who: str) -> list[Degraded]:
    """The degraded batch on the finest mesh and ``levels - 1`` restrictions of it, as the engine makes them."""
    with _calling(who, f"degrade of a {_shape(clean)} batch"):
        batch = task.degrade(clean, _generator(seed, clean.device))
    _expect(isinstance(batch, Degraded), who, f"degrade returned a {type(batch).__qualname__}, not a Degraded")
    out = [batch]
    for level in range(1, levels):
        with _calling(who, f"restrict to level {level}"):
            batch = task.restrict(batch, resampler)
        _expect(isinstance(batch, Degraded), who, f"restrict returned a {type(batch).__qualname__}, not a Degraded")
        out.append(batch)
    return out


def _check_degraded(task: Task, batch: Degraded, n: int, channels: int, side: int, clean: Tensor, where: str,
                    who: str) -> None:
    """Shapes, dtypes, device and finiteness of one level's batch; its loss and baseline."""
    scale = task.scale()
    want_input = [n, task.input_channels(channels), side // scale, side // scale]
    want_target = [n, channels, side, side]
    for name, t, want in (("input", batch.input, want_input), ("target", batch.target, want_target)):
        _expect(isinstance(t, Tensor), who, f"{where}: {name} is a {type(t).__qualname__}, not a tensor")
        _expect(_shape(t) == want, who, f"{where}: {name} has shape {_shape(t)}, expected {want}")
        _expect(t.dtype == clean.dtype, who, f"{where}: {name} has dtype {t.dtype}, the clean batch {clean.dtype}")
        _expect(t.device == clean.device, who, f"{where}: {name} is on {t.device}, the clean batch on {clean.device}")
        _expect(_finite(t), who, f"{where}: {name} has NaN or infinite values")
    k = task.cond_channels()
    if k == 0:
        _expect(batch.cond is None, who, f"{where}: cond is set although cond_channels() is 0")
    else:
        cond = batch.cond
        _expect(isinstance(cond, Tensor) and _shape(cond) == [n, k], who,
                f"{where}: cond must be a tensor of shape {[n, k]} (cond_channels() = {k}), got "
                f"{_shape(cond) if isinstance(cond, Tensor) else cond!r}")
        _expect(cond.is_floating_point() and _finite(cond) and cond.device == clean.device, who,
                f"{where}: cond must be finite floats on {clean.device}")

    restored = (batch.target.detach() + 0.05).requires_grad_()
    with _calling(who, f"{where}: loss"):
        losses = task.loss(restored, batch)
    _expect(isinstance(losses, Tensor) and _shape(losses) == [n], who,
            f"{where}: loss must be per sample, shape {[n]}, got "
            f"{_shape(losses) if isinstance(losses, Tensor) else losses!r}")
    _expect(_finite(losses), who, f"{where}: loss has NaN or infinite values")
    with _calling(who, f"{where}: backward through the loss"):
        losses.sum().backward()
    _expect(restored.grad is not None and _finite(restored.grad), who,
            f"{where}: the loss gives no finite gradient with respect to the network output")

    with _calling(who, f"{where}: baseline"):
        naive = task.baseline(batch)
    _expect(naive is None or (isinstance(naive, Tensor) and _shape(naive) == want_target), who,
            f"{where}: baseline must be None or of the target's shape {want_target}, got "
            f"{_shape(naive) if isinstance(naive, Tensor) else naive!r}")


def _same(a: Degraded, b: Degraded) -> bool:
    """Equal input, target and cond (``state`` is the task's own and is compared through its effects)."""
    return all((x is None and y is None) or (isinstance(x, Tensor) and isinstance(y, Tensor) and torch.equal(x, y))
               for x, y in zip(a[:3], b[:3]))


def restriction_gap(task: Task, resampler: Resampler, clean: Tensor, seed: int = 0) -> float:
    """How far "degrade, then restrict" is from "restrict, then degrade", one mesh down.

    With D the task's degradation drawn from a generator seeded with ``seed`` (the same seed on
    both sides) and R one restriction (``task.restrict`` after D; ``resampler.restrict`` before it),
    returns the relative L2 distance of the network inputs

        ‖R(D(x)) − D(R(x))‖₂ / ‖D(R(x))‖₂

    for the clean finest-mesh batch ``x``. It is 0 when the two commute (a degradation that draws
    nothing and is itself a restriction-compatible average, e.g. block-mean super-resolution with
    the ``area`` resampler, or noise of σ = 0), and grows with how differently the coarse mesh sees
    the problem. It is a measurement for the user, not a pass/fail criterion: random draws of
    different sizes from one seed are different draws.
    """
    fine = task.degrade(clean, _generator(seed, clean.device))
    a = task.restrict(fine, resampler).input
    b = task.degrade(resampler.restrict(clean), _generator(seed, clean.device)).input
    if a.shape != b.shape:
        raise AssertionError(f"restricting the degraded batch gives inputs of shape {_shape(a)}, degrading the "
                             f"restricted batch {_shape(b)}")
    return float((a - b).double().norm() / b.double().norm().clamp_min(1e-12))


def check_task(cls: type, params: ParamsLike = None, *, channels: int = 3, side: int = 32, levels: int = 3,
               batch: int = 2, resamplers: Mapping[str, Resampler] | None = None, device: str = "cpu",
               seed: int = 0) -> dict[str, float]:
    """A task behaves on every level of a small plan, with every resampler.

    For each resampler (``None``: every registered one, with default parameters) a batch of
    ``batch`` random clean images ``[batch, channels, side, side]`` in [0, 1] is degraded on the
    finest mesh and restricted ``levels - 1`` times, as the engine does. On every level:

    - input ``[N, input_channels(C), r/scale, r/scale]`` and target ``[N, C, r, r]`` for mesh side
      r, with the clean batch's dtype and device, and finite;
    - ``cond`` is None when ``cond_channels()`` is 0, else finite floats ``[N, cond_channels()]``;
    - ``loss`` is per sample (``[N]``), finite, and differentiable with a finite gradient;
    - ``baseline`` is None or of the target's shape.

    Draws come from the given generator only: the same seed gives identical batches on every level
    even after ``torch.manual_seed`` changed the global generator; and ``degrade`` leaves the clean
    batch untouched. Also checks the class, its Params (unknown keys rejected, TOML round trip).

    Returns :func:`restriction_gap` per resampler name (a measurement, not asserted). A ``side``
    that cannot be halved ``levels - 1`` times and divided by the task's scale is a ValueError.
    """
    task, who = _prepare(cls, Task, "task", params)
    scale, k = task.scale(), task.cond_channels()
    _expect(isinstance(scale, int) and scale >= 1, who, f"scale() must be an int >= 1, got {scale!r}")
    _expect(isinstance(k, int) and k >= 0, who, f"cond_channels() must be an int >= 0, got {k!r}")
    in_ch = task.input_channels(channels)
    _expect(isinstance(in_ch, int) and in_ch >= 1, who, f"input_channels({channels}) must be an int >= 1, got {in_ch!r}")
    if side % (scale * 2 ** (levels - 1)):
        raise ValueError(f"side {side} cannot be halved {levels - 1} times and divided by the task's scale {scale}")
    chosen = registered_resamplers() if resamplers is None else dict(resamplers)
    if not chosen:
        raise ValueError("no resampler to check the task with")

    clean = _images(batch, channels, side, seed, device)
    untouched = clean.clone()
    gaps = {}
    for name, resampler in chosen.items():
        runs = []
        for global_seed in (0, 1):
            with _global_seed(global_seed):
                runs.append(_task_levels(task, resampler, clean, seed, levels, f"{who} (resampler '{name}')"))
        _expect(torch.equal(clean, untouched), who, "degrade or restrict modified the clean batch in place")
        first, second = runs
        for level, (a, b) in enumerate(zip(first, second)):
            where = f"resampler '{name}', level {level} ({side // 2 ** level} px)"
            _check_degraded(task, a, batch, channels, side // 2**level, clean, where, who)
            _expect(_same(a, b), who, f"{where}: the same generator seed gave different batches after "
                                      "torch.manual_seed changed; draw everything from the generator passed to degrade")
        _check_coupling(task, resampler, clean, seed, levels, f"{who} (resampler '{name}')")
        with _calling(who, f"restriction_gap with resampler '{name}'"):
            gaps[name] = restriction_gap(task, resampler, clean, seed)
    return gaps


def _check_coupling(task: Task, resampler: Resampler, clean: Tensor, seed: int, levels: int, who: str) -> None:
    """``restrict`` keeps the fine draw: it is a function of the fine batch alone (the same batch restricts
    to the same coarse batch, twice), and two different fine draws restrict to different coarse inputs
    (a coarse batch re-drawn independently would not couple the two evaluations of a correction)."""
    a = _task_levels(task, resampler, clean, seed, levels, who)
    b = _task_levels(task, resampler, clean, seed + 1, levels, who)
    for level in range(1, levels):
        where = f"level {level} ({clean.shape[-1] // 2 ** level} px)"
        with _calling(who, f"restrict to {where} a second time"):
            again = task.restrict(a[level - 1], resampler)
        _expect(_same(again, a[level]), who, f"{where}: restricting the same batch twice gave different batches; "
                                            "restrict must not draw (the coarse evaluation must see the fine draw)")
        if not torch.equal(a[level - 1].input, b[level - 1].input):
            _expect(not torch.equal(a[level].input, b[level].input), who,
                    f"{where}: two different fine draws restrict to the same coarse input; restrict re-draws the "
                    "degradation instead of restricting the fine one, so fine and coarse are not coupled")


# ----------------------------------------------------------------------------------- resamplers


def check_resampler(cls: type, params: ParamsLike = None, *, channels: int = 3, side: int = 32, levels: int = 3,
                    border: int = 2, device: str = "cpu", seed: int = 0) -> None:
    """A resampler halves each side, on every restriction of a ``levels``-mesh plan at ``side`` px.

    For inputs of 1, ``channels`` and ``channels + 1`` channels (a mask, an image, an image with
    its mask) and sides ``side``, ``side/2`` … (each one that the plan restricts), in float32 and
    float64: the output is ``[N, C, r/2, r/2]`` with the input's dtype and device, finite, equal
    on a second call, left the input untouched, and restricts each sample alone (a batch gives the
    samples' results stacked, so coupled batches stay coupled). A constant image stays the same
    constant (to 1e-5) away from ``border`` coarse pixels at the edges, where a boundary rule may
    legitimately differ. Also checks the class and its Params. A plan without a restriction
    (``levels`` < 2) or with sides that cannot be halved is a ValueError.
    """
    resampler, who = _prepare(cls, Resampler, "resampler", params)
    if levels < 2 or side % 2 ** (levels - 1):
        raise ValueError(f"a plan of {levels} meshes at {side} px has no restriction to check, or a side that "
                         "cannot be halved")
    if side // 2 - 2 * border < 1:
        raise ValueError(f"side {side} leaves no coarse pixel {border} px away from the border")
    sides = [side // 2**level for level in range(levels - 1)]
    for dtype in (torch.float32, torch.float64):
        for c in sorted({1, channels, channels + 1}):
            for r in sides:
                where = f"restricting a [2, {c}, {r}, {r}] {dtype} batch"
                x = _images(2, c, r, seed, device).to(dtype)
                before = x.clone()
                with _calling(who, where):
                    y = resampler.restrict(x)
                    again = resampler.restrict(x)
                    alone = resampler.restrict(x[1:])
                want = [2, c, r // 2, r // 2]
                _expect(isinstance(y, Tensor) and _shape(y) == want, who,
                        f"{where}: got {_shape(y) if isinstance(y, Tensor) else y!r}, expected shape {want}")
                _expect(y.dtype == dtype and y.device == x.device, who,
                        f"{where}: output is {y.dtype} on {y.device}, expected {dtype} on {x.device}")
                _expect(_finite(y), who, f"{where}: output has NaN or infinite values")
                _expect(torch.equal(x, before), who, f"{where}: the input was modified in place")
                _expect(torch.equal(y, again), who, f"{where}: two calls on the same input differ")
                _expect(torch.allclose(alone, y[1:], atol=1e-6), who,
                        f"{where}: restricting a sample alone differs from restricting it in a batch")
        value = 0.37
        constant = torch.full((2, channels, side, side), value, dtype=dtype, device=device)
        with _calling(who, "restricting a constant image"):
            y = resampler.restrict(constant)
        interior = y[..., border : side // 2 - border, border : side // 2 - border]
        error = float((interior - value).abs().max())
        _expect(error <= 1e-5, who, f"a constant {value} image ({dtype}) restricts to values up to {error:.3g} away from "
                                    f"{value} more than {border} px from the border; the weights must sum to 1")


# -------------------------------------------------------------------------------------- backbones


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


# ------------------------------------------------------------------------------------- estimators


def check_estimator(cls: type, params: ParamsLike = None, *, levels: int = 5, batches: Iterable[int] = (1, 3, 16)) -> None:
    """An estimator's terms are well-formed for every stage of up to ``levels`` meshes.

    For each number of available levels L = 1 … ``levels`` and each planned batch in ``batches``,
    ``terms(L, batch)`` must be a non-empty list of :class:`msframe.components.Term` with integer
    levels ``0 <= fine < L``, ``coarse`` None or ``fine < coarse < L``, integer ``batch >= 1``, a
    plain term (``coarse`` None) last, the same on a second call (the plan is made before the run),
    and it must telescope: counting +1 for every fine and plain level and −1 for every coarse
    level leaves exactly +1 on level 0, so the sum of the terms' expectations is the finest mesh's
    gradient, whatever the batch sizes (method.md: the estimator is unbiased).

    ``reallocate_every()`` is an int >= 0; when it is positive, ``reallocate`` (given per-term
    variances, decaying or all zero, and per-sample costs) returns the same terms, levels unchanged,
    each with an integer batch >= 1.
    """
    estimator, who = _prepare(cls, Estimator, "estimator", params)
    with _calling(who, "reallocate_every()"):
        every = estimator.reallocate_every()
    _expect(isinstance(every, int) and every >= 0, who, f"reallocate_every() must be an int >= 0, got {every!r}")
    for available in range(1, levels + 1):
        for batch in batches:
            where = f"terms({available}, {batch})"
            with _calling(who, where):
                terms = estimator.terms(available, batch)
                again = estimator.terms(available, batch)
            _expect(isinstance(terms, (list, tuple)) and terms, who, f"{where} must be a non-empty list, got {terms!r}")
            _expect(terms == again, who, f"{where} differs between two calls: {terms} and {again}")
            for i, t in enumerate(terms):
                _expect(isinstance(t, Term), who, f"{where}: term {i} is {t!r}, not a msframe.components.Term")
                _expect(isinstance(t.fine, int) and 0 <= t.fine < available, who,
                        f"{where}: term {i} has fine level {t.fine!r}, outside 0 … {available - 1}")
                _expect(t.coarse is None or (isinstance(t.coarse, int) and t.fine < t.coarse < available), who,
                        f"{where}: term {i} has coarse level {t.coarse!r}; it must be None or between fine "
                        f"({t.fine}) and {available - 1}")
                _expect(isinstance(t.batch, int) and t.batch >= 1, who, f"{where}: term {i} has batch {t.batch!r}, "
                                                                       "not an int >= 1")
            _expect(terms[-1].coarse is None, who, f"{where}: the last term must be a plain term, got {terms[-1]}")
            weight: Counter = Counter()
            for t in terms:
                weight[t.fine] += 1
                if t.coarse is not None:
                    weight[t.coarse] -= 1
            net = {level: w for level, w in sorted(weight.items()) if w}
            _expect(net == {0: 1}, who, f"{where}: the terms do not telescope to the finest level (net weight per "
                                        f"level {net}, expected {{0: 1}}), so the estimate is biased: {terms}")
            if every:
                _check_reallocation(estimator, terms, where, who)


def _check_reallocation(estimator: Estimator, terms: list[Term], where: str, who: str) -> None:
    """``reallocate`` keeps the terms' levels and gives every term an integer batch >= 1."""
    # work units of one sample relative to the stage's finest mesh, as the trainer passes them
    costs = [4.0**-t.fine + (0.0 if t.coarse is None else 4.0**-t.coarse) for t in terms]
    for variances in ([4.0**-t.fine for t in terms], [0.0] * len(terms)):
        call = f"reallocate({where}, variances={variances}, costs={costs})"
        with _calling(who, call):
            chosen = estimator.reallocate(list(terms), variances, costs)
        _expect(isinstance(chosen, (list, tuple)) and len(chosen) == len(terms), who,
                f"{call} must return a list of {len(terms)} terms, got {chosen!r}")
        for old, new in zip(terms, chosen):
            _expect(isinstance(new, Term) and (new.fine, new.coarse) == (old.fine, old.coarse), who,
                    f"{call} changed the levels of {old} to {new!r}; only batch sizes may change")
            _expect(isinstance(new.batch, int) and new.batch >= 1, who,
                    f"{call} gave {new} a batch that is not an int >= 1")


# --------------------------------------------------------------------------------------- datasets


def check_dataset(cls: type, params: ParamsLike, *, side: int = 16, n: int = 3, device: str = "cpu", seed: int = 0) -> None:
    """A dataset gives train, val and test splits of usable, reproducible crops.

    ``channels()`` is an int >= 1 and each split the trainer reads (train, val, test) exists with
    non-empty, unique string names, at least one image usable at ``side`` px, and no names shared
    between train and the held-out splits. ``crops(n, side, generator)`` is float32 ``[n, C, side, side]`` in [0, 1];
    the same seed gives the same crops whatever ``torch.manual_seed`` did, from a second dataset
    built from the same parameters, from a pickled copy of the split (what a DataLoader worker
    holds) and, unless the split refuses ``to(device)`` with a UserError, from a copy whose images
    were moved to ``device`` (``loader.resident``; the crops are then on ``device``). ``tiles`` are
    deterministic crops of the same form; ``pairs`` is None or (low, high)
    tiles for a ×2 task. ``report()`` is a JSON-serialisable dict (it goes into summary.json).
    """
    dataset, who = _prepare(cls, Dataset, "dataset", params)
    with _calling(who, "a second instance from the same parameters"):
        twin = cls(dataset.params)
    with _calling(who, "channels()"):
        channels = dataset.channels()
    _expect(isinstance(channels, int) and channels >= 1, who, f"channels() must be an int >= 1, got {channels!r}")
    names = {}
    for split_name in ("train", "val", "test"):  # the splits the trainer reads
        with _calling(who, f"split('{split_name}')"):
            split = dataset.split(split_name)
            other = twin.split(split_name)
        names[split_name] = _check_split(split, other, split_name, channels, side, n, device, seed, who)
    for held in ("val", "test"):
        shared = set(names["train"]) & set(names[held])
        _expect(not shared, who, f"train and {held} share images: {sorted(shared)[:5]}")
    with _calling(who, "report()"):
        report = dataset.report()
    _expect(isinstance(report, dict), who, f"report() must return a dict, got {report!r}")
    try:
        json.dumps(report)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{who}: report() is not JSON-serialisable ({exc}): {report!r}") from exc


def _check_split(split: ImageSplit, other: ImageSplit, name: str, channels: int, side: int, n: int, device: str,
                 seed: int, who: str) -> list[str]:
    where = f"split '{name}'"
    _expect(isinstance(split, ImageSplit), who, f"{where} is a {type(split).__qualname__}, not an ImageSplit")
    names = split.names
    _expect(isinstance(names, list) and names and all(isinstance(s, str) for s in names), who,
            f"{where}: names must be a non-empty list of strings, got {names!r}")
    _expect(len(set(names)) == len(names), who, f"{where}: names are not unique")
    _expect(other.names == names, who, f"{where}: a second dataset from the same parameters lists other images")
    usable = split.usable(side)
    _expect(usable >= 1, who, f"{where}: no image gives a {side} px crop (check a smaller side, or use larger images)")

    with _calling(who, f"{where}: crops({n}, {side}, generator)"):
        crops = []
        for global_seed in (0, 1):
            with _global_seed(global_seed):
                crops.append(split.crops(n, side, _generator(seed, "cpu")))
        from_twin = other.crops(n, side, _generator(seed, "cpu"))
        from_copy = pickle.loads(pickle.dumps(split)).crops(n, side, _generator(seed, "cpu"))
    c = crops[0]
    _check_images(c, [n, channels, side, side], f"{where}: crops", who)
    _expect(torch.equal(c, crops[1]), who, f"{where}: the same generator seed gave different crops after "
                                           "torch.manual_seed changed; draw everything from the generator passed to crops")
    _expect(torch.equal(c, from_twin), who, f"{where}: a second dataset from the same parameters gives other crops")
    _expect(torch.equal(c, from_copy), who, f"{where}: a pickled copy of the split (as in a DataLoader worker) gives "
                                            "other crops")
    resident = pickle.loads(pickle.dumps(split))
    with _calling(who, f"{where}: to({device!r})"):
        try:
            resident.to(torch.device(device))
            refused = False
        except UserError:  # the split keeps its images on the host: loader.resident is refused, which is allowed
            refused = True
    if not refused:
        with _calling(who, f"{where}: crops of a split moved to {device}"):
            moved = resident.crops(n, side, _generator(seed, "cpu"))
        _expect(isinstance(moved, Tensor) and moved.device.type == torch.device(device).type, who,
                f"{where}: crops of a split moved with to({device!r}) are not on {device}")
        _expect(torch.equal(moved.cpu(), c), who, f"{where}: a split moved with to({device!r}) gives other crops")

    per_image, max_images = 2, 2
    with _calling(who, f"{where}: tiles({side}, {per_image}, {max_images})"):
        tiles, tiles_again = split.tiles(side, per_image, max_images), split.tiles(side, per_image, max_images)
    _expect(isinstance(tiles, Tensor) and 1 <= len(tiles) <= per_image * min(max_images, usable), who,
            f"{where}: tiles must give 1 to {per_image * min(max_images, usable)} tiles, got "
            f"{_shape(tiles) if isinstance(tiles, Tensor) else tiles!r}")
    _check_images(tiles, [len(tiles), channels, side, side], f"{where}: tiles", who)
    _expect(torch.equal(tiles, tiles_again), who, f"{where}: tiles differ between two calls")

    with _calling(who, f"{where}: pairs({side}, 2, 1, 1)"):
        pairs = split.pairs(side, 2, 1, 1)
    if pairs is not None:
        _expect(isinstance(pairs, tuple) and len(pairs) == 2, who, f"{where}: pairs must be None or (low, high)")
        low, high = pairs
        _check_images(high, [len(high), channels, side, side], f"{where}: high-resolution pairs", who)
        _check_images(low, [len(high), channels, side // 2, side // 2], f"{where}: low-resolution pairs", who)
    return names


def _check_images(t: Any, want: list[int], where: str, who: str) -> None:
    _expect(isinstance(t, Tensor) and _shape(t) == want, who,
            f"{where}: expected a tensor of shape {want}, got {_shape(t) if isinstance(t, Tensor) else t!r}")
    _expect(t.dtype == torch.float32, who, f"{where}: dtype {t.dtype}, expected float32")
    _expect(_finite(t) and bool(t.min() >= 0) and bool(t.max() <= 1), who, f"{where}: values outside [0, 1]")


# ---------------------------------------------------------------------------------------- loggers

def check_logger(cls: type, params: ParamsLike = None, *, directory: str | Path | None = None) -> None:
    """A logger goes through a run, a failed run and a resumed run in a run folder.

    In ``directory`` (a fresh temporary folder when None) the logger is opened, fed
    :data:`TRAIN_RECORD`, :data:`ALLOCATION_RECORD` and :data:`EVAL_RECORD`, and closed with
    :data:`SUMMARY`; a second instance
    is then opened as a resume (``resumed_step`` = the first run's step), fed a later record and
    closed with ``None`` (a run that failed). Nothing may raise, and ``log`` must leave each record
    as it was: every logger of a run receives the same dict.
    """
    logger, who = _prepare(cls, Logger, "logger", params)
    place = tempfile.TemporaryDirectory(prefix="msframe-logger-") if directory is None else nullcontext(str(directory))
    with place as where:
        folder = Path(where)
        recipe = {"run": {"name": "conformance", "seed": 0}}
        later = {**TRAIN_RECORD, "iteration": TRAIN_RECORD["iteration"] + 1, "step": TRAIN_RECORD["step"] + 1}
        for instance, resumed, records, summary in (
            (logger, 0, [TRAIN_RECORD, ALLOCATION_RECORD, EVAL_RECORD], SUMMARY),
            (cls(logger.params), TRAIN_RECORD["step"], [later], None),
        ):
            phase = "resumed run" if resumed else "run"
            with _calling(who, f"open() of a {phase}"):
                instance.open(RunInfo(folder, "conformance", recipe, resumed))
            for record in records:
                kept = copy.deepcopy(record)
                with _calling(who, f"log() of a {record['event']} record in a {phase}"):
                    instance.log(record)
                _expect(record == kept, who, f"log() modified the {record['event']} record it was given")
            with _calling(who, f"close({'the summary' if summary else 'None'}) of a {phase}"):
                instance.close(copy.deepcopy(summary))


#: kind of component -> its check (``check_dataset`` needs parameters: most datasets need a root)
CHECKS: dict[str, Callable[..., Any]] = {
    "task": check_task,
    "backbone": check_backbone,
    "resampler": check_resampler,
    "estimator": check_estimator,
    "dataset": check_dataset,
    "logger": check_logger,
}


#: recipe section of each kind of component, for :func:`smoke_train`
_SECTION = {"task": "task", "backbone": "backbone", "resampler": "resampler", "estimator": "estimator", "dataset": "data"}
#: the tiny Full-Multiscale run that :func:`smoke_train` substitutes one component into
_SMOKE = {
    "run": {"name": "smoke", "seed": 0, "device": "cpu"},
    "schedule": {"levels": 3, "iterations": [2, 2, 2], "batch": [4, 2, 2]},
    "eval": {"tiles_per_image": 1, "max_images": 2},
    "data": {"type": "sample_images", "val": ["moon"], "test": ["camera"], "exclude": [
        "astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "rocket", "motorcycle", "chelsea"]},
    "task": {"type": "denoise"},
    "backbone": {"type": "cnn", "channels": 8, "depth": 3},
    "resampler": {"type": "area"},
    "estimator": {"type": "mge"},
    "loggers": {},
}


def smoke_train(kind: str, cls: type, params: ParamsLike = None, *, directory: str | Path | None = None) -> dict:
    """Train a tiny three-stage Full-Multiscale run through the real engine with this component in it.

    The run is a 3-mesh denoiser (a small ``cnn``, the ``area`` resampler, ``mge``, bundled photographs)
    with the given component in place of the built-in of its ``kind`` (task, backbone, resampler,
    estimator, dataset or logger; a logger is added). Where the component needs it, the rest adapts: a
    task with a scale gets ``espcn``, a task with conditioning keeps ``cnn`` (which takes it), and the
    finest mesh is made large enough for the backbone's claimed smallest side on all three meshes.
    Returns the run summary after checking that the run finished with finite test PSNR, the planned
    work and one train record per iteration. Needs the built-in plugins installed.
    """
    from dataclasses import replace

    from msframe import recipe as recipe_mod
    from msframe.train import Trainer

    loaded = plugins.load()
    data = copy.deepcopy(_SMOKE)
    if kind == "task":
        task = cls(_params(cls, params, _who("task", cls)))
        if task.scale() > 1:
            data["backbone"] = {"type": "espcn", "features": [8]}
    recipe = recipe_mod.validate(data, loaded.registry, source="<smoke>")
    who = _who(kind, cls)
    choice = PluginChoice(f"smoke-{cls.__name__}", cls, _params(cls, params, who))
    if kind == "logger":
        recipe = replace(recipe, loggers={**recipe.loggers, "smoke": choice})
    elif kind == "estimator":
        recipe = replace(recipe, estimator=choice, stage_estimators=(choice,) * recipe.schedule.stages)
    elif kind in _SECTION:
        recipe = replace(recipe, **{_SECTION[kind]: choice})
    else:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join([*_SECTION, 'logger'])})")
    backbone = recipe.backbone.build()
    caps, scale = backbone.capabilities(), recipe.task.build().scale()
    coarsest = max(caps.min_size, caps.multiple, recipe.resampler.build().min_side(), 2) * scale
    coarsest = -(-coarsest // (caps.multiple * scale)) * caps.multiple * scale
    # 64 px: the coarsest mesh (16 px) then fits the built-in blur kernels with reflected borders
    recipe = replace(recipe, schedule=recipe.schedule.model_copy(update={"resolution": max(64, 4 * coarsest)}))
    records = []

    class Keep(Logger):
        def log(self, record):
            records.append(record)

    with tempfile.TemporaryDirectory() if directory is None else nullcontext(str(directory)) as folder:
        trainer = Trainer(recipe, loaded, Path(folder) / "run", loggers=[Keep(Params()),
                          *[c.build() for c in recipe.loggers.values()]])
        with _calling(who, "a tiny Full-Multiscale run through the engine"):
            summary = trainer.train()
    _expect(summary is not None and math.isfinite(summary["test"]["psnr"]), who,
            f"the smoke run ended without a finite test PSNR: {summary and summary['test']}")
    _expect(abs(summary["work_units"] - trainer.plan.work) < 1e-6 * max(1.0, trainer.plan.work), who,
            f"the run did {summary['work_units']} WU, the plan {trainer.plan.work}")
    steps = [r["step"] for r in records if r.get("event") == "train"]
    _expect(steps == list(range(1, trainer.plan.iterations + 1)), who, f"train records for steps {steps}")
    return summary
