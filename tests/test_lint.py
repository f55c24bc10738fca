"""The linter configured in pyproject.toml ([tool.ruff]) passes on the whole repository."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import ROOT


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        raise AssertionError(
            f"ruff is not installed for {sys.executable}; it comes with the test extras "
            "(python3 tools/dev.py setup, or pip install -c tools/pins.txt -e '.[test]')"
        )
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"ruff check . (exit {proc.returncode}); `python -m ruff check --fix .` repairs what it marks [*]:\n"
        f"{proc.stdout}{proc.stderr}"
    )
