"""The command line as a user meets it: plans, runs, run folders, plugins and every kind of mistake."""

from __future__ import annotations

import json
import tomllib
from importlib import metadata

import pytest

from conftest import ROOT, only_run_dir, pythonpath, run_cli

SUMMARY_KEYS = ("test", "work_units", "seconds", "versions")


def assert_user_error(proc, *fragments: str) -> str:
    """Exit code 2, one short message on stderr naming what is wrong, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    err = proc.stderr.strip()
    assert err.startswith("error:"), err
    for f in fragments:
        assert f in err, (f, err)
    return err


def test_plan_prints_stages_levels_batches_and_work_without_training(cli, tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    proc = cli(str(tiny_recipe), "--plan", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "meshes: 16px > 8px > 4px" in text
    # stage 2 (finest) has two corrections and a plain coarse term with batches 2, 4, 8
    assert "correction 16-8px" in text and "correction 8-4px" in text
    assert "total: 7 iterations" in text
    assert "single-scale baseline: 7 iterations at 16px, batch 2" in text
    assert "one pass per mesh over the concatenated batch; 3 in the final stage instead of 5" in text
    assert not out.exists()
    off = cli(str(tiny_recipe), "--plan", "--set", 'run.merge_passes="off"')
    assert "separate passes (run.merge_passes = off); 5 in the final stage" in off.stdout


def test_set_overrides_any_key_with_toml_values(cli, tiny_recipe):
    proc = cli(str(tiny_recipe), "--plan", "--set", "schedule.iterations=[5]", "--set", "schedule.batch=3",
                   "--set", "estimator.growth=4")
    assert proc.returncode == 0, proc.stderr
    assert "total: 5 iterations" in proc.stdout
    # one stage at 16px: batches 3, 12, 48 (x4 per coarser level)
    rows = [line.split() for line in proc.stdout.splitlines() if "correction" in line or "plain" in line]
    assert [int(r[-3]) for r in rows] == [3, 12, 48]


def test_run_writes_a_complete_run_folder(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    proc = run_cli(str(tiny_recipe), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(out)
    assert run.name.startswith("tiny-")
    summary = json.loads((run / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in summary
    for key in ("psnr", "ssim", "input_psnr", "input_ssim"):
        assert isinstance(summary["test"][key], float)
    assert summary["work_units"] == pytest.approx(3 * 4 / 16 + 2 * (2 * (1 / 4 + 1 / 16) + 4 / 16)
                                                  + 2 * (2 * (1 + 1 / 4) + 4 * (1 / 4 + 1 / 16) + 8 / 16))
    assert summary["versions"]["msframe"] and summary["versions"]["torch"]
    assert "msframe_tasks" in summary["versions"]["plugins"]
    assert summary["splits"]["test"] == {"images": 1, "names": ["camera"]}
    assert "camera" not in summary["splits"]["train"]["names"]

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    assert len(train) == 7
    assert [r["stage"] for r in train] == [0, 0, 0, 1, 1, 2, 2]
    assert all(train[i]["work_units"] < train[i + 1]["work_units"] for i in range(6))
    assert train[-1]["work_units"] == pytest.approx(summary["work_units"])
    last = train[-1]["levels"]
    assert [(lv["resolution"], lv["batch"]) for lv in last] == [(16, 2), (8, 4), (4, 8)]
    assert {"fine_loss", "coarse_loss", "correction_var", "work_share"} <= set(last[0])
    assert any(r["event"] == "eval" and r["split"] == "test" for r in records)

    from PIL import Image

    with Image.open(run / "samples.png") as samples:  # one row per tile: noisy | restored | clean
        assert samples.size == (3 * 16, 1 * 16)
    for ckpt in ("last.pt", "stage-0.pt", "stage-1.pt", "stage-2.pt", "best.pt"):
        assert (run / "checkpoints" / ckpt).is_file(), ckpt
    resolved = tomllib.loads((run / "recipe.resolved.toml").read_text())
    assert resolved["optim"]["lr_policy"] == "constant_final_decay"  # defaults filled in
    assert resolved["estimator"] == {"type": "mge", "levels": 0, "growth": 2.0}


def test_resolved_recipe_reproduces_the_run(tiny_recipe, tmp_path):
    first = run_cli(str(tiny_recipe), "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    run = only_run_dir(tmp_path / "a")
    again = run_cli(str(run / "recipe.resolved.toml"), "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    s1 = json.loads((run / "summary.json").read_text())
    s2 = json.loads((only_run_dir(tmp_path / "b") / "summary.json").read_text())
    assert s1["test"] == s2["test"]
    assert s1["work_units"] == s2["work_units"]


def test_plugins_lists_every_component_with_its_origin():
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["components"]
    by_key = {(r["kind"], r["name"]): r for r in rows}
    for key in [("dataset", "sample_images"), ("task", "denoise"), ("backbone", "cnn"), ("resampler", "area"),
                ("estimator", "single"), ("estimator", "mge"), ("logger", "jsonl"), ("logger", "console")]:
        assert key in by_key, key
        assert by_key[key]["distribution"] == "msframe"
    table = run_cli("plugins")
    assert table.returncode == 0
    # api: the plugin API each plugin declares
    assert table.stdout.splitlines()[0].split() == ["kind", "name", "plugin", "distribution", "version", "api"]


def test_third_party_plugin_is_listed_and_trains_from_a_recipe(plugin_paths, tiny_recipe, tmp_path):
    env = pythonpath(plugin_paths["tiny"])
    listing = json.loads(run_cli("plugins", "--json", env=env).stdout)["components"]
    row = next(r for r in listing if r["name"] == "salt_pepper")
    assert (row["kind"], row["plugin"], row["distribution"], row["version"]) == ("task", "tiny", "msframe-tiny-plugin", "0.3.1")
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path), "--set", 'task={type="salt_pepper",amount=0.2}', env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["versions"]["plugins"]["tiny"] == "msframe-tiny-plugin 0.3.1"


def test_broken_plugins_are_named_and_the_rest_still_load(plugin_paths, tiny_recipe):
    env = pythonpath(plugin_paths["broken"])
    proc = run_cli("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'broken_import' skipped" in proc.stderr and "a_module_that_does_not_exist" in proc.stderr
    assert "plugin 'broken_register' skipped" in proc.stderr and "not a subclass of msframe.components.Backbone" in proc.stderr
    failed = json.loads(proc.stdout)["failed"]
    assert set(failed) == {"broken_import", "broken_register"}
    assert run_cli(str(tiny_recipe), "--plan", env=env).returncode == 0


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_paths):
    proc = run_cli("plugins", env={**pythonpath(plugin_paths["broken"]), "MSFRAME_STRICT_PLUGINS": "1"})
    assert_user_error(proc, "plugin 'broken_import' skipped", "MSFRAME_STRICT_PLUGINS")


def test_one_name_from_two_plugins_names_both_origins(plugin_paths, tiny_recipe):
    env = pythonpath(plugin_paths["duplicate"])
    proc = run_cli(str(tiny_recipe), "--plan", env=env)
    # the version the installed distribution's metadata gives (pip writes it from pyproject.toml)
    assert_user_error(proc, "task 'denoise' is registered twice",
                      f"plugin 'msframe_tasks' (msframe {metadata.version('msframe')})",
                      "plugin 'duplicate' (msframe-duplicate 1.0.0)")
    # a recipe that does not use the contested name still runs
    assert run_cli(str(tiny_recipe), "--plan", "--set", 'task={type="salt_pepper"}',
                   env=pythonpath(plugin_paths["duplicate"], plugin_paths["tiny"])).returncode == 0
    strict = run_cli("plugins", env={**env, "MSFRAME_STRICT_PLUGINS": "1"})
    assert_user_error(strict, "registered twice")


def test_msframe_plugins_restricts_loading(tiny_recipe):
    proc = run_cli("plugins", "--json", env={"MSFRAME_PLUGINS": "msframe_tasks,msframe_backbones"})
    kinds = {r["kind"] for r in json.loads(proc.stdout)["components"]}
    assert kinds == {"task", "backbone"}
    missing = run_cli("plugins", env={"MSFRAME_PLUGINS": "no_such_plugin"})
    assert_user_error(missing, "no_such_plugin")


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda t: t.replace('growth = 2', 'levls = 2'),
         ["tiny.toml: estimator.levls: unknown key (allowed: levels, growth, batches)"]),
        (lambda t: t.replace('type = "cnn"', 'type = "unett"'),
         ["tiny.toml: backbone.type: 'unett' is not a registered backbone (known: ", "cnn"]),
        (lambda t: t.replace('[optim]', '[optimiser]'), ["tiny.toml: optimiser: unknown section (allowed: run, schedule"]),
        (lambda t: t.replace('batch = [4, 2, 2]', 'batch = "many"'), ["tiny.toml: schedule.batch"]),
        (lambda t: t.replace('lr = 1e-3', 'lr = -1.0'), ["tiny.toml: optim.lr: Input should be greater than 0 (got -1.0)"]),
        (lambda t: t.replace('lr = 1e-3', 'lr_policy = "step"'),
         ["optim.lr_policy: must be one of 'constant', 'cosine', 'cosine_per_stage' or 'constant_final_decay'"]),
        (lambda t: t.replace('[task]\ntype = "denoise"\nsigma = 0.1\n', ''), ["tiny.toml: task: section is missing", "denoise"]),
        (lambda t: t.replace('sigma = 0.1', 'sigma = 0.1\nsigma = 0.2'), ["tiny.toml: TOML syntax error", "line 27"]),
        (lambda t: t.replace('[run]', '[run'), ["tiny.toml: TOML syntax error", "line 1"]),
        (lambda t: t.replace('levels = 3', 'levels = 6'),
         ["tiny.toml: schedule.resolution: 16 px cannot be halved 5 times", "multiple of 32"]),
        (lambda t: t.replace('iterations = [3, 2, 2]', 'iterations = [3, 2, 2, 2]'),
         ["tiny.toml: schedule.iterations: 4 stages need at least 4 levels"]),
        (lambda t: t.replace('batch = [4, 2, 2]', 'batch = [4, 2]'), ["tiny.toml: schedule.batch: 2 batch sizes for 3 stages"]),
        (lambda t: t.replace('val = ["moon"]', 'val = ["mooon"]'), ["tiny.toml: data.val[0]: must be one of"]),
        (lambda t: t.replace('seed = 3', 'seed = 3\ndevice = "tpu"'), ["tiny.toml: run.device"]),
        (lambda t: t.replace('type = "area"', 'type = "gaussian"').replace('levels = 3', 'levels = 5'),
         ["tiny.toml: schedule.levels: the run restricts images of 2 px down to mesh 4", "'gaussian' needs at least 4 px"]),
    ],
)
def test_recipe_mistakes_end_in_a_located_message_and_exit_2(cli, tiny_recipe, edit, fragments):
    tiny_recipe.write_text(edit(tiny_recipe.read_text()))
    assert_user_error(cli(str(tiny_recipe), "--plan"), *fragments)


def test_a_recipe_mistake_seen_from_a_fresh_interpreter(tiny_recipe):
    tiny_recipe.write_text(tiny_recipe.read_text().replace('growth = 2', 'levls = 2'))
    assert_user_error(run_cli(str(tiny_recipe)), "estimator.levls: unknown key")


def test_several_mistakes_are_reported_together(cli, tiny_recipe):
    text = tiny_recipe.read_text().replace('growth = 2', 'levls = 2').replace('type = "cnn"', 'type = "unett"')
    tiny_recipe.write_text(text)
    err = assert_user_error(cli(str(tiny_recipe), "--plan"))
    assert "estimator.levls" in err and "backbone.type" in err


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["missing.toml"], ["missing.toml: recipe file not found"]),
        (["RECIPE", "--set", "schedule.batch"], ["--set: override 'schedule.batch' is not of the form key.sub=VALUE"]),
        (["RECIPE", "--set", "schedule.batch=[1,"], ["--set: value '[1,' of schedule.batch is not a TOML value"]),
        (["RECIPE", "--set", "schedule.batch.x=1"], ["schedule.batch is a value, not a table"]),
        (["--resume", "not-a-run-folder"], ["--resume: not a run folder"]),
        ([], ["no recipe given"]),
    ],
)
def test_command_line_mistakes(cli, tiny_recipe, args, fragments):
    args = [str(tiny_recipe) if a == "RECIPE" else a for a in args]
    assert_user_error(cli(*args), *fragments)


def test_impossible_schedule_for_the_backbone_names_level_and_limit(plugin_paths, tiny_recipe, tmp_path):
    # the built-in cnn accepts any size; a backbone with a size multiple shows the check
    plugin = tmp_path / "msframe_strided.py"
    plugin.write_text(
        "import msframe\n"
        "from msframe.components import Backbone, Capabilities\n"
        "class Strided(Backbone):\n"
        "    def capabilities(self):\n"
        "        return Capabilities(min_size=8, multiple=8)\n"
        "@msframe.hookimpl\n"
        "def register_backbones(register):\n"
        "    register('strided', Strided)\n"
    )
    dist = tmp_path / "msframe_strided-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: msframe-strided\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[msframe]\nstrided = msframe_strided\n")
    proc = run_cli(str(tiny_recipe), "--plan", "--set", 'backbone={type="strided"}', env=pythonpath(tmp_path))
    assert_user_error(proc, "schedule.levels: stage 0 (4 px), level 0 is 4 px", "smallest input of 8 px",
                      "backbone 'strided'", "(allowed: meshes of at least 8 px, multiples of 8)")


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "python3 tools/dev.py quickstart" in readme
    assert "python3 tools/dev.py test" in readme
    assert "python3 tools/dev.py test" in (ROOT / ".ci" / "run").read_text()
    assert (ROOT / "recipes" / "quickstart.toml").is_file()


def test_help_lists_the_documented_options():
    proc = run_cli("--help")  # argparse exits by itself: a fresh interpreter
    assert proc.returncode == 0
    for option in ("--plan", "--set", "--out", "--resume"):
        assert option in proc.stdout
