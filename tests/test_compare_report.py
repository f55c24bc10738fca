"""tools/compare.py on a sweep folder: the table with method and equal-cost columns, plots, tiles, report."""

from __future__ import annotations

import json

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
