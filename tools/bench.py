#!/usr/bin/env python3
"""Measure what a recipe's stages cost per iteration, against single-scale training, and print it.

    python tools/bench.py RECIPE.toml [--set KEY=VALUE ...] [--steps 30] [--warmup 5]
                          [--modes eager,compile] [--json]

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

Modes: ``eager``; ``compile`` (``run.compile = "default"``); ``graphs`` (CUDA graphs of the step) is
not built yet and is reported as skipped. Last, the framework's per-step overhead: the single-scale
step against a hand-written loop (degrade, forward, loss, backward, AdamW) of the same network and
batch. Nothing is trained to completion and no run folder is written.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from msframe import plugins, recipe as recipe_mod
from msframe.assembly import Blueprint, assemble, blueprint, resolve_device
from msframe.errors import UserError
from msframe.recipe import Recipe
from msframe.sampling import IterationBatches
from msframe.train import Trainer

MODES = {"eager": {"run.compile": "off"}, "compile": {"run.compile": "default"}, "graphs": None}


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


def count_ops(fn) -> int:
    """Top-level aten operators that one call of ``fn`` dispatches (forward, backward and optimizer):
    aten events with no aten ancestor, so composite operators count once."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
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
    for i in range(steps):  # interleaved, so that drifts of the machine hit both alike
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per stage (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per stage first (default 5)")
    ap.add_argument("--modes", default="eager", help="comma-separated: eager, compile, graphs (default eager)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    try:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise UserError(f"unknown mode {', '.join(unknown) or '(none)'} (allowed: {', '.join(MODES)})", key="--modes")
        loaded = plugins.load()
        recipe = recipe_mod.load(args.recipe, loaded.registry, args.overrides)
        base = recipe.to_dict()
        device = resolve_device(recipe.run.device)
        report = {"device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "modes": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for mode in modes:
                if MODES[mode] is None:
                    report["modes"][mode] = {"skipped": "CUDA graphs of the step are not built in this version"}
                    continue
                data = recipe_mod.apply_overrides(copy.deepcopy(base), [f'{k}="{v}"' for k, v in MODES[mode].items()])
                variant = recipe_mod.validate(data, loaded.registry, args.recipe)
                report["modes"][mode] = _mode(variant, loaded, tmp, args.steps, args.warmup)
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
