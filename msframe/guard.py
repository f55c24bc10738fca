"""The divergence guard and its rewind policy.

At every flush the guard reads the flushed losses (host values: no per-step sync) and finds the first
that is non-finite or has blown up against the run's first loss by ``run.divergence_factor``, as the
task judges it in its own loss units (``Task.exploded``; 0 disables the factor, non-finite always
counts). A checkpoint's weights are judged by the loss of the step after it, so a checkpoint is
written only once that loss has passed the guard: the last checkpoint holds the last good state.
``run.on_divergence = "lower_lr"`` then goes back to it (before the first checkpoint: to the start of
the run) with a tenth of the learning rate, at most :data:`MAX_REWINDS` times; ``"stop"`` ends the run
(exit 3, with ``diverged.json`` in the run folder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from msframe.components import Task
from msframe.plan import TermPlan

#: How often ``run.on_divergence = "lower_lr"`` goes back to the last checkpoint before stopping.
MAX_REWINDS = 3


@dataclass
class Guard:
    """The guard's state, carried by checkpoints so that a resumed run judges by the same first loss."""

    reference_loss: float | None = None  # the first finite training loss of the run
    lr_scale: float = 1.0  # times the policy's learning rate: lowered by each rewind
    rewinds: int = 0  # divergences survived by going back to the last checkpoint

    def find(self, records: list[tuple[dict, tuple[TermPlan, ...]]], task: Task, factor: float) -> tuple[int, str] | None:
        """The index in ``records`` (host values, with the terms they ran) of the first diverged loss and
        where it is, in words, or None; the run's first finite fine-mesh loss becomes the reference on the way."""
        for index, (record, terms) in enumerate(records):
            if self.reference_loss is None and all(math.isfinite(lv["fine_loss"]) for lv in record["levels"]):
                # the first finite fine-mesh loss of the run's first term (its units are the task's)
                self.reference_loss = record["levels"][0]["fine_loss"]
            for term, lv in zip(terms, record["levels"]):
                for key in ("fine_loss", "coarse_loss"):
                    v = lv.get(key)
                    if v is None:
                        continue
                    exploded = factor and self.reference_loss is not None and task.exploded(v, self.reference_loss, factor)
                    if math.isfinite(v) and not exploded:
                        continue
                    mesh, side = ((term.fine_mesh, term.fine_resolution) if key == "fine_loss"
                                  else (term.coarse_mesh, term.coarse_resolution))
                    what = f"a non-finite loss ({v})" if not math.isfinite(v) else (
                        f"a loss of {v:.3g}, blown up from the first loss {self.reference_loss:.3g} by over the factor "
                        f"{factor:g}")
                    return index, (f"{what} at stage {record['stage']}, iteration {record['iteration']}, level {mesh} "
                            f"({side} px, term {term.index}), learning rate {record['lr']:.3g}")
        return None

    def may_rewind(self, policy: str, have_checkpoint: bool) -> bool:
        """Whether a divergence goes back to the last checkpoint (else it stops the run)."""
        return policy == "lower_lr" and self.rewinds < MAX_REWINDS and have_checkpoint

    def rewound(self) -> None:
        """Count one rewind: a tenth of the learning rate from now on."""
        self.lr_scale, self.rewinds = self.lr_scale * 0.1, self.rewinds + 1
