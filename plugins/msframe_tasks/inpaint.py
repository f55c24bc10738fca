"""``inpaint``: fill in holes given by random masks (boxes, free-form strokes, pixel dropout)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import field_validator
from torch import Tensor

from msframe.components import Degraded, Params, Resampler, Task

from ._common import ChosenLoss, FractionRange, IntRange, LossKind, per_sample_loss, state_of, uniform

KINDS = ("boxes", "strokes", "dropout")


class Inpaint(ChosenLoss, Task):
    """Holes cut out of the image; the network sees the holed image and the mask.

    Network input: the image with its holes set to the fill (``fill``: a value, or ``"noise"``,
    uniform in [0, 1] per pixel and channel), followed by one mask channel, 1 = known pixel,
    0 = hole; so ``input_channels(C) = C + 1``. Target: the clean image.

    Each sample's mask is of one kind, drawn with the weights of ``mixture``; sizes are fractions of
    the image side, so a mask looks the same at any resolution:

    - ``boxes``: ``box_count`` axis-aligned rectangles with sides in ``box_size``.
    - ``strokes``: ``stroke_count`` free-form strokes, each a polyline of ``stroke_segments``
      segments with lengths in ``stroke_length`` and independent random directions, drawn
      ``stroke_width`` thick: a pixel is a hole when its centre lies within width/2 of a segment (a
      disc stamped continuously along it).
    - ``dropout``: every pixel missing independently with a rate drawn per sample from ``dropout``.

    Loss: the per-sample ``loss`` (default ``log_mse``) over the whole image, or (``loss_on =
    "hole"``) over the holes only (each sample's error summed over its holes and divided by channels
    × hole pixels; a sample without holes scores 0 before the logarithm).

    Coarse meshes: the coarse mask comes from the fine one by the ``coarse_known`` rule:
    ``"majority"`` (default), a coarse pixel is known iff the restricted mask R(m) is > 0.5 (for
    boxes and strokes, whose holes are fractions of the image side, the hole density stays within
    0.05 over two restrictions; for pixel dropout it grows, 0.49 to 0.82); ``"decimate"`` keeps one
    fine pixel of every 2x2 block (the same subsampling as the noise fill), which keeps the density
    exactly for dropout and in expectation for any mask, at the price of jagged hole edges (measured
    0.3-0.6 dB below majority for the default boxes and strokes, FMS at 600 WU); ``"all"``, iff
    R(m) > 0.999, i.e. every fine pixel under the resampler's weights is known. A known coarse pixel
    gets the resampler's average of the known fine pixels only, R(m·x) / R(m), so no hole content
    leaks into it and no fill darkens it; coarse holes get the fill again (for ``"noise"``, the same
    noise draw decimated: every other pixel of the finer mesh's field, which keeps its
    distribution). The target is restricted as usual.
    """

    class Params(Params):
        mixture: dict[Literal["boxes", "strokes", "dropout"], float] = {"boxes": 1.0, "strokes": 1.0}
        box_count: IntRange = (1, 4)
        box_size: FractionRange = (0.1, 0.5)  # box sides, fractions of the image side
        stroke_count: IntRange = (1, 4)
        stroke_segments: IntRange = (2, 6)  # segments per stroke
        stroke_length: FractionRange = (0.1, 0.3)  # segment length, fraction of the image side
        stroke_width: FractionRange = (0.04, 0.1)  # stroke thickness, fraction of the image side
        dropout: FractionRange = (0.3, 0.7)  # fraction of missing pixels, drawn per sample
        fill: float | Literal["noise"] = 0.0
        loss_on: Literal["image", "hole"] = "image"
        loss: LossKind = "log_mse"  # per-sample training loss (see _common.per_sample_loss); measured best
        coarse_known: Literal["majority", "decimate", "all"] = "majority"

        @field_validator("mixture")
        @classmethod
        def _weights(cls, v: dict) -> dict:
            if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
                raise ValueError(f"weights must be >= 0 with at least one > 0 (kinds: {', '.join(KINDS)})")
            return v

    def input_channels(self, channels: int) -> int:
        return channels + 1

    # ------------------------------------------------------------------ masks
    def masks(self, n: int, height: int, width: int, generator: torch.Generator, like: Tensor) -> Tensor:
        """``n`` masks ``[n, 1, height, width]`` on ``like``'s device and dtype: 1 = known, 0 = hole."""
        p = self.params
        kinds = [k for k in KINDS if p.mixture.get(k, 0) > 0]
        weights = torch.tensor([p.mixture[k] for k in kinds], device=like.device, dtype=torch.float)
        choice = torch.multinomial(weights, n, replacement=True, generator=generator)
        # Pixel centres in fractions of the image side.
        v = ((torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height)[:, None]
        u = ((torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width)[None, :]
        hole = torch.zeros((n, height, width), device=like.device, dtype=torch.bool)
        for i, kind in enumerate(kinds):
            holes = getattr(self, f"_{kind}")(n, u, v, generator, like)
            hole |= holes & (choice == i)[:, None, None]
        return (~hole).to(like.dtype)[:, None]

    def _boxes(self, n, u, v, generator, like) -> Tensor:
        p = self.params
        count = _count(p.box_count, n, generator, like)
        most = p.box_count[1]
        size = uniform(p.box_size, (n, most, 2), generator, like)
        corner = torch.rand((n, most, 2), generator=generator, device=like.device, dtype=like.dtype) * (1 - size)
        hole = torch.zeros((n, v.shape[0], u.shape[1]), device=like.device, dtype=torch.bool)
        for b in range(most):
            x0, y0 = corner[:, b, 0, None, None], corner[:, b, 1, None, None]
            x1, y1 = x0 + size[:, b, 0, None, None], y0 + size[:, b, 1, None, None]
            inside = (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
            hole |= inside & (b < count)[:, None, None]
        return hole

    def _strokes(self, n, u, v, generator, like) -> Tensor:
        p = self.params
        count = _count(p.stroke_count, n, generator, like)
        most, segments = p.stroke_count[1], p.stroke_segments[1]
        used = _count(p.stroke_segments, n * most, generator, like).view(n, most)
        start = torch.rand((n, most, 1, 2), generator=generator, device=like.device, dtype=like.dtype)
        length = uniform(p.stroke_length, (n, most, segments), generator, like)
        angle = uniform((0.0, 2 * math.pi), (n, most, segments), generator, like)
        radius = uniform(p.stroke_width, (n, most), generator, like) / 2
        steps = length[..., None] * torch.stack([angle.cos(), angle.sin()], -1)
        vertices = torch.cat([start, start + steps.cumsum(2)], 2).clamp(0, 1)  # [n, most, segments + 1, 2]
        hole = torch.zeros((n, v.shape[0], u.shape[1]), device=like.device, dtype=torch.bool)
        # One segment at a time keeps memory at a few [n, H, W] tensors, whatever the counts.
        for s in range(most):
            for j in range(segments):
                a, b = vertices[:, s, j], vertices[:, s, j + 1]
                d = b - a
                ax, ay, dx, dy = (t[:, None, None] for t in (a[:, 0], a[:, 1], d[:, 0], d[:, 1]))
                along = (((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-12)).clamp(0, 1)
                dist2 = (u - ax - along * dx) ** 2 + (v - ay - along * dy) ** 2
                active = (s < count) & (j < used[:, s])
                hole |= (dist2 <= radius[:, s, None, None] ** 2) & active[:, None, None]
        return hole

    def _dropout(self, n, u, v, generator, like) -> Tensor:
        rate = uniform(self.params.dropout, (n, 1, 1), generator, like)
        return torch.rand((n, v.shape[0], u.shape[1]), generator=generator, device=like.device, dtype=like.dtype) < rate

    # ------------------------------------------------------------------ task
    def degrade(self, clean: Tensor, generator: torch.Generator) -> Degraded:
        n, _, h, w = clean.shape
        mask = self.masks(n, h, w, generator, clean)
        if self.params.fill == "noise":
            fill = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
            return Degraded(_holed(clean, mask, fill), clean, None, fill)
        return Degraded(_holed(clean, mask, self.params.fill), clean)

    def region(self, batch: Degraded) -> Tensor:
        """The holes: 1 minus the mask channel (the input's last)."""
        return 1 - batch.input[:, -1:]

    def restrict(self, batch: Degraded, resampler: Resampler) -> Degraded:
        c = batch.target.shape[1]
        image, mask = batch.input[:, :c], batch.input[:, c:]
        weight = resampler.restrict(mask)
        target = resampler.restrict(batch.target)
        coarse_mask = self.known(weight, mask, target.shape[-2:])
        # R(m·x) / R(m): the average over known fine pixels, read only where the coarse pixel is
        # known; there R(m) > 0.5 (majority, all) or at least the weight of one known fine pixel
        # (decimate: 1/4 for area), so the floor only guards resamplers with negative lobes.
        known = resampler.restrict(mask * image) / weight.clamp_min(0.02)
        if self.params.fill != "noise":
            return Degraded(_holed(known, coarse_mask, self.params.fill), target)
        fill = state_of(batch, "task 'inpaint' with fill = 'noise'")[..., ::2, ::2][..., : target.shape[-2], : target.shape[-1]]
        return Degraded(_holed(known, coarse_mask, fill), target, None, fill)

    def known(self, restricted_mask: Tensor, mask: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        """The coarse mask (1 = known, 0 = hole) by the ``coarse_known`` rule, from the restricted
        mask R(m) or, for ``"decimate"``, from the fine ``mask`` and the coarse ``size``.
        A decimated pixel that R(m) gives no weight (a resampler whose footprint misses it) is a hole."""
        if self.params.coarse_known == "decimate":
            kept = mask[..., ::2, ::2][..., : size[0], : size[1]]
            return kept * (restricted_mask > 0.02).to(kept.dtype)
        threshold = 0.5 if self.params.coarse_known == "majority" else 0.999
        return (restricted_mask > threshold).to(restricted_mask.dtype)

    def loss(self, restored: Tensor, batch: Degraded) -> Tensor:
        hole = 1 - batch.input[:, -1:] if self.params.loss_on == "hole" else None
        return per_sample_loss(self.params.loss, restored, batch.target, hole)


def _count(bounds: tuple[int, int], n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """``n`` whole numbers drawn uniformly from [low, high], both included."""
    return torch.randint(bounds[0], bounds[1] + 1, (n,), generator=generator, device=like.device)


def _holed(image: Tensor, mask: Tensor, fill: Tensor | float) -> Tensor:
    """The network input: known pixels of ``image``, ``fill`` in the holes, then the mask channel."""
    return torch.cat([mask * image + (1 - mask) * fill, mask], 1)
