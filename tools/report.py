#!/usr/bin/env python3
"""Run a matrix of recipes (tasks x methods x work fractions x seeds) and write the report.

    python tools/report.py recipes/paper/cpu/matrix.toml [--out DIR] [--jobs N] [--seeds 0,1,2] [--report-only]

Each point of the matrix is an ordinary run (``python -m msframe``) under DIR/runs (default
reports/<matrix stem>); finished points are skipped and unfinished ones resumed, so the same command
continues an interrupted matrix. DIR/report.md holds a table per task (test PSNR/SSIM, the naive
baseline, work units, seconds, each method against the reference at equal work and at less work,
seed spread) and links PNG plots of validation PSNR against work units and against seconds.
Exit codes: 0 done, 1 some runs failed (the report covers the others), 2 a mistake in the matrix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msframe import report
from msframe.errors import UserError


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__.splitlines()[0])
    p.add_argument("matrix", help="matrix TOML file (see msframe/report.py)")
    p.add_argument("--out", help="output folder (default: reports/<matrix stem>)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each single-threaded (default 1)")
    p.add_argument("--seeds", help="comma-separated seeds instead of the matrix's")
    p.add_argument("--report-only", action="store_true", help="write the report from the runs already there")
    args = p.parse_args(argv)
    try:
        path = Path(args.matrix)
        spec, points = report.load_matrix(path)
        if args.seeds:
            try:
                seeds = [int(s) for s in args.seeds.split(",")]
            except ValueError:
                raise UserError(f"{args.seeds!r} is not a comma-separated list of whole numbers", key="--seeds") from None
            spec = spec.model_copy(update={"seeds": seeds})
            _, points = report.load_matrix(path, seeds=seeds)
        out = Path(args.out) if args.out else Path("reports") / path.stem
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} exists and is not a folder", key="--out")
        failed = [] if args.report_only else [pt.name for pt, code in report.run_points(points, out, args.jobs) if code]
        written = report.write_report(spec, points, out, path)
        print(f"report: {written}")
        if failed:  # the report covers the runs that finished; the exit code says the matrix did not
            print(f"error: {len(failed)} runs failed (their logs are in {out / 'runs'}): {', '.join(failed[:5])}",
                  file=sys.stderr)
            return 1
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the report or a plot cannot be written (a read-only or vanished --out)
        print(f"error: --out: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the matrix", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
