"""Every registered component passes msframe.testing's conformance check for its kind.

The parametrization is the registry itself, read at collection time: a component is tested the
moment it registers. Datasets that need a ``root`` get a tiny copy of their layout in tmp_path.
Also: the restriction-gap table (task × resampler), the sample records that check_logger feeds
against what a real run emits, and broken components that each check must catch.
"""

from __future__ import annotations

import ast
import copy
import itertools
import math
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from pydantic import ConfigDict

import msframe.testing as mt
from conftest import TINY_RECIPE
from msframe import plugins, recipe
from msframe.assembly import assemble
from msframe.components import Backbone, Capabilities, Dataset, Degraded, Estimator, Logger, Params, Resampler, Task, Term
from msframe.images import InMemorySplit
from msframe.train import Trainer
from test_datasets import TREE, celeba, cifar, folder, stl
from test_paired import subfolders

LOADED = plugins.load()
REGISTRY = LOADED.registry


def _stl(root: Path) -> Path:
    stl(root, {"train_X.bin": 4, "test_X.bin": 2})
    return root


#: dataset -> writer of a tiny copy of the layout it reads from ``root``
ROOT_LAYOUTS = {
    "image_folder": lambda root: folder(root, TREE),
    "cifar10": cifar,
    "stl10": _stl,
    "celeba": celeba,
    "paired_folder": subfolders,
}


def _area() -> Resampler:
    cls = REGISTRY.get("resampler", "area").cls
    return cls(cls.Params())


# ------------------------------------------------------------------------ every registered component


@pytest.mark.parametrize("entry", REGISTRY.entries(), ids=lambda e: f"{e.kind}:{e.name}")
def test_registered_component_conforms(entry, tmp_path):
    check = mt.CHECKS[entry.kind]
    if entry.kind == "task":
        for channels in (1, 3):  # grayscale datasets exist too
            gaps = check(entry.cls, channels=channels)
            assert gaps.keys() == set(REGISTRY.names("resampler"))
    elif entry.kind == "dataset":
        layout = ROOT_LAYOUTS.get(entry.name)
        check(entry.cls, None if layout is None else {"root": str(layout(tmp_path / entry.name))})
    elif entry.kind == "logger":
        check(entry.cls, directory=tmp_path)
    else:
        check(entry.cls)


def test_the_module_example_runs_and_prints_what_it_says(capsys):
    doc = mt.__doc__
    lines = doc[doc.index("::\n") + 3 :].splitlines()
    code = textwrap.dedent("\n".join(itertools.takewhile(lambda line: not line or line.startswith("    "), lines)))
    exec(compile(code, "msframe.testing example", "exec"), {})
    gaps = ast.literal_eval(capsys.readouterr().out.strip())
    assert set(gaps) == set(REGISTRY.names("resampler"))
    assert max(gaps.values()) < 1e-6


# ---------------------------------------------------------------------------- restriction gaps


def _photographs() -> torch.Tensor:
    """32 px tiles of the test photographs bundled with scikit-image: natural content."""
    cls = REGISTRY.get("dataset", "sample_images").cls
    return cls(cls.Params()).split("test").tiles(32, 2)


def _task(name: str, **params) -> Task:
    cls = REGISTRY.get("task", name).cls
    return cls(cls.Params(**params))


def test_restriction_gap_table(record_property):
    """‖R(D(x)) − D(R(x))‖ / ‖D(R(x))‖ for every task (defaults) and resampler, plus cases that commute."""
    tasks = {name: _task(name) for name in REGISTRY.names("task")}
    # where theory says the operators commute: no degradation at all, and block means of block means
    tasks["denoise(sigma=0)"] = _task("denoise", sigma=0.0)
    tasks["superres(area)"] = _task("superres", downsample="area")
    resamplers = mt.registered_resamplers()
    clean = _photographs()
    gaps = {(t, r): mt.restriction_gap(task, resampler, clean, seed=0)
            for t, task in tasks.items() for r, resampler in resamplers.items()}

    width = max(map(len, tasks))
    lines = ["restriction gap, one restriction of 32 px photographs:",
             f"{'task':<{width}}  " + "  ".join(f"{r:>8}" for r in resamplers)]
    lines += [f"{t:<{width}}  " + "  ".join(f"{gaps[t, r]:8.4f}" for r in resamplers) for t in tasks]
    print("\n".join(lines))
    record_property("restriction_gaps", {f"{t}|{r}": g for (t, r), g in gaps.items()})

    assert all(math.isfinite(g) for g in gaps.values()), gaps
    for r in resamplers:
        assert gaps["denoise(sigma=0)", r] < 1e-6
    assert gaps["superres(area)", "area"] < 1e-6
    # superres' default downsampling is the bicubic resampler's own halving: R∘R on both sides
    assert gaps["superres", "bicubic"] < 1e-6
    # and a draw that does not commute is measured as such: fresh noise on the coarse mesh
    assert gaps["denoise", "area"] > 0.05


# ------------------------------------------------------------------------ the sample records


class _Capture(Logger):
    def open(self, run):
        self.records = []

    def log(self, record):
        self.records.append(copy.deepcopy(record))


def test_check_logger_records_are_those_a_run_emits(tmp_path):
    """The records check_logger feeds have the keys of a real run's (with batch re-allocation)."""
    data = tomllib.loads(TINY_RECIPE)
    data["loggers"] = {}
    data["estimator"] = {"type": "mlmc", "every": 1}
    capture = _Capture(_Capture.Params())
    summary = Trainer(assemble(recipe.validate(data, REGISTRY), LOADED), tmp_path, loggers=[capture]).train()
    samples = {"train": mt.TRAIN_RECORD, "allocation": mt.ALLOCATION_RECORD, "eval": mt.EVAL_RECORD}
    assert {r["event"] for r in capture.records} == set(samples)
    for record in capture.records:
        assert set(record) == set(samples[record["event"]]), record["event"]
    last = [r for r in capture.records if r["event"] == "train"][-1]
    correction, plain = last["levels"][0], last["levels"][-1]
    assert set(correction) == set(mt.TRAIN_RECORD["levels"][0])
    assert set(plain) == set(mt.TRAIN_RECORD["levels"][-1])
    assert set(next(iter(last["meshes"].values()))) == set(next(iter(mt.TRAIN_RECORD["meshes"].values())))
    assert set(summary) == set(mt.SUMMARY)
    assert set(summary["test"]) == set(mt.SUMMARY["test"])


# ------------------------------------------------------------------------ broken components are caught


class GlobalNoise(Task):
    def degrade(self, clean, generator):
        return Degraded(clean + 0.1 * torch.randn(clean.shape), clean)  # ignores the generator


class NoRestrict(Task):
    def degrade(self, clean, generator):
        return Degraded(clean.clone(), clean)

    def restrict(self, batch, resampler):
        return batch


class BatchLoss(Task):
    def degrade(self, clean, generator):
        return Degraded(clean.clone(), clean)

    def loss(self, restored, batch):
        return (restored - batch.target).pow(2).mean()  # one number, not one per sample


class Summing(Resampler):
    def restrict(self, x):
        return torch.nn.functional.avg_pool2d(x, 2) * 4


class BatchMixing(Resampler):
    def restrict(self, x):
        coarse = torch.nn.functional.avg_pool2d(x, 2)
        return coarse - coarse.mean(0, keepdim=True) + coarse.mean()


class Strided(Backbone):
    """Claims any size, but halves and doubles the side, so odd sides come back wrong."""

    def build(self, in_channels, out_channels, cond_channels, scale=1):
        return _Strided(in_channels, out_channels)


class _Strided(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.down = torch.nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x, cond=None):
        return torch.nn.functional.interpolate(self.down(x), scale_factor=2.0)


class Mixing(Backbone):
    """Declares its samples independent, but normalises over the batch (BatchNorm in training mode)."""

    def capabilities(self):
        return Capabilities(batch_independent=True)

    def build(self, in_channels, out_channels, cond_channels, scale=1):
        return _Mixing(in_channels, out_channels)


class _Mixing(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(cout)

    def forward(self, x, cond=None):
        return self.norm(self.conv(x))


class Unused(Backbone):
    def capabilities(self):
        return Capabilities(min_size=4, multiple=4)

    def build(self, in_channels, out_channels, cond_channels, scale=1):
        return _Unused(in_channels, out_channels)


class _Unused(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.spare = torch.nn.Linear(2, 2)

    def forward(self, x, cond=None):
        return self.conv(x)


class EveryLevel(Estimator):
    """Sums the plain loss of every level: biased towards the coarse meshes."""

    def terms(self, levels, batch):
        return [Term(level, None, batch) for level in range(levels)]


class PlainFirst(Estimator):
    def terms(self, levels, batch):
        return [Term(0, None, batch), *([Term(0, 1, batch)] if levels > 1 else [])]


class Reordering(Estimator):
    """Re-allocates by handing the batches out in another order, and the levels with them."""

    def terms(self, levels, batch):
        return [Term(level, level + 1, batch) for level in range(levels - 1)] + [Term(levels - 1, None, batch)]

    def reallocate_every(self):
        return 1

    def reallocate(self, terms, variances, costs):
        return sorted(terms, key=lambda t: t.coarse is None)[::-1]


class GlobalCrops(Dataset):
    def channels(self):
        return 3

    def split(self, name):
        return _GlobalCropSplit([torch.zeros(3, 20, 20, dtype=torch.uint8)], [f"{name}.png"])


class _GlobalCropSplit(InMemorySplit):
    def crops(self, n, size, generator):
        return torch.rand(n, 3, size, size)  # ignores the generator


class Mutating(Logger):
    def log(self, record):
        record.pop("levels", None)


class Lenient(Task):
    class Params(Params):
        model_config = ConfigDict(extra="allow", frozen=True)

    def degrade(self, clean, generator):
        return Degraded(clean.clone(), clean)


class Untomlable(Task):
    class Params(Params):
        weights: list[float | None] = [1.0, None]

    def degrade(self, clean, generator):
        return Degraded(clean.clone(), clean)


BROKEN = [
    (mt.check_task, GlobalNoise, "same generator seed gave different batches"),
    (mt.check_task, NoRestrict, r"level 1 \(16 px\): input has shape \[2, 3, 32, 32\], expected \[2, 3, 16, 16\]"),
    (mt.check_task, BatchLoss, "loss must be per sample"),
    (mt.check_task, Lenient, "accepts unknown keys"),
    (mt.check_task, Untomlable, "cannot be written as TOML"),
    (mt.check_resampler, Summing, "weights must sum to 1"),
    (mt.check_resampler, BatchMixing, "restricting a sample alone differs"),
    (mt.check_backbone, Strided, r"on 1 px: output \[2, 3, 2, 2\], expected shape \[2, 3, 1, 1\]"),
    (mt.check_backbone, Mixing, "declares batch_independent, but a sample's output changed"),
    (mt.check_backbone, Unused, "parameters without a gradient: spare.weight, spare.bias"),
    (mt.check_estimator, EveryLevel, "do not telescope"),
    (mt.check_estimator, PlainFirst, "the last term must be a plain term"),
    (mt.check_estimator, Reordering, "changed the levels of"),
    (mt.check_dataset, GlobalCrops, "gave different crops after torch.manual_seed changed"),
    (mt.check_logger, Mutating, "log\\(\\) modified the train record"),
]


@pytest.mark.parametrize("check, cls, message", BROKEN, ids=[b[1].__name__ for b in BROKEN])
def test_checks_catch_broken_components(check, cls, message):
    kwargs = {"resamplers": {"area": _area()}} if check is mt.check_task else {}
    with pytest.raises(AssertionError, match=message):
        check(cls, None, **kwargs)


# ------------------------------------------------------------------------ through the real engine


@pytest.mark.parametrize("entry", [e for e in REGISTRY.entries() if e.kind != "dataset" or e.name == "sample_images"],
                         ids=lambda e: f"{e.kind}:{e.name}")
def test_registered_component_trains_through_the_engine(entry, tmp_path, monkeypatch):
    # datasets other than the bundled photographs need a root of real images; check_dataset covers them
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = mt.smoke_train(entry.kind, entry.cls, directory=tmp_path)
    assert summary["iterations"] == 6 and (tmp_path / "run" / "summary.json").is_file()


def test_smoke_train_names_a_component_that_breaks_in_the_engine(tmp_path):
    from msframe.components import Logger

    class Crashing(Logger):
        def log(self, record):
            if record.get("event") == "eval":
                raise ValueError("cannot log evaluations")

    with pytest.raises(AssertionError, match=r"Crashing.*tiny Full-Multiscale run.*cannot log evaluations"):
        mt.smoke_train("logger", Crashing, directory=tmp_path)
