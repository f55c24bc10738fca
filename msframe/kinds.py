"""The six kinds of component, in one table.

Each :class:`Kind` says which base class a component of that kind subclasses, which plugin hook
registers it and which recipe section chooses it. The hook specifications
(:mod:`msframe.hookspecs`), the base a registered class must subclass (:mod:`msframe.registry`), the
recipe's plugin sections (:data:`msframe.recipe.PLUGIN_SECTIONS`) and the conformance checks
(:data:`msframe.testing.CHECKS`) are all made from :data:`KINDS`, so a kind is added or changed here.

This module imports only :mod:`msframe.components`, so every engine module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from msframe import components as C


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    ``name`` is the kind as the registry, ``plugins`` listings and ``run.py describe`` spell it;
    ``base`` the class in :mod:`msframe.components` a component subclasses; ``hook`` the pluggy hook
    that registers it and ``doc`` that hook's docstring; ``section`` the recipe section that chooses
    it. A ``single`` kind is chosen once per recipe by ``type = NAME`` in its section; otherwise the
    section is a table of named components, each in its own table (``[loggers.console]``).
    """

    name: str
    base: type
    hook: str
    section: str
    doc: str
    single: bool = True


#: every kind, in the order plugins' hooks are called
KINDS: tuple[Kind, ...] = (
    Kind("task", C.Task, "register_tasks", "task",
         "Register degradation tasks (subclasses of ``msframe.components.Task``)."),
    Kind("backbone", C.Backbone, "register_backbones", "backbone",
         "Register network factories (subclasses of ``msframe.components.Backbone``)."),
    Kind("resampler", C.Resampler, "register_resamplers", "resampler",
         "Register restriction operators (subclasses of ``msframe.components.Resampler``)."),
    Kind("estimator", C.Estimator, "register_estimators", "estimator",
         "Register gradient estimators (subclasses of ``msframe.components.Estimator``)."),
    Kind("dataset", C.Dataset, "register_datasets", "data",
         "Register sources of clean images (subclasses of ``msframe.components.Dataset``)."),
    Kind("logger", C.Logger, "register_loggers", "loggers",
         "Register metric sinks (subclasses of ``msframe.components.Logger``).", single=False),
)

_BY_NAME = {k.name: k for k in KINDS}


def kind(name: str) -> Kind:
    """The kind called ``name``; a KeyError lists the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r} (known: {', '.join(_BY_NAME)})") from None
