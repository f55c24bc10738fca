#!/usr/bin/env python3
"""Compare finished runs on a cost axis: quality against work units and seconds.

    python tools/compare.py RUN_FOLDER [RUN_FOLDER ...] [--within 0.1] [--target DB]

Reads each run folder's summary.json and metrics.jsonl (nothing else). Prints, per run: total work,
training seconds, best validation PSNR, test PSNR/SSIM; the validation PSNR each run had reached at
the smallest total work among the runs (quality at equal cost); and the work and seconds each run
needed to first reach the target validation PSNR — by default 0.1 dB below the first run's best (give
the single-scale reference first), or ``--target`` dB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from msframe.errors import UserError


def read_run(folder: Path) -> dict:
    """The summary and the validation curve [(work units, seconds, psnr)] of one run folder."""
    summary_file, metrics_file = folder / "summary.json", folder / "metrics.jsonl"
    if not summary_file.is_file():
        raise UserError(f"{folder} is not a finished run folder (no summary.json)", key="RUN_FOLDER")
    try:
        summary = json.loads(summary_file.read_bytes().decode("utf-8"))
        if not isinstance(summary, dict) or not isinstance(summary.get("test"), dict):
            raise ValueError("not an msframe summary")
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"unreadable summary ({str(exc).splitlines()[0][:120]})", file=str(summary_file)) from None
    curve = []
    if metrics_file.is_file():
        # damaged bytes end up in lines that do not parse, and are skipped like a line cut short by a kill
        for line in metrics_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and r.get("event") == "eval" and r.get("split") == "val" \
                    and isinstance(r.get("psnr"), (int, float)):
                curve.append((r["work_units"], r["seconds"], r["psnr"]))
    if not curve:
        raise UserError(f"{folder} has no validation records in metrics.jsonl (was the jsonl logger off?)",
                        key="RUN_FOLDER")
    return {"name": folder.name, "summary": summary, "curve": curve}


def psnr_at(curve: list[tuple[float, float, float]], work: float) -> float | None:
    """The last validation PSNR recorded at or before ``work`` work units."""
    seen = [p for w, _, p in curve if w <= work + 1e-9]
    return seen[-1] if seen else None


def cost_to_reach(curve: list[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """Work units and seconds at the first validation with PSNR ≥ ``target``."""
    return next(((w, s) for w, s, p in curve if p >= target), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    ap.add_argument("--within", type=float, default=0.1, help="target = first run's best val PSNR minus this (dB)")
    ap.add_argument("--target", type=float, help="target validation PSNR in dB (overrides --within)")
    args = ap.parse_args(argv)
    try:
        runs = [read_run(Path(r)) for r in args.runs]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.target if args.target is not None else max(p for *_, p in runs[0]["curve"]) - args.within
    equal = min(r["summary"]["work_units"] for r in runs)
    width = max(len(r["name"]) for r in runs)
    print(f"{'run':<{width}} {'WU':>10} {'seconds':>9} {'best val':>9} {'test PSNR':>9} {'test SSIM':>9} "
          f"{f'val@{equal:.0f}WU':>12} {'WU to target':>13} {'s to target':>11}")
    for r in runs:
        s, curve = r["summary"], r["curve"]
        at = psnr_at(curve, equal)
        reach = cost_to_reach(curve, target)
        print(f"{r['name']:<{width}} {s['work_units']:>10.0f} {s['seconds']:>9.1f} {max(p for *_, p in curve):>9.2f} "
              f"{s['test']['psnr']:>9.2f} {s['test']['ssim']:>9.4f} {'-' if at is None else f'{at:.2f}':>12} "
              f"{'not reached' if reach is None else f'{reach[0]:.0f}':>13} {'' if reach is None else f'{reach[1]:.1f}':>11}")
    print(f"\ntarget: validation PSNR ≥ {target:.2f} dB; equal cost: {equal:.0f} WU (the smallest run's total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
