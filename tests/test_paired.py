"""``paired_folder``: super-resolution pairs in the subfolders, DIV2K and benchmark layouts, written small in tmp_path.

LR images are made from their HR images with Pillow's bicubic resize, so every pair is consistent and a
stored LR tile can be checked pixel by pixel against the file it came from.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import kornia.geometry.transform as KT
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import only_run_dir, run_cli
from msframe import metrics, plugins
from msframe.errors import UserError
from msframe_data import PairedFolder


def hr_pixels(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def tile_of(array: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 pixels as a float [3, H, W] tile in [0, 1]."""
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255


def pair(hr: Path, lr: Path | None, scale: int = 2, size: tuple[int, int] = (44, 36), seed: int = 0) -> np.ndarray:
    """An HR image of ``size`` (w, h) at ``hr`` and, at ``lr``, its bicubic LR image of the HR image cut
    to a multiple of ``scale``; returns the LR pixels (or the HR pixels when ``lr`` is None)."""
    w, h = size
    image = save(hr_pixels(w, h, seed), hr)
    if lr is None:
        return np.asarray(Image.open(image))
    cut = Image.open(image).crop((0, 0, w // scale * scale, h // scale * scale))
    low = cut.resize((w // scale, h // scale), Image.BICUBIC)
    save(np.asarray(low), lr)
    return np.asarray(low)


def subfolders(root: Path, val: bool = True) -> Path:
    """train/HR (3 images), val/HR (1) and test/HR (2), with LR_x2 beside val and test."""
    for i in range(3):
        pair(root / "train" / "HR" / f"t{i}.png", None, seed=10 + i)
    if val:
        pair(root / "val" / "HR" / "v0.png", root / "val" / "LR_x2" / "v0x2.png", seed=20)
    for i in range(2):
        pair(root / "test" / "HR" / f"{i:04d}.png", root / "test" / "LR_x2" / f"{i:04d}x2.png", seed=30 + i)
    return root


def paired(root: Path, **params) -> PairedFolder:
    return PairedFolder(PairedFolder.Params(root=str(root), **params))


def error_of(call) -> UserError:
    with pytest.raises(UserError) as info:
        call()
    return info.value


def test_paired_folder_is_registered_through_the_hook():
    assert "paired_folder" in plugins.load().registry.names("dataset")


def test_subfolders_layout_pairs_by_stem_and_tiles_stay_aligned(tmp_path):
    root = subfolders(tmp_path / "d")
    ds = paired(root)
    assert {s: ds.split(s).names for s in ds.SPLITS} == {
        "train": ["train/HR/t0.png", "train/HR/t1.png", "train/HR/t2.png"],
        "val": ["val/HR/v0.png"],
        "test": ["test/HR/0000.png", "test/HR/0001.png"],
    }
    lr, hr = ds.split("test").pairs(16, 2, 4)
    assert lr.shape == (8, 3, 8, 8) and hr.shape == (8, 3, 16, 16) and lr.dtype == torch.float32
    # LR 22x18 px, 8 px tiles on a 2x2 grid: corners (0, 0), (0, 14), (10, 0), (10, 14); tile 7 is image 1's last
    stored = np.asarray(Image.open(root / "test" / "LR_x2" / "0001x2.png"))
    high = np.asarray(Image.open(root / "test" / "HR" / "0001.png"))
    assert torch.equal(lr[7], tile_of(stored[10:18, 14:22]))
    assert torch.equal(hr[7], tile_of(high[20:36, 28:44]))
    assert lr[7, :, 0, 0].mul(255).round().tolist() == stored[10, 14].tolist()  # one pixel spelled out
    assert lr[5, 1, 3, 2].mul(255).round() == stored[0 + 3, 14 + 2, 1]
    one = ds.split("test").pairs(16, 2, 4, max_images=1)
    assert torch.equal(one[0], lr[:4]) and torch.equal(one[1], hr[:4])
    report = ds.report()
    assert report["layout"] == "subfolders" and report["warnings"] == [] and report["skipped"] == 0
    assert report["stored_lr"]["test"]["x2"]["pairs"] == 2


def test_missing_scale_gives_none_and_warns_that_evaluation_degrades_itself(tmp_path):
    ds = paired(subfolders(tmp_path / "d"))
    assert ds.split("test").pairs(16, 4, 2) is None
    (warning,) = ds.report()["warnings"]
    assert warning.startswith("test split: stored LR x4 not found") and "LR_x4" in warning
    assert warning.endswith("evaluation uses the task's own downsampling")


def test_subfolders_without_val_hold_out_part_of_train(tmp_path):
    ds = paired(subfolders(tmp_path / "d", val=False), val_fraction=0.3, seed=1)
    train, val = ds.split("train").names, ds.split("val").names
    assert len(val) == 1 and sorted(train + val) == ["train/HR/t0.png", "train/HR/t1.png", "train/HR/t2.png"]
    assert paired(tmp_path / "d", val_fraction=0.3, seed=1).split("val").names == val
    assert "hold-out" in ds.report()["val"]


def div2k(root: Path) -> Path:
    for i in range(1, 6):
        pair(root / "DIV2K_train_HR" / f"{i:04d}.png", root / "DIV2K_train_LR_bicubic" / "X2" / f"{i:04d}x2.png", seed=i)
    for i in (801, 802):
        hr = root / "DIV2K_valid_HR" / f"{i:04d}.png"
        pair(hr, root / "DIV2K_valid_LR_bicubic" / "X2" / f"{i:04d}x2.png", size=(48, 40), seed=i)
        pair(hr, root / "DIV2K_valid_LR_bicubic" / "X4" / f"{i:04d}x4.png", scale=4, size=(48, 40), seed=i)
    return root


def test_div2k_train_holds_out_val_and_valid_is_test(tmp_path):
    ds = paired(div2k(tmp_path / "d"), val_fraction=0.2, seed=3)
    train, val, test = (ds.split(s) for s in ds.SPLITS)
    assert len(train) == 4 and len(val) == 1 and not set(train.names) & set(val.names)
    assert test.names == ["DIV2K_valid_HR/0801.png", "DIV2K_valid_HR/0802.png"]
    assert ds.report()["layout"] == "div2k"
    lr, hr = val.pairs(16, 2, 1)  # val's LR images come from DIV2K_train_LR_bicubic
    stem = Path(val.names[0]).stem
    stored = np.asarray(Image.open(tmp_path / "d" / "DIV2K_train_LR_bicubic" / "X2" / f"{stem}x2.png"))
    assert torch.equal(lr[0], tile_of(stored[:8, :8]))
    lr4, hr4 = test.pairs(16, 4, 1)
    assert lr4.shape == (2, 3, 4, 4) and hr4.shape == (2, 3, 16, 16)
    assert val.pairs(16, 4, 1) is None  # DIV2K_train_LR_bicubic has no X4 here
    assert any(w.startswith("val split: stored LR x4 not found") for w in ds.report()["warnings"])


@pytest.mark.parametrize("lr_folder, lr_name", [("LR_bicX2", "{stem}x2.png"), ("x2", "{stem}.png")])
def test_benchmark_is_evaluation_only_and_trains_on_train_root(tmp_path, lr_folder, lr_name):
    bench = tmp_path / "Set5"
    for i, stem in enumerate(["baby", "bird", "butterfly", "head", "woman"]):
        pair(bench / "HR" / f"{stem}.png", bench / lr_folder / lr_name.format(stem=stem), seed=i)
    for i in range(4):
        pair(tmp_path / "train" / "deep" / f"{i}.png", None, seed=40 + i)
    ds = paired(bench, train_root=str(tmp_path / "train"), val_fraction=0.25)
    assert ds.split("test").names == ["HR/baby.png", "HR/bird.png", "HR/butterfly.png", "HR/head.png", "HR/woman.png"]
    assert len(ds.split("train")) == 3 and len(ds.split("val")) == 1 and ds.split("val").names[0].startswith("deep/")
    assert ds.split("test").pairs(16, 2, 1)[0].shape == (5, 3, 8, 8)
    assert ds.split("val").pairs(16, 2, 1) is None
    report = ds.report()
    assert report["layout"] == "benchmark" and report["role"] == "test"
    assert any(w.startswith("val split: its images (training images in") and "own downsampling" in w
               for w in report["warnings"])
    both = paired(bench, train_root=str(tmp_path / "train"), role="val+test", val_fraction=0.2)
    val, test = both.split("val").names, both.split("test").names
    assert len(val) == 1 and len(test) == 4 and not set(val) & set(test)
    assert len(both.split("train")) == 4 and both.split("val").pairs(16, 2, 1) is not None


def test_urban100_style_names_pair(tmp_path):
    bench = tmp_path / "Urban100"
    pair(bench / "HR" / "img_001_SRF_2_HR.png", bench / "LR_bicubic" / "X2" / "img_001_SRF_2_LR.png")
    pair(tmp_path / "train" / "a.png", None)
    pair(tmp_path / "train" / "b.png", None, seed=1)
    assert paired(bench, train_root=str(tmp_path / "train")).split("test").pairs(16, 2, 2)[0].shape == (2, 3, 8, 8)


def test_benchmark_without_train_root_and_options_of_other_layouts_are_refused(tmp_path):
    pair(tmp_path / "Set5" / "HR" / "baby.png", tmp_path / "Set5" / "LR_bicX2" / "babyx2.png")
    err = error_of(lambda: paired(tmp_path / "Set5").split("train"))
    assert err.key == "data.train_root" and "does not train on the images it evaluates on" in str(err)
    root = subfolders(tmp_path / "d")
    assert error_of(lambda: paired(root, role="val+test").split("train")).key == "data.role"
    assert error_of(lambda: paired(root, train_root=str(tmp_path)).split("train")).key == "data.train_root"


def test_mismatched_and_truncated_files_are_skipped_and_counted(tmp_path):
    root = subfolders(tmp_path / "d")
    test = root / "test"
    pair(test / "HR" / "odd.png", test / "LR_x2" / "oddx2.png", size=(45, 37), seed=5)  # HR cut to 44x36: consistent
    pair(test / "HR" / "wrong.png", None, seed=6)
    save(hr_pixels(20, 18, 7), test / "LR_x2" / "wrongx2.png")  # should be 22x18
    pair(test / "HR" / "cut.png", test / "LR_x2" / "cutx2.png", seed=8)
    full = (test / "LR_x2" / "cutx2.png").read_bytes()
    (test / "LR_x2" / "cutx2.png").write_bytes(full[: len(full) // 2])
    full = (root / "train" / "HR" / "t0.png").read_bytes()
    (root / "train" / "HR" / "t0.png").write_bytes(full[: len(full) // 2])
    ds = paired(root)
    assert ds.split("train").names == ["train/HR/t1.png", "train/HR/t2.png"]
    split = ds.split("test")
    assert len(split) == 5
    lr, hr = split.pairs(16, 2, 1)
    assert lr.shape == (3, 3, 8, 8)  # 0000, 0001 and odd; not wrong (size) nor cut (truncated)
    report = ds.report()
    assert report["skipped"] == 2
    assert sorted(Path(p).name for p in report["skipped_examples"]) == ["cutx2.png", "t0.png"]
    counts = report["stored_lr"]["test"]["x2"]
    assert (counts["pairs"], counts["mismatched"], counts["unpaired"]) == (3, 1, 0)
    assert Path(counts["mismatched_examples"][0]).name == "wrongx2.png"
    assert any("1 stored LR x2 images are not 1/2" in w for w in report["warnings"])
    loose = paired(root, scale_check=False)
    assert loose.split("test").pairs(16, 2, 1)[0].shape == (4, 3, 8, 8)  # wrong.png cut to 20x18 LR px


def test_layout_mistakes_name_root_and_the_expected_layout(tmp_path):
    err = error_of(lambda: paired(tmp_path / "nowhere").split("train"))
    assert err.key == "data.root" and "does not exist" in str(err)
    assert all(f"({layout})" in str(err) for layout in ("subfolders", "div2k", "benchmark"))
    (tmp_path / "empty").mkdir()
    assert "matches no known layout" in str(error_of(lambda: paired(tmp_path / "empty").split("train")))
    pair(tmp_path / "d" / "DIV2K_train_HR" / "0001.png", None)
    err = error_of(lambda: paired(tmp_path / "d").split("train"))
    assert "has no DIV2K_valid_HR folder" in str(err) and "DIV2K_valid_LR_bicubic/X2/0801x2.png" in str(err)
    pair(tmp_path / "s" / "train" / "HR" / "a.png", None)
    (tmp_path / "s" / "test" / "LR_x2").mkdir(parents=True)
    err = error_of(lambda: paired(tmp_path / "s").split("train"))
    assert err.key == "data.root" and "has no test/HR folder" in str(err) and 'layout = "subfolders"' in str(err)


# ------------------------------------------------------------------------------- command line

QUICK = ["--set", "task={type=\"superres\",scale=2}", "--set", "backbone={type=\"espcn\"}",
         "--set", "schedule.resolution=16", "--set", "schedule.levels=2", "--set", "schedule.iterations=[2,2]",
         "--set", "schedule.batch=2"]


def test_cli_missing_root_is_one_line_naming_data_root(tmp_path):
    proc = run_cli("recipes/quickstart.toml", "--out", str(tmp_path), "--set",
                   'data={type="paired_folder",root="/nonexistent/Set5"}', *QUICK, env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.root" in errors[0] and "/nonexistent/Set5 does not exist" in errors[0]


def test_cli_trains_on_hr_and_evaluates_on_the_stored_pairs(tmp_path):
    root = subfolders(tmp_path / "d")
    proc = run_cli("recipes/quickstart.toml", "--out", str(tmp_path / "runs"), "--set",
                   f'data={{type="paired_folder",root="{root}"}}', *QUICK, env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert isinstance(summary["test"]["psnr"], float) and isinstance(summary["test"]["input_psnr"], float)
    assert summary["data"]["warnings"] == [] and summary["data"]["stored_lr"]["test"]["x2"]["pairs"] == 2
    # input_psnr is the task's bicubic upsampling of the stored LR images, not of a synthetic downsampling:
    # whole images (the default protocol), on Y with 2 px shaved
    pairs = paired(root).split("test").whole_pairs(2)
    assert summary["test"]["protocol"] == "whole" and summary["test"]["images"] == len(pairs) == 2
    y = [(metrics.shaved(metrics.luma(KT.resize(lo[None], tuple(hi.shape[-2:]), interpolation="bicubic",
                                                align_corners=False).clamp(0, 1)), 2), metrics.shaved(metrics.luma(hi[None]), 2))
         for _, lo, hi in pairs]
    assert summary["test"]["input_psnr"] == pytest.approx(sum(float(metrics.psnr(b, h)) for b, h in y) / 2, abs=1e-4)
    # and the tile average (eval.protocol = "tiles") on the stored LR tiles
    tiles = run_cli("evaluate", str(run), "--data", f'type="paired_folder",root="{root}"', "--set", 'eval.protocol="tiles"',
                    "--out", str(tmp_path / "tiles"))
    assert tiles.returncode == 0, tiles.stderr
    measured = json.loads((tmp_path / "tiles" / "evaluation.json").read_text())
    ev = tomllib.loads((run / "recipe.resolved.toml").read_text())["eval"]
    lr, hr = paired(root).split("test").pairs(16, 2, ev["tiles_per_image"], ev["max_images"])
    bicubic = KT.resize(lr, (16, 16), interpolation="bicubic", align_corners=False).clamp(0, 1)
    assert measured["protocol"] == "tiles" and measured["images"] == len(hr)
    assert measured["input_psnr"] == pytest.approx(float(metrics.psnr(bicubic, hr).mean()), abs=1e-4)
