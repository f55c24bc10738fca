"""Command line: ``run.py RECIPE.toml``, ``run.py --resume RUN_FOLDER``, ``run.py plugins``.

Exit codes: 0 success, 2 a user error (recipe, data, plugin, impossible schedule, unreadable or unsafe
run folder, unwritable output), 3 training diverged (the last good checkpoint is kept), 1 an internal
failure, 130 interrupted (the last checkpoint is kept; resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from msframe import plugins, recipe as recipe_mod
from msframe import plan as plan_mod
from msframe.errors import Diverged, UserError

USAGE = """\
  run.py RECIPE.toml [--plan] [--set KEY=VALUE ...] [--out DIR]
  run.py --resume RUN_FOLDER
  run.py plugins [--json]"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        usage=USAGE,
        description="Train an image-restoration CNN with multiscale methods from a TOML recipe.",
    )
    p.add_argument("recipe", nargs="?", help="the TOML recipe to run")
    p.add_argument("--plan", action="store_true", help="print the stages, levels, batches and work, then exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key; VALUE is a TOML value (repeatable), e.g. --set schedule.batch=8")
    p.add_argument("--out", default=None, metavar="DIR", help="folder in which the run folder is made (default: runs)")
    p.add_argument("--resume", metavar="RUN_FOLDER", help="continue an interrupted run from its last checkpoint")
    return p


def _plugins_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py plugins", description="List every registered component.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _load_plugins() -> plugins.Loaded:
    """Load plugins, turning their warnings into one stderr line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", plugins.PluginWarning)
        loaded = plugins.load()
    for w in caught:
        if issubclass(w.category, plugins.PluginWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return loaded


def cmd_plugins(argv: list[str]) -> int:
    args = _plugins_parser().parse_args(argv)
    loaded = _load_plugins()
    rows = plugins.describe(loaded)
    if args.json:
        print(json.dumps({"components": rows, "failed": loaded.failures}, indent=2))
        return 0
    cols = ("kind", "name", "plugin", "distribution", "version")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    for name, reason in loaded.failures.items():
        print(f"failed: {name}: {reason}")
    return 0


def _new_run_dir(out: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"{name}-{stamp}"
    run_dir, n = base, 1
    try:
        while run_dir.exists():
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
        run_dir.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot make the run folder {run_dir}: {exc.strerror or exc}", key="--out") from None
    return run_dir


def _refuse_links(run_dir: Path) -> None:
    """A run folder to resume holds no symbolic link: a shared folder could otherwise point a checkpoint
    or log write at any file the user can write."""
    for root, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise UserError(f"{os.path.join(root, name)} is a symbolic link; a run folder to resume holds none "
                                "(writes must stay inside it)", key="--resume")


def _stage_number(path: Path) -> int:
    _, _, n = path.stem.partition("-")
    return int(n) if n.isdigit() else -1


def _resume_point(run_dir: Path) -> Path | None:
    """``checkpoints/last.pt``, or when it is missing or unreadable the newest readable ``stage-N.pt``
    (said on stderr); None when the run never wrote a checkpoint. Every candidate is read with
    weights_only; a checkpoint that may carry code (:class:`checkpoint.Unsafe`) stops the resume."""
    from msframe import checkpoint

    folder = run_dir / "checkpoints"
    last = folder / "last.pt"
    stages = sorted(folder.glob("stage-*.pt"), key=_stage_number, reverse=True)
    if not last.exists() and not stages:
        return None  # killed before the first checkpoint: the run starts over
    problem: UserError | None = None  # why last.pt was passed over (the first candidate always sets it)
    for candidate in [last, *stages]:
        try:
            checkpoint.load(candidate)
        except checkpoint.Unsafe:
            raise
        except checkpoint.Unreadable as exc:
            if candidate == last:
                problem = exc
            continue
        if candidate != last:
            print(f"warning: {problem}; resuming from {candidate} instead", file=sys.stderr)
        return candidate
    raise UserError(f"{problem}; and no readable stage checkpoint to fall back on", key="--resume")


def _training_policy(recipe) -> str:
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


def _warn_about_data(trainer) -> None:
    """Say before training what the summary will record about the data (e.g. upsampled images)."""
    report = trainer.dataset.report()
    for sentence in report.get("warnings", []):
        print(f"warning: {sentence}", file=sys.stderr)
    if report.get("skipped"):
        print(f"warning: {report['skipped']} unreadable image files skipped, e.g. {report.get('skipped_examples', [])[:3]}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from msframe import distributed

    world = distributed.init()  # one process, or one rank of a torchrun launch
    try:
        return _run(args, world)
    finally:
        distributed.shutdown(world)


def _run(args: argparse.Namespace, world) -> int:
    from msframe import checkpoint, distributed
    from msframe.train import Trainer

    say = print if world.main else (lambda *a, **k: None)  # rank 0 speaks for the run
    loaded = _load_plugins()
    if args.resume:
        if args.recipe or args.overrides or args.plan or args.out is not None:
            raise UserError("--resume takes only the run folder (it continues in place; --out, --set and a recipe "
                            "are refused); the recipe is the one saved in it", key="--resume")
        run_dir = Path(args.resume)
        resolved = run_dir / "recipe.resolved.toml"
        if not resolved.is_file():
            raise UserError(f"not a run folder: {resolved} is missing", key="--resume")
        _refuse_links(run_dir)
        if (run_dir / "summary.json").is_file():
            say(f"{run_dir} has already finished (summary.json exists); nothing to resume")
            return 0
        recipe = recipe_mod.load(resolved, loaded.registry)
        start = _resume_point(run_dir)
        try:
            trainer = Trainer(recipe, loaded, run_dir, world=world)
        except UserError as exc:
            raise exc.located(str(resolved)) from None
        trainer.train(resume_from=start)
        say(f"run folder: {run_dir}")
        return 0

    if not args.recipe:
        raise UserError("no recipe given (usage: run.py RECIPE.toml, run.py --resume RUN_FOLDER or run.py plugins)")
    recipe = recipe_mod.load(args.recipe, loaded.registry, args.overrides)
    try:
        plan = plan_mod.for_recipe(recipe)
        say(f"plan of {args.recipe}:\n{plan.describe()}\n{_training_policy(recipe)}\n", flush=True)
        if args.plan:
            return 0
        distributed.check_shares(plan, world)
        run_dir = None
        if world.main:
            run_dir = _new_run_dir(Path(args.out or "runs"), recipe.run.name)
            checkpoint.write_text(run_dir / "recipe.resolved.toml", recipe.to_toml())
            checkpoint.write_text(run_dir / "plan.txt", plan.describe() + "\n")
        run_dir = world.broadcast(run_dir)
        trainer = Trainer(recipe, loaded, run_dir, world=world)
    except UserError as exc:
        raise exc.located(args.recipe) from None
    if world.main:
        _warn_about_data(trainer)
    trainer.train()
    say(f"run folder: {run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["plugins"]:
            return cmd_plugins(argv[1:])
        return cmd_run(_parser().parse_args(argv))
    except Diverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept (continue with --resume RUN_FOLDER)", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("internal error: this is a bug in msframe or a plugin; please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
