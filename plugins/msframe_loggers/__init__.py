"""Built-in loggers.

- ``console``: progress (a live bar on a terminal, a line every ``every`` iterations in a log), evaluation
  results, re-allocations, the final summary.
- ``wandb``: a Weights & Biases run with work units as the step metric (see ``wandb_logger``).
- ``tensorboard``: TensorBoard event files in ``RUN/tensorboard/``, the same scalars on the work-unit
  axis (see ``tensorboard_logger``; needs the ``tensorboard`` extra).
- ``jsonl``: every record as one JSON object per line in ``metrics.jsonl`` of the run folder, flushed
  as it is written; on resume, records past the checkpoint are dropped so the file matches the run.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Literal

from pydantic import Field

import msframe
from msframe.checkpoint import finite
from msframe.components import InRunFolder, Logger, Params, RunInfo
from msframe.labels import ratio_words
from msframe.rundir import RunFolder

from .tensorboard_logger import TensorBoardLogger
from .wandb_logger import WandbLogger

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"


def _shares(levels: list[dict]) -> str:
    """``16px 62% 8px 25% 4px 13%``: each term's share of the iteration's work, by its finest mesh."""
    return " ".join(f"{lv['resolution']}px {100 * lv.get('work_share', 0):.0f}%" for lv in levels)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _columns(stream) -> int | None:
    """The width ``stream``'s terminal reports; None when it is no terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


class Console(Logger):
    """Progress on the console: a live bar on a terminal, plain lines in a log file or pipe, or on a
    terminal that reports 0 columns.

    Both show the stage and its mesh, the loss, each level's share of the iteration's work, work
    units, seconds and the estimated time left (from the seconds per work unit so far).
    """

    class Params(Params):
        every: int = Field(25, ge=1)  # iterations between progress lines (style "lines")
        style: Literal["auto", "bar", "lines"] = "auto"  # auto: a bar on a terminal, lines otherwise

    def open(self, run: RunInfo) -> None:
        self._out = sys.stdout
        word = "resuming" if run.resumed_step else "training"
        print(f"{word} {run.name} -> {run.dir}", file=self._out, flush=True)
        style = self.params.style
        if style == "auto":
            style = "bar" if getattr(self._out, "isatty", lambda: False)() else "lines"
        if style == "bar" and _columns(self._out) == 0:  # a terminal that reports no width has no room for a bar
            style = "lines"
        self._bar = None
        self._style = style

    def _say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self._out)
        else:
            print(text, file=self._out, flush=True)

    def log(self, r: dict) -> None:
        if r["event"] == "train":
            left = (r["total_work_units"] - r["work_units"]) * r["seconds"] / max(r["work_units"], 1e-9)
            where = f"stage {r['stage']} [{r['stage_resolution']}px]"
            if self._style == "bar":
                self._update_bar(r, where, left)
                return
            last_of_stage = r["iteration"] + 1 == r["stage_iterations"]
            if r["iteration"] % self.params.every and not last_of_stage:
                return
            self._say(
                f"{where} it {r['iteration'] + 1:>5}/{r['stage_iterations']:<5} "
                f"loss {r['loss']:.5f}  work {_shares(r['levels'])}  {r['work_units']:10.1f} WU  "
                f"{r['seconds']:7.1f}s  ETA {_duration(left)}"
            )
        elif r["event"] == "eval":
            self._say(
                f"  {r['split']:<4} PSNR {r['psnr']:6.2f} dB (input {r.get('input_psnr', float('nan')):6.2f})  "
                f"SSIM {r['ssim']:.4f} (input {r.get('input_ssim', float('nan')):.4f})  on {r['images']} "
                + ("whole images" if r.get("protocol") == "whole" else "tiles")
            )
        elif r["event"] == "allocation":
            self._say(f"  stage {r['stage']} re-allocated batches {r['batches']} at iteration {r['iteration']}")

    def _update_bar(self, r: dict, where: str, left: float) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=round(r["total_work_units"], 3), unit="WU", file=self._out, dynamic_ncols=True,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} WU{postfix}")
        self._bar.set_description_str(f"{where} it {r['iteration'] + 1}/{r['stage_iterations']}", refresh=False)
        self._bar.set_postfix_str(f"loss {r['loss']:.4f} | work {_shares(r['levels'])} | ETA {_duration(left)}",
                                  refresh=False)
        self._bar.update(r["work_units"] - self._bar.n)

    def close(self, summary: dict | None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if summary is None:
            return
        t = summary["test"]
        print(
            f"done: test PSNR {t['psnr']:.2f} dB vs input {t.get('input_psnr', float('nan')):.2f} dB, "
            f"SSIM {t['ssim']:.4f} vs {t.get('input_ssim', float('nan')):.4f}; "
            f"{summary['work_units']:.0f} WU ({ratio_words(summary['work_ratio'])}), "
            f"{summary['seconds']:.1f}s training",
            file=self._out,
            flush=True,
        )


class JsonLines(Logger):
    class Params(Params):
        file: InRunFolder = RunFolder.METRICS  # a relative path inside the run folder

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
    register("tensorboard", TensorBoardLogger)
