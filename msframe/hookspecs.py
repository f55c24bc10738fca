"""What a plugin may register: one hook per kind of component.

Every hook receives a ``register`` callback: ``register(name, cls)``, where ``cls`` subclasses the
matching base class in :mod:`msframe.components` and carries a pydantic ``Params`` model. Built-in
plugins use exactly these hooks.

Example plugin module (declared under ``[project.entry-points.msframe]`` in its pyproject.toml)::

    import msframe
    from msframe.components import Task

    class Poisson(Task):
        ...

    @msframe.hookimpl
    def register_tasks(register):
        register("poisson", Poisson)
"""

from __future__ import annotations

import pluggy

PROJECT = "msframe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_tasks(register):
    """Register degradation tasks (subclasses of ``msframe.components.Task``)."""


@hookspec
def register_backbones(register):
    """Register network factories (subclasses of ``msframe.components.Backbone``)."""


@hookspec
def register_resamplers(register):
    """Register restriction operators (subclasses of ``msframe.components.Resampler``)."""


@hookspec
def register_estimators(register):
    """Register gradient estimators (subclasses of ``msframe.components.Estimator``)."""


@hookspec
def register_datasets(register):
    """Register sources of clean images (subclasses of ``msframe.components.Dataset``)."""


@hookspec
def register_loggers(register):
    """Register metric sinks (subclasses of ``msframe.components.Logger``)."""


#: kind of component -> the hook that registers it
HOOKS = {
    "task": "register_tasks",
    "backbone": "register_backbones",
    "resampler": "register_resamplers",
    "estimator": "register_estimators",
    "dataset": "register_datasets",
    "logger": "register_loggers",
}
