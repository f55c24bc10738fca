"""The paper's claim as a reproducible report: a matrix of runs, and what they show at equal cost.

A *matrix* file (TOML, data only) names recipes (one per task, each with a ``schedule.budget``),
the methods to compare (override sets, each at one or more *fractions* of the reference budget), the
seeds, and optionally an axis of backbones::

    recipes = ["denoise.toml", "deblur.toml"]      # relative to the matrix file
    seeds = [0, 1]
    budget = 2400.0          # optional: work units of the "1x" runs; default each recipe's schedule.budget
    reference = "single"     # the method every other is compared with, at fraction 1
    set = []                 # overrides for every run

    [methods.single]
    set = ['estimator={type="single"}', "schedule.split=[1]", "schedule.batch=8"]
    fractions = [1.0]

    [methods.fms]
    fractions = [1.0, 0.25, 0.125, 0.0625]

    [backbones]              # optional: one more axis, name = backbone table
    unet = { type = "unet" }
    skip = [["superres", "unet"]]   # (recipe stem, backbone) pairs left out of the matrix

Every point (recipe × backbone × method × fraction × seed) is one ordinary run of ``python -m msframe``,
with ``schedule.budget = budget × fraction`` (the matrix's budget, or the recipe's own), in
``OUT/runs/<point>-<timestamp>``. A point whose run folder has finished is skipped, an unfinished one
is resumed, so an interrupted matrix continues where it stopped. The report (``OUT/report.md`` and
PNG plots) is written from the run folders alone.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from msframe.errors import UserError
from msframe.rundir import Curve, RunFolder, read_summary, validation_curve
from msframe.sweep import MAX_POINTS, toml_value

#: the command line of one run: the installed package's, so that it needs no source checkout
RUN = [sys.executable, "-m", "msframe"]


class MethodSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = ""  # shown in tables and legends; the method's key when empty
    set: list[str] = []  # overrides of this method (--set syntax)
    fractions: list[float] = Field([1.0], min_length=1)  # of the matrix budget

    @model_validator(mode="after")
    def _positive(self):
        if any(not 0 < f <= 64 for f in self.fractions):
            raise ValueError("fractions must lie in (0, 64]")
        return self


class MatrixSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipes: list[str] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    budget: float | None = Field(None, gt=0)  # default: each recipe's own schedule.budget
    reference: str = "single"
    set: list[str] = []
    methods: dict[str, MethodSpec] = Field(min_length=1)
    backbones: dict[str, dict] = {}
    skip: list[tuple[str, str]] = []  # (recipe stem, backbone name) pairs that are not run

    @model_validator(mode="after")
    def _reference(self):
        if self.reference not in self.methods:
            raise ValueError(f"reference {self.reference!r} is not one of the methods ({', '.join(self.methods)})")
        if 1.0 not in self.methods[self.reference].fractions:
            raise ValueError(f"the reference method {self.reference!r} needs fraction 1.0 among its fractions")
        return self


@dataclass(frozen=True)
class Point:
    """One run of the matrix."""

    recipe: Path
    task: str  # the recipe's stem
    backbone: str  # "" when the matrix has no backbone axis
    method: str
    fraction: float
    seed: int
    overrides: tuple[str, ...]
    budget: float = 0.0  # the work units of this recipe's "1x" runs

    @property
    def name(self) -> str:
        parts = [self.task, self.backbone, self.method, f"w{self.fraction:g}", f"s{self.seed}"]
        return "-".join(p for p in parts if p)


def load_matrix(path: Path, seeds: list[int] | None = None, max_points: int = MAX_POINTS) -> tuple[MatrixSpec, list[Point]]:
    """Read and validate a matrix file; every point it describes, in a stable order (``seeds`` replaces its
    seeds). More than ``max_points`` points is a UserError before any point is built."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("matrix file not found", file=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not a TOML file: {exc}", file=str(path)) from None
    try:
        spec = MatrixSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "matrix"
        raise UserError(err["msg"].removeprefix("Value error, "), key=key, file=str(path)) from None
    count = (len(spec.recipes) * max(1, len(spec.backbones)) * sum(len(m.fractions) for m in spec.methods.values())
             * len(seeds or spec.seeds))
    if count > max_points:
        raise UserError(f"the matrix has up to {count} points, over the limit of {max_points}", key="matrix", file=str(path))
    points = []
    for recipe in spec.recipes:
        recipe_path = (path.parent / recipe).resolve()
        if not recipe_path.is_file():
            raise UserError(f"recipe {recipe} not found next to the matrix file", key="recipes", file=str(path))
        budget = spec.budget
        if budget is None:
            try:
                budget = tomllib.loads(recipe_path.read_text(encoding="utf-8")).get("schedule", {}).get("budget")
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"not a TOML file: {exc}", file=str(recipe_path)) from None
            if not isinstance(budget, (int, float)) or budget <= 0:
                raise UserError(f"recipe {recipe} has no schedule.budget; give one there or a budget in the matrix",
                                key="budget", file=str(path))
        backbones = spec.backbones or {"": None}
        for bname, table in backbones.items():
            if (recipe_path.stem, bname) in spec.skip:
                continue
            for mname, method in spec.methods.items():
                for fraction in method.fractions:
                    for seed in seeds or spec.seeds:
                        overrides = [*spec.set]
                        if table is not None:
                            overrides.append(f"backbone={toml_value(table)}")
                        overrides += [*method.set, f"schedule.budget={float(budget) * fraction!r}", f"run.seed={seed}"]
                        point = Point(recipe_path, recipe_path.stem, bname, mname, fraction, seed, (), float(budget))
                        points.append(replace(point, overrides=(*overrides, f'run.name="{point.name}"')))
    return spec, points


# ------------------------------------------------------------------------------------- running


def run_points(points: list[Point], out: Path, jobs: int = 1, log=print) -> list[tuple[Point, int]]:
    """Run every point not finished yet (resuming unfinished ones); returns (point, exit code) of the runs made."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    todo = []
    for p in points:
        folder = RunFolder.newest(runs, p.name)
        if folder is not None and folder.finished:
            continue
        todo.append((p, folder))
    log(f"{len(points) - len(todo)} of {len(points)} runs already finished; {len(todo)} to run with {jobs} job(s)")
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")  # several single-threaded runs share a small machine best
    env.setdefault("WANDB_MODE", "disabled")

    def one(item) -> tuple[Point, int]:
        p, folder = item
        if folder is not None and folder.last.is_file():
            cmd = [*RUN, "--resume", str(folder)]
        else:
            cmd = [*RUN, str(p.recipe), "--out", str(runs)]
            for o in p.overrides:
                cmd += ["--set", o]
        with open(runs / f"{p.name}.log", "a") as fh:
            code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
        log(f"{'done' if code == 0 else f'FAILED (exit {code}, see runs/{p.name}.log)'}: {p.name}")
        return p, code

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, todo))


# ------------------------------------------------------------------------------------ results


@dataclass
class Result:
    point: Point
    summary: dict
    curve: Curve = field(default_factory=list)  # (work units, seconds, val psnr)

    @property
    def psnr(self) -> float:
        return self.summary["test"]["psnr"]

    @property
    def ssim(self) -> float:
        return self.summary["test"]["ssim"]

    @property
    def naive(self) -> float:
        """The test PSNR of the task's naive baseline; NaN when the summary has none (null or absent)."""
        value = self.summary["test"].get("input_psnr")
        return math.nan if value is None else value


def read_results(points: Iterable[Point], out: Path) -> list[Result]:
    """The finished points' summaries and validation curves (unfinished points are left out, and so is a
    point whose summary is unreadable or ill-typed: one ``skipped:`` line on stderr names its file)."""
    results = []
    for p in points:
        folder = RunFolder.newest(out / "runs", p.name)
        if folder is None or not folder.finished:
            continue
        try:
            summary, (curve, _) = read_summary(folder.path), validation_curve(folder.path)
        except UserError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        results.append(Result(p, summary, curve))
    return results


def _mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (the seed spread) of ``values``."""
    return statistics.fmean(values), (max(values) - min(values)) / 2


def tables(spec: MatrixSpec, results: list[Result]) -> str:
    """One markdown table per (task, backbone): every method and fraction against the reference."""
    lines = []
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.point.task, r.point.backbone), []).append(r)
    for (task, backbone), rs in groups.items():
        ref = [r for r in rs if r.point.method == spec.reference and r.point.fraction == 1.0]
        ref_psnr, ref_spread = _mean_spread([r.psnr for r in ref]) if ref else (math.nan, 0.0)
        title = task + (f", {backbone}" if backbone else "")
        base = _mean_spread([r.naive for r in rs])[0]
        lines += [f"### {title}", "",
                  (f"naive baseline (the task's input, or bicubic upsampling): **{base:.2f} dB** test PSNR; "
                   f"reference: {spec.reference} at {rs[0].point.budget:g} WU, {ref_psnr:.2f} ± {ref_spread:.2f} dB"), "",
                  ("| method | work | WU | seconds | test PSNR (dB) | ± seeds | SSIM | vs baseline | vs reference "
                   "| within 0.1 dB or spread |"),
                  "|---|---|---|---|---|---|---|---|---|---|"]
        keys = sorted({(r.point.method, r.point.fraction) for r in rs}, key=lambda k: (list(spec.methods).index(k[0]), -k[1]))
        for method, fraction in keys:
            cell = [r for r in rs if (r.point.method, r.point.fraction) == (method, fraction)]
            psnr, spread = _mean_spread([r.psnr for r in cell])
            ssim = statistics.fmean(r.ssim for r in cell)
            wu = statistics.fmean(r.summary["work_units"] for r in cell)
            sec = statistics.fmean(r.summary["seconds"] for r in cell)
            label = spec.methods[method].label or method
            work = "1x" if fraction == 1 else (f"{fraction:g}x more" if fraction > 1 else f"{1 / fraction:g}x less")
            delta = psnr - ref_psnr
            within = delta >= -max(0.1, spread, ref_spread)
            ok = "—" if (method, fraction) == (spec.reference, 1.0) else ("yes" if within else "no")
            lines.append(f"| {label} | {work} | {wu:.0f} | {sec:.1f} | {psnr:.2f} | {spread:.2f} | {ssim:.4f} | "
                         f"{psnr - base:+.2f} | {delta:+.2f} | {ok} |")
        lines.append("")
    return "\n".join(lines)


def overview(spec: MatrixSpec, results: list[Result]) -> str:
    """One row per (task, backbone): the baseline, the reference, and every other cell's difference to it."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.point.task, r.point.backbone), []).append(r)
    cells = sorted({(r.point.method, r.point.fraction) for r in results} - {(spec.reference, 1.0)},
                   key=lambda k: (list(spec.methods).index(k[0]), -k[1]))

    def name(method: str, fraction: float) -> str:
        work = "1x" if fraction == 1 else (f"{fraction:g}x more" if fraction > 1 else f"{1 / fraction:g}x less")
        return f"{spec.methods[method].label or method} {work}"

    ref_label = name(spec.reference, 1.0)
    lines = ["| task | naive baseline | " + ref_label + " | " + " | ".join(name(*c) for c in cells) + " |",
             "|---" * (3 + len(cells)) + "|"]
    for (task, backbone), rs in groups.items():
        def mean(method, fraction, rs=rs):
            vals = [r.psnr for r in rs if (r.point.method, r.point.fraction) == (method, fraction)]
            return statistics.fmean(vals) if vals else math.nan
        ref = mean(spec.reference, 1.0)
        base = statistics.fmean(r.naive for r in rs)
        row = [task + (f", {backbone}" if backbone else ""), f"{base:.2f}", f"{ref:.2f}"]
        row += [f"{mean(*c) - ref:+.2f}" for c in cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\nTest PSNR in dB (mean over seeds); the other columns are differences to " + ref_label + ".\n"


def plots(spec: MatrixSpec, results: list[Result], out: Path) -> list[Path]:
    """Per (task, backbone): validation PSNR against work units and against seconds (seed 0 of each cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if r.point.seed == spec.seeds[0] and r.curve:
            groups.setdefault((r.point.task, r.point.backbone), []).append(r)
    for (task, backbone), rs in groups.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for r in rs:
            f = r.point.fraction
            label = f"{spec.methods[r.point.method].label or r.point.method} " + (
                "1x" if f == 1 else (f"{f:g}x more" if f > 1 else f"{1 / f:g}x less"))
            wu, sec, psnr = zip(*r.curve)
            axes[0].plot(wu, psnr, marker=".", label=label)
            axes[1].plot(sec, psnr, marker=".", label=label)
        for ax, xlabel in zip(axes, ("work units (fine-mesh samples)", "training seconds")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation PSNR (dB)")
            ax.set_xscale("log")
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{task}{', ' + backbone if backbone else ''} (seed {spec.seeds[0]})")
        fig.tight_layout()
        path = out / f"{task}{'-' + backbone if backbone else ''}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_report(spec: MatrixSpec, points: list[Point], out: Path, source: Path) -> Path:
    """``OUT/report.md``: the tables, the plots, and what is missing."""
    results = read_results(points, out)
    missing = len(points) - len(results)
    pictures = plots(spec, results, out) if results else []
    lines = [f"# Report: {source.name}", "",
             f"{len(results)} of {len(points)} runs finished" + (f" ({missing} missing)" if missing else "") +
             f"; seeds {', '.join(map(str, spec.seeds))}. Test PSNR/SSIM on the tiles of whole "
             "held-out images (mean over tiles); '± seeds' is half the range over seeds; 'within' compares the "
             "difference to the reference with 0.1 dB or the larger seed spread.", "",
             "## Overview", "", overview(spec, results) if results else "", "## Per task", "", tables(spec, results)]
    lines += [f"![{p.stem}]({p.name})" for p in pictures]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
