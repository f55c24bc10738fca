"""Conformance of loggers (:func:`check_logger`), fed the example records of :mod:`msframe.records`."""

from __future__ import annotations

import copy
import tempfile
from contextlib import nullcontext
from pathlib import Path

from msframe.components import Logger, RunInfo
from msframe.records import ALLOCATION_RECORD, EVAL_RECORD, SUMMARY, TRAIN_RECORD
from msframe.testing.plumbing import ParamsLike, _calling, _expect, _prepare


def check_logger(cls: type, params: ParamsLike = None, *, directory: str | Path | None = None) -> None:
    """A logger goes through a run, a failed run and a resumed run in a run folder.

    In ``directory`` (a fresh temporary folder when None) the logger is opened, fed
    :data:`TRAIN_RECORD`, :data:`ALLOCATION_RECORD` and :data:`EVAL_RECORD`, and closed with
    :data:`SUMMARY`; a second instance
    is then opened as a resume (``resumed_step`` = the first run's step), fed a later record and
    closed with ``None`` (a run that failed). Nothing may raise, and ``log`` must leave each record
    as it was: every logger of a run receives the same dict.
    """
    logger, who = _prepare(cls, Logger, "logger", params)
    place = tempfile.TemporaryDirectory(prefix="msframe-logger-") if directory is None else nullcontext(str(directory))
    with place as where:
        folder = Path(where)
        recipe = {"run": {"name": "conformance", "seed": 0}}
        later = {**TRAIN_RECORD, "iteration": TRAIN_RECORD["iteration"] + 1, "step": TRAIN_RECORD["step"] + 1}
        for instance, resumed, records, summary in (
            (logger, 0, [TRAIN_RECORD, ALLOCATION_RECORD, EVAL_RECORD], SUMMARY),
            (cls(logger.params), TRAIN_RECORD["step"], [later], None),
        ):
            phase = "resumed run" if resumed else "run"
            with _calling(who, f"open() of a {phase}"):
                instance.open(RunInfo(folder, "conformance", recipe, resumed))
            for example in records:
                # the logger gets a copy: a logger that modifies it must not spoil the examples for later checks
                record, kept = copy.deepcopy(example), copy.deepcopy(example)
                with _calling(who, f"log() of a {record['event']} record in a {phase}"):
                    instance.log(record)
                _expect(record == kept, who, f"log() modified the {record['event']} record it was given")
            with _calling(who, f"close({'the summary' if summary else 'None'}) of a {phase}"):
                instance.close(copy.deepcopy(summary))
