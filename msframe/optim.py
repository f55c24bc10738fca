"""The optimizer factory and the learning-rate policy, a pure function of (plan, stage, iteration).

The learning rate lives in a device tensor that :func:`set_lr` writes in place, so the optimizer reads
no Python float (and a captured step could keep it); on CUDA AdamW runs fused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from msframe.plan import Plan
from msframe.sections import OptimSection


def adamw(parameters: Iterable[nn.Parameter], lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with its learning rate in a tensor on ``device`` (fused on CUDA); :func:`set_lr` changes it.

    With a tensor learning rate the update is the same as with the float one (``tests/test_step_program.py``).
    """
    fused = {"fused": True} if device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(parameters, lr=torch.tensor(lr, dtype=torch.float32, device=device),
                             weight_decay=weight_decay, **fused)


def optimizer(model: nn.Module, optim: OptimSection, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimizer for ``model`` (a fresh one at the run's start, and per stage when
    ``optim.reset_state_per_stage``)."""
    return adamw(model.parameters(), optim.lr, optim.weight_decay, device)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, device: torch.device) -> None:
    """Write ``lr`` into every group's learning-rate tensor in place (a float or a tensor elsewhere, as a
    state dict loaded from an older checkpoint may leave, is replaced by a tensor on ``device``)."""
    for group in optimizer.param_groups:
        current = group["lr"]
        if isinstance(current, Tensor) and current.device == device and current.dtype == torch.float32:
            current.fill_(lr)
        else:
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=device)


def learning_rate(optim: OptimSection, plan: Plan, stage: int, iteration: int, scale: float = 1.0) -> float:
    """The learning rate of iteration ``iteration`` of ``stage`` under ``optim.lr_policy``, times the
    warm-up ramp and ``scale`` (what divergence rewinds have left, :class:`msframe.guard.Guard`).

    Policies, with f the fraction done: ``constant``: lr; ``cosine``: one cosine over the whole run
    (f over all iterations); ``cosine_per_stage``: a cosine restarted in every stage (f within the
    stage); ``constant_final_decay``: lr until the final stage, then a cosine over it. A cosine goes
    lr·(m + (1 − m)·½(1 + cos πf)) with m = ``min_lr_ratio``. The ramp min(1, (k + 1) / warmup) over
    the run's first ``optim.warmup`` iterations (k counts from the run's start) keeps Adam's first,
    full-size steps from throwing the zero-initialised output layer far from the baseline.
    """
    done = sum(s.iterations for s in plan.stages[:stage]) + iteration
    ramp = (min(1.0, (done + 1) / optim.warmup) if optim.warmup else 1.0) * scale
    final = stage == len(plan.stages) - 1
    if optim.lr_policy == "constant" or (optim.lr_policy == "constant_final_decay" and not final):
        return optim.lr * ramp
    if optim.lr_policy == "cosine":
        frac = done / max(1, plan.iterations - 1)
    else:  # cosine_per_stage, or the final stage of constant_final_decay
        frac = iteration / max(1, plan.stages[stage].iterations - 1)
    return ramp * optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
