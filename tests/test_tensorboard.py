"""The tensorboard logger: event files in the run folder with the records' scalars on the work-unit
axis, continued on resume, and a located error naming the extra when the package is missing."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import crash_at_step, resume_run
from msframe import plugins
from msframe import recipe as recipe_mod
from msframe.errors import UserError

pytest.importorskip("tensorboard")


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_the_records_on_the_work_unit_axis_and_continues_on_resume(tiny_recipe, tmp_path):
    registry = plugins.load()
    overrides = ['loggers={tensorboard={}, jsonl={}}', "checkpoint.every=1.0", "eval.every=0.5"]
    recipe = recipe_mod.load(tiny_recipe, registry.registry, overrides)
    crash_at_step(recipe, registry, tmp_path, ["jsonl", "tensorboard"])
    resume_run(recipe, registry, tmp_path, ["jsonl", "tensorboard"])

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(tmp_path / "tensorboard")
    train = [r for r in records if r["event"] == "train"]
    # every training record once (the events after the checkpoint were replaced), at its work units
    assert [s for s, _ in scalars["train/loss"]] == [round(r["work_units"]) for r in train]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    vals = [r for r in records if r["event"] == "eval" and r["split"] == "val"]
    assert [v for _, v in scalars["val/psnr"]] == pytest.approx([r["psnr"] for r in vals], rel=1e-6)
    assert {"cost/seconds", "cost/flops", "test/psnr"} <= set(scalars)
    assert "work_units" not in scalars  # it is the step


def test_tensorboard_without_the_package_names_the_extra(tiny_recipe, monkeypatch):
    registry = plugins.load()
    recipe = recipe_mod.load(tiny_recipe, registry.registry, ['loggers={tensorboard={}}'])
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it could not be imported
    with pytest.raises(UserError, match=r"msframe\[tensorboard\]") as caught:
        recipe.loggers["tensorboard"].build()
    assert caught.value.key == "loggers.tensorboard"
