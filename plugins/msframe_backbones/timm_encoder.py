"""``timm``: any timm model with ``features_only`` as the encoder, and a light decoder back to full size."""

from __future__ import annotations

import difflib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from msframe.components import Backbone, Capabilities, Params
from msframe.errors import UserError

from .layers import divisible, zero_output


def _timm():
    # Imported on first use: importing timm takes seconds, and only this backbone needs it.
    import timm

    return timm


def close_names(name: str, n: int = 5) -> list[str]:
    """Up to ``n`` timm model names that look like ``name`` (spelling first, then substrings)."""
    timm = _timm()
    names = timm.list_models()
    return difflib.get_close_matches(name, names, n=n, cutoff=0.6) or timm.list_models(f"*{name}*")[:n]


def create_encoder(model: str, out_indices: tuple[int, ...] | None, in_chans: int = 3) -> nn.Module:
    """``timm.create_model(model, features_only=True)`` without pretrained weights; what timm refuses
    (no feature extraction for this model, indices out of range) becomes a UserError on the right key."""
    timm = _timm()
    try:
        return timm.create_model(
            model, pretrained=False, features_only=True, in_chans=in_chans,
            **({} if out_indices is None else {"out_indices": out_indices}),
        )
    except Exception as exc:  # timm reports both problems with assorted exception types
        error = exc
    if out_indices is not None:
        levels = len(create_encoder(model, None).feature_info)  # raises the model's own error if that fails too
        raise UserError(
            f"out_indices = {list(out_indices)} do not fit '{model}', whose encoder has {levels} feature levels "
            f"(indices 0 to {levels - 1})",
            key="backbone.out_indices",
        )
    raise UserError(
        f"timm cannot build '{model}' as a feature encoder (features_only = true): {type(error).__name__}: {error}",
        key="backbone.model",
    )


@dataclass(frozen=True)
class EncoderShape:
    reduction: int  # input side / side of the coarsest feature map
    min_size: int  # smallest input side the encoder accepts, a multiple of ``reduction``
    batch_independent: bool  # no layer mixes samples in training mode (no batch normalisation)


def _mixes_samples(module: nn.Module) -> bool:
    """Whether a layer normalises over the batch in training mode (BatchNorm and its timm variants,
    batch-statistics EvoNorm); frozen batch norms use fixed statistics and do not."""
    name = type(module).__name__.lower()
    if "frozen" in name:
        return False
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or "batchnorm" in name or name.startswith("evonorm2db")


@functools.cache
def encoder_shape(model: str, out_indices: tuple[int, ...] | None) -> EncoderShape:
    """The encoder's total reduction and smallest input, found by forward passes on the meta device.

    The smallest multiple k·reduction (k ≤ 4) that the encoder accepts is the minimum, provided the
    next multiple works too; an encoder that takes neither (e.g. a vision transformer built for one
    image size) cannot run on several meshes and is a UserError.
    """
    encoder = create_encoder(model, out_indices).to("meta")  # meta: shapes only, no arithmetic
    reduction = max(encoder.feature_info.reduction())
    failure = None
    for k in range(1, 5):
        try:
            for side in (k * reduction, (k + 1) * reduction):
                encoder(torch.empty(2, 3, side, side, device="meta"))
        except Exception as exc:  # a size the encoder refuses; its message is shown if none works
            failure = f"{type(exc).__name__}: {exc}"
            continue
        independent = not any(_mixes_samples(m) for m in encoder.modules())
        return EncoderShape(reduction, k * reduction, independent)
    raise UserError(
        f"timm model '{model}' does not accept inputs of any size that is a multiple of {reduction} px (tried up to "
        f"{5 * reduction} px; {failure}); msframe evaluates one network on meshes of several sizes and needs an "
        f"encoder that does",
        key="backbone.model",
    )


def load_weights(encoder: nn.Module, path: str) -> None:
    """Load a state dict (``torch.save`` or ``.safetensors`` file) into ``encoder``, non-strictly.

    Input convolutions pretrained for another channel count are adapted with
    ``timm.models.adapt_input_conv``; other tensors of the wrong shape are skipped. Missing,
    unexpected, adapted and skipped keys are reported as one warning.
    """
    key = "backbone.pretrained_path"
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"weights file {path} not found", key=key) from None
    except Exception as exc:  # torch.load and safetensors report unreadable files with assorted types
        raise UserError(f"cannot load weights from {path}: {type(exc).__name__}: {exc}", key=key) from None
    for wrapper in ("state_dict", "model"):  # common checkpoint layouts that wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict (a mapping of names to tensors)", key=key)

    own = encoder.state_dict()
    adapted, skipped = [], []
    for name, value in list(state.items()):
        target = own.get(name)
        if target is None or target.shape == value.shape:
            continue
        if value.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            state[name] = _timm().models.adapt_input_conv(target.shape[1], value)
            adapted.append(name)
        else:
            del state[name]
            skipped.append(name)
    result = encoder.load_state_dict(state, strict=False)
    problems = [
        f"{what}: {len(names)} ({', '.join(names[:4])}{', …' if len(names) > 4 else ''})"
        for what, names in (
            ("missing", result.missing_keys), ("unexpected", result.unexpected_keys),
            ("adapted to the input channels", adapted), ("skipped for their shape", skipped),
        )
        if names
    ]
    if problems:
        warnings.warn(f"weights {path} loaded into the timm encoder with keys " + "; ".join(problems), stacklevel=2)


def _fuse(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
    )


def _resize(h: Tensor, like: Tensor) -> Tensor:
    # to the skip's size rather than ×2: encoders whose stages do not halve exactly still line up
    return F.interpolate(h, size=like.shape[-2:], mode="bilinear", align_corners=False)


class TimmUNetModule(nn.Module):
    """The network of :class:`TimmEncoder`; called as ``module(x, cond)`` (``cond`` is not used)."""

    def __init__(self, encoder: nn.Module, in_channels: int, out_channels: int, p: TimmEncoder.Params):
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info.channels()
        width = p.decoder_channels
        self.lateral = nn.Conv2d(channels[-1], width, 1)
        self.fuse = nn.ModuleList(_fuse(width + c, width, p.groups) for c in reversed(channels[:-1]))  # coarse to fine
        self.final = _fuse(width + in_channels, width, p.groups)  # with the input itself, at full resolution
        self.head = zero_output(nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        features = self.encoder(x)
        h = self.lateral(features[-1])
        for skip, fuse in zip(reversed(features[:-1]), self.fuse):
            h = fuse(torch.cat([_resize(h, skip), skip], 1))
        return self.head(self.final(torch.cat([_resize(h, x), x], 1)))


class TimmEncoder(Backbone):
    """A timm model created with ``features_only = true`` as the encoder (randomly initialised, or
    from a local weights file), and a decoder that goes from the coarsest feature map back to full
    resolution: at each finer feature map a bilinear upsampling, concatenation with that map and
    two 3x3 convolutions of ``decoder_channels`` (GroupNorm, SiLU); last the same with the input
    itself. Inputs must have sides that are multiples of the encoder's total reduction (32 for
    most models) and at least its smallest working size. Encoders with BatchNorm normalise each
    mesh's batch with its own statistics.
    """

    class Params(Params):
        model: str = "resnet18"  # a timm model name (timm.list_models())
        pretrained_path: str | None = None  # a local state dict for the encoder; nothing is downloaded
        out_indices: tuple[Annotated[int, Field(ge=0)], ...] | None = None  # encoder feature levels; all when unset
        decoder_channels: int = Field(64, ge=1)
        groups: int = Field(8, ge=1)  # GroupNorm groups in the decoder

        @field_validator("model")
        @classmethod
        def _known(cls, v: str) -> str:
            if not _timm().is_model(v):
                close = close_names(v)
                raise ValueError(
                    f"not a timm model; close names: {', '.join(close)}" if close else "not a timm model (see timm.list_models())"
                )
            return v

        @field_validator("pretrained_path")
        @classmethod
        def _exists(cls, v: str | None) -> str | None:
            if v is not None and not Path(v).is_file():
                raise ValueError(f"weights file {v} not found")
            return v

        @field_validator("out_indices")
        @classmethod
        def _increasing(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
            if v is not None and (not v or any(a >= b for a, b in zip(v, v[1:]))):
                raise ValueError("must list feature levels in increasing order, e.g. [1, 2, 3, 4]")
            return v

        @model_validator(mode="after")
        def _groups(self):
            divisible(self.decoder_channels, self.groups, "GroupNorm groups (groups)")
            return self

    def capabilities(self) -> Capabilities:
        shape = encoder_shape(self.params.model, self.params.out_indices)
        return Capabilities(min_size=shape.min_size, multiple=shape.reduction, conditioning=False, scale=1,
                            batch_independent=shape.batch_independent)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        p = self.params
        encoder = create_encoder(p.model, p.out_indices, in_channels)
        if p.pretrained_path is not None:
            load_weights(encoder, p.pretrained_path)
        return TimmUNetModule(encoder, in_channels, out_channels, p)
