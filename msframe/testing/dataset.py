"""Conformance of datasets (:func:`check_dataset`): usable, reproducible splits."""

from __future__ import annotations

import json
import pickle
from typing import Any

import torch
from torch import Tensor

from msframe.components import Dataset, ImageSplit
from msframe.errors import UserError
from msframe.testing.plumbing import (
    ParamsLike,
    _calling,
    _expect,
    _finite,
    _generator,
    _global_seed,
    _irreproducible,
    _prepare,
    _rule,
    _shape,
)


def check_dataset(cls: type, params: ParamsLike, *, side: int = 16, n: int = 3, device: str = "cpu", seed: int = 0) -> None:
    """A dataset gives train, val and test splits of usable, reproducible crops.

    ``channels()`` is an int >= 1 and each split the trainer reads (train, val, test) exists with
    non-empty, unique string names, at least one image usable at ``side`` px, and no names shared
    between train and the held-out splits. ``crops(n, side, generator)`` is float32 ``[n, C, side, side]`` in [0, 1];
    the same seed gives the same crops twice and whatever seeds torch's, numpy's and Python's global
    generators have (``reproducible``; a failure names the cause it found), from a second dataset
    built from the same parameters, from a pickled copy of the split (what a DataLoader worker
    holds) and, unless the split refuses ``to(device)`` with a UserError, from a copy whose images
    were moved to ``device`` (``loader.resident``; the crops are then on ``device``). ``tiles`` are
    deterministic crops of the same form; ``pairs`` is None or (low, high)
    tiles for a ×2 task. ``report()`` is a JSON-serialisable dict (it goes into summary.json).
    """
    dataset, who = _prepare(cls, Dataset, "dataset", params)
    with _calling(who, "a second instance from the same parameters"):
        twin = cls(dataset.params)
    with _calling(who, "channels()"):
        channels = dataset.channels()
    _expect(isinstance(channels, int) and channels >= 1, who, f"channels() must be an int >= 1, got {channels!r}")
    names = {}
    for split_name in ("train", "val", "test"):  # the splits the trainer reads
        with _calling(who, f"split('{split_name}')"):
            split = dataset.split(split_name)
            other = twin.split(split_name)
        names[split_name] = _check_split(split, other, split_name, channels, side, n, device, seed, who)
    for held in ("val", "test"):
        shared = set(names["train"]) & set(names[held])
        _expect(not shared, who, f"train and {held} share images: {sorted(shared)[:5]}")
    with _calling(who, "report()"):
        report = dataset.report()
    _expect(isinstance(report, dict), who, f"report() must return a dict, got {report!r}")
    try:
        json.dumps(report)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{who}: report() is not JSON-serialisable ({exc}): {report!r}") from exc


def _check_split(split: ImageSplit, other: ImageSplit, name: str, channels: int, side: int, n: int, device: str,
                 seed: int, who: str) -> list[str]:
    where = f"split '{name}'"
    _expect(isinstance(split, ImageSplit), who, f"{where} is a {type(split).__qualname__}, not an ImageSplit")
    names = split.names
    _expect(isinstance(names, list) and names and all(isinstance(s, str) for s in names), who,
            f"{where}: names must be a non-empty list of strings, got {names!r}")
    _expect(len(set(names)) == len(names), who, f"{where}: names are not unique")
    _expect(other.names == names, who, f"{where}: a second dataset from the same parameters lists other images")
    usable = split.usable(side)
    _expect(usable >= 1, who, f"{where}: no image gives a {side} px crop (check a smaller side, or use larger images)")

    with _calling(who, f"{where}: crops({n}, {side}, generator)"):
        with _global_seed(0):
            c = split.crops(n, side, _generator(seed, "cpu"))
        cause = _irreproducible(lambda: split.crops(n, side, _generator(seed, "cpu")), torch.equal, "crops")
        from_twin = other.crops(n, side, _generator(seed, "cpu"))
        from_copy = pickle.loads(pickle.dumps(split)).crops(n, side, _generator(seed, "cpu"))
    _check_images(c, [n, channels, side, side], f"{where}: crops", who)
    _rule(cause is None, who, "reproducible", f"{where}: {cause}",
          "draw everything from the generator passed to crops, and keep no state between calls")
    _expect(torch.equal(c, from_twin), who, f"{where}: a second dataset from the same parameters gives other crops")
    _expect(torch.equal(c, from_copy), who, f"{where}: a pickled copy of the split (as in a DataLoader worker) gives "
                                            "other crops")
    resident = pickle.loads(pickle.dumps(split))
    with _calling(who, f"{where}: to({device!r})"):
        try:
            resident.to(torch.device(device))
            refused = False
        except UserError:  # the split keeps its images on the host: loader.resident is refused, which is allowed
            refused = True
    if not refused:
        with _calling(who, f"{where}: crops of a split moved to {device}"):
            moved = resident.crops(n, side, _generator(seed, "cpu"))
        _expect(isinstance(moved, Tensor) and moved.device.type == torch.device(device).type, who,
                f"{where}: crops of a split moved with to({device!r}) are not on {device}")
        _expect(torch.equal(moved.cpu(), c), who, f"{where}: a split moved with to({device!r}) gives other crops")

    per_image, max_images = 2, 2
    with _calling(who, f"{where}: tiles({side}, {per_image}, {max_images})"):
        tiles, tiles_again = split.tiles(side, per_image, max_images), split.tiles(side, per_image, max_images)
    _expect(isinstance(tiles, Tensor) and 1 <= len(tiles) <= per_image * min(max_images, usable), who,
            f"{where}: tiles must give 1 to {per_image * min(max_images, usable)} tiles, got "
            f"{_shape(tiles) if isinstance(tiles, Tensor) else tiles!r}")
    _check_images(tiles, [len(tiles), channels, side, side], f"{where}: tiles", who)
    _expect(torch.equal(tiles, tiles_again), who, f"{where}: tiles differ between two calls")

    with _calling(who, f"{where}: pairs({side}, 2, 1, 1)"):
        pairs = split.pairs(side, 2, 1, 1)
    if pairs is not None:
        _expect(isinstance(pairs, tuple) and len(pairs) == 2, who, f"{where}: pairs must be None or (low, high)")
        low, high = pairs
        _check_images(high, [len(high), channels, side, side], f"{where}: high-resolution pairs", who)
        _check_images(low, [len(high), channels, side // 2, side // 2], f"{where}: low-resolution pairs", who)
    return names


def _check_images(t: Any, want: list[int], where: str, who: str) -> None:
    _expect(isinstance(t, Tensor) and _shape(t) == want, who,
            f"{where}: expected a tensor of shape {want}, got {_shape(t) if isinstance(t, Tensor) else t!r}")
    _expect(t.dtype == torch.float32, who, f"{where}: dtype {t.dtype}, expected float32")
    _expect(_finite(t) and bool(t.min() >= 0) and bool(t.max() <= 1), who, f"{where}: values outside [0, 1]")
