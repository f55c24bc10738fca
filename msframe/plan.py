"""The plan: everything a run will do, known before it runs.

Meshes are numbered globally from the finest (mesh 0, side ``resolution``) to the coarsest (mesh
``levels - 1``). Stages go coarse to fine: with S stages, stage s has its finest mesh at
``S - 1 - s``, so the last stage trains at the finest mesh. Inside a stage the estimator's terms use
levels relative to the stage's finest mesh.

Work units (WU): one sample on the finest mesh costs 1 WU; a sample of side r costs (r / resolution)².
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from msframe.components import Capabilities, Estimator, Term
from msframe.errors import UserError
from msframe.labels import ratio_words
from msframe.recipe import Recipe
from msframe.sections import MAX_ITERATIONS


@dataclass(frozen=True)
class TermPlan:
    """One term of one stage, in global meshes and pixels."""

    index: int
    fine_mesh: int
    coarse_mesh: int | None
    fine_resolution: int
    coarse_resolution: int | None
    batch: int
    work: float  # WU per iteration

    @property
    def kind(self) -> str:
        return "plain" if self.coarse_mesh is None else "correction"


def passes(terms: tuple[TermPlan, ...], merge: bool) -> list[tuple[int, int]]:
    """The network passes of one iteration as ``(resolution, batch)``, in the order they run.

    Separate: the fine then the coarse half of each term in turn (2L − 1 passes for L meshes).
    Merged: one pass per distinct mesh, its batch the sum of the halves on that mesh (L passes).
    """
    halves = [(r, t.batch) for t in terms for r in (t.fine_resolution, t.coarse_resolution) if r is not None]
    if not merge:
        return halves
    merged: dict[int, int] = {}
    for r, n in halves:
        merged[r] = merged.get(r, 0) + n
    return list(merged.items())


@dataclass(frozen=True)
class StagePlan:
    index: int
    mesh: int  # the stage's finest mesh
    resolution: int
    iterations: int
    terms: tuple[TermPlan, ...]
    estimator: str = ""  # the name of the stage's estimator
    reallocate_every: int = 0  # the estimator re-allocates batches every this many iterations (0: never)

    @property
    def work_per_iteration(self) -> float:
        return sum(t.work for t in self.terms)

    @property
    def work(self) -> float:
        return self.work_per_iteration * self.iterations


@dataclass(frozen=True)
class Plan:
    resolution: int
    resolutions: tuple[int, ...]  # by global mesh index
    stages: tuple[StagePlan, ...]
    baseline_iterations: int
    baseline_batch: int
    # one network pass per mesh over the concatenated halves of every term on it: exact only when the
    # backbone's output for a sample ignores its batch mates; ``merge_reason`` says why not otherwise
    merge: bool = False
    merge_reason: str = ""

    @property
    def work(self) -> float:
        return sum(s.work for s in self.stages)

    @property
    def baseline_work(self) -> float:
        """Work of single-scale training at the finest mesh: baseline_iterations × finest batch."""
        return float(self.baseline_iterations * self.baseline_batch)

    @property
    def iterations(self) -> int:
        return sum(s.iterations for s in self.stages)

    def passes(self, stage: int) -> list[tuple[int, int]]:
        """The network passes of one iteration of ``stage`` as ``(resolution, batch)`` (:func:`passes`),
        merged per mesh where the plan decided so."""
        return passes(self.stages[stage].terms, self.merge)

    def describe_passes(self) -> str:
        """One line: the network passes per iteration of the final stage, merged per mesh or separate, and why."""
        final = self.stages[-1].terms
        merged, separate = len(passes(final, True)), len(passes(final, False))
        if merged == separate:  # a plain stage: one pass whatever the setting
            return f"network passes per iteration: {separate} in the final stage (nothing to merge)"
        if self.merge:
            return (f"network passes per iteration: one pass per mesh over the concatenated batch; {merged} in the "
                    f"final stage instead of {separate}")
        return f"network passes per iteration: separate passes ({self.merge_reason}); {separate} in the final stage"

    def describe(self) -> str:
        """A human-readable table of stages, terms, batches and work."""
        ratio = self.baseline_work / self.work
        lines = [
            f"meshes: {' > '.join(f'{r}px' for r in self.resolutions)}   (1 WU = one {self.resolution}x{self.resolution} sample)",
            "",
            (f"{'stage':>5} {'mesh':>6} {'iters':>7} {'term':>4}  {'kind':<10} {'levels':<11} {'batch':>6} "
             f"{'WU/iter':>9} {'WU':>12}"),
        ]
        for s in self.stages:
            for t in s.terms:
                levels = f"{t.fine_resolution}" + (f"-{t.coarse_resolution}" if t.coarse_mesh is not None else "")
                head = f"{s.index:>5} {str(s.resolution) + 'px':>6} {s.iterations:>7}" if t.index == 0 else " " * 20
                lines.append(
                    f"{head} {t.index:>4}  {t.kind:<10} {levels + 'px':<11} {t.batch:>6} {t.work:>9.3f} "
                    f"{t.work * s.iterations:>12.1f}"
                )
            total = "stage total" if len({st.estimator for st in self.stages}) == 1 else f"stage total ({s.estimator})"
            lines.append(f"{'':>20} {total:<22} {'':>6} {s.work_per_iteration:>9.3f} {s.work:>12.1f}")
        for s in self.stages:
            if s.reallocate_every:
                lines += ["", (f"stage {s.index}: batches shown are the first block's: the estimator re-allocates them "
                               f"every {s.reallocate_every} iterations, holding the stage's WU per iteration")]
        lines += [
            "",
            f"total: {self.iterations} iterations, {self.work:.1f} WU",
            (f"single-scale baseline: {self.baseline_iterations} iterations at {self.resolution}px, batch "
             f"{self.baseline_batch}: {self.baseline_work:.1f} WU"),
            f"work ratio baseline / this run: {ratio:.2f}x ({ratio_words(ratio)})",
        ]
        return "\n".join(lines)


def build(recipe: Recipe, estimators: list[Estimator], caps: Capabilities, backbone_name: str, scale: int = 1,
          restrict_min: int = 2) -> Plan:
    """Turn the schedule and each stage's estimator terms into a plan; impossible schedules are UserErrors.

    ``scale`` is the task's target/input side ratio: the backbone sees inputs of side r / scale.
    ``restrict_min`` is the smallest side the resampler can restrict (checked on every input it gets).
    The plan also takes the merge decision (``run.merge_passes`` and the backbone's
    ``batch_independent``), so that ``--plan``, the trainer and the bench read one answer.
    """
    sch = recipe.schedule
    if caps.scale is not None and caps.scale != scale:
        raise UserError(
            f"backbone '{backbone_name}' has scale {caps.scale} but task '{recipe.task.name}' needs scale {scale}",
            key="backbone.type",
        )
    n_levels, n_stages = sch.levels, sch.stages
    if sch.resolution % (2 ** (n_levels - 1)):
        raise UserError(
            f"{sch.resolution} px cannot be halved {n_levels - 1} times; with levels = {n_levels} it must be a "
            f"multiple of {2 ** (n_levels - 1)}",
            key="schedule.resolution",
        )
    if n_stages > n_levels:
        raise UserError(
            f"{n_stages} stages need at least {n_stages} levels (schedule.levels = {n_levels}); give at most "
            f"{n_levels} stages",
            key=next(f"schedule.{k}" for k in ("iterations", "work", "split", "budget", "stage") if getattr(sch, k) is not None),
        )
    specs = sch.stage_specs()
    batches = sch.batch if isinstance(sch.batch, list) else [sch.batch] * n_stages
    if len(batches) != n_stages:
        raise UserError(f"{len(batches)} batch sizes for {n_stages} stages (one per stage, or one number)", key="schedule.batch")
    batches = [own or default for (_, _, own), default in zip(specs, batches)]
    resolutions = tuple(sch.resolution // 2**m for m in range(n_levels))

    stages = []
    for s, ((iters, budget, _), batch, estimator) in enumerate(zip(specs, batches, estimators)):
        mesh = n_stages - 1 - s
        terms = tuple(_term_plans(estimator.terms(n_levels - mesh, batch), mesh, n_levels, resolutions))
        if iters is None:  # a work budget: as many whole iterations as fit, at least one
            iters = max(1, int(budget // sum(t.work for t in terms)))
            if iters > MAX_ITERATIONS:
                key = "schedule.budget" if sch.budget is not None else ("schedule.work" if sch.work else "schedule.stage")
                raise UserError(f"stage {s} would run {iters:.3g} iterations ({budget:.3g} WU at "
                                f"{sum(t.work for t in terms):.3g} WU each); at most {MAX_ITERATIONS:.0e} per stage",
                                key=key)
        stages.append(StagePlan(s, mesh, resolutions[mesh], iters, terms, recipe.stage_estimators[s].name,
                                estimator.reallocate_every()))

    _check_memory(recipe, stages)
    _check_backbone(stages, caps, backbone_name, sch.levels, scale)
    _check_resampler(stages, resolutions, restrict_min, recipe.resampler.name, scale)
    total_iterations = sum(st.iterations for st in stages)
    # the default single-scale reference: the same budget at the finest mesh, or as many iterations as this run
    default = int(sch.budget // batches[-1]) if sch.budget is not None else total_iterations
    if recipe.run.merge_passes == "off":
        merge, why = False, "run.merge_passes = off"
    elif caps.batch_independent:
        merge, why = True, ""
    else:
        merge, why = False, f"backbone '{backbone_name}' mixes samples across its batch"
    return Plan(sch.resolution, resolutions, tuple(stages), sch.baseline_iterations or max(1, default), batches[-1],
                merge, why)


def _memory_limit() -> int:
    """Half the machine's physical memory in bytes (the most one run's image tensors may claim)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def _check_memory(recipe: Recipe, stages: list[StagePlan]) -> None:
    """Refuse, with the figure, a plan whose evaluation tiles or largest training batch alone would
    take more than half the machine's memory (estimated at 3 channels of float32, input and target):
    ``bytes = tiles × side² × 3 × 4 × 2``."""
    limit, side, ev = _memory_limit(), recipe.schedule.resolution, recipe.eval
    per_tile = side * side * 3 * 4 * 2
    eval_bytes = ev.tiles_per_image * ev.max_images * per_tile
    if eval_bytes > limit:
        raise UserError(
            f"evaluation would hold {ev.tiles_per_image} × {ev.max_images} tiles of {side} px, about "
            f"{eval_bytes / 2**30:.1f} GiB, more than half this machine's memory ({limit / 2**30:.1f} GiB); lower "
            f"eval.tiles_per_image or eval.max_images",
            key="eval.tiles_per_image",
        )
    for st in stages:
        for t in st.terms:
            batch_bytes = t.batch * t.fine_resolution ** 2 * 3 * 4 * 2
            if batch_bytes > limit:
                raise UserError(
                    f"stage {st.index} term {t.index}: a batch of {t.batch} at {t.fine_resolution} px takes about "
                    f"{batch_bytes / 2**30:.1f} GiB before any activation, more than half this machine's memory "
                    f"({limit / 2**30:.1f} GiB); lower the batch", key="schedule.batch")


def _term_plans(terms: list[Term], mesh: int, n_levels: int, resolutions: tuple[int, ...]):
    if not terms:
        raise UserError("the estimator produced no terms for a stage", key="estimator")
    for i, t in enumerate(terms):
        fine = mesh + t.fine
        coarse = None if t.coarse is None else mesh + t.coarse
        if not (0 <= fine < n_levels) or (coarse is not None and not (fine < coarse < n_levels)):
            raise UserError(f"term {i} uses levels {t.fine}/{t.coarse}, outside the stage's {n_levels - mesh} levels",
                            key="estimator")
        if t.batch < 1:
            raise UserError(f"term {i} has batch {t.batch}; batches must be at least 1", key="estimator")
        res = resolutions[fine]
        cres = None if coarse is None else resolutions[coarse]
        work = t.batch * ((res / resolutions[0]) ** 2 + (0 if cres is None else (cres / resolutions[0]) ** 2))
        yield TermPlan(i, fine, coarse, res, cres, t.batch, work)


def rebatch(term: TermPlan, batch: int) -> TermPlan:
    """The same term with another batch size (its work scaled with it); for adaptive estimators."""
    return replace(term, batch=batch, work=term.work / term.batch * batch)


def _check_resampler(stages, resolutions: tuple[int, ...], restrict_min: int, name: str, scale: int) -> None:
    """Every restriction the run performs (down to its coarsest mesh) gets an input the resampler takes."""
    coarsest = max((t.coarse_mesh if t.coarse_mesh is not None else t.fine_mesh) for s in stages for t in s.terms)
    if coarsest == 0:
        return
    smallest = resolutions[coarsest - 1] // scale  # the last restriction's input (the low-resolution side)
    if smallest < restrict_min:
        raise UserError(
            f"the run restricts images of {smallest} px down to mesh {coarsest}, but resampler '{name}' needs at "
            f"least {restrict_min} px (allowed: fewer levels or a larger resolution)",
            key="schedule.levels",
        )


def _check_backbone(stages: list[StagePlan], caps: Capabilities, name: str, n_levels: int, scale: int) -> None:
    for s in stages:
        for t in s.terms:
            coarse_level = None if t.coarse_mesh is None else t.coarse_mesh - s.mesh
            for level, r in ((t.fine_mesh - s.mesh, t.fine_resolution), (coarse_level, t.coarse_resolution)):
                if r is None:
                    continue
                problem = None
                side = r // scale
                if r % scale:
                    problem = f"not divisible by the task's scale {scale}"
                elif side < caps.min_size:
                    problem = f"an input of {side} px, below the smallest input of {caps.min_size} px"
                elif side % caps.multiple:
                    problem = f"an input of {side} px, not a multiple of {caps.multiple} px"
                if problem:
                    raise UserError(
                        f"stage {s.index} ({s.resolution} px), level {level} is {r} px, {problem} that backbone "
                        f"'{name}' needs (allowed: meshes of at least {caps.min_size} px, multiples of {caps.multiple}); "
                        f"use fewer levels (now {n_levels}), fewer estimator levels or a larger resolution",
                        key="schedule.levels",
                    )
