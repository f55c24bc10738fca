"""``sample_images``: the photographs that ship inside scikit-image."""

from __future__ import annotations

from typing import Literal

from msframe.components import Dataset, Params
from msframe.errors import UserError
from msframe.images import InMemorySplit, to_chw_uint8

# Photographs and micrographs bundled in the scikit-image wheel (nothing is fetched). Left out on
# purpose: synthetic images (checkerboard, colorwheel, logo, phantom, blobs), `cat` (the same file as
# `chelsea`), and the right view of the stereo pair (nearly the left one).
PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "motorcycle", "page", "retina",
    "rocket", "text",
)
GRAYSCALE = {"brick", "camera", "cell", "clock", "coins", "grass", "gravel", "microaneurysms", "moon", "page", "text"}


def _load(name: str):
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


class SampleImages(Dataset):
    """Random crops of the scikit-image photographs; whole images are held out for val and test."""

    class Params(Params):
        val: list[Literal[PHOTOS]] = ["coffee", "moon"]
        test: list[Literal[PHOTOS]] = ["astronaut", "camera", "chelsea"]
        exclude: list[Literal[PHOTOS]] = []  # left out of every split
        channels: Literal[1, 3] = 3
        grayscale: Literal["replicate", "skip"] = "replicate"  # with channels = 3: copy gray to RGB, or drop it

    def channels(self) -> int:
        return self.params.channels

    def _names(self, split: str) -> list[str]:
        p = self.params
        held = set(p.val) | set(p.test) | set(p.exclude)
        if set(p.val) & set(p.test):
            raise UserError(f"images in both val and test: {sorted(set(p.val) & set(p.test))}", key="data.test")
        if split == "val":
            names = list(p.val)
        elif split == "test":
            names = list(p.test)
        else:
            names = [n for n in PHOTOS if n not in held]
        if p.channels == 3 and p.grayscale == "skip":
            names = [n for n in names if n not in GRAYSCALE]
        names = [n for n in names if n not in p.exclude]
        if not names:
            raise UserError(f"the {split} split is empty after exclusions (photos: {', '.join(PHOTOS)})", key=f"data.{split}")
        return names

    def split(self, name: str) -> InMemorySplit:
        names = self._names(name)
        images = [to_chw_uint8(_load(n), self.params.channels) for n in names]
        return InMemorySplit(images, names, augment=name == "train", key="data")
