"""Conformance of tasks (:func:`check_task`), and :func:`restriction_gap`, the measurement it returns."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from msframe import plugins
from msframe.components import Degraded, Resampler, Task
from msframe.testing.plumbing import (
    ParamsLike, _calling, _expect, _finite, _generator, _global_seed, _images, _params, _prepare, _shape,
)


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
