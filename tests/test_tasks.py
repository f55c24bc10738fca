"""The degradation tasks: shapes on every mesh, reproducible draws, coupled meshes, and each task's promises."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from msframe.components import Degraded
from msframe.errors import UserError
from msframe.plugins import load

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = load().registry
RESAMPLERS = REGISTRY.names("resampler")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: (task, parameters): every task, and the options that change how coarse meshes are made
CASES = [
    ("denoise", {}),
    ("denoise", {"sigma_range": (0.05, 0.2), "condition": True, "coarse_noise": "rescaled"}),
    ("deblur", {}),
    ("deblur", {"kernel": "line", "boundary": "zero"}),
    ("deblur", {"kernel": "walk", "coarse": "operator"}),
    ("deblur", {"sigma_range": (0.5, 2.0), "coarse": "operator", "boundary": "circular"}),
    ("inpaint", {}),
    ("inpaint", {"mixture": {"dropout": 1.0}, "fill": "noise", "coarse_known": "all", "loss_on": "hole"}),
    ("superres", {}),
    ("superres", {"scale": 4, "downsample": "area", "noise_sigma": 0.05}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}' for k in params) or 'default'}" for name, params in CASES]


def build(kind: str, name: str, **params):
    cls = REGISTRY.get(kind, name).cls
    return cls(cls.Params(**params))


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def clean_batch(n: int = 3, channels: int = 3, side: int = 32, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    return torch.rand((n, channels, side, side), generator=gen(seed)).to(device)


def smooth_batch(n: int = 2, side: int = 32) -> torch.Tensor:
    """Images of low-frequency waves: what a blur changes little and a restriction keeps."""
    y, x = torch.meshgrid(torch.arange(side) / side, torch.arange(side) / side, indexing="ij")
    waves = [0.5 + 0.4 * torch.sin(2 * math.pi * (x + 0.5 * y + k / 4)) for k in range(n)]
    return torch.stack(waves)[:, None].expand(n, 3, side, side).contiguous()


def same(a: Degraded, b: Degraded) -> bool:
    """Equal input, target and cond (the task's private ``state`` is compared through its effects)."""
    return all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a[:3], b[:3]))


# ----------------------------------------------------------------------------- every task


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("resampler", RESAMPLERS)
@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
def test_shapes_on_fine_and_coarse_meshes(name, params, resampler, device):
    task, r = build("task", name, **params), build("resampler", resampler)
    channels, scale = 3, task.scale()
    batch = task.degrade(clean_batch(device=device), gen(1, device))
    for side in (32, 16, 8):
        assert batch.input.shape == (3, task.input_channels(channels), side // scale, side // scale)
        assert batch.target.shape == (3, channels, side, side)
        assert batch.input.dtype == batch.target.dtype == torch.float32
        assert batch.input.device.type == device
        assert torch.isfinite(batch.input).all() and torch.isfinite(batch.target).all()
        if task.cond_channels():
            assert batch.cond.shape == (3, task.cond_channels())
        else:
            assert batch.cond is None
        losses = task.loss(batch.target.clone(), batch)
        assert losses.shape == (3,) and torch.isfinite(losses).all()
        if side > 8:
            batch = task.restrict(batch, r)


@pytest.mark.parametrize("name,params", CASES, ids=CASE_IDS)
def test_draws_come_from_the_generator_only(name, params):
    task, r = build("task", name, **params), build("resampler", "area")
    clean = clean_batch()

    def twice_restricted(seed: int, global_seed: int) -> list[Degraded]:
        torch.manual_seed(global_seed)  # must change nothing
        fine = task.degrade(clean, gen(seed))
        coarse = task.restrict(fine, r)
        return [fine, coarse, task.restrict(coarse, r)]

    first = twice_restricted(seed=5, global_seed=0)
    assert all(same(a, b) for a, b in zip(first, twice_restricted(seed=5, global_seed=123)))
    other = twice_restricted(seed=6, global_seed=0)
    draws_nothing = name == "superres" and not params.get("noise_sigma")
    assert torch.equal(first[0].input, other[0].input) == draws_nothing


@pytest.mark.parametrize("name", ["denoise", "deblur", "inpaint", "superres"])
def test_registered(name):
    assert name in REGISTRY.names("task")


@pytest.mark.parametrize(
    "name,params",
    [
        ("deblur", {"sigma_range": (2.0, 1.0)}),
        ("deblur", {"length": (-1.0, 3.0)}),
        ("deblur", {"boundary": "mirror"}),
        ("inpaint", {"mixture": {"boxes": 0.0}}),
        ("inpaint", {"mixture": {"circles": 1.0}}),
        ("inpaint", {"box_size": (0.2, 1.5)}),
        ("inpaint", {"box_count": (3, 1)}),
        ("inpaint", {"fill": "random"}),
        ("superres", {"scale": 3}),
        ("superres", {"downsample": "nearest"}),
    ],
)
def test_bad_parameters_are_rejected(name, params):
    with pytest.raises(ValidationError):
        build("task", name, **params)


# ------------------------------------------------------------------------------------ deblur


@pytest.mark.parametrize("kernel", ["gaussian", "line", "walk"])
def test_deblur_kernels_sum_to_one_and_do_not_shift(kernel):
    task = build("task", "deblur", kernel=kernel, sigma_range=(0.0, 2.5), length=(0.0, 9.0))
    draw = task.draw(16, gen(2), torch.zeros(1))
    for level in range(3):
        k = task.kernels(draw, level)
        r = task.radius(level)
        assert k.shape == (16, 2 * r + 1, 2 * r + 1)
        assert (k >= 0).all()
        torch.testing.assert_close(k.sum((1, 2)), torch.ones(16))
        offsets = torch.arange(-r, r + 1, dtype=k.dtype)
        centroid = torch.stack([(k.sum(2) * offsets).sum(1), (k.sum(1) * offsets).sum(1)], 1)
        assert centroid.abs().max() < 1e-4


def test_deblur_motion_kernel_has_the_drawn_length():
    task = build("task", "deblur", kernel="line", length=(8.0, 8.0))
    k = task.kernels(task.draw(4, gen(0), torch.zeros(1)), 0)
    offsets = torch.arange(-task.radius(0), task.radius(0) + 1, dtype=k.dtype)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    spread = (k * (dx**2 + dy**2)).sum((1, 2))
    # A uniform segment of length L has mean squared distance L²/12 from its midpoint; the discrete
    # points and their bilinear splat add less than 1 px².
    assert ((spread > 64 / 12) & (spread < 64 / 12 + 1)).all()


def test_deblur_blur_convolves_with_the_kernel():
    task = build("task", "deblur", kernel="walk", boundary="zero")
    k = task.kernels(task.draw(2, gen(3), torch.zeros(1)), 0)
    r = task.radius(0)
    impulse = torch.zeros(2, 1, 32, 32)
    impulse[:, :, 16, 16] = 1
    response = task.blur(impulse, k)[:, 0, 16 - r : 17 + r, 16 - r : 17 + r]
    torch.testing.assert_close(response, k)


@pytest.mark.parametrize("boundary", ["reflect", "replicate", "circular", "zero"])
@pytest.mark.parametrize("kernel", ["gaussian", "walk"])
def test_deblur_keeps_a_constant_image_constant(kernel, boundary):
    task = build("task", "deblur", kernel=kernel, boundary=boundary, noise_sigma=0.0)
    clean = torch.full((2, 3, 32, 32), 0.7)
    blurred = task.degrade(clean, gen(0)).input
    r = task.radius(0)
    inside = (slice(None), slice(None), slice(r, -r), slice(r, -r))
    torch.testing.assert_close(blurred[inside], clean[inside])
    if boundary == "zero":
        assert blurred[..., 0, 0].max() < 0.7 - 0.1  # the zero extension darkens the corners
    else:
        torch.testing.assert_close(blurred, clean)
    noisy = build("task", "deblur", kernel=kernel, boundary=boundary, noise_sigma=0.05).degrade(clean, gen(0)).input
    assert abs(float((noisy[inside] - 0.7).std()) - 0.05) < 0.005


def test_deblur_kernel_larger_than_the_image_is_a_user_error():
    task = build("task", "deblur", sigma=4.0, boundary="reflect")
    with pytest.raises(UserError, match="does not fit"):
        task.degrade(clean_batch(side=8), gen(0))


@pytest.mark.parametrize("kernel", ["gaussian", "walk"])
def test_deblur_operator_mode_poses_the_same_draw_on_the_coarse_mesh(kernel):
    params = {"kernel": kernel, "sigma_range": (0.5, 2.0), "coarse": "operator"}
    clean, r = clean_batch(), build("resampler", "area")
    silent = build("task", "deblur", noise_sigma=0.0, **params)
    noisy = build("task", "deblur", noise_sigma=0.05, **params)
    draw = silent.draw(3, gen(4), clean)  # degrade draws the kernels first
    fine = silent.degrade(clean, gen(4))
    torch.testing.assert_close(fine.input, silent.blur(clean, silent.kernels(draw, 0)))
    batch, target = fine, clean
    for level in (1, 2):
        batch = silent.restrict(batch, r)
        target = r.restrict(target)
        torch.testing.assert_close(batch.target, target)
        torch.testing.assert_close(batch.input, silent.blur(target, silent.kernels(draw, level)))
    # The same noise draw, restricted and rescaled: the noisy and the silent batch differ by it.
    fine_noise = noisy.degrade(clean, gen(4)).input - fine.input
    coarse_noise = noisy.restrict(noisy.degrade(clean, gen(4)), r).input - silent.restrict(fine, r).input
    from msframe_tasks.denoise import noise_gain

    torch.testing.assert_close(coarse_noise, r.restrict(fine_noise) / noise_gain(r), atol=1e-5, rtol=1e-4)


def test_deblur_operator_and_restricted_agree_on_smooth_images():
    """Blurring then restricting ≈ restricting then blurring with σ/2: the coarse operator's convention."""
    clean, r = smooth_batch(), build("resampler", "area")
    restricted = build("task", "deblur", sigma=2.0, noise_sigma=0.0, boundary="circular", coarse="restricted")
    operator = build("task", "deblur", sigma=2.0, noise_sigma=0.0, boundary="circular", coarse="operator")
    a = restricted.restrict(restricted.degrade(clean, gen(0)), r).input
    b = operator.restrict(operator.degrade(clean, gen(0)), r).input
    blur_effect = (a - r.restrict(clean)).abs().max()
    assert (a - b).abs().max() < 0.05 * blur_effect
    unscaled = operator.blur(r.restrict(clean), operator.kernels(operator.draw(2, gen(0), clean), 0))
    assert (a - unscaled).abs().max() > 0.3 * blur_effect  # keeping σ in coarse pixels is another problem...


def test_deblur_pixels_mode_keeps_the_kernel_in_every_meshs_pixels():
    """...which is the default: every mesh is blurred with the same kernel in its own pixels."""
    clean, r = smooth_batch(), build("resampler", "area")
    task = build("task", "deblur", sigma=2.0, noise_sigma=0.0, boundary="circular")
    assert task.params.coarse == "pixels"
    coarse = task.restrict(task.restrict(task.degrade(clean, gen(0)), r), r)
    target = r.restrict(r.restrict(clean))
    torch.testing.assert_close(coarse.target, target)
    expected = task.blur(target, task.kernels(task.draw(2, gen(0), clean), 0))
    torch.testing.assert_close(coarse.input, expected, atol=1e-5, rtol=1e-4)


def test_deblur_operator_mode_needs_its_own_batch():
    task, r = build("task", "deblur", coarse="operator"), build("resampler", "area")
    rebuilt = task.degrade(clean_batch(), gen(0))._replace(state=None)
    with pytest.raises(RuntimeError, match="rebuilt the batch"):
        task.restrict(rebuilt, r)


# ----------------------------------------------------------------------------------- inpaint


@pytest.mark.parametrize("kind", ["boxes", "strokes", "dropout"])
def test_inpaint_mask_masks(kind):
    task = build("task", "inpaint", mixture={kind: 1.0}, fill=0.25)
    clean = clean_batch(n=8)
    batch = task.degrade(clean, gen(7))
    image, mask = batch.input[:, :3], batch.input[:, 3:]
    assert task.input_channels(3) == 4 and mask.shape == (8, 1, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    hole_fraction = 1 - mask.mean((1, 2, 3))
    assert (hole_fraction > 0).all() and (hole_fraction < 0.9).all()
    known = mask.expand_as(image).bool()
    assert torch.equal(image[known], clean[known])
    assert (image[~known] == 0.25).all()
    assert torch.equal(batch.target, clean)


def test_inpaint_mixture_gives_each_sample_one_kind():
    task = build("task", "inpaint", mixture={"boxes": 1.0, "dropout": 1.0})
    masks = task.masks(64, 32, 32, gen(0), torch.zeros(1))
    # Dropout holes are scattered pixels, boxes are solid: a hole whose right neighbour is known
    # is rare inside boxes and common with dropout.
    hole = masks[:, 0] == 0
    edges = (hole[..., :-1] & ~hole[..., 1:]).flatten(1).sum(1) / hole.flatten(1).sum(1).clamp_min(1)
    assert (edges > 0.2).any() and (edges < 0.2).any()


def test_log_mse_is_minus_the_psnr_that_evaluation_reports():
    from msframe import metrics

    for name in ("denoise", "deblur", "inpaint", "superres"):
        task = build("task", name)
        assert task.params.loss == "log_mse"
        batch = task.degrade(clean_batch(n=4, side=32), gen(3))
        restored = (batch.target + 0.05 * torch.randn(batch.target.shape, generator=gen(4))).clamp(0, 1)
        torch.testing.assert_close(task.loss(restored, batch), -metrics.psnr(restored, batch.target), rtol=1e-4, atol=1e-4)


def test_inpaint_hole_loss_ignores_known_pixels():
    task = build("task", "inpaint", loss_on="hole", mixture={"boxes": 1.0}, loss="mse")
    batch = task.degrade(clean_batch(n=4), gen(2))
    hole = 1 - batch.input[:, 3:]
    wrong_where_known = batch.target + 0.5 * (1 - hole)
    torch.testing.assert_close(task.loss(wrong_where_known, batch), torch.zeros(4))
    wrong_in_holes = batch.target + 0.5 * hole
    torch.testing.assert_close(task.loss(wrong_in_holes, batch), torch.full((4,), 0.25))
    no_holes = Degraded(torch.cat([batch.target, torch.ones_like(hole)], 1), batch.target)
    torch.testing.assert_close(task.loss(wrong_in_holes, no_holes), torch.zeros(4))


@pytest.mark.parametrize("rule", ["majority", "all"])
@pytest.mark.parametrize("resampler", RESAMPLERS)
def test_inpaint_coarse_mask_is_the_rule_applied_to_the_restricted_fine_mask(rule, resampler):
    task, r = build("task", "inpaint", coarse_known=rule, fill=0.25), build("resampler", resampler)
    clean = clean_batch(n=6)
    fine = task.degrade(clean, gen(3))
    coarse = task.restrict(fine, r)
    coarser = task.restrict(coarse, r)
    for a, b in ((fine, coarse), (coarse, coarser)):
        torch.testing.assert_close(b.input[:, 3:], task.known(r.restrict(a.input[:, 3:])))
        holes = b.input[:, 3:].expand(-1, 3, -1, -1) == 0
        assert (b.input[:, :3][holes] == 0.25).all()  # the fill is re-applied on the coarse mesh
    torch.testing.assert_close(coarse.target, r.restrict(clean))


@pytest.mark.parametrize("resampler", RESAMPLERS)
def test_inpaint_coarse_masks_keep_the_hole_density(resampler):
    r = build("resampler", resampler)
    for kind, rule in (("boxes", "majority"), ("strokes", "majority"), ("dropout", "decimate"), ("boxes", "decimate")):
        task = build("task", "inpaint", mixture={kind: 1.0}, coarse_known=rule)
        fine = task.degrade(clean_batch(n=16, side=64), gen(5))
        coarse = task.restrict(task.restrict(fine, r), r)
        if rule == "decimate":
            torch.testing.assert_close(coarse.input[:, 3:], fine.input[:, 3:, ::4, ::4])  # one draw, subsampled
        density = [float(1 - b.input[:, 3:].mean()) for b in (fine, coarse)]
        # majority biases border pixels towards holes (measured +0.05 over two meshes for boxes at 64 px)
        assert abs(density[1] - density[0]) < (0.02 if rule == "decimate" else 0.07), (kind, rule, density)


def test_inpaint_all_rule_with_area_keeps_only_fully_known_pixels_and_their_values():
    task, r = build("task", "inpaint", coarse_known="all"), build("resampler", "area")
    clean = clean_batch(n=6)
    fine = task.degrade(clean, gen(3))
    coarse = task.restrict(fine, r)
    blocks = fine.input[:, 3:].unfold(2, 2, 2).unfold(3, 2, 2).amin((-1, -2))
    torch.testing.assert_close(coarse.input[:, 3:], blocks)
    known = coarse.input[:, 3:].expand(-1, 3, -1, -1).bool()
    torch.testing.assert_close(coarse.input[:, :3][known], coarse.target[known])


def test_inpaint_noise_fill_reuses_the_draw_on_coarse_meshes():
    task, r = build("task", "inpaint", fill="noise", mixture={"boxes": 1.0}), build("resampler", "area")
    fine = task.degrade(clean_batch(n=4), gen(5))
    hole = fine.input[:, 3:].expand(-1, 3, -1, -1) == 0
    assert fine.input[:, :3][hole].std() > 0.2  # uniform noise, not a constant
    coarse = task.restrict(fine, r)
    coarse_hole = coarse.input[:, 3:].expand(-1, 3, -1, -1) == 0
    torch.testing.assert_close(coarse.input[:, :3][coarse_hole], fine.state[..., ::2, ::2][coarse_hole])
    with pytest.raises(RuntimeError, match="rebuilt the batch"):
        task.restrict(fine._replace(state=None), r)


# ---------------------------------------------------------------------------------- superres


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("downsample", ["bicubic", "area"])
def test_superres_sizes_on_every_mesh(scale, downsample):
    task, r = build("task", "superres", scale=scale, downsample=downsample), build("resampler", "area")
    assert task.scale() == scale
    batch = task.degrade(clean_batch(), gen(0))
    for side in (32, 16, 8):
        assert batch.target.shape[-1] == side and batch.input.shape[-1] == side // scale
        if side > 8:
            batch = task.restrict(batch, r)


def test_superres_area_input_is_the_block_mean_and_commutes_with_area_restriction():
    task, r = build("task", "superres", scale=4, downsample="area"), build("resampler", "area")
    clean = clean_batch()
    fine = task.degrade(clean, gen(0))
    torch.testing.assert_close(fine.input, torch.nn.functional.avg_pool2d(clean, 4))
    coarse = task.restrict(fine, r)
    torch.testing.assert_close(coarse.input, task.degrade(r.restrict(clean), gen(0)).input)


def test_superres_bicubic_input_is_antialiased():
    """A checkerboard at the finest mesh's Nyquist frequency must not alias into the low-resolution input."""
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((x + y) % 2).float().expand(1, 3, 32, 32)
    low = build("task", "superres", scale=2).degrade(checker, gen(0)).input
    assert (low[..., 4:-4, 4:-4] - 0.5).abs().max() < 0.05


# ---------------------------------------------------------------------------- command line

# Each task's CPU recipe (recipes/paper/cpu/) shrunk to 32 px, two meshes and a small network: a few
# seconds of Full-Multiscale training. The margin is what that run must beat the task's naive baseline
# by on the held-out test images (measured with seeds 0 and 1: denoise +9.3/+9.5 dB, inpaint
# +8.1/+7.6, deblur +0.24/+0.06, superres -0.00/-0.08 at 3200 WU): learning, not finiteness. Super-
# resolution only has to stay at bicubic quality here (the output contract starts it there); the
# matrix report shows what longer training gains.
E2E = {
    "denoise": (["schedule.budget=800.0"], 5.0),
    "deblur": (["schedule.budget=800.0"], 0.0),
    "inpaint": (["schedule.budget=800.0"], 4.0),
    "superres": (["schedule.budget=3200.0", 'backbone={type="espcn", features=[16, 16], activation="silu"}'], -0.15),
}
SMALL_CNN = 'backbone={type="cnn", channels=16, depth=4}'


@pytest.fixture(scope="module", autouse=True)
def cli_runs(request, tmp_path_factory):
    """One tiny quickstart run per selected CLI test, started as the module starts.

    Each run spends most of its time importing; started early, they overlap the unit tests.
    """
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_cli_trains_every_task"
    }
    if "espcn" not in REGISTRY.names("backbone"):
        selected.discard("superres")
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    runs = {}
    for name in sorted(selected):
        out = tmp_path_factory.mktemp(f"cli-{name}")
        sets = ["schedule.resolution=32", "schedule.levels=2", "schedule.split=[2, 1]", "schedule.batch=[16, 8]",
                "eval.tiles_per_image=2", "eval.every=0.0", SMALL_CNN, *E2E[name][0]]
        cmd = [sys.executable, str(ROOT / "tools" / "run.py"), str(ROOT / "recipes" / "paper" / "cpu" / f"{name}.toml"),
               "--out", str(out)]
        for s in sets:
            cmd += ["--set", s]
        runs[name] = (out, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    yield runs
    for _, proc in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", list(E2E))
def test_cli_trains_every_task(name, cli_runs):
    if name not in cli_runs:
        pytest.skip("backbone 'espcn' is not registered")
    out, proc = cli_runs[name]
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary["test"]
    assert test["psnr"] > test["input_psnr"] + E2E[name][1], test
