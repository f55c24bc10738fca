"""The console logger's progress display: a bar on a terminal, plain lines where a bar cannot go."""

from __future__ import annotations

import io
import os

import pytest

import msframe_loggers
from msframe.components import RunInfo

TRAIN = {"event": "train", "stage": 0, "stage_resolution": 16, "iteration": 0, "stage_iterations": 4, "loss": 0.5,
         "levels": [{"resolution": 16, "work_share": 1.0}], "work_units": 2.0, "total_work_units": 8.0, "seconds": 0.1}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1


@pytest.mark.parametrize("columns, style", [(0, "lines"), (80, "bar")])
def test_a_terminal_reporting_zero_columns_gets_plain_lines(columns, style, monkeypatch, tmp_path):
    out = Terminal()
    monkeypatch.setattr(msframe_loggers.sys, "stdout", out)
    monkeypatch.setattr(msframe_loggers.os, "get_terminal_size", lambda fd: os.terminal_size((columns, 24)))
    console = msframe_loggers.Console(msframe_loggers.Console.Params())
    console.open(RunInfo(tmp_path, "tiny", {}, 0))
    console.log(TRAIN)
    console.close(None)
    assert console._style == style
    if style == "lines":
        assert "stage 0 [16px] it     1/4" in out.getvalue()
