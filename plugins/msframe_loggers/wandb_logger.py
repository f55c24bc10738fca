"""``wandb``: a Weights & Biases run per msframe run, on a cost axis.

Cumulative work units are the step metric of every training, evaluation and cost curve, so runs
with different schedules line up at equal cost. The W&B files live in the run folder
(``RUN/wandb/``); a resumed msframe run continues the same W&B run (its id is kept in
``RUN/wandb-run-id``) and its step numbering: W&B's step is msframe's iteration count, so the
records of one iteration (training, validation, re-allocation) share one history row. On resume,
the rows ``metrics.jsonl`` holds beyond the last step in the earlier W&B run files (rows a kill kept
from W&B) are logged before training goes on.

Each run is named and tagged by its method (estimator, stages, meshes; see ``msframe.labels``); a
run of a sweep joins the sweep's group and carries its axis values as config (``axes``) and tags.
Every row carries ``cost/seconds`` and ``cost/flops`` beside ``work_units``, so curves line up on
any cost axis. Every validation logs its sample tiles as an image (``val/samples``); ``mlmc``
re-allocations are ``allocation/*`` rows and a table at the end. The summary holds what
``summary.json`` holds: the best validation PSNR (``val/best_psnr``; ``val/psnr`` keeps its maximum,
the same value), set after the last row is written so no row overwrites it. The end of a run uploads
the resolved recipe as an artifact, and the best and the last checkpoints as one version each of
the ``model`` artifact (aliases ``best``, and ``last`` with ``latest``); they are read from the run
folder, never staged under the home folder (offline, ``wandb sync`` reads them there).

Mode ``auto`` means: ``WANDB_MODE`` if set, else ``online`` when credentials exist
(``WANDB_API_KEY`` or a netrc entry for the W&B host) and the W&B host answers a TCP connection
within two seconds, else ``offline`` (real run files that ``wandb sync`` uploads later; the fallback
is said on stderr). Nothing ever waits for a login or for an unreachable server; only an explicit
``mode = "online"`` goes online without the probe.
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
import socket
import struct
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from msframe import checkpoint
from msframe.components import Logger, Params, RunInfo
from msframe.rundir import RunFolder

from .rows import STEP, flatten, scalars


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


def _records(path: Path):
    """The payloads of the records of one W&B run file (``run-*.wandb``: a ``:W&B`` header, then the
    LevelDB log format: 32 KiB blocks of chunks, each with a 7-byte header); a file cut short by a
    kill ends at its last whole record."""
    block, header = 32768, 7
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        return
    pos, pending = header, b""
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        payload = data[pos + header:pos + header + length]
        if len(payload) < length:  # a chunk cut short by a kill
            return
        if kind == 0:  # zeros: the rest of the block is padding
            pos += left
            continue
        pos += header + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload


def last_logged_step(folder: Path) -> int:
    """The largest history step in the W&B run files under ``folder`` (``RUN/wandb``); 0 for none."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    last = 0
    for file in folder.glob("*run-*/run-*.wandb"):
        for payload in _records(file):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(payload)
            except DecodeError:  # a damaged record is skipped like a line cut short
                continue
            if record.WhichOneof("record_type") == "history":
                last = max(last, record.history.step.num)
    return last


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
        folder = RunFolder(self._dir)
        logged = last_logged_step(folder.wandb) if run.resumed_step else 0  # before this run adds its file
        # W&B stages artifact files (tables, ...) under WANDB_DATA_DIR, by default in the home folder
        self._data_dir = None if os.environ.get("WANDB_DATA_DIR") else str(folder.wandb)
        if self._data_dir:
            os.environ["WANDB_DATA_DIR"] = self._data_dir
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
        if run.resumed_step:
            self._replay(logged, run.resumed_step)

    def _replay(self, logged: int, resumed: int) -> None:
        """Log the records of ``metrics.jsonl`` after step ``logged`` up to ``resumed``: the rows a kill
        kept from the earlier W&B run files (the training goes on after ``resumed``)."""
        metrics = RunFolder(self._dir).metrics
        if not metrics.is_file():
            return
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
            if logged < step <= resumed:
                self.log(record)

    def log(self, r: dict) -> None:
        import wandb

        row = scalars(r)
        if row is None:
            return
        if r["event"] == "eval" and r.get("samples") and (self._dir / r["samples"]).is_file():
            row[f"{r['split']}/samples"] = wandb.Image(str(self._dir / r["samples"]),
                                                       caption=f"baseline | restored | clean at {r['work_units']:.0f} WU")
        elif r["event"] == "allocation":
            if self._allocations is None:
                self._allocations = []
            self._allocations += [[r["stage"], r["iteration"], t, b, v, c]
                                  for t, (b, v, c) in enumerate(zip(r["batches"], r["variances"], r["costs"]))]
        # msframe's own step: a record of the same step joins that step's row (no empty rows), and a
        # resumed run continues the numbering instead of starting again at 0
        self._run.log(row, step=int(r["step"]))

    def close(self, summary: dict | None) -> None:
        import wandb

        if self._allocations:
            table = wandb.Table(columns=["stage", "iteration", "term", "batch", "variance", "cost"], data=self._allocations)
            self._run.log({"allocation/table": table}, step=int(self._run.step))
        if summary is not None:
            # the pending row first: written after the summary, it would set val/psnr to its own value
            self._run.log({}, commit=True)
            kept = ("test", "work_units", "flops", "seconds", "work_ratio")
            self._run.summary.update(flatten("summary", {k: summary[k] for k in kept if summary.get(k) is not None}, {}))
            self._run.summary["val/best_psnr"] = summary["val_best_psnr"]
            self._run.summary["val/psnr"] = summary["val_best_psnr"]
            self._artifacts()
        self._run.finish(exit_code=0 if summary is not None else 1)
        if self._data_dir and os.environ.get("WANDB_DATA_DIR") == self._data_dir:
            del os.environ["WANDB_DATA_DIR"]  # the next run of a sweep stages in its own folder

    def _artifacts(self) -> None:
        """The resolved recipe and plan as a ``recipe`` artifact; the best, then the last checkpoint as
        one version each of the ``model`` artifact, aliased ``best`` and ``last`` (the last also
        ``latest``). Files are added in place (immutable, uncached): nothing is staged outside the
        run folder, which they no longer change in."""
        import wandb

        folder = RunFolder(self._dir)
        recipe = wandb.Artifact(f"recipe-{self._run.id}", type="recipe")
        for file in (folder.recipe, folder.plan):
            if file.is_file():
                recipe.add_file(str(file), policy="immutable", skip_cache=True)
        self._run.log_artifact(recipe)
        if not self.params.checkpoints:
            return
        for which in ("best", "last"):
            file = folder.weights(which)
            if file.is_file():
                model = wandb.Artifact(f"model-{self._run.id}", type="model", metadata={"checkpoint": which})
                model.add_file(str(file), policy="immutable", skip_cache=True)
                self._run.log_artifact(model, aliases=[which] + (["latest"] if which == "last" else []))
