"""W&B runs worth opening, read back from the offline run files: images, artifacts, best PSNR, costs on
every row, method names and tags, sweep groups, allocation rows, and history continued on resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from msframe import plugins
from msframe import recipe as recipe_mod
from msframe.assembly import assemble
from msframe.train import Trainer


def inspect(wandb_file_or_dir) -> list[dict]:
    """The records of one offline run, as ``wandb leet inspect --json`` prints them."""
    for cmd in ([sys.executable, "-m", "wandb"], [str(ROOT / ".venv" / "bin" / "wandb")]):
        reader = subprocess.run([*cmd, "leet", "inspect", "--json", str(wandb_file_or_dir)], capture_output=True,
                                text=True, timeout=120)
        if reader.returncode == 0:
            return [json.loads(line) for line in reader.stdout.splitlines() if line.strip()]
    raise AssertionError(reader.stderr)


def test_offline_run_has_images_artifacts_best_psnr_costs_names_tags_and_allocation_rows(tiny_recipe, tmp_path):
    home = tmp_path / "home-data"  # where W&B stages artifact files by default (the user's data folder)
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path), "--sweep", "optim.lr=0.001,0.002",
                   "--set", 'loggers.wandb={mode="offline", project="t"}', "--set", "eval.every=2.0",
                   "--set", 'estimator={type="mlmc", every=1}',
                   env={"WANDB_MODE": None, "WANDB_DATA_DIR": None, "XDG_DATA_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "tiny-sweep" / "optim.lr=0.001"
    records = inspect(run / "wandb")
    info = next(r["run"] for r in records if r["type"] == "run")
    assert info["display_name"] == "mlmc-3st-16.8.4px_optim.lr=0.001"
    assert info["run_group"].startswith("tiny-sweep-")
    assert {"estimator:mlmc", "stages:3", "meshes:16/8/4", "optim.lr=0.001"} <= set(info["tags"])
    config = info["config"]["update"]
    assert config["axes"] == {"optim.lr": 0.001} and config["method"] == "mlmc, 3 stages, 16/8/4px"

    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    steps = [h["_step"] for h in history]
    assert steps == sorted(set(steps)) and steps[0] == 1  # msframe's iterations, one row each
    assert all("cost/seconds" in h and "cost/flops" in h and "work_units" in h for h in history)
    assert all("train/loss" in h for h in history)  # no row holds only an evaluation or an allocation
    vals = [h for h in history if "val/psnr" in h]
    assert len(vals) >= 3 and all(h["val/samples._type"] == "image-file" for h in vals)
    allocations = [h for h in history if "allocation/term0/batch" in h]
    # every=1 re-allocates after each iteration but a stage's last: 2 + 1 + 1 times
    assert [h["allocation/stage"] for h in allocations] == [0, 0, 1, 2]
    assert all("allocation/term0/variance" in h for h in allocations)
    assert any("allocation/table._type" in h for h in history)

    summary = json.loads((run / "summary.json").read_text())
    final = {}
    for r in records:
        if r["type"] == "summary":
            final.update(r["summary"]["update"])
    assert final["val/best_psnr"] == pytest.approx(summary["val_best_psnr"])
    assert final["val/best_psnr"] == pytest.approx(max(h["val/psnr"] for h in vals))
    # what summary.json says: val/psnr is the best too, and no row written after the summary changed it
    assert final["val/psnr"] == pytest.approx(summary["val_best_psnr"])
    last_history = max(i for i, r in enumerate(records) if r["type"] == "history")
    assert any(r["type"] == "summary" and "val/best_psnr" in r["summary"]["update"] for r in records[last_history:])
    artifacts = {r["artifact"]["type"]: r["artifact"] for r in records if r["type"] == "artifact"}
    # one version of the model artifact per checkpoint kind, under its alias
    models = {tuple(c["path"] for c in r["artifact"]["manifest"]["contents"]): set(r["artifact"]["aliases"])
              for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "model"}
    assert set(models) == {("best.pt",), ("last.pt",)}
    assert "best" in models[("best.pt",)] and {"last", "latest"} <= models[("last.pt",)]
    assert "last" not in models[("best.pt",)] and "best" not in models[("last.pt",)]
    assert {c["path"] for c in artifacts["recipe"]["manifest"]["contents"]} == {"recipe.resolved.toml", "plan.txt"}
    assert list((run / "wandb" / "artifacts" / "staging").iterdir())  # staged inside the run folder,
    assert not [p for p in home.rglob("*") if p.is_file()]  # not in the user's data folder
    assert any(r["type"] == "stats" for r in records)  # system metrics are on by default


def test_a_resumed_run_continues_the_wandb_step(tiny_recipe, tmp_path):
    from msframe.components import Logger

    registry = plugins.load()
    overrides = ['loggers={wandb={mode="offline", project="t"}}', "checkpoint.every=1.0", "run.flush_every=1"]
    recipe = recipe_mod.load(tiny_recipe, registry.registry, overrides)
    wandb_logger = recipe.loggers["wandb"]

    class Crash(Logger):
        def log(self, r):
            if r["event"] == "train" and r["step"] == 6:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(assemble(recipe, registry), tmp_path, loggers=[wandb_logger.build(), Crash(Logger.Params())]).train()
    resumed = Trainer(assemble(recipe, registry), tmp_path, loggers=[wandb_logger.build()])
    resumed.train(resume_from=tmp_path / "checkpoints" / "last.pt")
    segments = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(segments) == 2
    second = [r["history"]["item"]["_step"] for r in inspect(segments[1]) if r["type"] == "history"]
    assert second[0] > 1 and second == list(range(second[0], 8))  # continues after the checkpoint, up to step 7


def test_a_run_under_a_wandb_sweep_agent_takes_its_parameters_and_run_id(tiny_recipe, tmp_path):
    params = tmp_path / "config-agentrun1.yaml"
    params.write_text("wandb_version: 1\noptim.lr:\n  value: 0.005\n")
    env = {"WANDB_MODE": "offline", "WANDB_SWEEP_ID": "abc123", "WANDB_RUN_ID": "agentrun1",
           "WANDB_SWEEP_PARAM_PATH": str(params)}
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), "--optim.lr=0.005", env=env)
    assert proc.returncode == 0, proc.stderr
    run = next((tmp_path / "runs").iterdir())
    assert (run / "wandb-run-id").read_text().strip() == "agentrun1"
    import tomllib

    assert tomllib.loads((run / "recipe.resolved.toml").read_text())["optim"]["lr"] == 0.005
    info = next(r["run"] for r in inspect(run / "wandb") if r["type"] == "run")
    assert info["run_id"] == "agentrun1"


def test_a_resumed_run_logs_the_rows_a_kill_kept_from_wandb(tiny_recipe, tmp_path):
    from conftest import crash_at_step, resume_run
    from msframe_loggers.wandb_logger import last_logged_step

    registry = plugins.load()
    overrides = ['loggers={wandb={mode="offline", project="t"}, jsonl={}}', "checkpoint.every=1.0", "run.flush_every=1"]
    recipe = recipe_mod.load(tiny_recipe, registry.registry, overrides)
    crash_at_step(recipe, registry, tmp_path, ["jsonl", "wandb"])
    first = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    whole = last_logged_step(tmp_path / "wandb")
    assert whole == 6
    first.write_bytes(first.read_bytes()[:first.stat().st_size // 3])  # a kill lost W&B's later rows
    assert last_logged_step(tmp_path / "wandb") < 3
    resume_run(recipe, registry, tmp_path, ["jsonl", "wandb"])
    held = set()
    for segment in (tmp_path / "wandb").glob("offline-run-*/run-*.wandb"):
        held |= {r["history"]["item"]["_step"] for r in inspect(segment) if r["type"] == "history"}
    steps = {json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert steps <= held and max(steps) == 7
