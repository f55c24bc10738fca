"""tools/report.py: a matrix of runs, resumable, and the report written from the run folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RECIPE
from msframe import report

MATRIX = """\
recipes = ["tiny.toml"]
seeds = [0, 1]
reference = "single"

[methods.single]
set = ['estimator={type="single"}', "schedule.split=[1]", "schedule.batch=2"]
fractions = [1.0]

[methods.fms]
label = "Full-Multiscale"
fractions = [1.0, 0.5]
"""


def run_report(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


@pytest.fixture
def matrix(tmp_path: Path) -> Path:
    recipe = TINY_RECIPE.replace("iterations = [3, 2, 2]", "budget = 24.0")
    (tmp_path / "tiny.toml").write_text(recipe)
    path = tmp_path / "matrix.toml"
    path.write_text(MATRIX)
    return path


def test_the_matrix_expands_every_point_with_its_budget(matrix):
    spec, points = report.load_matrix(matrix)
    assert [p.name for p in points] == [
        "tiny-single-w1-s0", "tiny-single-w1-s1", "tiny-fms-w1-s0", "tiny-fms-w1-s1", "tiny-fms-w0.5-s0", "tiny-fms-w0.5-s1"]
    half = points[-1]
    assert "schedule.budget=12.0" in half.overrides and "run.seed=1" in half.overrides
    assert half.budget == 24.0


def test_a_matrix_runs_resumes_and_reports(matrix, tmp_path):
    out = tmp_path / "out"
    first = run_report(str(matrix), "--out", str(out), "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    text = (out / "report.md").read_text()
    assert "6 of 6 runs finished" in text
    overview, per_task = text.split("## Per task")
    assert "| tiny | " in overview and "| Full-Multiscale 2x less |" in overview
    rows = [line for line in per_task.splitlines() if line.startswith("| ") and "method" not in line]
    assert len(rows) == 3  # single 1x, FMS 1x, FMS 2x less
    assert any(r.startswith("| Full-Multiscale | 2x less |") for r in rows)
    assert (out / "tiny.png").stat().st_size > 1000 and "![tiny](tiny.png)" in text

    # a finished matrix runs nothing again; a point whose run was lost is run anew
    runs = sorted((out / "runs").glob("tiny-fms-w0.5-s1-*"))
    assert len(runs) == 1
    (runs[0] / "summary.json").unlink()
    again = run_report(str(matrix), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "5 of 6 runs already finished; 1 to run" in again.stdout
    assert len(list((out / "runs").glob("tiny-fms-w0.5-s1-*"))) == 1  # resumed in its own folder


@pytest.mark.parametrize("text, message", [
    (MATRIX.replace('reference = "single"', 'reference = "nope"'), "reference 'nope' is not one of the methods"),
    (MATRIX.replace("fractions = [1.0, 0.5]", "fractions = [0.0]"), "fractions must lie in (0, 64]"),
    (MATRIX.replace('recipes = ["tiny.toml"]', 'recipes = ["missing.toml"]'), "recipe missing.toml not found"),
    ("recipes = [", "not a TOML file"),
])
def test_matrix_mistakes_are_located_one_line_errors(matrix, text, message):
    matrix.write_text(text)
    proc = run_report(str(matrix), "--report-only")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert str(matrix) in proc.stderr


def test_a_failing_run_is_reported_with_exit_1_and_the_others_still_make_the_report(matrix, tmp_path):
    matrix.write_text(MATRIX.replace('label = "Full-Multiscale"', 'label = "Full-Multiscale"\nset = ["schedule.levels=1"]')
                      .replace("fractions = [1.0, 0.5]", "fractions = [1.0]").replace("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "out"
    proc = run_report(str(matrix), "--out", str(out))
    assert proc.returncode == 1 and "1 runs failed" in proc.stderr and "tiny-fms-w1-s0" in proc.stderr
    assert "1 of 2 runs finished (1 missing)" in (out / "report.md").read_text()
    assert "schedule" in (out / "runs" / "tiny-fms-w1-s0.log").read_text()
