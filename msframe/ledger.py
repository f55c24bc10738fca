"""The cost ledger: work units, FLOPs and seconds, per run, per stage and per mesh.

Work units come from the plan (one finest-mesh sample = 1 WU), FLOPs from the network's counter
(:class:`msframe.cost.FlopCounter`), seconds from the step clock. One backward serves all terms of an
iteration, so a term's seconds are the step's, shared in proportion to its FLOPs, and a mesh's share
of a term likewise. The ledger is part of the train state: checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msframe.cost import FlopCounter
from msframe.plan import Plan, TermPlan
from msframe.records import MeshCost, StageCost


def term_flops(flops: FlopCounter, term: TermPlan) -> int:
    """FLOPs of one term: the fine pass, plus the coarse pass of a correction."""
    total = flops(term.fine_resolution, term.batch)
    if term.coarse_resolution is not None:
        total += flops(term.coarse_resolution, term.batch)
    return total


@dataclass
class Ledger:
    """Cumulative cost of the iterations accounted so far."""

    work: float = 0.0  # work units
    flops: float = 0.0  # training FLOPs (forward + backward)
    seconds: float = 0.0  # training seconds (evaluation and checkpoints excluded)
    eval_seconds: float = 0.0
    stages: list[StageCost] = field(default_factory=list)  # per stage: iterations, work units, FLOPs, seconds
    meshes: dict[str, MeshCost] = field(default_factory=dict)  # per mesh side: work units, FLOPs, seconds

    def open(self, plan: Plan) -> None:
        """Start one row per planned stage (a resumed ledger keeps its rows)."""
        if not self.stages:
            self.stages = [StageCost(stage=s.index, resolution=s.resolution, iterations=0, work_units=0.0, flops=0.0,
                                     seconds=0.0) for s in plan.stages]

    def account(self, stage: int, terms: tuple[TermPlan, ...], levels: list[dict], seconds: float,
                flops: FlopCounter, resolution: int) -> None:
        """Add one iteration of ``stage`` that ran ``terms`` in ``seconds``; each term's statistics in
        ``levels`` gain ``work_share``, ``flops`` and ``seconds``."""
        step_work = sum(t.work for t in terms)
        step_flops = 0
        for term, lv in zip(terms, levels):
            lv.update(work_share=term.work / step_work, flops=term_flops(flops, term))
            step_flops += lv["flops"]
        for term, lv in zip(terms, levels):
            lv["seconds"] = seconds * lv["flops"] / step_flops if step_flops else seconds / len(terms)
            sides = [term.fine_resolution] + ([term.coarse_resolution] if term.coarse_resolution else [])
            for side in sides:
                mesh = self.meshes.setdefault(str(side), MeshCost(work_units=0.0, flops=0.0, seconds=0.0))
                side_flops = flops(side, term.batch)
                mesh["work_units"] += term.batch * (side / resolution) ** 2
                mesh["flops"] += side_flops
                mesh["seconds"] += lv["seconds"] * side_flops / lv["flops"] if lv["flops"] else 0.0
        self.work += step_work
        self.flops += step_flops
        self.seconds += seconds
        row = self.stages[stage]
        row["iterations"] += 1
        row["work_units"] += step_work
        row["flops"] += step_flops
        row["seconds"] += seconds
