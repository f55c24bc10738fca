"""The whole-image evaluation protocol: padding and cropping, the zero network, Y channel and shave,
hole PSNR, per-image degradation, validation during training, and ``run.py evaluate --images``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import only_run_dir, run_cli
from msframe import inference, metrics, wholeimage
from msframe.components import Capabilities, Degraded
from msframe.sections import EvalSection
from msframe_tasks import Denoise, Inpaint, SuperRes
from test_backbones import SMALL, backbone


class _Recipe:
    eval = EvalSection()


class _Zero(nn.Module):
    """A network whose correction is zero: restores exactly the task's baseline."""

    def __init__(self, channels: int, scale: int = 1):
        super().__init__()
        self.channels, self.scale, self.seen = channels, scale, []

    def forward(self, x, cond=None):
        self.seen.append(tuple(x.shape[-2:]))
        return x.new_zeros(x.shape[0], self.channels, x.shape[-2] * self.scale, x.shape[-1] * self.scale)


def _photo(h: int, w: int) -> torch.Tensor:
    import skimage.data

    return torch.tensor(skimage.data.astronaut()[:h, :w]).permute(2, 0, 1).float() / 255


def test_spans_cover_the_side_once_with_kept_parts_away_from_the_overlap():
    for n, tile, overlap in [(100, 32, 8), (64, 32, 8), (33, 32, 8), (20, 32, 8), (1000, 96, 32)]:
        spans = wholeimage.spans(n, tile, overlap)
        assert spans[0][1] == 0 and spans[-1][2] == n
        assert all(a <= lo < hi <= a + tile for a, lo, hi in spans)
        covered = torch.zeros(n, dtype=torch.bool)
        for _, lo, hi in spans:
            covered[lo:hi] = True
        assert covered.all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_backbone_gets_its_padded_sides_and_restores_odd_images_back_to_their_size(name):
    """Odd sides are padded to the backbone's multiple and minimum side, and cut back: a fresh network
    (last layer zero) restores exactly the baseline, so PSNR equals the baseline's."""
    b = backbone(name)
    caps = b.capabilities()
    scale = caps.scale or 2
    task = SuperRes(SuperRes.Params(scale=scale)) if scale > 1 else Denoise(Denoise.Params())
    torch.manual_seed(0)
    net = b.build(3, 3, 0, scale).eval()
    sides = []
    net.register_forward_pre_hook(lambda _, args: sides.append(tuple(args[0].shape[-2:])))
    images = wholeimage.held_out(_Recipe, task, [_photo(37 * scale, 53 * scale)], ["odd"], "test")
    result, rows = inference.evaluate_whole(net, task, images, caps, "cpu", EvalSection())
    assert all(s % caps.multiple == 0 and s >= caps.min_size for side in sides for s in side)
    assert rows[0]["height"] == 37 * scale and rows[0]["width"] == 53 * scale
    assert result["psnr"] == pytest.approx(result["input_psnr"], abs=1e-4)


@pytest.mark.parametrize("task", [Denoise(Denoise.Params()), SuperRes(SuperRes.Params(scale=2)),
                                  SuperRes(SuperRes.Params(scale=4)), Inpaint(Inpaint.Params())],
                         ids=["denoise", "superres2", "superres4", "inpaint"])
@pytest.mark.parametrize("max_side", [0, 40], ids=["whole", "tiled"])
def test_a_zero_network_restores_exactly_the_baseline_whole_or_in_tiles(task, max_side):
    s = task.scale()
    net = _Zero(3, s)
    caps = Capabilities(min_size=8, multiple=4)
    images = wholeimage.held_out(_Recipe, task, [_photo(61, 83), _photo(45, 39)], ["a", "b"], "test")
    result, rows = inference.evaluate_whole(net, task, images, caps, "cpu", EvalSection(max_side=max_side))
    for row in rows:
        assert row["psnr"] == row["input_psnr"] and row["ssim"] == row["input_ssim"]
    assert result["improved"] == 0 and result["psnr_gain_std"] == 0 and result["images"] == 2
    assert result["tiled"] == (2 if max_side else 0)
    assert all(h % 4 == 0 and h >= 8 and w % 4 == 0 for h, w in net.seen)
    if max_side:
        assert all(max(h, w) * s <= max_side for h, w in net.seen)


def test_superres_is_scored_on_y_with_the_scale_shaved_and_rgb_on_request():
    task = SuperRes(SuperRes.Params(scale=2))
    clean = _photo(64, 90)
    (_, batch), = wholeimage.held_out(_Recipe, task, [clean], ["x"], "test")
    base = task.baseline(batch).clamp(0, 1)
    y = lambda t: metrics.shaved(metrics.luma(t), 2)
    auto = wholeimage.score_image(base, task, batch, wholeimage.scoring(EvalSection(), task, 3))
    assert wholeimage.scoring(EvalSection(), task, 3) == wholeimage.Scoring("y", 2)
    assert auto["input_psnr"] == pytest.approx(float(metrics.psnr(y(base), y(clean[None]))), abs=1e-5)
    assert auto["input_ssim"] == pytest.approx(float(metrics.whole_ssim(y(base), y(clean[None]))), abs=1e-6)
    rgb = wholeimage.scoring(EvalSection(channel="rgb", shave=0), task, 3)
    plain = float(metrics.psnr(base, clean[None]))
    assert wholeimage.score_image(base, task, batch, rgb)["input_psnr"] == pytest.approx(plain, abs=1e-5)
    # denoising keeps every channel and no shave; one-channel images have no Y to take
    assert wholeimage.scoring(EvalSection(), Denoise(Denoise.Params()), 3) == wholeimage.Scoring("rgb", 0)
    assert wholeimage.scoring(EvalSection(), task, 1) == wholeimage.Scoring("rgb", 2)


def test_superres_cuts_the_clean_image_to_a_multiple_of_the_scale():
    task = SuperRes(SuperRes.Params(scale=4))
    (_, batch), = wholeimage.held_out(_Recipe, task, [_photo(67, 50)], ["x"], "test")
    assert batch.target.shape[-2:] == (64, 48) and batch.input.shape[-2:] == (16, 12)


def test_hole_psnr_is_measured_over_the_task_region_only():
    task = Inpaint(Inpaint.Params())
    clean = torch.full((1, 3, 16, 16), 0.5)
    mask = torch.ones(1, 1, 16, 16)
    mask[..., :4, :4] = 0  # a 4x4 hole
    batch = Degraded(torch.cat([clean * mask, mask], 1), clean)
    torch.testing.assert_close(task.region(batch), 1 - mask)
    restored = clean.clone()
    restored[..., :4, :4] = 0.4  # 0.1 off inside the hole: 20 dB there
    restored[..., 9, 9] = 1.0  # off outside the hole: not counted
    row = wholeimage.score_image(restored, task, batch, wholeimage.Scoring("rgb", 0))
    assert row["hole_psnr"] == pytest.approx(20.0, abs=1e-4)
    assert row["input_hole_psnr"] == pytest.approx(-10 * np.log10(0.25), abs=1e-4)  # the fill 0 against 0.5
    assert Denoise(Denoise.Params()).region(batch) is None


def test_each_image_is_degraded_by_its_own_generator_whatever_comes_with_it():
    task = Denoise(Denoise.Params())
    a, b = _photo(32, 32), _photo(40, 24)
    both = wholeimage.held_out(_Recipe, task, [a, b], ["a", "b"], "test")
    again = wholeimage.held_out(_Recipe, task, [a, b], ["a", "b"], "test")
    alone = wholeimage.held_out(_Recipe, task, [a], ["a"], "test")
    assert torch.equal(both[0][1].input, again[0][1].input) and torch.equal(both[0][1].input, alone[0][1].input)
    other_split = wholeimage.held_out(_Recipe, task, [a], ["a"], "val")
    assert not torch.equal(both[0][1].input, other_split[0][1].input)


def test_summary_gives_means_spread_and_the_paired_comparison():
    rows = [{"psnr": 30.0, "ssim": 0.8, "input_psnr": 20.0, "input_ssim": 0.3},
            {"psnr": 32.0, "ssim": 0.9, "input_psnr": 21.0, "input_ssim": 0.4, "tiled": True},
            {"psnr": 19.0, "ssim": 0.7, "input_psnr": 20.0, "input_ssim": 0.5}]
    result = wholeimage.summarize(rows, wholeimage.Scoring("rgb", 0))
    assert result["psnr"] == pytest.approx(27.0) and result["psnr_std"] == pytest.approx(np.std([30, 32, 19], ddof=1))
    assert result["psnr_gain_std"] == pytest.approx(np.std([10, 11, -1], ddof=1))
    assert result["improved"] == 2 and result["images"] == 3 and result["tiled"] == 1 and result["protocol"] == "whole"


def test_a_run_validates_and_tests_on_whole_images_and_writes_the_per_image_rows(tiny_recipe, tmp_path):
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path), env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path)
    test = json.loads((run / "summary.json").read_text())["test"]
    assert test["protocol"] == "whole" and test["channel"] == "rgb" and test["shave"] == 0
    rows = [json.loads(line) for line in (run / "test-images.jsonl").read_text().splitlines()]
    assert len(rows) == test["images"] and test["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert {e["split"] for e in evals} == {"val", "test"} and all(e["protocol"] == "whole" for e in evals)


def test_evaluate_images_scores_any_folder_of_clean_images(tiny_recipe, tmp_path):
    proc = run_cli(str(tiny_recipe), "--out", str(tmp_path / "runs"), env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(tmp_path / "runs")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 52), (33, 47), (64, 64)]):
        Image.fromarray((_photo(h, w).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "eval"
    done = run_cli("evaluate", str(run), "--images", str(folder), "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "evaluation.json").read_text())
    assert result["images"] == 3 and result["protocol"] == "whole" and "psnr_std" in result
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [(r["name"], r["height"], r["width"]) for r in rows] == [("p0.png", 40, 52), ("p1.png", 33, 47), ("p2.png", 64, 64)]
    assert (out / "images.csv").read_text().splitlines()[0].startswith("name,height,width,tiled,psnr")
    assert "over 3 whole images" in done.stdout
    again = run_cli("evaluate", str(run), "--images", str(folder), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "evaluation.json").read_text())["psnr"] == result["psnr"]  # same degradation
    missing = run_cli("evaluate", str(run), "--images", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--images" in missing.stderr and "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_cli("evaluate", str(run), "--images", str(empty))
    assert none.returncode == 2 and "--images" in none.stderr and "no image files" in none.stderr
