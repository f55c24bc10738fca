"""A trained run put to use: its network loaded from a run folder (:func:`load_run`), evaluated on a split
or on any folder of clean images (:func:`evaluate_run`), and applied to image files (:func:`restore_files`).

What ``run.py evaluate`` and ``run.py restore`` do without their parsing. ``restore`` never writes over
a file: results keep their path below a given input folder, a taken name gets ``-2``, ``-3``…, and
``--out`` may not be an input folder or lie inside one.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from msframe import checkpoint
from msframe import recipe as recipe_mod
from msframe.assembly import Blueprint, blueprint, network, resolve_device
from msframe.components import Dataset, Degraded, Task
from msframe.errors import UserError
from msframe.inference import Evaluator, describe, evaluate_whole, restored, to_uint8
from msframe.recipe import Recipe
from msframe.rundir import RunFolder
from msframe.wholeimage import held_out, pad_to, padded_side, write_rows

#: file suffixes that ``run.py evaluate --images`` and ``run.py restore`` read
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def folder_images(folder: Path, channels: int) -> tuple[list[Tensor], list[str]]:
    """The clean images of ``folder`` (recursively, hidden files left out, sorted by relative path) as
    [C, H, W] tensors in [0, 1], and their relative paths; errors name ``--images``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder", key="--images")
    files = sorted((f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                    and not any(p.startswith(".") for p in f.relative_to(folder).parts)),
                   key=lambda f: f.relative_to(folder).as_posix())
    if not files:
        raise UserError(f"no image files in {folder} (allowed: {', '.join(IMAGE_SUFFIXES)})", key="--images")
    images = []
    for f in files:
        try:
            images.append(read_image(f, channels).pixels[0])
        except UserError as exc:
            raise UserError(str(exc), key="--images") from None
    return images, [f.relative_to(folder).as_posix() for f in files]


def evaluate_images(trained: TrainedRun, folder: Path, out: Path, meta: dict) -> dict:
    """``run.py evaluate --images FOLDER``: the run's network on every clean image of ``folder`` under the
    whole-image protocol (each degraded with ``eval.seed``, keyed by its index and relative path, so the
    same files give the same degradation wherever the folder lies),
    whatever the run's ``eval.protocol``. Writes ``out/evaluation.json`` (``meta`` and the result),
    ``out/images.jsonl`` and ``out/images.csv`` (one row per image); returns the result."""
    images, names = folder_images(folder, trained.channels)
    degraded = held_out(trained.recipe, trained.task, images, names, "images")
    result, rows = evaluate_whole(trained.model, trained.task, degraded, trained.blueprint.capabilities,
                                  trained.device, trained.recipe.eval, trained.channels)
    out = Path(out)
    write_rows(rows, out / "images.jsonl", out / "images.csv")
    checkpoint.write_json(out / "evaluation.json", {**meta, "images_folder": str(folder), **result})
    return result




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
    padded = pad_to(image, padded_side(h, caps), padded_side(w, caps)).to(trained.device)
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


def evaluate_run(folder: RunFolder, loaded, weights: str, device: str | None, overrides: list[str], *,
                 data: str | None = None, split: str = "test", images: str | None = None, out_arg: str | None = None) -> int:
    """``run.py evaluate``: the run's ``weights`` tested on ``split`` of its own dataset (or of ``data``, a
    TOML inline table), or on the clean images of the folder ``images``; writes ``evaluation.json``, the
    per-image rows and a samples grid into ``out_arg`` (default: a folder of the run's evaluations) and
    prints the result. Returns the exit code."""
    overrides = list(overrides)
    if data:
        table = data.strip()
        overrides.append(f"data={table if table.startswith('{') else '{' + table + '}'}")
    data_source = "--data" if data else str(folder.recipe)
    trained = load_run(folder.path, loaded, weights, overrides, device, data_source)
    recipe = trained.recipe
    if images:  # any folder of clean images: no split of a dataset is read
        out = Path(out_arg) if out_arg else folder.evaluation(Path(images).resolve().name, "images", weights)
        meta = {"run": str(folder.path), "weights": str(trained.weights)}
        result = evaluate_images(trained, Path(images), out, meta)
        print(f"{images}, {weights} weights: {describe(result)}\nwrote {out / 'evaluation.json'}, "
              f"{out / 'images.jsonl'} and {out / 'images.csv'}")
        return 0
    try:
        images_of = trained.dataset.split(split)
    except UserError as exc:
        raise exc.located(data_source) from None
    resolution = recipe.schedule.resolution
    if images_of.usable(resolution) < 1:
        raise UserError(f"the {split} split has no image of at least {resolution} px (the run's "
                        f"schedule.resolution)", key="--data" if data else "--split")
    evaluator = Evaluator(trained.model, trained.task, {split: images_of}, recipe, resolution, trained.device,
                          trained.blueprint.capabilities)
    result = evaluator.evaluate(split)
    if out_arg:
        out = Path(out_arg)
    else:  # into the run folder: as for --resume, a link there could point the write anywhere
        folder.refuse_links(key="RUN_FOLDER")
        out = folder.evaluation(recipe.data.name, split, weights)
    evaluator.save_samples(split, out / "samples.png")
    if split in evaluator.rows:
        write_rows(evaluator.rows[split], out / "images.jsonl", out / "images.csv")
    checkpoint.write_json(out / "evaluation.json", {"run": str(folder.path), "weights": str(trained.weights),
                                                    "split": split, "data": recipe.data.to_dict(), **result})
    print(f"{split} split of {recipe.data.name}, {weights} weights: {describe(result)}")
    print(f"wrote {out / 'evaluation.json'} and {out / 'samples.png'}")
    return 0




def _image_files(paths: list[str]) -> list[tuple[Path, Path]]:
    """The image files named by ``IMAGE`` arguments, each with the path its result keeps: a file given
    by name keeps its name, a file found in a given folder (searched recursively) its path below it."""
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files += [(f, f.relative_to(path)) for f in sorted(path.rglob("*"))
                      if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        elif path.exists():
            files.append((path, Path(path.name)))
        else:
            raise UserError(f"{path} does not exist", key="IMAGE")
    if not files:
        raise UserError(f"no image files in {', '.join(paths)} (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})", key="IMAGE")
    return files


def _restore_out(out: Path, inputs: list[str]) -> Path:
    """``--out`` checked: a folder (made if missing) that is neither an input folder nor inside one, so
    no result is read back as an input (a result beside an input file given by name gets a new name,
    :func:`_free_target`)."""
    where = out.resolve()
    for folder in (Path(text).resolve() for text in inputs if Path(text).is_dir()):
        if where == folder or folder in where.parents:
            raise UserError(f"{out} is {'an input folder' if where == folder else 'inside the input folder ' + str(folder)};"
                            " results would mix with the originals (choose a folder outside the inputs)", key="--out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder", key="--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot make {out}: {exc.strerror or exc}", key="--out") from None
    return out


def _free_target(out: Path, relative: Path, taken: set[Path]) -> Path:
    """``OUT/relative`` as a PNG, or with ``-2``, ``-3``… before the suffix when an earlier result of this
    command or an existing file has that name: no file is ever written over."""
    base = out / relative.with_suffix(".png")
    target, n = base, 1
    while target in taken or os.path.lexists(target):
        n += 1
        target = base.with_name(f"{base.stem}-{n}{base.suffix}")
    taken.add(target)
    return target


def restore_files(folder: RunFolder, loaded, weights: str, device: str | None, images: list[str], out: Path,
                  max_pixels: int = MAX_PIXELS) -> int:
    """``run.py restore``: the run's network applied to image files (or folders of them), one PNG each in
    ``out``, never over an existing file (:func:`_free_target`) and never into an input folder; prints
    one line per image and a summary. Returns the exit code."""
    files = _image_files(images)
    out = _restore_out(out, images)
    trained = load_run(folder.path, loaded, weights, device=device)
    task = trained.task
    if task.input_channels(trained.channels) != trained.channels or task.cond_channels():
        raise UserError(f"task '{trained.recipe.task.name}' gives the network more than the degraded image (a mask "
                        f"or a noise level), which image files do not hold; restore works for tasks whose input is "
                        f"the image alone", key="RUN_FOLDER")
    taken: set[Path] = set()
    renamed = 0
    for file, relative in files:
        image = read_image(file, trained.channels, max_pixels)
        target = _free_target(out, relative, taken)
        renamed += target != out / relative.with_suffix(".png")
        try:
            result = restore_image(trained, image.pixels)
        except (MemoryError, _torch_oom()) as exc:
            raise UserError(f"not enough memory to restore {file} ({type(exc).__name__}); lower --max-pixels or "
                            f"use another --device", key="IMAGE") from None
        write_image(result, target, image.grey, image.bits)
        print(f"{file} -> {target}")
    note = f"; {renamed} renamed with -N because the name was taken (see the lines above)" if renamed else ""
    print(f"restored {len(files)} images with {trained.weights}{note}")
    return 0



def _torch_oom() -> type[BaseException]:
    """torch's out-of-memory error (on any device); imported late, as the CLI starts without torch."""
    import torch

    return torch.OutOfMemoryError
