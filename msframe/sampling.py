"""Per-level batches, owned by the engine (never by dataset state that workers would copy).

The loader is map-style: its index is a draw key ``(stage, iteration)`` and its item is the list of
clean batches of that iteration, one per estimator term. Each term's batch is drawn from its own
generator ``("crop", stage, iteration, term)``, so terms are independent of each other, while the
fine and coarse evaluations of one correction share that one batch (and, in the engine, one
degradation draw). Because the item depends only on the key, any number of workers gives the same
batches, and a resumed run continues with exactly the batches an uninterrupted one would see.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from msframe import rng
from msframe.components import ImageSplit
from msframe.plan import Plan


class IterationBatches(TorchDataset):
    """``(stage, iteration)`` -> that key and one clean finest-mesh batch per term of the stage."""

    def __init__(self, split: ImageSplit, plan: Plan, seed: int):
        self.split, self.plan, self.seed = split, plan, seed

    def __len__(self) -> int:
        return self.plan.iterations

    def __getitem__(self, key: tuple[int, int]) -> tuple[tuple[int, int], list[torch.Tensor]]:
        stage, iteration = key
        return key, [
            self.split.crops(t.batch, self.plan.resolution, rng.generator(self.seed, "crop", stage, iteration, t.index))
            for t in self.plan.stages[stage].terms
        ]


class PlanSampler(Sampler):
    """Yields the draw keys of the plan in training order, starting at ``(stage, iteration)``."""

    def __init__(self, plan: Plan, start: tuple[int, int] = (0, 0)):
        self.plan, self.start = plan, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for s in self.plan.stages[self.start[0]:]:
            first = self.start[1] if s.index == self.start[0] else 0
            for i in range(first, s.iterations):
                yield (s.index, i)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def loader(split: ImageSplit, plan: Plan, seed: int, start: tuple[int, int], workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over the plan's draw keys from ``start`` on; ``batch_size=None`` keeps items whole."""
    return DataLoader(
        IterationBatches(split, plan, seed),
        sampler=PlanSampler(plan, start),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
