"""The whole-image evaluation protocol's parts that need no network: the held-out images degraded once,
the padding to a backbone's size rules and the tiling of large images, per-image scoring (:class:`Scoring`:
channel and shave), the summary of per-image rows (means, spread, the paired comparison) and writing
them. :mod:`msframe.inference` restores images with them (``restore_whole``, ``evaluate_whole``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from msframe import checkpoint, metrics, rng
from msframe.components import Capabilities, Degraded, Task


def held_out(recipe, task: Task, images: list[Tensor], names: list[str], key: str) -> list[tuple[str, Degraded]]:
    """``(name, degraded)`` per clean image ([C, H, W]): the image as a batch of one, degraded once with a
    generator of its own keyed by the evaluation seed, ``key`` (the split, or the folder), its index and
    name, so the draw depends neither on the batch nor on the other images nor on the training streams.

    For a task of scale s > 1 the image is first cut to sides that are multiples of s at its bottom and
    right ("modcrop", as super-resolution benchmarks make their low-resolution inputs), so the task can
    downsample it; the low-resolution input is what :func:`msframe.inference.restore_whole` pads to the backbone's rules.
    """
    s, out = task.scale(), []
    for i, (name, image) in enumerate(zip(names, images)):
        h, w = image.shape[-2:]
        clean = image[None, :, : h - h % s, : w - w % s]
        out.append((str(name), task.degrade(clean, rng.generator(recipe.eval.seed, "eval", key, i, name))))
    return out


def padded_side(n: int, caps: Capabilities) -> int:
    """The smallest side >= ``n`` that the backbone takes: a multiple of ``caps.multiple``, at least ``caps.min_size``."""
    return max(-(-caps.min_size // caps.multiple) * caps.multiple, -(-n // caps.multiple) * caps.multiple)


def pad_to(x: Tensor, height: int, width: int) -> Tensor:
    # replicated borders: bicubic upsampling (the SR baseline) clamps at the border in the same way, so
    # the baseline of the padded input, cropped back, is exactly the baseline of the image
    return torch.nn.functional.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]), mode="replicate")


def spans(n: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, keep_from, keep_to)`` of tiles of side ``tile`` covering ``n`` px with ``overlap`` px:
    each tile keeps its part at least ``overlap // 2`` px from a neighbour; the kept parts cover 0..n."""
    if n <= tile:
        return [(0, 0, n)]
    starts = [*range(0, n - tile, tile - overlap), n - tile]
    return [(a, 0 if k == 0 else a + overlap // 2, n if k == len(starts) - 1 else a + tile - overlap // 2)
            for k, a in enumerate(starts)]


#: input pixels shared by neighbouring tiles of an image restored in tiles (``eval.max_side``)
TILE_OVERLAP = 32


@dataclass(frozen=True)
class Scoring:
    """How whole images are scored: on ``channel`` ("y": BT.601 luma of RGB, "rgb": every channel as it
    is) with ``shave`` px left out at each side."""

    channel: str
    shave: int

    def view(self, x: Tensor) -> Tensor:
        """What the metrics see of an image batch."""
        return metrics.shaved(metrics.luma(x) if self.channel == "y" else x, self.shave)


def scoring(ev, task: Task, channels: int) -> Scoring:
    """The scoring of ``eval.channel`` and ``eval.shave``: "auto" is Y for a task of scale > 1 on RGB
    images (super-resolution papers) and every channel otherwise; shave -1 is the task's scale for
    scale > 1 and 0 otherwise. Y of a one-channel image is the image itself, so it is scored as it is."""
    s = task.scale()
    channel = ev.channel if ev.channel != "auto" else ("y" if s > 1 and channels == 3 else "rgb")
    return Scoring("y" if channel == "y" and channels == 3 else "rgb", s if ev.shave < 0 and s > 1 else max(ev.shave, 0))


def score_image(image: Tensor, task: Task, batch: Degraded, how: Scoring) -> dict:
    """One image's row: ``psnr``/``ssim`` of ``image`` (restored, [1, C, H, W]) against the clean target and
    ``input_psnr``/``input_ssim`` of the task's baseline; with a task region (``Task.region``) also
    ``hole_psnr``/``input_hole_psnr`` over it (NaN when the image has no such pixels)."""
    target = how.view(batch.target)
    row = {"psnr": float(metrics.psnr(how.view(image), target)), "ssim": float(metrics.whole_ssim(how.view(image), target))}
    naive = task.baseline(batch)
    if naive is not None:
        naive = how.view(naive.clamp(0, 1))
        row.update(input_psnr=float(metrics.psnr(naive, target)), input_ssim=float(metrics.whole_ssim(naive, target)))
    region = task.region(batch)
    if region is not None:
        inside = metrics.shaved(region, how.shave)
        row["hole_psnr"] = float(metrics.region_psnr(how.view(image), target, inside))
        if naive is not None:
            row["input_hole_psnr"] = float(metrics.region_psnr(naive, target, inside))
    return row


#: the per-image scores that :func:`summarize` averages and gives a spread
SCORES = ("psnr", "ssim", "input_psnr", "input_ssim", "hole_psnr", "input_hole_psnr")


def _std(values: list[float]) -> float:
    """The sample standard deviation (n - 1 in the denominator); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(rows: list[dict], how: Scoring) -> dict:
    """The result of per-image ``rows``: for each score its mean over the images and its spread
    (``<score>_std``, sample standard deviation), NaN rows left out; the paired comparison with the
    baseline (``psnr_gain_std``: the spread of the per-image psnr - input_psnr, whose mean is the
    difference of the means; ``improved``: images whose PSNR beats the baseline's); ``images``;
    ``tiled``: images restored in tiles (``eval.max_side``); and the protocol, channel and shave."""
    result: dict = {"protocol": "whole", "channel": how.channel, "shave": how.shave}
    for key in SCORES:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        if values:
            result[key], result[f"{key}_std"] = sum(values) / len(values), _std(values)
        elif any(key in r for r in rows):  # scored, but on no image a number (a diverged network): NaN, as tiles give
            result[key] = result[f"{key}_std"] = math.nan
    paired = [r["psnr"] - r["input_psnr"] for r in rows if "input_psnr" in r]
    if paired:
        result["psnr_gain_std"] = _std(paired)
        result["improved"] = sum(d > 0 for d in paired)
    result["images"] = len(rows)
    result["tiled"] = sum(bool(r.get("tiled")) for r in rows)
    return result


def write_rows(rows: list[dict], jsonl: Path, csv_path: Path | None = None) -> None:
    """Per-image rows as JSON lines at ``jsonl`` (and as CSV at ``csv_path``), each written atomically."""
    checkpoint.write_bytes(Path(jsonl), "".join(json.dumps(r) + "\n" for r in rows).encode())
    if csv_path is not None:
        text = io.StringIO()
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(text, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        checkpoint.write_bytes(Path(csv_path), text.getvalue().encode())
