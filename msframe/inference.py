"""Using a trained network: evaluation (whole images or tiles), metrics, sample grids, and loading a run's weights.

Two evaluation protocols (``eval.protocol``). ``"whole"``, the default, is the field's: every held-out
image whole, degraded once, restored fully convolutionally (padded to the backbone's size rules and
cropped back; in overlapping tiles only above ``eval.max_side``, which the result states), scored per
image (:func:`evaluate_whole`), on the Y channel with a shaved border for super-resolution
(:mod:`msframe.wholeimage`). ``"tiles"`` averages over a fixed set of square crops (:func:`eval_batch`,
:func:`evaluate`), the measure of earlier versions, kept under that name.

:func:`restored` is the one place where the network's output becomes a restored image; the trainer,
``run.py evaluate``, ``run.py restore`` and ``tools/compare.py`` all go through it.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor, nn

from msframe import checkpoint, metrics, rng
from msframe.components import Capabilities, Degraded, ImageSplit, Task
from msframe.errors import UserError
from msframe.wholeimage import TILE_OVERLAP, held_out, pad_to, padded_side, score_image, scoring, spans, summarize


def restored(model: nn.Module, task: Task, batch: Degraded) -> Tensor:
    """The network's restoration of ``batch`` (not clamped): the task's baseline plus the network's
    correction (the output contract, ``Task.restored``). The network gets copies of the input and the
    conditioning, so one that changes its input in place can corrupt neither the baseline it is added
    to nor a cached evaluation batch."""
    cond = None if batch.cond is None else batch.cond.clone()
    return task.restored(model(batch.input.clone(), cond), batch)


def eval_batch(recipe, task: Task, split: ImageSplit, split_name: str, resolution: int) -> Degraded:
    """A split's fixed evaluation tiles, degraded once with the recipe's evaluation seed (CPU generator).

    For a super-resolution task and a dataset with stored pairs, the stored low-resolution tiles.
    The same recipe, split and resolution always give the same tiles and the same degradation.
    """
    ev, scale = recipe.eval, task.scale()
    pairs = split.pairs(resolution, scale, ev.tiles_per_image, ev.max_images) if scale > 1 else None
    if pairs is not None:  # a benchmark's own low-resolution inputs
        return Degraded(pairs[0], pairs[1])
    clean = split.tiles(resolution, ev.tiles_per_image, ev.max_images)
    return task.degrade(clean, rng.generator(ev.seed, "eval", split_name))


def _on(batch: Degraded, device, rows: slice) -> Degraded:
    return Degraded(*(None if t is None else t[rows].to(device) for t in batch[:3]))


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, batch: Degraded, device, chunk: int = 16) -> dict:
    """Mean per-image PSNR/SSIM of restored vs clean, and of the task's naive baseline vs clean.

    The baseline is the degraded input itself unless the task says otherwise (``Task.baseline``).
    """
    model.eval()
    out = {"psnr": [], "ssim": [], "input_psnr": [], "input_ssim": []}
    for i in range(0, batch.input.shape[0], chunk):
        part = _on(batch, device, slice(i, i + chunk))
        image = restored(model, task, part).clamp(0, 1)
        out["psnr"].append(metrics.psnr(image, part.target))
        out["ssim"].append(metrics.ssim(image, part.target))
        naive = task.baseline(part)
        if naive is not None:
            naive = naive.clamp(0, 1)
            out["input_psnr"].append(metrics.psnr(naive, part.target))
            out["input_ssim"].append(metrics.ssim(naive, part.target))
    result = {k: float(torch.cat(v).mean()) for k, v in out.items() if v}
    result["images"] = int(batch.input.shape[0])
    return result


@torch.no_grad()
def restore_tiles(model: nn.Module, task: Task, batch: Degraded, device, count: int) -> Tensor:
    """The first ``count`` tiles restored, clamped to [0, 1], on the CPU."""
    model.eval()
    return restored(model, task, _on(batch, device, slice(0, count))).clamp(0, 1).cpu()


def first(batch: Degraded, count: int) -> Degraded:
    """The first ``count`` samples of a degraded batch."""
    return batch._replace(input=batch.input[:count], target=batch.target[:count],
                          cond=None if batch.cond is None else batch.cond[:count])


def save_samples(model: nn.Module, task: Task, batch: Degraded, device, path: Path, count: int = 4) -> Path:
    """``path``: a PNG whose rows are (task baseline | restored | clean) for the first ``count`` tiles."""
    shown = first(batch, count)
    naive = task.baseline(shown)
    save_grid([None if naive is None else naive.clamp(0, 1), restore_tiles(model, task, shown, device, count),
               shown.target.clamp(0, 1)], path)
    return Path(path)


def to_uint8(image: Tensor):
    """A [C, H, W] tensor in [0, 1] as an H x W (x 3) uint8 array for Pillow or matplotlib."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def save_grid(columns: list[Tensor | None], path: Path) -> None:
    """A PNG whose row i shows tile i of every given column ([N, C, H, W] each, side by side)."""
    from PIL import Image

    columns = [c.cpu() for c in columns if c is not None]
    rows = [torch.cat([c[i] for c in columns], dim=2) for i in range(columns[0].shape[0])]
    png = io.BytesIO()
    Image.fromarray(to_uint8(torch.cat(rows, dim=1))).save(png, format="PNG")
    checkpoint.write_bytes(Path(path), png.getvalue())  # atomic: a kill leaves the previous image


class Evaluator:
    """Evaluation of one network on a run's splits under the recipe's ``eval.protocol``, each split's
    evaluation images degraded once and kept (:func:`held_out` or :func:`eval_batch`): every validation
    of a run sees the same images with the same degradation. Sample grids always show tiles."""

    def __init__(self, model: nn.Module, task: Task, splits: dict[str, ImageSplit], recipe, resolution: int, device,
                 capabilities: Capabilities = Capabilities()):
        self.model, self.task, self.splits, self.recipe = model, task, splits, recipe
        self.resolution, self.device, self.capabilities = resolution, device, capabilities
        self._tiles: dict[str, Degraded] = {}
        self._whole: dict[str, list[tuple[str, Degraded]]] = {}
        #: split -> the per-image rows of its latest whole-image evaluation
        self.rows: dict[str, list[dict]] = {}

    def tiles(self, split: str) -> Degraded:
        """The split's fixed evaluation tiles, made on first use."""
        if split not in self._tiles:
            self._tiles[split] = eval_batch(self.recipe, self.task, self.splits[split], split, self.resolution)
        return self._tiles[split]

    def images(self, split: str) -> list[tuple[str, Degraded]]:
        """The split's held-out images, whole and degraded once (:func:`held_out`), made on first use;
        for a super-resolution task and a split with stored pairs (``ImageSplit.whole_pairs``), those."""
        if split not in self._whole:
            s, most, scale = self.splits[split], self.recipe.eval.max_images, self.task.scale()
            pairs = s.whole_pairs(scale, most) if scale > 1 else None
            if pairs is not None:  # a benchmark's own low-resolution inputs
                self._whole[split] = [(name, Degraded(low[None], high[None])) for name, low, high in pairs]
            else:
                self._whole[split] = held_out(self.recipe, self.task, s.whole(most), s.names, split)
        return self._whole[split]

    def evaluate(self, split: str, chunk: int = 16) -> dict:
        """The split's scores under ``eval.protocol``: :func:`evaluate_whole`'s result (its rows kept in
        :attr:`rows`) or :func:`evaluate`'s tile means, each with its ``protocol``."""
        if self.recipe.eval.protocol == "tiles":
            return {"protocol": "tiles", **evaluate(self.model, self.task, self.tiles(split), self.device, chunk)}
        result, self.rows[split] = evaluate_whole(self.model, self.task, self.images(split), self.capabilities,
                                                  self.device, self.recipe.eval)
        return result

    def save_samples(self, split: str, path: Path, count: int = 4) -> Path:
        """``path``: rows of (task baseline | restored | clean) for the split's first tiles."""
        return save_samples(self.model, self.task, self.tiles(split), self.device, path, count)


# ------------------------------------------------------------------------- whole-image protocol


@torch.no_grad()
def restore_whole(model: nn.Module, task: Task, batch: Degraded, caps: Capabilities, device,
                  max_side: int = 0) -> tuple[Tensor, bool]:
    """``(restored, tiled)``: one degraded image ([1, ...], any size) restored at the target's size, clamped,
    on the CPU, the network in eval mode and without gradients.

    The input is padded (replicated borders) to the backbone's multiple and minimum side and the output
    cropped back. When the target's longer side exceeds ``max_side`` (> 0), the padded input is restored
    in overlapping tiles of at most ``max_side`` output px (or the backbone's minimum side), each keeping
    its part away from the overlap of ``TILE_OVERLAP`` input px, and ``tiled`` is True. The network never
    sees the target.
    """
    model.eval()
    s, (h, w), (th, tw) = task.scale(), batch.input.shape[-2:], batch.target.shape[-2:]
    ph, pw = padded_side(h, caps), padded_side(w, caps)
    x = pad_to(batch.input, ph, pw).to(device)
    cond = None if batch.cond is None else batch.cond.to(device)
    channels = batch.target.shape[1]
    tiled = max_side > 0 and max(th, tw) > max_side
    if not tiled:
        target = torch.zeros((1, channels, ph * s, pw * s), device=device)
        return restored(model, task, Degraded(x, target, cond))[..., :th, :tw].clamp(0, 1).cpu(), False
    side = max(padded_side(1, caps), (max_side // s) // caps.multiple * caps.multiple)
    overlap = min(TILE_OVERLAP, side // 2) // 2 * 2
    out = torch.zeros((1, channels, ph * s, pw * s))
    for y, y0, y1 in spans(ph, side, overlap):
        for left, x0, x1 in spans(pw, side, overlap):
            tile = x[..., y : y + min(side, ph), left : left + min(side, pw)]
            target = torch.zeros((1, channels, tile.shape[-2] * s, tile.shape[-1] * s), device=device)
            part = restored(model, task, Degraded(tile, target, cond)).cpu()
            out[..., y0 * s : y1 * s, x0 * s : x1 * s] = part[..., (y0 - y) * s : (y1 - y) * s, (x0 - left) * s : (x1 - left) * s]
    return out[..., :th, :tw].clamp(0, 1), True


def evaluate_whole(model: nn.Module, task: Task, images: list[tuple[str, Degraded]], caps: Capabilities, device,
                   ev, channels: int | None = None) -> tuple[dict, list[dict]]:
    """``(result, rows)``: every ``(name, degraded)`` image restored whole, one at a time
    (:func:`restore_whole`), and scored (:func:`score_image`) under ``ev`` (the recipe's eval section);
    ``rows`` holds one dict per image (its ``name``, ``height``, ``width``, ``tiled`` and scores) and
    ``result`` their :func:`summarize`. ``channels`` defaults to the images' own."""
    if not images:
        raise UserError("no image to evaluate", key="eval.max_images")
    how = scoring(ev, task, channels or images[0][1].target.shape[1])
    rows = []
    for name, batch in images:
        image, tiled = restore_whole(model, task, batch, caps, device, ev.max_side)
        rows.append({"name": name, "height": int(batch.target.shape[-2]), "width": int(batch.target.shape[-1]),
                     "tiled": tiled, **score_image(image, task, batch, how)})
    return summarize(rows, how), rows


def describe(result: dict) -> str:
    """One line of a result: means ± spread (whole images) or tile means."""
    def pm(key: str, digits: int) -> str:
        spread = f" ± {result[key + '_std']:.{digits}f}" if key + "_std" in result else ""
        return f"{result[key]:.{digits}f}{spread}" if key in result else "n/a"

    if result.get("protocol") != "whole":
        return (f"PSNR {pm('psnr', 2)} dB (input {pm('input_psnr', 2)}), SSIM {pm('ssim', 4)} "
                f"(input {pm('input_ssim', 4)}) on {result['images']} tiles (tile average)")
    text = (f"PSNR {pm('psnr', 2)} dB (input {pm('input_psnr', 2)}), SSIM {pm('ssim', 4)} (input {pm('input_ssim', 4)})")
    if "hole_psnr" in result:
        text += f", hole PSNR {pm('hole_psnr', 2)} (input {pm('input_hole_psnr', 2)})"
    if "improved" in result:
        text += f", {result['improved']}/{result['images']} images improved"
    where = f"{result['channel'].upper()}, shave {result['shave']}"
    tiled = f", {result['tiled']} in tiles" if result["tiled"] else ""
    return f"{text} over {result['images']} whole images ({where}{tiled}; mean ± std over images)"
