"""``wandb``: a Weights & Biases run per msframe run, on a cost axis.

Cumulative work units are the step metric of every training, evaluation and cost curve, so runs
with different schedules line up at equal cost. The W&B files live in the run folder
(``RUN/wandb/``); a resumed msframe run continues the same W&B run (its id is kept in
``RUN/wandb-run-id``).

Mode ``auto`` means: ``WANDB_MODE`` if set, else ``online`` when credentials exist
(``WANDB_API_KEY`` or a netrc entry for the W&B host) and the W&B host answers a TCP connection
within two seconds, else ``offline`` (real run files that ``wandb sync`` uploads later; the fallback
is said on stderr). Nothing ever waits for a login or for an unreachable server; only an explicit
``mode = "online"`` goes online without the probe.
"""

from __future__ import annotations

import netrc
import os
import secrets
import socket
import sys
from urllib.parse import urlparse
from pathlib import Path
from typing import Literal

from msframe import checkpoint
from msframe.components import Logger, Params, RunInfo

STEP = "work_units"


def _credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in h for h in hosts)


def _reachable(timeout: float = 2.0) -> bool:
    """Whether the W&B host (``WANDB_BASE_URL``, default api.wandb.ai) accepts a TCP connection within ``timeout`` s."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout):
            return True
    except OSError:
        return False


def _flatten(prefix: str, data: dict, out: dict) -> dict:
    for k, v in data.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            _flatten(key, v, out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


class WandbLogger(Logger):
    class Params(Params):
        project: str = "msframe"
        entity: str = ""  # empty: the account's default entity
        mode: Literal["auto", "online", "offline", "disabled"] = "auto"
        group: str = ""
        tags: list[str] = []

    def mode(self) -> str:
        if self.params.mode != "auto":
            return self.params.mode
        if os.environ.get("WANDB_MODE"):
            return os.environ["WANDB_MODE"]
        if not _credentials():
            return "offline"
        if not _reachable():
            print("warning: loggers.wandb: W&B credentials found but the W&B host is unreachable; logging offline "
                  "(upload later with `wandb sync RUN/wandb`)", file=sys.stderr)
            return "offline"
        return "online"

    def open(self, run: RunInfo) -> None:
        import wandb

        id_file = Path(run.dir) / "wandb-run-id"
        run_id = id_file.read_text(encoding="ascii", errors="replace").strip() if id_file.is_file() else ""
        if not run_id.isalnum():  # missing or damaged: a fresh W&B run
            run_id = secrets.token_hex(4)
        checkpoint.write_text(id_file, run_id + "\n")  # atomic: a kill never leaves a half-written id
        self._run = wandb.init(
            project=self.params.project,
            entity=self.params.entity or None,
            group=self.params.group or None,
            tags=self.params.tags or None,
            name=Path(run.dir).name,
            id=run_id,
            resume="allow",
            dir=str(run.dir),
            mode=self.mode(),
            config=run.recipe,
            settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True),
        )
        self._run.define_metric(STEP)
        for family in ("train", "val", "test", "cost"):
            self._run.define_metric(f"{family}/*", step_metric=STEP)

    def log(self, r: dict) -> None:
        row = {STEP: r["work_units"]}
        if r["event"] == "train":
            row.update({"train/loss": r["loss"], "train/lr": r["lr"], "train/stage": r["stage"],
                        "train/resolution": r["stage_resolution"], "cost/seconds": r["seconds"],
                        "cost/flops": r["flops"], "cost/step_seconds": r["step_seconds"]})
            for lv in r["levels"]:
                side = f"train/mesh{lv['resolution']}"
                for key in ("fine_loss", "coarse_loss", "value", "correction_var", "batch", "work_share", "seconds", "flops"):
                    if key in lv:
                        row[f"{side}/{key}"] = lv[key]
            _flatten("cost/mesh", {k: v for k, v in r.get("meshes", {}).items()}, row)
        elif r["event"] == "eval":
            split = r["split"]
            row.update({f"{split}/{k}": r[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim") if k in r})
        self._run.log(row)

    def close(self, summary: dict | None) -> None:
        if summary is not None:
            self._run.summary.update(_flatten("summary", {k: summary[k] for k in ("test", "work_units", "flops", "seconds", "work_ratio") if summary.get(k) is not None}, {}))
        self._run.finish(exit_code=0 if summary is not None else 1)
