"""``image_folder``: every image file under a folder, decoded with Pillow."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from torch import Tensor

from msframe.components import Params
from msframe.errors import UserError
from msframe_data.base import InMemoryDataset, SmallPolicy, image_files, seeded_split, shown

EXTENSIONS = ["png", "jpg", "jpeg", "webp", "tif", "tiff"]


class ImageFolder(InMemoryDataset):
    """Any folder tree of images (PNG, JPEG, WebP, TIFF … whatever Pillow reads).

    ``split = "subfolders"``: train, val and test are ``root/train``, ``root/val`` and ``root/test``.
    ``split = "ratio"``: every image under ``root`` is shuffled by file with
    ``numpy.random.default_rng(seed)`` and cut by ``ratios`` [train, val, test] (val and test get at
    least one file each); the same files and seed always give the same split.

    Folders are searched recursively for files with one of ``extensions`` (any case); names starting
    with "." are ignored. A file that Pillow cannot decode completely (unreadable, truncated, not
    an image) is skipped and counted in report(). Images are converted to RGB or gray (``channels``)
    and held in memory as uint8: about 3 bytes per pixel of the folder, which is the user's choice.
    Images smaller than the crop follow ``small`` (see :class:`msframe_data.base.SizedSplit`).
    Nothing is downloaded.
    """

    SMALL_HINT = ("data.small", "set data.small = \"upscale\" or \"reflect_pad\", or lower schedule.resolution")

    class Params(Params):
        root: str  # relative paths are relative to the current folder
        split: Literal["subfolders", "ratio"] = "subfolders"
        ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # [train, val, test], with split = "ratio"
        seed: int = Field(0, ge=0)  # of the ratio split
        channels: Literal[1, 3] = 3
        small: SmallPolicy = "skip"  # images smaller than the crop: "skip", "upscale" or "reflect_pad"
        extensions: list[str] = EXTENSIONS

        @field_validator("ratios")
        @classmethod
        def _ratios(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
            if min(v) <= 0 or not math.isclose(sum(v), 1, abs_tol=1e-6):
                raise ValueError("must be three positive fractions [train, val, test] that sum to 1")
            return v

        @field_validator("extensions")
        @classmethod
        def _extensions(cls, v: list[str]) -> list[str]:
            v = [e.strip().lstrip(".").lower() for e in v]
            if not v or not all(v):
                raise ValueError("must list at least one file extension, e.g. [\"png\", \"jpg\"]")
            return v

    def small_policy(self) -> SmallPolicy:
        return self.params.small

    @property
    def root(self) -> Path:
        return Path(self.params.root).expanduser()

    def _layout(self) -> str:
        kinds = ", ".join(f".{e}" for e in self.params.extensions)
        if self.params.split == "subfolders":
            return (f"image_folder with split = \"subfolders\" expects train/, val/ and test/ folders in root, holding "
                    f"{kinds} files (searched recursively)")
        return f"image_folder with split = \"ratio\" expects a folder of {kinds} files (searched recursively)"

    @cached_property
    def _files(self) -> dict[str, list[Path]]:
        """Each split's files, found (and, by ratio, assigned) once."""
        root = self.root
        if not root.is_dir():
            state = "is a file, not a folder" if root.exists() else "does not exist"
            raise UserError(f"{shown(root)} {state}; {self._layout()}", key="data.root")
        exts = self.params.extensions
        if self.params.split == "subfolders":
            missing = [s for s in self.SPLITS if not (root / s).is_dir()]
            if missing:
                raise UserError(f"{shown(root)} has no {'/, '.join(missing)}/ folder; {self._layout()} "
                                "(or set data.split = \"ratio\")", key="data.root")
            return {s: image_files(root / s, exts) for s in self.SPLITS}
        files = image_files(root, exts)
        parts = seeded_split(len(files), self.params.ratios, np.random.default_rng(self.params.seed))
        if not all(parts):
            raise UserError(f"{shown(root)} holds {len(files)} image file(s), too few to split into train, val "
                            f"and test by ratios {list(self.params.ratios)}; {self._layout()}", key="data.root")
        return {s: [files[i] for i in part] for s, part in zip(self.SPLITS, parts)}

    def load(self, name: str) -> tuple[list[Tensor], list[str]]:
        where = (self.root / name) if self.params.split == "subfolders" else self.root
        decoded = self.decode_split(name, self._files[name], f"{shown(where)}; {self._layout()}")
        return decoded.images, [p.relative_to(self.root).as_posix() for p in decoded.paths]
