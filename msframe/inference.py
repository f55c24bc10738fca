"""Using a trained network: evaluation tiles, metrics, sample grids, and loading a run's weights.

:func:`restored` is the one place where the network's output becomes a restored image; the trainer,
``run.py evaluate``, ``run.py restore`` and ``tools/compare.py`` all go through it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from msframe import checkpoint, metrics, rng
from msframe import recipe as recipe_mod
from msframe.assembly import Blueprint, blueprint, network, resolve_device
from msframe.components import Dataset, Degraded, ImageSplit, Task
from msframe.errors import UserError
from msframe.recipe import Recipe
from msframe.rundir import RunFolder


def restored(model: nn.Module, task: Task, batch: Degraded) -> Tensor:
    """The network's restoration of ``batch`` (not clamped): the task's baseline plus the network's
    correction (the output contract, ``Task.restored``). The network gets copies of the input and the
    conditioning, so one that changes its input in place can corrupt neither the baseline it is added
    to nor a cached evaluation batch."""
    cond = None if batch.cond is None else batch.cond.clone()
    return task.restored(model(batch.input.clone(), cond), batch)


def eval_batch(recipe, task: Task, split: ImageSplit, split_name: str, resolution: int) -> Degraded:
    """A split's fixed evaluation tiles, degraded once with the recipe's evaluation seed (CPU generator).

    For a super-resolution task and a dataset with stored pairs, the stored low-resolution tiles.
    The same recipe, split and resolution always give the same tiles and the same degradation.
    """
    ev, scale = recipe.eval, task.scale()
    pairs = split.pairs(resolution, scale, ev.tiles_per_image, ev.max_images) if scale > 1 else None
    if pairs is not None:  # a benchmark's own low-resolution inputs
        return Degraded(pairs[0], pairs[1])
    clean = split.tiles(resolution, ev.tiles_per_image, ev.max_images)
    return task.degrade(clean, rng.generator(ev.seed, "eval", split_name))


def _on(batch: Degraded, device, rows: slice) -> Degraded:
    return Degraded(*(None if t is None else t[rows].to(device) for t in batch[:3]))


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, batch: Degraded, device, chunk: int = 16) -> dict:
    """Mean per-image PSNR/SSIM of restored vs clean, and of the task's naive baseline vs clean.

    The baseline is the degraded input itself unless the task says otherwise (``Task.baseline``).
    """
    model.eval()
    out = {"psnr": [], "ssim": [], "input_psnr": [], "input_ssim": []}
    for i in range(0, batch.input.shape[0], chunk):
        part = _on(batch, device, slice(i, i + chunk))
        image = restored(model, task, part).clamp(0, 1)
        out["psnr"].append(metrics.psnr(image, part.target))
        out["ssim"].append(metrics.ssim(image, part.target))
        naive = task.baseline(part)
        if naive is not None:
            naive = naive.clamp(0, 1)
            out["input_psnr"].append(metrics.psnr(naive, part.target))
            out["input_ssim"].append(metrics.ssim(naive, part.target))
    result = {k: float(torch.cat(v).mean()) for k, v in out.items() if v}
    result["images"] = int(batch.input.shape[0])
    return result


@torch.no_grad()
def restore_tiles(model: nn.Module, task: Task, batch: Degraded, device, count: int) -> Tensor:
    """The first ``count`` tiles restored, clamped to [0, 1], on the CPU."""
    model.eval()
    return restored(model, task, _on(batch, device, slice(0, count))).clamp(0, 1).cpu()


def first(batch: Degraded, count: int) -> Degraded:
    """The first ``count`` samples of a degraded batch."""
    return batch._replace(input=batch.input[:count], target=batch.target[:count],
                          cond=None if batch.cond is None else batch.cond[:count])


def save_samples(model: nn.Module, task: Task, batch: Degraded, device, path: Path, count: int = 4) -> Path:
    """``path``: a PNG whose rows are (task baseline | restored | clean) for the first ``count`` tiles."""
    shown = first(batch, count)
    naive = task.baseline(shown)
    save_grid([None if naive is None else naive.clamp(0, 1), restore_tiles(model, task, shown, device, count),
               shown.target.clamp(0, 1)], path)
    return Path(path)


def to_uint8(image: Tensor):
    """A [C, H, W] tensor in [0, 1] as an H x W (x 3) uint8 array for Pillow or matplotlib."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def save_grid(columns: list[Tensor | None], path: Path) -> None:
    """A PNG whose row i shows tile i of every given column ([N, C, H, W] each, side by side)."""
    from PIL import Image

    columns = [c.cpu() for c in columns if c is not None]
    rows = [torch.cat([c[i] for c in columns], dim=2) for i in range(columns[0].shape[0])]
    png = io.BytesIO()
    Image.fromarray(to_uint8(torch.cat(rows, dim=1))).save(png, format="PNG")
    checkpoint.write_bytes(Path(path), png.getvalue())  # atomic: a kill leaves the previous image


class Evaluator:
    """Evaluation of one network on a run's splits, each split's tiles made once (:func:`eval_batch`)
    and kept: every validation of a run sees the same tiles with the same degradation."""

    def __init__(self, model: nn.Module, task: Task, splits: dict[str, ImageSplit], recipe, resolution: int, device):
        self.model, self.task, self.splits, self.recipe = model, task, splits, recipe
        self.resolution, self.device = resolution, device
        self._tiles: dict[str, Degraded] = {}

    def tiles(self, split: str) -> Degraded:
        """The split's fixed evaluation tiles, made on first use."""
        if split not in self._tiles:
            self._tiles[split] = eval_batch(self.recipe, self.task, self.splits[split], split, self.resolution)
        return self._tiles[split]

    def evaluate(self, split: str, chunk: int = 16) -> dict:
        """Mean per-image PSNR/SSIM of restored vs clean, and of the task's naive baseline vs clean."""
        return evaluate(self.model, self.task, self.tiles(split), self.device, chunk)

    def save_samples(self, split: str, path: Path, count: int = 4) -> Path:
        """``path``: rows of (task baseline | restored | clean) for the split's first tiles."""
        return save_samples(self.model, self.task, self.tiles(split), self.device, path, count)


@dataclass
class TrainedRun:
    """A run folder's network with its trained weights, ready to restore images."""

    dir: Path
    blueprint: Blueprint  # the run's components, built once
    dataset: Dataset  # the run's dataset (or the one its overrides name)
    channels: int  # image channels of the dataset
    model: nn.Module
    device: torch.device
    weights: Path

    @property
    def recipe(self) -> Recipe:
        return self.blueprint.recipe

    @property
    def task(self) -> Task:
        return self.blueprint.task


def load_run(run_dir: Path, loaded, weights: str = "best", overrides: list[str] = (), device: str | None = None,
             data_source: str | None = None) -> TrainedRun:
    """The network of ``run_dir`` (its resolved recipe, with ``overrides``) holding ``weights``' state.

    Builds the run's components and its dataset once each; a dataset error names ``data_source`` (say
    ``--data`` when an override replaced the dataset), a recipe error the resolved recipe.
    """
    folder = RunFolder(run_dir)
    if not folder.started:
        raise UserError(f"{run_dir} is not a run folder ({folder.recipe.name} is missing)", key="RUN_FOLDER")
    recipe = recipe_mod.load(folder.recipe, loaded.registry, list(overrides))
    dev = resolve_device(device or recipe.run.device)
    try:
        bp = blueprint(recipe)
    except UserError as exc:
        raise exc.located(str(folder.recipe)) from None
    try:
        dataset = recipe.data.build()
        channels = dataset.channels()
    except UserError as exc:
        raise exc.located(data_source or str(folder.recipe)) from None
    model = network(bp, channels, dev)
    path = folder.existing_weights(weights)
    checkpoint.load_model(path, model, dev)
    model.eval()
    return TrainedRun(folder.path, bp, dataset, channels, model, dev, path)


#: The largest image ``run.py restore`` reads unless ``--max-pixels`` says otherwise.
MAX_PIXELS = 200_000_000

_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # Pillow's modes of 16-bit grayscale files


@dataclass(frozen=True)
class ImageFile:
    """An image file read for the network: ``pixels`` [1, C, H, W] in [0, 1] with the network's channels,
    and how the file stored them, so the restored image is written back alike."""

    pixels: Tensor
    grey: bool  # the file holds one channel: the result is written as one channel too
    bits: int  # 8, or 16 for 16-bit grayscale (read and written without losing its depth)


def read_image(path: Path, channels: int, max_pixels: int = MAX_PIXELS) -> ImageFile:
    """An image file for a network of ``channels`` channels: grey files are replicated to 3 channels for
    an RGB network, colour files reduced to luminance for a grey one; 16-bit grayscale keeps its depth.

    A file that is not a regular file (a pipe, a device) is refused before it is opened, one over
    ``max_pixels`` pixels after reading only its header; either, or a file that is not an image, is a
    UserError naming the file.
    """
    import warnings

    import numpy as np
    from PIL import Image

    if not Path(path).is_file():
        raise UserError(f"{path} is not a regular file (a pipe, a device or a folder); refused", key="IMAGE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise UserError(f"{path} has {im.width}x{im.height} pixels, over the limit of {max_pixels} "
                                    f"(raise it with --max-pixels)", key="IMAGE")
                bits = 16 if im.mode in _SIXTEEN_BIT else 8
                grey = bits == 16 or (im.mode in {"L", "LA", "1", "P"} and _is_grey(im))
                if bits == 16:
                    array = np.asarray(im, dtype=np.float64) / 65535
                else:
                    array = np.asarray(im.convert("L" if channels == 1 or grey else "RGB"), dtype=np.float64) / 255
    except UserError:
        raise
    except Exception as exc:  # Pillow signals malformed files (and decompression bombs) with many types
        raise UserError(f"cannot read {path} as an image ({type(exc).__name__}: {str(exc)[:160]})", key="IMAGE") from None
    x = torch.from_numpy(array).float()
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    if x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    return ImageFile(x[None].contiguous(), grey or channels == 1, bits if x.shape[0] == 1 or grey else 8)


def _is_grey(im) -> bool:
    """Whether a palette or bilevel image holds only grey values (a grey photo saved with a palette)."""
    if im.mode != "P":
        return True
    palette = im.convert("RGB").getcolors(1 << 16)
    return palette is not None and all(r == g == b for _, (r, g, b) in palette)


@torch.no_grad()
def restore_image(trained: TrainedRun, image: Tensor) -> Tensor:
    """A whole degraded image ([1, C, H, W]) restored by the run's network: [C, H·scale, W·scale] in [0, 1].

    The image is padded to the backbone's size rules (replicated borders) and the padding cut off the
    result again. No clean image exists: the target only tells the task the output's shape.
    """
    caps, scale = trained.blueprint.capabilities, trained.task.scale()
    h, w = image.shape[-2:]
    side = lambda n: max(caps.min_size, -(-n // caps.multiple) * caps.multiple)
    padded = torch.nn.functional.pad(image, (0, side(w) - w, 0, side(h) - h), mode="replicate").to(trained.device)
    shape = (1, trained.channels, padded.shape[-2] * scale, padded.shape[-1] * scale)
    y = restored(trained.model, trained.task, Degraded(padded, torch.zeros(shape, device=trained.device)))
    return y[..., : h * scale, : w * scale].clamp(0, 1)[0]


def write_image(image: Tensor, path: Path, grey: bool = False, bits: int = 8) -> None:
    """``image`` ([C, H, W] in [0, 1]) as a PNG written atomically: one channel (the channels' mean)
    when ``grey``, 16 bits per sample when ``bits`` is 16 (grey only)."""
    from PIL import Image

    if grey and image.shape[0] > 1:
        image = image.mean(0, keepdim=True)
    if bits == 16:
        array = (image[0].clamp(0, 1) * 65535).round().to(torch.int32).cpu().numpy().astype("uint16")
        picture = Image.fromarray(array)
    else:
        picture = Image.fromarray(to_uint8(image))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    checkpoint.write_bytes(Path(path), png.getvalue())
