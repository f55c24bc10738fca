"""The multiscale loss of one iteration: the telescoping sum of method.md, assembled from planned terms.

    loss = Σ_{corrections} [mean_{S_t} ℓ_fine − mean_{S_t} ℓ_coarse] + Σ_{plain} mean_{S_t} ℓ

Each term t has its own independent batch S_t; inside a correction the fine and coarse evaluations
see the same samples with the same degradation draw. One backward pass of the sum gives the MGE
gradient, an unbiased estimate of the gradient at the stage's finest mesh.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msframe.components import Degraded, Resampler, Task
from msframe.plan import TermPlan


def term_batches(task: Task, resampler: Resampler, clean: Tensor, generator: torch.Generator,
                 fine_mesh: int, coarse_mesh: int | None) -> tuple[Degraded, Degraded | None]:
    """Degrade once on the finest mesh, then restrict the same samples to the term's two meshes.

    ``clean`` is on the finest mesh of the run (mesh 0). Returns ``(fine, coarse)``; ``coarse`` is
    None for a plain term.
    """
    batch = task.degrade(clean, generator)
    for _ in range(fine_mesh):
        batch = task.restrict(batch, resampler)
    if coarse_mesh is None:
        return batch, None
    coarse = batch
    for _ in range(coarse_mesh - fine_mesh):
        coarse = task.restrict(coarse, resampler)
    return batch, coarse


def multiscale_loss(model: nn.Module, task: Task, resampler: Resampler, terms: tuple[TermPlan, ...],
                    cleans: list[Tensor], generators: list[torch.Generator]) -> tuple[Tensor, list[dict]]:
    """The iteration's loss (a 0-d tensor to call backward on) and, per term, detached statistics.

    Statistics are tensors (no host sync here): ``fine_loss``, ``coarse_loss``, ``value`` (the
    term's contribution), and the variance over the batch of the term's per-sample value:
    ``correction_var`` (of ℓ_fine − ℓ_coarse) for a correction, ``loss_var`` (of ℓ) for a plain term.
    """
    total: Tensor | float = 0.0
    stats = []
    for term, clean, g in zip(terms, cleans, generators):
        fine, coarse = term_batches(task, resampler, clean, g, term.fine_mesh, term.coarse_mesh)
        fine_losses = task.loss(task.restored(model(fine.input, fine.cond), fine), fine)
        value = fine_losses.mean()
        record: dict = {"term": term.index, "resolution": term.fine_resolution, "batch": term.batch, "work": term.work}
        if coarse is not None:
            coarse_losses = task.loss(task.restored(model(coarse.input, coarse.cond), coarse), coarse)
            value = value - coarse_losses.mean()
            diff = (fine_losses - coarse_losses).detach()
            record.update(
                coarse_resolution=term.coarse_resolution,
                coarse_loss=coarse_losses.detach().mean(),
                correction_var=diff.var() if diff.numel() > 1 else diff.new_zeros(()),
            )
        else:
            losses = fine_losses.detach()
            record["loss_var"] = losses.var() if losses.numel() > 1 else losses.new_zeros(())
        record.update(fine_loss=fine_losses.detach().mean(), value=value.detach())
        total = total + value
        stats.append(record)
    return total, stats
