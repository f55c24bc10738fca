"""Cost accounting: FLOPs per term (counted once per shape, on the meta device) and step clocks.

Work units come from the plan (``msframe.plan``); this module adds the measured sides of cost.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class FlopCounter:
    """FLOPs of one forward+backward pass of ``model`` per input shape, cached.

    Counting runs on a copy of the model on the meta device: no arithmetic, no effect on the
    model's weights, gradients or the random streams of the run.
    """

    def __init__(self, model: nn.Module, in_channels: int, cond_channels: int, scale: int):
        self.meta = copy.deepcopy(model).to("meta")
        self.in_channels, self.cond_channels, self.scale = in_channels, cond_channels, scale
        self._cache: dict[tuple[int, int], int] = {}

    def __call__(self, resolution: int, batch: int) -> int:
        """FLOPs of a training pass on ``batch`` samples whose target side is ``resolution``."""
        key = (resolution, batch)
        if key not in self._cache:
            side = resolution // self.scale
            x = torch.zeros(batch, self.in_channels, side, side, device="meta")
            cond = torch.zeros(batch, self.cond_channels, device="meta") if self.cond_channels else None
            counter = FlopCounterMode(display=False)
            with counter:
                self.meta(x, cond).sum().backward()
            self.meta.zero_grad(set_to_none=True)
            self._cache[key] = int(counter.get_total_flops())
        return self._cache[key]


class StepClock:
    """Wall time of training steps without a host sync per step.

    On CUDA each step is bracketed by events whose elapsed time is read only at ``collect`` (after
    the caller's sync); on CPU the monotonic clock is read directly.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def stop(self, started):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return (started, ev)
        return time.perf_counter() - started

    def collect(self, marks: Iterable) -> list[float]:
        """Seconds of each stopped step; on CUDA, call after the device has finished them."""
        if self.cuda:
            return [a.elapsed_time(b) / 1000.0 for a, b in marks]
        return list(marks)
