"""The hot path: one training step of a block of fixed shapes, apart from the loop's bookkeeping.

A :class:`StepProgram` is built once per block (a stage, or the span between re-allocations, where
every term's resolution and batch are fixed) and run once per iteration:

    zero gradients → degrade and restrict each term's batch → the telescoping loss (one network pass
    per mesh where the backbone allows it) → one backward → average gradients across processes →
    one AdamW step at the iteration's learning rate

The learning rate lives in a device tensor that the step writes in place (:mod:`msframe.optim`), so
the optimizer reads no Python float. The cost ledger, metric flushes, evaluation and checkpoints are
the Trainer's rooms, around this.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msframe import rng
from msframe.components import Resampler, Task
from msframe.distributed import World
from msframe.optim import set_lr
from msframe.plan import TermPlan
from msframe.telescoping import multiscale_loss


class StepProgram:
    """One block's training step: ``run(iteration, cleans, lr)`` → ``(loss, per-term statistics)``.

    The degradation generator of term t in iteration i is derived from (seed, "degrade", stage, i, t
    [, rank]): the same draw for the fine and the coarse half of a correction, independent ones for
    different terms (docs/architecture.md, invariant 2). Returned tensors are detached and stay on the device.
    """

    def __init__(self, *, model: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer, task: Task,
                 resampler: Resampler, stage: int, terms: tuple[TermPlan, ...], merge: bool, seed: int,
                 world: World, device: torch.device):
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.task, self.resampler, self.stage, self.terms, self.merge = task, resampler, stage, terms, merge
        self.seed, self.world, self.device = seed, world, device
        self.shard = (world.rank,) if world.size > 1 else ()

    def run(self, iteration: int, cleans: list[Tensor], lr: float) -> tuple[Tensor, list[dict]]:
        self.model.train()
        set_lr(self.optimizer, lr, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        cleans = [c.to(self.device, non_blocking=True) for c in cleans]
        gens = [rng.generator(self.seed, "degrade", self.stage, iteration, t.index, *self.shard, device=self.device)
                for t in self.terms]
        total, stats = multiscale_loss(self.forward, self.task, self.resampler, self.terms, cleans, gens, self.merge)
        total.backward()  # one backward pass through the whole telescoping sum
        self.world.average_gradients(self.model)  # one all-reduce across processes (none alone)
        self.optimizer.step()
        return total.detach(), stats
