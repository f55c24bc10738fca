"""The table of kinds (msframe.kinds.KINDS) drives the hooks, the registry's bases, the recipe's sections and the
conformance checks of msframe.testing."""

from __future__ import annotations

import inspect

import pluggy
import pytest

import msframe.testing as mt
from msframe import components, hookspecs, recipe, registry
from msframe.kinds import KINDS, kind


def test_every_kind_has_a_hook_specification_with_its_docstring():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.Specs)
    for k in KINDS:
        spec = getattr(pm.hook, k.hook).spec
        assert spec.argnames == ("register",)
        assert inspect.getdoc(spec.function) == k.doc
        assert f"msframe.components.{k.base.__name__}" in k.doc
    assert {name for name in vars(hookspecs.Specs) if not name.startswith("_")} == {k.hook for k in KINDS}


def test_every_kind_has_a_base_in_components_and_the_registry_enforces_it():
    assert [k.name for k in KINDS] == ["task", "backbone", "resampler", "estimator", "dataset", "logger"]
    for k in KINDS:
        assert getattr(components, k.base.__name__) is k.base
        assert issubclass(k.base, components.Component)
        assert registry.BASES[k.name] is k.base
        assert kind(k.name) is k
    assert list(registry.BASES) == [k.name for k in KINDS]
    with pytest.raises(KeyError, match="unknown kind 'tasks'.*task, backbone"):
        kind("tasks")


def test_the_recipe_sections_are_the_kinds_sections():
    assert recipe.PLUGIN_SECTIONS == {k.section: k.name for k in KINDS if k.single}
    assert [k.section for k in KINDS if not k.single] == ["loggers"]
    # the resolved recipe lists the sections in the order of Recipe's fields: the data first
    assert list(recipe.PLUGIN_SECTIONS) == ["data", "task", "backbone", "resampler", "estimator"]


def test_every_kind_has_its_check_in_its_own_module_of_msframe_testing():
    assert list(mt.CHECKS) == [k.name for k in KINDS]
    for k in KINDS:
        check = mt.CHECKS[k.name]
        assert check is getattr(mt, f"check_{k.name}")
        assert check.__module__ == f"msframe.testing.{k.name}"
        # each check holds a class to its kind's base
        with pytest.raises(AssertionError, match=f"is not a subclass of msframe.components.{k.base.__name__}"):
            check(object, None)


def test_smoke_train_names_the_kinds_it_knows():
    with pytest.raises(ValueError, match="unknown kind 'tasks' .known: task, backbone, resampler, estimator, dataset, logger"):
        mt.smoke_train("tasks", components.Logger)
