"""The records a run gives its loggers, and its summary: their fields, in one place.

``Logger.log(record)`` receives a :class:`TrainRecord` per iteration, an :class:`EvalRecord` per
evaluation (validation and test) and an :class:`AllocationRecord` when an adaptive estimator
re-allocates batch sizes; ``record["event"]`` says which (:data:`EVENTS`). ``Logger.close(summary)``
receives the :class:`Summary`, which is also the run folder's ``summary.json``.

They are ``typing.TypedDict`` classes, a decision taken on purpose: at run time a record stays a plain
JSON-ready dict (third-party loggers keep working, ``metrics.jsonl`` and ``summary.json`` are the
dicts as they are), while the fields and what they mean are declared here, for type checkers, for
plugin authors and for :func:`missing_keys`. Units: work units (WU; one sample on the finest mesh
costs 1 WU, a sample of side r costs (r / resolution)², see :mod:`msframe.plan`), FLOPs of forward
and backward passes (:mod:`msframe.cost`), seconds of wall clock, sides in pixels. Running totals
("so far") count the whole run, this record's step included.

:data:`TRAIN_RECORD`, :data:`ALLOCATION_RECORD`, :data:`EVAL_RECORD` and :data:`SUMMARY` are examples
of each, as a 2-level MGE run emits them (``msframe.testing.check_logger`` feeds them to a logger).
"""

# no `from __future__ import annotations`: Python 3.11 cannot tell NotRequired fields in string annotations

import typing
from typing import Any, Literal, NotRequired, TypedDict


class TermStats(TypedDict):
    """One estimator term of one iteration (``TrainRecord.levels``).

    ``term``: the term's index in its stage; ``resolution``: side of its fine mesh; ``batch``: its
    samples; ``work``: its WU per iteration; ``fine_loss``: mean loss on the fine mesh; ``value``: its
    contribution to the iteration's loss (``fine_loss - coarse_loss`` for a correction, ``fine_loss``
    for a plain term); ``work_share``: its part of the iteration's WU; ``flops``: its FLOPs this
    iteration; ``seconds``: its part of the iteration's seconds (one backward pass serves all terms, so
    the step's time is shared by FLOPs). A correction (a fine and a coarse mesh) adds
    ``coarse_resolution``, ``coarse_loss`` and ``correction_var``, the variance over its batch of the
    per-sample ``loss_fine - loss_coarse``; a plain term adds ``loss_var``, the variance over its batch
    of the per-sample loss.
    """

    term: int
    resolution: int
    batch: int
    work: float
    fine_loss: float
    value: float
    work_share: float
    flops: float
    seconds: float
    coarse_resolution: NotRequired[int]
    coarse_loss: NotRequired[float]
    correction_var: NotRequired[float]
    loss_var: NotRequired[float]


class MeshCost(TypedDict):
    """What one mesh side cost so far (``meshes`` maps the side, as a string, to this): ``work_units``
    (WU), ``flops`` and ``seconds`` (the terms' seconds shared by the FLOPs on this mesh)."""

    work_units: float
    flops: float
    seconds: float


class TrainRecord(TypedDict):
    """One iteration (``event = "train"``).

    ``stage``: the stage's index (stages go coarse to fine); ``stage_resolution``: side of the stage's
    finest mesh; ``iteration``: the iteration within the stage, from 0; ``stage_iterations``: the
    stage's planned iterations; ``step``: optimizer steps so far (1 … ``total_steps``, the run's
    planned iterations); ``loss``: the estimator's loss (the sum of the terms' values); ``lr``: the
    learning rate of this step; ``levels``: one :class:`TermStats` per term; ``work_units``: WU so far,
    of ``total_work_units`` planned; ``flops``: FLOPs so far; ``seconds``: training seconds so far
    (evaluations excluded); ``step_seconds``: this step's seconds; ``meshes``: the cost so far per mesh
    side.
    """

    event: Literal["train"]
    stage: int
    stage_resolution: int
    iteration: int
    stage_iterations: int
    step: int
    total_steps: int
    loss: float
    lr: float
    levels: list[TermStats]
    work_units: float
    total_work_units: float
    flops: float
    seconds: float
    step_seconds: float
    meshes: dict[str, MeshCost]


class AllocationRecord(TypedDict):
    """New batch sizes chosen by an adaptive estimator (``event = "allocation"``,
    ``Estimator.reallocate``) for the rest of a stage.

    ``stage``, ``step`` (steps so far), ``work_units`` (WU so far); ``iteration``: the stage's
    iterations done, from which the new batches apply; ``batches``: the new batch per term (rounded up
    to a multiple of the number of processes); ``variances``: each term's mean variance since the last
    allocation (``correction_var`` or ``loss_var``), which the estimator was given; ``costs``: WU of one
    sample of each term; ``work_per_iteration``: WU of an iteration with the new batches.
    """

    event: Literal["allocation"]
    stage: int
    step: int
    work_units: float
    iteration: int
    batches: list[int]
    variances: list[float]
    costs: list[float]
    work_per_iteration: float


class EvalResult(TypedDict):
    """An evaluation's scores under its ``protocol`` (``eval.protocol``).

    ``"whole"``: per-image scores of the held-out images, whole, averaged over the ``images``:
    ``psnr`` (dB) and ``ssim`` of the restored images against the clean ones, and
    ``input_psnr``/``input_ssim`` of the task's naive baseline (``Task.baseline``; absent when the
    task has none), on ``channel`` ("y": BT.601 luma, "rgb") with ``shave`` px left out at each side;
    each score's spread over the images, ``<score>_std`` (sample standard deviation); the paired
    comparison with the baseline, ``psnr_gain_std`` (spread of the per-image psnr - input_psnr) and
    ``improved`` (images whose PSNR beats the baseline's); ``tiled``: images restored in overlapping
    tiles (``eval.max_side``). A task with a region (``Task.region``, e.g. inpainting holes) adds
    ``hole_psnr``/``input_hole_psnr`` over it, with their spreads.

    ``"tiles"``: ``psnr``, ``ssim``, ``input_psnr`` and ``input_ssim`` are means over ``images``
    evaluation tiles (the tile average).
    """

    protocol: Literal["whole", "tiles"]
    psnr: float
    ssim: float
    input_psnr: NotRequired[float]
    input_ssim: NotRequired[float]
    images: int
    channel: NotRequired[Literal["y", "rgb"]]
    shave: NotRequired[int]
    psnr_std: NotRequired[float]
    ssim_std: NotRequired[float]
    input_psnr_std: NotRequired[float]
    input_ssim_std: NotRequired[float]
    hole_psnr: NotRequired[float]
    hole_psnr_std: NotRequired[float]
    input_hole_psnr: NotRequired[float]
    input_hole_psnr_std: NotRequired[float]
    psnr_gain_std: NotRequired[float]
    improved: NotRequired[int]
    tiled: NotRequired[int]


class EvalRecord(EvalResult):
    """One evaluation (``event = "eval"``): its :class:`EvalResult` and where the run stood.

    ``split``: ``"val"`` or ``"test"``; ``stage``, ``step``, ``work_units``, ``flops`` and ``seconds``:
    the training so far (as in :class:`TrainRecord`); ``samples``: the path, relative to the run
    folder, of the PNG grid of the evaluation's first tiles (baseline | restored | clean).
    """

    event: Literal["eval"]
    split: str
    stage: int
    step: int
    work_units: float
    flops: float
    seconds: float
    samples: str


class StageCost(TypedDict):
    """What one stage did: its index ``stage``, the ``resolution`` of its finest mesh, its
    ``iterations``, ``work_units`` (WU), ``flops`` and training ``seconds``."""

    stage: int
    resolution: int
    iterations: int
    work_units: float
    flops: float
    seconds: float


class SplitNames(TypedDict):
    """A split of the dataset: its number of ``images`` and the ``names`` of (at most) the first 100."""

    images: int
    names: list[str]


class Versions(TypedDict):
    """Versions of ``msframe``, ``torch``, ``python`` and, per loaded plugin (entry point), its
    distribution and version (``plugins``: ``{"msframe_tasks": "msframe 0.1.0"}``)."""

    msframe: str
    torch: str
    python: str
    plugins: dict[str, str]


class Summary(TypedDict):
    """The end of a run: ``Logger.close(summary)`` and ``summary.json``.

    ``name``: the run's name; ``recipe``: the recipe file as given; ``device``: the training device;
    ``test``: the test split's scores; ``val_best_psnr``: the best validation PSNR (dB);
    ``work_units``: WU done; ``baseline_work_units``: WU of single-scale training at the finest mesh
    (the plan's baseline iterations × the finest batch); ``work_ratio``: baseline / done (None when
    nothing was done); ``flops``; ``seconds``: training seconds; ``eval_seconds``: seconds of
    evaluations; ``iterations``: optimizer steps done; ``stages``: per stage, what it did; ``meshes``:
    the cost per mesh side; ``splits``: the images of each split; ``data``: the dataset's own report
    (``Dataset.report``); ``versions``; ``processes``: the number of training processes.
    """

    name: str
    recipe: str
    device: str
    test: EvalResult
    val_best_psnr: float
    work_units: float
    baseline_work_units: float
    work_ratio: float | None
    flops: float
    seconds: float
    eval_seconds: float
    iterations: int
    stages: list[StageCost]
    meshes: dict[str, MeshCost]
    splits: dict[str, SplitNames]
    data: dict[str, Any]
    versions: Versions
    processes: int


#: ``record["event"]`` -> the record's type
EVENTS: dict[str, type] = {"train": TrainRecord, "eval": EvalRecord, "allocation": AllocationRecord}


def _walk(record_type: type, record: Any, path: str) -> typing.Iterator[tuple[str, str]]:
    """("missing" or "undeclared", dotted path) for each key of ``record`` and of the typed dicts in it."""
    if not isinstance(record, dict):
        yield "missing", f"{path.rstrip('.') or 'the record'} (a {type(record).__name__}, not a dict)"
        return
    for key in sorted(record_type.__required_keys__ - record.keys()):
        yield "missing", f"{path}{key}"
    hints = typing.get_type_hints(record_type)
    for key, value in record.items():
        if key not in hints:
            yield "undeclared", f"{path}{key}"
            continue
        hint, args = hints[key], typing.get_args(hints[key])
        if typing.is_typeddict(hint):
            yield from _walk(hint, value, f"{path}{key}.")
        elif typing.get_origin(hint) is list and typing.is_typeddict(args[0]) and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _walk(args[0], item, f"{path}{key}[{i}].")
        elif typing.get_origin(hint) is dict and typing.is_typeddict(args[1]) and isinstance(value, dict):
            for name, item in value.items():
                yield from _walk(args[1], item, f"{path}{key}[{name!r}].")


def missing_keys(record_type: type, record: Any) -> list[str]:
    """The required keys of ``record_type`` (a TypedDict of this module) that ``record`` lacks, as
    dotted paths (``"levels[1].fine_loss"``), looking into the typed dicts it holds; [] when none."""
    return [path for what, path in _walk(record_type, record, "") if what == "missing"]


def undeclared_keys(record_type: type, record: Any) -> list[str]:
    """The keys of ``record`` (and of the typed dicts it holds) that ``record_type`` does not declare."""
    return [path for what, path in _walk(record_type, record, "") if what == "undeclared"]


# ------------------------------------------------------------------------------------ examples

#: A training record as :class:`msframe.train.Trainer` emits it: one 2-level MGE iteration.
TRAIN_RECORD: TrainRecord = {
    "event": "train", "stage": 1, "stage_resolution": 32, "iteration": 4, "stage_iterations": 10, "step": 15,
    "total_steps": 20, "loss": 0.0123, "lr": 1e-3,
    "levels": [
        {"term": 0, "resolution": 32, "batch": 4, "work": 5.0, "coarse_resolution": 16, "coarse_loss": 0.011,
         "correction_var": 2e-6, "fine_loss": 0.012, "value": 0.001, "work_share": 0.625, "flops": 4.0e8,
         "seconds": 0.02},
        {"term": 1, "resolution": 16, "batch": 8, "work": 2.0, "loss_var": 3e-5, "fine_loss": 0.0113,
         "value": 0.0113, "work_share": 0.375, "flops": 1.6e8, "seconds": 0.01},
    ],
    "work_units": 64.0, "total_work_units": 100.0, "flops": 5.6e9, "seconds": 0.4, "step_seconds": 0.03,
    "meshes": {"32": {"work_units": 40.0, "flops": 3.2e9, "seconds": 0.2},
               "16": {"work_units": 24.0, "flops": 2.4e9, "seconds": 0.2}},
}
#: A re-allocation of batch sizes by an adaptive estimator (``Estimator.reallocate``).
ALLOCATION_RECORD: AllocationRecord = {
    "event": "allocation", "stage": 1, "step": 15, "work_units": 64.0, "iteration": 5, "batches": [3, 12],
    "variances": [2e-6, 3e-5], "costs": [1.25, 0.25], "work_per_iteration": 6.75,
}
#: An evaluation record (validation or test) as the trainer emits it.
EVAL_RECORD: EvalRecord = {
    "event": "eval", "split": "val", "stage": 1, "step": 15, "work_units": 64.0, "flops": 5.6e9, "seconds": 0.4,
    "protocol": "whole", "channel": "rgb", "shave": 0, "psnr": 27.5, "ssim": 0.81, "input_psnr": 20.1,
    "input_ssim": 0.45, "images": 2, "psnr_std": 1.2, "ssim_std": 0.05, "input_psnr_std": 0.9,
    "input_ssim_std": 0.04, "psnr_gain_std": 0.4, "improved": 2, "tiled": 0,
    "samples": "samples/val-000015.png",  # the evaluation's sample grid, relative to the run folder
}
#: The summary passed to ``Logger.close`` at the end of a run (also written to summary.json).
SUMMARY: Summary = {
    "name": "conformance", "recipe": "conformance.toml", "device": "cpu",
    "test": {"protocol": "whole", "channel": "rgb", "shave": 0, "psnr": 27.0, "ssim": 0.8, "input_psnr": 20.0,
             "input_ssim": 0.44, "images": 2, "psnr_std": 1.1, "ssim_std": 0.04, "input_psnr_std": 0.8,
             "input_ssim_std": 0.03, "psnr_gain_std": 0.5, "improved": 2, "tiled": 0},
    "val_best_psnr": 27.5, "work_units": 100.0, "baseline_work_units": 400.0, "work_ratio": 4.0, "flops": 8.0e9,
    "seconds": 0.6, "eval_seconds": 0.1, "iterations": 20,
    "stages": [{"stage": 0, "resolution": 16, "iterations": 10, "work_units": 20.0, "flops": 1e9, "seconds": 0.2},
               {"stage": 1, "resolution": 32, "iterations": 10, "work_units": 80.0, "flops": 7e9, "seconds": 0.4}],
    "meshes": TRAIN_RECORD["meshes"], "splits": {"test": {"images": 2, "names": ["a", "b"]}},
    "data": {"warnings": []}, "versions": {"msframe": "0", "torch": "0", "python": "3", "plugins": {}},
    "processes": 1,
}
