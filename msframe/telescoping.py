"""The multiscale loss of one iteration: the telescoping sum of docs/method.md, assembled from planned terms.

    loss = Σ_{corrections} [mean_{S_t} ℓ_fine − mean_{S_t} ℓ_coarse] + Σ_{plain} mean_{S_t} ℓ

Each term t has its own independent batch S_t; inside a correction the fine and coarse evaluations
see the same samples with the same degradation draw. One backward pass of the sum gives the MGE
gradient, an unbiased estimate of the gradient at the stage's finest mesh.

A stage with L meshes has 2L − 1 evaluations, but the coarse half of one correction, the fine half
of the next and the plain term share a mesh. With ``merge=True`` every mesh is evaluated in ONE
network pass over the concatenated batch (L passes), and the outputs are split back per term: the
loss, the statistics and the gradient are those of the separate passes, provided the network's
output for a sample does not depend on its batch mates (``Capabilities.batch_independent``).
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


def sample_losses(task: Task, output: Tensor, batch: Degraded) -> Tensor:
    """Per-sample loss ``[N]`` of the network's output for ``batch`` (the one place output meets target):
    the output is a correction to the task's baseline (``Task.restored``)."""
    return task.loss(task.restored(output, batch), batch)


def _evaluate(model: nn.Module, batches: list[Degraded], merge: bool) -> list[Tensor]:
    """``model(b.input, b.cond)`` for every batch; with ``merge``, one pass per group of batches whose
    inputs share a shape (one mesh) and whose conditioning is alike, split back in order."""
    if not merge:
        return [model(b.input, b.cond) for b in batches]
    groups: dict[tuple, list[int]] = {}
    for i, b in enumerate(batches):
        groups.setdefault((tuple(b.input.shape[1:]), b.cond is None), []).append(i)
    outputs: list[Tensor | None] = [None] * len(batches)
    for members in groups.values():
        if len(members) == 1:
            outputs[members[0]] = model(batches[members[0]].input, batches[members[0]].cond)
            continue
        x = torch.cat([batches[i].input for i in members])
        cond = None if batches[members[0]].cond is None else torch.cat([batches[i].cond for i in members])
        parts = model(x, cond).split([batches[i].input.shape[0] for i in members])
        for i, part in zip(members, parts):
            outputs[i] = part
    return outputs


def multiscale_loss(model: nn.Module, task: Task, resampler: Resampler, terms: tuple[TermPlan, ...],
                    cleans: list[Tensor], generators: list[torch.Generator],
                    merge: bool = False) -> tuple[Tensor, list[dict]]:
    """The iteration's loss (a 0-d tensor to call backward on) and, per term, detached statistics.

    Statistics are tensors (no host sync here): ``fine_loss``, ``coarse_loss``, ``value`` (the
    term's contribution), and the variance over the batch of the term's per-sample value:
    ``correction_var`` (of ℓ_fine − ℓ_coarse) for a correction, ``loss_var`` (of ℓ) for a plain term.
    ``merge`` runs one network pass per mesh (see the module docstring); the results are the same.
    """
    halves = [term_batches(task, resampler, clean, g, term.fine_mesh, term.coarse_mesh)
              for term, clean, g in zip(terms, cleans, generators)]
    batches = [b for pair in halves for b in pair if b is not None]
    losses = iter([sample_losses(task, out, b) for out, b in zip(_evaluate(model, batches, merge), batches)])
    total: Tensor | float = 0.0
    stats = []
    for term, (_, coarse) in zip(terms, halves):
        fine_losses = next(losses)
        value = fine_losses.mean()
        record: dict = {"term": term.index, "resolution": term.fine_resolution, "batch": term.batch, "work": term.work}
        if coarse is not None:
            coarse_losses = next(losses)
            value = value - coarse_losses.mean()
            diff = (fine_losses - coarse_losses).detach()
            record.update(
                coarse_resolution=term.coarse_resolution,
                coarse_loss=coarse_losses.detach().mean(),
                correction_var=diff.var() if diff.numel() > 1 else diff.new_zeros(()),
            )
        else:
            plain = fine_losses.detach()
            record["loss_var"] = plain.var() if plain.numel() > 1 else plain.new_zeros(())
        record.update(fine_loss=fine_losses.detach().mean(), value=value.detach())
        total = total + value
        stats.append(record)
    return total, stats
