"""The bad-input corpus: user mistakes across recipe values, keys, the command line and data.

Every case must end in one located line (``error: …`` naming the file or the key), exit code 2, no
traceback, and nothing written outside the folder the run was given. The table is data; a new
mistake found by a user becomes a new row.
"""

from __future__ import annotations

import sys
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


# ------------------------------------------------------------------ run folders, checkpoints, images, tools
#
# Each row: (id, what is done to a copy of a finished run and its inputs, the command, a fragment of the
# error line, the exit code). The same checks end every row: one located ``error:`` line, the exit code,
# no traceback, no code run (the payloads' marker file stays absent), no input file changed (checksums),
# and nothing written outside the run folder and ``--out``.


class _Call:
    """What a planted pickle asks the unpickler to call: ``func(*args)``, which would make the marker file."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payload(kind: str, marker: Path) -> bytes | object:
    """A checkpoint's content that runs code when unpickled without weights_only (bytes: a raw pickle)."""
    import os
    import pickle
    import struct
    import subprocess

    command = f"touch {marker}".encode()
    return {
        "os.system": lambda: {"model": _Call(os.system, (f"touch {marker}",))},
        "subprocess.call": lambda: {"model": _Call(subprocess.call, (["touch", str(marker)],))},
        "builtins.open": lambda: {"model": _Call(open, (str(marker), "w"))},
        "INST opcode": lambda: f"(S'touch {marker}'\nios\nsystem\n.".encode(),
        "EXT1 opcode": lambda: b"\x80\x02\x82\x01.",
        "builtins.eval": lambda: {"model": {"w": _Call(eval, (f"open({str(marker)!r}, 'w')",))}},
        "STACK_GLOBAL (protocol 4)": lambda: pickle.dumps(_Call(os.system, (f"touch {marker}",)), protocol=4),
        "subprocess.Popen (protocol 0)": lambda: pickle.dumps(_Call(subprocess.Popen, (["touch", str(marker)],)),
                                                             protocol=0),
        "nested in a list": lambda: {"model": {}, "optimizer": [1, {"x": _Call(os.system, (f"touch {marker}",))}]},
        "OBJ opcode": lambda: b"\x80\x02(cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"o.",
    }[kind]()


def _plant(path: Path, content) -> None:
    import torch

    path.unlink(missing_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


PAYLOADS = ["os.system", "subprocess.call", "builtins.open", "INST opcode", "EXT1 opcode", "OBJ opcode", "builtins.eval",
            "STACK_GLOBAL (protocol 4)", "subprocess.Popen (protocol 0)", "nested in a list"]
CHECKPOINT_COMMANDS = {  # the command, and the checkpoint it reads first
    "resume": (["--resume", "RUN"], "last.pt"),
    "evaluate": (["evaluate", "RUN"], "best.pt"),
    "restore": (["restore", "RUN", "IMAGES", "--out", "OUT"], "best.pt"),
    "compare": (["compare.py", "RUN", "--out", "OUT"], "best.pt"),
}


def _damage(kind: str):
    def apply(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "random": bytes(range(256)) * 8}[kind])
    return apply


def _mismatch(kind: str):
    def apply(path: Path) -> None:
        import torch

        state = torch.load(path, weights_only=True)
        weights = state["model"]
        if kind == "no model key":
            del state["model"]
        elif kind == "wrong shape":
            key = next(iter(weights))
            weights[key] = torch.zeros(3, *weights[key].shape)
        elif kind == "extra key":
            weights["stray.weight"] = torch.zeros(1)
        else:  # "missing key"
            del weights[next(iter(weights))]
        torch.save(state, path)
    return apply


def _checkpoint_rows():
    for kind in PAYLOADS:
        for command, (args, file) in CHECKPOINT_COMMANDS.items():
            yield pytest.param(("payload", kind, file), args, "refused", id=f"{command} {file} {kind}")
    for kind in ("empty", "truncated", "random"):
        for command in ("evaluate", "restore", "compare"):
            args, file = CHECKPOINT_COMMANDS[command]
            yield pytest.param(("damage", kind, file), args, "unreadable checkpoint", id=f"{command} {file} {kind}")
    for kind in ("no model key", "wrong shape", "extra key", "missing key"):
        for command, (args, file) in CHECKPOINT_COMMANDS.items():
            yield pytest.param(("mismatch", kind, file), args, "does not match recipe.resolved.toml",
                               id=f"{command} {file} {kind}")
    yield pytest.param(None, ["evaluate", "RUN", "--set", "backbone.channels=16"], "does not match recipe.resolved.toml",
                       id="evaluate --set backbone.channels=16")


def _fifo(path: Path) -> None:
    import os

    os.mkfifo(path)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with no image data (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


RESTORE_ROWS = [  # (id, setup of the inputs, the command, fragment)
    ("--out is the input folder", None, ["restore", "RUN", "IMAGES", "--out", "IMAGES"], "--out"),
    ("--out inside the input folder", None, ["restore", "RUN", "IMAGES", "--out", "IMAGES/restored"], "--out"),
    ("--out an existing file", None, ["restore", "RUN", "IMAGES", "--out", "IMAGES/a.png"], "--out"),
    ("--max-pixels 0", None, ["restore", "RUN", "IMAGES", "--out", "OUT", "--max-pixels", "0"], "--max-pixels"),
    ("over --max-pixels", None, ["restore", "RUN", "IMAGES", "--out", "OUT", "--max-pixels", "100"], "--max-pixels"),
    ("a declared 30000x30000 PNG", lambda d: (d / "bomb.png").write_bytes(_png_header(30000, 30000)),
     ["restore", "RUN", "IMAGES/bomb.png", "--out", "OUT"], "bomb.png"),
    ("a named pipe called *.png given", lambda d: _fifo(d / "pipe.png"),
     ["restore", "RUN", "IMAGES/pipe.png", "--out", "OUT"], "not a regular file"),
    ("a named pipe called *.png in a folder", lambda d: _fifo(d / "pipe.png"),
     ["restore", "RUN", "IMAGES", "--out", "OUT"], "not a regular file"),
    ("not an image", lambda d: (d / "text.png").write_bytes(b"not an image"),
     ["restore", "RUN", "IMAGES/text.png", "--out", "OUT"], "cannot read"),
    ("a missing image", None, ["restore", "RUN", "IMAGES/none.png", "--out", "OUT"], "does not exist"),
]


def _summary_edit(edit):
    def apply(run: Path) -> None:
        import json

        summary = json.loads((run / "summary.json").read_text())
        edit(summary)
        (run / "summary.json").write_text(json.dumps(summary))
    return apply


def _metrics_without_work(run: Path) -> None:
    import json

    lines = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("work_units", None)
        lines.append(json.dumps(record))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


TOOL_ROWS = [  # (id, damage to the run folder, the command, fragment)
    ("summary without work_units", _summary_edit(lambda s: s.pop("work_units")), ["compare.py", "RUN", "--out", "OUT"],
     "work_units"),
    ("a string test.psnr", _summary_edit(lambda s: s["test"].update(psnr="27")), ["compare.py", "RUN", "--out", "OUT"],
     "test.psnr"),
    ("a list summary", lambda run: (run / "summary.json").write_text("[]"), ["compare.py", "RUN", "--out", "OUT"],
     "summary"),
    ("validation rows without work", _metrics_without_work, ["compare.py", "RUN", "--out", "OUT"], "validation records"),
    ("a non-UTF-8 resolved recipe", lambda run: (run / "recipe.resolved.toml").write_bytes(b"\xff\xfe"),
     ["compare.py", "RUN", "--out", "OUT"], "recipe.resolved.toml"),
    ("compare --out an existing file", lambda run: None, ["compare.py", "RUN", "--out", "RUN/summary.json"], "--out"),
    ("compare beside a linked run folder", lambda run: (run.parent / "linked").symlink_to(run),
     ["compare.py", "RUN/../linked"], "symbolic link"),
    ("report --out an existing file", lambda run: None,
     ["report.py", "MATRIX", "--report-only", "--out", "RUN/summary.json"], "--out"),
    ("a matrix over the point limit", lambda run: None,
     ["report.py", "MATRIX", "--report-only", "--seeds", ",".join(map(str, range(20000))), "--out", "OUT"], "matrix"),
    ("evaluate into a linked evaluations/", lambda run: (run / "evaluations").symlink_to(run.parent),
     ["evaluate", "RUN"], "symbolic link"),
    ("resume with a linked checkpoint", lambda run: ((run / "summary.json").unlink(), (run / "checkpoints" / "x.pt").symlink_to(
        run / "checkpoints" / "last.pt")), ["--resume", "RUN"], "symbolic link"),
]

SWEEP_ROWS = [  # sweeps over the point limit, and --jobs / --max-points mistakes
    (["RECIPE", "--plan", "--seeds", "1000000000"], "--seeds"),
    (["RECIPE", "--plan", "--sweep", f"run.seed={','.join(map(str, range(40)))}", "--sweep",
      f"eval.seed={','.join(map(str, range(40)))}", "--sweep", f"optim.lr={','.join(f'{i + 1}e-4' for i in range(40))}"],
     "--sweep"),
    (["RECIPE", "--plan", "--seeds", "3", "--max-points", "2"], "--seeds"),
    (["RECIPE", "--plan", "--seeds", "3", "--max-points", "0"], "--max-points"),
    (["RECIPE", "--seeds", "2", "--jobs", "0", "--out", "OUT"], "--jobs"),
    (["RECIPE", "--plan", "--jobs", "2"], "--jobs"),
    (["--resume", "OUT", "--jobs", "2"], "--resume"),
    (["RECIPE", "--plan", "--set", "optim.lr=1e300"], "optim.lr"),
    (["RECIPE", "--plan", "--set", "optim.weight_decay=1e300"], "optim.weight_decay"),
    (["RECIPE", "--plan", "--set", "run.divergence_factor=1e300"], "run.divergence_factor"),
    (["RECIPE", "--plan", "--set", "optim.warmup=100000000000"], "optim.warmup"),
    (["RECIPE", "--plan", "--set", "run.threads=100000"], "run.threads"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (trained once per module); every row works on a copy."""
    from conftest import TINY_RECIPE, only_run_dir
    from msframe.cli import main

    base = tmp_path_factory.mktemp("corpus-run")
    recipe = base / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    assert main([str(recipe), "--out", str(base / "out")]) == 0
    return only_run_dir(base / "out")


def _checksums(root: Path) -> dict:
    import hashlib

    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock"}


def _tool(name: str, args: list[str], capsys):
    """tools/compare.py or tools/report.py in this process, as ``cli`` calls run.py."""
    import importlib.util

    from conftest import ROOT, Result

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py") + "_tool", ROOT / "tools" / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    capsys.readouterr()
    code = module.main(args)
    out = capsys.readouterr()
    return Result(code, out.out, out.err)


def _run_row(args, fragment, code, finished, tmp_path, monkeypatch, capsys, cli, prepare=None, images_setup=None):
    import shutil

    from PIL import Image

    from conftest import ROOT

    run, images, marker = tmp_path / "run", tmp_path / "images", tmp_path / "code-ran"
    shutil.copytree(finished, run)
    images.mkdir()
    Image.new("RGB", (20, 20), (90, 120, 30)).save(images / "a.png")
    if images_setup is not None:
        images_setup(images)
    if prepare is not None:
        prepare(run, marker)
    monkeypatch.chdir(tmp_path)
    swap = {"RUN": str(run), "IMAGES": str(images), "OUT": str(tmp_path / "out"), "RECIPE": str(tmp_path / "tiny.toml"),
            "MATRIX": str(ROOT / "recipes" / "paper" / "cpu" / "matrix.toml")}
    real = [swap.get(a, a.replace("IMAGES/", f"{images}/").replace("RUN/", f"{run}/")) for a in args]
    before, sums = set(tmp_path.iterdir()), {**_checksums(run), **_checksums(images)}
    result = _tool(real[0], real[1:], capsys) if real[0].endswith(".py") else cli(*real)
    assert result.returncode == code, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not marker.exists(), "a planted payload ran"
    assert set(tmp_path.iterdir()) - {tmp_path / "out"} == before - {tmp_path / "out"}, "written outside the run folder"
    assert {**_checksums(run), **_checksums(images)} == sums, "an input file changed"
    return errors[0]


@pytest.mark.parametrize("setup, args, fragment", list(_checkpoint_rows()))
def test_every_checkpoint_is_read_by_one_reader_with_three_verdicts(setup, args, fragment, finished, tmp_path,
                                                                    monkeypatch, capsys, cli):
    def prepare(run: Path, marker: Path) -> None:
        if setup is None:
            return
        what, kind, file = setup
        path = run / "checkpoints" / file
        if file == "last.pt":
            (run / "summary.json").unlink()  # a run to resume; its stage checkpoints stay readable
        {"payload": lambda p: _plant(p, _payload(kind, marker)), "damage": _damage(kind), "mismatch": _mismatch(kind)}[what](path)

    line = _run_row(args, fragment, 2, finished, tmp_path, monkeypatch, capsys, cli, prepare)
    assert (setup[2] if setup else "RUN_FOLDER") in line or "backbone" in line or setup is None
    if setup and setup[0] == "payload":
        assert "would have run" in line and "never used" in line  # not a fallback, unlike a damaged last.pt


@pytest.mark.parametrize("name, images_setup, args, fragment", RESTORE_ROWS, ids=[r[0] for r in RESTORE_ROWS])
def test_restore_never_destroys_a_file_and_refuses_hostile_images(name, images_setup, args, fragment, finished, tmp_path,
                                                                  monkeypatch, capsys, cli):
    _run_row(args, fragment, 2, finished, tmp_path, monkeypatch, capsys, cli, images_setup=images_setup)


@pytest.mark.parametrize("name, damage, args, fragment", TOOL_ROWS, ids=[r[0] for r in TOOL_ROWS])
def test_tools_and_commands_refuse_ill_typed_or_linked_run_files(name, damage, args, fragment, finished, tmp_path,
                                                                 monkeypatch, capsys, cli):
    _run_row(args, fragment, 2, finished, tmp_path, monkeypatch, capsys, cli, lambda run, marker: damage(run))


@pytest.mark.parametrize("args, key", SWEEP_ROWS, ids=[" ".join(a)[:80] for a, _ in SWEEP_ROWS])
def test_sweeps_are_bounded_before_any_point_is_built(args, key, cli, tiny_recipe, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(tmp_path)
    real = [{"RECIPE": str(tiny_recipe), "OUT": str(out)}.get(a, a) for a in args]
    before = set(tmp_path.iterdir())
    _clean_exit(cli(*real), key, tmp_path, before)


def test_the_whole_corpus_is_over_250_cases():
    rows = len(list(_checkpoint_rows())) + len(RESTORE_ROWS) + len(TOOL_ROWS) + len(SWEEP_ROWS)
    assert len(CASES) + len(RECIPE_TEXTS) + rows > 250
