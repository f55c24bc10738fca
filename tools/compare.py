#!/usr/bin/env python3
"""Compare finished runs on a cost axis: quality against work units and seconds, plots, an image grid.

    python tools/compare.py RUN_OR_SWEEP_FOLDER [...] [--within 0.1] [--target DB] [--out DIR] [--no-images]

Each argument is a run folder or any folder above run folders (a sweep folder), searched recursively.
Prints, per run: its method (estimator, stages, meshes), total work, training seconds, best
validation PSNR, test PSNR/SSIM and the naive baseline's test PSNR; the validation PSNR each run had
reached at the smallest total work among the runs and at the smallest training seconds (quality at
equal cost); and the work and seconds each run needed to first reach the target validation PSNR —
by default 0.1 dB below the first run's best (give the single-scale reference first), or ``--target``
dB. It also writes, into ``--out``: ``psnr_vs_work.png`` and ``psnr_vs_seconds.png`` (one line per
run), ``tiles.png`` (the same test tiles: degraded input, each run's restoration with its best
weights, clean) and ``report.md`` bundling them with the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

from msframe import labels
from msframe.errors import UserError
from msframe.rundir import Curve, RunFolder, read_summary, validation_curve


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


def psnr_at(curve: Curve, work: float) -> float | None:
    """The last validation PSNR recorded at or before ``work`` work units."""
    seen = [p for w, _, p in curve if w <= work + 1e-9]
    return seen[-1] if seen else None


def psnr_at_seconds(curve: Curve, seconds: float) -> float | None:
    """The last validation PSNR recorded at or before ``seconds`` training seconds."""
    seen = [p for _, s, p in curve if s <= seconds + 1e-9]
    return seen[-1] if seen else None


def cost_to_reach(curve: Curve, target: float) -> tuple[float, float] | None:
    """Work units and seconds at the first validation with PSNR ≥ ``target``."""
    return next(((w, s) for w, s, p in curve if p >= target), None)


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


def write_plots(runs: list[dict], out: Path) -> list[Path]:
    """``psnr_vs_work.png`` and ``psnr_vs_seconds.png``: validation PSNR of every run, labelled by method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis, index, xlabel in (("work", 0, "work units (1 WU = one finest-mesh sample)"), ("seconds", 1, "training seconds")):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for r in runs:
            xs = [point[index] for point in r["curve"]]
            ys = [point[2] for point in r["curve"]]
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{r['method']} ({r['name']})")
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
        ax.set_title(title)
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
    ap.add_argument("--within", type=float, default=0.1, help="target = first run's best val PSNR minus this (dB)")
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
        runs = [read_run(f) for f in folders]
        names = [r["name"] for r in runs]
        for r in runs:  # runs of different sweeps may share a point's name: add the parent folder's
            if names.count(r["name"]) > 1:
                r["name"] = f"{r['folder'].parent.name}/{r['name']}"
        target = args.target if args.target is not None else max(p for *_, p in runs[0]["curve"]) - args.within
        columns, rows, equal_work, equal_seconds = table(runs, target)
        print(text_table(columns, rows))
        print(f"\ntarget: validation PSNR ≥ {target:.2f} dB; equal cost: {equal_work:.0f} WU and {equal_seconds:.1f} s "
              f"(the smallest run's totals)")
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
        plots = write_plots(runs, out)
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
