"""Built-in datasets: image folders, CIFAR-10, STL-10 and CelebA layouts written small in tmp_path.

Checks splits (official, by subfolder, by seeded ratio), crops, the small-image policies, bad files,
the upsampling warning of docs/method.md trap 7, and the user's view through the command line.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msframe import plugins
from msframe.errors import UserError
from msframe_data import CelebA, Cifar10, ImageFolder, Stl10

ROOT = Path(__file__).resolve().parent.parent


def pixels(w: int, h: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)


def write(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels(w, h, seed)).save(path)
    return path


def folder(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """Images at ``root/<relative path>`` of the given (width, height), in the format of their extension."""
    for i, (rel, (w, h)) in enumerate(sizes.items()):
        write(root / rel, w, h, seed=i)
    return root


TREE = {
    "train/a.png": (40, 30), "train/b.jpg": (48, 48), "train/deep/c.webp": (32, 36), "train/d.tif": (44, 20),
    "val/e.png": (32, 32), "test/f.tiff": (36, 28), "test/G.JPEG": (24, 40),
}


def image_folder(root: Path, **params) -> ImageFolder:
    return ImageFolder(ImageFolder.Params(root=str(root), **params))


def crops_of(dataset, split: str, n: int, size: int, seed: int) -> torch.Tensor:
    return dataset.split(split).crops(n, size, torch.Generator().manual_seed(seed))


def error_of(call) -> UserError:
    with pytest.raises(UserError) as info:
        call()
    return info.value


def test_every_dataset_is_registered_through_the_hook():
    names = plugins.load().registry.names("dataset")
    assert {"sample_images", "image_folder", "cifar10", "stl10", "celeba"} <= set(names)


# ------------------------------------------------------------------------------- image_folder


def test_subfolder_split_reads_every_format_recursively(tmp_path):
    ds = image_folder(folder(tmp_path / "d", TREE))
    names = {s: ds.split(s).names for s in ds.SPLITS}
    assert names == {
        "train": ["train/a.png", "train/b.jpg", "train/d.tif", "train/deep/c.webp"],
        "val": ["val/e.png"],
        "test": ["test/G.JPEG", "test/f.tiff"],
    }
    train = ds.split("train")
    assert [tuple(im.shape) for im in train.images] == [(3, 30, 40), (3, 48, 48), (3, 20, 44), (3, 36, 32)]
    assert torch.equal(train.images[0], torch.from_numpy(pixels(40, 30, 0)).permute(2, 0, 1))  # PNG is lossless
    assert ds.report()["images"] == {"train": 4, "val": 1, "test": 2}
    assert ds.report()["skipped"] == 0 and ds.report()["warnings"] == []


def test_ratio_split_is_disjoint_complete_and_seeded(tmp_path):
    root = folder(tmp_path / "d", {f"{'sub/' if i % 2 else ''}{i:02d}.png": (20, 20) for i in range(12)})
    def split(seed):
        ds = image_folder(root, split="ratio", ratios=[0.5, 0.25, 0.25], seed=seed)
        return {s: ds.split(s).names for s in ds.SPLITS}
    a = split(3)
    assert [len(a[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    everything = sum(a.values(), [])
    assert sorted(everything) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert len(set(everything)) == 12
    assert split(3) == a
    assert split(4) != a


def test_ratio_split_with_too_few_files_names_root(tmp_path):
    root = folder(tmp_path / "d", {"only.png": (20, 20), "two.png": (20, 20)})
    err = error_of(lambda: image_folder(root, split="ratio").split("train"))
    assert err.key == "data.root" and "2 image file(s)" in str(err)


def test_crops_have_the_asked_shape_range_and_follow_the_generator(tmp_path):
    ds = image_folder(folder(tmp_path / "d", TREE))
    c = crops_of(ds, "train", 6, 16, seed=1)
    assert c.shape == (6, 3, 16, 16) and c.dtype == torch.float32
    assert 0 <= c.min() and c.max() <= 1 and c.std() > 0.1
    assert torch.equal(c, crops_of(ds, "train", 6, 16, seed=1))
    assert not torch.equal(c, crops_of(ds, "train", 6, 16, seed=2))
    tiles = ds.split("test").tiles(16, 4)
    assert tiles.shape == (8, 3, 16, 16) and torch.equal(tiles, ds.split("test").tiles(16, 4))
    gray = image_folder(tmp_path / "d", channels=1)
    assert gray.channels() == 1 and crops_of(gray, "val", 2, 16, seed=1).shape == (2, 1, 16, 16)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "d" / "train" / "deep.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(path)
    folder(tmp_path / "d", {"val/v.png": (20, 20), "test/t.png": (20, 20)})
    image = image_folder(tmp_path / "d").split("train").images[0]
    assert image.unique().tolist() == [round(40000 / 257)]


@pytest.mark.parametrize("policy", ["skip", "upscale", "reflect_pad"])
def test_small_image_policies(tmp_path, policy):
    root = folder(tmp_path / "d", {"train/small.png": (20, 24), "train/big.png": (48, 48),
                                   "val/v.png": (32, 32), "test/t.png": (32, 32)})
    ds = image_folder(root, small=policy)
    train, *_ = (ds.split(s) for s in ds.SPLITS)
    assert train.names == ["train/big.png", "train/small.png"]
    tiles = train.tiles(32, 1)  # one tile per usable image, taken at its top-left corner
    assert train.usable(32) == len(tiles) == (1 if policy == "skip" else 2)
    assert crops_of(ds, "train", 4, 32, seed=0).shape == (4, 3, 32, 32)
    small = train.images[1].float() / 255
    if policy == "upscale":  # the short side (20 px wide) becomes 32, the long side 24 * 32 / 20 = 38
        assert tuple(train.at(32).images[1].shape) == (3, 38, 32)
        assert abs(tiles[1].mean() - small.mean()) < 0.02
    if policy == "reflect_pad":  # 6 mirrored columns each side, 4 rows above and below
        assert tuple(train.at(32).images[1].shape) == (3, 32, 32)
        assert torch.equal(tiles[1][:, 4:28, 6:26], small)
        assert torch.equal(tiles[1][:, 4:28, 5], small[:, :, 1])  # reflection without repeating the edge
    report = ds.report()
    assert report["smaller_than_crop"] == {"32": {"train": 1, "val": 0, "test": 0}}
    assert any("smaller than the 32 px crop" in w and f"'{policy}'" in w for w in report["warnings"])


def test_skip_policy_with_no_image_as_large_as_the_crop_suggests_the_others(tmp_path):
    ds = image_folder(folder(tmp_path / "d", {"train/a.png": (20, 24), "val/v.png": (20, 20), "test/t.png": (20, 20)}))
    err = error_of(lambda: crops_of(ds, "train", 2, 32, seed=0))
    assert err.key == "data.small" and "largest: 20 px" in str(err) and "upscale" in str(err)


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    root = folder(tmp_path / "d", {"train/good.png": (24, 24), "train/whole.jpg": (24, 24),
                                   "val/v.png": (20, 20), "test/t.png": (20, 20)})
    full = write(tmp_path / "scratch.png", 40, 40).read_bytes()
    (root / "train" / "truncated.png").write_bytes(full[: len(full) // 2])
    jpeg = (root / "train" / "whole.jpg").read_bytes()
    (root / "train" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "train" / "notes.png").write_text("not an image at all\n")
    (root / "train" / "._good.png").write_bytes(b"\x00\x05\x16\x07")  # macOS companion file: ignored
    ds = image_folder(root)
    assert ds.split("train").names == ["train/good.png", "train/whole.jpg"]
    report = ds.report()
    assert report["skipped"] == 3
    assert sorted(Path(p).name for p in report["skipped_examples"]) == ["notes.png", "truncated.jpg", "truncated.png"]
    (root / "val" / "v.png").write_text("broken")
    err = error_of(lambda: image_folder(root).split("val"))
    assert err.key == "data.root" and "none of the 1 image files of the val split could be decoded" in str(err)


def test_layout_mistakes_name_root_and_the_expected_layout(tmp_path):
    err = error_of(lambda: image_folder(tmp_path / "nowhere").split("train"))
    assert err.key == "data.root" and "does not exist" in str(err) and "train/, val/ and test/" in str(err)
    folder(tmp_path / "d", {"train/a.png": (20, 20), "test/t.png": (20, 20)})
    err = error_of(lambda: image_folder(tmp_path / "d").split("train"))
    assert "has no val/ folder" in str(err) and 'data.split = "ratio"' in str(err)
    (tmp_path / "d" / "val").mkdir()
    err = error_of(lambda: image_folder(tmp_path / "d").split("val"))
    assert err.key == "data.root" and "the val split has no image files" in str(err)


# ------------------------------------------------------------------------------- CIFAR-10


def cifar(root: Path, per_batch: int = 4, test: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        batch = {b"batch_label": name.encode(), b"labels": [int(x) for x in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # the python-2 era format of the official files
    return root


def test_cifar10_holds_out_val_from_train_and_tests_on_test_batch(tmp_path):
    root = cifar(tmp_path / "c")
    ds = Cifar10(Cifar10.Params(root=str(root), val_fraction=0.1))
    train, val, test = (ds.split(s) for s in ds.SPLITS)
    assert (len(train), len(val), len(test)) == (18, 2, 3)
    assert not set(train.names) & set(val.names) and test.names == ["test_batch/0", "test_batch/1", "test_batch/2"]
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    stored = dict(zip(train.names + val.names, train.images + val.images))["data_batch_1/0"]
    assert torch.equal(stored, torch.from_numpy(first.reshape(3, 32, 32)))
    assert ds.report()["warnings"] == [] and ds.report()["native_side"] == 32
    again = Cifar10(Cifar10.Params(root=str(root), val_fraction=0.1))
    assert again.split("val").names == val.names


def test_cifar10_resize_warns_that_the_finest_mesh_is_upsampled(tmp_path):
    ds = Cifar10(Cifar10.Params(root=str(cifar(tmp_path / "c")), resize=64, channels=1))
    assert tuple(ds.split("test").images[0].shape) == (1, 64, 64)
    assert crops_of(ds, "train", 2, 64, seed=0).shape == (2, 1, 64, 64)
    (warning,) = ds.report()["warnings"]
    assert "32 px are resized to 64 px" in warning and "upsampled copy of smaller images" in warning


def test_cifar10_too_small_for_the_crop_suggests_resize(tmp_path):
    ds = Cifar10(Cifar10.Params(root=str(cifar(tmp_path / "c"))))
    err = error_of(lambda: crops_of(ds, "train", 2, 64, seed=0))
    assert err.key == "data.resize" and "largest: 32 px" in str(err)


def test_cifar10_missing_or_doctored_files_are_user_errors(tmp_path):
    err = error_of(lambda: Cifar10(Cifar10.Params(root=str(tmp_path))).split("train"))
    assert err.key == "data.root" and "cifar-10-batches-py" in str(err) and "missing: data_batch_1" in str(err)
    root = cifar(tmp_path / "c")
    err = error_of(lambda: Cifar10(Cifar10.Params(root=str(root / "cifar-10-batches-py"))).split("train"))
    assert "not that folder itself" in str(err)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Exploit()}, f, protocol=2)
    err = error_of(lambda: Cifar10(Cifar10.Params(root=str(root))).split("test"))
    assert "is not a CIFAR-10 python batch" in str(err) and "system" in str(err)
    assert not marker.exists()


# ------------------------------------------------------------------------------- STL-10


def stl(root: Path, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """STL-10 binary files of random images; returns them as [N, 3, H, W] (row-major, as displayed)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = {}
    for name, n in counts.items():
        images[name] = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / name).write_bytes(images[name].transpose(0, 1, 3, 2).tobytes())  # column-major planes
    return images


def test_stl10_reads_column_major_images_and_optional_unlabeled(tmp_path):
    images = stl(tmp_path / "s", {"train_X.bin": 6, "test_X.bin": 2, "unlabeled_X.bin": 3})
    ds = Stl10(Stl10.Params(root=str(tmp_path / "s"), val_fraction=0.2))
    assert (len(ds.split("train")), len(ds.split("val"))) == (5, 1)
    assert torch.equal(ds.split("test").images[1], torch.from_numpy(images["test_X.bin"][1]))
    with_unlabeled = Stl10(Stl10.Params(root=str(tmp_path / "s"), val_fraction=0.2, unlabeled=True, resize=128))
    assert with_unlabeled.split("train").names[-3:] == ["unlabeled_X.bin/0", "unlabeled_X.bin/1", "unlabeled_X.bin/2"]
    assert with_unlabeled.split("val").names == ds.split("val").names
    assert tuple(with_unlabeled.split("train").images[-1].shape) == (3, 128, 128)
    assert "96 px are resized to 128 px" in with_unlabeled.report()["warnings"][0]


def test_stl10_missing_and_malformed_files(tmp_path):
    stl(tmp_path / "s", {"train_X.bin": 2, "test_X.bin": 1})
    err = error_of(lambda: Stl10(Stl10.Params(root=str(tmp_path / "s"), unlabeled=True)).split("train"))
    assert err.key == "data.root" and "missing: unlabeled_X.bin" in str(err)
    (tmp_path / "s" / "stl10_binary" / "test_X.bin").write_bytes(b"\x00" * 100)
    err = error_of(lambda: Stl10(Stl10.Params(root=str(tmp_path / "s"))).split("test"))
    assert "not a positive multiple of 27648 bytes" in str(err)


# ------------------------------------------------------------------------------- CelebA


def celeba(root: Path, n: int = 10, partition: bool = True) -> Path:
    for i in range(1, n + 1):
        write(root / "img_align_celeba" / f"{i:06d}.jpg", 24, 30, seed=i)
    if partition:
        labels = [0] * 6 + [1] * 2 + [2] * (n - 8)
        lines = [f"{i:06d}.jpg {p}" for i, p in enumerate(labels, 1)] + [f"{n + 1:06d}.jpg 0"]  # listed, absent
        (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_official_partition_with_missing_and_broken_files(tmp_path):
    root = celeba(tmp_path / "f")
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"\xff\xd8 broken")
    ds = CelebA(CelebA.Params(root=str(root), val_fraction=0.2))
    train, val, test = (ds.split(s) for s in ds.SPLITS)
    assert test.names == ["000009.jpg", "000010.jpg"]
    assert sorted(train.names + val.names) == ["000001.jpg", "000002.jpg", "000004.jpg", "000005.jpg", "000006.jpg"]
    assert len(val) == 1
    report = ds.report()
    assert report["partition"] == "official" and report["skipped"] == 2
    assert [Path(p).name for p in report["skipped_examples"]] == ["000011.jpg", "000003.jpg"]
    assert any("1 files listed in list_eval_partition.txt are missing" in w for w in report["warnings"])


def test_celeba_center_crop_and_two_step_resize_warn_about_upsampling(tmp_path):
    ds = CelebA(CelebA.Params(root=str(celeba(tmp_path / "f")), center_crop=20, resize=[10, 40]))
    assert tuple(ds.split("test").images[0].shape) == (3, 40, 40)
    assert any("images of 10 px are resized to 40 px" in w for w in ds.report()["warnings"])
    downsized = CelebA(CelebA.Params(root=str(tmp_path / "f"), center_crop=20, resize=16))
    downsized.split("test")
    assert not any("upsampled" in w for w in downsized.report()["warnings"])
    err = error_of(lambda: CelebA(CelebA.Params(root=str(tmp_path / "f"), center_crop=25)).split("test"))
    assert err.key == "data.center_crop"


def test_celeba_without_partition_file_falls_back_to_a_seeded_split_and_says_so(tmp_path):
    root = celeba(tmp_path / "f", n=20, partition=False)
    ds = CelebA(CelebA.Params(root=str(root), val_fraction=0.2, test_fraction=0.25))
    names = {s: ds.split(s).names for s in ds.SPLITS}
    assert [len(names[s]) for s in ds.SPLITS] == [12, 3, 5]
    assert len(set(sum(names.values(), []))) == 20
    report = ds.report()
    assert report["partition"].startswith("seeded fallback")
    assert any("list_eval_partition.txt not found" in w for w in report["warnings"])
    err = error_of(lambda: CelebA(CelebA.Params(root=str(tmp_path / "nothing"))).split("train"))
    assert err.key == "data.root" and "img_align_celeba" in str(err)


# ------------------------------------------------------------------------------- command line


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/run.py", "recipes/quickstart.toml", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"}, timeout=300)


def test_cli_missing_root_is_one_line_naming_data_root(tmp_path):
    proc = run("--set", 'data={type="image_folder",root="/nonexistent"}', "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.root" in errors[0] and "/nonexistent does not exist" in errors[0]


def test_cli_trains_on_an_image_folder(tmp_path, monkeypatch):
    # in this process (the import of torch is already paid for); the run is the same as run.py's
    from msframe.cli import main

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(ROOT)
    root = folder(tmp_path / "d", TREE)
    code = main(["recipes/quickstart.toml", "--set", f'data={{type="image_folder",root="{root}",small="reflect_pad"}}',
                 "--set", "schedule.resolution=16", "--set", "schedule.levels=2", "--set", "schedule.iterations=[2,2]",
                 "--set", "schedule.batch=2", "--set", "run.device='cpu'", "--out", str(tmp_path / "runs")])
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"]["images"] == {"train": 4, "val": 1, "test": 2}
    assert summary["data"]["skipped"] == 0


def test_a_split_held_on_the_device_gives_the_same_crops(tmp_path):
    root = folder(tmp_path / "img", {"train/a.png": (40, 36), "train/b.png": (20, 48), "val/c.png": (32, 32),
                                     "test/d.png": (32, 32)})
    host, resident = image_folder(root, small="reflect_pad"), image_folder(root, small="reflect_pad")
    on_device = resident.split("train").to(torch.device("cpu"))  # the path a CUDA run takes, on the CPU
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(host.split("train").crops(6, 24, g1), on_device.crops(6, 24, g2))


def test_a_train_split_with_fewer_crops_than_one_batch_is_a_user_error(cli, tiny_recipe, tmp_path):
    root = folder(tmp_path / "img", {"train/a.png": (20, 20), "train/b.png": (40, 20), "val/c.png": (20, 20),
                                     "test/d.png": (20, 20)})
    data = f'data={{type="image_folder", root="{root}"}}'
    # three distinct 16 px crops (a: 1, b: 2) but batches of 4 and more
    err = cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), "--set", data)
    assert err.returncode == 2
    assert "data: the train split offers 3 distinct 16 px crops (2 images), fewer than one batch of 8" in err.stderr
    ok = cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), "--set", data, "--set", "schedule.batch=[1, 1, 1]",
             "--set", "estimator.growth=1")
    assert ok.returncode == 0, ok.stderr
