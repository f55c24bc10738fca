"""Built-in loggers.

- ``console``: a progress line every ``every`` iterations, evaluation results, the final summary.
- ``wandb``: a Weights & Biases run with work units as the step metric (see ``wandb_logger``).
- ``jsonl``: every record as one JSON object per line in ``metrics.jsonl`` of the run folder, flushed
  as it is written; on resume, records past the checkpoint are dropped so the file matches the run.
"""

from __future__ import annotations

import json
import os
import sys
import time

from pydantic import Field

import msframe
from msframe.checkpoint import finite
from msframe.components import InRunFolder, Logger, Params, RunInfo

from .wandb_logger import WandbLogger


class Console(Logger):
    class Params(Params):
        every: int = Field(25, ge=1)  # iterations between progress lines

    def open(self, run: RunInfo) -> None:
        self._t0 = time.perf_counter()
        self._out = sys.stdout
        word = "resuming" if run.resumed_step else "training"
        print(f"{word} {run.name} -> {run.dir}", file=self._out, flush=True)

    def log(self, r: dict) -> None:
        if r["event"] == "train":
            last_of_stage = r["iteration"] + 1 == r["stage_iterations"]
            if r["iteration"] % self.params.every and not last_of_stage:
                return
            left = (r["total_work_units"] - r["work_units"]) * r["seconds"] / max(r["work_units"], 1e-9)
            print(
                f"stage {r['stage']} [{r['stage_resolution']}px] it {r['iteration'] + 1:>5}/{r['stage_iterations']:<5} "
                f"loss {r['loss']:.5f}  {r['work_units']:10.1f} WU  {r['seconds']:7.1f}s  "
                f"~{left:.0f}s left",
                file=self._out,
                flush=True,
            )
        elif r["event"] == "eval":
            print(
                f"  {r['split']:<4} PSNR {r['psnr']:6.2f} dB (input {r.get('input_psnr', float('nan')):6.2f})  "
                f"SSIM {r['ssim']:.4f} (input {r.get('input_ssim', float('nan')):.4f})  on {r['images']} tiles",
                file=self._out,
                flush=True,
            )

    def close(self, summary: dict | None) -> None:
        if summary is None:
            return
        t = summary["test"]
        print(
            f"done: test PSNR {t['psnr']:.2f} dB vs input {t.get('input_psnr', float('nan')):.2f} dB, "
            f"SSIM {t['ssim']:.4f} vs {t.get('input_ssim', float('nan')):.4f}; "
            f"{summary['work_units']:.0f} WU ({summary['work_ratio']:.2f}x less than single-scale), "
            f"{summary['seconds']:.1f}s training",
            file=self._out,
            flush=True,
        )


class JsonLines(Logger):
    class Params(Params):
        file: InRunFolder = "metrics.jsonl"  # a relative path inside the run folder

    def open(self, run: RunInfo) -> None:
        path = run.dir / self.params.file
        path.parent.mkdir(parents=True, exist_ok=True)
        if run.resumed_step and path.exists():
            # undecodable bytes (a damaged file) end up in lines that hold no step, and are dropped
            text = path.read_text(encoding="utf-8", errors="replace")
            kept = [line for line in text.splitlines() if _step(line) is not None and _step(line) <= run.resumed_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, path)
        elif path.exists():
            path.unlink()
        self._f = open(path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        self._f.write(json.dumps(finite(record), allow_nan=False) + "\n")  # strict JSON: NaN becomes null
        self._f.flush()

    def close(self, summary: dict | None) -> None:
        self._f.close()


def _step(line: str) -> int | None:
    """The step of one stored record; None for a line cut short by a kill."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


@msframe.hookimpl
def register_loggers(register):
    register("console", Console)
    register("jsonl", JsonLines)
    register("wandb", WandbLogger)
