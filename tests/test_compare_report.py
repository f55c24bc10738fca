"""tools/compare.py on a sweep folder: the table with method and equal-cost columns, plots, tiles, report."""

from __future__ import annotations

import json
import sys

from PIL import Image

from test_tools import tool


def test_compare_searches_a_sweep_folder_and_writes_plots_tiles_and_a_report(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path), "--set", "eval.every=0.5",
               "--sweep", 'estimator={type="single"},{type="mge", growth=2}')
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "tiny-sweep"
    (folder / "killed-run").mkdir()  # an unfinished run folder is reported, not fatal
    resolved = (folder / "estimator=single" / "recipe.resolved.toml").read_text()
    (folder / "killed-run" / "recipe.resolved.toml").write_text(resolved)
    out = tmp_path / "report"
    proc = tool("compare.py", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0].split()
    assert header[:2] == ["run", "WU"] and "naive" in header and header[-1] == "method"
    assert any(h.startswith("val@") and h.endswith("s") and not h.endswith("WU") for h in header)
    rows = {line.split()[0]: line for line in lines[1:3]}
    assert set(rows) == {"estimator=mge-growth2", "estimator=single"}
    assert rows["estimator=mge-growth2"].endswith("mge, 3 stages, 16/8/4px")
    assert rows["estimator=single"].endswith("single, 3 stages, 16/8/4px")
    naive = json.loads((folder / "estimator=single" / "summary.json").read_text())["test"]["input_psnr"]
    assert f"{naive:.2f}" in rows["estimator=single"]
    assert "skipped (unfinished):" in proc.stdout and "killed-run" in proc.stdout

    for name in ("psnr_vs_work.png", "psnr_vs_seconds.png", "tiles.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300 and image.size[1] > 100, name
    with Image.open(out / "tiles.png") as image:  # degraded, two runs, clean side by side: wider than tall
        assert image.size[0] > 3 * image.size[1]
    report = (out / "report.md").read_text()
    assert "| run | WU |" in report and "![psnr vs work](psnr_vs_work.png)" in report and "tiles.png" in report
    assert report.count("| estimator=") == 2

    # the default report folder of one sweep folder is inside it; --no-images skips loading networks
    quick = tool("compare.py", str(folder), "--no-images")
    assert quick.returncode == 0, quick.stderr
    assert (folder / "compare" / "report.md").is_file() and not (folder / "compare" / "tiles.png").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tool("compare.py", str(empty))
    assert bad.returncode == 2 and "nor holds any" in bad.stderr and "Traceback" not in bad.stderr


def _compare():
    """tools/compare.py as a module (it is a script, not part of the package)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("compare", ROOT / "tools" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("compare", module)  # its dataclass resolves its annotations through sys.modules
    spec.loader.exec_module(sys.modules["compare"])
    return sys.modules["compare"]


#: (lr, seed) -> validation curve [(WU, seconds, PSNR)] and test PSNR of a synthetic sweep
SYNTHETIC = {
    (0.002, 0): ([(10, 1.0, 20.0), (20, 2.0, 22.0), (30, 3.0, 24.5)], 24.0),
    (0.002, 1): ([(10, 1.2, 21.0), (20, 1.5, 23.0), (30, 3.6, 25.5)], 24.4),
    (0.001, 0): ([(10, 0.8, 21.0), (20, 1.6, 25.0)], 25.0),
    (0.001, 1): ([(10, 1.0, 21.5), (20, 2.0, 25.4)], 25.6),
}


def _synthetic_sweep(root):
    """A sweep folder of 2 learning rates (given 0.002 first) x 2 seeds, written through RunFolder's paths."""
    from msframe.rundir import RunFolder
    from msframe.sweep import SWEEP_FILE

    sweep = root / "synthetic-sweep"
    sweep.mkdir()
    (sweep / SWEEP_FILE).write_text(json.dumps({"recipe": "x.toml", "overrides": [], "axes": [
        {"key": "optim.lr", "values": ["0.002", "0.001"]}, {"key": "run.seed", "values": ["0", "1"]}]}))
    for (lr, seed), (curve, test_psnr) in SYNTHETIC.items():
        run = RunFolder(sweep / f"optim.lr={lr},seed={seed}")
        run.path.mkdir()
        run.point.write_text(json.dumps({"group": "g", "sweep": sweep.name, "axes": {"optim.lr": lr, "run.seed": seed},
                                         "labels": {"optim.lr": str(lr), "run.seed": str(seed)}, "overrides": []}))
        run.metrics.write_text("".join(json.dumps({"event": "eval", "split": "val", "work_units": w, "seconds": s,
                                                   "psnr": p, "input_psnr": 15.0}) + "\n" for w, s, p in curve))
        run.summary.write_text(json.dumps({"test": {"psnr": test_psnr, "ssim": 0.5, "input_psnr": 15.0},
                                           "work_units": curve[-1][0], "seconds": curve[-1][1],
                                           "val_best_psnr": max(p for *_, p in curve)}))
    return sweep


def test_compare_pools_seeds_per_group_against_the_reference_by_hand(tmp_path):
    compare = _compare()
    sweep = _synthetic_sweep(tmp_path)
    runs = compare.sweep_order([compare.read_run(f) for f in compare.find_runs([str(sweep)])[0]])
    # sweep order (0.002 was given first), not folder-name order
    assert [r["name"] for r in runs] == ["optim.lr=0.002,seed=0", "optim.lr=0.002,seed=1",
                                         "optim.lr=0.001,seed=0", "optim.lr=0.001,seed=1"]
    groups = compare.group_runs(runs, None)
    assert [(g["label"], len(g["runs"])) for g in groups] == [("optim.lr=0.002", 2), ("optim.lr=0.001", 2)]
    reference = compare.choose_reference(groups, None)  # no single-scale run: the sweep's first point
    assert reference is groups[0]
    # the reference's best: 24.5 and 25.5, mean 25.0; target 0.1 dB below; equal cost 20 WU and 1.6 s
    columns, rows = compare.group_table(groups, reference, 24.9, 20, 1.6)
    assert columns == ["group", "n", "val@20WU", "val@1.6s", "WU to target", "s to target", "test PSNR",
                       "at equal work", "at equal seconds"]
    # at 20 WU: 22.0/23.0 and 25.0/25.4; at 1.6 s: 20.0/23.0 and 25.0/21.5; n = 2: ± half the range.
    # 0.002 reaches 24.9 dB with seed 1 only (30 WU, 3.6 s); 0.001 with both (20/20 WU, 1.6/2.0 s)
    assert rows == [
        ["optim.lr=0.002", "2", "22.50 ± 0.50", "21.50 ± 1.50", "30 (1/2)", "3.6 (1/2)", "24.20 ± 0.20",
         "reference", "reference"],
        ["optim.lr=0.001", "2", "25.20 ± 0.20", "23.25 ± 1.75", "20 ± 0", "1.8 ± 0.2", "25.30 ± 0.30",
         "above the reference", "not distinguishable from the reference"],
    ]
    other = compare.choose_reference(groups, "optim.lr=0.001")
    _, rows = compare.group_table(groups, other, 24.9, 20, 1.6)
    assert rows[0][-2:] == ["below the reference", "not distinguishable from the reference"]
    # three seeds: the sample standard deviation; one seed: no ± and no verdict
    assert compare.Pooled.of([1.0, 2.0, 3.0]).text(".2f") == "2.00 ± 1.00"
    seeds = compare.group_runs(runs, ["optim.lr", "run.seed"])
    _, rows = compare.group_table(seeds, seeds[0], 24.9, 20, 1.6)
    assert rows[1][2] == "23.00" and rows[1][-2:] == ["one seed: not judged"] * 2

    proc = tool("compare.py", str(sweep), "--no-images", "--reference", "optim.lr=0.002")
    assert proc.returncode == 0, proc.stderr
    assert "target: validation PSNR ≥ 24.90 dB; equal cost: 20 WU and 1.6 s" in proc.stdout
    assert "reference: optim.lr=0.002 (best validation PSNR 25.00 ± 0.50 dB, n=2)" in proc.stdout
    assert "half the range for n = 2, the sample standard deviation for n ≥ 3" in proc.stdout
    pooled = proc.stdout.split("\nreference:")[1].splitlines()
    assert pooled[1].split()[:2] == ["group", "n"]
    assert pooled[3].startswith("optim.lr=0.001") and pooled[3].endswith("not distinguishable from the reference")
    seedwise = tool("compare.py", str(sweep), "--no-images", "--by", "optim.lr,seed")
    assert seedwise.returncode == 0, seedwise.stderr
    assert "reference: optim.lr=0.002,seed=0 (one run per group: no seeds to pool" in seedwise.stdout
    assert "±" not in seedwise.stdout
    for bad in (["--by", "optim.momentum"], ["--reference", "optim.lr=0.5"], ["--reference", "lr"]):
        proc = tool("compare.py", str(sweep), "--no-images", *bad)
        assert proc.returncode == 2 and bad[0] in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_compare_pools_the_seeds_of_a_real_sweep(cli, tiny_recipe, tmp_path):
    proc = cli(str(tiny_recipe), "--out", str(tmp_path), "--set", "eval.every=0.5", "--seeds", "2",
               "--sweep", 'estimator={type="mge", growth=2},{type="single"}')
    assert proc.returncode == 0, proc.stderr
    proc = tool("compare.py", str(tmp_path / "tiny-sweep"), "--no-images")
    assert proc.returncode == 0, proc.stderr
    runs = [line.split()[0] for line in proc.stdout.splitlines()[1:5]]
    assert runs == ["estimator=mge-growth2,seed=3", "estimator=mge-growth2,seed=4",  # sweep order
                    "estimator=single,seed=3", "estimator=single,seed=4"]
    pooled = proc.stdout.split("\nreference:")[1].splitlines()
    assert pooled[0].startswith(" estimator=mge-growth2 (best validation PSNR") and "n=2" in pooled[0]
    rows = pooled[2:4]
    assert rows[0].startswith("estimator=mge-growth2 2 ") and rows[0].endswith("reference reference")
    assert rows[1].startswith("estimator=single") and rows[1].count("±") >= 3
    assert rows[1].endswith(("the reference", "not distinguishable from the reference"))
    assert (tmp_path / "tiny-sweep" / "compare" / "psnr_vs_work.png").is_file()
