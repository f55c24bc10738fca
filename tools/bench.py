#!/usr/bin/env python3
"""Measure what a recipe's stages cost per iteration, against single-scale training, and print it.

    python tools/bench.py RECIPE.toml [--set KEY=VALUE ...] [--steps 30] [--warmup 5]

For every stage of the plan: the median milliseconds of one training step (degradation, all terms,
one backward, the optimizer), timed with CUDA events on a GPU and the monotonic clock on the CPU,
after ``--warmup`` untimed steps (cuDNN autotuning and the like; their time is reported apart); and
the milliseconds to draw the stage's clean crops on the host (the data side, which a DataLoader
overlaps with the step). The baseline is single-scale training at the finest mesh with the finest
stage's batch for ``schedule.baseline_iterations`` iterations, measured the same way in the same
process. Efficiency η = (T_single / T_method) / (W_single / W_method): 1 means every saved work unit
became saved time. Nothing is trained to completion and no run folder is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from msframe import plugins, recipe as recipe_mod
from msframe.errors import UserError
from msframe.sampling import IterationBatches
from msframe.train import Trainer


def _time_steps(trainer: Trainer, stage: int, steps: int, warmup: int) -> tuple[list[float], float, float]:
    """Per-step seconds of ``steps`` timed steps, the warm-up seconds, and the host crop seconds per step."""
    terms = trainer.terms(stage)
    data = IterationBatches(trainer.splits["train"], trainer.plan.resolution, [t.batch for t in terms], seed=0)
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
    warm = time.perf_counter() - t0
    times = []
    for i in range(steps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            run(warmup + i)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1000)
        else:
            t = time.perf_counter()
            run(warmup + i)
            times.append(time.perf_counter() - t)
    return times, warm, crop_seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per stage (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per stage first (default 5)")
    args = ap.parse_args(argv)
    try:
        loaded = plugins.load()
        recipe = recipe_mod.load(args.recipe, loaded.registry, args.overrides)
        plan_data = recipe.to_dict()  # a fresh dict: the baseline is built from it
        sch = plan_data["schedule"]
        for key in ("work", "stage"):  # the baseline is one stage given by iterations
            sch.pop(key, None)
        with tempfile.TemporaryDirectory() as tmp:
            method = Trainer(recipe, loaded, Path(tmp), loggers=[])
            plan = method.plan
            single_data = {**plan_data, "estimator": {"type": "single"},
                           "schedule": {**sch, "iterations": [plan.baseline_iterations], "batch": plan.baseline_batch}}
            single = Trainer(recipe_mod.validate(single_data, loaded.registry, args.recipe), loaded, Path(tmp), loggers=[])
            print(f"device: {method.device}" + (f" ({torch.cuda.get_device_name()})" if method.device.type == "cuda" else "")
                  + f", torch {torch.__version__}, threads {torch.get_num_threads()}")
            print(f"{'run':<8} {'stage':>5} {'mesh':>6} {'WU/iter':>9} {'ms/iter':>9} {'p90 ms':>8} {'crops ms':>9} "
                  f"{'warm-up s':>9} {'iters':>7} {'stage s':>9}")
            totals = {}
            for name, trainer in (("single", single), ("method", method)):
                total = 0.0
                for s in trainer.plan.stages:
                    times, warm, crops = _time_steps(trainer, s.index, args.steps, args.warmup)
                    med = statistics.median(times)
                    p90 = sorted(times)[int(0.9 * (len(times) - 1))]
                    total += med * s.iterations
                    print(f"{name:<8} {s.index:>5} {str(s.resolution) + 'px':>6} {s.work_per_iteration:>9.2f} "
                          f"{med * 1e3:>9.2f} {p90 * 1e3:>8.2f} {crops * 1e3:>9.2f} {warm:>9.2f} {s.iterations:>7} {med * s.iterations:>9.1f}")
                totals[name] = (total, trainer.plan.work)
            (ts, ws), (tm, wm) = totals["single"], totals["method"]
            print(f"\nprojected training time: single {ts:.1f}s for {ws:.0f} WU, method {tm:.1f}s for {wm:.0f} WU")
            print(f"work ratio {ws / wm:.2f}x, wall-clock speed-up {ts / tm:.2f}x, efficiency η = {(ts / tm) / (ws / wm):.2f}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
