"""Per-level batches, owned by the engine (never by dataset state that workers would copy).

The loader is map-style: its index is a draw key ``(stage, iteration)`` and its item is the list of
clean batches of that iteration, one per estimator term. Each term's batch is drawn from its own
generator ``("crop", stage, iteration, term)``, so terms are independent of each other, while the
fine and coarse evaluations of one correction share that one batch (and, in the engine, one
degradation draw). Because an item depends only on its key and the block's batch sizes, any number
of workers gives the same batches, and a resumed run continues with exactly the batches an
uninterrupted one would see.

A loader serves one block of iterations with fixed batch sizes (a stage, or the span between two
re-allocations of an adaptive estimator), so worker processes never need to learn of a change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from msframe import rng
from msframe.components import ImageSplit


class IterationBatches(TorchDataset):
    """``(stage, iteration)`` -> that key and one clean finest-mesh batch per term (sizes ``batches``)."""

    def __init__(self, split: ImageSplit, resolution: int, batches: Sequence[int], seed: int, rank: int | None = None):
        self.split, self.resolution, self.batches, self.seed = split, resolution, list(batches), seed
        self.shard = () if rank is None else (rank,)  # a rank of a multi-process run draws its own share

    def __getitem__(self, key: tuple[int, int]) -> tuple[tuple[int, int], list[torch.Tensor]]:
        stage, iteration = key
        return key, [
            self.split.crops(n, self.resolution, rng.generator(self.seed, "crop", stage, iteration, term, *self.shard))
            for term, n in enumerate(self.batches)
        ]


def keep_resident(setting: bool | str, workers: int, device: torch.device, nbytes: int | None,
                  free_bytes: int | None) -> bool:
    """Whether the training images live on ``device`` (``loader.resident``): ``true``/``false`` as set;
    ``"auto"``: only on CUDA, with ``workers = 0``, for a split of known size that takes at most a
    quarter of the free device memory (the rest is the training step's)."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda" and workers == 0 and nbytes is not None and free_bytes is not None \
        and nbytes <= free_bytes // 4


def loader(split: ImageSplit, resolution: int, batches: Sequence[int], keys: Sequence[tuple[int, int]], seed: int,
           workers: int, pin_memory: bool, rank: int | None = None) -> DataLoader:
    """A DataLoader over ``keys`` in order; ``batch_size=None`` keeps each iteration's item whole."""
    return DataLoader(
        IterationBatches(split, resolution, batches, seed, rank),
        sampler=list(keys),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )
