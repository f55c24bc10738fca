"""The training loop: Full-Multiscale stages in blocks of fixed shapes, over an assembled run.

The loop reads like a table of contents; each "maybe" is a call into a room that owns its state:

    for each block (a stage, or the span between re-allocations of an adaptive estimator):
        for each iteration: step (msframe.step) → maybe flush (cost into the ledger, losses past the
        divergence guard) → maybe re-allocate → maybe validate (the evaluator) → maybe end the stage
        → maybe checkpoint (the train state)

Metric scalars stay on the device until a flush (every ``run.flush_every`` iterations, and before
every evaluation, checkpoint and stage end), so a GPU step needs no host sync of its own. The
Trainer builds nothing: it receives an :class:`~msframe.assembly.Assembly`.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from msframe import checkpoint
from msframe import state as state_mod
from msframe.assembly import Assembly
from msframe.components import Logger, RunInfo, Term
from msframe.cost import StepClock
from msframe.errors import Diverged
from msframe.guard import MAX_REWINDS
from msframe.inference import Evaluator
from msframe.optim import learning_rate, optimizer
from msframe.plan import TermPlan
from msframe.records import AllocationRecord, EvalRecord, MeshCost, TrainRecord
from msframe.rundir import RunFolder
from msframe.sampling import loader
from msframe.state import Cadence, HeldCheckpoint, TrainState
from msframe.step import StepProgram
from msframe.wholeimage import write_rows


class Trainer:
    """One run of an assembly into a run folder."""

    def __init__(self, assembly: Assembly, folder: RunFolder | Path, loggers: list[Logger] | None = None):
        self.assembly, self.folder = assembly, RunFolder(folder)
        self.recipe, self.plan, self.world, self.device = assembly.recipe, assembly.plan, assembly.world, assembly.device
        self.model = assembly.model
        self.optimizer = optimizer(self.model, self.recipe.optim, self.device)
        if not self.world.main:
            self.loggers = []  # rank 0 speaks for the run
        else:
            self.loggers = loggers if loggers is not None else [c.build() for c in self.recipe.loggers.values()]
        self.evaluator = Evaluator(self.model, assembly.task, assembly.splits, self.recipe, self.plan.resolution, self.device,
                                   assembly.capabilities)
        self.state = TrainState()
        self.clock = StepClock(self.device)
        self._pending: list[tuple[dict, tuple[TermPlan, ...], object]] = []  # (record, terms, clock mark)
        self._program: tuple | None = None  # (block key, StepProgram)
        self.held = HeldCheckpoint()  # written once the next step's loss has judged its weights
        self._start: dict | None = None  # the state at step 0, where lower_lr goes back before any checkpoint

    # ------------------------------------------------------------------ one iteration
    def terms(self, stage: int) -> tuple[TermPlan, ...]:
        """The stage's terms with the batch sizes now in force (the plan's, or the estimator's latest)."""
        return self.state.allocation.terms(self.plan, stage)

    def program(self, stage: int, terms: tuple[TermPlan, ...]) -> StepProgram:
        """The step program of a block with these terms, built once and kept until the terms or the
        optimizer change."""
        key = (stage, terms, id(self.optimizer))
        if self._program is None or self._program[0] != key:
            a = self.assembly
            self._program = (key, StepProgram(
                model=self.model, forward=a.forward, optimizer=self.optimizer, task=a.task, resampler=a.resampler,
                stage=stage, terms=terms, merge=self.plan.merge, seed=self.recipe.run.seed, world=self.world,
                device=self.device))
        return self._program[1]

    def step(self, stage: int, iteration: int, batches: list[Tensor], terms: tuple[TermPlan, ...]) -> dict:
        """One optimizer step on the estimator's loss; returns the record with scalars still on device."""
        lr = learning_rate(self.recipe.optim, self.plan, stage, iteration, self.state.guard.lr_scale)
        total, stats = self.program(stage, terms).run(iteration, batches, lr)
        return {"stage": stage, "iteration": iteration, "loss": total, "lr": lr, "levels": stats}

    # ------------------------------------------------------------------ the run
    def train(self, resume_from: Path | None = None) -> dict | None:
        """Run (or continue) the plan; returns the summary that is also written to summary.json (rank 0;
        the other ranks of a multi-process run return None)."""
        if resume_from is not None:
            self._restore(resume_from)
        if not self.state.started:
            self.state.ledger.open(self.plan)
            self.state.cadence.open(self.recipe.eval.every, self.recipe.checkpoint.every)
            if self.recipe.run.on_divergence == "lower_lr":
                self._start = self._capture()
        self._open_loggers()
        try:
            while True:
                try:
                    self._loop()
                    break
                except Diverged as diverged:
                    try:
                        self._rewind(diverged)  # raises it again unless the policy is to go back and go on
                    except Diverged:
                        self._write_diverged(diverged)
                        raise
            self.held.write()  # the run's end: no later step will judge the last weights
            summary = None
            if self.world.main:
                summary = state_mod.summary(self.assembly, self.state, self._evaluate("test"))
                checkpoint.write_json(self.folder.summary, summary)
        except BaseException:
            for lg in self.loggers:
                lg.close(None)
            raise
        for lg in self.loggers:
            lg.close(summary)
        return summary

    def _loop(self) -> None:
        """Stages in blocks of fixed batch sizes: a whole stage, or the span between re-allocations."""
        pos = self.state.position
        while pos.stage < len(self.plan.stages):
            s, stage = pos.stage, self.plan.stages[pos.stage]
            every = stage.reallocate_every
            end = stage.iterations if not every else min(stage.iterations, (pos.iteration // every + 1) * every)
            self._block(s, range(pos.iteration, end), self.terms(s), reallocate=bool(every))

    def _block(self, s: int, iterations: range, terms: tuple[TermPlan, ...], reallocate: bool) -> None:
        """Train ``iterations`` of stage ``s`` with fixed ``terms``; re-allocate at the block's end if asked
        (before any checkpoint of that iteration, so a resumed run continues with the new batches)."""
        st, stage = self.state, self.plan.stages[s]
        work = st.ledger.work  # planned work so far, known without waiting for the flush
        step_work = sum(t.work for t in terms)
        for i, clean in self._batches(s, iterations, terms):
            started = self.clock.start()
            record = self.step(s, i, clean, terms)
            self._pending.append((record, terms, self.clock.stop(started)))
            work += step_work
            stage_done, block_done = i + 1 == stage.iterations, i + 1 == iterations.stop
            eval_due = stage_done or work >= st.cadence.next_eval
            checkpoint_due = stage_done or work >= st.cadence.next_checkpoint
            if eval_due or checkpoint_due or block_done or len(self._pending) >= self.recipe.run.flush_every:
                self._flush()
            st.position.stage, st.position.iteration = s, i + 1
            if reallocate and block_done and not stage_done:
                self._reallocate(s)
            if eval_due:
                self._validate()
            if stage_done:
                self._end_stage(s)
            if checkpoint_due:
                self._checkpoint(s if stage_done else None)

    def _batches(self, s: int, iterations: range, terms: tuple[TermPlan, ...]):
        """``(iteration, clean batches)`` of the block, from a loader made for it."""
        size = self.world.size
        pin = self.device.type == "cuda" and not self.assembly.resident
        batches = loader(self.assembly.splits["train"], self.plan.resolution, [t.batch // size for t in terms],
                         [(s, i) for i in iterations], self.recipe.run.seed, self.recipe.loader.workers, pin,
                         self.world.rank if size > 1 else None)
        return ((i, clean) for (_, i), clean in batches)

    # ------------------------------------------------------------------ the maybes
    def _flush(self) -> None:
        """Bring pending records to the host with one sync, pass them by the divergence guard, account
        their cost in the ledger, and emit them."""
        if not self._pending:
            return
        records = [r for r, _, _ in self._pending]
        slots = [(r, "loss") for r in records]
        slots += [(lv, k) for r in records for lv in r["levels"] for k, v in lv.items() if isinstance(v, Tensor)]
        values = torch.stack([d[k].float() for d, k in slots]).tolist()
        for (d, k), v in zip(slots, values):
            d[k] = v
        self._check_divergence()
        seconds = self.clock.collect(mark for _, _, mark in self._pending)
        st, a = self.state, self.assembly
        for (record, terms, _), dt in zip(self._pending, seconds):
            s = record["stage"]
            st.ledger.account(s, terms, record["levels"], dt, a.flops, self.plan.resolution)
            st.allocation.add(record["levels"])
            st.position.step += 1
            stage = self.plan.stages[s]
            self._emit(TrainRecord(
                event="train", stage=s, stage_resolution=stage.resolution, iteration=record["iteration"],
                stage_iterations=stage.iterations, step=st.position.step, total_steps=self.plan.iterations,
                loss=record["loss"], lr=record["lr"], levels=record["levels"], work_units=st.ledger.work,
                total_work_units=self.plan.work, flops=st.ledger.flops, seconds=st.ledger.seconds, step_seconds=dt,
                meshes={k: MeshCost(**v) for k, v in st.ledger.meshes.items()},
            ))
        self._pending.clear()

    def _check_divergence(self) -> None:
        """Raise :class:`Diverged` at the first pending loss the guard finds diverged. With several
        processes the verdict is shared (one all-reduce per flush), so that all of them stop together."""
        found = self.state.guard.find([(r, terms) for r, terms, _ in self._pending], self.assembly.task,
                                      self.recipe.run.divergence_factor)
        if self.world.size > 1 and self.world.mean([float(found is not None)], self.device)[0] > 0 and found is None:
            found = (0, "a diverged loss in another process")
        if found is None:
            self.held.write()
            return
        index, where = found
        if index > 0:  # the step right after the checkpoint was good: its weights are too
            self.held.write()
        self.held.drop()
        kept = (f"the last checkpoint before this step is kept in {self.folder.last}" if self.folder.last.is_file()
                else "no checkpoint was written before this step")
        raise Diverged(f"training diverged: {where}; lower optim.lr ({kept})", key="optim.lr")

    def _rewind(self, diverged: Diverged) -> None:
        """``run.on_divergence = "lower_lr"``: back to the last checkpoint, a tenth of the learning rate.

        The records logged after that checkpoint are dropped by re-opening the loggers as a resume
        does (``metrics.jsonl`` is cut back to the checkpoint's step). After ``MAX_REWINDS`` rewinds,
        without a checkpoint to go back to, or with the ``stop`` policy, the divergence stops the run.
        """
        before = self.state.guard
        back_to = self.folder.last if self.folder.last.is_file() else self._start
        if not before.may_rewind(self.recipe.run.on_divergence, back_to is not None):
            raise diverged
        self._pending.clear()
        self._restore(back_to)
        g = self.state.guard  # the checkpoint's, but the rewinds so far are not undone by going back
        g.lr_scale, g.rewinds = before.lr_scale, before.rewinds
        g.rewound()
        if self.world.main:
            print(f"warning: {diverged}; going back to step {self.state.position.step} with the learning rate "
                  f"x{g.lr_scale:g} (rewind {g.rewinds} of {MAX_REWINDS})", file=sys.stderr)
        for lg in self.loggers:
            lg.close(None)
        self._open_loggers()

    def _reallocate(self, s: int) -> None:
        """Ask the estimator for new batch sizes from the block's mean variances; log the choice."""
        st = self.state
        planned = self.plan.stages[s].terms  # the budget is the plan's, not the last block's: no drift
        variances = self.world.mean(st.allocation.block_means(len(planned)), self.device)  # ranks choose alike
        costs = [t.work / t.batch for t in planned]
        mesh = self.plan.stages[s].mesh
        relative = [Term(t.fine_mesh - mesh, None if t.coarse_mesh is None else t.coarse_mesh - mesh, t.batch) for t in planned]
        chosen = self.assembly.estimators[s].reallocate(relative, variances, costs)
        if len(chosen) != len(planned) or any(c.batch < 1 for c in chosen):
            raise RuntimeError(f"estimator '{self.plan.stages[s].estimator}' re-allocated {chosen} for {len(planned)} terms")
        size = self.world.size  # every process takes an equal share: round up to a multiple of their number
        st.allocation.allocations[str(s)] = [-(-c.batch // size) * size for c in chosen]
        st.allocation.new_block()
        self._emit(AllocationRecord(
            event="allocation", stage=s, step=st.position.step, work_units=st.ledger.work, iteration=st.position.iteration,
            batches=st.allocation.allocations[str(s)], variances=variances, costs=costs,
            work_per_iteration=sum(t.work for t in self.terms(s))))

    def _validate(self) -> None:
        """Evaluate the validation split (rank 0), keep the best weights, and set the next validation."""
        cadence, work = self.state.cadence, self.state.ledger.work
        if self.world.main:  # the other ranks go on to the next step and wait for rank 0 in its all-reduce
            val = self._evaluate("val")
            if val["psnr"] > cadence.best_val_psnr:
                cadence.best_val_psnr = val["psnr"]
                checkpoint.save(self.folder.best, {"model": self.model.state_dict(), "step": self.state.position.step,
                                                   "val": val})
        cadence.next_eval = Cadence.advance(cadence.next_eval, self.recipe.eval.every, work)

    def _end_stage(self, s: int) -> None:
        """Check the processes agree, move to the next stage, and reset the optimizer if the recipe says so."""
        self.world.check_in_step(self.model, self.device)
        pos = self.state.position
        pos.stage, pos.iteration = s + 1, 0
        self.state.allocation.new_block()
        if self.recipe.optim.reset_state_per_stage and s + 1 < len(self.plan.stages):
            self.optimizer = optimizer(self.model, self.recipe.optim, self.device)

    def _checkpoint(self, finished_stage: int | None) -> None:
        """``last.pt`` (and ``stage-N.pt`` at a stage's end), written by rank 0; set the next checkpoint."""
        cadence = self.state.cadence
        cadence.next_checkpoint = Cadence.advance(cadence.next_checkpoint, self.recipe.checkpoint.every, self.state.ledger.work)
        if not self.world.main:
            return
        paths = [self.folder.last, *([self.folder.stage_checkpoint(finished_stage)] if finished_stage is not None else [])]
        self.held.hold(self._capture(), paths)

    def _capture(self) -> dict:
        """A copy of the train state as a checkpoint holds it, unaffected by the steps that follow."""
        return copy.deepcopy(state_mod.capture(self.state, self.model, self.optimizer, self.recipe.to_dict(), self.device))

    def _write_diverged(self, diverged: Diverged) -> None:
        """``diverged.json``: why and where the run stopped, strict JSON (the run has no summary)."""
        if self.world.main:
            g, pos = self.state.guard, self.state.position
            checkpoint.write_json(self.folder.diverged, {
                "reason": diverged.message, "stage": pos.stage, "iteration": pos.iteration, "step": pos.step,
                "rewinds": g.rewinds, "lr_scale": g.lr_scale, "policy": self.recipe.run.on_divergence,
                "checkpoint": str(self.folder.last) if self.folder.last.is_file() else None})

    # ------------------------------------------------------------------ bookkeeping
    def evaluate(self, split: str) -> dict:
        """The split's scores under ``eval.protocol`` (restored and naive baseline; :class:`Evaluator`)."""
        return self.evaluator.evaluate(split)

    def _evaluate(self, split: str) -> dict:
        """Evaluate ``split``, save its sample tiles (the test's are the run folder's samples.png), and
        emit the evaluation record; its seconds go to the ledger apart from training."""
        t0 = time.perf_counter()
        result = self.evaluator.evaluate(split)
        st = self.state
        path = self.folder.samples if split == "test" else self.folder.eval_samples(split, st.position.step)
        samples = str(self.evaluator.save_samples(split, path).relative_to(self.folder.path))
        if split == "test" and split in self.evaluator.rows:  # the whole-image protocol's per-image scores
            write_rows(self.evaluator.rows[split], self.folder.test_images)
        st.ledger.eval_seconds += time.perf_counter() - t0
        self._emit(EvalRecord(event="eval", split=split, stage=st.position.stage, step=st.position.step,
                              work_units=st.ledger.work, flops=st.ledger.flops, seconds=st.ledger.seconds, **result,
                              samples=samples))
        return result

    def _restore(self, source: Path | dict) -> None:
        """Continue from a checkpoint written by :meth:`_checkpoint`, or the state :meth:`_capture` took."""
        self.state = state_mod.restore(source, self.model, self.optimizer, self.plan, self.device)

    def _open_loggers(self) -> None:
        info = RunInfo(self.folder.path, self.recipe.run.name, self.recipe.to_dict(), self.state.position.step,
                       self.folder.read_point())
        for lg in self.loggers:
            lg.open(info)

    def _emit(self, record: dict) -> None:
        for lg in self.loggers:
            lg.log(record)
