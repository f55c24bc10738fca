"""The bad-input corpus: user mistakes across recipe values, keys, the command line and data.

Every case must end in one located line (``error: …`` naming the file or the key), exit code 2, no
traceback, and nothing written outside the folder the run was given. The table is data; a new
mistake found by a user becomes a new row.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# (dotted key, TOML value) pairs that validation must refuse; the key must appear in the message
BAD_VALUES = {
    "run.seed": ["-1", '"x"', "1.5"],
    "run.device": ['"tpu"', "3", '"cuda:x"'],
    "run.flush_every": ["0", "-1", '"often"'],
    "run.compile": ['"max"', "true"],
    "run.threads": ["-1", '"all"'],
    "run.divergence_factor": ["-1", "inf", "nan"],
    "run.name": ['"../x"', '"a/b"', '"."', '".."', '"a\\u0000b"'],
    "run.merge_passes": ['"always"'],
    "schedule.resolution": ["0", "1", "-5", '"x"', "100000000"],
    "schedule.levels": ["0", "17", "1000000000", '"three"'],
    "schedule.iterations": ["[]", "[0]", "[-1]", '"x"', "[100000000000]", "[1.5]"],
    "schedule.work": ["[0.0]", "[inf]", "[nan]", "[-1.0]", "[]"],
    "schedule.budget": ["0.0", "-1.0", "inf", "nan", "1e30"],
    "schedule.split": ["[0, 1]", "[]", "[-1]", "[nan]", '"equal"'],
    "schedule.batch": ["0", "[0]", "-4", '"x"', "[1, 2, 3, 4, 5]"],
    "schedule.baseline_iterations": ["-1", "100000000000"],
    "optim.lr": ["0", "-1e-3", "inf", "nan", '"fast"'],
    "optim.weight_decay": ["-1", "inf", "nan"],
    "optim.lr_policy": ['"step"', "1"],
    "optim.min_lr_ratio": ["2", "-0.5", "nan"],
    "optim.warmup": ["-1", "1.5"],
    "optim.reset_state_per_stage": ['"perhaps"', "2"],
    "eval.every": ["-1", "inf", "nan"],
    "eval.tiles_per_image": ["0", "1000000"],
    "eval.max_images": ["0", "-3"],
    "eval.seed": ['"x"'],
    "checkpoint.every": ["-1", "nan"],
    "loader.workers": ["-1", '"many"'],
    "loader.resident": ['"maybe"'],
    "task.type": ['"nope"', "3"],
    "task.sigma": ["-1", "inf", '"x"'],
    "task.loss": ['"huber"'],
    "task.coarse_noise": ['"shrunk"'],
    "backbone.type": ['"unett"'],
    "backbone.channels": ["0", "-8", '"wide"'],
    "backbone.depth": ["1", "0"],
    "backbone.activation": ['"gelu"'],
    "resampler.type": ['"lanczos"'],
    "estimator.type": ['"sgd"'],
    "data.type": ['"imagenet"'],
    "data.val": ['["nonexistent_photo"]'],
    "data.channels": ["2"],
}
UNKNOWN_KEYS = ["run.foo", "schedule.foo", "optim.momentum", "eval.foo", "checkpoint.foo", "loader.foo", "task.foo",
                "backbone.foo", "resampler.foo", "estimator.foo", "data.foo", "foo", "loggers.jsonl.foo",
                "loggers.nosuchlogger"]
PLAN_MISTAKES = [  # valid values whose combination the plan refuses, with the key it names
    (["schedule.resolution=60", "schedule.levels=4", "schedule.iterations=[1, 1, 1]"], "schedule.resolution"),
    (["schedule.iterations=[1, 1, 1, 1]"], "schedule.iterations"),
    (["schedule.batch=[8, 8]"], "schedule.batch"),
    (['backbone={type="unet"}', "schedule.resolution=36"], "schedule.levels"),
    (['task={type="superres", scale=4}', "schedule.resolution=8"], "backbone.type"),
    (['task={type="superres", scale=4}', 'backbone={type="espcn"}', "schedule.resolution=8"], "schedule.levels"),
    (['task={type="deblur"}', "schedule.split=[1, 1, 1]", "schedule.budget=1e14"], "schedule.budget"),
    (["schedule.work=[1e14, 1.0, 1.0]"], "schedule.work"),
]
CLI_MISTAKES = [  # command lines (RECIPE stands for a valid recipe, OUT for the output folder)
    (["RECIPE", "--set", "noequals"], "--set"),
    (["RECIPE", "--set", "a..b=1"], "--set"),
    (["RECIPE", "--set", "schedule.batch=[1,"], "--set"),
    (["RECIPE", "--set", "data.root=/abs/dir"], "--set"),
    (["RECIPE", "--set", "schedule.batch.x=1"], "schedule.batch"),
    (["missing.toml"], "missing.toml"),
    (["OUT"], "not a regular file"),
    ([], "recipe"),
    (["--resume", "OUT/nonexistent"], "--resume"),
    (["--resume", "RECIPE"], "--resume"),
    (["--resume", "OUT", "RECIPE"], "--resume"),
    (["RECIPE", "--sweep", "noequals"], "--sweep"),
    (["RECIPE", "--sweep", "schedule.batch="], "--sweep"),
    (["RECIPE", "--sweep", "optim.lr=0,-1"], "optim.lr"),
    (["describe", "task", "nope"], "nope"),
    (["describe", "nokind", "denoise"], "nokind"),
    (["evaluate", "OUT/nonexistent"], "RUN"),
    (["RECIPE", "--out", "RECIPE"], "--out"),
]
DATA_MISTAKES = [  # datasets whose local source is missing: the message names data.root
    'data={type="image_folder", root="/nonexistent/images"}',
    'data={type="paired_folder", root="/nonexistent/DIV2K"}',
    'data={type="cifar10", root="/nonexistent/cifar"}',
    'data={type="stl10", root="/nonexistent/stl"}',
    'data={type="celeba", root="/nonexistent/celeba"}',
]
RECIPE_TEXTS = {  # whole recipe files that cannot be read as recipes
    "syntax": "[run\nname = 1",
    "not utf-8": b"[run]\nname = \"\xff\xfe\"\n",
    "empty": "",
    "a value for a table": "run = 3\n",
    "duplicate key": "[run]\nseed = 1\nseed = 2\n",
    "missing sections": "[run]\nseed = 1\n",
}


def _cases():
    for key, values in BAD_VALUES.items():
        for v in values:
            yield pytest.param(["RECIPE", "--plan", "--set", f"{key}={v}"], key, id=f"{key}={v}")
    for key in UNKNOWN_KEYS:
        value = "{x=1}" if key.startswith("loggers.nosuch") else "1"
        yield pytest.param(["RECIPE", "--plan", "--set", f"{key}={value}"], key, id=f"unknown {key}")
    for sets, key in PLAN_MISTAKES:
        args = ["RECIPE", "--plan"]
        for s in sets:
            args += ["--set", s]
        yield pytest.param(args, key, id="plan " + " ".join(sets))
    for args, key in CLI_MISTAKES:
        yield pytest.param(args, key, id="cli " + " ".join(args))
    for data in DATA_MISTAKES:
        yield pytest.param(["RECIPE", "--out", "OUT", "--set", data], "data.root", id=data)


CASES = list(_cases())


def test_the_corpus_is_large():
    assert len(CASES) + len(RECIPE_TEXTS) >= 150


def _clean_exit(result, key: str, outside: Path, before: set) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], result.stderr
    assert set(outside.iterdir()) == before, "something was written outside the run folder"


@pytest.mark.parametrize("args, key", CASES)
def test_every_mistake_is_one_located_line_and_exit_2(args, key, cli, tiny_recipe, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # a relative path written by mistake would land here
    swap = {"RECIPE": str(tiny_recipe), "OUT": str(out)}
    real = [swap.get(a, a.replace("OUT/", f"{out}/")) for a in args]
    before = set(tmp_path.iterdir())
    result = cli(*real)
    _clean_exit(result, key, tmp_path, before)
    # a refused run leaves no run folder behind, or one that holds only what it had written before failing
    for run in out.iterdir():
        assert not (run / "summary.json").exists()


@pytest.mark.parametrize("name", list(RECIPE_TEXTS))
def test_an_unreadable_recipe_file_is_one_located_line(name, cli, tmp_path, monkeypatch):
    text = RECIPE_TEXTS[name]
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    result = cli(str(path), "--plan")
    _clean_exit(result, str(path), tmp_path, before)
