"""The core sections of a recipe ([run], [schedule], [optim], [eval], [checkpoint], [loader]): their
fields, defaults, bounds and the rules between fields. Plugin sections are checked by each plugin's own
``Params`` (:mod:`msframe.components`); :mod:`msframe.recipe` reads and validates a whole recipe.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from msframe import fielddocs


class Section(fielddocs.Described):
    """Base of the core sections: frozen, no unknown key, no inf or NaN, each field's trailing comment
    its description (:class:`msframe.fielddocs.Described`)."""


#: Bounds that keep an absurd value from hanging the plan or exhausting memory (10**18 levels, ...)
MAX_ITERATIONS = 10**9
MAX_WORK = 1e15


class RunSection(Section):
    name: str = Field("", max_length=200)  # names the run folder; the recipe file's stem when empty
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = "auto"  # "auto" picks CUDA when present, else CPU
    flush_every: int = Field(10, ge=1, le=10**6)
    # a training loss this many times the run's first loss (in the task's units, Task.exploded) is a
    # divergence, as is any non-finite loss; 0 disables the factor
    divergence_factor: float = Field(1e4, ge=0, le=1e30)
    # what a divergence does: "stop" (exit 3, the last checkpoint kept), or "lower_lr": go back to the
    # last checkpoint and go on with a tenth of the learning rate, at most three times, then stop
    on_divergence: Literal["stop", "lower_lr"] = "stop"
    # torch.compile the network for training steps ("default": fused kernels), one static-shape graph
    # per distinct (resolution, batch) of the plan, compiled on first use; evaluation stays eager
    compile: Literal["off", "default"] = "off"
    # CPU threads of torch; 0 = auto: the cores not already busy (by the 1-minute load average), at
    # least 1, or OMP_NUM_THREADS when set. Oversubscribed threads made runs 12-18x slower on a
    # loaded 2-core machine. The thread count changes float sums: keep it fixed to repeat a run exactly.
    threads: int = Field(0, ge=0, le=4096)
    # one network pass per mesh per iteration over the concatenated batch of every term on it, when the
    # backbone declares its samples independent (Capabilities.batch_independent); "off": one pass per half
    merge_passes: Literal["auto", "off"] = "auto"

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the run folder is made as OUT/NAME-STAMP: a separator or '..' would put it outside --out
        if v in (".", "..") or any(c in v for c in "/\\\x00") or any(ord(c) < 32 for c in v):
            raise ValueError("must be a plain name: no '/', '\\', control characters or NUL, and not '.' or '..'")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return v


class StageSection(Section):
    """One Full-Multiscale stage written out as a ``[[schedule.stage]]`` table."""

    iterations: int | None = Field(None, ge=1, le=MAX_ITERATIONS)
    work: float | None = Field(None, gt=0, le=MAX_WORK)  # a work-unit budget instead of iterations
    batch: int | None = Field(None, ge=1, le=2**20)  # at the stage's finest mesh; default: schedule.batch
    estimator: dict | None = None  # this stage's estimator table (type = ...), instead of [estimator]

    @model_validator(mode="after")
    def _length(self):
        if (self.iterations is None) == (self.work is None):
            raise ValueError("give the stage either iterations or work")
        return self


class ScheduleSection(Section):
    """Full-Multiscale stages, coarse to fine.

    ``levels`` meshes of sides resolution, resolution/2, …; one stage per entry of ``iterations``
    (or of ``work``, or per ``[[schedule.stage]]`` table), the last stage at the finest mesh and each
    earlier one a mesh coarser. ``budget`` instead gives the whole run's work units, shared among the
    stages by ``split``: one weight per stage (coarse → fine; their number is the number of stages),
    or, by default, ``levels`` stages each given half the work of the one before it (weights
    …, 4, 2, 1: most of the budget on the cheap coarse meshes, measured best for the hot start).
    ``batch`` is the batch at each stage's finest mesh (one number for all stages, or one per stage).
    """

    resolution: int = Field(64, ge=2, le=2**16)
    levels: int = Field(1, ge=1, le=16)
    iterations: list[int] | None = None  # per stage; default [100] when no work budget is given
    work: list[float] | None = None  # per stage, in work units, instead of iterations
    budget: float | None = Field(None, gt=0, le=MAX_WORK)  # the whole run's work units, shared by ``split``
    split: list[float] | None = None  # per-stage weights of ``budget`` (coarse -> fine); default halving
    stage: list[StageSection] | None = None  # the stage-by-stage form, instead of the two lists
    batch: int | list[int] = 16
    # the single-scale reference's iterations; 0 = the budget at the finest batch, else the sum of iterations
    baseline_iterations: int = Field(0, ge=0, le=MAX_ITERATIONS)

    @field_validator("iterations")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(i < 1 or i > MAX_ITERATIONS for i in v)):
            raise ValueError(f"give at least one stage, each with 1 to {MAX_ITERATIONS:.0e} iterations")
        return v

    @field_validator("work")
    @classmethod
    def _budgets(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not 0 < w <= MAX_WORK for w in v)):
            raise ValueError(f"give at least one stage, each with a positive work budget of at most {MAX_WORK:.0e} WU")
        return v

    @field_validator("split")
    @classmethod
    def _weights(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not w > 0 for w in v)):
            raise ValueError("give one positive weight per stage (coarse -> fine)")
        return v

    @model_validator(mode="after")
    def _one_length(self):
        given = [k for k in ("iterations", "work", "budget", "stage") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give the stages one way: iterations, work, budget (with split), or [[schedule.stage]] tables")
        if self.split is not None and self.budget is None:
            raise ValueError("split shares a budget among the stages: give budget too")
        if self.stage is not None and not self.stage:
            raise ValueError("give at least one [[schedule.stage]] table")
        if not given:
            object.__setattr__(self, "iterations", [100])
        return self

    def stage_specs(self) -> list[tuple[int | None, float | None, int | None]]:
        """Per stage, coarse to fine: (iterations or None, work budget or None, batch or None)."""
        if self.stage is not None:
            return [(st.iterations, st.work, st.batch) for st in self.stage]
        if self.iterations is not None:
            return [(i, None, None) for i in self.iterations]
        if self.budget is not None:
            weights = self.split or [2.0 ** (self.levels - 1 - s) for s in range(self.levels)]
            return [(None, self.budget * w / sum(weights), None) for w in weights]
        return [(None, w, None) for w in self.work]

    @property
    def stages(self) -> int:
        return len(self.stage_specs())

    @field_validator("batch")
    @classmethod
    def _batch(cls, v):
        values = v if isinstance(v, list) else [v]
        if not values or any(b < 1 or b > 2**20 for b in values):
            raise ValueError("batch sizes must be 1 to 1048576")
        return v


class OptimSection(Section):
    # upper bounds far above any useful value, below those that overflow inside the optimizer's step
    lr: float = Field(1e-3, gt=0, le=1e6)
    weight_decay: float = Field(0.0, ge=0, le=1e6)
    # constant; cosine over the whole run (the reference); cosine restarted in every stage; constant
    # until the final stage, then a cosine over the final stage (the default: measured best for the
    # hot start, README "Schedules")
    lr_policy: Literal["constant", "cosine", "cosine_per_stage", "constant_final_decay"] = "constant_final_decay"
    min_lr_ratio: float = Field(0.01, ge=0, le=1)  # floor of the cosine policies, relative to lr
    warmup: int = Field(20, ge=0, le=MAX_ITERATIONS)  # iterations of a linear ramp of the learning rate at the run's start
    reset_state_per_stage: bool = False  # False: Adam moments carry over into the next stage (hot start)


class EvalSection(Section):
    """How validation (which picks best.pt) and the final test score a network.

    ``protocol = "whole"`` (the field's protocol): each held-out image whole, degraded once, restored
    fully convolutionally (padded to the backbone's size rules, cropped back) and scored per image;
    the result gives means over images with their spread. ``"tiles"``: means over ``tiles_per_image``
    square crops of ``schedule.resolution`` px per image, the measure of msframe <= 0.2 (the "tile average").
    """

    every: float = Field(0.0, ge=0)  # work units between validations; 0 = at stage ends only
    protocol: Literal["whole", "tiles"] = "whole"
    # scored channels of whole images: "y" = BT.601 luma of RGB (as super-resolution papers), "rgb" = all
    # channels; "auto": y for a task of scale > 1 on RGB data, rgb otherwise
    channel: Literal["auto", "y", "rgb"] = "auto"
    shave: int = Field(-1, ge=-1, le=1024)  # px left out at each border of whole images; -1: the task's scale if > 1, else 0
    # whole images whose longer (clean) side exceeds this are restored in overlapping tiles of at most
    # this side (said in the result's "tiled"), to bound the network's memory; 0 = never tile
    max_side: int = Field(2048, ge=0, le=2**16)
    tiles_per_image: int = Field(4, ge=1, le=1024)  # protocol "tiles" (and the sample grids)
    max_images: int = Field(64, ge=1, le=10**6)  # images of a split used for evaluation (bounds memory and time)
    seed: int = 12345  # degradation seed of validation and test, fixed so numbers compare


class CheckpointSection(Section):
    every: float = Field(0.0, ge=0)  # work units between checkpoints; stage ends always checkpoint


class LoaderSection(Section):
    workers: int = Field(0, ge=0, le=256)  # DataLoader worker processes for the training crops
    # keep the decoded training images on the training device as uint8 and cut crops there, so that
    # loading never stalls a GPU step (needs workers = 0: worker processes cannot share device memory);
    # "auto": on CUDA with workers = 0 when they take at most a quarter of the free device memory
    resident: bool | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _resident_in_process(self):
        if self.resident is True and self.workers:
            raise ValueError("resident = true cuts crops on the device in the main process; set workers = 0")
        return self


CORE: dict[str, type[Section]] = {
    "run": RunSection,
    "schedule": ScheduleSection,
    "optim": OptimSection,
    "eval": EvalSection,
    "checkpoint": CheckpointSection,
    "loader": LoaderSection,
}
