"""One run builds each part once; ``python -m msframe`` is the command line; the run folder's own
reader; parameter descriptions read from comments with the tokenizer."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from pydantic import Field

from conftest import ROOT, only_run_dir
from msframe import assembly, components, introspect, trained
from msframe.recipe import PluginChoice
from msframe.rundir import RunFolder

KINDS = (components.Task, components.Resampler, components.Backbone, components.Estimator, components.Dataset,
         components.Logger)


@pytest.fixture
def built(monkeypatch) -> Counter:
    """Counts of what runs build: plans, components by kind, networks."""
    counts: Counter = Counter()
    plan_build, choice_build, network = assembly.build_plan, PluginChoice.build, assembly.network

    def count_plan(*args, **kwargs):
        counts["plan"] += 1
        return plan_build(*args, **kwargs)

    def count_choice(self):
        counts[next(k.__name__ for k in KINDS if issubclass(self.cls, k))] += 1
        return choice_build(self)

    def count_network(*args, **kwargs):
        counts["network"] += 1
        return network(*args, **kwargs)

    monkeypatch.setattr(assembly, "build_plan", count_plan)
    monkeypatch.setattr(PluginChoice, "build", count_choice)
    monkeypatch.setattr(assembly, "network", count_network)
    monkeypatch.setattr(trained, "network", count_network)  # evaluate's and restore's
    return counts


def test_one_run_builds_the_plan_and_each_component_once(cli, tiny_recipe, tmp_path, built):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    stages = 3  # iterations = [3, 2, 2]: one estimator per stage
    assert built == {"plan": 1, "Task": 1, "Resampler": 1, "Backbone": 1, "Estimator": stages, "Dataset": 1,
                     "Logger": 1, "network": 1}
    built.clear()
    run = only_run_dir(tmp_path)
    (run / "summary.json").unlink()
    assert cli("--resume", str(run)).returncode == 0
    assert built == {"plan": 1, "Task": 1, "Resampler": 1, "Backbone": 1, "Estimator": stages, "Dataset": 1,
                     "Logger": 1, "network": 1}
    built.clear()
    assert cli("evaluate", str(run), "--out", str(tmp_path / "eval")).returncode == 0
    assert built == {"plan": 1, "Task": 1, "Resampler": 1, "Backbone": 1, "Estimator": stages, "Dataset": 1,
                     "network": 1}


def test_python_m_msframe_is_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "msframe", "plugins"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:5] == ["kind", "name", "plugin", "distribution", "version"]
    assert "denoise" in proc.stdout


def test_resume_point_falls_back_to_the_newest_readable_stage(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.resume_point() is None  # no checkpoint yet: the run starts over
    from msframe import checkpoint

    folder.checkpoints.mkdir()
    for stage in (0, 1, 10):
        checkpoint.save(folder.stage_checkpoint(stage), {"stage": stage})
    folder.last.write_bytes(b"not a checkpoint")
    said = []
    assert folder.resume_point(said.append) == folder.stage_checkpoint(10)
    assert len(said) == 1 and "last.pt" in said[0] and "stage-10.pt" in said[0]
    checkpoint.save(folder.last, {"stage": 2})
    assert folder.resume_point(said.append) == folder.last and len(said) == 1


def test_parameter_descriptions_come_from_trailing_comments_and_field_descriptions():
    class Base(components.Params):
        inherited: int = 1  # from the base

    class Example(components.Component):
        class Params(Base):
            """A docstring with a line that looks like a field:

            fake: int = 2  # not a description
            """

            text: str = "a # b"  # the comment, not the hash in the string
            described: float = Field(0.5, description="from pydantic")  # a comment loses to it
            plain: bool = True
            fake: int = 3

    rows = {r["name"]: r for r in introspect.parameters(Example)}
    assert rows["text"]["description"] == "the comment, not the hash in the string"
    assert rows["text"]["default"] == "a # b"
    assert rows["described"]["description"] == "from pydantic"
    assert rows["inherited"]["description"] == "from the base"
    assert "description" not in rows["plain"] and "description" not in rows["fake"]
