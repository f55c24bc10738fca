"""tools/compare.py and tools/bench.py as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_compare_puts_runs_on_a_cost_axis(cli, tiny_recipe, tmp_path):
    single = ["--set", 'estimator={type="single"}', "--set", "schedule.iterations=[6]", "--set", "schedule.batch=2",
              "--set", "eval.every=0.5", "--set", 'run.name="single"']
    assert cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), *single).returncode == 0
    assert cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), "--set", "eval.every=0.5").returncode == 0
    folders = sorted((tmp_path / "runs").iterdir(), key=lambda p: not p.name.startswith("single"))
    proc = tool("compare.py", *map(str, folders), "--target", "0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["run", "WU", "seconds", "best", "val", "test"]
    assert lines[1].startswith("single-") and lines[2].startswith("tiny-")
    assert "target: validation PSNR ≥ 0.00 dB" in proc.stdout
    # every run reaches a 0 dB target at its first validation
    assert all("not reached" not in line for line in lines[1:3])
    assert (tmp_path / "runs" / "compare" / "report.md").is_file()  # beside the runs, by default
    (tmp_path / "empty").mkdir()
    bad = tool("compare.py", str(tmp_path / "empty"))
    assert bad.returncode == 2 and "is not a finished run folder" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_prints_per_stage_times_and_efficiency(tiny_recipe):
    proc = tool("bench.py", str(tiny_recipe), "--steps", "2", "--warmup", "1", "--modes", "eager,graphs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("device: cpu")
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("single", "method"))]
    assert [r[0] for r in rows] == ["single", "method", "method", "method"]
    assert [int(r[4]) for r in rows] == [1, 1, 2, 3]  # one network pass per mesh
    assert "efficiency η =" in proc.stdout and "ops per step: final stage" in proc.stdout
    assert "overhead" in proc.stdout and "mode graphs: skipped" in proc.stdout
    mistake = tool("bench.py", str(tiny_recipe), "--set", "schedule.levels=9")
    assert mistake.returncode == 2 and mistake.stderr.startswith("error:")
    mode = tool("bench.py", str(tiny_recipe), "--modes", "turbo")
    assert mode.returncode == 2 and "--modes" in mode.stderr and "allowed: eager, compile, graphs" in mode.stderr


def test_bench_json_counts_more_ops_for_separate_passes(tiny_recipe):
    import json

    figures = []
    for merge in ("auto", "off"):
        proc = tool("bench.py", str(tiny_recipe), "--steps", "1", "--warmup", "1", "--json",
                    "--set", f'run.merge_passes="{merge}"')
        assert proc.returncode == 0, proc.stderr
        figures.append(json.loads(proc.stdout)["modes"]["eager"])
    merged, separate = figures
    assert merged["merged"] and not separate["merged"]
    assert [s["passes"] for s in separate["runs"]["method"]] == [1, 3, 5]
    final = [f["runs"]["method"][-1]["ops"] for f in figures]
    assert final[0] < final[1]  # fewer passes, fewer operators
    assert merged["work_ratio"] == pytest.approx(separate["work_ratio"])


def _bench():
    """tools/bench.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: every recipe the project ships (the report matrices are not recipes)
SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.toml") if p.name != "matrix.toml")
#: the shipped recipes sized for a CPU (64 px): bench runs them whole in the default suite
CPU_SIZED = [p for p in SHIPPED if p.name == "quickstart.toml" or p.parent.name == "cpu"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_bench_assembles_every_shipped_recipe_and_its_single_scale_reference(path):
    from msframe import plugins
    from msframe import recipe as recipe_mod

    loaded = plugins.load()
    pair = _bench().assemblies(recipe_mod.load(path, loaded.registry), loaded)
    single, method = pair["single"].plan, pair["method"].plan
    assert len(single.stages) == 1 and single.stages[0].resolution == method.resolution
    assert [t.kind for t in single.stages[0].terms] == ["plain"]
    assert single.work == pytest.approx(method.baseline_work)  # the reference the method's work ratio names


@pytest.mark.parametrize("path", CPU_SIZED, ids=lambda p: p.stem)
def test_bench_runs_two_steps_of_every_cpu_sized_recipe(path, capsys):
    import json

    assert _bench().main([str(path), "--steps", "2", "--warmup", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["modes"]["eager"]
    assert [len(report["runs"]["single"]), report["work_ratio"] > 1, report["eta"] > 0] == [1, True, True]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in SHIPPED if p not in CPU_SIZED], ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_bench_runs_two_steps_of_every_gpu_sized_recipe(path, capsys):
    assert _bench().main([str(path), "--steps", "2", "--warmup", "0", "--json"]) == 0


def test_bench_keeps_libkineto_chatter_off_the_terminal_and_real_errors_on_it(tiny_recipe, capfd):
    import os

    proc = tool("bench.py", str(tiny_recipe), "--steps", "1", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("USDT") or "gpuGetDeviceCount" in line]
    with _bench()._without_kineto_chatter():  # what a C++ library writes to descriptor 2, as the profiler does
        os.write(2, b"USDT:2026-01-01 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"ERROR:2026-01-01 1:1 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35\n")
        os.write(2, b"a real error\n")
    assert capfd.readouterr().err == "a real error\n"


def test_bench_gpu_suite_dry_run_writes_every_recipe_and_mode_to_json_and_a_table(tmp_path):
    import json

    proc = tool("bench.py", "--gpu-suite", "--out", str(tmp_path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("USDT") or "gpuGetDeviceCount" in line]
    report = json.loads((tmp_path / "gpu-suite.json").read_text())
    suite = ["paper_unet128", "paper_unet256", "paper_resnet128", "paper_espcn128"]
    assert [(r["recipe"], r["mode"]) for r in report["runs"]] == [
        (name, mode) for mode in ("eager", "graphs", "compile+graphs") for name in suite]
    eager = [r for r in report["runs"] if r["mode"] == "eager"]
    assert all(r["device"] == "cpu" and r["eta"] > 0 and r["overhead"]["hand_ms"] > 0 for r in eager)
    assert all("not built" in r["skipped"] for r in report["runs"] if r["mode"] != "eager")
    table = (tmp_path / "gpu-suite.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| paper_")]
    assert len(rows) == 12 and all(f"| cpu | {r['torch']} | {r['date']} |" in row for r, row in zip(eager, rows))


def test_bench_gpu_suite_keeps_to_its_budget(tmp_path, capsys):
    import json
    import time

    t0 = time.monotonic()
    assert _bench().main(["--gpu-suite", "--out", str(tmp_path), "--dry-run", "--modes", "eager", "--budget", "6"]) == 0
    assert time.monotonic() - t0 < 20
    runs = json.loads((tmp_path / "gpu-suite.json").read_text())["runs"]
    assert [r["recipe"] for r in runs] == ["paper_unet128", "paper_unet256", "paper_resnet128", "paper_espcn128"]
    # each child gets an equal share of what is left and is stopped there; below a second none starts
    assert all(r["skipped"].startswith(("did not finish within its share", "no time left")) for r in runs)
    for args in (["--gpu-suite"], ["--dry-run", "RECIPE.toml"], ["--gpu-suite", "--out", str(tmp_path), "RECIPE.toml"]):
        with pytest.raises(SystemExit) as exit_:
            _bench().main(args)
        assert exit_.value.code == 2
    capsys.readouterr()
    assert _bench().main(["--gpu-suite", "--out", str(tmp_path), "--set", "schedule.levels=9"]) == 2
    assert capsys.readouterr().err.startswith("error:")
