"""The commands users expect: describe, plugins --json schemas, --print-recipe, evaluate, restore, threads,
the console's progress display, readable run files and true wording of the work ratio."""

from __future__ import annotations

import json
import os
import stat
import tomllib

import pytest
from PIL import Image

from conftest import ROOT, only_run_dir, run_cli
from msframe.labels import ratio_words


def test_describe_prints_parameters_types_defaults_and_docstring(cli):
    proc = cli("describe", "estimator", "mlmc")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("estimator 'mlmc' from plugin 'msframe_estimators'")
    every = next(line for line in lines if line.split()[:1] == ["every"])
    assert every.split()[1:5] == ["int", "(>=", "1)", "="] and "50" in every and "re-allocations" in every
    assert "N_l ∝ sqrt(V_l / C_l)" in proc.stdout  # the docstring
    as_json = json.loads(cli("describe", "task", "denoise", "--json").stdout)
    sigma = next(p for p in as_json["params"] if p["name"] == "sigma")
    assert sigma["type"] == "float" and not sigma["required"] and isinstance(sigma["default"], float)
    assert as_json["schema"]["properties"]["sigma"]["type"] == "number"
    required = json.loads(cli("describe", "dataset", "image_folder", "--json").stdout)
    assert next(p for p in required["params"] if p["name"] == "root")["required"] is True
    bad_kind = cli("describe", "widget", "x")
    assert bad_kind.returncode == 2 and "unknown kind 'widget' (allowed: task, backbone" in bad_kind.stderr
    bad_name = cli("describe", "task", "dnoise")
    assert bad_name.returncode == 2 and "'dnoise' is not a registered task (known:" in bad_name.stderr


def test_plugins_json_carries_each_components_parameter_schema(cli):
    rows = json.loads(cli("plugins", "--json").stdout)["components"]
    console = next(r for r in rows if (r["kind"], r["name"]) == ("logger", "console"))
    assert {p["name"] for p in console["params"]} == {"every", "style"}
    assert console["schema"]["properties"]["style"]["enum"] == ["auto", "bar", "lines"]
    assert all("params" in r and "doc" in r for r in rows)


def test_print_recipe_prints_the_resolved_toml_and_exits(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--print-recipe", "--set", "optim.lr=0.01", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    resolved = tomllib.loads(proc.stdout)
    assert resolved["optim"] == {"lr": 0.01, "weight_decay": 0.0, "lr_policy": "constant_final_decay", "min_lr_ratio": 0.01,
                                 "warmup": 20, "reset_state_per_stage": False}
    assert resolved["run"]["threads"] == 0 and resolved["estimator"] == {"type": "mge", "levels": 0, "growth": 2.0}
    assert not (tmp_path / "runs").exists()


def test_plan_states_the_thread_count_and_run_threads_sets_it(cli, tiny_recipe):
    auto = cli(str(tiny_recipe), "--plan")
    assert "CPU threads: 1 (auto: OMP_NUM_THREADS=1; fix it with --set run.threads=N)" in auto.stdout
    fixed = cli(str(tiny_recipe), "--plan", "--set", "run.threads=2")
    assert "CPU threads: 2 (run.threads)" in fixed.stdout
    import torch

    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    bad = cli(str(tiny_recipe), "--plan", "--set", "run.threads=-1")
    assert bad.returncode == 2 and "run.threads" in bad.stderr


def test_auto_threads_leave_busy_cores_alone(monkeypatch):
    from msframe import session

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 0.0, 0.0))
    assert session.auto_threads({}) == (1, "2 cores, load 1.9")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert session.auto_threads({})[0] == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert session.auto_threads({})[0] == 1
    assert session.auto_threads({"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS=3")


@pytest.fixture
def trained(cli, tiny_recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    proc = cli(str(tiny_recipe), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return only_run_dir(out)


def test_evaluate_tests_best_or_last_weights_on_any_dataset(cli, trained, tmp_path):
    own = cli("evaluate", str(trained))
    assert own.returncode == 0, own.stderr
    result = json.loads((trained / "evaluations" / "sample_images-test-best" / "evaluation.json").read_text())
    assert result["images"] == 1 and result["split"] == "test" and result["weights"].endswith("best.pt")
    # the last weights on the test split are what the run's own final test measured
    last = cli("evaluate", str(trained), "--weights", "last", "--out", str(tmp_path / "last"))
    assert last.returncode == 0, last.stderr
    summary = json.loads((trained / "summary.json").read_text())["test"]
    measured = json.loads((tmp_path / "last" / "evaluation.json").read_text())
    assert measured["psnr"] == pytest.approx(summary["psnr"], abs=1e-4)
    assert measured["input_psnr"] == pytest.approx(summary["input_psnr"], abs=1e-4)
    with Image.open(tmp_path / "last" / "samples.png") as grid:
        assert grid.size == (3 * 16, 16)
    other = cli("evaluate", str(trained), "--data", 'type="sample_images", val=["moon"], test=["astronaut", "coffee"]',
                "--out", str(tmp_path / "other"))
    assert other.returncode == 0, other.stderr
    assert json.loads((tmp_path / "other" / "evaluation.json").read_text())["images"] == 2
    assert "PSNR" in other.stdout and "over 2 whole images" in other.stdout
    bad = cli("evaluate", str(trained), "--data", 'type="image_folder", root="/nonexistent"')
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    missing = cli("evaluate", str(tmp_path))
    assert missing.returncode == 2 and "is not a run folder" in missing.stderr


def test_restore_applies_the_network_to_image_files(cli, trained, tmp_path):
    import numpy as np

    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (21, 30, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(images / "b.jpg")
    proc = cli("restore", str(trained), str(images), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "out" / "a.png") as a, Image.open(tmp_path / "out" / "b.png") as b:
        assert a.size == (30, 21) and a.mode == "RGB"
        assert b.size == (12, 12)
    (images / "broken.png").write_bytes(b"not an image")
    bad = cli("restore", str(trained), str(images / "broken.png"), "--out", str(tmp_path / "out"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr and "broken.png" in bad.stderr
    none = cli("restore", str(trained), str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))
    assert none.returncode == 2 and "does not exist" in none.stderr


def test_run_files_are_readable_under_the_users_umask(tiny_recipe, tmp_path):
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path)
    mask = os.umask(0o022)
    os.umask(mask)
    for path in [run / "summary.json", run / "recipe.resolved.toml", *(run / "checkpoints").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_the_work_ratio_is_worded_truly():
    assert ratio_words(2.0) == "2.00x less work than single-scale"
    assert ratio_words(0.92) == "1.09x MORE work than single-scale"
    assert ratio_words(1.0) == "the same work as single-scale"


def test_console_shows_stage_mesh_level_shares_and_eta_as_lines_in_a_log(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path), "--set", "loggers.console.every=1",
               "--set", "schedule.baseline_iterations=3")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("stage 2 [16px]")]
    assert len(lines) == 2  # not a terminal: one plain line per iteration (every = 1)
    assert "work 16px 59% 8px 29% 4px 12%" in lines[0] and "ETA 0:0" in lines[0]
    assert "\r" not in proc.stdout
    assert "x MORE work than single-scale" in proc.stdout  # 12 WU against a baseline of 3 x 2 WU


def test_console_bar_on_a_terminal(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path), "--set", 'loggers.console.style="bar"')
    assert proc.returncode == 0, proc.stderr
    assert "\r" in proc.stdout and "WU" in proc.stdout and "ETA" in proc.stdout and "stage 2 [16px] it 2/2" in proc.stdout


def test_help_of_every_command_the_readme_lists():
    readme = (ROOT / "README.md").read_text()
    main = run_cli("--help")
    assert main.returncode == 0
    for option in ("--sweep", "--seeds", "--print-recipe"):
        assert option in main.stdout and option in readme
    for command, option in (("describe", "--json"), ("evaluate", "--data"), ("restore", "--out")):
        assert f"python tools/run.py {command} " in readme
        proc = run_cli(command, "--help")
        assert proc.returncode == 0 and option in proc.stdout, command


def test_restore_refuses_a_task_whose_input_is_more_than_the_image(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), "--set", 'task={type="inpaint"}')
    assert proc.returncode == 0, proc.stderr
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    refused = cli("restore", str(only_run_dir(tmp_path / "runs")), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"))
    assert refused.returncode == 2 and "task 'inpaint' gives the network more than the degraded image" in refused.stderr
    evaluated = cli("evaluate", str(only_run_dir(tmp_path / "runs")), "--out", str(tmp_path / "e"))
    assert evaluated.returncode == 0, evaluated.stderr  # evaluation degrades its own tiles: masks included
