"""Conformance of tasks (:func:`check_task`), and :func:`restriction_gap`, the measurement it returns."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import Tensor

from msframe import plugins
from msframe.components import Degraded, Resampler, Task
from msframe.recipe import RunSection
from msframe.testing.plumbing import (
    ParamsLike,
    _calling,
    _expect,
    _finite,
    _generator,
    _global_seed,
    _images,
    _irreproducible,
    _params,
    _prepare,
    _rule,
    _shape,
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
    _rule(losses.dtype == clean.dtype and losses.device == clean.device, who, "dtype-device",
          f"{where}: loss is {losses.dtype} on {losses.device}, the clean batch {clean.dtype} on {clean.device}",
          "compute the loss in the images' dtype, on their device (no .double(), no numpy round trip)")
    with _calling(who, f"{where}: backward through the loss"):
        losses.sum().backward()
    _expect(restored.grad is not None and _finite(restored.grad), who,
            f"{where}: the loss gives no finite gradient with respect to the network output")

    with _calling(who, f"{where}: baseline"):
        naive = task.baseline(batch)
    _expect(naive is None or (isinstance(naive, Tensor) and _shape(naive) == want_target), who,
            f"{where}: baseline must be None or of the target's shape {want_target}, got "
            f"{_shape(naive) if isinstance(naive, Tensor) else naive!r}")
    if naive is not None:
        _rule(naive.dtype == clean.dtype and naive.device == clean.device, who, "dtype-device",
              f"{where}: baseline is {naive.dtype} on {naive.device}, the clean batch {clean.dtype} on {clean.device}",
              "return the baseline in the input's dtype, on its device")
    zero = torch.zeros(want_target, dtype=clean.dtype, device=clean.device)
    with _calling(who, f"{where}: restored(zero output, batch)"):
        untrained = task.restored(zero, batch)
    _rule(isinstance(untrained, Tensor) and _shape(untrained) == want_target and untrained.dtype == clean.dtype
          and untrained.device == clean.device, who, "dtype-device",
          f"{where}: restored() must give {want_target} {clean.dtype} on {clean.device}, got "
          f"{f'{_shape(untrained)} {untrained.dtype} on {untrained.device}' if isinstance(untrained, Tensor) else untrained!r}",
          "return baseline + output in the output's shape, dtype and device")
    if naive is not None:
        _rule(torch.equal(untrained, naive), who, "zero-output-restores-baseline",
              f"{where}: restored() of a zero network output is not the baseline: an untrained backbone (whose output "
              "starts at zero) would not restore the task's naive baseline",
              "keep Task.restored as baseline + output (plugin API 2); change baseline() to change what is added")
    _check_exploded(task, batch, where, who)


def _check_exploded(task: Task, batch: Degraded, where: str, who: str) -> None:
    """``exploded`` judges in the task's own loss units: not at the first loss (of an output 0.05 off the target),
    and at an output whose error is 10⁵ times larger."""
    factor = RunSection.model_fields["divergence_factor"].default
    start = batch.target + 0.05
    with torch.no_grad(), _calling(who, f"{where}: loss of a normal and of a blown-up output"):
        first = float(task.loss(start, batch).mean())
        blown = float(task.loss(batch.target + 1e5 * (start - batch.target), batch).mean())
    with _calling(who, f"{where}: exploded(loss, first, {factor:g})"):
        at_first, at_blown = task.exploded(first, first, factor), task.exploded(blown, first, factor)
    _rule(not at_first, who, "exploded",
          f"{where}: exploded({first:.4g}, first={first:.4g}, factor={factor:g}) is true: the first loss itself "
          "counts as a divergence", "compare the loss with the first loss in the task's own units")
    _rule(bool(at_blown), who, "exploded",
          f"{where}: exploded({blown:.4g}, first={first:.4g}, factor={factor:g}) is false for an output whose error is "
          "10⁵ times the first's, so the divergence guard would never stop a blown-up run",
          "return True when the loss has grown by the factor in the task's units (the default suits squared errors; "
          "a logarithmic loss compares loss > first + 10·log10(factor))")


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

    Also, on every level (each rule is named in the message): ``baseline``, ``loss`` and
    ``restored`` are in the clean batch's dtype and on its device (``dtype-device``); ``restored``
    of a zero network output is exactly the baseline (``zero-output-restores-baseline``: an untrained
    backbone restores the baseline); and ``exploded`` is false at the first loss and true for an
    output whose error is 10⁵ times larger, judged by the task in its own units (``exploded``).

    Draws come from the given generator only (``reproducible``): the same seed gives identical
    batches on every level, twice, and whichever seeds torch's, numpy's and Python's global generators
    have (a failure names the cause it found); and ``degrade`` leaves the clean batch untouched.
    ``restrict`` keeps the fine draw (``coupling``): it draws nothing (the same fine batch restricts
    to the same coarse batch), two fine draws restrict to different coarse inputs, and the change of
    the coarse input between two fine draws follows the restricted change of the fine input
    (correlation at least 0.5), so a coarse mesh that re-draws its own degradation, however
    reproducibly, is caught. Also checks the class and its Params (unknown keys rejected, NaN and
    infinity refused, TOML round trip).

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
        where = f"resampler '{name}'"
        levels_of = partial(_task_levels, task, resampler, clean, seed, levels, f"{who} ({where})")
        with _global_seed(0):
            first = levels_of()
        _expect(torch.equal(clean, untouched), who, "degrade or restrict modified the clean batch in place")
        for level, batch_at in enumerate(first):
            _check_degraded(task, batch_at, batch, channels, side // 2**level, clean,
                            f"{where}, level {level} ({side // 2 ** level} px)", who)
        cause = _irreproducible(levels_of, lambda a, b: all(_same(x, y) for x, y in zip(a, b)), "batches")
        _rule(cause is None, who, "reproducible", f"{where}: {cause}",
              "draw everything from the generator passed to degrade, and keep no state between calls")
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
            follows = _coupling(a[level - 1], b[level - 1], a[level], b[level], resampler)
            _rule(follows >= 0.5, who, "coupling",
                  f"{where}: between two fine draws, the change of the coarse input follows the restricted change of the "
                  f"fine input with correlation {follows:.2f} (at least 0.5 expected): restrict draws a coarse degradation "
                  "of its own (reproducibly, perhaps, but not the fine draw restricted), so the two evaluations of a "
                  "correction are not coupled and its variance does not shrink",
                  "build the coarse batch from the fine one: restrict its input (the default), or restrict the draw "
                  "that degrade kept in Degraded.state")


def _coupling(fine_a: Degraded, fine_b: Degraded, coarse_a: Degraded, coarse_b: Degraded, resampler: Resampler) -> float:
    """Correlation of the coarse inputs' difference with the restricted difference of the fine inputs (1 for the
    default restrict; near 0 when the coarse mesh re-draws the degradation independently of the fine draw)."""
    fine = resampler.restrict(fine_a.input - fine_b.input).double().flatten()
    coarse = (coarse_a.input - coarse_b.input).double().flatten()
    if fine.shape != coarse.shape:
        return 1.0  # an input that changes size on restriction in its own way: nothing to compare, nothing asserted
    norms = float(fine.norm() * coarse.norm())
    return float(fine @ coarse) / norms if norms > 0 else 1.0
