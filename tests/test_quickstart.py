"""The README's promises about the quickstart: its plan as printed there, and (slow) its result."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT, only_run_dir, run_cli


def test_readme_shows_the_quickstart_plan_as_it_is(cli):
    proc = cli(str(ROOT / "recipes" / "quickstart.toml"), "--plan")
    assert proc.returncode == 0
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\$ python tools/run.py recipes/quickstart.toml --plan\n((?:    .*\n|\n)+?)\n## ", readme).group(1)
    # the thread count depends on the machine's load (README shows a user's, the suite runs with one)
    same = lambda line: re.sub(r"^CPU threads: .*", "CPU threads: ...", line.rstrip())
    shown = [same(line[4:]) for line in block.splitlines()]
    printed = [same(line) for line in proc.stdout.splitlines()[1:]]
    assert [s for s in shown if s] == [p for p in printed if p]


@pytest.mark.slow
def test_quickstart_denoises_held_out_photographs_by_more_than_4_db(tmp_path):
    proc = run_cli(str(ROOT / "recipes" / "quickstart.toml"), "--out", str(tmp_path), env={"OMP_NUM_THREADS": None})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    test = summary["test"]
    assert test["psnr"] - test["input_psnr"] > 4.0, test
    assert test["ssim"] > test["input_ssim"]
    assert summary["seconds"] < 300
