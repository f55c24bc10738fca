"""Untrusted run folders, confined writes and bounded values: every case ends in one located line, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import only_run_dir
from test_cli import assert_user_error


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (trained once per module); tests copy it and delete summary.json to resume it."""
    from conftest import TINY_RECIPE
    from msframe.cli import main

    base = tmp_path_factory.mktemp("finished")
    recipe = base / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    assert main([str(recipe), "--out", str(base / "out")]) == 0
    return only_run_dir(base / "out")


@pytest.fixture
def resumable(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()
    return run


class _Payload:
    """What an attacker pickles: unpickling calls ``open(marker, "w")``, i.e. runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(cli, resumable, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"model": _Payload(marker)}, resumable / "checkpoints" / "last.pt")
    for stage in (resumable / "checkpoints").glob("stage-*.pt"):
        torch.save({"model": _Payload(marker)}, stage)
    err = assert_user_error(cli("--resume", str(resumable)), "last.pt", "refused")
    assert not marker.exists(), err
    assert not (resumable / "summary.json").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "directory"])
def test_an_unreadable_last_checkpoint_falls_back_to_the_newest_stage_checkpoint(cli, resumable, damage):
    last = resumable / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.unlink()
    if damage == "directory":
        last.mkdir()
    else:
        last.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "random": bytes(range(256)) * 8}[damage])
    result = cli("--resume", str(resumable))
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "stage-2.pt" in result.stderr
    json.loads((resumable / "summary.json").read_text())


def test_no_readable_checkpoint_at_all_is_a_located_error(cli, resumable):
    for f in (resumable / "checkpoints").glob("*.pt"):
        f.write_bytes(b"")
    assert_user_error(cli("--resume", str(resumable)), "--resume", "last.pt", "no readable stage checkpoint")


def test_a_resolved_recipe_that_no_longer_matches_the_checkpoint(cli, resumable):
    resolved = resumable / "recipe.resolved.toml"
    resolved.write_text(resolved.read_text().replace("channels = 8", "channels = 6"))
    assert_user_error(cli("--resume", str(resumable)), "last.pt", "does not match recipe.resolved.toml")


@pytest.mark.parametrize("name", ["recipe.resolved.toml", "metrics.jsonl"])
def test_undecodable_bytes_in_a_run_folder(cli, resumable, name):
    path = resumable / name
    path.write_bytes(path.read_bytes() + b"\xff\xfe\x00bad\n")
    result = cli("--resume", str(resumable))
    if name == "recipe.resolved.toml":
        assert_user_error(result, "recipe.resolved.toml", "not UTF-8")
    else:  # the damaged line holds no step and is dropped; the run finishes
        assert result.returncode == 0, result.stderr
        for line in path.read_text().splitlines():
            json.loads(line)


def test_stale_temporaries_of_a_killed_write_are_removed(resumable, cli):
    stale = resumable / "checkpoints" / ".last.pt.abc123"
    stale.write_bytes(b"half")
    from msframe import checkpoint

    checkpoint.save(resumable / "checkpoints" / "last.pt", checkpoint.load(resumable / "checkpoints" / "last.pt"))
    assert not stale.exists()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from msframe import checkpoint
    from msframe.errors import UserError

    path = tmp_path / "last.pt"
    checkpoint.save(path, {"w": torch.ones(3)})

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="No space left on device.*previous version of the file is kept"):
        checkpoint.save(path, {"w": torch.zeros(3)})
    assert torch.equal(checkpoint.load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resume_refuses_out(cli, resumable, tmp_path):
    assert_user_error(cli("--resume", str(resumable), "--out", str(tmp_path / "x")), "--resume", "--out")


@pytest.mark.parametrize(
    "override, fragments",
    [
        ('run.name="../escape"', ["run.name: must be a plain name"]),
        ('run.name="/tmp/abs"', ["run.name: must be a plain name"]),
        ('run.name="a\\u0000b"', ["run.name: must be a plain name"]),
        ('run.name=".."', ["run.name: must be a plain name"]),
        ('loggers.jsonl.file="/tmp/victim"', ["loggers.jsonl.file: must be a relative path inside the run folder"]),
        ('loggers.jsonl.file="../victim"', ["loggers.jsonl.file: must be a relative path inside the run folder"]),
        ("optim.lr=inf", ["optim.lr: Input should be a finite number"]),
        ("optim.lr=nan", ["optim.lr: Input should be a finite number"]),
        ("optim.weight_decay=inf", ["optim.weight_decay: Input should be a finite number"]),
        ("schedule.resolution=1", ["schedule.resolution: Input should be greater than or equal to 2"]),
        ("schedule.levels=1000000000000000000", ["schedule.levels: Input should be less than or equal to 16"]),
        ("schedule.iterations=[3, 2, 100000000000000000000]", ["schedule.iterations", "iterations"]),
        ("eval.tiles_per_image=1000000", ["eval.tiles_per_image: Input should be less than or equal to 1024"]),
        ("data.root=/abs/dir",
         ["--set: value '/abs/dir' of data.root is not a TOML value; quote a string, e.g. --set 'data.root=\"/abs/dir\"'"]),
    ],
)
def test_values_that_would_escape_hang_or_explode_are_refused_at_validation(cli, tiny_recipe, override, fragments):
    assert_user_error(cli(str(tiny_recipe), "--plan", "--set", override), *fragments)


@pytest.mark.parametrize("work", ["inf", "nan"])
def test_non_finite_work_budgets(cli, tiny_recipe, work):
    text = tiny_recipe.read_text().replace("iterations = [3, 2, 2]", f"work = [1.0, 2.0, {work}]")
    tiny_recipe.write_text(text)
    assert_user_error(cli(str(tiny_recipe), "--plan"), "schedule.work")


def test_unknown_key_in_a_stage_table_lists_the_stage_keys(cli, tiny_recipe):
    text = tiny_recipe.read_text().replace("iterations = [3, 2, 2]\nbatch = [4, 2, 2]\n",
                                           "[[schedule.stage]]\niterations = 3\nbatsh = 4\n")
    tiny_recipe.write_text(text)
    assert_user_error(cli(str(tiny_recipe), "--plan"),
                      "schedule.stage[0].batsh: unknown key (allowed: iterations, work, batch, estimator)")


@pytest.mark.parametrize("kind", ["non-utf8", "dev-zero", "directory"])
def test_recipes_that_are_not_text_files(cli, tiny_recipe, tmp_path, kind):
    if kind == "non-utf8":
        tiny_recipe.write_bytes(tiny_recipe.read_bytes().replace(b"tiny", b"t\xffny"))
        path, fragment = tiny_recipe, "not UTF-8"
    elif kind == "dev-zero":
        path, fragment = "/dev/zero", "not a regular file"
    else:
        path, fragment = tmp_path, "not a regular file"
    assert_user_error(cli(str(path), "--plan"), str(path), fragment)


@pytest.mark.parametrize("out", ["FILE", "/proc/msframe-out"])
def test_an_unusable_out_folder(cli, tiny_recipe, tmp_path, out):
    if out == "FILE":
        out = str(tmp_path / "a-file")
        (tmp_path / "a-file").write_text("x")
    assert_user_error(cli(str(tiny_recipe), "--out", out), "--out", "cannot make the run folder")


def test_all_images_too_small_mentions_data_small(cli, tmp_path):
    from PIL import Image

    from conftest import TINY_RECIPE

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")
    data = f'[data]\ntype = "image_folder"\nroot = "{folder}"\nsplit = "ratio"\nratios = [0.6, 0.2, 0.2]\n'
    start = TINY_RECIPE.index("[data]")
    end = TINY_RECIPE.index("[task]")
    recipe = tmp_path / "small.toml"
    recipe.write_text(TINY_RECIPE[:start] + data + "\n" + TINY_RECIPE[end:])
    assert_user_error(cli(str(recipe), "--out", str(tmp_path / "out")), "data", "data.small")


def test_wandb_auto_with_credentials_but_no_network_goes_offline_within_seconds(monkeypatch, capsys):
    import time

    from msframe_loggers.wandb_logger import WandbLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    t0 = time.monotonic()
    mode = WandbLogger(WandbLogger.Params()).mode()
    assert mode == "offline" and time.monotonic() - t0 < 5
    assert "unreachable; logging offline" in capsys.readouterr().err
    assert WandbLogger(WandbLogger.Params(mode="online")).mode() == "online"  # explicit: no probe, no fallback


def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tiny_recipe):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "run.py"), str(tiny_recipe), "--plan"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)  # inside the imports (torch takes seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "interrupted" in err


@pytest.mark.parametrize("damage", [b"\xff\xfe{", b"[1, 2]", b"{\"test\": 1"])
def test_compare_refuses_a_damaged_summary_with_a_located_line(finished_run, tmp_path, damage):
    import subprocess
    import sys

    from conftest import ROOT

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "summary.json").write_bytes(damage)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b"\xff\xfe garbage\n")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compare.py"), str(run)], capture_output=True, text=True)
    assert_user_error(proc, "summary.json: unreadable summary")


def test_a_missing_last_checkpoint_falls_back_to_the_stage_checkpoint(cli, resumable):
    (resumable / "checkpoints" / "last.pt").unlink()
    result = cli("--resume", str(resumable))
    assert result.returncode == 0, result.stderr
    assert "last.pt: missing; resuming from" in result.stderr and "stage-2.pt" in result.stderr


def test_a_run_folder_with_a_symbolic_link_is_refused(cli, resumable, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (resumable / "metrics.jsonl").unlink()
    (resumable / "metrics.jsonl").symlink_to(victim)
    assert_user_error(cli("--resume", str(resumable)), "--resume", "metrics.jsonl is a symbolic link")
    assert victim.read_text() == "precious"


def test_restore_never_writes_over_an_input_or_another_output_and_keeps_modes(cli, finished_run, tmp_path):
    import hashlib

    import numpy as np
    from PIL import Image

    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / "x.png")
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / "x.jpg")
    Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(images / "sub" / "x.png")
    Image.fromarray(rng.integers(0, 255, (16, 20), dtype=np.uint8)).save(images / "grey.png")
    Image.fromarray(rng.integers(30000, 65535, (16, 16), dtype=np.uint16)).save(images / "deep.png")
    sums = lambda: {p: hashlib.sha256(p.read_bytes()).digest() for p in images.rglob("*") if p.is_file()}
    before = sums()
    out = tmp_path / "out"
    result = cli("restore", str(finished_run), str(images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sums() == before
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["deep.png", "grey.png", "sub/x.png", "x-2.png", "x.png"], written
    assert "restored 5 images" in result.stdout and "1 renamed" in result.stdout, result.stdout
    with Image.open(out / "grey.png") as grey, Image.open(out / "deep.png") as deep, Image.open(out / "x.png") as x:
        assert grey.mode == "L" and x.mode == "RGB"
        assert deep.mode.startswith("I") and np.asarray(deep).max() > 255 * 257 // 2  # 16 bits kept, not clipped
    again = cli("restore", str(finished_run), str(images / "x.png"), "--out", str(images))  # beside the original
    assert again.returncode == 0, again.stderr
    assert sums().items() >= before.items() and (images / "x-2.png").is_file()
