"""Command line: ``run.py RECIPE.toml``, ``run.py --resume RUN_FOLDER``, sweeps, ``run.py plugins``,
``run.py describe``, ``run.py evaluate`` and ``run.py restore`` (also ``python -m msframe``).

This module parses; :mod:`msframe.session` starts, resumes and sweeps runs, :mod:`msframe.introspect`
describes components, :mod:`msframe.inference` evaluates and restores.

Exit codes: 0 success, 2 a user error (recipe, data, plugin, impossible schedule, unreadable or unsafe
run folder, unwritable output), 3 training diverged (the last good checkpoint is kept), 1 an internal
failure, 130 interrupted (the last checkpoint is kept; resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

from msframe import distributed, introspect, plugins, session, starter, trained
from msframe import recipe as recipe_mod
from msframe import sweep as sweep_mod
from msframe.assembly import blueprint
from msframe.errors import Diverged, UserError
from msframe.registry import BASES
from msframe.rundir import RunFolder

USAGE = """\
  run.py RECIPE.toml [--plan | --print-recipe] [--set KEY=VALUE ...] [--out DIR]
  run.py RECIPE.toml --sweep KEY=V1,V2,... [--sweep ...] [--seeds N] [--jobs N] [--max-points N] [--set ...] [--out DIR]
  run.py --resume RUN_FOLDER
  run.py plugins [--json]
  run.py describe KIND NAME [--json]
  run.py evaluate RUN_FOLDER [--data TABLE | --images FOLDER] [--split test] [--weights best|last] [--out DIR]
  run.py restore RUN_FOLDER IMAGE... --out DIR [--weights best|last]
  run.py new-plugin NAME --kind task|backbone|resampler|dataset [--out DIR]
  run.py schema [--out FILE]"""


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
    p.add_argument("--print-recipe", action="store_true",
                   help="print the resolved recipe (every default filled in, overrides applied) as TOML, then exit")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="run the recipe for every value of KEY (TOML values; repeat for a grid) into OUT/<name>-sweep/; "
                        "the same command again resumes an interrupted sweep")
    p.add_argument("--seeds", type=int, metavar="N", help="a sweep axis of N seeds: run.seed, run.seed + 1, ...")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train a sweep's points in N processes at once (each point in one of them, once)")
    p.add_argument("--max-points", type=int, default=sweep_mod.MAX_POINTS, metavar="N",
                   help=f"the most points a sweep may have (default {sweep_mod.MAX_POINTS}), checked before any is built")
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
    """``run.py plugins``: every registered component and the plugins that failed, as a table or JSON."""
    args = _plugins_parser().parse_args(argv)
    loaded = _load_plugins()
    rows = plugins.describe(loaded)
    if args.json:
        rows = [{**r, **introspect.schema(loaded.registry.get(r["kind"], r["name"]))} if _unique(loaded, r) else r
                for r in rows]
        print(json.dumps({"components": rows, "failed": loaded.failures, "notes": loaded.notes}, indent=2))
        return 0
    cols = ("kind", "name", "plugin", "distribution", "version", "api")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    for name, reason in loaded.failures.items():
        print(f"failed: {name}: {reason}")
    for name, note in loaded.notes.items():
        print(f"note: {name}: {note}")
    return 0


def _unique(loaded, row: dict) -> bool:
    """Whether one registry entry has the row's kind and name (a clash lists several, and gets no schema)."""
    return len([e for e in loaded.registry.entries() if (e.kind, e.name) == (row["kind"], row["name"])]) == 1


def _agent_args(argv: list[str]) -> argparse.Namespace:
    """Parse a run's arguments; under a W&B sweep agent, add the agent's parameters as overrides and
    make sure the run has a wandb logger (the agent waits for its W&B run)."""
    extra, argv = sweep_mod.agent_overrides(argv)
    args = _parser().parse_args(argv)
    if extra and args.recipe:
        data = recipe_mod.read_toml(args.recipe)
        loggers = data.get("loggers")
        if loggers is None:
            extra = [f"loggers.{n}={{}}" for n in recipe_mod.DEFAULT_LOGGERS] + extra
        if not isinstance(loggers, dict) or "wandb" not in loggers:
            extra.append("loggers.wandb={}")
        args.overrides = [*args.overrides, *extra]
        print(f"W&B sweep agent: overrides {' '.join(extra)}", file=sys.stderr)
    return args


def cmd_run(argv: list[str]) -> int:
    """``run.py RECIPE.toml``, ``--resume`` and ``--sweep``, in one process or as one rank of a torchrun launch."""
    args = _agent_args(argv)
    world = distributed.init()
    try:
        code = _run(args, world)
        distributed.leave_together(world)
        return code
    finally:
        distributed.shutdown(world)


def _sweep_worker(args: argparse.Namespace, out: Path) -> list[str]:
    """The command line of one ``--jobs`` worker: this sweep, in one process."""
    if not 1 <= args.jobs <= 256:
        raise UserError(f"--jobs must be between 1 and 256 (got {args.jobs})", key="--jobs")
    argv = [sys.executable, "-m", "msframe", args.recipe, "--out", str(out), "--max-points", str(args.max_points)]
    argv += [x for o in args.overrides for x in ("--set", o)] + [x for a in args.sweep for x in ("--sweep", a)]
    return argv + ([] if args.seeds is None else ["--seeds", str(args.seeds)])


def _run(args: argparse.Namespace, world) -> int:
    """Resume, sweep, print the recipe or the plan, or start a run, as ``args`` ask."""
    say = print if world.main else (lambda *a, **k: None)  # rank 0 speaks for the run
    loaded = _load_plugins()
    if args.resume:
        if (args.recipe or args.overrides or args.plan or args.sweep or args.seeds is not None or args.print_recipe
                or args.out is not None or args.jobs != 1):
            raise UserError("--resume takes only the run folder (it continues in place; --out, --set, --sweep and a "
                            "recipe are refused); the recipe is the one saved in it", key="--resume")
        return session.resume(RunFolder(args.resume), loaded, world, say)
    if not args.recipe:
        raise UserError("no recipe given (usage: run.py RECIPE.toml, run.py --resume RUN_FOLDER or run.py plugins)")
    recipe = recipe_mod.load(args.recipe, loaded.registry, args.overrides)
    if args.print_recipe:
        print(recipe.to_toml(), end="")
        return 0
    out = Path(args.out or "runs")
    if args.sweep or args.seeds is not None:
        if args.max_points < 1:
            raise UserError(f"--max-points must be at least 1 (got {args.max_points})", key="--max-points")
        axes = [sweep_mod.parse_axis(a) for a in args.sweep]
        if args.seeds is not None:
            axes.append(sweep_mod.seed_axis(args.seeds, recipe.run.seed, args.max_points))
        workers = [] if args.plan or args.jobs == 1 else [_sweep_worker(args, out)] * args.jobs
        return session.sweep(recipe, args.overrides, axes, loaded, world, out, say, plan_only=args.plan,
                             max_points=args.max_points, workers=workers)
    if args.jobs != 1:
        raise UserError("--jobs is for sweeps (with --sweep or --seeds)", key="--jobs")
    try:
        bp = blueprint(recipe)
    except UserError as exc:
        raise exc.located(args.recipe) from None
    say(f"plan of {args.recipe}:\n{session.describe(bp)}\n{session.apply_threads(recipe)}\n", flush=True)
    if args.plan:
        return 0
    return session.start(bp, out, loaded, world, say)


def cmd_describe(argv: list[str]) -> int:
    """``run.py describe KIND NAME``: a component's parameters and docstring (see :mod:`msframe.introspect`)."""
    p = argparse.ArgumentParser(prog="run.py describe", description="Show a component's parameters, types, "
                                "defaults and documentation.")
    p.add_argument("kind", help=f"one of: {', '.join(BASES)}")
    p.add_argument("name", help="the component's registered name (see run.py plugins)")
    p.add_argument("--json", action="store_true", help="print JSON (with the parameters' JSON schema)")
    args = p.parse_args(argv)
    if args.kind not in BASES:
        raise UserError(f"unknown kind {args.kind!r} (allowed: {', '.join(BASES)})", key="KIND")
    loaded = _load_plugins()
    entry = loaded.registry.get(args.kind, args.name, key="NAME")
    info = introspect.schema(entry)
    if args.json:
        print(json.dumps({"kind": entry.kind, "name": entry.name, "origin": str(entry.origin), **info}, indent=2))
        return 0
    print(introspect.describe(entry, info))
    return 0


# ---------------------------------------------------------------------------- evaluate and restore


def _weights_arg(p: argparse.ArgumentParser) -> None:
    """The options that choose a run's weights and where its network runs."""
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="checkpoints/best.pt (best validation PSNR, the default) or checkpoints/last.pt")
    p.add_argument("--device", help="cpu, cuda, ... (default: the run's run.device)")



def cmd_evaluate(argv: list[str]) -> int:
    """``run.py evaluate``: a run's weights tested on a split of its own or another dataset."""
    p = argparse.ArgumentParser(prog="run.py evaluate", description="Test a trained run's weights on a split of any "
                                "dataset: PSNR/SSIM of restored and naive baseline, and a samples grid.")
    p.add_argument("run", metavar="RUN_FOLDER")
    p.add_argument("--data", metavar="TABLE", help='the dataset, as a TOML inline table, e.g. '
                   '\'{type="image_folder", root="photos"}\' (default: the run\'s own)')
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--images", metavar="FOLDER", help="evaluate on the clean images of FOLDER instead of a split "
                   "(each degraded with eval.seed; whole-image protocol; per-image rows in images.jsonl and .csv)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run's recipe, e.g. --set eval.tiles_per_image=8")
    p.add_argument("--out", metavar="DIR", help="where evaluation.json and samples.png go "
                   "(default: RUN_FOLDER/evaluations/<dataset>-<split>-<weights>)")
    _weights_arg(p)
    args = p.parse_args(argv)
    return trained.evaluate_run(RunFolder(args.run), _load_plugins(), args.weights, args.device, args.overrides,
                                data=args.data, split=args.split, images=args.images, out_arg=args.out)


def cmd_restore(argv: list[str]) -> int:
    """``run.py restore``: a run's network applied to image files, one PNG each, never over an existing
    file (see :func:`_free_target`) and never into an input folder."""
    p = argparse.ArgumentParser(prog="run.py restore", description="Apply a trained run's network to degraded "
                                "image files (or folders of them); writes one PNG per image.")
    p.add_argument("run", metavar="RUN_FOLDER")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--max-pixels", type=int, default=trained.MAX_PIXELS, metavar="N",
                   help=f"refuse images of more than N pixels (default {trained.MAX_PIXELS})")
    _weights_arg(p)
    args = p.parse_args(argv)
    if args.max_pixels < 1:
        raise UserError(f"--max-pixels must be at least 1 (got {args.max_pixels})", key="--max-pixels")
    return trained.restore_files(RunFolder(args.run), _load_plugins(), args.weights, args.device, args.images,
                                 Path(args.out), args.max_pixels)


COMMANDS = {"plugins": cmd_plugins, "describe": cmd_describe, "evaluate": cmd_evaluate, "restore": cmd_restore,
            "new-plugin": starter.main, "schema": lambda argv: introspect.schema_command(argv, _load_plugins)}


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the process's arguments) and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return cmd_run(argv)
    except Diverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept (continue with --resume RUN_FOLDER)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading (`| head`): nothing more to say, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:
        traceback.print_exc()
        print("internal error: this is a bug in msframe or a plugin; please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
