"""The divergence guard: a non-finite or exploding loss stops the run at the next flush, exit 3."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import only_run_dir
from msframe.assembly import assemble


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_an_exploding_loss_stops_the_run_naming_stage_iteration_level_and_lr(cli, tiny_recipe, tmp_path):
    result = cli(str(tiny_recipe), "--out", str(tmp_path), "--set", "optim.lr=1e6", "--set", "optim.warmup=0")
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    err = result.stderr.strip()
    assert err.startswith("error:") and err.count("\n") == 0, err
    for fragment in ("optim.lr: training diverged", "stage 0, iteration 1", "level 2 (4 px, term 0)", "learning rate 1e+06"):
        assert fragment in err, (fragment, err)
    run = only_run_dir(tmp_path)
    assert not (run / "summary.json").exists()
    for line in (run / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    # no checkpoint was written after the bad step: whatever is on disk holds finite weights
    from msframe import checkpoint

    for ckpt in (run / "checkpoints").glob("*.pt") if (run / "checkpoints").exists() else []:
        state = checkpoint.load(ckpt)
        assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_the_last_good_checkpoint_is_kept_when_a_later_stage_diverges(tmp_path, monkeypatch):
    import tomllib

    from conftest import TINY_RECIPE
    from msframe import checkpoint, plugins
    from msframe import recipe as recipe_mod
    from msframe.errors import Diverged
    from msframe.train import Trainer

    original = Trainer.step

    def poisoned(self, stage_index, iteration, batches, terms):
        record = original(self, stage_index, iteration, batches, terms)
        if stage_index == 1 and iteration == 1:  # as if the weights had blown up in stage 1
            record["loss"] = record["loss"] * math.nan
            record["levels"][1]["fine_loss"] = record["levels"][1]["fine_loss"] * math.nan
        return record

    monkeypatch.setattr(Trainer, "step", poisoned)
    data = recipe_mod.apply_overrides(tomllib.loads(TINY_RECIPE), ["optim.warmup=0"])
    recipe = recipe_mod.validate(data, plugins.load().registry)
    trainer = Trainer(assemble(recipe, plugins.load()), tmp_path, loggers=[])
    where = r"non-finite loss \(nan\) at stage 1, iteration 1, level 2 \(4 px, term 1\), learning rate 0.001"
    with pytest.raises(Diverged, match=where):
        trainer.train()
    kept = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert kept["progress"]["stage"] == 1 and kept["progress"]["iteration"] == 0  # the end of stage 0
    assert (tmp_path / "checkpoints" / "stage-0.pt").exists()
    assert not (tmp_path / "summary.json").exists()


def test_summary_json_is_strict_even_with_non_finite_values(tmp_path):
    from msframe import checkpoint

    checkpoint.write_json(tmp_path / "s.json", {"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}})
    assert _strict((tmp_path / "s.json").read_text()) == {"a": None, "b": [None, 1.0], "c": {"d": None}}


def test_a_normal_run_writes_a_strict_summary(cli, tiny_recipe, tmp_path):
    assert cli(str(tiny_recipe), "--out", str(tmp_path)).returncode == 0
    summary = _strict((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["val_best_psnr"] is not None


def test_each_task_judges_an_explosion_in_its_own_loss_units():
    from msframe import plugins

    cls = plugins.load().registry.get("task", "denoise").cls
    log, mse = cls(cls.Params()), cls(cls.Params(loss="mse"))
    assert log.params.loss == "log_mse"
    # minus the PSNR: a factor of 10^4 on the squared error is +40 dB, whatever the sign of the first loss
    assert not log.exploded(-19.0, -20.0, 1e4) and not log.exploded(19.0, -20.0, 1e4)
    assert log.exploded(20.5, -20.0, 1e4)
    assert not mse.exploded(0.5, 0.01, 1e4) and mse.exploded(101.0, 0.01, 1e4)


def test_lower_lr_goes_back_to_the_last_checkpoint_and_finishes_with_a_tenth_of_the_rate(tmp_path, monkeypatch):
    import tomllib

    from conftest import TINY_RECIPE
    from msframe import plugins
    from msframe import recipe as recipe_mod
    from msframe.train import Trainer

    original, poisoned_once = Trainer.step, []

    def poisoned(self, stage_index, iteration, batches, terms):
        record = original(self, stage_index, iteration, batches, terms)
        if (stage_index, iteration) == (1, 1) and not poisoned_once:  # one bad step, the first time only
            poisoned_once.append(True)
            record["levels"][0]["fine_loss"] = record["levels"][0]["fine_loss"] * math.nan
        return record

    monkeypatch.setattr(Trainer, "step", poisoned)
    data = recipe_mod.apply_overrides(tomllib.loads(TINY_RECIPE), ['run.on_divergence="lower_lr"', "optim.warmup=0",
                                                                   'optim.lr_policy="constant"'])
    recipe = recipe_mod.validate(data, plugins.load().registry)
    from msframe.plugins import load

    loggers = [c.build() for c in recipe.loggers.values()]
    trainer = Trainer(assemble(recipe, load()), tmp_path, loggers=loggers)
    summary = trainer.train()
    assert summary is not None and trainer.state.guard.rewinds == 1 and trainer.state.guard.lr_scale == pytest.approx(0.1)
    records = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["event"] == "train"]
    assert steps == list(range(1, 8))  # every step once: the undone ones were cut back with the rewind
    lrs = {r["step"]: r["lr"] for r in records if r["event"] == "train"}
    assert lrs[3] == pytest.approx(1e-3) and lrs[4] == pytest.approx(1e-4)  # stage 0 ends at step 3


def test_lower_lr_stops_after_three_rewinds(tmp_path, monkeypatch, capsys):
    import tomllib

    from conftest import TINY_RECIPE
    from msframe import plugins
    from msframe import recipe as recipe_mod
    from msframe.errors import Diverged
    from msframe.train import Trainer

    original = Trainer.step

    def always_bad(self, stage_index, iteration, batches, terms):  # stage 1 diverges whatever the rate
        record = original(self, stage_index, iteration, batches, terms)
        if stage_index == 1:
            record["levels"][0]["fine_loss"] = record["levels"][0]["fine_loss"] * math.nan
        return record

    monkeypatch.setattr(Trainer, "step", always_bad)
    data = recipe_mod.apply_overrides(tomllib.loads(TINY_RECIPE), ['run.on_divergence="lower_lr"'])
    trainer = Trainer(assemble(recipe_mod.validate(data, plugins.load().registry), plugins.load()), tmp_path, loggers=[])
    with pytest.raises(Diverged, match="stage 1, iteration 0"):
        trainer.train()
    err = capsys.readouterr().err
    assert err.count("warning: ") == 3 and "rewind 3 of 3" in err and "x0.001" in err
    assert trainer.state.guard.rewinds == 3


def _trainer(tmp_path, overrides: list[str], loggers=None):
    import tomllib

    from conftest import TINY_RECIPE
    from msframe import plugins
    from msframe import recipe as recipe_mod
    from msframe.train import Trainer

    data = recipe_mod.apply_overrides(tomllib.loads(TINY_RECIPE), overrides)
    recipe = recipe_mod.validate(data, plugins.load().registry)
    return Trainer(assemble(recipe, plugins.load()), tmp_path, loggers=[] if loggers is None else loggers)


def test_lower_lr_before_the_first_checkpoint_goes_back_to_the_start(tmp_path, monkeypatch):
    from msframe.train import Trainer

    original, poisoned_once = Trainer.step, []

    def poisoned(self, stage_index, iteration, batches, terms):
        record = original(self, stage_index, iteration, batches, terms)
        if (stage_index, iteration) == (0, 1) and not poisoned_once:
            poisoned_once.append(True)
            record["levels"][0]["fine_loss"] = record["levels"][0]["fine_loss"] * math.nan
        return record

    monkeypatch.setattr(Trainer, "step", poisoned)
    trainer = _trainer(tmp_path, ['run.on_divergence="lower_lr"', "optim.warmup=0", 'optim.lr_policy="constant"'])
    trainer.loggers = [c.build() for c in trainer.recipe.loggers.values()]
    assert trainer.train() is not None and trainer.state.guard.rewinds == 1
    records = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["event"] == "train"]
    assert len(lrs) == 7 and all(lr == pytest.approx(1e-4) for lr in lrs)  # the whole run again, at a tenth


def test_no_checkpoint_holds_weights_no_loss_has_judged(tmp_path, monkeypatch):
    from msframe.train import Trainer

    original, poisoned_once = Trainer.step, []

    def blow_up(self, stage_index, iteration, batches, terms):  # the update of (1, 1) ruins the weights
        record = original(self, stage_index, iteration, batches, terms)
        if (stage_index, iteration) == (1, 1) and not poisoned_once:
            poisoned_once.append(True)
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(math.nan)
        return record

    monkeypatch.setattr(Trainer, "step", blow_up)
    trainer = _trainer(tmp_path, ['run.on_divergence="lower_lr"', "checkpoint.every=1e-9", "optim.warmup=0"])
    assert trainer.train() is not None and trainer.state.guard.rewinds == 1  # one rewind was enough
    from msframe import checkpoint

    for f in (tmp_path / "checkpoints").glob("*.pt"):
        assert all(torch.isfinite(v).all() for v in checkpoint.load(f)["model"].values()), f


def test_a_stopped_run_writes_diverged_json_and_names_only_checkpoints_that_exist(cli, tiny_recipe, tmp_path):
    result = cli(str(tiny_recipe), "--out", str(tmp_path), "--set", "optim.lr=1e6", "--set", "optim.warmup=0")
    assert result.returncode == 3 and "no checkpoint was written before this step" in result.stderr, result.stderr
    diverged = _strict((only_run_dir(tmp_path) / "diverged.json").read_text())
    assert diverged["checkpoint"] is None and "training diverged" in diverged["reason"] and diverged["policy"] == "stop"
