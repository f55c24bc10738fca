"""``wandb``: a Weights & Biases run per msframe run, on a cost axis.

Cumulative work units are the step metric of every training, evaluation and cost curve, so runs
with different schedules line up at equal cost. The W&B files live in the run folder
(``RUN/wandb/``); a resumed msframe run continues the same W&B run (its id is kept in
``RUN/wandb-run-id``) and its step numbering: W&B's step is msframe's iteration count, so the
records of one iteration (training, validation, re-allocation) share one history row.

Each run is named and tagged by its method (estimator, stages, meshes; see ``msframe.labels``); a
run of a sweep joins the sweep's group and carries its axis values as config (``axes``) and tags.
Every row carries ``cost/seconds`` and ``cost/flops`` beside ``work_units``, so curves line up on
any cost axis. Every validation logs its sample tiles as an image (``val/samples``); ``mlmc``
re-allocations are ``allocation/*`` rows and a table at the end. The summary holds the best
validation PSNR (``val/best_psnr``, and ``val/psnr`` keeps its maximum), and the end of a run
uploads the resolved recipe and the best and last checkpoints as artifacts.

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
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from msframe import checkpoint
from msframe.components import Logger, Params, RunInfo
from msframe.rundir import RunFolder

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
    """One W&B run per msframe run, on the work-unit axis, with ``cost/seconds`` and ``cost/flops`` on every row.

    The run is named and tagged by its method (estimator, stages, meshes) and, in a sweep, joins the
    sweep's group with its axis values as config and tags. It holds the training curves per mesh, the
    sample tiles of every validation (``val/samples``), ``mlmc`` re-allocations (``allocation/*`` rows
    and a table), the best validation PSNR in the summary (``val/best_psnr``), and at the end the
    resolved recipe and the best and last checkpoints as artifacts. Its files live in ``RUN/wandb/``;
    a resumed msframe run continues the same W&B run and its step.
    """

    class Params(Params):
        project: str = "msframe"
        entity: str = ""  # empty: the account's default entity
        mode: Literal["auto", "online", "offline", "disabled"] = "auto"
        group: str = ""  # empty: the sweep's group for a run of a sweep, else none
        tags: list[str] = []  # added to the method's own tags (estimator:…, stages:…, meshes:…)
        system_metrics: bool = True  # CPU/GPU/memory usage sampled by W&B
        console: bool = True  # W&B keeps the run's console output
        checkpoints: bool = True  # upload checkpoints/best.pt and last.pt as a model artifact at the end

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

        from msframe import labels

        self._dir = Path(run.dir)
        id_file = self._dir / "wandb-run-id"
        # a W&B sweep agent chooses the run id; otherwise a resumed run keeps its own
        stored = id_file.read_text(encoding="ascii", errors="replace").strip() if id_file.is_file() else ""
        run_id = os.environ.get("WANDB_RUN_ID") or (stored if stored.isalnum() else secrets.token_hex(4))
        checkpoint.write_text(id_file, run_id + "\n")  # atomic: a kill never leaves a half-written id
        point = run.point or {}
        axes = point.get("axes", {})
        tags = [*self.params.tags, *labels.tags(run.recipe), *(f"{k}={v}" for k, v in point.get("labels", {}).items())]
        config = {**run.recipe, "method": labels.method(run.recipe), **({"axes": axes} if axes else {})}
        self._resumed_step = run.resumed_step
        self._run = wandb.init(
            project=self.params.project,
            entity=self.params.entity or None,
            group=self.params.group or point.get("group") or None,
            tags=[t[:64] for t in tags],  # W&B's limit on a tag's length
            name=labels.run_name(run.recipe, self._dir.name),
            id=run_id,
            resume="allow",
            dir=str(run.dir),
            mode=self.mode(),
            config=config,
            settings=wandb.Settings(console="auto" if self.params.console else "off", quiet=True,
                                    x_disable_stats=not self.params.system_metrics),
        )
        self._run.define_metric(STEP)
        for family in ("train", "val", "test", "cost", "allocation"):
            self._run.define_metric(f"{family}/*", step_metric=STEP)
        self._run.define_metric("val/psnr", step_metric=STEP, summary="max")
        self._allocations = None

    def log(self, r: dict) -> None:
        import wandb

        row = {STEP: r["work_units"], "cost/seconds": r.get("seconds"), "cost/flops": r.get("flops")}
        if r["event"] == "train":
            row.update({"train/loss": r["loss"], "train/lr": r["lr"], "train/stage": r["stage"],
                        "train/resolution": r["stage_resolution"], "cost/step_seconds": r["step_seconds"]})
            for lv in r["levels"]:
                side = f"train/mesh{lv['resolution']}"
                for key in ("fine_loss", "coarse_loss", "value", "correction_var", "batch", "work_share", "seconds", "flops"):
                    if key in lv:
                        row[f"{side}/{key}"] = lv[key]
            _flatten("cost/mesh", {k: v for k, v in r.get("meshes", {}).items()}, row)
        elif r["event"] == "eval":
            split = r["split"]
            row.update({f"{split}/{k}": r[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim") if k in r})
            if r.get("samples") and (self._dir / r["samples"]).is_file():
                row[f"{split}/samples"] = wandb.Image(str(self._dir / r["samples"]),
                                                      caption=f"baseline | restored | clean at {r['work_units']:.0f} WU")
        elif r["event"] == "allocation":
            for t, (batch, var, cost) in enumerate(zip(r["batches"], r["variances"], r["costs"])):
                row.update({f"allocation/term{t}/batch": batch, f"allocation/term{t}/variance": var,
                            f"allocation/term{t}/cost": cost})
            row["allocation/stage"] = r["stage"]
            row["allocation/work_per_iteration"] = r["work_per_iteration"]
            if self._allocations is None:
                self._allocations = []
            self._allocations += [[r["stage"], r["iteration"], t, b, v, c]
                                  for t, (b, v, c) in enumerate(zip(r["batches"], r["variances"], r["costs"]))]
        else:
            return
        row = {k: v for k, v in row.items() if v is not None}
        # msframe's own step: a record of the same step joins that step's row (no empty rows), and a
        # resumed run continues the numbering instead of starting again at 0
        self._run.log(row, step=int(r["step"]))

    def close(self, summary: dict | None) -> None:
        import wandb

        if self._allocations:
            table = wandb.Table(columns=["stage", "iteration", "term", "batch", "variance", "cost"], data=self._allocations)
            self._run.log({"allocation/table": table}, step=int(self._run.step))
        if summary is not None:
            kept = {k: summary[k] for k in ("test", "work_units", "flops", "seconds", "work_ratio") if summary.get(k) is not None}
            self._run.summary.update(_flatten("summary", kept, {}))
            self._run.summary["val/best_psnr"] = summary["val_best_psnr"]
            self._run.summary["val/psnr"] = summary["val_best_psnr"]
            self._artifacts()
        self._run.finish(exit_code=0 if summary is not None else 1)

    def _artifacts(self) -> None:
        """The resolved recipe and plan as a ``recipe`` artifact; best and last checkpoints as a ``model``."""
        import wandb

        folder = RunFolder(self._dir)
        recipe = wandb.Artifact(f"recipe-{self._run.id}", type="recipe")
        for file in (folder.recipe, folder.plan):
            if file.is_file():
                recipe.add_file(str(file))
        self._run.log_artifact(recipe)
        checkpoints = [folder.best, folder.last]
        if self.params.checkpoints and any(c.is_file() for c in checkpoints):
            model = wandb.Artifact(f"model-{self._run.id}", type="model")
            for c in checkpoints:
                if c.is_file():
                    model.add_file(str(c))
            self._run.log_artifact(model, aliases=["latest", "best", "last"])
