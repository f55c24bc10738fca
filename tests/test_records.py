"""The record types of msframe.records declare what a real run emits, and their examples conform."""

from __future__ import annotations

import copy
import json
import tomllib

import pytest

import msframe.testing as mt
from conftest import TINY_RECIPE
from msframe import plugins, recipe, records
from msframe.assembly import assemble
from msframe.components import Logger
from msframe.records import EVENTS, Summary, missing_keys, undeclared_keys
from msframe.train import Trainer

EXAMPLES = [(records.TrainRecord, records.TRAIN_RECORD), (records.AllocationRecord, records.ALLOCATION_RECORD),
            (records.EvalRecord, records.EVAL_RECORD), (Summary, records.SUMMARY)]


class _Capture(Logger):
    def open(self, run):
        self.records = []

    def log(self, record):
        self.records.append(copy.deepcopy(record))

    def close(self, summary):
        self.summary = copy.deepcopy(summary)


@pytest.mark.parametrize("record_type, example", EXAMPLES, ids=lambda x: getattr(x, "__name__", ""))
def test_the_examples_carry_exactly_their_declared_keys(record_type, example):
    assert missing_keys(record_type, example) == []
    assert undeclared_keys(record_type, example) == []
    if "event" in example:
        assert EVENTS[example["event"]] is record_type


def test_msframe_testing_offers_the_same_examples():
    assert mt.TRAIN_RECORD is records.TRAIN_RECORD and mt.EVAL_RECORD is records.EVAL_RECORD
    assert mt.ALLOCATION_RECORD is records.ALLOCATION_RECORD and mt.SUMMARY is records.SUMMARY


def test_missing_and_undeclared_keys_are_named_by_their_path():
    broken = copy.deepcopy(records.TRAIN_RECORD)
    del broken["loss"], broken["levels"][1]["fine_loss"], broken["meshes"]["16"]["flops"]
    broken["levels"][0]["extra"] = 1
    assert missing_keys(records.TrainRecord, broken) == ["loss", "levels[1].fine_loss", "meshes['16'].flops"]
    assert undeclared_keys(records.TrainRecord, broken) == ["levels[0].extra"]
    assert missing_keys(Summary, None) == ["the record (a NoneType, not a dict)"]


def test_a_real_run_emits_records_and_a_summary_with_their_declared_keys(tmp_path):
    """A tiny run with batch re-allocation: every record and the summary carry what their type declares."""
    loaded = plugins.load()
    data = tomllib.loads(TINY_RECIPE)
    data["loggers"] = {}
    data["estimator"] = {"type": "mlmc", "every": 1}  # re-allocates: allocation records too
    capture = _Capture(_Capture.Params())
    summary = Trainer(assemble(recipe.validate(data, loaded.registry), loaded), tmp_path, loggers=[capture]).train()

    assert {r["event"] for r in capture.records} == set(EVENTS)
    for record in capture.records:
        record_type = EVENTS[record["event"]]
        assert missing_keys(record_type, record) == [], record
        assert undeclared_keys(record_type, record) == [], record
    for record in capture.records:
        for term in record.get("levels", []):
            # a correction carries its coarse mesh and correction variance, a plain term its loss variance
            correction = "coarse_resolution" in term
            assert {"coarse_loss" in term, "correction_var" in term, "loss_var" not in term} == {correction}, term
    assert any("coarse_resolution" in t for r in capture.records for t in r.get("levels", []))
    for done in (summary, capture.summary, json.loads((tmp_path / "summary.json").read_text())):
        assert missing_keys(Summary, done) == []
        assert undeclared_keys(Summary, done) == []


def test_a_logger_that_modifies_records_leaves_the_examples_intact():
    class Mutating(Logger):
        def log(self, record):
            record.pop("levels", None)
            record.get("meshes", {}).clear()

    before = copy.deepcopy(records.TRAIN_RECORD)
    with pytest.raises(AssertionError, match="modified the train record"):
        mt.check_logger(Mutating)
    assert records.TRAIN_RECORD == before
