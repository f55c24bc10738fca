"""``tensorboard``: TensorBoard event files in the run folder, on the work-unit axis.

Every training, evaluation and re-allocation record becomes the scalars the ``wandb`` logger logs
(``train/loss``, ``train/mesh<side>/…``, ``val/psnr``, ``cost/seconds``, ``allocation/…``; see
:mod:`msframe_loggers.rows`), with the cumulative work units, rounded to a whole number, as
TensorBoard's step, so runs with different schedules line up at equal cost. The event files go to
``RUN/tensorboard/`` (``tensorboard --logdir SWEEP_OR_OUT_FOLDER`` shows every run); a resumed run
drops the events after its checkpoint and continues. Needs the ``tensorboard`` package
(``pip install 'msframe[tensorboard]'``).
"""

from __future__ import annotations

import json

from pydantic import Field

from msframe.components import Logger, Params, RunInfo
from msframe.errors import UserError
from msframe.rundir import RunFolder

from .rows import STEP, scalars


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer imports the tensorboard package
        raise UserError("the tensorboard logger needs the tensorboard package: pip install 'msframe[tensorboard]'",
                        key="loggers.tensorboard") from None
    return SummaryWriter


class TensorBoardLogger(Logger):
    """TensorBoard scalars of every record in ``RUN/tensorboard/``, on the work-unit axis."""

    class Params(Params):
        flush_seconds: float = Field(30.0, gt=0, le=3600)  # how often the event file is written out (a kill loses at most this)

    def __init__(self, params: Params):
        super().__init__(params)
        self._writer_class = _writer_class()  # refused when the recipe is built, not after training starts

    def open(self, run: RunInfo) -> None:
        folder = RunFolder(run.dir)
        # a resumed run replaces what the interrupted one wrote after the checkpoint
        purge = _work_at(folder, run.resumed_step) + 1 if run.resumed_step else None
        self._writer = self._writer_class(str(folder.tensorboard), purge_step=purge,
                                          flush_secs=self.params.flush_seconds)

    def log(self, r: dict) -> None:
        row = scalars(r)
        if row is None:
            return
        step = round(row.pop(STEP))
        for key, value in row.items():
            self._writer.add_scalar(key, value, global_step=step)

    def close(self, summary: dict | None) -> None:
        self._writer.close()


def _work_at(folder: RunFolder, step: int) -> int:
    """The work units, rounded, of the last record of ``metrics.jsonl`` at or before ``step`` (0 for none)."""
    work = 0
    if folder.metrics.is_file():
        for line in folder.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                if int(record["step"]) <= step:
                    work = max(work, round(record["work_units"]))
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
    return work
