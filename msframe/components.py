"""Base classes of the six kinds of component. Plugins subclass these and register the subclass.

Each subclass carries ``Params``, a pydantic model (``extra="forbid"``) that validates its recipe
section, and is constructed as ``cls(params)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, NamedTuple

import torch
from pydantic import AfterValidator
from torch import Tensor, nn

from msframe import fielddocs
from msframe.errors import UserError


class Params(fielddocs.Described):
    """Base of every component's parameter model: unknown keys are errors, values are validated,
    and no float may be infinite or NaN; each field's trailing comment is its description
    (:class:`msframe.fielddocs.Described`)."""


def _inside_run_folder(value: str) -> str:
    """A relative path that stays inside the run folder: no absolute path, no '..', no NUL, no backslash."""
    parts = PurePosixPath(value).parts
    if (not value or "\x00" in value or "\\" in value or value.startswith(("/", "~")) or ":" in value
            or not parts or any(p in ("..", ".") for p in parts)):
        raise ValueError("must be a relative path inside the run folder (no leading '/', '~', no '..', '\\', ':' or NUL)")
    return value


#: A parameter naming a file that a component writes: a relative path inside the run folder, so that
#: no recipe value can write elsewhere (``file: InRunFolder = "metrics.jsonl"``).
InRunFolder = Annotated[str, AfterValidator(_inside_run_folder)]


class Component:
    """Common constructor: every component is built from its validated parameters."""

    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params):
        self.params = params


# ----------------------------------------------------------------------------------------- tasks


class Degraded(NamedTuple):
    """One degraded batch: what the network sees, what it should produce, and side information.

    ``cond`` is ``None`` or a per-sample tensor of shape ``[N, k]`` (e.g. the noise level).
    ``state`` is the task's own record of the draw behind these samples (a blur kernel, a fill
    noise field) for coarse-mesh rules that need more than the input shows; the engine passes it
    from ``degrade`` through ``restrict`` to ``loss`` untouched and never reads it.
    """

    input: Tensor
    target: Tensor
    cond: Tensor | None = None
    state: Any = None


class Task(Component):
    """A degradation and its loss.

    ``degrade`` turns a clean finest-mesh batch in [0, 1] into a :class:`Degraded`, drawing every
    random parameter from ``generator`` (on the batch's device). ``restrict`` says how a degraded
    batch looks one mesh coarser; the default restricts input and target with the resampler, which
    is the paper's "degrade, then restrict".

    Example::

        class Denoise(Task):
            class Params(msframe.components.Params):
                sigma: float = 0.1

            def degrade(self, clean, generator):
                noise = torch.randn(clean.shape, generator=generator, device=clean.device)
                return Degraded(clean + self.params.sigma * noise, clean)
    """

    def input_channels(self, channels: int) -> int:
        """Channels of the network input for images with ``channels`` channels."""
        return channels

    def scale(self) -> int:
        """Target side / input side (2 or 4 for super-resolution, 1 otherwise)."""
        return 1

    def cond_channels(self) -> int:
        """Width ``k`` of the per-sample conditioning vector, 0 when there is none."""
        return 0

    def degrade(self, clean: Tensor, generator: torch.Generator) -> Degraded:
        raise NotImplementedError

    def restrict(self, batch: Degraded, resampler: Resampler) -> Degraded:
        """The same samples one mesh coarser (half the side)."""
        return batch._replace(input=resampler.restrict(batch.input), target=resampler.restrict(batch.target))

    def baseline(self, batch: Degraded) -> Tensor | None:
        """The naive restoration that evaluation reports as ``input_psnr``/``input_ssim``.

        By default the degraded input itself (its first channels, when it has the target's shape);
        tasks whose input has another size override this (e.g. bicubic upsampling).
        """
        shown = batch.input[:, : batch.target.shape[1]]
        return shown if shown.shape == batch.target.shape else None

    def region(self, batch: Degraded) -> Tensor | None:
        """The pixels whose content the degradation removed, ``[N, 1, H, W]`` (1 inside, 0 outside) at the
        target's size, or None (the default) when the task removes no region. Whole-image evaluation
        reports ``hole_psnr`` over it (and ``input_hole_psnr`` of the baseline), e.g. an inpainting hole."""
        return None

    def restored(self, output: Tensor, batch: Degraded) -> Tensor:
        """The restored image from the network's ``output``: the output contract of every backbone.

        A backbone predicts a *correction to the task's naive baseline* (:meth:`baseline`: the noisy or
        blurred input, the holed image, the bicubic upsampling), so ``restored = baseline + output``,
        and a freshly built network (whose last layer starts at zero) restores exactly the baseline.
        A task without a baseline takes the output as the image.
        """
        base = self.baseline(batch)
        return output if base is None else base + output

    def exploded(self, loss: float, first: float, factor: float) -> bool:
        """Whether a term's mean loss ``loss`` has blown up against the run's first loss ``first`` by
        ``factor`` (the divergence guard, ``run.divergence_factor``), in this task's loss units.

        The default suits losses in squared-error units: |loss| > factor · first for a positive first
        loss. A task whose loss is logarithmic (e.g. minus the PSNR) overrides it.
        """
        return first > 0 and abs(loss) > factor * first

    def loss(self, restored: Tensor, batch: Degraded) -> Tensor:
        """Per-sample loss of the network output against ``batch.target``, shape ``[N]``.

        Mean squared error unless a task says otherwise (``batch`` also gives the input, e.g. a mask).
        """
        return (restored - batch.target).pow(2).flatten(1).mean(1)


# ------------------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class Capabilities:
    """What input a backbone can take; the plan checks every level of every stage against it."""

    min_size: int = 1  # smallest input side in pixels
    multiple: int = 1  # input sides must be a multiple of this
    conditioning: bool = False  # accepts a per-sample conditioning vector
    scale: int | None = 1  # output side / input side; None: set by the task (build gets it)
    # a sample's output does not depend on its batch mates (no BatchNorm in training mode), so the
    # engine may evaluate all terms on one mesh in one pass over the concatenated batch
    batch_independent: bool = False


class Backbone(Component):
    """A network factory. ``build`` returns an ``nn.Module`` called as ``module(x, cond)``.

    ``cond`` is None or ``[N, cond_channels]``; the output has ``out_channels`` channels and sides
    ``scale`` times the input's. The output is a correction to the task's naive baseline (see
    :meth:`Task.restored`), not the image itself: a network should start near zero output (e.g. its
    last convolution initialised to zero) so that training starts from the baseline. A backbone whose
    capabilities say ``scale=None`` adapts to the
    task's scale; otherwise the task's scale must equal the backbone's.
    """

    def capabilities(self) -> Capabilities:
        return Capabilities()

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        raise NotImplementedError


# ------------------------------------------------------------------------------------ resamplers


class Resampler(Component):
    """Restriction of image batches ``[N, C, H, W]`` from mesh h to mesh 2h (half of each side)."""

    def restrict(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def min_side(self) -> int:
        """The smallest input side this restriction accepts (the plan checks every restriction)."""
        return 2


# ------------------------------------------------------------------------------------ estimators


@dataclass(frozen=True)
class Term:
    """One term of a multiscale estimator inside a stage.

    ``fine`` and ``coarse`` are level indices relative to the stage's finest mesh (0 = finest).
    ``coarse is None`` is a plain loss term; otherwise the term is the correction
    mean ℓ_fine − mean ℓ_coarse evaluated on the same ``batch`` samples.
    """

    fine: int
    coarse: int | None
    batch: int


class Estimator(Component):
    """How one iteration's loss is assembled from levels.

    ``terms(levels, batch)`` returns the terms of one iteration for a stage that may use ``levels``
    meshes below and including its finest, with ``batch`` samples planned at the finest mesh. Each
    term gets its own independent batch; the engine sums the terms and does one backward pass.
    """

    def terms(self, levels: int, batch: int) -> list[Term]:
        raise NotImplementedError

    def reallocate_every(self) -> int:
        """Iterations between calls of :meth:`reallocate`; 0 keeps the planned batches throughout."""
        return 0

    def reallocate(self, terms: list[Term], variances: list[float], costs: list[float]) -> list[Term]:
        """New batch sizes for the same terms, from the last block's statistics.

        ``terms`` carry the *planned* batch sizes of the stage (the budget to hold, whatever earlier
        re-allocations chose). ``variances[t]`` is the mean over the block of the batch variance of term t's per-sample
        value (ℓ_fine − ℓ_coarse for a correction, ℓ for a plain term); ``costs[t]`` is the work units
        of one sample of term t. Shapes stay fixed between calls.
        """
        return terms


# -------------------------------------------------------------------------------------- datasets


class ImageSplit:
    """A split of clean images. Crops are float tensors in [0, 1] of shape ``[N, C, size, size]``."""

    names: list[str]

    def crops(self, n: int, size: int, generator: torch.Generator) -> Tensor:
        """``n`` random crops (with the dataset's augmentation), all randomness from ``generator``."""
        raise NotImplementedError

    def tiles(self, size: int, per_image: int, max_images: int | None = None) -> Tensor:
        """Deterministic evaluation crops: up to ``per_image`` tiles of each of the first
        ``max_images`` usable images (all when None), no augmentation."""
        raise NotImplementedError

    def whole(self, max_images: int | None = None) -> list[Tensor]:
        """The first ``max_images`` images (all when None), whole, as ``[C, H, W]`` float tensors in [0, 1]
        on the CPU, in the order of :attr:`names`: what the whole-image evaluation protocol scores. The
        default says the split cannot give them (``eval.protocol = "tiles"`` still works)."""
        raise UserError(f"{type(self).__name__} cannot give whole images; set eval.protocol = \"tiles\"",
                        key="eval.protocol")

    def whole_pairs(self, scale: int, max_images: int | None = None) -> list[tuple[str, Tensor, Tensor]] | None:
        """Stored ``(name, low-resolution, high-resolution)`` whole images ([C, h, w] and [C, h·scale, w·scale],
        in [0, 1]) for a ``scale`` task, for the first ``max_images`` images that have one, or None (the
        default) when the split stores none; whole-image evaluation then uses them instead of degrading."""
        return None

    def usable(self, size: int) -> int:
        """How many images can give a crop of ``size`` px."""
        return len(self.names)

    def distinct_crops(self, size: int) -> int:
        """How many non-overlapping ``size``-px crops the split holds (one per image by default).

        The engine refuses to train when this is below one batch: "fewer images than one batch",
        counted so that a large photograph counts for the crops it can give.
        """
        return self.usable(size)

    def nbytes(self) -> int | None:
        """Bytes of the decoded images if held on a device (``loader.resident = "auto"`` keeps a split
        on the host when this is None, the default)."""
        return None

    def to(self, device: torch.device) -> ImageSplit:
        """This split with its decoded images held on ``device`` (crops are then cut there), in place.

        Crop positions still come from the CPU generator, so the batches are the same wherever the
        images live. The default says the dataset cannot do it.
        """
        raise UserError(f"{type(self).__name__} cannot hold its images on {device}; set loader.resident = false",
                        key="loader.resident")

    def pairs(self, size: int, scale: int, per_image: int, max_images: int | None = None) -> tuple[Tensor, Tensor] | None:
        """Stored (low-resolution, high-resolution) evaluation tiles for a ``scale`` task, or None.

        Datasets that ship real pairs (super-resolution benchmarks) return ``(lr, hr)`` with ``hr`` of
        side ``size`` and ``lr`` of side ``size // scale``, tiled like :meth:`tiles`; evaluation then
        uses them instead of degrading ``hr`` with the task. The default has no pairs.
        """
        return None


class Dataset(Component):
    """A source of clean images with ``train``, ``val`` and ``test`` splits."""

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def channels(self) -> int:
        """Channels of every image this dataset yields."""
        raise NotImplementedError

    def split(self, name: str) -> ImageSplit:
        """One of ``SPLITS``; a missing or unreadable source raises ``msframe.errors.UserError``."""
        raise NotImplementedError

    def report(self) -> dict:
        """What the run summary should record about the data, after the splits were made.

        Known keys: ``warnings`` (list of sentences shown to the user, e.g. that the finest mesh is an
        upsampled copy of smaller images), ``skipped`` (count of unreadable files) and
        ``skipped_examples`` (the first few of their paths).
        """
        return {}


# --------------------------------------------------------------------------------------- loggers


@dataclass
class RunInfo:
    """What a logger learns about the run when it opens."""

    dir: Any  # pathlib.Path of the run folder
    name: str
    recipe: dict  # the resolved recipe
    resumed_step: int  # the last step already logged before a resume (0 for a fresh run)
    point: dict | None = None  # a sweep's point (group, sweep, axes, labels, overrides); None for a lone run


class Logger(Component):
    """A sink for metric records (plain JSON-able dicts)."""

    def open(self, run: RunInfo) -> None:
        """Called once before the first record (also on resume); a sink with no set-up keeps this."""

    def log(self, record: dict) -> None:
        raise NotImplementedError

    def close(self, summary: dict | None) -> None:
        """Called once at the end: ``summary`` on success, None when the run failed or was interrupted."""
