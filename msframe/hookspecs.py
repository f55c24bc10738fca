"""What a plugin may register: one hook per kind of component.

Every hook receives a ``register`` callback: ``register(name, cls)``, where ``cls`` subclasses the
matching base class in :mod:`msframe.components` and carries a pydantic ``Params`` model. Built-in
plugins use exactly these hooks. The hooks (``register_tasks``, ``register_backbones``, ...) are made
from the table of kinds, :data:`msframe.kinds.KINDS`, which gives each one's name and docstring.

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

from msframe import PROJECT, hookimpl  # noqa: F401 (re-exported: plugins may import it from here)
from msframe.kinds import KINDS, Kind

hookspec = pluggy.HookspecMarker(PROJECT)


def _spec(kind: Kind):
    """The hook specification of ``kind``: pluggy reads its name, its one argument and its docstring."""
    def spec(register):
        pass

    spec.__name__ = spec.__qualname__ = kind.hook
    spec.__doc__ = kind.doc
    return hookspec(spec)


#: the hook specifications, one per kind (``pm.add_hookspecs(Specs)``): ``Specs.register_tasks``, ...
Specs = type("Specs", (), {k.hook: staticmethod(_spec(k)) for k in KINDS})
