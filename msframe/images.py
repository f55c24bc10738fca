"""Reusable image-split machinery for dataset plugins: decoded images in memory, seeded crops, tiles."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from msframe.components import ImageSplit
from msframe.errors import UserError


def to_chw_uint8(image: np.ndarray, channels: int) -> torch.Tensor:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, bool or float in [0, 1]) -> uint8 tensor [channels, H, W].

    Grayscale is replicated to 3 channels; colour is reduced to luminance (ITU-R 601) for 1 channel;
    an alpha channel is dropped.
    """
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    a = a[:, :, :3]
    if a.shape[2] == 1 and channels == 3:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 3 and channels == 1:
        a = (a @ np.array([0.299, 0.587, 0.114]))[:, :, None].round().astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def tile_corners(height: int, width: int, side: int, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` distinct top-left corners (y, x) of ``side``-px tiles spread evenly over a
    ``height`` x ``width`` image: a k x k grid with k = ceil(sqrt(n)), row by row."""
    k = int(np.ceil(np.sqrt(n)))
    ys = np.linspace(0, height - side, k).round().astype(int)
    xs = np.linspace(0, width - side, k).round().astype(int)
    return sorted({(int(y), int(x)) for y in ys for x in xs})[:n]


class InMemorySplit(ImageSplit):
    """Images held as uint8 tensors; crops drawn uniformly over images, positions and the 8 flips/rotations.

    Images smaller than the crop are left out of sampling; a split with none left is a UserError.
    """

    def __init__(self, images: list[Tensor], names: list[str], *, augment: bool = True, key: str = "data"):
        if not images:
            raise UserError("the split holds no images", key=key)
        self.images, self.names, self.augment, self.key = images, list(names), augment, key
        self._eligible: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def _usable(self, size: int) -> list[int]:
        if size not in self._eligible:
            ok = [i for i, im in enumerate(self.images) if min(im.shape[1:]) >= size]
            if not ok:
                largest = max(min(im.shape[1:]) for im in self.images)
                raise UserError(f"no image is at least {size} px on its short side (largest: {largest} px)", key=self.key)
            self._eligible[size] = ok
        return self._eligible[size]

    def crops(self, n: int, size: int, generator: torch.Generator) -> Tensor:
        """Random crops; positions and flips come from ``generator`` (a CPU one), pixels stay where the
        images are (on the device for a resident split: one gather, no host copy)."""
        usable = self._usable(size)
        which = torch.randint(len(usable), (n,), generator=generator).tolist()
        u = torch.rand(n, 2, generator=generator).tolist()
        ops = torch.randint(8, (n,), generator=generator).tolist() if self.augment else [0] * n
        out = []
        for idx, (uy, ux), op in zip(which, u, ops):
            im = self.images[usable[idx]]
            y = int(uy * (im.shape[1] - size + 1))
            x = int(ux * (im.shape[2] - size + 1))
            c = im[:, y : y + size, x : x + size]
            if op & 4:
                c = c.transpose(1, 2)
            c = torch.rot90(c, op & 3, dims=(1, 2))
            out.append(c)
        return torch.stack(out).float().div_(255)

    def usable(self, size: int) -> int:
        return sum(min(im.shape[1:]) >= size for im in self.images)

    def distinct_crops(self, size: int) -> int:
        return sum((im.shape[1] // size) * (im.shape[2] // size) for im in self.images)

    def nbytes(self) -> int:
        return sum(im.numel() * im.element_size() for im in self.images)

    def to(self, device: torch.device) -> InMemorySplit:
        self.images = [im.to(device) for im in self.images]
        return self

    def whole(self, max_images: int | None = None) -> list[Tensor]:
        return [im.cpu().float().div(255) for im in self.images[:max_images]]

    def tiles(self, size: int, per_image: int, max_images: int | None = None) -> Tensor:
        out = []
        for i in self._usable(size)[:max_images]:
            im = self.images[i]
            out += [im[:, y : y + size, x : x + size] for y, x in tile_corners(im.shape[1], im.shape[2], size, per_image)]
        return torch.stack(out).float().div_(255)
