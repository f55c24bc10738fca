"""What every check shares: checking a class as the registry does and building it as the engine does,
turning what a component raises into a finding that names it, seeded images and generators, and the
parameters' round trip through a resolved recipe (:func:`check_params_roundtrip`)."""

from __future__ import annotations

import copy
import math
import random
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import tomli_w
import torch
from pydantic import ValidationError
from torch import Tensor

from msframe.components import Params
from msframe.recipe import PluginChoice

#: what a check takes as parameters: the component's own ``Params``, keyword arguments, or None (defaults)
ParamsLike = Params | Mapping[str, Any] | None


def _who(kind: str, cls: type) -> str:
    return f"{kind} {getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


def _expect(ok: bool, who: str, message: str) -> None:
    if not ok:
        raise AssertionError(f"{who}: {message}")


def _rule(ok: bool, who: str, rule: str, message: str, fix: str) -> None:
    """Fail, unless ``ok``, with a message naming the component, the rule broken (as docs/plugins.md names it)
    and the fix: ``who: [rule] message; fix: fix``."""
    if not ok:
        raise AssertionError(f"{who}: [{rule}] {message}; fix: {fix}")


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
    _check_finite_params(cls, p, who)
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


def _check_finite_params(cls: type, params: Params, who: str) -> None:
    """Every float parameter (a float field, or a list or tuple of floats) refuses NaN and ±infinity: a NaN
    in a recipe would otherwise surface as a diverged run, blamed on the optimiser."""
    data = params.model_dump()
    for name, info in cls.Params.model_fields.items():
        if "float" not in str(info.annotation):
            continue
        value = data.get(name)
        for bad in (math.nan, math.inf, -math.inf):
            if isinstance(value, (list, tuple)) and value:
                given = type(value)([bad, *value[1:]])
            elif isinstance(value, (list, tuple, dict)):
                continue  # an empty collection: nothing to put a NaN in
            else:
                given = bad
            try:
                cls.Params.model_validate({**data, name: given})
            except ValidationError:
                continue
            _rule(False, who, "finite-params", f"its parameter {name!r} accepts {given!r}",
                  "keep msframe.components.Params' model_config (allow_inf_nan=False) and type the field float")


#: global generator -> (the call that seeds it, what it is)
_SOURCES = {"torch": ("torch.manual_seed", "torch's global generator"), "numpy": ("np.random.seed", "numpy's global generator"),
            "python": ("random.seed", "Python's random module")}


@contextmanager
def _seeded(torch_seed: int, numpy_seed: int, python_seed: int) -> Iterator[None]:
    """Run with torch's, numpy's and Python's global generators seeded, restoring the caller's state afterwards."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with _global_seed(torch_seed):
            np.random.seed(numpy_seed)
            random.seed(python_seed)
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _irreproducible(run: Callable[[], Any], same: Callable[[Any, Any], bool], what: str,
                    given: str = "the same generator seed", allowed: tuple[str, ...] = ()) -> str | None:
    """Why ``run()`` is not reproducible (a sentence about ``what`` it gives), or None when it is: each cause is
    named only after it was tested.

    ``run()`` is called twice with every global generator seeded alike (differences: state kept between
    calls or a source no seed reaches), then once with each global generator but those ``allowed`` seeded
    differently (differences: a draw from that generator).
    """
    with _seeded(0, 0, 0):
        first = run()
    with _seeded(0, 0, 0):
        again = run()
    if not same(first, again):
        return (f"{given} gave different {what} in two calls with every global generator (torch, numpy, Python) "
                "seeded alike: it keeps state between calls (e.g. in self) or draws from a source no seed reaches "
                "(the clock, os.urandom, a generator of its own)")
    for source, seeds in (("torch", (1, 0, 0)), ("numpy", (0, 1, 0)), ("python", (0, 0, 1))):
        if source in allowed:
            continue
        with _seeded(*seeds):
            other = run()
        if not same(first, other):
            call, name = _SOURCES[source]
            return f"{given} gave different {what} after {call} changed: it draws from {name}"
    return None


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every parameter moved by 10 % of its mean magnitude (0.1 where it is zero), so
    that a zero-initialised layer cannot hide what the layers before it do."""
    probe = copy.deepcopy(model)
    g = _generator(seed, "cpu")
    with torch.no_grad():
        for p in probe.parameters():
            scale = float(p.abs().mean()) if p.numel() else 0.0
            p.add_(0.1 * (scale or 1.0) * torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    return probe


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
