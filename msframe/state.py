"""The train state: where a run stands, in rooms that each own their part, and its checkpoints.

A checkpoint holds the network, the optimizer, the train state, the global random streams, the
resolved recipe and the msframe version. The train state is saved flat under ``"progress"`` (one key
per field of every room), so a resumed run continues exactly where the saved one was.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from msframe import __version__, checkpoint
from msframe.assembly import Assembly
from msframe.errors import UserError
from msframe.guard import Guard
from msframe.ledger import Ledger
from msframe.plan import Plan, TermPlan, rebatch
from msframe.records import EvalResult, SplitNames, Summary


@dataclass
class Position:
    """Where the loop stands."""

    stage: int = 0
    iteration: int = 0  # next iteration to run inside ``stage``
    step: int = 0  # iterations completed over the whole run


@dataclass
class Allocation:
    """An adaptive estimator's state: the batches it chose per stage, and the variances of the current block."""

    allocations: dict[str, list[int]] = field(default_factory=dict)  # stage -> batches chosen
    block_variance: list[float] = field(default_factory=list)  # per term, summed over the current block
    block_iterations: int = 0

    def terms(self, plan: Plan, stage: int) -> tuple[TermPlan, ...]:
        """The stage's terms with the batch sizes now in force (the plan's, or the estimator's latest)."""
        planned = plan.stages[stage].terms
        chosen = self.allocations.get(str(stage))
        if chosen is None:
            return planned
        return tuple(rebatch(t, n) for t, n in zip(planned, chosen))

    def add(self, levels: list[dict]) -> None:
        """Add one iteration's per-term variance (of the correction, or of a plain term's loss)."""
        if len(self.block_variance) != len(levels):
            self.block_variance = [0.0] * len(levels)
        self.block_iterations += 1
        for t, lv in enumerate(levels):
            self.block_variance[t] += lv.get("correction_var", lv.get("loss_var", 0.0))

    def block_means(self, terms: int) -> list[float]:
        """Per term, the mean variance over the block (zeros for a block that saw no iteration)."""
        return [v / max(1, self.block_iterations) for v in self.block_variance] or [0.0] * terms

    def new_block(self) -> None:
        self.block_variance, self.block_iterations = [], 0


@dataclass
class Cadence:
    """When the next validation and checkpoint are due (in work units), and the best validation so far."""

    next_eval: float = math.inf
    next_checkpoint: float = math.inf
    best_val_psnr: float = -math.inf

    def open(self, eval_every: float, checkpoint_every: float) -> None:
        self.next_eval = eval_every or math.inf
        self.next_checkpoint = checkpoint_every or math.inf

    @staticmethod
    def advance(due: float, every: float, work: float) -> float:
        """The next due point after ``work``, in steps of ``every``; a step far smaller than the work (say
        ``checkpoint.every = 1e-9``) jumps most of the way at once instead of looping a billion times."""
        if due > work:  # not due yet (an unset cadence is due at infinity)
            return due
        if (work - due) / every > 1000:
            due += math.floor((work - due) / every - 1) * every
        if due + every == due:  # too small to move ``due`` at all in floating point: due at every step
            return math.nextafter(work, math.inf)
        while due <= work:
            due += every
        return due


@dataclass
class TrainState:
    """Everything that changes while a run trains, apart from the weights and the optimizer."""

    position: Position = field(default_factory=Position)
    ledger: Ledger = field(default_factory=Ledger)
    allocation: Allocation = field(default_factory=Allocation)
    guard: Guard = field(default_factory=Guard)
    cadence: Cadence = field(default_factory=Cadence)

    @property
    def started(self) -> bool:
        return bool(self.ledger.stages)

    def to_dict(self) -> dict:
        """One flat dict of every room's fields (the checkpoint's ``"progress"``)."""
        out: dict = {}
        for room in fields(self):
            out.update(asdict(getattr(self, room.name)))
        return out

    @classmethod
    def from_dict(cls, flat: dict) -> TrainState:
        """The state :meth:`to_dict` wrote; an unknown or missing field is a TypeError."""
        flat = dict(flat)
        rooms = {}
        for room in fields(cls):
            kind = room.default_factory
            rooms[room.name] = kind(**{f.name: flat.pop(f.name) for f in fields(kind) if f.name in flat})
        if flat:
            raise TypeError(f"unexpected fields {sorted(flat)}")
        return cls(**rooms)


def capture(state: TrainState, model: nn.Module, optimizer: torch.optim.Optimizer, recipe: dict,
            device: torch.device) -> dict:
    """What a checkpoint holds (see the module docstring)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": state.to_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "recipe": recipe,
        "msframe": __version__,
    }


def restore(path: Path | dict, model: nn.Module, optimizer: torch.optim.Optimizer, plan: Plan,
            device: torch.device) -> TrainState:
    """Load a checkpoint written from :func:`capture` (a file, or the dict itself) into ``model`` and
    ``optimizer``, set the global random streams, and return its train state; one that does not fit the
    run is a UserError."""
    if isinstance(path, dict):
        saved = copy.deepcopy(path)  # the caller's copy stays as it is, to be restored again
        model.load_state_dict(saved["model"])
    else:
        saved = checkpoint.load_model(path, model, device)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState.from_dict(saved["progress"])
        if len(state.ledger.stages) not in (0, len(plan.stages)):
            raise ValueError(f"{len(state.ledger.stages)} stages in the checkpoint, {len(plan.stages)} in the recipe")
        rng_state = saved["torch_rng"].cpu()
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"does not match recipe.resolved.toml of its run folder (was the recipe edited?): {first}",
                        file=str(path)) from None
    torch.set_rng_state(rng_state)
    if saved.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda_rng"]])
    return state


class HeldCheckpoint:
    """A checkpoint taken at a step and written only once the next step's loss has passed the divergence
    guard: a checkpoint on disk never holds weights that a divergence check has not judged."""

    def __init__(self) -> None:
        self._held: tuple[dict, list[Path]] | None = None

    def hold(self, saved: dict, paths: list[Path]) -> None:
        """Keep ``saved`` for ``paths`` (with the paths of one still held: taken at this same step)."""
        earlier = self._held[1] if self._held else []
        self._held = (saved, list(dict.fromkeys([*earlier, *paths])))

    def write(self) -> None:
        """Write the held checkpoint to each of its paths (atomically), now that it has been judged good."""
        if self._held is not None:
            saved, paths = self._held
            self._held = None
            for path in paths:
                checkpoint.save(path, saved)

    def drop(self) -> None:
        """Forget the held checkpoint: the next step diverged, so its weights are not kept."""
        self._held = None


def summary(assembly: Assembly, state: TrainState, test: EvalResult) -> Summary:
    """What summary.json holds at a run's end: quality, cost per stage and mesh, data, versions."""
    ledger, plan, recipe = state.ledger, assembly.plan, assembly.recipe
    return Summary(
        name=recipe.run.name, recipe=recipe.source, device=str(assembly.device), test=test,
        val_best_psnr=state.cadence.best_val_psnr, work_units=ledger.work, baseline_work_units=plan.baseline_work,
        work_ratio=plan.baseline_work / ledger.work if ledger.work else None,
        flops=ledger.flops, seconds=ledger.seconds, eval_seconds=ledger.eval_seconds,
        iterations=state.position.step, stages=ledger.stages, meshes=ledger.meshes,
        # names in full for small splits; large datasets record the count and the first names
        splits={name: SplitNames(images=len(split.names), names=list(split.names[:100]))
                for name, split in assembly.splits.items()},
        data=assembly.dataset.report(), versions=assembly.versions, processes=assembly.world.size,
    )
