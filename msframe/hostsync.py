"""A training step that never makes the host wait for the device, checked on any machine.

A CUDA graph replays a step's kernels without the host, so a captured step may not read a device
value on the host, may not launch an operator whose output shape depends on tensor values (its
size must be read back first), and may not copy between host and device memory. The same
operators cost an ordinary eager step a host sync each. :class:`NoHostSync` is a dispatch mode that
refuses them as they are dispatched, so the check runs on the CPU, where every operator still
passes through the dispatcher, and names what was running (see :func:`running`) and the operator.

What it refuses (:func:`why`), and why each one syncs:

- a host read of a value: ``aten._local_scalar_dense`` (``.item()``, ``float()``, ``int()``,
  ``bool()`` and ``if`` on a tensor, ``torch.allclose``) and ``aten.equal`` (a Python bool);
- an output shape read from the values, the operators PyTorch tags ``dynamic_output_shape``
  (``nonzero``, ``masked_select``, the ``unique`` family, ``bincount``, boolean-mask indexing
  ``x[mask]``), less the cases their arguments make static (integer indexing, ``repeat_interleave``
  with an ``output_size``), plus ``index_put`` with a boolean
  mask (``x[mask] = v``), which finds the mask's indices before writing;
- a copy between host and device memory (``.to(device)``, ``.cpu()``, ``copy_``), in either
  direction. No such copy can happen in a step on the CPU; copies to the ``meta`` device stand in
  for it in the tests.

Not seen, so not checked: operators a kernel calls internally (the mode sees what Python and
autograd dispatch), the copy inside ``torch.tensor(numbers, device=...)``, and host-side Python.

:func:`check_step` runs a whole :class:`~msframe.step.StepProgram` step under the mode, naming the
component that was running; ``tests/test_hostsync.py`` does so for every built-in backbone and
estimator, and :func:`msframe.testing.check_no_host_sync` for a plugin's task, backbone or resampler.
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from msframe.recipe import Recipe
from msframe.step import StepProgram

aten = torch.ops.aten


class HostSync(RuntimeError):
    """An operator that makes the host wait for the device, dispatched under :class:`NoHostSync`;
    the message names what was running and the operator."""


#: what is running now, innermost last (see :func:`running`)
_RUNNING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("msframe_hostsync_running", default=())

_READS = {aten._local_scalar_dense: "reads a tensor's value on the host (.item(), float(), int(), bool() or `if` "
                                    "of a tensor; keep it a tensor)",
          aten.equal: "returns a Python bool computed from tensor values (torch.equal)",
          aten.allclose: "returns a Python bool computed from tensor values (torch.allclose)"}
#: what ``torch.tensor(python numbers)`` dispatches
_FROM_PYTHON = {aten.lift_fresh, aten.lift_fresh_copy}
_COPIES = {aten._to_copy, aten.copy_, aten._copy_from, aten._copy_from_and_resize}
_BOOLS = (torch.bool, torch.uint8)  # the index dtypes PyTorch reads as masks
#: the indexing operators, whose indices may be a mask (``x[mask]``, ``x[mask] = v``)
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


def crosses_host(source: torch.device, destination: torch.device) -> bool:
    """Whether a copy from ``source`` to ``destination`` moves data between host memory and a device."""
    return (source.type == "cpu") != (destination.type == "cpu")


def _has_mask(indices) -> bool:
    return any(isinstance(i, Tensor) and i.dtype in _BOOLS for i in indices or ())


def _static_shape(func, args, kwargs) -> bool:
    """Whether a call of an operator tagged ``dynamic_output_shape`` has its shape fixed by its arguments."""
    packet = func.overloadpacket
    if packet is aten.repeat_interleave:
        return kwargs.get("output_size") is not None
    return packet in _INDEXING  # whether indices are a mask is asked apart


def _copy_devices(func, args, kwargs) -> tuple[torch.device, torch.device] | None:
    """(source, destination) devices of a copy operator, or None for any other operator."""
    packet = func.overloadpacket
    if packet not in _COPIES:
        return None
    if packet is aten._to_copy:
        source = args[0].device
        return source, torch.device(kwargs.get("device") or source)
    if packet is aten.copy_:
        return args[1].device, args[0].device
    return args[0].device, args[1].device  # _copy_from(self, dst), _copy_from_and_resize(self, dst)


def why(func, args: tuple, kwargs: dict) -> str | None:
    """Why dispatching ``func(*args, **kwargs)`` makes the host wait for the device, or None if it does not."""
    packet = func.overloadpacket
    if packet in _READS:
        return _READS[packet]
    if packet in _INDEXING and _has_mask(args[1]):
        return ("indexes with a boolean mask (x[mask]): the host reads how many elements it selects "
                "(torch.where or masked_fill keep the shape)")
    if torch.Tag.dynamic_output_shape in func.tags and not _static_shape(func, args, kwargs):
        return "has an output shape that depends on tensor values, which the host must read first"
    devices = _copy_devices(func, args, kwargs)
    if devices is not None and crosses_host(*devices):
        return f"copies between host and device memory ({devices[0]} → {devices[1]})"
    return None


@contextmanager
def running(label: str) -> Iterator[None]:
    """Say that ``label`` (e.g. "task 'denoise' degrade") runs until the block ends; a :class:`HostSync`
    raised meanwhile names the innermost label."""
    token = _RUNNING.set((*_RUNNING.get(), label))
    try:
        yield
    finally:
        _RUNNING.reset(token)


def _where() -> str:
    # Autograd runs backward outside any label (and on CUDA in its own thread): name its node instead.
    node = torch._C._current_autograd_node()
    if node is not None:
        return f"backward of {node.name()}"
    labels = _RUNNING.get()
    return labels[-1] if labels else "(unlabelled code)"


class NoHostSync(TorchDispatchMode):
    """A dispatch mode that raises :class:`HostSync` for every operator :func:`why` names, with what was
    running (:func:`running`) and the operator; everything else runs unchanged.

    Host values are exempt from the value reads: tensors the host made from Python numbers
    (``torch.tensor(...)`` on the CPU, as a library makes to check its arguments) and what is computed
    from such tensors alone. Reading one back waits for no device, and on a CUDA machine they are the
    host tensors they are here; on the CPU, where every tensor is a host tensor, this lineage is what
    tells them from the step's data. :meth:`allowing` lets a block through unchecked.
    """

    def __init__(self):
        super().__init__()
        self._allowed = 0
        self._host = WeakIdKeyDictionary()  # host values (see above) -> None

    @contextmanager
    def allowing(self) -> Iterator[None]:
        """Dispatch the block's operators unchecked (for code known to read host tensors only)."""
        self._allowed += 1
        try:
            yield
        finally:
            self._allowed -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        host = bool(inputs) and all(t in self._host for t in inputs)
        if not self._allowed and not (host and func.overloadpacket in _READS):
            reason = why(func, args, kwargs)
            if reason is not None:
                raise HostSync(f"host sync in {_where()}: {func} {reason}")
        out = func(*args, **kwargs)
        for t in pytree.tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            if t.device.type == "cpu" and (host or func.overloadpacket in _FROM_PYTHON):
                self._host[t] = None
            else:  # also an in-place result that device data flowed into
                self._host.pop(t, None)
        return out


def _named(fn, label: str):
    """``fn`` running under :func:`running` with ``label``."""

    def call(*args, **kwargs):
        with running(label):
            return fn(*args, **kwargs)

    return call


def _labelled(component: Any, label: str, methods: tuple[str, ...], **replaced) -> Any:
    """A shallow copy of ``component`` (same class, same state) whose ``methods`` run under
    :func:`running` as "LABEL METHOD"; ``replaced`` gives some of them another body first."""
    twin = copy.copy(component)
    for name in methods:
        # object.__setattr__: the process group (World) is a frozen dataclass
        object.__setattr__(twin, name, _named(replaced.get(name, getattr(component, name)), f"{label} {name}"))
    return twin


def check_step(program: StepProgram, recipe: Recipe, iteration: int, cleans: list[Tensor],
               lr: float) -> tuple[Tensor, list[dict]]:
    """Run ``program.run(iteration, cleans, lr)`` under :class:`NoHostSync`, each component named by its
    ``recipe`` section ("task 'denoise' degrade", "backbone 'unet' forward", "resampler 'area' restrict")
    or its part ("processes average_gradients", "optimizer step"); returns what the step returns, or raises :class:`HostSync`.

    The whole step is checked: zeroing the gradients, setting the learning rate, the degradations
    and restrictions, every network pass, the loss, the backward pass, the gradient averaging and
    the optimizer step, except that an optimizer which keeps its step count on the host (neither
    fused nor capturable: AdamW on the CPU) steps unchecked. ``cleans`` should already be on the
    program's device, as resident training images are: otherwise their copy there, which the
    program makes, is refused.
    """
    mode = NoHostSync()
    optimizer = program.optimizer
    # Neither fused nor capturable, AdamW keeps its step count in a host tensor and reads it with
    # .item(): a read of host memory, never a wait for the device. Fused and capturable need CUDA
    # (where the engine's AdamW is fused), so on the CPU the optimizer's step is let through.
    on_host = not (optimizer.defaults.get("fused") or optimizer.defaults.get("capturable"))

    def step(*args, **kwargs):
        with mode.allowing() if on_host else nullcontext():
            return optimizer.step(*args, **kwargs)

    twin = copy.copy(program)
    twin.task = _labelled(program.task, f"task '{recipe.task.name}'", ("degrade", "restrict", "restored", "loss"))
    twin.resampler = _labelled(program.resampler, f"resampler '{recipe.resampler.name}'", ("restrict",))
    twin.forward = _named(program.forward, f"backbone '{recipe.backbone.name}' forward")
    twin.world = _labelled(program.world, "processes", ("average_gradients",))
    twin.optimizer = _labelled(optimizer, "optimizer", ("zero_grad", "step"), step=step)
    with mode, running("the step"):
        return twin.run(iteration, cleans, lr)
