"""Command line: ``run.py RECIPE.toml``, ``run.py --resume RUN_FOLDER``, sweeps, ``run.py plugins``,
``run.py describe``, ``run.py evaluate`` and ``run.py restore``.

Exit codes: 0 success, 2 a user error (recipe, data, plugin, impossible schedule, unreadable or unsafe
run folder, unwritable output), 3 training diverged (the last good checkpoint is kept), 1 an internal
failure, 130 interrupted (the last checkpoint is kept; resume with --resume).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

from msframe import plugins, recipe as recipe_mod
from msframe import labels, sweep as sweep_mod
from msframe.assembly import assemble, blueprint
from msframe.errors import Diverged, UserError

USAGE = """\
  run.py RECIPE.toml [--plan | --print-recipe] [--set KEY=VALUE ...] [--out DIR]
  run.py RECIPE.toml --sweep KEY=V1,V2,... [--sweep ...] [--seeds N] [--set ...] [--out DIR]
  run.py --resume RUN_FOLDER
  run.py plugins [--json]
  run.py describe KIND NAME [--json]
  run.py evaluate RUN_FOLDER [--data TABLE] [--split test] [--weights best|last] [--out DIR]
  run.py restore RUN_FOLDER IMAGE... --out DIR [--weights best|last]"""


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
    args = _plugins_parser().parse_args(argv)
    loaded = _load_plugins()
    rows = plugins.describe(loaded)
    if args.json:
        rows = [{**r, **_schema(loaded.registry.get(r["kind"], r["name"]))} if _unique(loaded, r) else r for r in rows]
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


def _residence(recipe) -> str:
    """Where the training images will live (``loader.resident``), as far as known before loading them."""
    setting = recipe.loader.resident
    if setting != "auto":
        return f"training images: {'on the training device' if setting else 'on the host'} (loader.resident = {str(setting).lower()})"
    return "training images: loader.resident = auto (on a CUDA device if they fit in 1/4 of its free memory, else on the host)"


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


def _warn_about_data(assembly) -> None:
    """Say before training what the summary will record about the data (e.g. upsampled images)."""
    report = assembly.dataset.report()
    for sentence in report.get("warnings", []):
        print(f"warning: {sentence}", file=sys.stderr)
    if report.get("skipped"):
        print(f"warning: {report['skipped']} unreadable image files skipped, e.g. {report.get('skipped_examples', [])[:3]}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from msframe import distributed

    world = distributed.init()  # one process, or one rank of a torchrun launch
    try:
        code = _run(args, world)
        distributed.leave_together(world)
        return code
    finally:
        distributed.shutdown(world)


def _run(args: argparse.Namespace, world) -> int:
    from msframe import checkpoint, distributed
    from msframe.train import Trainer

    say = print if world.main else (lambda *a, **k: None)  # rank 0 speaks for the run
    loaded = _load_plugins()
    if args.resume:
        if (args.recipe or args.overrides or args.plan or args.sweep or args.seeds is not None or args.print_recipe
                or args.out is not None):
            raise UserError("--resume takes only the run folder (it continues in place; --out, --set, --sweep and a "
                            "recipe are refused); the recipe is the one saved in it", key="--resume")
        run_dir = Path(args.resume)
        resolved = run_dir / "recipe.resolved.toml"
        if not resolved.is_file():
            raise UserError(f"not a run folder: {resolved} is missing", key="--resume")
        _refuse_links(run_dir)
        if (run_dir / "summary.json").is_file():
            say(f"{run_dir} has already finished (summary.json exists); nothing to resume")
            return 0
        recipe = recipe_mod.load(resolved, loaded.registry)
        say(_apply_threads(recipe))
        start = _resume_point(run_dir)
        try:
            trainer = Trainer(assemble(recipe, loaded, world), run_dir)
        except UserError as exc:
            raise exc.located(str(resolved)) from None
        trainer.train(resume_from=start)
        say(f"run folder: {run_dir}")
        return 0

    if not args.recipe:
        raise UserError("no recipe given (usage: run.py RECIPE.toml, run.py --resume RUN_FOLDER or run.py plugins)")
    recipe = recipe_mod.load(args.recipe, loaded.registry, args.overrides)
    if args.print_recipe:
        print(recipe.to_toml(), end="")
        return 0
    if args.sweep or args.seeds is not None:
        return _run_sweep(args, loaded, recipe, world)
    try:
        bp = blueprint(recipe)
        plan = bp.plan
        say(f"plan of {args.recipe}:\n{plan.describe()}\n{_training_policy(recipe)}\n{plan.describe_passes()}\n"
            f"{_residence(recipe)}\n{_apply_threads(recipe)}\n", flush=True)
        if args.plan:
            return 0
        distributed.check_shares(plan, world)
        run_dir = None
        if world.main:
            run_dir = _new_run_dir(Path(args.out or "runs"), recipe.run.name)
            checkpoint.write_text(run_dir / "recipe.resolved.toml", recipe.to_toml())
            checkpoint.write_text(run_dir / "plan.txt", plan.describe() + "\n")
        run_dir = world.broadcast(run_dir)
        assembly = assemble(bp, loaded, world)
        trainer = Trainer(assembly, run_dir)
    except UserError as exc:
        raise exc.located(args.recipe) from None
    if world.main:
        _warn_about_data(assembly)
        if recipe.loader.resident == "auto" and assembly.device.type == "cuda":
            size = assembly.splits["train"].nbytes()
            say(f"training images ({'unknown size' if size is None else f'{size / 2**20:.0f} MiB'}): "
                f"{'on the device' if assembly.resident else 'on the host'} (loader.resident = auto)")
    trainer.train()
    say(f"run folder: {run_dir}")
    return 0


# ---------------------------------------------------------------------------- threads


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


def _apply_threads(recipe) -> str:
    """Set torch's CPU threads from ``run.threads``; returns the line that ``--plan`` prints."""
    import torch

    if recipe.run.threads:
        n, why = recipe.run.threads, "run.threads"
    else:
        n, auto_why = auto_threads()
        why = f"auto: {auto_why}; fix it with --set run.threads=N"
    torch.set_num_threads(n)
    return f"CPU threads: {n} ({why})"


# ---------------------------------------------------------------------------- sweeps


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


def _run_sweep(args: argparse.Namespace, loaded, base, world) -> int:
    """Every point of the grid into one sweep folder; finished points are skipped, interrupted ones resumed."""
    from msframe import checkpoint
    from msframe.train import Trainer

    if world.size > 1:
        raise UserError("a sweep runs its points one after another in one process; launch each point with "
                        "torchrun and --set instead", key="--sweep")
    axes = [sweep_mod.parse_axis(a) for a in args.sweep]
    if args.seeds is not None:
        axes.append(sweep_mod.seed_axis(args.seeds, base.run.seed))
    points = sweep_mod.points(axes)
    spec = sweep_mod.spec(args.recipe, args.overrides, axes)
    folder = Path(args.out or "runs") / f"{base.run.name}-sweep"
    group = sweep_mod.group_name(base.run.name, spec)
    prepared = []
    for point in points:  # every point is checked before any trains
        try:
            recipe = recipe_mod.load(args.recipe, loaded.registry, [*args.overrides, *point.overrides])
            bp = blueprint(recipe)
        except UserError as exc:
            raise UserError(f"sweep point {point.name}: {exc.located(args.recipe)}") from None
        prepared.append((point, bp))
    width = max(len(p.name) for p in points)
    print(f"sweep of {args.recipe}: {len(points)} runs into {folder} (W&B group {group})")
    for point, bp in prepared:
        plan = bp.plan
        print(f"  {point.name:<{width}}  {plan.iterations:>6} iterations  {plan.work:>10.1f} WU  "
              f"({labels.ratio_words(plan.baseline_work / plan.work)})")
    print(_apply_threads(base), flush=True)
    if args.plan:
        return 0
    sweep_mod.prepare_folder(folder, spec)
    for i, (point, bp) in enumerate(prepared, 1):
        run_dir = folder / point.name
        if (run_dir / "summary.json").is_file():
            print(f"[{i}/{len(points)}] {point.name}: finished earlier, skipped", flush=True)
            continue
        start = _resume_point(run_dir) if (run_dir / "recipe.resolved.toml").is_file() else None
        resume = start is not None
        print(f"[{i}/{len(points)}] {point.name}: {'resuming' if resume else 'starting'}", flush=True)
        if resume:  # the recipe the point started with, as --resume does
            bp = blueprint(recipe_mod.load(run_dir / "recipe.resolved.toml", loaded.registry))
        else:
            checkpoint.write_text(run_dir / "recipe.resolved.toml", bp.recipe.to_toml())
            checkpoint.write_text(run_dir / "plan.txt", bp.plan.describe() + "\n")
        checkpoint.write_json(run_dir / sweep_mod.POINT_FILE, {"group": group, "sweep": folder.name, "axes": point.axes,
                                                                "labels": point.labels, "overrides": list(point.overrides)})
        try:
            assembly = assemble(bp, loaded, world)
        except UserError as exc:
            raise UserError(f"sweep point {point.name}: {exc.located(args.recipe)}") from None
        trainer = Trainer(assembly, run_dir)
        if not resume:
            _warn_about_data(assembly)
        trainer.train(resume_from=start)
    print(f"sweep folder: {folder} ({len(points)} runs); compare them with: python tools/compare.py {folder}")
    return 0


# ---------------------------------------------------------------------------- describe


def _unique(loaded, row: dict) -> bool:
    return len([e for e in loaded.registry.entries() if (e.kind, e.name) == (row["kind"], row["name"])]) == 1


def _field_comments(cls) -> dict[str, str]:
    """``name: type = default  # comment`` lines of a Params class: the comment, by field name."""
    found = {}
    for klass in cls.__mro__:  # a subclass's own comment wins over its base's
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = re.match(r"\s+([A-Za-z_]\w*)\s*:[^#]*#\s*(.+)$", line)
            if m:
                found.setdefault(m.group(1), m.group(2).strip())
    return found


def _type_name(annotation) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(typing|msframe[\w.]*)\.", "", str(annotation))


def parameters(cls) -> list[dict]:
    """The parameters of a component class: name, type, default (absent when required), description."""
    comments = _field_comments(cls.Params)
    out = []
    for name, field in cls.Params.model_fields.items():
        row = {"name": name, "type": _type_name(field.annotation), "required": field.is_required()}
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            row["default"] = default if isinstance(default, (int, float, str, bool, list, dict, type(None))) else repr(default)
            if isinstance(default, tuple):
                row["default"] = list(default)
        description = field.description or comments.get(name)
        if description:
            row["description"] = description
        out.append(row)
    return out


def _schema(entry) -> dict:
    """What ``plugins --json`` adds per component: its docstring, parameters and JSON schema."""
    try:
        schema = entry.cls.Params.model_json_schema()
    except Exception as exc:  # a type pydantic cannot express in JSON schema
        schema = {"error": f"{type(exc).__name__}: {exc}"}
    return {"doc": inspect.getdoc(entry.cls) or "", "params": parameters(entry.cls), "schema": schema}


def cmd_describe(argv: list[str]) -> int:
    from msframe.registry import BASES

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
    info = _schema(entry)
    if args.json:
        print(json.dumps({"kind": entry.kind, "name": entry.name, "origin": str(entry.origin), **info}, indent=2))
        return 0
    print(f"{entry.kind} '{entry.name}' from {entry.origin}\n")
    section = {v: k for k, v in recipe_mod.PLUGIN_SECTIONS.items()}.get(entry.kind)
    where = f"[loggers.{entry.name}]" if entry.kind == "logger" else f"[{section}] type = \"{entry.name}\""
    rows = info["params"]
    if rows:
        print(f"parameters ({where}):")
        w_name = max(len(r["name"]) for r in rows)
        w_type = max(len(r["type"]) for r in rows)
        for r in rows:
            default = "required" if r["required"] else f"= {json.dumps(r['default'])}"
            note = f"  # {r['description']}" if r.get("description") else ""
            print(f"  {r['name']:<{w_name}}  {r['type']:<{w_type}}  {default}{note}")
    else:
        print(f"parameters ({where}): none")
    if info["doc"]:
        print("\n" + info["doc"])
    return 0


# ---------------------------------------------------------------------------- evaluate and restore


def _weights_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="checkpoints/best.pt (best validation PSNR, the default) or checkpoints/last.pt")
    p.add_argument("--device", help="cpu, cuda, ... (default: the run's run.device)")


def cmd_evaluate(argv: list[str]) -> int:
    from msframe import checkpoint, inference

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
    trained = inference.load_run(Path(args.run), loaded, args.weights, overrides, args.device)
    recipe = trained.recipe
    try:
        split = recipe.data.build().split(args.split)
    except UserError as exc:
        raise exc.located("--data" if args.data else str(Path(args.run) / "recipe.resolved.toml")) from None
    resolution = recipe.schedule.resolution
    if split.usable(resolution) < 1:
        raise UserError(f"the {args.split} split has no image of at least {resolution} px (the run's "
                        f"schedule.resolution)", key="--data" if args.data else "--split")
    batch = inference.eval_batch(recipe, trained.task, split, args.split, resolution)
    result = inference.evaluate(trained.model, trained.task, batch, trained.device)
    out = Path(args.out) if args.out else Path(args.run) / "evaluations" / f"{recipe.data.name}-{args.split}-{args.weights}"
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
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from msframe import inference
    from msframe.components import Degraded

    p = argparse.ArgumentParser(prog="run.py restore", description="Apply a trained run's network to degraded "
                                "image files (or folders of them); writes one PNG per image.")
    p.add_argument("run", metavar="RUN_FOLDER")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR")
    _weights_arg(p)
    args = p.parse_args(argv)
    loaded = _load_plugins()
    trained = inference.load_run(Path(args.run), loaded, args.weights, device=args.device)
    task, recipe = trained.task, trained.recipe
    if task.input_channels(trained.channels) != trained.channels or task.cond_channels():
        raise UserError(f"task '{recipe.task.name}' gives the network more than the degraded image (a mask or a "
                        f"noise level), which image files do not hold; restore works for tasks whose input is the "
                        f"image alone", key="RUN_FOLDER")
    caps = recipe.backbone.build().capabilities()
    files = _image_files(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = task.scale()
    for file in files:
        try:
            with Image.open(file) as im:
                image = np.asarray(im.convert("L" if trained.channels == 1 else "RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read {file} as an image ({exc})", key="IMAGE") from None
        x = torch.from_numpy(image.copy()).float().div(255)
        x = (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None]
        h, w = x.shape[-2:]
        # pad to the backbone's size rules (replicated borders), restore, cut the padding off again
        side = lambda n: max(caps.min_size, -(-n // caps.multiple) * caps.multiple)
        padded = torch.nn.functional.pad(x, (0, side(w) - w, 0, side(h) - h), mode="replicate")
        x_in = padded.to(trained.device)
        # no clean image exists: the target only tells the task the output's shape (e.g. its baseline's)
        shape = (1, trained.channels, padded.shape[-2] * scale, padded.shape[-1] * scale)
        with torch.no_grad():
            y = inference.restored(trained.model, task, Degraded(x_in, torch.zeros(shape, device=trained.device)))
        y = y[..., : h * scale, : w * scale].clamp(0, 1)[0]
        target = out / f"{file.stem}.png"
        Image.fromarray(inference.to_uint8(y)).save(target)
        print(f"{file} -> {target}")
    print(f"restored {len(files)} images with {trained.weights}")
    return 0


COMMANDS = {"plugins": "cmd_plugins", "describe": "cmd_describe", "evaluate": "cmd_evaluate", "restore": "cmd_restore"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] and argv[0] in COMMANDS:
            return globals()[COMMANDS[argv[0]]](argv[1:])
        return cmd_run(_agent_args(argv))
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
