"""The engine's promises: resume after a kill, cost accounting, evaluation cadence, LR policies, W&B."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest
import torch

from conftest import ROOT, TINY_RECIPE, only_run_dir, run_cli
from msframe import checkpoint, plugins
from msframe import recipe as recipe_mod
from msframe.assembly import assemble, blueprint
from msframe.components import Logger
from msframe.optim import learning_rate
from msframe.train import Trainer

REGISTRY = plugins.load().registry


def recipe_with(*overrides: str) -> recipe_mod.Recipe:
    return recipe_mod.validate(recipe_mod.apply_overrides(tomllib.loads(TINY_RECIPE), list(overrides)), REGISTRY)


class Keep(Logger):
    """A logger that keeps every record in memory."""

    def __init__(self):
        self.records = []

    def log(self, r):
        self.records.append(r)


def test_resume_after_sigkill_ends_with_the_same_weights(tiny_recipe, tmp_path):
    long = ["--set", "schedule.iterations=[40, 40, 40]", "--set", "checkpoint.every=3", "--set", "run.flush_every=1",
            "--set", "backbone.norm=true", "--set", 'run.device="cpu"']  # bit-identical is a CPU promise
    whole = run_cli(str(tiny_recipe), "--out", str(tmp_path / "whole"), *long)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "run.py"), str(tiny_recipe), "--out", str(out), *long],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # as run_cli: same threads, same sums
    deadline = time.time() + 300
    last = None
    while time.time() < deadline:
        found = list(out.glob("*/checkpoints/last.pt"))
        if found and checkpoint.load(found[0])["progress"]["step"] >= 50:  # inside stage 1
            last = found[0]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last is not None, "the run never wrote a mid-run checkpoint"
    run = last.parent.parent
    assert not (run / "summary.json").exists(), "killed too late: the run had finished"

    resumed = run_cli("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.load(only_run_dir(tmp_path / "whole") / "checkpoints" / "last.pt")
    b = checkpoint.load(run / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "train"]
    assert steps == list(range(1, 121))  # no gap and no duplicate across the kill
    assert json.loads((run / "summary.json").read_text())["iterations"] == 120
    again = run_cli("--resume", str(run))
    assert again.returncode == 0 and "already finished" in again.stdout


def test_cost_is_counted_per_stage_and_mesh(tmp_path):
    trainer = Trainer(assemble(recipe_with(), plugins.load()), tmp_path, loggers=[])
    summary = trainer.train()
    plan = trainer.plan
    assert summary["work_units"] == pytest.approx(plan.work)
    assert [s["work_units"] for s in summary["stages"]] == pytest.approx([s.work for s in plan.stages])
    assert sum(m["work_units"] for m in summary["meshes"].values()) == pytest.approx(plan.work)
    assert set(summary["meshes"]) == {"16", "8", "4"}
    # FLOPs of a pass scale with pixels: a 16px sample costs 4x an 8px one, counted once per shape
    flops = trainer.assembly.flops
    assert flops(16, 2) == pytest.approx(4 * flops(8, 2), rel=0.01)
    assert flops(8, 4) == 2 * flops(8, 2)
    assert summary["flops"] == pytest.approx(sum(s["flops"] for s in summary["stages"]))
    assert summary["seconds"] == pytest.approx(sum(s["seconds"] for s in summary["stages"]))
    assert sum(m["seconds"] for m in summary["meshes"].values()) == pytest.approx(summary["seconds"])


def test_validation_runs_every_n_work_units_and_at_stage_ends(tmp_path):
    keep = Keep()
    trainer = Trainer(assemble(recipe_with("eval.every=1.0", "checkpoint.every=2.0"), plugins.load()), tmp_path, loggers=[keep])
    trainer.train()
    evals = [r for r in keep.records if r["event"] == "eval" and r["split"] == "val"]
    work = [r["work_units"] for r in keep.records if r["event"] == "train"]
    expected = sum(1 for i, w in enumerate(work) if int(w // 1.0) > int((work[i - 1] if i else 0) // 1.0)
                   or i in (2, 4, 6))  # every crossing of 1 WU, plus the three stage ends
    assert len(evals) == expected
    tests = [r for r in keep.records if r["event"] == "eval" and r["split"] == "test"]
    assert len(tests) == 1  # the test split is evaluated once, at the end
    first = evals[0]
    again = trainer.evaluate("val")  # fixed degradation seed: same numbers for the same weights
    assert trainer.evaluate("val") == again
    assert first["images"] == again["images"]


@pytest.mark.parametrize("policy", ["constant", "cosine", "cosine_per_stage", "constant_final_decay"])
def test_learning_rate_policies(policy):
    recipe = recipe_with(f'optim.lr_policy="{policy}"', "optim.lr=0.01", "optim.min_lr_ratio=0.1", "optim.warmup=0")
    plan = blueprint(recipe).plan
    lrs = [[learning_rate(recipe.optim, plan, s.index, i) for i in range(s.iterations)] for s in plan.stages]
    flat = [x for stage in lrs for x in stage]
    if policy == "constant":
        assert set(flat) == {0.01}
    elif policy == "cosine":
        assert flat[0] == pytest.approx(0.01) and flat[-1] == pytest.approx(0.001)
        assert all(a >= b for a, b in zip(flat, flat[1:]))
    elif policy == "cosine_per_stage":  # restarts: every stage starts at the full rate
        assert all(stage[0] == pytest.approx(0.01) and stage[-1] == pytest.approx(0.001) for stage in lrs)
    else:  # full rate until the final stage, which decays from it
        assert set(lrs[0] + lrs[1]) == {0.01}
        assert lrs[2][0] == pytest.approx(0.01) and lrs[2][-1] == pytest.approx(0.001)


def test_warmup_ramps_the_first_iterations_of_the_run_whatever_their_stage():
    recipe = recipe_with('optim.lr_policy="constant"', "optim.lr=0.01", "optim.warmup=4")
    plan = blueprint(recipe).plan
    flat = [learning_rate(recipe.optim, plan, s.index, i) for s in plan.stages for i in range(s.iterations)]
    # the tiny plan's stages have 3, 2 and 2 iterations: the ramp crosses the first stage's end
    assert flat == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01])


def test_optimizer_state_is_carried_or_reset_between_stages(tmp_path):
    for reset in (False, True):
        trainer = Trainer(assemble(recipe_with(f"optim.reset_state_per_stage={str(reset).lower()}"), plugins.load()),
                          tmp_path / str(reset), loggers=[])
        trainer.train()
        steps = trainer.optimizer.state[next(trainer.model.parameters())]["step"]
        assert int(steps) == (2 if reset else 7)


def test_wandb_offline_run_records_config_costs_and_the_work_unit_axis(tiny_recipe, tmp_path):
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path), "--set", 'loggers.wandb={mode="offline", project="t"}',
                   env={"WANDB_MODE": None})
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path)
    wandb_dir = run / "wandb"
    assert list(wandb_dir.glob("offline-run-*/run-*.wandb"))
    reader = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_dir)],
                            capture_output=True, text=True, timeout=120)
    if reader.returncode != 0:
        reader = subprocess.run([str(ROOT / ".venv" / "bin" / "wandb"), "leet", "inspect", "--json", str(wandb_dir)],
                                capture_output=True, text=True, timeout=120)
    assert reader.returncode == 0, reader.stderr
    records = [json.loads(line) for line in reader.stdout.splitlines() if line.strip()]
    config = next(r["run"]["config"]["update"] for r in records if r["type"] == "run")
    assert config["schedule"]["levels"] == 3 and config["estimator"]["type"] == "mge"
    metrics = {r["metric"].get("glob_name") or r["metric"].get("name"): r["metric"] for r in records if r["type"] == "metric"}
    for family in ("train/*", "val/*", "test/*", "cost/*"):
        assert metrics[family]["step_metric"] == "work_units", family
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    train = [h for h in history if "train/loss" in h]
    assert len(train) == 7
    last = train[-1]
    for key in ("cost/mesh/16/work_units", "cost/mesh/8/flops", "cost/mesh/4/seconds", "train/mesh16/correction_var",
                "train/mesh4/batch"):
        assert key in last, (key, sorted(last))
    assert last["work_units"] == pytest.approx(json.loads((run / "summary.json").read_text())["work_units"])
    assert any("test/psnr" in h for h in history)


def test_work_budgets_set_each_stage_iterations(cli, tiny_recipe):
    text = tiny_recipe.read_text().replace("iterations = [3, 2, 2]", "work = [1.0, 5.0, 9.0]")
    tiny_recipe.write_text(text)
    plan = blueprint(recipe_mod.load(tiny_recipe, REGISTRY)).plan
    # WU per iteration: 0.25, 1.0 (4x(1/4+1/16)... see the plan), whole iterations that fit the budget
    assert [s.iterations for s in plan.stages] == [max(1, int(w // s.work_per_iteration))
                                                   for w, s in zip([1.0, 5.0, 9.0], plan.stages)]
    assert plan.stages[0].iterations == 4
    # an override of how the stages are given replaces the recipe's way...
    plan = blueprint(recipe_mod.load(tiny_recipe, REGISTRY, ["schedule.iterations=[1, 1, 1]"])).plan
    assert [s.iterations for s in plan.stages] == [1, 1, 1]
    # ...but a recipe that gives two ways is refused
    tiny_recipe.write_text(text.replace("work = [1.0, 5.0, 9.0]", "work = [1.0, 5.0, 9.0]\niterations = [1, 1, 1]"))
    both = cli(str(tiny_recipe), "--plan")
    refusal = "schedule: give the stages one way: iterations, work, budget (with split), or [[schedule.stage]] tables"
    assert both.returncode == 2 and refusal in both.stderr


def test_mlmc_reallocation_follows_sqrt_variance_over_cost():
    from msframe.components import Term
    from msframe_estimators import MLMC

    est = MLMC(MLMC.Params(every=10))
    terms = [Term(0, 1, 8), Term(1, 2, 16), Term(2, None, 32)]
    costs = [1.25, 0.3125, 0.0625]
    variances = [0.01, 0.04, 0.16]
    chosen = est.reallocate(terms, variances, costs)
    budget = sum(t.batch * c for t, c in zip(terms, costs))
    assert sum(t.batch * c for t, c in zip(chosen, costs)) == pytest.approx(budget, rel=0.05)
    ratio = [t.batch / (v / c) ** 0.5 for t, v, c in zip(chosen, variances, costs)]
    assert max(ratio) / min(ratio) < 1.1  # N_l ∝ sqrt(V_l / C_l), up to rounding
    assert [(t.fine, t.coarse) for t in chosen] == [(0, 1), (1, 2), (2, None)]


def test_mlmc_runs_logs_its_allocations_and_resumes_identically(tmp_path):
    # on the CPU: bit-identical resumption is promised there (CUDA kernels may sum in any order)
    overrides = ('estimator={type="mlmc", every=2}', "schedule.iterations=[3, 5, 7]", "schedule.batch=[16, 16, 16]",
                 "checkpoint.every=1.0", 'run.device="cpu"')
    keep = Keep()
    full = Trainer(assemble(recipe_with(*overrides), plugins.load()), tmp_path / "a", loggers=[keep])
    full.train()
    allocations = [r for r in keep.records if r["event"] == "allocation"]
    # stage 0: iterations 0-1, re-allocate, 2; stage 1: two boundaries; stage 2: three
    assert [(a["stage"], a["iteration"]) for a in allocations] == [(0, 2), (1, 2), (1, 4), (2, 2), (2, 4), (2, 6)]
    trains = [r for r in keep.records if r["event"] == "train"]
    after = [r for r in trains if r["stage"] == 2 and r["iteration"] == 6][0]
    assert [lv["batch"] for lv in after["levels"]] == allocations[-1]["batches"]
    for a in allocations:
        planned = full.plan.stages[a["stage"]].work_per_iteration
        assert a["work_per_iteration"] == pytest.approx(planned, rel=0.1)

    # crash while logging step 13: the last checkpoint is step 12, right after stage 2's re-allocation
    # at iteration 4, so the resumed run must continue with the new batches
    class Crash(Keep):
        def log(self, r):
            if r["event"] == "train" and r["step"] == 13:
                raise RuntimeError("simulated crash")

    part = Trainer(assemble(recipe_with(*overrides), plugins.load()), tmp_path / "b", loggers=[Crash()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        part.train()
    state = checkpoint.load(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (state["progress"]["stage"], state["progress"]["iteration"], state["progress"]["step"]) == (2, 4, 12)
    assert state["progress"]["allocations"]["2"] == allocations[-2]["batches"]
    resumed = Trainer(assemble(recipe_with(*overrides), plugins.load()), tmp_path / "b", loggers=[])
    resumed.train(resume_from=tmp_path / "b" / "checkpoints" / "last.pt")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_the_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path):
    def final(seed: int, folder: str) -> dict:
        recipe = recipe_with(f"run.seed={seed}", 'run.device="cpu"')
        trainer = Trainer(assemble(recipe, plugins.load()), tmp_path / folder, loggers=[])
        trainer.train()
        return trainer.model.state_dict()

    a, b, c = final(1, "a"), final(1, "b"), final(2, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tmp_path):
    """torch.compile (inductor) fuses kernels but trains the same model on the same batches."""
    eager = Trainer(assemble(recipe_with('run.device="cpu"'), plugins.load()), tmp_path / "eager", loggers=[])
    recipe = recipe_with('run.device="cpu"', 'run.compile="default"')
    compiled = Trainer(assemble(recipe, plugins.load()), tmp_path / "c", loggers=[])
    a, b = eager.train(), compiled.train()
    assert b["work_units"] == a["work_units"]
    for k, v in eager.model.state_dict().items():
        torch.testing.assert_close(v, compiled.model.state_dict()[k], rtol=1e-3, atol=1e-4)


def test_stage_by_stage_schedule_with_its_own_estimators(cli, tiny_recipe, tmp_path):
    text = tiny_recipe.read_text().replace("iterations = [3, 2, 2]\nbatch = [4, 2, 2]\n", """batch = 2

[[schedule.stage]]
iterations = 3
batch = 4
estimator = { type = "single" }

[[schedule.stage]]
work = 2.0

[[schedule.stage]]
iterations = 2
estimator = { type = "mge", growth = 1 }
""")
    tiny_recipe.write_text(text)
    recipe = recipe_mod.load(tiny_recipe, REGISTRY)
    plan = blueprint(recipe).plan
    assert [s.estimator for s in plan.stages] == ["single", "mge", "mge"]
    assert [len(s.terms) for s in plan.stages] == [1, 2, 3]
    assert [t.batch for t in plan.stages[0].terms] == [4]
    assert [t.batch for t in plan.stages[1].terms] == [2, 4]  # [estimator]: growth 2
    assert [t.batch for t in plan.stages[2].terms] == [2, 2, 2]  # its own table: growth 1
    assert plan.stages[1].iterations == int(2.0 // plan.stages[1].work_per_iteration)
    shown = cli(str(tiny_recipe), "--plan")
    assert shown.returncode == 0 and "stage total (single)" in shown.stdout
    assert cli(str(tiny_recipe), "--out", str(tmp_path / "runs")).returncode == 0
    resolved = only_run_dir(tmp_path / "runs") / "recipe.resolved.toml"
    stages = tomllib.loads(resolved.read_text())["schedule"]["stage"]
    assert stages[0]["estimator"] == {"type": "single"}
    assert stages[2]["estimator"] == {"type": "mge", "levels": 0, "growth": 1.0}
    assert "estimator" not in stages[1]
    again = recipe_mod.load(resolved, REGISTRY)  # the resolved form loads back to the same plan
    assert [s.iterations for s in blueprint(again).plan.stages] == \
        [s.iterations for s in plan.stages]
    wrong = tiny_recipe.read_text().replace('estimator = { type = "single" }', 'estimator = { type = "single", growth = 2 }')
    tiny_recipe.write_text(wrong)
    err = cli(str(tiny_recipe), "--plan")
    assert err.returncode == 2 and "schedule.stage[0].estimator.growth: unknown key (allowed: no keys)" in err.stderr
    both = tiny_recipe.read_text().replace("batch = 2\n", "batch = 2\niterations = [1, 1, 1]\n", 1)
    tiny_recipe.write_text(both)
    err = cli(str(tiny_recipe), "--plan")
    assert err.returncode == 2 and "give the stages one way" in err.stderr
