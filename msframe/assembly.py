"""A recipe becomes a run once: every component built one time, every start-up check run one time.

Two records, each frozen, each built by one function:

- :func:`blueprint` → :class:`Blueprint`: the components that decide what a run will do (task,
  resampler, one estimator per stage, backbone and its capabilities) and the :class:`~msframe.plan.Plan`
  with its merge decision. Cheap: no data is read and no network is built, so ``--plan`` and a
  sweep's listing stop here.
- :func:`assemble` → :class:`Assembly`: the blueprint plus the device, the dataset and its splits,
  whether the training images live on the device, the network (initialised from the run seed), the
  forward it trains through (compiled or not) and its FLOP counter.

The trainer, ``run.py evaluate`` and ``restore``, ``tools/bench.py``, ``tools/compare.py`` and the
conformance kit's ``smoke_train`` all receive these records and build nothing themselves;
:func:`network` is the one place a backbone becomes an ``nn.Module``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msframe import __version__, rng
from msframe.components import Backbone, Capabilities, Dataset, Estimator, ImageSplit, Resampler, Task
from msframe.cost import FlopCounter
from msframe.distributed import World, check_shares
from msframe.errors import UserError
from msframe.plan import Plan
from msframe.plan import build as build_plan
from msframe.recipe import Recipe
from msframe.sampling import keep_resident
from msframe.telescoping import term_batches

SPLITS = ("train", "val", "test")


def resolve_device(name: str, world: World = World()) -> torch.device:
    """The training device; the ranks of a multi-process CUDA run each take ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world.size > 1:
        name = f"cuda:{world.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"'{name}' was asked for but CUDA is not available here (allowed: auto, cpu)", key="run.device")
    return device


@dataclass(frozen=True)
class Blueprint:
    """A recipe's components, each built once, and the plan they make."""

    recipe: Recipe
    task: Task
    resampler: Resampler
    estimators: tuple[Estimator, ...]  # one per stage, coarse to fine
    backbone: Backbone
    capabilities: Capabilities
    plan: Plan


def blueprint(recipe: Recipe) -> Blueprint:
    """Build the recipe's task, resampler, stage estimators and backbone once, and plan the run with
    them; an impossible schedule is a UserError (see :func:`msframe.plan.build`)."""
    task, resampler, backbone = recipe.task.build(), recipe.resampler.build(), recipe.backbone.build()
    estimators = tuple(c.build() for c in recipe.stage_estimators)
    caps = backbone.capabilities()
    plan = build_plan(recipe, list(estimators), caps, recipe.backbone.name, task.scale(), resampler.min_side())
    return Blueprint(recipe, task, resampler, estimators, backbone, caps, plan)


@dataclass(frozen=True, kw_only=True)
class Assembly(Blueprint):
    """Everything one run is made of, ready to train; built by :func:`assemble`."""

    device: torch.device
    world: World
    dataset: Dataset
    channels: int  # image channels of the dataset
    splits: dict[str, ImageSplit]  # train, val, test
    resident: bool  # the training images live on ``device`` (loader.resident)
    model: nn.Module
    forward: nn.Module  # what training steps call: ``model``, or it under torch.compile
    flops: FlopCounter
    versions: dict  # msframe, torch, python and every loaded plugin (recorded in the summary)


def versions(loaded=None) -> dict:
    """Versions of msframe, torch, Python and every plugin of ``loaded`` (recorded in every run folder)."""
    return {"msframe": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "plugins": loaded.versions() if loaded is not None else {}}


def network(bp: Blueprint, channels: int, device: torch.device) -> nn.Module:
    """The recipe's network for images of ``channels`` channels on ``device``, its weights drawn from
    the run seed (``("init",)``): the same recipe always starts from the same weights. Training,
    ``evaluate``, ``restore`` and ``compare`` all build it here (the latter then load trained weights)."""
    task = bp.task
    torch.manual_seed(rng.derive_seed(bp.recipe.run.seed, "init"))
    return bp.backbone.build(task.input_channels(channels), channels, task.cond_channels(), task.scale()).to(device)


def assemble(source: Recipe | Blueprint, loaded=None, world: World = World()) -> Assembly:
    """Build a run: the blueprint (made here from a recipe), the device, the data, the network.

    Runs every start-up check once, each a UserError naming its key: the plan's batches split over the
    processes; the train split offers a batch of distinct crops; every split has an image of the
    finest side; the backbone takes the task's conditioning; the network returns the target's shape
    on every mesh the plan uses. ``loaded`` (:class:`msframe.plugins.Loaded`) supplies the plugin
    versions the summary records.
    """
    bp = source if isinstance(source, Blueprint) else blueprint(source)
    recipe, plan = bp.recipe, bp.plan
    device = resolve_device(recipe.run.device, world)
    check_shares(plan, world)  # also on resume, which may run with another number of processes
    dataset = recipe.data.build()
    channels = dataset.channels()
    splits = {name: dataset.split(name) for name in SPLITS}
    _check_data(recipe, plan, splits)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    resident = keep_resident(recipe.loader.resident, recipe.loader.workers, device, splits["train"].nbytes(), free)
    if resident:
        splits["train"].to(device)
    if bp.task.cond_channels() and not bp.capabilities.conditioning:
        raise UserError(f"task '{recipe.task.name}' gives the network a conditioning input, which backbone "
                        f"'{recipe.backbone.name}' does not take", key="backbone.type")
    model = network(bp, channels, device)
    _check_output(bp, model, channels, device)
    flops = FlopCounter(model, bp.task.input_channels(channels), bp.task.cond_channels(), bp.task.scale())
    forward = _compiled(model, plan) if recipe.run.compile != "off" else model
    return Assembly(**{f: getattr(bp, f) for f in Blueprint.__dataclass_fields__}, device=device, world=world,
                    dataset=dataset, channels=channels, splits=splits, resident=resident, model=model,
                    forward=forward, flops=flops, versions=versions(loaded))


def _check_data(recipe: Recipe, plan: Plan, splits: dict[str, ImageSplit]) -> None:
    """The train split offers a whole batch of distinct crops; every split has an image of the finest side."""
    small = (", or data.small = \"upscale\" / \"reflect_pad\" to adapt small images"
             if "small" in type(recipe.data.params).model_fields else "")
    largest = max(t.batch for st in plan.stages for t in st.terms)
    offered = splits["train"].distinct_crops(plan.resolution)
    if offered < largest:
        raise UserError(
            f"the train split offers {offered} distinct {plan.resolution} px crops "
            f"({len(splits['train'].names)} images), fewer than one batch of {largest}; add images, or lower "
            f"schedule.batch (and the estimator's growth) or schedule.resolution{small}",
            key="data",
        )
    for name, split in splits.items():
        if split.usable(plan.resolution) < 1:
            raise UserError(
                f"the {name} split has no image of at least {plan.resolution} px on its short side "
                f"({len(split.names)} images); use smaller crops (schedule.resolution) or other data{small}",
                key="data",
            )


@torch.no_grad()
def _check_output(bp: Blueprint, model: nn.Module, channels: int, device: torch.device) -> None:
    """Run the network once per mesh the plan uses, on one sample, and require an output of the
    target's shape (channels and side): a third-party backbone's mistake is named before training.

    Runs in eval mode without gradients and draws from its own generator, so it changes no state
    that training or a resumed run depends on.
    """
    plan, name = bp.plan, bp.recipe.backbone.name
    meshes = sorted({m for st in plan.stages for t in st.terms for m in (t.fine_mesh, t.coarse_mesh) if m is not None})
    clean = torch.full((1, channels, plan.resolution, plan.resolution), 0.5, device=device)
    was_training = model.training
    model.eval()
    try:
        for mesh in meshes:
            g = rng.generator(bp.recipe.run.seed, "dry-run", mesh, device=device)
            batch, _ = term_batches(bp.task, bp.resampler, clean, g, mesh, None)
            side = plan.resolution >> mesh
            try:
                out = model(batch.input, batch.cond)
            except Exception as exc:
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                raise UserError(f"backbone '{name}' fails on a {tuple(batch.input.shape)} input (mesh {mesh}, "
                                f"{side} px): {type(exc).__name__}: {first}", key="backbone.type") from None
            if not isinstance(out, Tensor) or out.shape != batch.target.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise UserError(f"backbone '{name}' returns {got} for a {tuple(batch.input.shape)} input at {side} px "
                                f"(mesh {mesh}); the task needs {tuple(batch.target.shape)} (channels and side)",
                                key="backbone.type")
    finally:
        model.train(was_training)


def _compiled(model: nn.Module, plan: Plan) -> nn.Module:
    """The network under torch.compile with static shapes: the plan fixes every (resolution, batch),
    so the recompile limit is raised to their number instead of falling back to dynamic shapes."""
    import torch._dynamo  # only when compiling

    shapes = {shape for s in plan.stages for shape in plan.passes(s.index)}
    # an adaptive estimator changes batch sizes between blocks: leave room for its new shapes
    limit = len(shapes) + 1 + (64 if any(s.reallocate_every for s in plan.stages) else 0)
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
    return torch.compile(model, dynamic=False)
