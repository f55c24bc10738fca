"""What ``run.py`` does, without the parsing: start a run, resume a run folder, run a sweep.

All three train through :func:`train_in`, the one path of a run into its folder: write the folder's
recipe and plan if it is new, find the resume point, assemble, warn about the data, train. Each
returns the exit code of success (0) or raises what the command line turns into the others
(:class:`~msframe.errors.UserError` 2, :class:`~msframe.errors.Diverged` 3). Progress is said through
``say`` (``print``, or a no-op on the ranks that do not speak for a multi-process run); warnings go to
stderr.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from msframe import checkpoint, labels
from msframe import recipe as recipe_mod
from msframe import sweep as sweep_mod
from msframe.assembly import Assembly, Blueprint, assemble, blueprint
from msframe.distributed import World, check_shares
from msframe.errors import UserError
from msframe.recipe import Recipe
from msframe.rundir import Busy, RunFolder
from msframe.train import Trainer

Say = Callable[..., None]  # print's signature
Locate = Callable[[UserError], UserError]  # names where a start-up error comes from


def start(bp: Blueprint, out: Path, loaded, world: World = World(), say: Say = print) -> int:
    """Train ``bp`` in a new run folder ``OUT/NAME-YYYYmmdd-HHMMSS`` (made by rank 0, shared with the
    other ranks); start-up errors name the recipe file."""
    locate: Locate = lambda exc: exc.located(bp.recipe.source)
    try:
        check_shares(bp.plan, world)  # before a folder is made for a run that cannot start
        path = RunFolder.create(out, bp.recipe.run.name).path if world.main else None
    except UserError as exc:
        raise locate(exc) from None
    folder = RunFolder(world.broadcast(path))
    with _writer(folder, world):
        train_in(folder, bp, loaded, world, say, locate)
    say(f"run folder: {folder}")
    return 0


def resume(folder: RunFolder, loaded, world: World = World(), say: Say = print) -> int:
    """Continue the run in ``folder`` with the recipe saved there, from its resume point (a finished run
    is left as it is); a folder that is not a run folder, holds a symbolic link, or is locked by another
    writer (:meth:`RunFolder.lock`) is a UserError."""
    if not folder.started:
        raise UserError(f"not a run folder: {folder.recipe} is missing", key="--resume")
    folder.refuse_links()
    with _writer(folder, world):
        if folder.finished:
            say(f"{folder} has already finished ({folder.summary.name} exists); nothing to resume")
            return 0
        recipe = recipe_mod.load(folder.recipe, loaded.registry)
        say(apply_threads(recipe))
        train_in(folder, recipe, loaded, world, say, lambda exc: exc.located(str(folder.recipe)))
    say(f"run folder: {folder}")
    return 0


def _writer(folder: RunFolder, world: World):
    """The folder's writer lock, held by the process that writes (rank 0 of a multi-process run)."""
    return folder.lock() if world.main else contextlib.nullcontext()


def sweep(base: Recipe, overrides: list[str], axes: list[sweep_mod.Axis], loaded, world: World = World(),
          out: Path = Path("runs"), say: Say = print, plan_only: bool = False, max_points: int = sweep_mod.MAX_POINTS,
          workers: list[list[str]] = ()) -> int:
    """Every point of the grid of ``axes`` over ``base`` (its recipe file with ``overrides``) into the
    sweep folder ``OUT/NAME-sweep``, one run folder per point: every point is checked before any
    trains (more than ``max_points`` is refused before any is built); finished points are skipped,
    interrupted ones resumed with the recipe they started with, and points whose folder another process
    holds locked (another worker, or another machine on a shared file system) are left to it, so each
    point trains once. ``plan_only`` lists the points and their work, and trains nothing.

    ``workers`` (``--jobs N``): command lines each running this same sweep in one process; they are
    started together once the points are checked, share the points through the locks, and the sweep
    returns the highest of their exit codes.
    """
    if world.size > 1:
        raise UserError("a sweep runs its points one after another in one process; launch each point with "
                        "torchrun and --set instead", key="--sweep")
    source = base.source
    points = sweep_mod.points(axes, max_points)
    spec = sweep_mod.spec(source, overrides, axes)
    folder = Path(out) / f"{base.run.name}-sweep"
    group = sweep_mod.group_name(base.run.name, spec)
    prepared = []
    for point in points:
        try:
            prepared.append((point, blueprint(recipe_mod.load(source, loaded.registry, [*overrides, *point.overrides]))))
        except UserError as exc:
            raise _at_point(point, source)(exc) from None
    width = max(len(p.name) for p in points)
    say(f"sweep of {source}: {len(points)} runs into {folder} (W&B group {group})")
    for point, bp in prepared:
        plan = bp.plan
        say(f"  {point.name:<{width}}  {plan.iterations:>6} iterations  {plan.work:>10.1f} WU  "
            f"({labels.ratio_words(plan.baseline_work / plan.work)})")
    say(apply_threads(base), flush=True)
    if plan_only:
        return 0
    sweep_mod.prepare_folder(folder, spec)
    if workers:
        processes = [subprocess.Popen(argv) for argv in workers]
        return max(p.wait() for p in processes)
    elsewhere = 0
    for i, (point, bp) in enumerate(prepared, 1):
        run = RunFolder(folder / point.name)
        heading = f"[{i}/{len(points)}] {point.name}"
        if run.path.exists():
            run.refuse_links(key="--sweep")
        try:
            with run.lock(key="--sweep"):
                if run.finished:  # looked at under the lock: another worker may just have finished it
                    say(f"{heading}: finished earlier, skipped", flush=True)
                    continue
                # a point started earlier goes on with the recipe it started with, as --resume does
                recipe = recipe_mod.load(run.recipe, loaded.registry) if run.started else bp
                record = {"group": group, "sweep": folder.name, "axes": point.axes, "labels": point.labels,
                          "overrides": list(point.overrides)}
                said = lambda resuming, heading=heading: say(f"{heading}: {'resuming' if resuming else 'starting'}", flush=True)
                train_in(run, recipe, loaded, world, say, _at_point(point, source), point=record, begin=said)
        except Busy as busy:
            elsewhere += 1
            say(f"{heading}: skipped, {busy.message}", flush=True)
    if elsewhere:
        say(f"{elsewhere} of {len(points)} points are being trained by other processes; the same command again "
            f"resumes any they leave unfinished", flush=True)
    say(f"sweep folder: {folder} ({len(points)} runs); compare them with: python tools/compare.py {folder}")
    return 0


def _at_point(point: sweep_mod.Point, source: str) -> Locate:
    return lambda exc: UserError(f"sweep point {point.name}: {exc.located(source)}")


def train_in(folder: RunFolder, source: Recipe | Blueprint, loaded, world: World, say: Say, locate: Locate,
             point: dict | None = None, begin: Callable[[bool], None] | None = None) -> dict | None:
    """Train ``source`` in ``folder``, the one path of every run.

    A new folder (no resolved recipe yet) first gets ``source``'s resolved recipe and plan; a started
    folder must be given its own recipe. The run continues from the folder's resume point
    (:meth:`RunFolder.resume_point`) when it has one; otherwise it starts from step 0, and the data's
    warnings are said first. ``begin`` learns before anything is built whether the run resumes;
    ``point`` (a sweep's) is written into the folder, where the loggers find it. Start-up errors pass
    through ``locate``. Returns the summary (None on the ranks other than 0).
    """
    new = not folder.started
    resume_from = None if new else folder.resume_point()
    if begin is not None:
        begin(resume_from is not None)
    try:
        bp = source if isinstance(source, Blueprint) else blueprint(source)
        if world.main:
            if new:
                checkpoint.write_text(folder.recipe, bp.recipe.to_toml())
                checkpoint.write_text(folder.plan, bp.plan.describe() + "\n")
            if point is not None:
                checkpoint.write_json(folder.point, point)
        assembly = assemble(bp, loaded, world)
        trainer = Trainer(assembly, folder)
    except UserError as exc:
        raise locate(exc) from None
    if resume_from is None and world.main:
        warn_about_data(assembly, say)
    return trainer.train(resume_from=resume_from)


def warn_about_data(assembly: Assembly, say: Say = print) -> None:
    """Say before training what the summary will record about the data (e.g. upsampled images, skipped
    files), and where ``loader.resident = "auto"`` put the training images of a CUDA run."""
    report = assembly.dataset.report()
    for sentence in report.get("warnings", []):
        print(f"warning: {sentence}", file=sys.stderr)
    if report.get("skipped"):
        print(f"warning: {report['skipped']} unreadable image files skipped, e.g. {report.get('skipped_examples', [])[:3]}",
              file=sys.stderr)
    if assembly.recipe.loader.resident == "auto" and assembly.device.type == "cuda":
        size = assembly.splits["train"].nbytes()
        say(f"training images ({'unknown size' if size is None else f'{size / 2**20:.0f} MiB'}): "
            f"{'on the device' if assembly.resident else 'on the host'} (loader.resident = auto)")


# ---------------------------------------------------------------------------- what --plan says


def describe(bp: Blueprint) -> str:
    """The plan as ``--plan`` prints it: stages, the training policy, the forward passes and where the
    training images will live (without the CPU threads line of :func:`apply_threads`)."""
    return f"{bp.plan.describe()}\n{training_policy(bp.recipe)}\n{bp.plan.describe_passes()}\n{residence(bp.recipe)}"


def training_policy(recipe: Recipe) -> str:
    """One line each for the optimizer, the learning-rate policy, evaluation and checkpoints."""
    o, e, c = recipe.optim, recipe.eval, recipe.checkpoint
    policy = {"constant": "constant", "cosine": "one cosine over the whole run",
              "cosine_per_stage": "a cosine restarted in every stage",
              "constant_final_decay": "constant, then a cosine over the final stage"}[o.lr_policy]
    floor = "" if o.lr_policy == "constant" else f" down to {o.lr * o.min_lr_ratio:g}"
    state = "reset at every stage" if o.reset_state_per_stage else "carried across stages (hot start)"
    every = lambda wu: f"every {wu:g} WU and at stage ends" if wu else "at stage ends"
    return (f"optimizer: AdamW, lr {o.lr:g}, {policy}{floor}; optimizer state {state}\n"
            f"validation {every(e.every)}; checkpoints {every(c.every)}; test once at the end")


def residence(recipe: Recipe) -> str:
    """Where the training images will live (``loader.resident``), as far as known before loading them."""
    setting = recipe.loader.resident
    if setting != "auto":
        where = "on the training device" if setting else "on the host"
        return f"training images: {where} (loader.resident = {str(setting).lower()})"
    return "training images: loader.resident = auto (on a CUDA device if they fit in 1/4 of its free memory, else on the host)"


def auto_threads(env: dict = os.environ) -> tuple[int, str]:
    """The CPU thread count for ``run.threads = 0`` and why: OMP_NUM_THREADS when set, else the cores
    of this process's affinity not already busy by the 1-minute load average (at least 1)."""
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        n = int(env["OMP_NUM_THREADS"])
        return n, f"OMP_NUM_THREADS={n}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    n = max(1, min(cores, int(cores - load + 0.5)))
    return n, f"{cores} cores, load {load:.1f}"


def apply_threads(recipe: Recipe) -> str:
    """Set torch's CPU threads from ``run.threads``; returns the line that ``--plan`` prints."""
    import torch

    if recipe.run.threads:
        n, why = recipe.run.threads, "run.threads"
    else:
        n, auto_why = auto_threads()
        why = f"auto: {auto_why}; fix it with --set run.threads=N"
    torch.set_num_threads(n)
    return f"CPU threads: {n} ({why})"
