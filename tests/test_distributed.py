"""Real multi-process training: torchrun with two CPU processes (Gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, only_run_dir


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "tools" / "run.py"), *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


#: A rare abort of one process inside the C++ runtime (seen twice in about twenty full runs under load,
#: never alone; the processes now leave through a barrier, distributed.leave_together): a second launch
#: is allowed for it alone, and any other failure fails at once.
RUNTIME_ABORT = "terminate called without an active exception"


def test_two_processes_share_every_level_and_write_one_run_folder(tiny_recipe, tmp_path):
    args = ("--set", "schedule.batch=[4, 2, 2]", "--set", 'estimator={type="mlmc", every=1}')
    proc = torchrun(str(tiny_recipe), "--out", str(tmp_path / "runs"), *args)
    if proc.returncode != 0 and RUNTIME_ABORT in proc.stderr:
        proc = torchrun(str(tiny_recipe), "--out", str(tmp_path / "again"), *args)
        tmp_path = tmp_path / "again"
    else:
        tmp_path = tmp_path / "runs"
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path)  # rank 0 made it; rank 1 wrote into the same one
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    assert len(train) == 7  # logged once, by rank 0
    assert train[0]["levels"][0]["batch"] == 4  # the planned (global) batch; each rank drew 2 of them
    assert summary["work_units"] == train[-1]["work_units"]
    # the ranks re-allocated identically (MLMC from rank-averaged variances) and stayed in step: the
    # engine compares their weights at every stage end and would have failed the run
    assert [r for r in records if r["event"] == "allocation"]
    assert proc.stdout.count("run folder:") == 1


def test_a_batch_the_processes_cannot_share_is_a_user_error(tiny_recipe, tmp_path):
    proc = torchrun(str(tiny_recipe), "--out", str(tmp_path / "runs"), "--set", "schedule.batch=[3, 2, 2]")
    assert proc.returncode != 0  # torchrun reports its children's exit code 2 and fails itself
    assert "error: " in proc.stderr and "schedule.batch: batches [3] cannot be shared equally by 2 processes" in proc.stderr
    assert "msframe/" not in proc.stderr  # no traceback from msframe (the launcher prints its own)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
