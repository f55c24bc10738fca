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

from msframe import checkpoint, distributed, inference, introspect, plugins, recipe as recipe_mod, session, starter
from msframe import sweep as sweep_mod
from msframe.assembly import blueprint
from msframe.errors import Diverged, UserError
from msframe.registry import BASES
from msframe.rundir import RunFolder

USAGE = """\
  run.py RECIPE.toml [--plan | --print-recipe] [--set KEY=VALUE ...] [--out DIR]
  run.py RECIPE.toml --sweep KEY=V1,V2,... [--sweep ...] [--seeds N] [--set ...] [--out DIR]
  run.py --resume RUN_FOLDER
  run.py plugins [--json]
  run.py describe KIND NAME [--json]
  run.py evaluate RUN_FOLDER [--data TABLE] [--split test] [--weights best|last] [--out DIR]
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


def _run(args: argparse.Namespace, world) -> int:
    """Resume, sweep, print the recipe or the plan, or start a run, as ``args`` ask."""
    say = print if world.main else (lambda *a, **k: None)  # rank 0 speaks for the run
    loaded = _load_plugins()
    if args.resume:
        if (args.recipe or args.overrides or args.plan or args.sweep or args.seeds is not None or args.print_recipe
                or args.out is not None):
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
        axes = [sweep_mod.parse_axis(a) for a in args.sweep]
        if args.seeds is not None:
            axes.append(sweep_mod.seed_axis(args.seeds, recipe.run.seed))
        return session.sweep(recipe, args.overrides, axes, loaded, world, out, say, plan_only=args.plan)
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
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run's recipe, e.g. --set eval.tiles_per_image=8")
    p.add_argument("--out", metavar="DIR", help="where evaluation.json and samples.png go "
                   "(default: RUN_FOLDER/evaluations/<dataset>-<split>-<weights>)")
    _weights_arg(p)
    args = p.parse_args(argv)
    loaded = _load_plugins()
    overrides = list(args.overrides)
    if args.data:
        table = args.data.strip()
        overrides.append(f"data={table if table.startswith('{') else '{' + table + '}'}")
    folder = RunFolder(args.run)
    data_source = "--data" if args.data else str(folder.recipe)
    trained = inference.load_run(folder.path, loaded, args.weights, overrides, args.device, data_source)
    recipe = trained.recipe
    try:
        split = trained.dataset.split(args.split)
    except UserError as exc:
        raise exc.located(data_source) from None
    resolution = recipe.schedule.resolution
    if split.usable(resolution) < 1:
        raise UserError(f"the {args.split} split has no image of at least {resolution} px (the run's "
                        f"schedule.resolution)", key="--data" if args.data else "--split")
    batch = inference.eval_batch(recipe, trained.task, split, args.split, resolution)
    result = inference.evaluate(trained.model, trained.task, batch, trained.device)
    out = Path(args.out) if args.out else folder.evaluation(recipe.data.name, args.split, args.weights)
    inference.save_samples(trained.model, trained.task, batch, trained.device, out / "samples.png")
    checkpoint.write_json(out / "evaluation.json", {"run": str(args.run), "weights": str(trained.weights),
                                                    "split": args.split, "data": recipe.data.to_dict(), **result})
    print(f"{args.split} split of {recipe.data.name}, {args.weights} weights: PSNR {result['psnr']:.2f} dB "
          f"(input {result.get('input_psnr', float('nan')):.2f}), SSIM {result['ssim']:.4f} "
          f"(input {result.get('input_ssim', float('nan')):.4f}) on {result['images']} tiles")
    print(f"wrote {out / 'evaluation.json'} and {out / 'samples.png'}")
    return 0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}


def _image_files(paths: list[str]) -> list[Path]:
    """The image files named by ``IMAGE`` arguments: files as given, folders searched recursively."""
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path} does not exist", key="IMAGE")
    if not files:
        raise UserError(f"no image files in {', '.join(paths)} (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})", key="IMAGE")
    return files


def cmd_restore(argv: list[str]) -> int:
    """``run.py restore``: a run's network applied to image files, one PNG each."""
    p = argparse.ArgumentParser(prog="run.py restore", description="Apply a trained run's network to degraded "
                                "image files (or folders of them); writes one PNG per image.")
    p.add_argument("run", metavar="RUN_FOLDER")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR")
    _weights_arg(p)
    args = p.parse_args(argv)
    loaded = _load_plugins()
    trained = inference.load_run(Path(args.run), loaded, args.weights, device=args.device)
    task = trained.task
    if task.input_channels(trained.channels) != trained.channels or task.cond_channels():
        raise UserError(f"task '{trained.recipe.task.name}' gives the network more than the degraded image (a mask "
                        f"or a noise level), which image files do not hold; restore works for tasks whose input is "
                        f"the image alone", key="RUN_FOLDER")
    files = _image_files(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        target = out / f"{file.stem}.png"
        inference.write_image(inference.restore_image(trained, inference.read_image(file, trained.channels)), target)
        print(f"{file} -> {target}")
    print(f"restored {len(files)} images with {trained.weights}")
    return 0


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
