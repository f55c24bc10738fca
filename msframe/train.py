"""The training loop: Full-Multiscale stages, multiscale terms, evaluation, checkpoints, resume.

The loop knows components only through their base classes; which ones run is the recipe's choice.
Metric scalars stay on the device until a flush (every ``run.flush_every`` iterations, and before
every evaluation, checkpoint and stage end), so a GPU step needs no host sync of its own.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from msframe import __version__, checkpoint, inference, rng
from msframe import plan as plan_mod
from msframe.components import Degraded, Logger, RunInfo, Term
from msframe.cost import FlopCounter, StepClock
from msframe.distributed import World, check_shares
from msframe.errors import Diverged, UserError
from msframe.plan import TermPlan
from msframe.plugins import Loaded
from msframe.recipe import Recipe
from msframe.sampling import keep_resident, loader
from msframe.step import StepProgram, adamw
from msframe.telescoping import passes, term_batches


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that a resumed run continues exactly."""

    stage: int = 0
    iteration: int = 0  # next iteration to run inside ``stage``
    step: int = 0  # iterations completed over the whole run
    work: float = 0.0  # cumulative work units
    flops: float = 0.0  # cumulative training FLOPs (forward + backward)
    seconds: float = 0.0  # cumulative training seconds (evaluation and checkpoints excluded)
    eval_seconds: float = 0.0
    next_eval: float = math.inf
    next_checkpoint: float = math.inf
    best_val_psnr: float = -math.inf
    stages: list[dict] = field(default_factory=list)  # per stage: iterations, work units, FLOPs, seconds
    meshes: dict[str, dict] = field(default_factory=dict)  # per mesh side: work units, FLOPs, seconds
    allocations: dict[str, list[int]] = field(default_factory=dict)  # stage -> batches chosen by the estimator
    block_variance: list[float] = field(default_factory=list)  # per term, summed over the current block
    block_iterations: int = 0
    reference_loss: float | None = None  # the first finite training loss of the run, for the divergence guard
    lr_scale: float = 1.0  # times the policy's learning rate: lowered by each rewind after a divergence
    rewinds: int = 0  # divergences survived by going back to the last checkpoint (run.on_divergence)


#: How often ``run.on_divergence = "lower_lr"`` goes back to the last checkpoint before stopping.
MAX_REWINDS = 3


def resolve_device(name: str, world: World = World()) -> torch.device:
    """The training device; the ranks of a multi-process CUDA run each take ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world.size > 1:
        name = f"cuda:{world.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"'{name}' was asked for but CUDA is not available here (allowed: auto, cpu)", key="run.device")
    return device


class Trainer:
    """One run of a validated recipe into ``run_dir``."""

    def __init__(self, recipe: Recipe, loaded: Loaded, run_dir: Path, loggers: list[Logger] | None = None,
                 world: World = World()):
        self.recipe, self.loaded, self.dir, self.world = recipe, loaded, Path(run_dir), world
        self.device = resolve_device(recipe.run.device, world)
        self.task = recipe.task.build()
        self.resampler = recipe.resampler.build()
        self.estimators = [c.build() for c in recipe.stage_estimators]  # one per stage
        backbone = recipe.backbone.build()
        self.plan = plan_mod.for_recipe(recipe)
        check_shares(self.plan, world)  # also on resume, which may run with another number of processes
        self.dataset = recipe.data.build()
        self.channels = self.dataset.channels()
        self.splits = {name: self.dataset.split(name) for name in ("train", "val", "test")}
        small = (", or data.small = \"upscale\" / \"reflect_pad\" to adapt small images"
                 if "small" in type(recipe.data.params).model_fields else "")
        largest = max(t.batch for st in self.plan.stages for t in st.terms)
        offered = self.splits["train"].distinct_crops(self.plan.resolution)
        if offered < largest:
            raise UserError(
                f"the train split offers {offered} distinct {self.plan.resolution} px crops "
                f"({len(self.splits['train'].names)} images), fewer than one batch of {largest}; add images, or lower "
                f"schedule.batch (and the estimator's growth) or schedule.resolution{small}",
                key="data",
            )
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        self.resident = keep_resident(recipe.loader.resident, recipe.loader.workers, self.device,
                                      self.splits["train"].nbytes(), free)
        if self.resident:
            self.splits["train"].to(self.device)
        for name, split in self.splits.items():
            if split.usable(self.plan.resolution) < 1:
                raise UserError(
                    f"the {name} split has no image of at least {self.plan.resolution} px on its short side "
                    f"({len(split.names)} images); use smaller crops (schedule.resolution) or other data{small}",
                    key="data",
                )
        cond = self.task.cond_channels()
        if cond and not backbone.capabilities().conditioning:
            raise UserError(
                f"task '{recipe.task.name}' gives the network a conditioning input, which backbone "
                f"'{recipe.backbone.name}' does not take",
                key="backbone.type",
            )
        torch.manual_seed(rng.derive_seed(recipe.run.seed, "init"))
        in_channels, scale = self.task.input_channels(self.channels), self.task.scale()
        self.model = backbone.build(in_channels, self.channels, cond, scale).to(self.device)
        self._check_backbone_output(recipe.backbone.name)
        self.flops = FlopCounter(self.model, in_channels, cond, scale)
        # one pass per mesh only where exact: the backbone's output for a sample ignores its batch mates
        self.merge = recipe.run.merge_passes == "auto" and backbone.capabilities().batch_independent
        self.forward = self._compiled() if recipe.run.compile != "off" else self.model
        self.optimizer = self._optimizer()
        if not world.main:
            self.loggers = []  # rank 0 speaks for the run
        else:
            self.loggers = loggers if loggers is not None else [c.build() for c in recipe.loggers.values()]
        self.progress = Progress()
        self.clock = StepClock(self.device)
        self._pending: list[dict] = []
        self._eval_cache: dict[str, Degraded] = {}
        self._program: tuple | None = None  # (block key, StepProgram)

    # ------------------------------------------------------------------ set-up helpers
    def _compiled(self):
        """The network under torch.compile with static shapes: the plan fixes every (resolution, batch),
        so the recompile limit is raised to their number instead of falling back to dynamic shapes."""
        import torch._dynamo

        shapes = {shape for s in self.plan.stages for shape in passes(s.terms, self.merge)}
        # an adaptive estimator changes batch sizes between blocks: leave room for its new shapes
        limit = len(shapes) + 1 + (64 if any(s.reallocate_every for s in self.plan.stages) else 0)
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
        return torch.compile(self.model, dynamic=False)

    @torch.no_grad()
    def _check_backbone_output(self, name: str) -> None:
        """Run the network once per mesh the plan uses, on one sample, and require an output of the
        target's shape (channels and side): a third-party backbone's mistake is named before training.

        Runs in eval mode without gradients and draws from its own generator, so it changes no state
        that training or a resumed run depends on.
        """
        meshes = sorted({m for st in self.plan.stages for t in st.terms for m in (t.fine_mesh, t.coarse_mesh) if m is not None})
        clean = torch.full((1, self.channels, self.plan.resolution, self.plan.resolution), 0.5, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for mesh in meshes:
                g = rng.generator(self.recipe.run.seed, "dry-run", mesh, device=self.device)
                batch, _ = term_batches(self.task, self.resampler, clean, g, mesh, None)
                side = self.plan.resolution >> mesh
                try:
                    out = self.model(batch.input, batch.cond)
                except Exception as exc:
                    raise UserError(f"backbone '{name}' fails on a {tuple(batch.input.shape)} input (mesh {mesh}, "
                                    f"{side} px): {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                                    key="backbone.type") from None
                if not isinstance(out, Tensor) or out.shape != batch.target.shape:
                    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise UserError(f"backbone '{name}' returns {got} for a {tuple(batch.input.shape)} input at {side} px "
                                    f"(mesh {mesh}); the task needs {tuple(batch.target.shape)} (channels and side)",
                                    key="backbone.type")
        finally:
            self.model.train(was_training)

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.recipe.optim
        return adamw(self.model.parameters(), o.lr, o.weight_decay, self.device)

    def lr_at(self, stage: int, iteration: int) -> float:
        """The learning rate of one iteration under the recipe's policy, times the warm-up ramp and the
        scale left by divergence rewinds (``Progress.lr_scale``).

        The ramp min(1, (k + 1) / warmup) over the run's first ``optim.warmup`` iterations (k counts
        from the run's start) keeps Adam's first, full-size steps from throwing the zero-initialised
        output layer far from the baseline.
        """
        o = self.recipe.optim
        done = sum(s.iterations for s in self.plan.stages[:stage]) + iteration
        ramp = (min(1.0, (done + 1) / o.warmup) if o.warmup else 1.0) * self.progress.lr_scale
        if o.lr_policy == "constant" or (o.lr_policy == "constant_final_decay" and stage < len(self.plan.stages) - 1):
            return o.lr * ramp
        if o.lr_policy == "cosine":
            frac = done / max(1, self.plan.iterations - 1)
        else:  # cosine_per_stage, or the final stage of constant_final_decay
            frac = iteration / max(1, self.plan.stages[stage].iterations - 1)
        return ramp * o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    def term_flops(self, term) -> int:
        """FLOPs of one term: the fine pass, plus the coarse pass of a correction."""
        flops = self.flops(term.fine_resolution, term.batch)
        if term.coarse_resolution is not None:
            flops += self.flops(term.coarse_resolution, term.batch)
        return flops

    # ------------------------------------------------------------------ one iteration
    def terms(self, stage_index: int) -> tuple[TermPlan, ...]:
        """The stage's terms with the batch sizes now in force (the plan's, or the estimator's latest)."""
        planned = self.plan.stages[stage_index].terms
        chosen = self.progress.allocations.get(str(stage_index))
        if chosen is None:
            return planned
        return tuple(plan_mod.rebatch(t, n) for t, n in zip(planned, chosen))

    def program(self, stage_index: int, terms: tuple[TermPlan, ...]) -> StepProgram:
        """The step program of a block with these terms, built once and kept until the terms or the
        optimizer change."""
        key = (stage_index, terms, id(self.optimizer))
        if self._program is None or self._program[0] != key:
            self._program = (key, StepProgram(
                model=self.model, forward=self.forward, optimizer=self.optimizer, task=self.task,
                resampler=self.resampler, stage=stage_index, terms=terms, merge=self.merge,
                seed=self.recipe.run.seed, world=self.world, device=self.device))
        return self._program[1]

    def step(self, stage_index: int, iteration: int, batches: list[Tensor], terms: tuple[TermPlan, ...]) -> dict:
        """One optimizer step on the estimator's loss; returns the record with scalars still on device."""
        lr = self.lr_at(stage_index, iteration)
        program = self.program(stage_index, terms)
        started = self.clock.start()
        total, stats = program.run(iteration, batches, lr)
        return {"stage": stage_index, "iteration": iteration, "loss": total, "lr": lr, "levels": stats,
                "_terms": terms, "_clock": self.clock.stop(started)}

    def _flush(self) -> None:
        """Bring pending records to the host with one sync, account their cost, and emit them."""
        if not self._pending:
            return
        slots = [(r, "loss") for r in self._pending]
        slots += [(lv, k) for r in self._pending for lv in r["levels"] for k, v in lv.items() if isinstance(v, Tensor)]
        values = torch.stack([d[k].float() for d, k in slots]).tolist()
        for (d, k), v in zip(slots, values):
            d[k] = v
        self._check_divergence()
        seconds = self.clock.collect(r.pop("_clock") for r in self._pending)
        p = self.progress
        for record, dt in zip(self._pending, seconds):
            s = record["stage"]
            stage, terms = self.plan.stages[s], record.pop("_terms")
            step_work = sum(t.work for t in terms)
            p.work += step_work
            p.seconds += dt
            step_flops = 0
            for term, lv in zip(terms, record["levels"]):
                flops = self.term_flops(term)
                step_flops += flops
                lv.update(work_share=term.work / step_work, flops=flops)
            if len(p.block_variance) != len(terms):
                p.block_variance = [0.0] * len(terms)
            p.block_iterations += 1
            for t, lv in enumerate(record["levels"]):
                p.block_variance[t] += lv.get("correction_var", lv.get("loss_var", 0.0))
            for term, lv in zip(terms, record["levels"]):
                # one backward serves all terms: a term's seconds are the step's, shared by FLOPs
                lv["seconds"] = dt * lv["flops"] / step_flops if step_flops else dt / len(terms)
                sides = [term.fine_resolution] + ([term.coarse_resolution] if term.coarse_resolution else [])
                for side in sides:
                    m = p.meshes.setdefault(str(side), {"work_units": 0.0, "flops": 0.0, "seconds": 0.0})
                    flops = self.flops(side, term.batch)
                    m["work_units"] += term.batch * (side / self.plan.resolution) ** 2
                    m["flops"] += flops
                    m["seconds"] += lv["seconds"] * flops / lv["flops"] if lv["flops"] else 0.0
            p.flops += step_flops
            st = p.stages[s]
            st["iterations"] += 1
            st["work_units"] += step_work
            st["flops"] += step_flops
            st["seconds"] += dt
            p.step += 1
            self._emit({
                "event": "train", "stage": s, "stage_resolution": stage.resolution, "iteration": record["iteration"],
                "stage_iterations": stage.iterations, "step": p.step, "total_steps": self.plan.iterations,
                "loss": record["loss"], "lr": record["lr"], "levels": record["levels"],
                "work_units": p.work, "total_work_units": self.plan.work, "flops": p.flops, "seconds": p.seconds,
                "step_seconds": dt, "meshes": {k: dict(v) for k, v in p.meshes.items()},
            })
        self._pending.clear()

    def _check_divergence(self) -> None:
        """Raise :class:`Diverged` at the first pending record whose loss is non-finite or has blown up
        against the run's first loss by ``run.divergence_factor``, as the task judges it in its own loss
        units (``Task.exploded``; 0 disables the factor, non-finite always counts).

        Runs on host values at a flush, so it costs no per-step sync; no checkpoint is written after
        the bad step, so the last checkpoint on disk holds the last good state. With several processes
        the verdict is shared (one all-reduce per flush), so that all of them stop together.
        """
        p, factor = self.progress, self.recipe.run.divergence_factor
        found = None
        for record in self._pending:
            if p.reference_loss is None and all(math.isfinite(lv["fine_loss"]) for lv in record["levels"]):
                # the first finite fine-mesh loss of the run's first term (its units are the task's)
                p.reference_loss = record["levels"][0]["fine_loss"]
            for term, lv in zip(record["_terms"], record["levels"]):
                for key in ("fine_loss", "coarse_loss"):
                    v = lv.get(key)
                    if v is None or found is not None:
                        continue
                    exploded = factor and p.reference_loss is not None and self.task.exploded(v, p.reference_loss, factor)
                    if math.isfinite(v) and not exploded:
                        continue
                    mesh, side = ((term.fine_mesh, term.fine_resolution) if key == "fine_loss"
                                  else (term.coarse_mesh, term.coarse_resolution))
                    what = f"a non-finite loss ({v})" if not math.isfinite(v) else (
                        f"a loss of {v:.3g}, blown up from the first loss {p.reference_loss:.3g} by over the factor {factor:g}")
                    found = (f"{what} at stage {record['stage']}, iteration {record['iteration']}, level {mesh} "
                             f"({side} px, term {term.index}), learning rate {record['lr']:.3g}")
        if self.world.size > 1 and self.world.mean([float(found is not None)], self.device)[0] > 0 and found is None:
            found = "a diverged loss in another process"
        if found is not None:
            raise Diverged(f"training diverged: {found}; lower optim.lr (the last checkpoint before this step is "
                           f"kept in {self.dir / 'checkpoints'})", key="optim.lr")

    # ------------------------------------------------------------------ evaluation
    def _eval_batch(self, split_name: str) -> Degraded:
        """The split's fixed evaluation tiles (see :func:`msframe.inference.eval_batch`), made once."""
        if split_name not in self._eval_cache:
            self._eval_cache[split_name] = inference.eval_batch(self.recipe, self.task, self.splits[split_name],
                                                                split_name, self.plan.resolution)
        return self._eval_cache[split_name]

    def evaluate(self, split_name: str, chunk: int = 16) -> dict:
        """Mean per-image PSNR/SSIM of restored vs clean, and of the task's naive baseline vs clean."""
        return inference.evaluate(self.model, self.task, self._eval_batch(split_name), self.device, chunk)

    def save_samples(self, split_name: str, count: int = 4, name: str = "samples.png") -> Path:
        """``name`` in the run folder: rows of (task baseline | restored | clean) for the first tiles."""
        return inference.save_samples(self.model, self.task, self._eval_batch(split_name), self.device, self.dir / name, count)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "recipe": self.recipe.to_dict(),
            "msframe": __version__,
        }

    def save_checkpoint(self, *names: str) -> None:
        if not self.world.main:
            return
        state = self._state()
        for name in names:
            checkpoint.save(self.dir / "checkpoints" / name, state)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        state = checkpoint.load(path, self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.progress = Progress(**state["progress"])
            if len(self.progress.stages) not in (0, len(self.plan.stages)):
                raise ValueError(f"{len(self.progress.stages)} stages in the checkpoint, {len(self.plan.stages)} in the recipe")
            rng_state = state["torch_rng"].cpu()
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"does not match recipe.resolved.toml of its run folder (was the recipe edited?): {first}",
                            file=str(path)) from None
        torch.set_rng_state(rng_state)
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    # ------------------------------------------------------------------ the run
    def _emit(self, record: dict) -> None:
        for lg in self.loggers:
            lg.log(record)

    def _timed_eval(self, split: str) -> dict:
        t0 = time.perf_counter()
        result = self.evaluate(split)
        p = self.progress
        # the sample tiles of every evaluation (the test's are the run folder's samples.png), for loggers
        name = "samples.png" if split == "test" else f"samples/{split}-{p.step:06d}.png"
        samples = str(self.save_samples(split, name=name).relative_to(self.dir))
        p.eval_seconds += time.perf_counter() - t0
        self._emit({"event": "eval", "split": split, "stage": p.stage, "step": p.step, "work_units": p.work,
                    "flops": p.flops, "seconds": p.seconds, **result, "samples": samples})
        return result

    def _validate_and_keep_best(self) -> None:
        if not self.world.main:
            return  # the other ranks go on to the next step and wait for rank 0 in its all-reduce
        val = self._timed_eval("val")
        p = self.progress
        if val["psnr"] > p.best_val_psnr:
            p.best_val_psnr = val["psnr"]
            checkpoint.save(self.dir / "checkpoints" / "best.pt", {"model": self.model.state_dict(), "step": p.step, "val": val})

    def train(self, resume_from: Path | None = None) -> dict:
        """Run (or continue) the plan; returns the summary that is also written to summary.json (rank 0;
        the other ranks of a multi-process run return None)."""
        if resume_from is not None:
            self.restore(resume_from)
        p = self.progress
        if not p.stages:
            p.stages = [{"stage": s.index, "resolution": s.resolution, "iterations": 0, "work_units": 0.0,
                         "flops": 0.0, "seconds": 0.0} for s in self.plan.stages]
            p.next_eval = self.recipe.eval.every or math.inf
            p.next_checkpoint = self.recipe.checkpoint.every or math.inf
        info = RunInfo(self.dir, self.recipe.run.name, self.recipe.to_dict(), p.step)
        for lg in self.loggers:
            lg.open(info)
        try:
            while True:
                try:
                    self._loop()
                    break
                except Diverged as diverged:
                    self._rewind(diverged)  # raises it again unless the policy is to go back and go on
            summary = None
            if self.world.main:
                test = self._timed_eval("test")
                summary = self.summary(test)
                checkpoint.write_json(self.dir / "summary.json", summary)
        except BaseException:
            for lg in self.loggers:
                lg.close(None)
            raise
        for lg in self.loggers:
            lg.close(summary)
        return summary

    def _rewind(self, diverged: Diverged) -> None:
        """``run.on_divergence = "lower_lr"``: back to the last checkpoint, a tenth of the learning rate.

        The records logged after that checkpoint are dropped by re-opening the loggers as a resume
        does (``metrics.jsonl`` is cut back to the checkpoint's step). After ``MAX_REWINDS`` rewinds,
        without a checkpoint to go back to, or with the ``stop`` policy, the divergence stops the run.
        """
        last = self.dir / "checkpoints" / "last.pt"
        p = self.progress
        if self.recipe.run.on_divergence != "lower_lr" or p.rewinds >= MAX_REWINDS or not last.is_file():
            raise diverged
        scale, rewinds = p.lr_scale * 0.1, p.rewinds + 1
        self._pending.clear()
        self.restore(last)
        self.progress.lr_scale, self.progress.rewinds = scale, rewinds
        if self.world.main:
            print(f"warning: {diverged}; going back to step {self.progress.step} with the learning rate x{scale:g} "
                  f"(rewind {rewinds} of {MAX_REWINDS})", file=sys.stderr)
        info = RunInfo(self.dir, self.recipe.run.name, self.recipe.to_dict(), self.progress.step)
        for lg in self.loggers:
            lg.close(None)
            lg.open(info)

    def _loop(self) -> None:
        """Stages in blocks of fixed batch sizes: a whole stage, or the span between re-allocations."""
        p = self.progress
        while p.stage < len(self.plan.stages):
            s, stage = p.stage, self.plan.stages[p.stage]
            every = stage.reallocate_every
            end = stage.iterations if not every else min(stage.iterations, (p.iteration // every + 1) * every)
            self._block(s, range(p.iteration, end), self.terms(s), reallocate=bool(every))

    def _block(self, s: int, iterations: range, terms: tuple[TermPlan, ...], reallocate: bool) -> None:
        """Train ``iterations`` of stage ``s`` with fixed ``terms``; re-allocate at the block's end if asked
        (before any checkpoint of that iteration, so a resumed run continues with the new batches)."""
        p = self.progress
        stage = self.plan.stages[s]
        pin = self.device.type == "cuda" and not self.resident
        keys = [(s, i) for i in iterations]
        size = self.world.size
        batches = loader(self.splits["train"], self.plan.resolution, [t.batch // size for t in terms], keys,
                         self.recipe.run.seed, self.recipe.loader.workers, pin, self.world.rank if size > 1 else None)
        work = p.work  # planned work so far, known without waiting for the flush
        step_work = sum(t.work for t in terms)
        for (_, i), clean in batches:
            self._pending.append(self.step(s, i, clean, terms))
            work += step_work
            stage_done = i + 1 == stage.iterations
            eval_due = stage_done or work >= p.next_eval
            checkpoint_due = stage_done or work >= p.next_checkpoint
            block_done = i + 1 == iterations.stop
            if eval_due or checkpoint_due or block_done or len(self._pending) >= self.recipe.run.flush_every:
                self._flush()
            p.stage, p.iteration = s, i + 1
            if reallocate and block_done and not stage_done:
                self._reallocate(s)
            if eval_due:
                self._validate_and_keep_best()
                while p.next_eval <= p.work:
                    p.next_eval += self.recipe.eval.every
            if stage_done:
                self.world.check_in_step(self.model, self.device)
                p.stage, p.iteration = s + 1, 0
                p.block_variance, p.block_iterations = [], 0
                if self.recipe.optim.reset_state_per_stage and s + 1 < len(self.plan.stages):
                    self.optimizer = self._optimizer()
            if checkpoint_due:
                while p.next_checkpoint <= p.work:
                    p.next_checkpoint += self.recipe.checkpoint.every
                self.save_checkpoint("last.pt", *([f"stage-{s}.pt"] if stage_done else []))

    def _reallocate(self, s: int) -> None:
        """Ask the estimator for new batch sizes from the block's mean variances; log the choice."""
        p = self.progress
        planned = self.plan.stages[s].terms  # the budget is the plan's, not the last block's: no drift
        variances = [v / max(1, p.block_iterations) for v in p.block_variance] or [0.0] * len(planned)
        variances = self.world.mean(variances, self.device)  # every rank must choose the same batches
        costs = [t.work / t.batch for t in planned]
        mesh = self.plan.stages[s].mesh
        relative = [Term(t.fine_mesh - mesh, None if t.coarse_mesh is None else t.coarse_mesh - mesh, t.batch) for t in planned]
        chosen = self.estimators[s].reallocate(relative, variances, costs)
        if len(chosen) != len(planned) or any(c.batch < 1 for c in chosen):
            raise RuntimeError(f"estimator '{self.plan.stages[s].estimator}' re-allocated {chosen} for {len(planned)} terms")
        size = self.world.size  # every process takes an equal share: round up to a multiple of their number
        p.allocations[str(s)] = [-(-c.batch // size) * size for c in chosen]
        p.block_variance, p.block_iterations = [], 0
        self._emit({"event": "allocation", "stage": s, "step": p.step, "work_units": p.work, "iteration": p.iteration,
                    "batches": p.allocations[str(s)], "variances": variances, "costs": costs,
                    "work_per_iteration": sum(t.work for t in self.terms(s))})

    def summary(self, test: dict) -> dict:
        p = self.progress
        return {
            "name": self.recipe.run.name,
            "recipe": self.recipe.source,
            "device": str(self.device),
            "test": test,
            "val_best_psnr": p.best_val_psnr,
            "work_units": p.work,
            "baseline_work_units": self.plan.baseline_work,
            "work_ratio": self.plan.baseline_work / p.work if p.work else None,
            "flops": p.flops,
            "seconds": p.seconds,
            "eval_seconds": p.eval_seconds,
            "iterations": p.step,
            "stages": p.stages,
            "meshes": p.meshes,
            # names in full for small splits; large datasets record the count and the first names
            "splits": {name: {"images": len(split.names), "names": list(split.names[:100])} for name, split in self.splits.items()},
            "data": self.dataset.report(),
            "versions": versions(self.loaded),
            "processes": self.world.size,
        }


def versions(loaded: Loaded) -> dict:
    """Versions of msframe, torch and every loaded plugin (recorded in every run folder)."""
    import platform

    return {"msframe": __version__, "torch": torch.__version__, "python": platform.python_version(), "plugins": loaded.versions()}
