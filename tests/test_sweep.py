"""Sweeps: axes as TOML values, one run folder per point, resumable; the W&B sweep agent's overrides."""

from __future__ import annotations

import json
import tomllib

import pytest

from conftest import run_cli
from msframe import sweep
from msframe.errors import UserError


def test_axes_take_toml_values_bare_words_and_tables():
    assert sweep.parse_axis("schedule.batch=2,4").values == (2, 4)
    assert sweep.parse_axis("task.type=denoise,deblur").values == ("denoise", "deblur")
    assert sweep.parse_axis('schedule.batch=[4, 2],[2, 2]').values == ([4, 2], [2, 2])
    axis = sweep.parse_axis('estimator={type="single"},{type="mge", growth=4}')
    assert axis.key == "estimator" and axis.values == ({"type": "single"}, {"type": "mge", "growth": 4})
    assert sweep.parse_axis("optim.lr=1e-3, 3e-3").values == (1e-3, 3e-3)


@pytest.mark.parametrize("text, fragment", [
    ("schedule.batch", "is not of the form KEY=V1,V2"),
    ("schedule.batch=", "is not of the form KEY=V1,V2"),
    ("schedule.batch=2,,4", "empty value"),
    ("schedule.batch=2,2", "repeats a value"),
    ("schedule..batch=2,4", "is not of the form key.sub=VALUE"),
    ("task.type=[1,", "is not a TOML value"),
])
def test_malformed_axes_are_located_user_errors(text, fragment):
    with pytest.raises(UserError) as err:
        sweep.parse_axis(text)
    assert err.value.key == "--sweep" and fragment in str(err.value)


def test_points_are_the_product_named_by_what_differs():
    points = sweep.points([sweep.parse_axis('estimator={type="single"},{type="mge", growth=4}'),
                           sweep.seed_axis(2, 7)])
    assert [p.name for p in points] == ["estimator=single,seed=7", "estimator=single,seed=8",
                                        "estimator=mge-growth4,seed=7", "estimator=mge-growth4,seed=8"]
    assert points[3].overrides == ('estimator={"type" = "mge", "growth" = 4}', "run.seed=8")
    for p in points:  # every override text parses back to the point's value
        for text, value in zip(p.overrides, p.axes.values()):
            key, _, raw = text.partition("=")
            assert tomllib.loads(f"v = {raw}")["v"] == value
    with pytest.raises(UserError, match="given twice"):
        sweep.points([sweep.parse_axis("run.seed=1,2"), sweep.seed_axis(2, 0)])


def test_sweep_runs_every_point_and_a_rerun_skips_finished_and_resumes_the_rest(cli, tiny_recipe, tmp_path):
    args = [str(tiny_recipe), "--out", str(tmp_path), "--sweep", "optim.lr=1e-3,2e-3", "--seeds", "2"]
    plan = cli(*args, "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "4 runs into" in plan.stdout and not (tmp_path / "tiny-sweep").exists()
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "tiny-sweep"
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert names == ["optim.lr=0.001,seed=3", "optim.lr=0.001,seed=4", "optim.lr=0.002,seed=3", "optim.lr=0.002,seed=4"]
    for name in names:
        resolved = tomllib.loads((folder / name / "recipe.resolved.toml").read_text())
        point = json.loads((folder / name / "sweep-point.json").read_text())
        assert resolved["optim"]["lr"] == point["axes"]["optim.lr"] and resolved["run"]["seed"] == point["axes"]["run.seed"]
        assert point["group"].startswith("tiny-sweep-")
    seeds = {json.loads((folder / n / "summary.json").read_text())["test"]["psnr"] for n in names}
    assert len(seeds) == 4  # different seeds and rates train differently

    # as if killed: point 2 stopped after its last checkpoint, point 4 before it started
    done = folder / names[0] / "summary.json"
    stamp = done.stat().st_mtime_ns
    before = json.loads((folder / names[1] / "summary.json").read_text())
    (folder / names[1] / "summary.json").unlink()
    import shutil

    shutil.rmtree(folder / names[3])
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"{names[0]}: finished earlier, skipped" in again.stdout
    assert f"{names[1]}: resuming" in again.stdout and f"{names[3]}: starting" in again.stdout
    assert done.stat().st_mtime_ns == stamp
    after = json.loads((folder / names[1] / "summary.json").read_text())
    assert after["test"] == before["test"] and after["work_units"] == before["work_units"]
    assert (folder / names[3] / "summary.json").is_file()

    other = cli(str(tiny_recipe), "--out", str(tmp_path), "--sweep", "optim.lr=1e-3,5e-3")
    assert other.returncode == 2 and "holds another sweep" in other.stderr


def test_a_bad_point_stops_the_sweep_before_anything_trains(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path), "--sweep", "schedule.levels=3,9")
    assert proc.returncode == 2
    assert "sweep point schedule.levels=9" in proc.stderr and "schedule.levels" in proc.stderr
    assert not (tmp_path / "tiny-sweep").exists()
    bad = cli(str(tiny_recipe), "--sweep", "schedule.batch=2,,4")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --sweep:")


def test_wandb_sweep_agent_parameters_become_overrides(tiny_recipe, tmp_path):
    params = tmp_path / "config-abc.yaml"
    params.write_text("wandb_version: 1\nschedule.iterations:\n  value: [2, 2, 1]\nestimator.growth:\n  value: 4\n")
    env = {"WANDB_SWEEP_ID": "s1", "WANDB_SWEEP_PARAM_PATH": str(params)}
    overrides, rest = sweep.agent_overrides(["r.toml", "--optim.lr=0.5", "--plan"], env)
    assert overrides == ["schedule.iterations=[2, 2, 1]", "estimator.growth=4", "optim.lr=0.5"]
    assert rest == ["r.toml", "--plan"]
    assert sweep.agent_overrides(["--optim.lr=0.5"], {}) == ([], ["--optim.lr=0.5"])
    assert sweep.agent_overrides(["--out=runs", "--estimator={type=\"single\"}", "--loader.resident=True"],
                                 {"WANDB_SWEEP_ID": "s1"}) == (['estimator={type="single"}', "loader.resident=true"],
                                                                ["--out=runs"])
    # as the agent's default command line runs it: parameters in the file and as --key=value arguments
    proc = run_cli(str(tiny_recipe), "--plan", "--schedule.iterations=[2, 2, 1]", "--estimator.growth=4", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "total: 5 iterations" in proc.stdout
    assert "loggers.wandb={}" in proc.stderr  # the agent waits for a W&B run: the run gets one
