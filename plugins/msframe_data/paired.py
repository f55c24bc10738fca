"""``paired_folder``: super-resolution sets that ship stored low-resolution images (DIV2K, Set5, Urban100 …)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from msframe.components import Params
from msframe.errors import UserError
from msframe.images import tile_corners
from msframe_data.base import InMemoryDataset, SizedSplit, Skipped, decode_files, image_files, seeded_split, shown
from msframe_data.folder import EXTENSIONS as FOLDER_EXTENSIONS

EXTENSIONS = [*FOLDER_EXTENSIONS, "bmp"]  # some releases of Set5 and Set14 are BMP files
#: Names of a high-resolution folder, tried in this order (matched without regard to case).
HR_NAMES = ("HR", "GTmod12", "GT")
#: Names of the folder of stored low-resolution images beside an HR folder; "{s}" is the scale.
LR_NAMES = ("LR_bicubic/X{s}", "LR_bicX{s}", "LRbicx{s}", "LR_x{s}", "X{s}")
#: The same for DIV2K, relative to root; "{part}" is "train" or "valid".
DIV2K_LR_NAMES = ("DIV2K_{part}_LR_bicubic/X{s}", "DIV2K_{part}_LR_x{s}")

LAYOUTS = {
    "subfolders": "root/train/HR and root/test/HR (root/val/HR optional: without it val is held out from train), "
                  "stored low-resolution images in LR_x2, LR_x4 (or LR_bicubic/X2, LR_bicX2, X2) folders beside "
                  "each HR folder",
    "div2k": "root/DIV2K_train_HR and root/DIV2K_valid_HR, stored low-resolution images in "
             "root/DIV2K_train_LR_bicubic/X2/0001x2.png and root/DIV2K_valid_LR_bicubic/X2/0801x2.png (X4 likewise)",
    "benchmark": "root/HR (or root/GTmod12) with stored low-resolution images in root/LR_bicX2 (or LR_bicubic/X2, "
                 "LR_x2, X2), and training images in the folder data.train_root",
}


def child(base: Path, relative: str) -> Path | None:
    """The folder ``base/relative`` with each part of ``relative`` matched without regard to case, or None."""
    here = base
    for part in relative.split("/"):
        if (here / part).is_dir():
            here = here / part
            continue
        if not here.is_dir():
            return None
        matches = sorted(p for p in here.iterdir() if p.name.lower() == part.lower() and p.is_dir())
        if not matches:
            return None
        here = matches[0]
    return here


def hr_folder(base: Path) -> Path | None:
    """The first of :data:`HR_NAMES` that is a folder in ``base``."""
    return next((f for f in (child(base, n) for n in HR_NAMES) if f is not None), None)


def hr_key(relative: Path, scale: int) -> str:
    """The pairing key of a high-resolution file: its path relative to its folder without extension,
    lower case, without an ``_SRF_<scale>_HR`` suffix (the Urban100/B100 release names)."""
    return re.sub(rf"_srf_{scale}_hr$", "", relative.with_suffix("").as_posix().lower())


def lr_keys(relative: Path, scale: int) -> tuple[str, str]:
    """The keys a low-resolution file pairs under: its own name (as :func:`hr_key` reads a name), then
    the name without its scale suffix (``0001x2`` ↔ ``0001``, ``baby_x2``, ``img_001_SRF_2_LR``)."""
    plain = relative.with_suffix("").as_posix().lower()
    return plain, re.sub(rf"(_srf_{scale}_lr|[_-]?x{scale})$", "", plain)


@dataclass(frozen=True)
class Source:
    """High-resolution files of one split and where their stored low-resolution images live."""

    files: list[Path]
    hr_dir: Path  # the files' folder: pairing keys are paths relative to it
    named_from: Path  # image names are paths relative to this folder
    lr_base: Path | None  # the folder that holds the LR folders; None: these images have no stored LR
    lr_names: tuple[str, ...]  # LR folder names under lr_base, "{s}" standing for the scale
    origin: str  # where the files come from, for messages


@dataclass
class StoredLR:
    """The stored low-resolution images of one split at one scale."""

    folder: Path | None  # None: no folder of that scale
    lows: dict[int, Tensor] = field(default_factory=dict)  # image index -> its LR image, cut to the aligned extent
    unpaired: int = 0  # high-resolution images without a file in ``folder``
    mismatched: Skipped = field(default_factory=Skipped)  # LR files whose size does not match (scale_check)


class PairedSplit(SizedSplit):
    """High-resolution images cropped like :class:`SizedSplit`, plus their stored low-resolution images,
    found and decoded at the first :meth:`pairs` call of each scale (so training never reads them)."""

    def __init__(self, images: list[Tensor], names: list[str], *, source: Source, files: list[Path], channels: int,
                 scale_check: bool, skipped: Skipped, **sized):
        super().__init__(images, names, **sized)
        self.source, self.files, self.channels, self.scale_check, self.skipped = source, files, channels, scale_check, skipped
        #: scale -> why :meth:`pairs` returned None, or None when it returned pairs
        self.asked: dict[int, str | None] = {}
        self._stored: dict[int, StoredLR] = {}

    def lr_folder(self, scale: int) -> Path | None:
        """The first of the source's LR folder names that exists for ``scale``."""
        if self.source.lr_base is None:
            return None
        found = (child(self.source.lr_base, name.format(s=scale)) for name in self.source.lr_names)
        return next((f for f in found if f is not None), None)

    def _aligned(self, low: Tensor, high: Tensor, scale: int) -> Tensor | None:
        # the HR image counts as cut to a multiple of the scale at its bottom and right ("modcrop"),
        # which is how DIV2K and the benchmark sets made their LR images
        h, w = high.shape[1] // scale, high.shape[2] // scale
        if self.scale_check:
            return low if tuple(low.shape[1:]) == (h, w) else None
        return low[:, :h, :w]

    def stored(self, scale: int) -> StoredLR:
        """This split's stored LR images of ``scale``, paired by name with its images and size-checked.

        A high-resolution image of H x W px pairs with an LR image of exactly (H // scale) x (W // scale)
        px; with ``scale_check`` off, any LR image pairs, cut with the HR image to their common extent
        from the top-left corner. Undecodable LR files are counted in the dataset's skipped files.
        """
        if scale in self._stored:
            return self._stored[scale]
        folder = self.lr_folder(scale)
        stored = self._stored[scale] = StoredLR(folder)
        if folder is None:
            return stored
        index: dict[str, Path] = {}
        for path in image_files(folder, EXTENSIONS):
            for key in lr_keys(path.relative_to(folder), scale):
                index.setdefault(key, path)
        found = {i: index.get(hr_key(p.relative_to(self.source.hr_dir), scale)) for i, p in enumerate(self.files)}
        stored.unpaired = sum(p is None for p in found.values())
        wanted = sorted({p for p in found.values() if p is not None})
        decoded = decode_files(wanted, self.channels, self.skipped)
        lows = dict(zip(decoded.paths, decoded.images))
        for i, path in found.items():
            if path not in lows:  # no file, or undecodable (already counted)
                continue
            low = self._aligned(lows[path], self.images[i], scale)
            if low is None:
                stored.mismatched.add(path)
            else:
                stored.lows[i] = low
        return stored

    def pairs(self, size: int, scale: int, per_image: int, max_images: int | None = None) -> tuple[Tensor, Tensor] | None:
        """Stored (LR, HR) tiles: HR tiles of ``size`` px at corners that are multiples of ``scale``, each
        with the LR tile of ``size // scale`` px at the corresponding corner, in [0, 1].

        Corners follow :func:`grid` on the LR image, up to ``per_image`` per image, for the first
        ``max_images`` images that have a stored LR image of at least ``size // scale`` px. None (and the
        reason in :attr:`asked`) when there is none, or ``size`` is not a multiple of ``scale``.
        """
        stored, side = self.stored(scale), size // scale
        usable = [i for i in sorted(stored.lows) if min(stored.lows[i].shape[1:]) >= side]
        self.asked[scale] = self._why_none(stored, size, scale) if not usable or size % scale else None
        if self.asked[scale]:
            return None
        lows, highs = [], []
        for i in usable[:max_images]:
            low, high = stored.lows[i], self.images[i]
            for y, x in tile_corners(low.shape[1], low.shape[2], side, per_image):
                lows.append(low[:, y : y + side, x : x + side])
                highs.append(high[:, y * scale : y * scale + size, x * scale : x * scale + size])
        return torch.stack(lows).float().div_(255), torch.stack(highs).float().div_(255)

    def whole_pairs(self, scale: int, max_images: int | None = None) -> list[tuple[str, Tensor, Tensor]] | None:
        """Stored LR images with their HR images cut to scale times the LR sides at the bottom and right
        (the benchmarks' "modcrop"); None when no image has a stored LR image of ``scale``."""
        stored = self.stored(scale)
        if not stored.lows:
            return None
        out = []
        for i in sorted(stored.lows)[:max_images]:
            low = stored.lows[i]
            high = self.images[i][:, : low.shape[1] * scale, : low.shape[2] * scale]
            out.append((self.names[i], low.float().div(255), high.float().div(255)))
        return out

    def _why_none(self, stored: StoredLR, size: int, scale: int) -> str:
        if size % scale:
            return f"{size} px tiles are not a multiple of the scale {scale}, so no stored LR x{scale} tile matches them"
        if self.source.lr_base is None:
            return f"its images ({self.source.origin}) have no stored low-resolution copies"
        if stored.folder is None:
            names = ", ".join(n.format(s=scale) for n in self.source.lr_names)
            return f"stored LR x{scale} not found (looked for {names} in {shown(self.source.lr_base)})"
        if not stored.lows:
            return f"none of its {len(self.images)} images has a usable stored LR x{scale} image in {stored.folder}"
        return f"no stored LR x{scale} image is at least {size // scale} px on its short side"


class PairedFolder(InMemoryDataset):
    """Super-resolution data with stored low-resolution (LR) images beside the high-resolution (HR) ones.

    Layouts (``layout = "auto"`` picks the first that matches: DIV2K folders, then train/ or test/
    folders, then an HR folder):

    - ``"subfolders"``: ``root/{train,val,test}/HR`` with ``LR_x2``, ``LR_x4`` … beside each HR folder
      (also ``LR_bicubic/X2``, ``LR_bicX2``, ``LRbicx2``, ``X2``; HR may be named ``GTmod12`` or ``GT``;
      names match without regard to case). Without ``root/val``, val is a seeded hold-out
      (``val_fraction``, ``seed``) of train.
    - ``"div2k"``: ``root/DIV2K_train_HR``, ``root/DIV2K_valid_HR`` and ``root/DIV2K_{train,valid}_LR_bicubic/X2``
      (X3, X4; or ``DIV2K_train_LR_x8``). train is DIV2K train less a seeded hold-out (``val_fraction``,
      ``seed``) for val; test is DIV2K valid.
    - ``"benchmark"``: one evaluation set such as Set5, Set14, B100 or Urban100: ``root/HR`` (or
      ``GTmod12``) with ``root/LR_bicX2`` (or the other LR names above). Such sets are for evaluation
      only, so ``role`` says which splits they fill: ``"test"`` (all of them; val is a seeded hold-out of
      the training images) or ``"val+test"`` (a seeded ``val_fraction`` of them is val, the rest test,
      disjoint). The training images come from ``train_root``, a folder of HR images searched
      recursively (e.g. ``DIV2K_train_HR``); without it the dataset refuses (``data.train_root``)
      rather than train on the images it evaluates on.

    Training uses only HR images: crops come from them (images smaller than the crop are left out), and
    the task makes its own LR input from each crop (the ``superres`` task's synthetic downsampling).
    Stored LR images serve evaluation only: :meth:`PairedSplit.pairs` gives aligned (LR, HR) tiles, which
    the engine uses instead of degrading HR tiles. When a split has no stored LR image of the task's
    scale, ``pairs`` returns None, evaluation of that split uses the task's own downsampling, and
    report() says so in its warnings.

    Pairing: an LR file pairs with the HR file at the same relative path whose name is the LR name, or
    the LR name without its scale suffix (``0001x2.png`` ↔ ``0001.png``, ``img_001_SRF_2_LR.png`` ↔
    ``img_001_SRF_2_HR.png``), compared in lower case. ``scale_check``: an HR image of H x W px counts
    as cut to a multiple of the scale at its bottom and right (the "modcrop" with which these sets made
    their LR images), and its LR image must be exactly (H // scale) x (W // scale) px; a pair that is
    not is left out of evaluation and counted in report(). With ``scale_check = false`` every pair is
    used, cut to the extent both cover from the top-left corner. Files Pillow cannot decode (HR or LR)
    are skipped and counted. ``channels = 1`` is the full-range luminance of
    :func:`msframe.images.to_chw_uint8`, not the studio-range Y channel with shaved borders that
    super-resolution papers report, so PSNRs are not comparable with published tables. Nothing is
    downloaded.

    Example recipe section::

        [data]
        type = "paired_folder"
        root = "data/DIV2K"            # holds DIV2K_train_HR, DIV2K_valid_HR, DIV2K_valid_LR_bicubic/X2
    """

    SMALL_HINT = ("schedule.resolution", ("lower schedule.resolution (paired_folder keeps HR images at their "
                                          "stored size so that they stay aligned with their LR images)"))

    class Params(Params):
        root: str  # relative paths are relative to the current folder
        layout: Literal["auto", "subfolders", "div2k", "benchmark"] = "auto"
        channels: Literal[1, 3] = 3
        scale_check: bool = True  # LR side x scale must equal the HR side cut to a multiple of the scale
        val_fraction: float = Field(0.05, gt=0, lt=1)  # of the images a hold-out is taken from
        seed: int = Field(0, ge=0)  # of the hold-outs; fixed by default so that runs with different seeds share splits
        role: Literal["test", "val+test"] = "test"  # benchmark layout: the splits the evaluation set fills
        train_root: str | None = None  # benchmark layout: a folder of HR training images

    @property
    def root(self) -> Path:
        return Path(self.params.root).expanduser()

    def _expected(self, layout: str) -> str:
        if layout == "auto":
            return "paired_folder expects one of: " + "; ".join(f"({name}) {text}" for name, text in LAYOUTS.items())
        return f"paired_folder with layout = \"{layout}\" expects {LAYOUTS[layout]}"

    def _layout(self) -> str:
        root, layout = self.root, self.params.layout
        if not root.is_dir():
            state = "is a file, not a folder" if root.exists() else "does not exist"
            raise UserError(f"{shown(root)} {state}; {self._expected(layout)}", key="data.root")
        if layout != "auto":
            return layout
        if child(root, "DIV2K_train_HR") or child(root, "DIV2K_valid_HR"):
            return "div2k"
        if child(root, "train") or child(root, "test"):
            return "subfolders"
        if hr_folder(root):
            return "benchmark"
        raise UserError(f"{shown(root)} matches no known layout; {self._expected('auto')}", key="data.root")

    def _missing(self, layout: str, missing: list[str]) -> UserError:
        return UserError(f"{shown(self.root)} has no {' or '.join(missing)} folder; {self._expected(layout)}",
                         key="data.root")

    def _source(self, hr: Path, lr_base: Path | None, lr_names: tuple[str, ...], named_from: Path) -> Source:
        return Source(image_files(hr, EXTENSIONS), hr, named_from, lr_base, lr_names, shown(hr))

    def _hold_out(self, source: Source, keep: str) -> tuple[Source, Source]:
        """(rest, held out): a seeded ``val_fraction`` of ``source``'s files is held out."""
        p, n = self.params, len(source.files)
        rest, held = seeded_split(n, [1 - p.val_fraction, p.val_fraction], np.random.default_rng(p.seed))
        if not rest or not held:
            raise UserError(f"{source.origin} holds {n} image file(s): too few to hold out val_fraction = "
                            f"{p.val_fraction} and keep images for {keep}", key="data.root")
        return (replace(source, files=[source.files[i] for i in rest]),
                replace(source, files=[source.files[i] for i in held]))

    def _subfolders(self) -> dict[str, Source]:
        root, sources = self.root, {}
        val_dir = child(root, "val")
        missing = []
        for name in ("train", "test", "val") if val_dir else ("train", "test"):
            split_dir = child(root, name)
            hr = hr_folder(split_dir) if split_dir else None
            if hr is None:
                missing.append(f"{name}/HR")
            else:
                sources[name] = self._source(hr, hr.parent, LR_NAMES, root)
        if missing:
            raise self._missing("subfolders", missing)
        if not val_dir:
            sources["train"], sources["val"] = self._hold_out(sources["train"], "training")
            self.facts["val"] = f"a seeded hold-out (val_fraction = {self.params.val_fraction}) of train"
        return sources

    def _div2k(self) -> dict[str, Source]:
        root, sources, missing = self.root, {}, []
        for split, part in (("train", "train"), ("test", "valid")):
            hr = child(root, f"DIV2K_{part}_HR")
            if hr is None:
                missing.append(f"DIV2K_{part}_HR")
            else:
                sources[split] = self._source(hr, root, tuple(n.format(part=part, s="{s}") for n in DIV2K_LR_NAMES), root)
        if missing:
            raise self._missing("div2k", missing)
        sources["train"], sources["val"] = self._hold_out(sources["train"], "training")
        return sources

    def _benchmark(self) -> dict[str, Source]:
        p, root = self.params, self.root
        hr = hr_folder(root)
        if hr is None:
            raise self._missing("benchmark", ["HR"])
        bench = self._source(hr, root, LR_NAMES, root)
        if p.train_root is None:
            raise UserError(f"{shown(root)} is an evaluation set (layout \"benchmark\"), which holds no training "
                            "images; set data.train_root to a folder of high-resolution training images (e.g. "
                            "DIV2K_train_HR): paired_folder does not train on the images it evaluates on",
                            key="data.train_root")
        train_root = Path(p.train_root).expanduser()
        if not train_root.is_dir():
            state = "is a file, not a folder" if train_root.exists() else "does not exist"
            raise UserError(f"{shown(train_root)} {state}; it should hold high-resolution training images "
                            "(searched recursively)", key="data.train_root")
        train = Source(image_files(train_root, EXTENSIONS), train_root, train_root, None, (),
                       f"training images in {shown(train_root)}")
        self.facts["role"] = p.role
        if p.role == "val+test":
            test, val = self._hold_out(bench, "test")
            return {"train": train, "val": val, "test": test}
        train, val = self._hold_out(train, "training")
        return {"train": train, "val": val, "test": bench}

    @cached_property
    def _sources(self) -> dict[str, Source]:
        """Each split's files, found (and held out) once."""
        layout = self._layout()
        if layout != "benchmark":
            for key, given in (("role", "role" in self.params.model_fields_set), ("train_root", self.params.train_root)):
                if given:
                    raise UserError(f"only the benchmark layout reads it, and {shown(self.root)} has the {layout} layout",
                                    key=f"data.{key}")
        self.facts["layout"] = layout
        return {"subfolders": self._subfolders, "div2k": self._div2k, "benchmark": self._benchmark}[layout]()

    def split(self, name: str) -> PairedSplit:
        if name in self.SPLITS and name not in self._splits:
            source = self._sources[name]
            decoded = self.decode_split(name, source.files, f"{source.origin}; {self._expected(self.facts['layout'])}")
            key, hint = self.SMALL_HINT
            self._splits[name] = PairedSplit(
                decoded.images, [f.relative_to(source.named_from).as_posix() for f in decoded.paths],
                source=source, files=decoded.paths, channels=self.params.channels, scale_check=self.params.scale_check,
                skipped=self.skipped, augment=name == "train", small=self.small_policy(), label=name, key=key, hint=hint)
        return super().split(name)

    def report(self) -> dict:
        """The base report, plus per split and asked scale the stored LR images found (``stored_lr``),
        and warnings for splits evaluated with the task's own downsampling and for left-out pairs."""
        out = super().report()
        stored_lr: dict[str, dict] = {}
        for name, split in self._splits.items():
            for scale, why in split.asked.items():
                s = split.stored(scale)
                stored_lr.setdefault(name, {})[f"x{scale}"] = {
                    "folder": None if s.folder is None else str(s.folder), "pairs": len(s.lows),
                    "unpaired": s.unpaired, "mismatched": s.mismatched.count,
                    "mismatched_examples": list(s.mismatched.examples),
                }
                if why:
                    out["warnings"].append(f"{name} split: {why}; evaluation uses the task's own downsampling")
                if s.mismatched.count:
                    out["warnings"].append(
                        f"{name} split: {s.mismatched.count} stored LR x{scale} images are not 1/{scale} of their HR "
                        f"image's size (cut to a multiple of {scale}) and were left out of evaluation "
                        f"(e.g. {s.mismatched.examples[0]}; data.scale_check = false uses them cut to the common extent)")
                if s.unpaired and s.folder is not None:
                    out["warnings"].append(f"{name} split: {s.unpaired} images have no stored LR x{scale} file in "
                                           f"{s.folder} and were left out of evaluation with stored pairs")
        return {**out, "stored_lr": stored_lr}
