"""Multi-process training (``torchrun``): each rank takes an equal share of every level's batch.

Launched as ``torchrun --nproc_per_node=N tools/run.py RECIPE.toml``. Every rank draws its own share of
each term's samples from generators keyed by its rank (so the shares are independent draws and the
union is a batch of the planned size), computes the telescoping loss on it, and one all-reduce per
iteration averages the gradients, so every rank takes the same optimizer step. Rank 0 alone writes
the run folder, logs, evaluates and checkpoints. CUDA ranks use NCCL on ``cuda:LOCAL_RANK``; CPU ranks
use Gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from msframe.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: list[float], device: torch.device) -> list[float]:
        """The element-wise mean of ``values`` over the ranks."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return (t / self.size).tolist()

    def average_gradients(self, model: nn.Module) -> None:
        """One all-reduce of all gradients (flattened into one buffer), divided by the world size."""
        if self.size == 1:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def check_in_step(self, model: nn.Module, device: torch.device) -> None:
        """Raise if the ranks' weights have drifted apart (they must take identical steps)."""
        if self.size == 1:
            return
        with torch.no_grad():
            total = sum(p.double().sum() for p in model.parameters()).to(device).reshape(1)
        low, high = total.clone(), total.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if float(high - low) > 1e-6 * max(1.0, abs(float(high))):
            raise RuntimeError(f"the {self.size} processes hold different weights (checksums {float(low)} to "
                               f"{float(high)}): a rank took a different step")


def check_shares(plan, world: World) -> None:
    """Every level's batch must split equally over the processes (a UserError otherwise)."""
    uneven = sorted({t.batch for st in plan.stages for t in st.terms if t.batch % world.size})
    if uneven:
        raise UserError(f"batches {uneven} cannot be shared equally by {world.size} processes; make every level's "
                        f"batch a multiple of {world.size}", key="schedule.batch")


def init() -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return World(rank, size, local_rank)


def leave_together(world: World) -> None:
    """Wait until every process has finished its run (one barrier), so that none tears its process group
    down while another still evaluates and writes: a rank that did so first could abort in the Gloo
    transport's teardown ("terminate called without an active exception")."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
