"""Shared machinery of the built-in datasets.

Decoding with skip-and-count, seeded splits, antialiased resizing, the policy for images smaller than
the crop, and the report that goes into the run summary.

Every decoded image is kept in memory as a uint8 ``[C, H, W]`` tensor (3 bytes per RGB pixel), so
that random crops are cheap, reproducible and identical in DataLoader workers. A folder of 800
photographs of 2040x1400 px holds about 7 GB; CIFAR-10 resized to 128 px about 3 GB. Choosing such a
dataset is choosing that memory. Nothing here downloads anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field, field_validator
from torch import Tensor

from msframe.components import Dataset, ImageSplit, Params
from msframe.errors import UserError
from msframe.images import InMemorySplit, to_chw_uint8

SmallPolicy = Literal["skip", "upscale", "reflect_pad"]

# Pillow opens 16-bit grayscale PNG/TIFF in these modes; its own conversion to 8 bits clips
# values above 255 instead of scaling them, so they are scaled here.
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def shown(path: Path) -> str:
    """``path`` as the user wrote it, with the absolute form added when it is relative."""
    return str(path) if path.is_absolute() else f"{path} (= {path.resolve()})"


# ---------------------------------------------------------------------------------- decoding


class Skipped:
    """Files that could not be decoded: how many, and the first few of their paths."""

    EXAMPLES = 5

    def __init__(self):
        self.count = 0
        self.examples: list[str] = []

    def add(self, path: Path) -> None:
        self.count += 1
        if len(self.examples) < self.EXAMPLES:
            self.examples.append(str(path))


def read_image(path: Path, channels: int) -> Tensor | None:
    """The first frame of an image file as uint8 ``[channels, H, W]``, or None if Pillow cannot
    decode the whole file (unreadable, truncated, not an image, or over Pillow's pixel limit).

    16-bit grayscale is scaled to 8 bits (v / 257); colour is reduced to luminance for 1 channel,
    gray replicated for 3, alpha dropped.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decode everything now, so that a truncated file fails here and not in a crop
            if im.mode in _SIXTEEN_BIT:
                a = np.asarray(im, dtype=np.float64) / 65535
            else:
                a = np.array(im.convert("L" if channels == 1 else "RGB"))  # writable: tensors share it
    except Exception:  # Pillow's decoders signal a malformed file with many exception types
        return None
    return to_chw_uint8(a, channels)


@dataclass
class Decoded:
    """What :func:`decode_files` could read."""

    images: list[Tensor]  # after ``prepare``
    paths: list[Path]  # the file of each image
    native_side: int  # the smallest short side before ``prepare`` (0 when nothing was read)


def decode_files(paths: Sequence[Path], channels: int, skipped: Skipped,
                 prepare: Callable[[Tensor], Tensor] | None = None) -> Decoded:
    """Decode ``paths`` in a thread pool (Pillow releases the GIL), keeping their order.

    Unreadable files are added to ``skipped`` and left out; ``prepare`` (e.g. a resize) is applied
    to each image right after decoding, so only prepared images are ever held together.
    """

    def one(path: Path) -> tuple[Tensor, int] | None:
        image = read_image(path, channels)
        if image is None:
            return None
        return (image if prepare is None else prepare(image)), min(image.shape[1:])

    images, kept, sides = [], [], []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for path, result in zip(paths, pool.map(one, paths)):
            if result is None:
                skipped.add(path)
                continue
            images.append(result[0])
            kept.append(path)
            sides.append(result[1])
    return Decoded(images, kept, min(sides, default=0))


def image_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Files under ``folder`` (recursively, through symbolic links, each real folder once) whose
    extension is in ``extensions`` (lower case, no dot), sorted by relative path.

    Names starting with "." are ignored: they are hidden files such as macOS "._name.jpg" companions.
    """
    wanted = set(extensions)
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree would otherwise be walked forever
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames
                  if not f.startswith(".") and "." in f and f.rsplit(".", 1)[1].lower() in wanted]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# ---------------------------------------------------------------------------- splits, resizing


def seeded_split(n: int, fractions: Sequence[float], rng: np.random.Generator) -> list[list[int]]:
    """A random partition of ``range(n)`` drawn with ``rng.permutation(n)``.

    Part i > 0 gets ``max(1, round(n * fractions[i]))`` indices, part 0 the rest; parts may come out
    empty when n is too small (callers check). Indices are sorted within each part. The same n,
    fractions and generator state give the same parts.
    """
    order = rng.permutation(n)
    cuts = np.cumsum([0, *(max(1, round(n * f)) for f in fractions[1:])])
    rest = sorted(order[min(cuts[-1], n):].tolist())
    return [rest, *(sorted(order[a:b].tolist()) for a, b in zip(cuts[:-1], cuts[1:]))]


def holdout(n: int, fraction: float, seed: int, what: str) -> tuple[list[int], list[int]]:
    """(train, val) indices of ``n`` items: val is a seeded ``fraction`` (at least one item)."""
    train, val = seeded_split(n, [1 - fraction, fraction], np.random.default_rng(seed))
    if not train or not val:
        raise UserError(f"{what} holds {n} image(s): too few to hold out val_fraction = {fraction} and keep "
                        "images for training", key="data.root")
    return train, val


def _short_side_to(shape: Sequence[int], side: int) -> tuple[int, int]:
    h, w = shape
    s = side / min(h, w)
    return (side, max(1, round(w * s))) if h <= w else (max(1, round(h * s)), side)


def resized(images: Tensor, steps: Sequence[int], chunk: int = 256) -> Tensor:
    """uint8 ``[N, C, H, W]`` with the short side resized to each of ``steps`` in turn.

    Each step is an antialiased bicubic resize of the uint8 images (the filter of PIL, rounded
    after each pass as a stored image would be) that keeps the aspect ratio, the long side rounded;
    ``chunk`` images at a time bound the working memory.
    """
    if not steps or not len(images):
        return images
    out = None
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk]
        for side in steps:
            x = F.interpolate(x, size=_short_side_to(x.shape[-2:], side), mode="bicubic", antialias=True)
        if out is None:
            out = torch.empty((len(images), *x.shape[1:]), dtype=torch.uint8)
        out[i : i + len(x)] = x
    return out


def upsampling_warning(dataset: str, native: int, steps: Sequence[int]) -> str | None:
    """The warning of docs/method.md trap 7 when ``steps`` end above the smallest side the images ever had."""
    if not steps:
        return None
    source = min([native, *steps[:-1]])
    if steps[-1] <= source:
        return None
    return (f"{dataset}: images of {source} px are resized to {steps[-1]} px, so the finest mesh is an "
            "upsampled copy of smaller images and adds no information; this flatters multiscale training "
            "(prefer real high-resolution content when claiming savings)")


def as_channels(batch: np.ndarray, channels: int) -> Tensor:
    """uint8 RGB ``[N, 3, H, W]`` -> uint8 tensor ``[N, channels, H, W]`` (luminance as in to_chw_uint8)."""
    if channels == 3:
        return torch.from_numpy(np.ascontiguousarray(batch))
    n, _, h, w = batch.shape
    # all images stacked into one tall HxWx3 picture: one vectorised call of the shared conversion
    tall = to_chw_uint8(batch.transpose(0, 2, 3, 1).reshape(n * h, w, 3), 1)
    return tall.reshape(1, n, h, w).permute(1, 0, 2, 3).contiguous()


# ------------------------------------------------------------------------------------ the split


class SizedSplit(ImageSplit):
    """Decoded images, cropped by :class:`msframe.images.InMemorySplit` under a small-image policy.

    An image whose short side is below the crop side is, by ``small``: ``"skip"`` left out of
    sampling; ``"upscale"`` resized (antialiased bicubic, aspect kept) so that its short side equals
    the crop; ``"reflect_pad"`` mirrored at its borders up to the crop side in each dimension that is
    too short. The adapted images are made once per crop size.
    """

    def __init__(self, images: list[Tensor], names: list[str], *, augment: bool, small: SmallPolicy,
                 label: str, key: str, hint: str):
        self.images, self.names, self.augment, self.small = images, list(names), augment, small
        self.label, self.key, self.hint = label, key, hint
        self._at: dict[int, InMemorySplit] = {}
        self._device: torch.device | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sizes(self) -> list[int]:
        """The crop sizes asked for so far (in this process)."""
        return list(self._at)

    def smaller_than(self, size: int) -> int:
        """How many images have a short side below ``size`` px."""
        return sum(min(im.shape[1:]) < size for im in self.images)

    def usable(self, size: int) -> int:
        """How many images can give a crop of ``size`` px under the small-image policy."""
        return len(self) - (self.smaller_than(size) if self.small == "skip" else 0)

    def distinct_crops(self, size: int) -> int:
        """Non-overlapping crops of ``size`` px, counted on the images as the small-image policy adapts them."""
        return self.at(size).distinct_crops(size) if self.usable(size) else 0

    def _adapt(self, image: Tensor, size: int) -> Tensor:
        if min(image.shape[1:]) >= size or self.small == "skip":
            return image
        if self.small == "upscale":
            return resized(image[None], [size])[0]
        pads = [((size - d) // 2, size - d - (size - d) // 2) if d < size else (0, 0) for d in image.shape[1:]]
        return torch.from_numpy(np.pad(image.numpy(), [(0, 0), *pads], mode="reflect"))

    def at(self, size: int) -> InMemorySplit:
        """The split as seen by crops of ``size`` px; a UserError when no image can give one."""
        if size not in self._at:
            if not self.usable(size):
                largest = max(min(im.shape[1:]) for im in self.images)
                raise UserError(f"no image of the {self.label} split is at least {size} px on its short side "
                                f"(largest: {largest} px); {self.hint}", key=self.key)
            adapted = [self._adapt(im, size) for im in self.images]
            self._at[size] = InMemorySplit(adapted, self.names, augment=self.augment, key=self.key)
            if self._device is not None:
                self._at[size].to(self._device)
        return self._at[size]

    def to(self, device: torch.device) -> SizedSplit:
        """Hold the images as adapted for each crop size on ``device`` (adapting happens on the host)."""
        self._device = device
        for split in self._at.values():
            split.to(device)
        return self

    def crops(self, n: int, size: int, generator: torch.Generator) -> Tensor:
        return self.at(size).crops(n, size, generator)

    def tiles(self, size: int, per_image: int, max_images: int | None = None) -> Tensor:
        return self.at(size).tiles(size, per_image, max_images)

    def whole(self, max_images: int | None = None) -> list[Tensor]:
        """The decoded images as they are (after the dataset's resize), whatever the small-image policy:
        the whole-image protocol pads an image smaller than the network needs instead."""
        return [im.cpu().float().div(255) for im in self.images[:max_images]]


# ---------------------------------------------------------------------------------- the datasets


class OfficialParams(Params):
    """Parameters of the datasets that come with an official train/test partition."""

    root: str  # the folder in which the official archive was unpacked (relative: to the current folder)
    channels: Literal[1, 3] = 3
    # short side in px after an antialiased resize; a list resizes in turn ([64, 128]: 64 px content at 128 px)
    resize: list[int] | None = None
    val_fraction: float = Field(0.05, gt=0, lt=1)  # of the official train part, held out for val
    seed: int = Field(0, ge=0)  # of the val hold-out; fixed by default so that runs with different seeds share splits

    @field_validator("resize", mode="before")
    @classmethod
    def _resize(cls, v):
        def side(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool) and x > 0

        if v is None or (isinstance(v, list) and v and all(side(x) for x in v)):
            return v
        if side(v):
            return [v]
        raise ValueError("must be a side in px (e.g. 128) or a list of sides applied in turn (e.g. [64, 128])")


_POLICY_SENTENCE = {
    "skip": "left out (small = 'skip')",
    "upscale": "upscaled to it (small = 'upscale'): their finest mesh is an upsampled copy and adds no information",
    "reflect_pad": "mirror-padded to it (small = 'reflect_pad'): their crops can show mirrored borders",
}


class InMemoryDataset(Dataset):
    """A dataset whose splits are loaded once, kept in memory and cropped by :class:`SizedSplit`.

    Subclasses implement :meth:`load` and may add sentences to ``self.warnings`` and entries to
    ``self.facts`` (both end up in :meth:`report`); unreadable files go to ``self.skipped``.
    """

    #: (recipe key, advice) of the error raised when no image of a split is as large as the crop
    SMALL_HINT: ClassVar[tuple[str, str]] = ("data.resize",
                                             "set data.resize to at least the crop side, or lower schedule.resolution")

    def __init__(self, params: Params):
        super().__init__(params)
        self.skipped = Skipped()
        self.warnings: list[str] = []
        self.facts: dict = {}
        self._splits: dict[str, SizedSplit] = {}

    def channels(self) -> int:
        return self.params.channels

    def small_policy(self) -> SmallPolicy:
        """What happens to images smaller than the crop (fixed to "skip" unless a dataset offers a choice)."""
        return "skip"

    def load(self, name: str) -> tuple[list[Tensor], list[str]]:
        """The images (uint8 ``[C, H, W]``) and names of one split; UserError when it cannot have any."""
        raise NotImplementedError

    def warn(self, sentence: str | None) -> None:
        """Add a sentence to the report's warnings (once)."""
        if sentence and sentence not in self.warnings:
            self.warnings.append(sentence)

    def split(self, name: str) -> SizedSplit:
        if name not in self.SPLITS:
            raise ValueError(f"unknown split {name!r} (splits: {', '.join(self.SPLITS)})")
        if name not in self._splits:
            images, names = self.load(name)
            key, hint = self.SMALL_HINT
            self._splits[name] = SizedSplit(images, names, augment=name == "train", small=self.small_policy(),
                                            label=name, key=key, hint=hint)
        return self._splits[name]

    def report(self) -> dict:
        """Images per split, skipped files, and warnings (upsampled content, images below the crop)."""
        warnings = list(self.warnings)
        smaller = {}
        for size in sorted({s for split in self._splits.values() for s in split.sizes}):
            counts = {name: split.smaller_than(size) for name, split in self._splits.items()}
            if sum(counts.values()):
                smaller[str(size)] = counts
                where = ", ".join(f"{c} in {name}" for name, c in counts.items() if c)
                warnings.append(f"{sum(counts.values())} images ({where}) are smaller than the {size} px crop and "
                                f"were {_POLICY_SENTENCE[self.small_policy()]}")
        out = {"images": {name: len(split) for name, split in self._splits.items()}, **self.facts}
        if smaller:
            out["smaller_than_crop"] = smaller
        return {**out, "skipped": self.skipped.count, "skipped_examples": list(self.skipped.examples), "warnings": warnings}

    def decode_split(self, name: str, paths: Sequence[Path], where: str,
                     prepare: Callable[[Tensor], Tensor] | None = None) -> Decoded:
        """Decode one split's files; a UserError (key data.root) when there are none or none is readable."""
        if not paths:
            raise UserError(f"the {name} split has no image files: {where}", key="data.root")
        decoded = decode_files(paths, self.params.channels, self.skipped, prepare)
        if not decoded.images:
            raise UserError(f"none of the {len(paths)} image files of the {name} split could be decoded "
                            f"(e.g. {paths[0]}): {where}", key="data.root")
        return decoded


class ArrayDataset(InMemoryDataset):
    """Equal-sized RGB images stored as arrays, with an official train part and test part.

    val is a seeded hold-out (``val_fraction``, ``seed``) of the train part, test is the test part;
    channels and ``resize`` are applied once to each part as it is read.
    """

    NAME: ClassVar[str]
    NATIVE: ClassVar[int]  # side of the stored (square) images in px

    def __init__(self, params: OfficialParams):
        super().__init__(params)
        self.facts["native_side"] = self.NATIVE
        self.warn(upsampling_warning(self.NAME, self.NATIVE, params.resize or []))

    def read(self, part: str) -> tuple[np.ndarray, list[str]]:
        """The stored images of ``part`` as uint8 RGB ``[N, 3, H, W]`` and their names; UserError
        (key data.root) naming the expected layout when a file is missing or malformed."""
        raise NotImplementedError

    def prepared(self, part: str) -> tuple[Tensor, list[str]]:
        """``read(part)`` in the dataset's channels, resized: uint8 ``[N, channels, H', W']``."""
        images, names = self.read(part)
        return resized(as_channels(images, self.params.channels), self.params.resize or []), names

    @cached_property
    def _train_part(self) -> tuple[Tensor, list[str], dict[str, list[int]]]:
        images, names = self.prepared("train")
        train, val = holdout(len(images), self.params.val_fraction, self.params.seed, f"the {self.NAME} train part")
        return images, names, {"train": train, "val": val}

    def load(self, name: str) -> tuple[list[Tensor], list[str]]:
        if name == "test":
            images, names = self.prepared("test")
            return list(images), names
        images, names, parts = self._train_part
        return [images[i] for i in parts[name]], [names[i] for i in parts[name]]
