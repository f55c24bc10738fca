"""Conformance of resamplers (:func:`check_resampler`)."""

from __future__ import annotations

import torch
from torch import Tensor

from msframe.components import Resampler
from msframe.testing.plumbing import ParamsLike, _calling, _expect, _finite, _images, _prepare, _rule, _shape


def check_resampler(cls: type, params: ParamsLike = None, *, channels: int = 3, side: int = 32, levels: int = 3,
                    border: int = 2, device: str = "cpu", seed: int = 0) -> None:
    """A resampler halves each side, on every restriction of a ``levels``-mesh plan at ``side`` px.

    For inputs of 1, ``channels`` and ``channels + 1`` channels (a mask, an image, an image with
    its mask) and sides ``side``, ``side/2`` … (each one that the plan restricts), in float32 and
    float64: the output is ``[N, C, r/2, r/2]`` with the input's dtype and device, finite, equal
    on a second call, left the input untouched, and restricts each sample alone (a batch gives the
    samples' results stacked, so coupled batches stay coupled). A constant image stays the same
    constant (to 1e-5) away from ``border`` coarse pixels at the edges, where a boundary rule may
    legitimately differ. ``min_side()`` is an int >= 1, and an input of that side restricts to the
    same form (``min-side``: the plan trusts it for every restriction). Also checks the class and its
    Params. A plan without a restriction
    (``levels`` < 2) or with sides that cannot be halved is a ValueError.
    """
    resampler, who = _prepare(cls, Resampler, "resampler", params)
    if levels < 2 or side % 2 ** (levels - 1):
        raise ValueError(f"a plan of {levels} meshes at {side} px has no restriction to check, or a side that "
                         "cannot be halved")
    if side // 2 - 2 * border < 1:
        raise ValueError(f"side {side} leaves no coarse pixel {border} px away from the border")
    with _calling(who, "min_side()"):
        smallest = resampler.min_side()
    _expect(isinstance(smallest, int) and smallest >= 1, who, f"min_side() must be an int >= 1, got {smallest!r}")
    tiny = _images(2, channels, smallest, seed, device)
    try:
        y = resampler.restrict(tiny)
        got = f"{_shape(y)}{'' if _finite(y) else ' with NaN or infinite values'}" if isinstance(y, Tensor) else repr(y)
    except Exception as exc:  # the failure is the finding
        y, got = None, f"an error, {type(exc).__name__}: {exc}"
    want = [2, channels, smallest // 2, smallest // 2]
    _rule(isinstance(y, Tensor) and _shape(y) == want and _finite(y), who, "min-side",
          f"min_side() is {smallest}, but restricting a [2, {channels}, {smallest}, {smallest}] batch gives {got} "
          f"(finite {want} expected)", "return from min_side() the smallest side restrict() handles")
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
