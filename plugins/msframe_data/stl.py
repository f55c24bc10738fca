"""``stl10``: the STL-10 images (binary version), 96x96 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from msframe.errors import UserError
from msframe_data.base import ArrayDataset, OfficialParams, shown

FOLDER = "stl10_binary"
FILES = {"train": "train_X.bin", "test": "test_X.bin", "unlabeled": "unlabeled_X.bin"}
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE


def read_images(path: Path) -> np.ndarray:
    """An STL-10 image file as uint8 ``[N, 3, 96, 96]``; UserError (key data.root) if malformed.

    The file stores each image as three 96x96 planes (red, green, blue), each plane column by
    column (column-major), hence the transpose of the last two axes.
    """
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise UserError(f"{path} is not an STL-10 image file: its size ({size} bytes) is not a positive multiple "
                        f"of {IMAGE_BYTES} bytes (3x96x96)", key="data.root")
    stored = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)
    return np.ascontiguousarray(stored.transpose(0, 1, 3, 2))


class Stl10(ArrayDataset):
    """STL-10, binary version: 5,000 train, 8,000 test and (optionally) 100,000 unlabeled images of 96x96 px.

    Expects ``root/stl10_binary/`` with ``train_X.bin`` and ``test_X.bin`` (and ``unlabeled_X.bin``
    with ``unlabeled = true``), as unpacked from stl10_binary.tar.gz
    (https://cs.stanford.edu/~acoates/stl10/). Nothing is downloaded: fetch and unpack it yourself.
    val is a seeded hold-out of ``train_X.bin``, test is ``test_X.bin``; ``unlabeled = true`` adds the
    unlabeled images to train (about 2.8 GB in memory at 96 px). The paper's 96 -> 128 px set-up is
    ``resize = 128``; its finest mesh then carries no information beyond 96 px, and report() says so.
    """

    NAME = "stl10"
    NATIVE = SIDE

    class Params(OfficialParams):
        unlabeled: bool = False  # add unlabeled_X.bin to the train split

    def read(self, part: str) -> tuple[np.ndarray, list[str]]:
        root = Path(self.params.root).expanduser()
        folder = root / FOLDER
        needed = [FILES["train"], FILES["test"], *([FILES["unlabeled"]] if self.params.unlabeled else [])]
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            hint = ""
            if (root / FILES["train"]).is_file():
                hint = f"; root should be the folder that contains {FOLDER}/, not that folder itself"
            raise UserError(
                f"expected the STL-10 binary files in {shown(folder)}: {', '.join(needed)} "
                f"(stl10_binary.tar.gz unpacked in root; nothing is downloaded); missing: {', '.join(missing)}{hint}",
                key="data.root",
            )
        images = read_images(folder / FILES[part])
        return images, [f"{FILES[part]}/{i}" for i in range(len(images))]

    def load(self, name: str) -> tuple[list[Tensor], list[str]]:
        images, names = super().load(name)
        if name == "train" and self.params.unlabeled:
            extra, extra_names = self.prepared("unlabeled")
            images, names = images + list(extra), names + extra_names
        return images, names
