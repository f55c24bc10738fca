"""One component in a tiny real training run (:func:`smoke_train`)."""

from __future__ import annotations

import copy
import math
import tempfile
from contextlib import nullcontext
from pathlib import Path

from msframe import plugins
from msframe.components import Logger, Params
from msframe.kinds import KINDS
from msframe.recipe import PluginChoice
from msframe.testing.plumbing import ParamsLike, _calling, _expect, _params, _rule, _who

#: the tiny Full-Multiscale run that :func:`smoke_train` substitutes one component into
_SMOKE = {
    "run": {"name": "smoke", "seed": 0, "device": "cpu"},
    "schedule": {"levels": 3, "iterations": [2, 2, 2], "batch": [4, 2, 2]},
    "eval": {"tiles_per_image": 1, "max_images": 2},
    "data": {"type": "sample_images", "val": ["moon"], "test": ["camera"], "exclude": [
        "astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "rocket", "motorcycle", "chelsea"]},
    "task": {"type": "denoise"},
    "backbone": {"type": "cnn", "channels": 8, "depth": 3},
    "resampler": {"type": "area"},
    "estimator": {"type": "mge"},
    "loggers": {},
}


def smoke_train(kind: str, cls: type, params: ParamsLike = None, *, directory: str | Path | None = None,
                margin_db: float = 1.0, good_db: float = 40.0) -> dict:
    """Train a tiny three-stage Full-Multiscale run through the real engine with this component in it.

    The run is a 3-mesh denoiser (a small ``cnn``, the ``area`` resampler, ``mge``, bundled photographs)
    with the given component in place of the built-in of its ``kind`` (task, backbone, resampler,
    estimator, dataset or logger; a logger is added). Where the component needs it, the rest adapts: a
    task with a scale gets ``espcn``, a task with conditioning keeps ``cnn`` (which takes it), and the
    finest mesh is made large enough for the backbone's claimed smallest side on all three meshes.
    Returns the run summary after checking that the run finished with finite test PSNR, the planned
    work and one train record per iteration, and that it judges well (``no-worse-than-baseline``): the
    restored test images are not worse than the task's naive baseline (``input_psnr``, when the task
    has one) by more than ``margin_db`` dB, unless they reach ``good_db`` dB (where the baseline is
    nearly perfect, the first steps of Adam alone move a network further than the baseline's error).
    A backbone starts at zero output, so six tiny steps can only move it a little from the baseline;
    a run far below it restores something else (an image added to the baseline, a large untrained
    output, a ``restored`` that drops the baseline).
    Needs the built-in plugins installed.
    """
    from dataclasses import replace

    from msframe import recipe as recipe_mod
    from msframe.assembly import assemble, blueprint
    from msframe.train import Trainer

    sections = {k.name: k.section for k in KINDS if k.single}  # the recipe section a component replaces
    loaded = plugins.load()
    data = copy.deepcopy(_SMOKE)
    if kind == "task":
        task = cls(_params(cls, params, _who("task", cls)))
        if task.scale() > 1:
            data["backbone"] = {"type": "espcn", "features": [8]}
    recipe = recipe_mod.validate(data, loaded.registry, source="<smoke>")
    who = _who(kind, cls)
    choice = PluginChoice(f"smoke-{cls.__name__}", cls, _params(cls, params, who))
    if kind == "logger":
        recipe = replace(recipe, loggers={**recipe.loggers, "smoke": choice})
    elif kind == "estimator":
        recipe = replace(recipe, estimator=choice, stage_estimators=(choice,) * recipe.schedule.stages)
    elif kind in sections:
        recipe = replace(recipe, **{sections[kind]: choice})
    else:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(k.name for k in KINDS)})")
    caps, scale = recipe.backbone.build().capabilities(), recipe.task.build().scale()
    coarsest = max(caps.min_size, caps.multiple, recipe.resampler.build().min_side(), 2) * scale
    coarsest = -(-coarsest // (caps.multiple * scale)) * caps.multiple * scale
    # 64 px: the coarsest mesh (16 px) then fits the built-in blur kernels with reflected borders
    recipe = replace(recipe, schedule=recipe.schedule.model_copy(update={"resolution": max(64, 4 * coarsest)}))
    records = []

    class Keep(Logger):
        def log(self, record):
            records.append(record)

    with tempfile.TemporaryDirectory() if directory is None else nullcontext(str(directory)) as folder:
        bp = blueprint(recipe)
        trainer = Trainer(assemble(bp, loaded), Path(folder) / "run",
                          loggers=[Keep(Params()), *[c.build() for c in recipe.loggers.values()]])
        with _calling(who, "a tiny Full-Multiscale run through the engine"):
            summary = trainer.train()
    plan = bp.plan
    _expect(summary is not None and math.isfinite(summary["test"]["psnr"]), who,
            f"the smoke run ended without a finite test PSNR: {summary and summary['test']}")
    _expect(abs(summary["work_units"] - plan.work) < 1e-6 * max(1.0, plan.work), who,
            f"the run did {summary['work_units']} WU, the plan {plan.work}")
    steps = [r["step"] for r in records if r.get("event") == "train"]
    _expect(steps == list(range(1, plan.iterations + 1)), who, f"train records for steps {steps}")
    test = summary["test"]
    if "input_psnr" in test:
        _rule(test["psnr"] >= min(test["input_psnr"] - margin_db, good_db), who, "no-worse-than-baseline",
              f"after the tiny run the restored test images have PSNR {test['psnr']:.2f} dB, the task's naive baseline "
              f"{test['input_psnr']:.2f} dB: more than {margin_db:g} dB worse than not restoring at all",
              "a backbone must return a correction that starts at zero (msframe.testing.check_backbone names the rule "
              "it breaks), and Task.restored must add it to Task.baseline (check_task)")
    return summary
