"""The worked example plugin (plugins/examples/msframe_poisson) installed for real, as its README says.

It is a separate distribution: the main project must not ship it, and once pip-installed it is
listed, trains from its own recipe and passes its own tests (msframe.testing's checks).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, only_run_dir, pythonpath, run_cli
from msframe import plugins

EXAMPLE = ROOT / "plugins" / "examples" / "msframe_poisson"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(a copy of the example's source, the --target folder it was pip-installed into).

    The copy keeps pip's build files out of the repository.
    """
    source = tmp_path_factory.mktemp("poisson-src") / "msframe_poisson"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"))
    target = tmp_path_factory.mktemp("poisson-target")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    return source, target


def test_the_main_project_does_not_ship_the_example():
    assert importlib.util.find_spec("poisson_task") is None
    assert "poisson" not in plugins.load().registry.names("task")


def test_installed_example_is_listed_with_its_distribution(installed):
    _, target = installed
    proc = run_cli("plugins", "--json", env=pythonpath(target))
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    row = next(r for r in listing["components"] if r["name"] == "poisson")
    origin = (row["kind"], row["plugin"], row["distribution"], row["version"])
    assert origin == ("task", "poisson", "msframe-poisson", "0.1.0")
    assert listing["failed"] == {}


def test_example_recipe_trains(installed, tmp_path):
    _, target = installed
    proc = run_cli(str(EXAMPLE / "poisson.toml"), "--out", str(tmp_path),
                   "--set", "schedule.resolution=16", "--set", "schedule.iterations=[2,2,2]",
                   env=pythonpath(target))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["versions"]["plugins"]["poisson"] == "msframe-poisson 0.1.0"
    assert summary["iterations"] == 6


def test_example_passes_its_own_tests(installed):
    """As docs/plugins.md tells authors to run them: installed, and with strict plugin loading."""
    source, target = installed
    env = {**os.environ, **pythonpath(target), "OMP_NUM_THREADS": "1", "MSFRAME_STRICT_PLUGINS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=source, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
