"""Reading a finished run folder: what tools that compare runs (compare.py, report.py) rely on.

Only ``summary.json`` and the validation records of ``metrics.jsonl`` are read; a damaged summary is a
located error, damaged metric lines are skipped like a line cut short by a kill.
"""

from __future__ import annotations

import json
from pathlib import Path

from msframe.errors import UserError

#: A validation curve: (cumulative work units, training seconds, validation PSNR) per evaluation.
Curve = list[tuple[float, float, float]]


def read_summary(folder: Path) -> dict:
    """The run's ``summary.json``; a missing or unreadable one is a UserError naming the file."""
    summary_file = Path(folder) / "summary.json"
    if not summary_file.is_file():
        raise UserError(f"{folder} is not a finished run folder (no summary.json)", key="RUN_FOLDER")
    try:
        summary = json.loads(summary_file.read_bytes().decode("utf-8"))
        if not isinstance(summary, dict) or not isinstance(summary.get("test"), dict):
            raise ValueError("not an msframe summary")
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"unreadable summary ({str(exc).splitlines()[0][:120]})", file=str(summary_file)) from None
    return summary


def validation_curve(folder: Path) -> tuple[Curve, float | None]:
    """The run's validation records, in order, and the naive baseline's PSNR of the last of them.

    Empty when the run kept no ``metrics.jsonl`` (the jsonl logger was off).
    """
    metrics_file = Path(folder) / "metrics.jsonl"
    curve: Curve = []
    naive = None
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
                naive = r.get("input_psnr")
    return curve, naive
