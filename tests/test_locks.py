"""One writer per run folder: a second writer is refused at once (exit 2, the holder's pid), a dead
holder's lock is taken over, no metrics record is lost, and sweeps share their points between
processes (``--jobs``, or the same sweep started twice) so that every point trains exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, only_run_dir, run_cli

LONG = ["--set", "schedule.iterations=[300, 150, 150]"]  # long enough for a second process to start meanwhile
STEPS = 600


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "run.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _armed(go: Path, *args: str) -> subprocess.Popen:
    """``run.py ARGS`` in a process that has already imported msframe and torch and starts the command
    the moment ``go`` appears: a second writer that arrives within milliseconds, however fast or loaded
    the machine is, not seconds later. Lines written into ``go`` are appended to ``args``."""
    driver = ("import sys, time\nfrom pathlib import Path\nfrom msframe.cli import main\n"
              "print('armed', flush=True)\ngo = Path(sys.argv[1])\nwhile not go.exists():\n    time.sleep(0.01)\n"
              "sys.exit(main(sys.argv[2:] + go.read_text().splitlines()))")
    proc = subprocess.Popen([sys.executable, "-c", driver, str(go), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "armed", proc.communicate()
    return proc


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _train_steps(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["event"] == "train"]


def test_a_second_writer_is_refused_with_the_holders_pid_and_no_record_is_lost(tiny_recipe, tmp_path):
    go = tmp_path.parent / f"{tmp_path.name}-go"
    armed = _armed(go, "--resume")
    first = _popen(str(tiny_recipe), "--out", str(tmp_path), *LONG)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("tiny-*/recipe.resolved.toml")):  # written under the lock
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    run = only_run_dir(tmp_path)
    go.write_text(str(run))  # the armed --resume of the folder the first run holds
    out, err = armed.communicate(timeout=120)
    second = type("Result", (), {"returncode": armed.returncode, "stdout": out, "stderr": err})
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("error:") == 1 and f"pid {first.pid}" in second.stderr, second.stderr
    assert "another process is training" in second.stderr and "Traceback" not in second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert _train_steps(run) == list(range(1, STEPS + 1))  # every record, once, in order
    json.loads((run / "summary.json").read_text())


def test_the_lock_of_a_killed_writer_is_taken_over(tiny_recipe, tmp_path):
    assert run_cli(str(tiny_recipe), "--out", str(tmp_path)).returncode == 0
    run = only_run_dir(tmp_path)
    (run / "summary.json").unlink()
    hold = ("import sys, time\nfrom msframe.rundir import RunFolder\n"
            "with RunFolder(sys.argv[1]).lock():\n    print('held', flush=True)\n    time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    refused = run_cli("--resume", str(run))
    assert refused.returncode == 2 and f"pid {holder.pid}" in refused.stderr, refused.stderr
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the lock file stays, naming a dead process
    holder.wait()
    assert (run / ".lock").read_text().startswith(f"pid {holder.pid}")
    resumed = run_cli("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    json.loads((run / "summary.json").read_text())


def _points_trained(outputs: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in "\n".join(outputs).splitlines():
        if line.endswith(": starting") or line.endswith(": resuming"):
            name = line.split("] ", 1)[1].rsplit(":", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_one_sweep_started_twice_trains_each_point_once(tiny_recipe, tmp_path):
    go = tmp_path.parent / f"{tmp_path.name}-go"
    armed = _armed(go, str(tiny_recipe), "--out", str(tmp_path), "--seeds", "2", *LONG)
    first = _popen(str(tiny_recipe), "--out", str(tmp_path), "--seeds", "2", *LONG)
    _wait_for(tmp_path / "tiny-sweep" / "seed=3" / "recipe.resolved.toml", first)
    go.touch()  # the armed sweep is past its imports: it reaches seed=3 while the first still trains it
    stdout, stderr = armed.communicate(timeout=600)
    second = type("Result", (), {"returncode": armed.returncode, "stdout": stdout, "stderr": stderr})
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert "seed=3: skipped, another process is training" in second.stdout, second.stdout  # the refused writer
    assert _points_trained([out, second.stdout]) == {"seed=3": 1, "seed=4": 1}
    for point in ("seed=3", "seed=4"):
        assert _train_steps(tmp_path / "tiny-sweep" / point) == list(range(1, STEPS + 1))


def test_a_parallel_sweep_trains_each_point_exactly_once(tiny_recipe, tmp_path):
    result = run_cli(str(tiny_recipe), "--out", str(tmp_path), "--seeds", "3", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert _points_trained([result.stdout]) == {"seed=3": 1, "seed=4": 1, "seed=5": 1}, result.stdout
    for point in ("seed=3", "seed=4", "seed=5"):
        run = tmp_path / "tiny-sweep" / point
        assert _train_steps(run) == list(range(1, 8))
        assert json.loads((run / "summary.json").read_text())["test"]["psnr"] > 0
