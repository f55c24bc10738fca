"""A component in a training step that never makes the host wait for the device (:func:`check_no_host_sync`)."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace

from msframe import plugins
from msframe.recipe import PluginChoice
from msframe.testing.plumbing import ParamsLike, _calling, _images, _params, _who
from msframe.testing.smoke import _SMOKE

#: the kinds whose code runs inside a training step (an estimator only shapes it, from outside)
STEP_KINDS = ("task", "backbone", "resampler")


def check_no_host_sync(kind: str, cls: type, params: ParamsLike = None) -> None:
    """One training step of a tiny Full-Multiscale run with this component in it, under
    :class:`msframe.hostsync.NoHostSync`: no host read of a tensor's value, no operator whose output
    shape depends on tensor values, no copy between host and device memory.

    The run is :func:`~msframe.testing.smoke_train`'s (a 3-mesh ``mge`` denoiser: a small ``cnn``,
    the ``area`` resampler), with the given task, backbone or resampler in place of the built-in, and
    adapted alike (``espcn`` for a task with a scale, meshes large enough for the backbone); the step
    is that of its finest stage, all three meshes, through the engine's
    :class:`~msframe.step.StepProgram` on the CPU (what is checked is listed in
    :func:`msframe.hostsync.check_step`). A finding is an AssertionError naming the component, which
    of its methods was running (or the backward node) and the operator.
    """
    from msframe import recipe as recipe_mod
    from msframe.assembly import assemble
    from msframe.hostsync import HostSync, check_step
    from msframe.train import Trainer

    if kind not in STEP_KINDS:
        raise ValueError(f"kind {kind!r} runs no code inside a training step (checked: {', '.join(STEP_KINDS)})")
    who = _who(kind, cls)
    p = _params(cls, params, who)
    loaded = plugins.load()
    data = copy.deepcopy(_SMOKE)
    if kind == "task":
        with _calling(who, f"{cls.__qualname__}(params).scale()"):
            scaled = cls(p).scale() > 1
        if scaled:
            data["backbone"] = {"type": "espcn", "features": [8]}
    recipe = recipe_mod.validate(data, loaded.registry, source="<host sync>")
    recipe = replace(recipe, **{kind: PluginChoice(f"checked-{cls.__name__}", cls, p)})  # section = kind for these
    caps, scale = recipe.backbone.build().capabilities(), recipe.task.build().scale()
    coarsest = max(caps.min_size, caps.multiple, recipe.resampler.build().min_side(), 2) * scale
    coarsest = -(-coarsest // (caps.multiple * scale)) * caps.multiple * scale
    # 64 px, as smoke_train: the coarsest mesh (16 px) then fits the built-in blur kernels
    recipe = replace(recipe, schedule=recipe.schedule.model_copy(update={"resolution": max(64, 4 * coarsest)}))
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(assemble(recipe, loaded), folder, loggers=[])
        stage = len(trainer.plan.stages) - 1
        terms = trainer.terms(stage)
        cleans = [_images(t.batch, trainer.assembly.channels, trainer.plan.resolution, t.index, trainer.device)
                  for t in terms]
        with _calling(who, "one training step"):
            try:
                check_step(trainer.program(stage, terms), recipe, 0, cleans, recipe.optim.lr)
            except HostSync as finding:
                raise AssertionError(f"{who}: {finding}") from None
