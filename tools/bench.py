#!/usr/bin/env python3
"""Measure what a recipe's stages cost per iteration, against single-scale training, and print it.

    python tools/bench.py RECIPE.toml [--set KEY=VALUE ...] [--steps 30] [--warmup 5]
                          [--modes eager,compile,graphs,compile+graphs] [--json]

For every stage of the plan and every mode: network passes per iteration (one per mesh when the
backbone allows merged passes, else 2L − 1), the median milliseconds of one training step
(degradation, all terms, one backward, the optimizer), timed with CUDA events on a GPU and the
monotonic clock on the CPU, after ``--warmup`` untimed steps (cuDNN autotuning, compilation; their
time is reported apart); top-level aten operators of one step counted with torch.profiler (a
device-independent proxy for kernel launches); peak device memory (CUDA only); and the milliseconds
to draw the stage's clean crops (the data side, which a DataLoader overlaps with the step). The
baseline is single-scale training at the finest mesh with the finest stage's batch for
``schedule.baseline_iterations`` iterations, measured the same way in the same process. Efficiency
η = (T_single / T_method) / (W_single / W_method): 1 means every saved work unit became saved time.

Modes: ``eager``; ``compile`` (``run.compile = "default"``); ``graphs`` and ``compile+graphs`` (CUDA
graphs of the step) are not built yet and are reported as skipped. Last, the framework's per-step
overhead: the single-scale step against a hand-written eager loop (degrade, forward, loss, backward,
AdamW) of the same network and batch. Nothing is trained to completion and no run folder is written.

The device check to run once on a machine with one GPU, within 8 minutes:

    python tools/bench.py --gpu-suite --out DIR [--steps 20] [--warmup 3] [--budget 450] [--dry-run]

benches ``paper_unet128``, ``paper_unet256``, ``paper_resnet128`` and ``paper_espcn128`` in every mode
and writes ``DIR/gpu-suite.json`` (every figure) and ``DIR/gpu-suite.md`` (a table naming the device,
torch and date of each row). It keeps to ``--budget`` seconds itself (:func:`gpu_suite`): each
(recipe, mode) runs in a child process stopped at its share of what is left. The estimate behind the
defaults, from the only GPU figures recorded (README, ``paper_unet128`` eager on an H200: single-scale
13.6 ms, FMS stages 15.6 / 41.4 / 61.8 / 81.7 ms): a run makes 5 × (3 + 20 + 1) stage steps and
2 × 23 hand-written and framework steps, about 6 s, plus some 15 s to start a child (CUDA, data, two
assemblies); the 256² UNet and the full-resolution ResNet at about four times the step cost, ESPCN at
less, give about 2 minutes for the eager runs. Compiling gets the other 5½ minutes, some 80 s a
recipe; how long compiling takes is not recorded yet, and a recipe that needs longer is reported as
skipped rather than overrun the budget. ``--dry-run`` runs the suite on the CPU at tiny sizes
(:data:`DRY_RUN`, one step, every mode but ``compile``), in about 30 s.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch

from msframe import plugins
from msframe import recipe as recipe_mod
from msframe.assembly import Blueprint, assemble, blueprint, resolve_device
from msframe.errors import UserError
from msframe.recipe import Recipe
from msframe.sampling import IterationBatches
from msframe.train import Trainer

#: mode -> the recipe keys it sets, or None for a mode that is not built (reported as skipped)
MODES = {"eager": {"run.compile": "off"}, "compile": {"run.compile": "default"}, "graphs": None, "compile+graphs": None}


def _timed(fn, steps: int, cuda: bool) -> list[float]:
    """Seconds of each of ``steps`` calls of ``fn(i)``."""
    times = []
    for i in range(steps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(i)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1000)
        else:
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
    return times


def _kineto_chatter(line: str) -> bool:
    """Whether a line on file descriptor 2 is libkineto's start-up and tracing chatter."""
    return line.startswith("USDT") or "gpuGetDeviceCount failed" in line


@contextmanager
def _without_kineto_chatter():
    """Route file descriptor 2 into a file for the block, then replay every line of it that is not
    libkineto's chatter to ``sys.stderr``, so that real errors and warnings still show.

    libkineto (C++, under torch.profiler) writes its chatter to the descriptor directly, and
    ``KINETO_LOG_LEVEL`` does not silence its "USDT" lines.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()  # Python's own writes to descriptor 2 during the block, in order
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _kineto_chatter(line)]
            sys.stderr.write("".join(kept))


def count_ops(fn) -> int:
    """Top-level aten operators that one call of ``fn`` dispatches (forward, backward and optimizer):
    aten events with no aten ancestor, so composite operators count once."""
    from torch.profiler import ProfilerActivity, profile

    with _without_kineto_chatter(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    count = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


def _stage(trainer: Trainer, stage: int, steps: int, warmup: int) -> dict:
    """One stage's figures (see the module docstring)."""
    terms = trainer.terms(stage)
    data = IterationBatches(trainer.assembly.splits["train"], trainer.plan.resolution, [t.batch for t in terms], seed=0)
    cuda = trainer.device.type == "cuda"
    t0 = time.perf_counter()
    batches = [data[(stage, i)][1] for i in range(min(steps, 8))]
    if cuda:
        torch.cuda.synchronize()  # resident splits cut crops on the device
    crop_seconds = (time.perf_counter() - t0) / len(batches)
    batches = [[c.to(trainer.device) for c in b] for b in batches]

    def run(i: int):
        trainer.step(stage, i, batches[i % len(batches)], terms)

    t0 = time.perf_counter()
    for i in range(warmup):
        run(i)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm = time.perf_counter() - t0
    times = _timed(lambda i: run(warmup + i), steps, cuda)
    ops = count_ops(lambda: run(warmup + steps))
    s = trainer.plan.stages[stage]
    med = statistics.median(times)
    return {
        "stage": stage, "resolution": s.resolution, "iterations": s.iterations, "work_per_iteration": s.work_per_iteration,
        "passes": len(trainer.plan.passes(stage)), "ms": med * 1e3,
        "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, "ops": ops,
        "peak_mib": torch.cuda.max_memory_allocated(trainer.device) / 2**20 if cuda else None,
        "crops_ms": crop_seconds * 1e3, "warmup_s": warm, "stage_s": med * s.iterations,
    }


def overhead(trainer: Trainer, steps: int, warmup: int) -> dict:
    """The single-scale Trainer step against a hand-written step of the same network and batch."""
    (term,) = trainer.terms(0)
    a = trainer.assembly
    task, model, device = a.task, a.model, a.device
    g = torch.Generator().manual_seed(0)
    clean = torch.rand((term.batch, a.channels, term.fine_resolution, term.fine_resolution), generator=g).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer.recipe.optim.lr, weight_decay=trainer.recipe.optim.weight_decay)
    noise = torch.Generator(device=device).manual_seed(0)

    def hand(i: int):
        batch = task.degrade(clean, noise)
        optimizer.zero_grad(set_to_none=True)
        task.loss(model(batch.input, batch.cond), batch).mean().backward()
        optimizer.step()

    def framework(i: int):
        trainer.step(0, i, [clean], (term,))

    cuda = device.type == "cuda"
    for i in range(warmup):
        hand(i), framework(i)
    hand_t, frame_t = [], []
    for _ in range(steps):  # interleaved, so that drifts of the machine hit both alike
        hand_t += _timed(hand, 1, cuda)
        frame_t += _timed(framework, 1, cuda)
    h, f = statistics.median(hand_t) * 1e3, statistics.median(frame_t) * 1e3
    return {"hand_ms": h, "framework_ms": f, "overhead": f / h - 1}


#: the schedule keys that give the stages (one form of them is allowed in a recipe)
STAGE_FORMS = ("iterations", "work", "budget", "split", "stage")


def single_scale(bp: Blueprint, registry) -> Recipe:
    """The single-scale reference of a planned run: the same recipe with estimator ``single`` at the
    finest mesh, the plan's baseline batch and iterations, whichever form the recipe gives its stages in."""
    data = bp.recipe.to_dict()
    plan = bp.plan
    schedule = {k: v for k, v in data["schedule"].items() if k not in STAGE_FORMS}
    schedule.update(iterations=[plan.baseline_iterations], batch=plan.baseline_batch)
    return recipe_mod.validate({**data, "schedule": schedule, "estimator": {"type": "single"}}, registry, bp.recipe.source)


def assemblies(recipe: Recipe, loaded) -> dict[str, Blueprint]:
    """The two blueprints bench compares: the recipe's method and its single-scale reference."""
    method = blueprint(recipe)
    return {"single": blueprint(single_scale(method, loaded.registry)), "method": method}


def _mode(recipe: Recipe, loaded, tmp: str, steps: int, warmup: int) -> dict:
    trainers = {name: Trainer(assemble(bp, loaded), Path(tmp), loggers=[]) for name, bp in assemblies(recipe, loaded).items()}
    runs = {name: [_stage(t, s.index, steps, warmup) for s in t.plan.stages] for name, t in trainers.items()}
    ts, tm = (sum(s["stage_s"] for s in runs[k]) for k in ("single", "method"))
    ws, wm = trainers["single"].plan.work, trainers["method"].plan.work
    result = {"runs": runs, "single_s": ts, "method_s": tm, "single_work": ws, "method_work": wm,
              "work_ratio": ws / wm, "speedup": ts / tm, "eta": (ts / tm) / (ws / wm), "merged": trainers["method"].plan.merge}
    result["overhead"] = overhead(trainers["single"], steps, warmup)
    return result


def _print(report: dict) -> None:
    print(f"device: {report['device']}, torch {report['torch']}, threads {report['threads']}")
    for mode, r in report["modes"].items():
        if "skipped" in r:
            print(f"\nmode {mode}: skipped ({r['skipped']})")
            continue
        print(f"\nmode {mode} ({'one pass per mesh' if r['merged'] else 'separate passes'})")
        print(f"{'run':<8} {'stage':>5} {'mesh':>6} {'WU/iter':>9} {'passes':>6} {'ms/iter':>9} {'p90 ms':>8} {'ops':>6} "
              f"{'peak MiB':>8} {'crops ms':>9} {'warm-up s':>9} {'iters':>7} {'stage s':>9}")
        for name, stages in r["runs"].items():
            for s in stages:
                peak = "-" if s["peak_mib"] is None else f"{s['peak_mib']:.0f}"
                print(f"{name:<8} {s['stage']:>5} {str(s['resolution']) + 'px':>6} {s['work_per_iteration']:>9.2f} "
                      f"{s['passes']:>6} {s['ms']:>9.2f} {s['p90_ms']:>8.2f} {s['ops']:>6} {peak:>8} {s['crops_ms']:>9.2f} "
                      f"{s['warmup_s']:>9.2f} {s['iterations']:>7} {s['stage_s']:>9.1f}")
        final, base = r["runs"]["method"][-1]["ops"], r["runs"]["single"][-1]["ops"]
        print(f"projected training time: single {r['single_s']:.1f}s for {r['single_work']:.0f} WU, "
              f"method {r['method_s']:.1f}s for {r['method_work']:.0f} WU")
        print(f"work ratio {r['work_ratio']:.2f}x, wall-clock speed-up {r['speedup']:.2f}x, efficiency η = {r['eta']:.2f}")
        print(f"ops per step: final stage {final} vs single-scale {base} ({final / base:.2f}x)")
        o = r["overhead"]
        print(f"framework step {o['framework_ms']:.2f} ms vs hand-written loop {o['hand_ms']:.2f} ms: "
              f"overhead {100 * o['overhead']:+.1f}%")


#: the recipes of the GPU suite, in recipes/
SUITE = ("paper_unet128", "paper_unet256", "paper_resnet128", "paper_espcn128")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
#: what ``--dry-run`` sets in every suite recipe: the CPU, 32 px (meshes 32/16/8/4, each valid for every
#: suite backbone) and batch 2 at each stage's finest mesh
DRY_RUN = ('run.device="cpu"', "schedule.resolution=32", "schedule.batch=2")
#: the suite's wall-clock budget: 8 minutes, less half a minute for this process's own start and files
SUITE_BUDGET_S = 450.0
#: (timed steps, warm-up steps) by default: one recipe; the suite; its dry run (which only shows it runs)
DEFAULT_STEPS = {"recipe": (30, 5), "suite": (20, 3), "dry-run": (1, 0)}
GRAPHS_SKIPPED = "CUDA graphs of the step are not built in this version"


def _suite_run(recipe: Path, mode: str, overrides: list[str], steps: int, warmup: int, share: float) -> dict:
    """Bench ``recipe`` in ``mode`` in a child process given ``share`` seconds: its figures (with the
    device it ran on, its torch and its seconds), or why there are none. The child's stderr is this one's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(recipe), "--modes", mode, "--json", "--steps", str(steps),
           "--warmup", str(warmup), *[a for o in overrides for a in ("--set", o)]]
    t0 = time.monotonic()
    # a session of its own: at the deadline its whole group goes, compile workers included
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, _ = child.communicate(timeout=share)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"skipped": f"did not finish within its share of the budget ({share:.0f} s)",
                "seconds": time.monotonic() - t0}
    if child.returncode != 0:
        return {"failed": f"exit code {child.returncode} (its error is above)", "seconds": time.monotonic() - t0}
    report = json.loads(stdout)
    return {"device": report["device"], "torch": report["torch"], "seconds": time.monotonic() - t0,
            **report["modes"][mode]}


def _suite_table(report: dict) -> str:
    """The suite's figures as a markdown table, one row per recipe and mode."""
    head = ("| recipe | mode | device | torch | date | single ms/iter | final stage ms/iter | projected single / "
            "method s | work ratio | speed-up | η | hand-written ms | framework ms | overhead |")
    lines = [f"GPU suite: {report['steps']} timed steps per stage after {report['warmup']} warm-up steps"
             + (f", with {', '.join(report['overrides'])}" if report["overrides"] else "") + ".", "",
             head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in report["runs"]:
        if "runs" not in r:
            why = r.get("skipped") or r.get("failed")
            lines.append(f"| {r['recipe']} | {r['mode']} | {r.get('device', '-')} | {r.get('torch', '-')} | {r['date']} | "
                         f"{'skipped' if 'skipped' in r else 'failed'}: {why} |" + " |" * 8)
            continue
        o = r["overhead"]
        lines.append(
            f"| {r['recipe']} | {r['mode']} | {r['device']} | {r['torch']} | {r['date']} | {r['runs']['single'][-1]['ms']:.2f} | "
            f"{r['runs']['method'][-1]['ms']:.2f} | {r['single_s']:.1f} / {r['method_s']:.1f} | {r['work_ratio']:.2f}x | "
            f"{r['speedup']:.2f}x | {r['eta']:.2f} | {o['hand_ms']:.2f} | {o['framework_ms']:.2f} | "
            f"{100 * o['overhead']:+.1f}% |")
    return "\n".join(lines) + "\n"


def gpu_suite(out: Path, loaded, overrides: list[str], modes: list[str], steps: int, warmup: int,
              budget: float) -> dict:
    """Bench every :data:`SUITE` recipe in every one of ``modes`` within ``budget`` seconds, and write
    ``gpu-suite.json`` (every figure) and ``gpu-suite.md`` (the table) into ``out`` after each run.

    Every recipe's plan (with ``overrides``) is checked first, so a mistake costs no budget. Each
    measured (recipe, mode) runs in a child process of its own given an equal share of the budget
    left; one that overruns it is stopped and reported as skipped, and what a run leaves unused goes
    to those after it. The eager runs go first: they are the cheap ones, and compiling gets their
    savings. A mode that is not built is reported as skipped.
    """
    for name in SUITE:
        assemblies(recipe_mod.load(RECIPES / f"{name}.toml", loaded.registry, overrides), loaded)
    out.mkdir(parents=True, exist_ok=True)
    report = {"budget_s": budget, "steps": steps, "warmup": warmup, "overrides": overrides, "runs": []}
    runs = [(name, mode) for mode in modes for name in SUITE]
    left = sum(MODES[mode] is not None for _, mode in runs)
    start = time.monotonic()
    for name, mode in runs:
        if MODES[mode] is None:
            row = {"skipped": GRAPHS_SKIPPED}
        else:
            share = (budget - (time.monotonic() - start)) / left
            left -= 1
            row = (_suite_run(RECIPES / f"{name}.toml", mode, overrides, steps, warmup, share) if share >= 1
                   else {"skipped": "no time left in the budget"})
        row = {"recipe": name, "mode": mode, "date": datetime.now(UTC).isoformat(timespec="seconds"), **row}
        report["runs"].append(row)
        (out / "gpu-suite.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "gpu-suite.md").write_text(_suite_table(report))
        figure = f"η = {row['eta']:.2f}" if "eta" in row else row.get("skipped") or row.get("failed")
        print(f"{name} {mode}: {figure}", flush=True)
    print(f"wrote {out / 'gpu-suite.json'} and {out / 'gpu-suite.md'} in {time.monotonic() - start:.0f} s")
    return report


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UserError(f"unknown mode {', '.join(unknown) or '(none)'} (allowed: {', '.join(MODES)})", key="--modes")
    return modes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", nargs="?", help="the recipe to bench (none with --gpu-suite)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key (with --gpu-suite: in every suite recipe)")
    ap.add_argument("--steps", type=int, help="timed steps per stage (default 30; --gpu-suite 20, --dry-run 1)")
    ap.add_argument("--warmup", type=int, help="untimed steps per stage first (default 5; --gpu-suite 3, --dry-run 0)")
    ap.add_argument("--modes", help=f"comma-separated: {', '.join(MODES)} (default eager; --gpu-suite all, "
                                    "--dry-run all but compile)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--gpu-suite", action="store_true", help=f"bench {', '.join(SUITE)} into --out DIR")
    ap.add_argument("--out", type=Path, metavar="DIR", help="where --gpu-suite writes gpu-suite.json and gpu-suite.md")
    ap.add_argument("--dry-run", action="store_true", help="--gpu-suite on the CPU at tiny sizes: " + ", ".join(DRY_RUN))
    ap.add_argument("--budget", type=float, default=SUITE_BUDGET_S, metavar="SECONDS",
                    help=f"--gpu-suite's wall-clock budget (default {SUITE_BUDGET_S:.0f})")
    args = ap.parse_args(argv)
    if args.gpu_suite == (args.recipe is not None):
        ap.error("give a recipe, or --gpu-suite --out DIR")
    if not args.gpu_suite and (args.out or args.dry_run):
        ap.error("--out and --dry-run go with --gpu-suite")
    if args.gpu_suite and args.out is None:
        ap.error("--gpu-suite needs --out DIR")
    kind = "dry-run" if args.dry_run else "suite" if args.gpu_suite else "recipe"
    steps, warmup = (given if given is not None else default for given, default in zip((args.steps, args.warmup),
                                                                                      DEFAULT_STEPS[kind]))
    default_modes = {"recipe": "eager", "suite": ",".join(MODES), "dry-run": ",".join(m for m in MODES if m != "compile")}
    try:
        modes = _modes(args.modes or default_modes[kind])
        loaded = plugins.load()
        if args.gpu_suite:
            overrides = [*(DRY_RUN if args.dry_run else ()), *args.overrides]
            gpu_suite(args.out, loaded, overrides, modes, steps, warmup, args.budget)
            return 0
        recipe = recipe_mod.load(args.recipe, loaded.registry, args.overrides)
        base = recipe.to_dict()
        device = resolve_device(recipe.run.device)
        report = {"device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "modes": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for mode in modes:
                if MODES[mode] is None:
                    report["modes"][mode] = {"skipped": GRAPHS_SKIPPED}
                    continue
                data = recipe_mod.apply_overrides(copy.deepcopy(base), [f'{k}="{v}"' for k, v in MODES[mode].items()])
                variant = recipe_mod.validate(data, loaded.registry, args.recipe)
                report["modes"][mode] = _mode(variant, loaded, tmp, steps, warmup)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
