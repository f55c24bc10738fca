"""``celeba``: the aligned-and-cropped CelebA faces (178x218 px JPEGs)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import Field
from torch import Tensor

from msframe.errors import UserError
from msframe_data.base import (
    InMemoryDataset,
    OfficialParams,
    holdout,
    image_files,
    resized,
    seeded_split,
    shown,
    upsampling_warning,
)

FOLDER = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
TRAIN, VAL, TEST = "0", "1", "2"  # the partition file's labels


class CelebA(InMemoryDataset):
    """CelebA, "Align&Cropped" images, split by the official evaluation partition.

    Expects ``root/img_align_celeba/*.jpg`` and ``root/list_eval_partition.txt`` (lines
    ``000001.jpg 0``; 0 train, 1 val, 2 test), both from the CelebA release
    (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html). Nothing is downloaded. test is partition 2;
    val is a seeded hold-out (``val_fraction``) of partition 0, the rest of which is train, so that the
    size of val stays a choice; partition 1 is not used. Without the partition file, test is a
    seeded ``test_fraction`` of all images, and report() warns that the split is not the official one.
    Listed files missing from the folder and files Pillow cannot decode are skipped and counted.

    Each image is centre-cropped to a square of ``center_crop`` px (if set) and resized to
    ``resize`` right after decoding; only the result is kept in memory (the full set at 178x218 px
    needs about 23 GB, at 64 px about 2.5 GB). The paper's 64 -> 128 px set-up is
    ``center_crop = 178, resize = [64, 128]``; report() then warns that the finest mesh adds no
    information beyond 64 px.
    """

    class Params(OfficialParams):
        center_crop: int | None = Field(None, gt=0)  # side of a centred square cut before resizing
        test_fraction: float = Field(0.1, gt=0, lt=1)  # only without list_eval_partition.txt

    @property
    def root(self) -> Path:
        return Path(self.params.root).expanduser()

    def _layout(self) -> str:
        return (f"celeba expects the aligned JPEGs in root/{FOLDER}/ and the official split in root/{PARTITION} "
                f"(lines like '000001.jpg 0'), from the CelebA release; nothing is downloaded")

    def _partition(self, path: Path) -> dict[str, list[str]]:
        """File names per label of the official partition file."""
        parts: dict[str, list[str]] = {TRAIN: [], VAL: [], TEST: []}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in parts:
                raise UserError(f"{path} line {number}: expected 'NAME PART' with PART 0, 1 or 2, got {line!r}",
                                key="data.root")
            parts[fields[1]].append(fields[0])
        return parts

    @cached_property
    def _files(self) -> dict[str, list[Path]]:
        """Each split's files, assigned once."""
        p = self.params
        folder = self.root / FOLDER
        if not folder.is_dir():
            raise UserError(f"{shown(folder)} is not a folder; {self._layout()}", key="data.root")
        partition = self.root / PARTITION
        if partition.is_file():
            self.facts["partition"] = "official"
            listed = self._partition(partition)
            present = {f.name for f in folder.iterdir()}
            missing = [n for n in listed[TRAIN] + listed[TEST] if n not in present]
            for name in missing:
                self.skipped.add(folder / name)
            if missing:
                self.warn(f"{len(missing)} files listed in {PARTITION} are missing from {FOLDER}/ and were skipped")
            train_part = [folder / n for n in listed[TRAIN] if n in present]
            test = [folder / n for n in listed[TEST] if n in present]
        else:
            self.facts["partition"] = f"seeded fallback ({PARTITION} missing)"
            self.warn(f"{partition} not found, so the official split is not used: test is a seeded "
                      f"{p.test_fraction:.0%} of the images (seed {p.seed}) and val a seeded {p.val_fraction:.0%} "
                      "of the rest; test numbers are not comparable with published CelebA results")
            files = image_files(folder, ["jpg", "jpeg", "png"])
            # a stream of its own for the test draw, apart from the val hold-out's
            rest, test_idx = seeded_split(len(files), [1 - p.test_fraction, p.test_fraction], np.random.default_rng([p.seed, 2]))
            if not rest or not test_idx:
                raise UserError(f"{shown(folder)} holds {len(files)} image file(s), too few for a train/val/test "
                                f"split; {self._layout()}", key="data.root")
            train_part = [files[i] for i in rest]
            test = [files[i] for i in test_idx]
        train, val = holdout(len(train_part), p.val_fraction, p.seed, f"the CelebA train partition in {folder}")
        return {"train": [train_part[i] for i in train], "val": [train_part[i] for i in val], "test": test}

    def _prepare(self, image: Tensor) -> Tensor:
        side = self.params.center_crop
        if side is not None:
            h, w = image.shape[1:]
            if side > min(h, w):
                raise UserError(f"center_crop = {side} is larger than an image of {w}x{h} px", key="data.center_crop")
            top, left = (h - side) // 2, (w - side) // 2
            image = image[:, top : top + side, left : left + side]
        # a copy, so that the full decoded image is not kept alive behind a view
        return resized(image[None], self.params.resize or [])[0].clone()

    def load(self, name: str) -> tuple[list[Tensor], list[str]]:
        folder = self.root / FOLDER
        decoded = self.decode_split(name, self._files[name], f"{shown(folder)}; {self._layout()}", self._prepare)
        content = min(decoded.native_side, self.params.center_crop or decoded.native_side)
        self.warn(upsampling_warning("celeba", content, self.params.resize or []))
        return decoded.images, [p.relative_to(folder).as_posix() for p in decoded.paths]
