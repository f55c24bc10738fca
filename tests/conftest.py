"""Shared fixtures: a tiny recipe, a CLI runner, and third-party plugin packages installed for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = Path(__file__).resolve().parent / "plugins"

# Tiny tensors run fastest on one thread, and the suite must not oversubscribe a 2-core machine.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"  # run.threads = 0 (auto) then also picks 1 in in-process CLI calls

# No test may wait on a W&B login or a model hub.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ["HF_HUB_OFFLINE"] = "1"

TINY_RECIPE = """\
[run]
name = "tiny"
seed = 3

[schedule]
resolution = 16
levels = 3
iterations = [3, 2, 2]
batch = [4, 2, 2]

[optim]
lr = 1e-3

[eval]
tiles_per_image = 1

[loggers.jsonl]

[data]
type = "sample_images"
val = ["moon"]
test = ["camera"]

[task]
type = "denoise"
sigma = 0.1

[backbone]
type = "cnn"
channels = 8
depth = 3

[resampler]
type = "area"

[estimator]
type = "mge"
growth = 2
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A recipe that trains a 3-level FMS denoiser at 16 px in a couple of seconds."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``tools/run.py`` in a fresh interpreter, as a user would; ``env`` values of None unset."""
    # one thread: tiny tensors gain nothing from more, and a loaded 2-core machine thrashes with them
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None removes a variable
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run.py"), *args],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600,
    )


def only_run_dir(out: Path) -> Path:
    dirs = [d for d in out.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _install(target: Path, names: list[str], scratch: Path) -> Path:
    """pip-install plugin packages from tests/plugins into ``target`` (copied first: no build files in the repo)."""
    sources = []
    for name in names:
        src = scratch / name
        shutil.copytree(PLUGIN_SOURCES / name, src)
        sources.append(str(src))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), *sources],
        check=True, capture_output=True, text=True,
    )
    return target


@pytest.fixture(scope="session")
def plugin_paths(tmp_path_factory) -> dict[str, Path]:
    """Separate install targets, so each scenario puts exactly its plugins on PYTHONPATH."""
    base = tmp_path_factory.mktemp("plugins")
    scratch = tmp_path_factory.mktemp("plugin-src")
    return {
        "tiny": _install(base / "tiny", ["tiny"], scratch),
        "broken": _install(base / "broken", ["broken_import", "broken_register"], scratch),
        "duplicate": _install(base / "duplicate", ["duplicate"], scratch),
    }


def pythonpath(*paths: Path) -> dict:
    """PYTHONPATH with ``paths`` in front of whatever the environment already has there."""
    existing = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    return {"PYTHONPATH": os.pathsep.join([*(str(p) for p in paths), *existing])}


class Result:
    """Exit code and output of one in-process CLI call (same shape as subprocess.CompletedProcess)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Call ``msframe.cli.main`` in this process: the fast path for checks that need no fresh interpreter."""
    from msframe.cli import main

    def call(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def crash_at_step(recipe, loaded, folder: Path, loggers: list[str], step: int = 6) -> None:
    """Train ``recipe`` into ``folder`` with its named ``loggers`` until an extra logger raises at train
    record ``step``: a run that stopped there, for the resume tests of the loggers."""
    from msframe.assembly import assemble
    from msframe.components import Logger
    from msframe.train import Trainer

    class Crash(Logger):
        def log(self, r):
            if r["event"] == "train" and r["step"] == step:
                raise RuntimeError("simulated crash")

    built = [recipe.loggers[name].build() for name in loggers]
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(assemble(recipe, loaded), folder, loggers=[*built, Crash(Logger.Params())]).train()


def resume_run(recipe, loaded, folder: Path, loggers: list[str]) -> dict:
    """Resume ``folder`` from its last checkpoint with fresh instances of the named ``loggers``."""
    from msframe.assembly import assemble
    from msframe.train import Trainer

    built = [recipe.loggers[name].build() for name in loggers]
    return Trainer(assemble(recipe, loaded), folder, loggers=built).train(resume_from=folder / "checkpoints" / "last.pt")

