#!/usr/bin/env python3
"""Compare finished runs on a cost axis: quality against work units and seconds, plots, an image grid.

    python tools/compare.py RUN_OR_SWEEP_FOLDER [...] [--by KEY[,KEY]] [--reference KEY=VALUE]
                            [--within 0.1] [--target DB] [--out DIR] [--no-images]

Each argument is a run folder or any folder above run folders (a sweep folder), searched recursively;
runs are listed in sweep order (the order of the sweep's axes and values), lone runs in the order given.
Prints, per run: its method (estimator, stages, meshes), total work, training seconds, best
validation PSNR, test PSNR/SSIM and the naive baseline's test PSNR; the validation PSNR each run had
reached at the smallest total work among the runs and at the smallest training seconds (quality at
equal cost); and the work and seconds each run needed to first reach the target validation PSNR —
by default 0.1 dB below the reference's best, or ``--target`` dB.

Then, per group of runs (``--by``: sweep axes; by default every axis but the seed, so a group pools
its seeds), the same figures as mean ± spread over the group's seeds against the reference group
(``--reference KEY=VALUE``; by default the single-scale group when there is one, else the first in
sweep order): ± is half the range for two seeds and the sample standard deviation for three or more;
one seed shows no ±. A group is "not distinguishable from the reference" when its interval and the
reference's overlap, and above or below it otherwise; that is no test of equality.
It also writes, into ``--out``: ``psnr_vs_work.png`` and ``psnr_vs_seconds.png`` (one line and band
per group, the equal-cost line and the target), ``tiles.png`` (the same test tiles: degraded input,
each run's restoration with its best weights, clean) and ``report.md`` bundling them with the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from msframe import labels
from msframe.errors import UserError
from msframe.rundir import Curve, RunFolder, read_summary, validation_curve
from msframe.sweep import toml_value

#: the sweep axis of ``--seeds``: pooled inside a group unless ``--by`` names it
SEED = "run.seed"


def find_runs(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """Finished run folders (those with summary.json) given or found below ``paths``, in the order
    given (sorted inside each searched folder); and the unfinished run folders found on the way."""
    runs, unfinished = [], []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise UserError(f"{path} is not a folder", key="RUN_FOLDER")
        if RunFolder(path).finished:
            runs.append(path)
            continue
        below = RunFolder.below(path)
        found = [f.path for f in below if f.finished]
        unfinished += [f.path for f in below if not f.finished]
        if not found:
            raise UserError(f"{path} is not a finished run folder (no summary.json), nor holds any", key="RUN_FOLDER")
        runs += found
    return list(dict.fromkeys(runs)), unfinished


def read_run(folder: Path) -> dict:
    """The summary, the validation curve [(work units, seconds, psnr)], the resolved recipe and the
    method of one run folder."""
    summary = read_summary(folder)
    curve, naive = validation_curve(folder)
    if not curve:
        raise UserError(f"{folder} has no validation records in metrics.jsonl (was the jsonl logger off?)",
                        key="RUN_FOLDER")
    resolved = RunFolder(folder).recipe
    try:
        recipe = tomllib.loads(resolved.read_bytes().decode("utf-8")) if resolved.is_file() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"unreadable resolved recipe ({str(exc).splitlines()[0][:120]})", file=str(resolved)) from None
    return {"name": folder.name, "folder": folder, "summary": summary, "curve": curve, "recipe": recipe,
            "method": labels.method(recipe) if recipe else "?", "val_naive_psnr": naive}


def _psnr_at(curve: Curve, axis: int, cost: float) -> float | None:
    """The last validation PSNR recorded at or before ``cost`` on ``axis`` (0: work units, 1: seconds)."""
    seen = [point[2] for point in curve if point[axis] <= cost + 1e-9]
    return seen[-1] if seen else None


def psnr_at(curve: Curve, work: float) -> float | None:
    """The last validation PSNR recorded at or before ``work`` work units."""
    return _psnr_at(curve, 0, work)


def psnr_at_seconds(curve: Curve, seconds: float) -> float | None:
    """The last validation PSNR recorded at or before ``seconds`` training seconds."""
    return _psnr_at(curve, 1, seconds)


def cost_to_reach(curve: Curve, target: float) -> tuple[float, float] | None:
    """Work units and seconds at the first validation with PSNR ≥ ``target``."""
    return next(((w, s) for w, s, p in curve if p >= target), None)


def sweep_order(runs: list[dict]) -> list[dict]:
    """``runs`` in sweep order: the runs of one sweep by the position of each axis value in its
    ``sweep.json`` (the last axis varying fastest, as the sweep ran them), sweeps and lone runs in the
    order first given. Sets each run's ``point`` (None for a lone run)."""
    specs: dict[Path, list[dict]] = {}
    rank: dict[Path, int] = {}

    def key(r: dict) -> tuple:
        folder = RunFolder(r["folder"])
        r["point"] = folder.read_point()
        home = folder.sweep_spec.parent if r["point"] else folder.path
        rank.setdefault(home, len(rank))
        if not r["point"]:
            return rank[home], ()
        if home not in specs:
            try:
                specs[home] = json.loads(folder.sweep_spec.read_text())["axes"]
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                specs[home] = []  # no readable sweep.json: the point's own axes, in folder-name order
        axes = r["point"].get("axes", {})
        index = []
        for axis in specs[home]:
            values = axis.get("values", [])
            held = toml_value(axes[axis["key"]]) if axis.get("key") in axes else None
            index.append(values.index(held) if held in values else len(values))
        return rank[home], tuple(index)

    keyed = [(key(r), i, r) for i, r in enumerate(runs)]
    return [r for *_, r in sorted(keyed, key=lambda k: k[:2])]


def group_runs(runs: list[dict], by: list[str] | None) -> list[dict]:
    """Groups of ``runs`` (in sweep order, points set) with equal values of the axes ``by`` (default:
    every axis of the run's sweep but the seed), in the order of their first run; a lone run is a group
    of its own. Each group: its ``label`` (``key=value,…`` as in folder names, or the run's name),
    ``runs`` and ``single`` (every run trains one plain stage: the single-scale reference)."""
    groups: dict[tuple, dict] = {}
    for r in runs:
        point = r["point"]
        if point is None:
            key, label = ("run", r["name"]), r["name"]
        else:
            axes = list(point.get("axes", {}))
            keys = by if by is not None else [k for k in axes if k != SEED]
            missing = [k for k in keys if k not in axes]
            if missing:
                raise UserError(f"{missing[0]} is not an axis of the sweep of {r['name']} (axes: {', '.join(axes)})",
                                key="--by")
            key = (point.get("group"), *(toml_value(point["axes"][k]) for k in keys))
            label = ",".join(f"{'seed' if k == SEED else k}={point['labels'][k]}" for k in keys) or "all runs"
        group = groups.setdefault(key, {"label": label, "runs": []})
        group["runs"].append(r)
    for group in groups.values():
        group["single"] = all(labels.stage_estimators(r["recipe"]) == ["single"] for r in group["runs"])
    return list(groups.values())


def choose_reference(groups: list[dict], spec: str | None) -> dict:
    """The group named by ``--reference KEY=VALUE`` (an axis value as the folder name shows it or as a
    TOML value; ``run=NAME`` names a run), else the first single-scale group, else the first group."""
    if spec is None:
        return next((g for g in groups if g["single"]), groups[0])
    key, sep, value = spec.partition("=")
    key, value = ("run.seed" if key.strip() == "seed" else key.strip()), value.strip()
    if not sep or not key or not value:
        raise UserError(f"{spec!r} is not of the form KEY=VALUE (e.g. estimator=single)", key="--reference")

    def matches(r: dict) -> bool:
        if key == "run":
            return r["name"] == value
        point = r["point"] or {}
        return key in point.get("axes", {}) and value in (point["labels"][key], toml_value(point["axes"][key]))

    found = [g for g in groups if any(matches(r) for r in g["runs"])]
    if len(found) != 1:
        raise UserError(f"{spec!r} matches {'no' if not found else len(found)} groups of runs "
                        f"(groups: {'; '.join(g['label'] for g in groups)}); name one", key="--reference")
    return found[0]


@dataclass(frozen=True)
class Pooled:
    """Values of one figure over a group's seeds: their mean, the spread (None for one value) and n."""

    mean: float
    spread: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Pooled | None:
        """Half the range for two values, the sample standard deviation for three or more; None for none."""
        if not values:
            return None
        n, mean = len(values), statistics.fmean(values)
        spread = None if n == 1 else (max(values) - min(values)) / 2 if n == 2 else statistics.stdev(values)
        return cls(mean, spread, n)

    def text(self, fmt: str) -> str:
        return format(self.mean, fmt) + ("" if self.spread is None else f" ± {format(self.spread, fmt)}")


#: how the tables and the report say what ± is
SPREAD_WORDS = ("± is over a group's seeds: half the range for n = 2, the sample standard deviation for n ≥ 3; "
                "one seed shows no ±")


def verdict(value: Pooled | None, reference: Pooled | None) -> str:
    """Whether the interval mean ± spread of ``value`` overlaps the reference's: an overlap is "not
    distinguishable from the reference" (no claim of equality); a single seed is not judged."""
    if value is None or reference is None:
        return "-"
    if value.spread is None or reference.spread is None:
        return "one seed: not judged"
    if abs(value.mean - reference.mean) <= value.spread + reference.spread:
        return "not distinguishable from the reference"
    return "above the reference" if value.mean > reference.mean else "below the reference"


def group_table(groups: list[dict], reference: dict, target: float, equal_work: float,
                equal_seconds: float) -> tuple[list[str], list[list[str]]]:
    """Column names and one row per group: n, validation PSNR at equal work and at equal seconds, work
    and seconds to reach ``target`` (over the seeds that reached it: ``(k/n)`` when not all did), test
    PSNR, each as mean ± spread, and the verdicts against ``reference`` at equal work and seconds."""
    figures = []
    for g in groups:
        curves = [r["curve"] for r in g["runs"]]
        reached = [c for c in (cost_to_reach(curve, target) for curve in curves) if c is not None]
        figures.append({
            "work": Pooled.of([v for v in (psnr_at(c, equal_work) for c in curves) if v is not None]),
            "seconds": Pooled.of([v for v in (psnr_at_seconds(c, equal_seconds) for c in curves) if v is not None]),
            "reach_work": Pooled.of([w for w, _ in reached]), "reach_seconds": Pooled.of([s for _, s in reached]),
            "reached": "" if len(reached) == len(curves) else f" ({len(reached)}/{len(curves)})",
            "test": Pooled.of([r["summary"]["test"]["psnr"] for r in g["runs"]])})
    ref = figures[groups.index(reference)]
    columns = ["group", "n", f"val@{equal_work:.0f}WU", f"val@{equal_seconds:.3g}s", "WU to target", "s to target",
               "test PSNR", "at equal work", "at equal seconds"]
    rows = []
    for g, f in zip(groups, figures):
        cell = lambda p, fmt: "-" if p is None else p.text(fmt)
        is_ref = g is reference
        rows.append([g["label"], str(len(g["runs"])), cell(f["work"], ".2f"), cell(f["seconds"], ".2f"),
                     "not reached" if f["reach_work"] is None else cell(f["reach_work"], ".0f") + f["reached"],
                     "" if f["reach_seconds"] is None else cell(f["reach_seconds"], ".1f") + f["reached"],
                     cell(f["test"], ".2f"),
                     "reference" if is_ref else verdict(f["work"], ref["work"]),
                     "reference" if is_ref else verdict(f["seconds"], ref["seconds"])])
    return columns, rows


def table(runs: list[dict], target: float) -> tuple[list[str], list[list[str]], float, float]:
    """Column names, one row of strings per run, and the equal work and equal seconds compared at."""
    equal_work = min(r["summary"]["work_units"] for r in runs)
    equal_seconds = min(r["summary"]["seconds"] for r in runs)
    f = lambda v, fmt: "-" if v is None else format(v, fmt)
    columns = ["run", "WU", "seconds", "best val", "test PSNR", "test SSIM", "naive PSNR",
               f"val@{equal_work:.0f}WU", f"val@{equal_seconds:.3g}s", "WU to target", "s to target", "method"]
    rows = []
    for r in runs:
        s, curve = r["summary"], r["curve"]
        reach = cost_to_reach(curve, target)
        rows.append([r["name"], f(s["work_units"], ".0f"), f(s["seconds"], ".1f"), f(max(p for *_, p in curve), ".2f"),
                     f(s["test"]["psnr"], ".2f"), f(s["test"]["ssim"], ".4f"), f(s["test"].get("input_psnr"), ".2f"),
                     f(psnr_at(curve, equal_work), ".2f"), f(psnr_at_seconds(curve, equal_seconds), ".2f"),
                     "not reached" if reach is None else f"{reach[0]:.0f}", "" if reach is None else f"{reach[1]:.1f}",
                     r["method"]])
    return columns, rows, equal_work, equal_seconds


def text_table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    line = lambda cells: " ".join(c.ljust(w) if i in (0, len(columns) - 1) else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(columns), *(line(r) for r in rows)])


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(out + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows])


def band(curves: list[Curve], axis: int) -> tuple[list[float], list[float], list[float]]:
    """The pooled validation curve of one group on ``axis`` (0: work units, 1: seconds): the costs at
    which any seed validated, up to where the first seed ended, and the mean and the spread (as in
    :class:`Pooled`; 0 for one seed) of the seeds' latest PSNR there."""
    end = min(c[-1][axis] for c in curves)
    xs = sorted({point[axis] for c in curves for point in c if point[axis] <= end})
    pooled = [Pooled.of([v for v in (_psnr_at(c, axis, x) for c in curves) if v is not None]) for x in xs]
    kept = [(x, p) for x, p in zip(xs, pooled) if p is not None and p.n == len(curves)]
    return [x for x, _ in kept], [p.mean for _, p in kept], [p.spread or 0.0 for _, p in kept]


def write_plots(groups: list[dict], out: Path, equal_work: float, equal_seconds: float, target: float) -> list[Path]:
    """``psnr_vs_work.png`` and ``psnr_vs_seconds.png``: per group, the mean validation PSNR over its
    seeds and a band of ± the spread, one colour per group; the equal-cost line and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for g in groups for r in g["runs"]]
    colours = plt.get_cmap("tab10")
    paths = []
    for axis, index, xlabel, equal in (("work", 0, "work units (1 WU = one finest-mesh sample)", equal_work),
                                       ("seconds", 1, "training seconds", equal_seconds)):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for i, g in enumerate(groups):
            xs, mean, spread = band([r["curve"] for r in g["runs"]], index)
            colour = colours(i % 10)
            ax.plot(xs, mean, marker="o", markersize=3, color=colour,
                    label=f"{g['label']} ({g['runs'][0]['method']}), n={len(g['runs'])}")
            if len(g["runs"]) > 1:
                ax.fill_between(xs, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                                color=colour, alpha=0.2, linewidth=0)
        ax.axvline(equal, color="black", linestyle="--", linewidth=0.8, label=f"equal {axis}")
        ax.axhline(target, color="black", linestyle="-.", linewidth=0.8, label=f"target {target:.2f} dB")
        title = f"validation PSNR against {axis}"
        naive = {round(r["val_naive_psnr"], 6) for r in runs if r["val_naive_psnr"] is not None}
        if len(naive) == 1:  # the runs validate on the same tiles: one naive baseline for all
            level = naive.pop()
            if level >= min(p for r in runs for *_, p in r["curve"]) - 3:
                ax.axhline(level, color="gray", linestyle=":", label="naive baseline")
            else:  # far below the curves: a line there would flatten them
                title += f" (naive baseline {level:.2f} dB)"
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation PSNR (dB)")
        ax.set_title(title + ("\nbands: ± the spread over seeds" if any(len(g["runs"]) > 1 for g in groups) else ""),
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"psnr_vs_{axis}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_tiles(runs: list[dict], out: Path, count: int, device: str) -> tuple[Path | None, str]:
    """``tiles.png``: the first run's first ``count`` test tiles, degraded, restored by every run with the
    same task (its best weights, else its last), and clean; returns the path (or None) and a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from msframe import inference, metrics, plugins
    from msframe import trained as trained_runs

    loaded = plugins.load()
    first = trained_runs.load_run(runs[0]["folder"], loaded, _weights(runs[0]["folder"]), device=device)
    recipe, task = first.recipe, first.task
    split = first.dataset.split("test")
    batch = inference.eval_batch(recipe, task, split, "test", recipe.schedule.resolution)
    count = min(count, batch.input.shape[0])
    shown = inference.first(batch, count)
    naive = task.baseline(shown)
    columns = [("degraded input" if naive is not None else None, None if naive is None else naive.clamp(0, 1))]
    skipped = []
    for r in runs:
        if r["recipe"].get("task") != runs[0]["recipe"].get("task"):
            skipped.append(r["name"])
            continue
        trained = first if r is runs[0] else trained_runs.load_run(r["folder"], loaded, _weights(r["folder"]), device=device)
        columns.append((f"{r['method']}\n{r['name']} ({trained.weights.stem})",
                        inference.restore_tiles(trained.model, task, shown, trained.device, count)))
    columns.append(("clean", shown.target.clamp(0, 1)))
    columns = [(title, images) for title, images in columns if images is not None]
    fig, axes = plt.subplots(count, len(columns), figsize=(2.2 * len(columns), 2.2 * count + 0.6), dpi=120, squeeze=False)
    for j, (title, images) in enumerate(columns):
        for i in range(count):
            ax = axes[i][j]
            image = inference.to_uint8(images[i])
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if title != "clean":
                ax.set_xlabel(f"{float(metrics.psnr(images[i:i + 1].float(), shown.target[i:i + 1].clamp(0, 1))):.2f} dB",
                              fontsize=7)
            if i == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path = out / "tiles.png"
    fig.savefig(path)
    plt.close(fig)
    note = f"tiles from the test split of {runs[0]['name']}; PSNR per tile below each image"
    if skipped:
        note += f"; left out (another task): {', '.join(skipped)}"
    return path, note


def _weights(folder: Path) -> str:
    return "best" if RunFolder(folder).best.is_file() else "last"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP_FOLDER")
    ap.add_argument("--by", metavar="KEY[,KEY]", help="group runs by these sweep axes (default: every axis but "
                    "the seed, whose runs are pooled)")
    ap.add_argument("--reference", metavar="KEY=VALUE", help="the group compared against (default: the single-scale "
                    "group when there is one, else the first in sweep order); run=NAME names a run")
    ap.add_argument("--within", type=float, default=0.1,
                    help="target = the reference's best val PSNR (mean over its seeds) minus this (dB)")
    ap.add_argument("--target", type=float, help="target validation PSNR in dB (overrides --within)")
    ap.add_argument("--out", metavar="DIR", help="where the plots, tiles.png and report.md go (default: "
                    "SWEEP_FOLDER/compare for one sweep folder, else compare/ in the folder holding the runs)")
    ap.add_argument("--no-images", action="store_true", help="skip tiles.png (it loads every run's network)")
    ap.add_argument("--tiles", type=int, default=4, help="test tiles in tiles.png (default 4)")
    ap.add_argument("--device", default="cpu", help="where tiles.png's networks run (default cpu)")
    args = ap.parse_args(argv)
    try:
        if args.tiles < 1:
            raise UserError(f"--tiles must be at least 1 (got {args.tiles})", key="--tiles")
        folders, unfinished = find_runs(args.runs)
        runs = sweep_order([read_run(f) for f in folders])
        names = [r["name"] for r in runs]
        for r in runs:  # runs of different sweeps may share a point's name: add the parent folder's
            if names.count(r["name"]) > 1:
                r["name"] = f"{r['folder'].parent.name}/{r['name']}"
        by = None if args.by is None else [SEED if k.strip() == "seed" else k.strip() for k in args.by.split(",")]
        groups = group_runs(runs, by)
        reference = choose_reference(groups, args.reference)
        best = Pooled.of([max(p for *_, p in r["curve"]) for r in reference["runs"]])
        target = args.target if args.target is not None else best.mean - args.within
        columns, rows, equal_work, equal_seconds = table(runs, target)
        pooled_columns, pooled_rows = group_table(groups, reference, target, equal_work, equal_seconds)
        print(text_table(columns, rows))
        print(f"\ntarget: validation PSNR ≥ {target:.2f} dB; equal cost: {equal_work:.0f} WU and {equal_seconds:.1f} s "
              f"(the smallest run's totals)")
        heading = (f"reference: {reference['label']} (best validation PSNR {best.text('.2f')} dB, n={best.n}); "
                   f"{SPREAD_WORDS}; a verdict compares the intervals mean ± spread (overlap: not distinguishable)")
        # groups of one run each repeat the table above without a spread: their comparison is that table
        pooling = any(len(g["runs"]) > 1 for g in groups)
        if pooling:
            print(f"\n{heading}\n{text_table(pooled_columns, pooled_rows)}")
        else:
            print(f"reference: {reference['label']} (one run per group: no seeds to pool; --seeds N gives spreads)")
        for u in unfinished:
            print(f"skipped (unfinished): {u}")
        single = len(args.runs) == 1 and not RunFolder(args.runs[0]).finished
        common = Path(os.path.commonpath([str(r["folder"].resolve().parent) for r in runs]))
        out = Path(args.out) if args.out else (Path(args.runs[0]) if single else common) / "compare"
        if not args.out:  # beside the run folders: a link there could point the writes anywhere
            for folder in [out.parent, out, *(r["folder"] for r in runs)]:
                if folder.is_symlink():
                    raise UserError(f"{folder} is a symbolic link; compare writes only into real folders (give --out)",
                                    key="RUN_FOLDER")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot make {out}: {exc.strerror or exc}", key="--out") from None
        plots = write_plots(groups, out, equal_work, equal_seconds, target)
        tiles, note = (None, "") if args.no_images else write_tiles(runs, out, args.tiles, args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a plot that cannot be written (a read-only or vanished --out)
        print(f"error: --out: cannot write {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    report = [f"# Comparison of {len(runs)} runs", "",
              (f"Target: validation PSNR ≥ {target:.2f} dB. Equal cost: {equal_work:.0f} WU and {equal_seconds:.1f} s "
               f"(the smallest run's totals). Naive PSNR: the task's baseline (e.g. the degraded input) on the test tiles."),
              "", markdown_table(columns, rows), ""]
    if pooling:
        report += ["Per group, " + heading + ".", "", markdown_table(pooled_columns, pooled_rows), ""]
    report += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in plots]
    if tiles is not None:
        report += ["", f"![test tiles]({tiles.name})", "", note]
    report += ["", "Run folders:", "", *(f"- `{r['folder']}`" for r in runs), ""]
    try:
        (out / "report.md").write_text("\n".join(report))
    except OSError as exc:
        print(f"error: --out: cannot write {out / 'report.md'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report.md'} (with {', '.join(p.name for p in plots)}{', tiles.png' if tiles else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
